using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Forensics.Datapath;
using Forensics.Datapath.Control;
using Forensics.Datapath.Lab;

namespace Forensics.Bench;

/// <summary>
/// Issue 18 item 3: a lab under sustained load recorded with the defaults of `forensics record` for many minutes.
/// Two pods (cli, srv) behind the datapath; the load: iperf3 TCP cli -> srv as fast as it goes (one run per
/// minute), a churn of short TCP connections (bench/c/churn.c), execs (bench/c/execloop.c) and UDP datagrams to a
/// port srv's policy denies (drops). First a baseline with the same datapath and the same load, nothing recording
/// (its TCP throughput; one minute of it with `tcpdump -w` of every packet, counted, for scale), then the real
/// `forensics record --lab` process for the soak, sampled each minute: its CPU and RSS (/proc), the events its
/// sources handed over, the rows and bytes written, the loss (manifest).
/// </summary>
internal static partial class Soak
{
    private const string Lab = "fxsoak";
    private const string ClientIp = "10.0.9.10", ServerIp = "10.0.9.20";
    private const int ChurnPort = 8080, DroppedPort = 9999;

    private static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    public sealed record Options(string Root, string Forensics, string Churn, string ExecLoop, string UdpFlood, double Minutes, double BaselineMinutes,
        double ChurnRate, double ExecRate, double DropRate, IReadOnlyList<string>? RecordArgs = null);

    private static string Yaml() => $$"""
        # bench/run.sh soak: two pods; srv takes iperf3 (5201) and the churn (8080) from cli, and denies the rest (the drops)
        apiVersion: forensics.dev/v1
        kind: Lab
        metadata:
          name: {{Lab}}
        spec:
          podCIDR: 10.0.9.0/24
          serviceCIDR: 10.0.10.0/24
          nodeIP: 192.0.2.1
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: cli
          labels: {app: soak-client}
        status:
          podIP: {{ClientIp}}
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: srv
          labels: {app: soak-server}
        status:
          podIP: {{ServerIp}}
        ---
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata:
          name: srv-from-cli
        spec:
          endpointSelector:
            matchLabels: {app: soak-server}
          ingress:
            - fromEndpoints:
                - matchLabels: {app: soak-client}
              toPorts:
                - ports:
                    - port: "5201"
                      protocol: TCP
                    - port: "{{ChurnPort}}"
                      protocol: TCP
        """;

    private static string ClientNs => Lab + "-cli";
    private static string ServerNs => Lab + "-srv";
    private static string NodeNs => Lab + "-node";

    /// <summary>The background load of one phase: servers, the churn, the execs and the denied datagrams, for <paramref name="seconds"/>.</summary>
    private sealed class Load : IDisposable
    {
        private readonly List<Background> procs = [];
        public Background ChurnClient { get; }
        public Background Execs { get; }
        public Background Drops { get; }

        public Load(Options o, double seconds)
        {
            var limit = TimeSpan.FromSeconds(seconds + 90);
            var iperf = Add(new Background(["ip", "netns", "exec", ServerNs, "iperf3", "-s", "-B", ServerIp, "--forceflush"], limit));
            if (!iperf.WaitFor("Server listening", TimeSpan.FromSeconds(20)))
                throw new InvalidOperationException("iperf3 -s did not come up: " + iperf.Stderr);
            var churn = Add(new Background(["ip", "netns", "exec", ServerNs, o.Churn, "serve", ServerIp, Num(ChurnPort), Num(seconds + 30)], limit));
            if (!churn.WaitFor("ready", TimeSpan.FromSeconds(20)))
                throw new InvalidOperationException("churn serve did not come up: " + churn.Stderr);
            ChurnClient = Add(new Background(["ip", "netns", "exec", ClientNs, o.Churn, "connect", ServerIp, Num(ChurnPort), Num(o.ChurnRate), Num(seconds)], limit));
            Execs = Add(new Background(["ip", "netns", "exec", ClientNs, o.ExecLoop, Num(o.ExecRate), Num(seconds)], limit));
            Drops = Add(new Background(["ip", "netns", "exec", ClientNs, o.UdpFlood, "send", ServerIp, Num(DroppedPort), Num(o.DropRate), Num(seconds), "64"], limit));
        }

        private Background Add(Background b)
        {
            procs.Add(b);
            return b;
        }

        /// <summary>Waits for the clients' own counts (churn connections, execs, datagrams sent).</summary>
        public string Finish(TimeSpan limit)
        {
            foreach (var b in new[] { ChurnClient, Execs, Drops })
                b.Wait(limit);
            return $"churn[{ChurnClient.Stdout.Trim()}] execloop[{Execs.Stdout.Trim()}] drops_sent[{Drops.Stdout.Trim()}]";
        }

        public void Dispose()
        {
            foreach (var p in procs)
                p.Dispose();
        }
    }

    private static string Num(double v) => v.ToString("0.###", CultureInfo.InvariantCulture);

    /// <summary>iperf3 TCP from cli to srv for <paramref name="seconds"/>: Gbps received and retransmits.</summary>
    private static (double Gbps, long Retrans) Tcp(double seconds)
    {
        var r = Commands.Run("ip", ["netns", "exec", ClientNs, "iperf3", "-c", ServerIp, "-t", Num(seconds), "-J"], TimeSpan.FromSeconds(seconds + 60));
        if (r.ExitCode != 0)
            return (double.NaN, -1);
        using var j = System.Text.Json.JsonDocument.Parse(r.Stdout);
        var e = j.RootElement.GetProperty("end");
        return (e.GetProperty("sum_received").GetProperty("bits_per_second").GetDouble() / 1e9,
            e.GetProperty("sum_sent").TryGetProperty("retransmits", out var rt) ? rt.GetInt64() : -1);
    }

    public static void Run(Options o)
    {
        Directory.CreateDirectory(o.Root);
        var yaml = Path.Combine(o.Root, "soak.yaml");
        File.WriteAllText(yaml, Yaml());
        Commands.Run(o.Forensics, ["lab", "down", yaml], TimeSpan.FromSeconds(120)); // a lab left by an earlier run
        Console.WriteLine(Inv($"soak setup minutes={o.Minutes} baseline_minutes={o.BaselineMinutes} churn_rate={o.ChurnRate}/s exec_rate={o.ExecRate}/s drop_rate={o.DropRate}/s record_args=[{string.Join(' ', o.RecordArgs ?? [])}] nproc={Environment.ProcessorCount} load={NetLab.LoadAvg()}"));

        // ---- the baseline: the same datapath (the defaults of record), the same load, nothing recording the ring
        double baseTcp;
        long pcapBytes = -1, pcapPackets = -1, pcapDropped = -1, everyPacketPcap = -1;
        string baseCounts;
        var cluster = ClusterLoader.Load(File.ReadAllText(yaml), yaml);
        using (var lab = Datapath.Lab.NetnsLab.Up(cluster, new LabOptions
        {
            Datapath = LabDatapath.Factory(new EventOptions { SelfPid = (uint)Environment.ProcessId }),
            CollectEvents = false,
            SelfCommand = ["/bin/false"],
        }))
        {
            double seconds = Math.Max(60, o.BaselineMinutes * 60);
            using var load = new Load(o, seconds + 10);
            var tcp = Tcp(60);
            baseTcp = tcp.Gbps;
            Console.WriteLine(Inv($"soak baseline minute=1 tcp_gbps={tcp.Gbps:0.000} tcp_retrans={tcp.Retrans} (datapath, nothing recording) load={NetLab.LoadAvg()}"));
            if (o.BaselineMinutes >= 2)
            {
                // every packet on the node's side of both pods' veths, as tcpdump -w writes it, counted (not kept: GBs a minute);
                // and what it would have written had it dropped nothing: the veths' own counters, per packet a 16-byte pcap
                // record header and a 20-byte Linux cooked header (-i any) in place of the 14-byte Ethernet header
                var err = Path.Combine(o.Root, "tcpdump.err");
                var v0 = VethCounters();
                using var dump = new Background(["sh", "-c", $"ip netns exec {NodeNs} timeout -s INT 60 tcpdump -i any -s 0 -n -w - 2>{err} | wc -c"], TimeSpan.FromSeconds(150));
                var tcp2 = Tcp(58);
                dump.Wait(TimeSpan.FromSeconds(90));
                var v1 = VethCounters();
                pcapBytes = long.TryParse(dump.Stdout.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var b) ? b : -1;
                var text = File.Exists(err) ? File.ReadAllText(err) : "";
                pcapPackets = Count(text, "packets captured");
                pcapDropped = Count(text, "packets dropped by kernel");
                everyPacketPcap = (v1.Bytes - v0.Bytes) + (v1.Packets - v0.Packets) * (16 + 20 - 14);
                Console.WriteLine(Inv($"soak baseline minute=2 tcp_gbps={tcp2.Gbps:0.000} (with tcpdump -w of every packet) tcpdump_bytes={pcapBytes} tcpdump_packets={pcapPackets} tcpdump_dropped_by_kernel={pcapDropped} every_packet_pcap_bytes_per_min={everyPacketPcap} load={NetLab.LoadAvg()}"));
            }
            baseCounts = load.Finish(TimeSpan.FromSeconds(seconds + 60));
            Console.WriteLine("soak baseline load " + baseCounts);
        }

        // ---- the soak: `forensics record --lab` with its defaults, its own process
        var dir = Path.Combine(o.Root, "soak-recording");
        if (Directory.Exists(dir))
            Directory.Delete(dir, true);
        double minutes = o.Minutes;
        var psi = new ProcessStartInfo(o.Forensics, ["record", "--lab", yaml, "-d", Num(minutes * 60 + 20) + "s", "-o", dir, .. o.RecordArgs ?? []])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var rec = Process.Start(psi)!;
        var recOut = rec.StandardOutput.ReadToEndAsync();
        var recErr = rec.StandardError.ReadToEndAsync();
        var sw = Stopwatch.StartNew();
        while (!(File.Exists(Path.Combine(dir, "manifest.json")) && File.Exists("/run/netns/" + ClientNs)))
        {
            if (rec.HasExited || sw.Elapsed > TimeSpan.FromMinutes(3))
                throw new InvalidOperationException($"record --lab did not start: {recErr.Result}");
            Thread.Sleep(200);
        }
        Thread.Sleep(3000); // the lab's datapath attached, the recording's sources live
        var rows = new List<Minute>();
        var start = Sample(rec.Id, dir);
        var last = start;
        string loadCounts;
        using (var load = new Load(o, minutes * 60))
        {
            for (int m = 1; m <= Math.Ceiling(minutes); m++)
            {
                double secs = Math.Min(60, minutes * 60 - (m - 1) * 60);
                var tcp = Tcp(secs);
                var now = Sample(rec.Id, dir);
                var row = new Minute(m, tcp.Gbps, tcp.Retrans, now.Events - last.Events, now.Rows - last.Rows, now.DiskBytes, now.DiskBytes - last.DiskBytes,
                    (now.CpuSeconds - last.CpuSeconds) / Math.Max(1, (now.At - last.At).TotalSeconds) * 100, now.RssBytes, now.Lost - last.Lost, now.FlowRows - last.FlowRows, NetLab.LoadAvg());
                rows.Add(row);
                Console.WriteLine(Inv($"soak minute={m} tcp_gbps={row.TcpGbps:0.000} tcp_retrans={row.Retrans} events={row.Events} rows={row.Rows} flows_rows={row.FlowRows} disk_bytes={row.DiskBytes} disk_delta={row.DiskDelta} recorder_cpu={row.CpuPct:0.0}% rss_mib={row.Rss / 1048576.0:0.0} lost={row.Lost} load={row.Load}"));
                last = now;
            }
            loadCounts = load.Finish(TimeSpan.FromSeconds(120));
        }
        if (!rec.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            rec.Kill(true);
            throw new InvalidOperationException("record --lab did not stop after its duration");
        }
        var final = Sample(null, dir);
        Console.WriteLine("soak load " + loadCounts);
        Console.WriteLine($"soak record exit={rec.ExitCode} {recOut.Result.ReplaceLineEndings(" | ")} {FirstLine(recErr.Result)}");

        // ---- the per-minute table and the targets
        var sb = new StringBuilder();
        sb.AppendLine("| minute | TCP Gbps (ratio) | events | rows | flows rows | bytes on disk (+this minute) | recorder CPU | RSS MiB | lost |");
        sb.AppendLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in rows)
            sb.AppendLine(Inv($"| {r.N} | {r.TcpGbps:0.00} ({r.TcpGbps / baseTcp:0.00}) | {r.Events:N0} | {r.Rows:N0} | {r.FlowRows:N0} | {r.DiskBytes / 1048576.0:0.0} MiB (+{r.DiskDelta / 1048576.0:0.0}) | {r.CpuPct:0}% | {r.Rss / 1048576.0:0} | {r.Lost} |"));
        Console.Write(sb.ToString());
        var steady = rows.Skip(1).ToList();
        double tcpRatio = rows.Where(r => !double.IsNaN(r.TcpGbps)).Average(r => r.TcpGbps) / baseTcp;
        double perMin = steady.Count > 0 ? steady.Average(r => (double)r.DiskDelta) : rows.Average(r => (double)r.DiskDelta);
        double rssGrowth = steady.Count > 1 ? (steady[^1].Rss - steady[0].Rss) / 1048576.0 : 0;
        Console.WriteLine(Inv($"soak targets zero_loss={(final.Lost == 0 ? "met" : $"missed ({final.Lost} lost)")} rss_after_minute_1={(steady.Count > 1 ? $"{steady[0].Rss / 1048576.0:0}->{steady[^1].Rss / 1048576.0:0} MiB ({rssGrowth:+0;-0} MiB)" : "n/a")} ") +
            Inv($"tcp_ratio={tcpRatio:0.000} ({(tcpRatio >= 0.95 ? "met" : "missed")}, baseline {baseTcp:0.000} Gbps) recording_bytes_per_min={perMin / 1048576.0:0.0} MiB ") +
            Inv($"pcap_bytes_per_min={(everyPacketPcap > 0 ? (everyPacketPcap / 1048576.0).ToString("0.0", CultureInfo.InvariantCulture) + " MiB" : "n/a")} (tcpdump -w wrote {pcapBytes / 1048576.0:0.0} MiB, dropping {pcapDropped} packets) fraction={(everyPacketPcap > 0 ? (perMin / everyPacketPcap).ToString("0.0000", CultureInfo.InvariantCulture) : "n/a")}"));
    }

    private sealed record Minute(int N, double TcpGbps, long Retrans, long Events, long Rows, long DiskBytes, long DiskDelta, double CpuPct, long Rss, long Lost, long FlowRows, string Load);

    private sealed record Snapshot(DateTime At, double CpuSeconds, long RssBytes, long Events, long Rows, long FlowRows, long DiskBytes, long Lost);

    /// <summary>The recorder process's CPU and RSS (/proc), and what its manifest says it took, wrote and lost.</summary>
    private static Snapshot Sample(int? pid, string dir)
    {
        double cpu = 0;
        long rss = 0;
        if (pid is { } p && File.Exists($"/proc/{p}/stat"))
        {
            var stat = File.ReadAllText($"/proc/{p}/stat");
            var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            cpu = (long.Parse(f[11], CultureInfo.InvariantCulture) + long.Parse(f[12], CultureInfo.InvariantCulture)) / 100.0; // utime + stime, USER_HZ 100
            var m = Regex.Match(File.ReadAllText($"/proc/{p}/status"), @"VmRSS:\s+(\d+) kB");
            rss = m.Success ? long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) * 1024 : 0;
        }
        long events = 0, rowsTotal = 0, flows = 0, lost = 0;
        for (int attempt = 0; attempt < 5; attempt++)
        {
            try
            {
                var man = Forensics.Format.Manifest.Read(dir);
                events = (long)man.Sources.Values.SelectMany(s => s.Loss.Values).Aggregate(0UL, (a, l) => a + l.Emitted);
                rowsTotal = man.Tables.Values.Sum(t => t.Rows);
                flows = man.Tables.TryGetValue("flows", out var ft) ? ft.Rows : 0;
                lost = (long)man.EventsLost;
                break;
            }
            catch (Exception e) when (e is IOException or InvalidDataException or System.Text.Json.JsonException)
            {
                Thread.Sleep(100); // being replaced
            }
        }
        long disk = Directory.Exists(dir) ? new DirectoryInfo(dir).EnumerateFiles("*", SearchOption.AllDirectories).Sum(x => x.Length) : 0;
        return new Snapshot(DateTime.UtcNow, cpu, rss, events, rowsTotal, flows, disk, lost);
    }

    /// <summary>Bytes and packets through the node's side of every pod veth, both ways (the node namespace's link counters).</summary>
    private static (long Bytes, long Packets) VethCounters()
    {
        var r = Commands.Run("ip", ["netns", "exec", NodeNs, "sh", "-c",
            "for d in /sys/class/net/*; do [ \"${d##*/}\" = lo ] && continue; cat $d/statistics/rx_bytes $d/statistics/tx_bytes $d/statistics/rx_packets $d/statistics/tx_packets; done"]);
        var v = r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(x => long.Parse(x.Trim(), CultureInfo.InvariantCulture)).ToList();
        long bytes = 0, packets = 0;
        for (int i = 0; i + 3 < v.Count; i += 4)
        {
            bytes += v[i] + v[i + 1];
            packets += v[i + 2] + v[i + 3];
        }
        return (bytes, packets);
    }

    private static long Count(string text, string what)
    {
        var m = Regex.Match(text, @"(\d+) " + Regex.Escape(what));
        return m.Success ? long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : -1;
    }

    private static string FirstLine(string s) => s.Split('\n').FirstOrDefault(l => l.StartsWith("error", StringComparison.Ordinal)) ?? "";
}
