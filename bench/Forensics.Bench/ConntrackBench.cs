using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Forensics.Datapath.Conntrack;
using Forensics.Datapath.Lab;

namespace Forensics.Bench;

/// <summary>
/// Conntrack event ingest (issue 16): new connections at a paced rate in a namespace of our own
/// (ctflood: one UDP datagram per new 5-tuple, DNATed to a local receiver), listened to at the
/// same time by `conntrack -E -o timestamp > file` (the baseline) and by ours; per rate: the
/// connections made, what each got and lost, and the CPU each spent (per 100k new connections/s).
/// </summary>
internal static class ConntrackBench
{
    public static void Run(string root, string ctflood, double seconds, IReadOnlyList<double> rates)
    {
        var ns = $"fxbct{Environment.ProcessId}";
        var path = "/run/netns/" + ns;
        Sh("ip", "netns", "add", ns);
        try
        {
            Setup(ns);
            using var sink = NetNamespace.RunAt(path, () =>
            {
                // the DNAT target: bound (so no ICMP unreachable per datagram), never read
                var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp) { ReceiveBufferSize = 4096 };
                s.Bind(new IPEndPoint(IPAddress.Parse("10.97.0.1"), 9999));
                return s;
            });
            Console.WriteLine($"# conntrack ingest: {NetLab.LoadAvg()} load; ctflood {seconds} s per rate; nf_conntrack_max {File.ReadAllText("/proc/sys/net/netfilter/nf_conntrack_max").Trim()}");
            foreach (var rate in rates)
                Console.WriteLine("conntrack " + Trial(root, ns, path, ctflood, rate, seconds));
        }
        finally
        {
            Sh("ip", "netns", "del", ns);
        }
    }

    private static void Setup(string ns)
    {
        Exec(ns, "ip", "link", "set", "lo", "up");
        Exec(ns, "ip", "addr", "add", "10.97.0.1/32", "dev", "lo");
        Exec(ns, "ip", "route", "add", "local", "10.96.0.0/16", "dev", "lo");
        Exec(ns, "iptables", "-t", "nat", "-A", "OUTPUT", "-d", "10.96.0.10", "-p", "udp", "-j", "DNAT", "--to-destination", "10.97.0.1:9999");
        // unreplied entries leave the table after a second: the global table (nf_conntrack_max) is not filled
        Exec(ns, "sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=1", "net.netfilter.nf_conntrack_events=1");
    }

    private static string Trial(string root, string ns, string path, string ctflood, double rate, double seconds)
    {
        var file = Path.Combine(root, $"conntrack-E-{rate:0}.txt");
        // the baseline writes straight into the file (sh execs conntrack: its pid is the process we measure)
        using var baseline = Process.Start(new ProcessStartInfo("ip", ["netns", "exec", ns, "sh", "-c", $"exec conntrack -E -o timestamp > '{file}' 2> '{file}.err'"]))!;
        using var listener = ConntrackListener.Open(new ConntrackOptions { NetnsPath = path, Updates = true });
        long received = 0;
        double ourCpu = 0;
        using var stop = new CancellationTokenSource();
        var reader = new Thread(() =>
        {
            double cpu0 = Proc.ThisThreadCpu();
            while (!stop.IsCancellationRequested)
                listener.Poll(20, (in ConntrackEntry e) =>
                {
                    if (e.Type == CtEventType.New)
                        received++;
                });
            ourCpu = Proc.ThisThreadCpu() - cpu0;
        }) { Name = "ct-ingest", IsBackground = true };
        reader.Start();
        WaitSubscribed(baseline.Id);
        double baseCpu0 = ProcessCpu(baseline.Id);

        var flood = Sh("ip", "netns", "exec", ns, ctflood, "10.96.0.10", rate.ToString("0", CultureInfo.InvariantCulture), seconds.ToString(CultureInfo.InvariantCulture));
        long made = long.Parse(Field(flood, "made"), CultureInfo.InvariantCulture);
        // settle: ours has everything (received + dropped == made), the baseline has stopped writing
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed.TotalSeconds < 10 && Interlocked.Read(ref received) + (long)listener.Counts(CtEventType.New).Dropped < made)
            Thread.Sleep(50);
        long size = -1;
        while (sw.Elapsed.TotalSeconds < 15 && new FileInfo(file).Length != size)
        {
            size = new FileInfo(file).Length;
            Thread.Sleep(300);
        }
        double baseCpu = ProcessCpu(baseline.Id) - baseCpu0;
        Sh("kill", "-TERM", baseline.Id.ToString(CultureInfo.InvariantCulture));
        baseline.WaitForExit(5000);
        stop.Cancel();
        reader.Join();

        long baseNew = 0;
        foreach (var line in File.ReadLines(file))
            if (line.Contains("[NEW]", StringComparison.Ordinal))
                baseNew++;
        var err = File.Exists(file + ".err") ? File.ReadAllText(file + ".err") : "";
        int baseEnobufs = err.Split('\n').Count(l => l.Contains("ENOBUFS", StringComparison.Ordinal));
        var counts = listener.Counts(CtEventType.New);
        double achieved = made / seconds;
        double per100k(double cpu) => achieved > 0 ? cpu / seconds / (achieved / 100_000) : 0;
        File.Delete(file);
        File.Delete(file + ".err");
        return $"offered={rate:0} made={made} achieved={achieved:0}/s " +
               $"ours_new={counts.Received} ours_lost={counts.Dropped} ours_enobufs={counts.Overruns} ours_cpu_s={ourCpu:0.00} ours_cpu_per_100k={per100k(ourCpu):0.000} " +
               $"conntrack_E_new={baseNew} conntrack_E_missing={made - baseNew} conntrack_E_enobufs_warnings={baseEnobufs} conntrack_E_cpu_s={baseCpu:0.00} conntrack_E_cpu_per_100k={per100k(baseCpu):0.000} " +
               $"cpu_ratio={(baseCpu > 0 ? ourCpu / baseCpu : 0):0.00} load={NetLab.LoadAvg()}";
    }

    /// <summary>Waits until the process holds a NETLINK_NETFILTER socket (conntrack -E subscribed), at most 5 s.</summary>
    private static void WaitSubscribed(int pid)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed.TotalSeconds < 5)
        {
            try
            {
                if (Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd").Any(fd => new FileInfo(fd).LinkTarget?.StartsWith("socket:", StringComparison.Ordinal) == true))
                    return;
            }
            catch (IOException)
            {
            }
            Thread.Sleep(20);
        }
    }

    private static double ProcessCpu(int pid)
    {
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return (long.Parse(f[11], CultureInfo.InvariantCulture) + long.Parse(f[12], CultureInfo.InvariantCulture)) / 100.0;
    }

    private static string Field(string line, string key)
    {
        foreach (var kv in line.Trim().Split(' '))
            if (kv.StartsWith(key + "=", StringComparison.Ordinal))
                return kv[(key.Length + 1)..];
        throw new InvalidOperationException($"no {key}= in '{line}'");
    }

    private static string Exec(string ns, params string[] argv) => Sh("ip", ["netns", "exec", ns, .. argv]);

    private static string Sh(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        var o = p.StandardOutput.ReadToEndAsync();
        var e = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromSeconds(120)))
        {
            p.Kill(true);
            throw new TimeoutException($"{file} {string.Join(' ', args)}: timed out");
        }
        if (p.ExitCode != 0)
            throw new InvalidOperationException($"{file} {string.Join(' ', args)}: exit {p.ExitCode}: {e.Result.Trim()}");
        return o.Result;
    }
}
