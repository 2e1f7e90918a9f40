using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using DuckDB.NET.Data;
using Forensics.Datapath;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Lab;

namespace Forensics.Bench;

/// <summary>
/// Issue 7, items 2b and 3: traffic between two lab pods with the datapath and a recording on,
/// against the same pods with no BPF attached; and the datapath's capture against tcpdump -w
/// on the same veth at rising offered loads.
/// </summary>
internal static partial class NetBench
{
    private static string LabName() => $"fxn{Environment.ProcessId % 10000}";

    private static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    // ---------------------------------------------------------------- net

    private sealed record NetResult(
        double TcpGbps, long TcpRetrans, string TcpCpu, double TcpIperfCpuPerGB, double TcpRecorderCpuPerGB, double UdpSentPps, double UdpRecvPps, double UdpLostPct,
        double FloodSentPps, double FloodRecvPps, double ProcessCpu, string Recording);

    private static string Line(NetResult r) =>
        Inv($"tcp_gbps={r.TcpGbps:0.000} tcp_retrans={r.TcpRetrans} tcp_{r.TcpCpu} tcp_iperf3_cpu_s_per_GB={r.TcpIperfCpuPerGB:0.000} tcp_recorder_cpu_s_per_GB={r.TcpRecorderCpuPerGB:0.000} iperf_udp64_sent_pps={r.UdpSentPps:0} iperf_udp64_recv_pps={r.UdpRecvPps:0} iperf_udp64_lost={r.UdpLostPct:0.0}% ") +
        Inv($"flood_udp64_sent_pps={r.FloodSentPps:0} flood_udp64_recv_pps={r.FloodRecvPps:0} bench_process_cpu={r.ProcessCpu:0.00}s ") + r.Recording;

    /// <summary>
    /// <paramref name="trials"/> times, each setup in turn (a fresh lab each): iperf3 TCP, iperf3 64-byte UDP, udpflood 64-byte UDP.
    /// nobpf: plain veths routed by the node namespace. datapath: attached, every event kind off, nothing recorded.
    /// record: datapath and probes with every kind on, snaplen 128, recorded to Parquet (forensics record --lab's defaults:
    /// monitor aggregation medium, capture of drops and each connection's first 8 packets).
    /// record-nocapture: the same with snaplen 0. record-perpacket: every packet traced and captured (--monitor-aggregation
    /// none --capture all). Ratios against nobpf of the same trial.
    /// </summary>
    public static void Net(string root, string udpflood, double seconds, int trials, IReadOnlyList<string> setups)
    {
        for (int t = 1; t <= trials; t++)
        {
            var results = new Dictionary<string, NetResult>(StringComparer.Ordinal);
            foreach (var setup in setups)
            {
                var self = (uint)Environment.ProcessId;
                var (events, probes) = setup switch
                {
                    "nobpf" => ((EventOptions?)null, false),
                    "datapath" => (new EventOptions { SelfPid = self, Kinds = new HashSet<EventKind> { EventKind.Exec } }, false), // the datapath emits no exec events: nothing at all
                    "record" => (new EventOptions { SelfPid = self }, true), // record's defaults: aggregation medium, capture of drops and first packets
                    "record-nocapture" => (new EventOptions { SelfPid = self, Snaplen = 0 }, true),
                    "record-perpacket" => (EventOptions.PerPacket with { SelfPid = self }, true), // --monitor-aggregation none --capture all
                    _ => throw new ArgumentException($"unknown setup {setup} (nobpf, datapath, record, record-nocapture, record-perpacket)"),
                };
                var r = results[setup] = NetTrial(root, udpflood, seconds, events, probes, setup.StartsWith("record", StringComparison.Ordinal), setup);
                Console.WriteLine(Inv($"net trial={t} setup={setup} ") + Line(r) + $" load={NetLab.LoadAvg()}");
            }
            if (results.TryGetValue("nobpf", out var plain))
                foreach (var (setup, r) in results.Where(kv => kv.Key != "nobpf"))
                    Console.WriteLine(Inv($"net trial={t} ratio setup={setup}/nobpf tcp={r.TcpGbps / plain.TcpGbps:0.000} tcp_cpu_per_GB(iperf3+recorder)={(r.TcpIperfCpuPerGB + r.TcpRecorderCpuPerGB) / plain.TcpIperfCpuPerGB:0.000} iperf_udp_recv_pps={r.UdpRecvPps / plain.UdpRecvPps:0.000} iperf_udp_sent_pps={r.UdpSentPps / plain.UdpSentPps:0.000} flood_sent_pps={r.FloodSentPps / plain.FloodSentPps:0.000} flood_recv_pps={r.FloodRecvPps / plain.FloodRecvPps:0.000} tcp_target_0.90_met={(r.TcpGbps >= 0.9 * plain.TcpGbps ? "yes" : "no")}"));
        }
    }

    /// <summary>/proc/stat's first line: (busy, softirq, total) jiffies of all CPUs.</summary>
    private static (long Busy, long Softirq, long Total) CpuStat()
    {
        var f = File.ReadLines("/proc/stat").First().Split(' ', StringSplitOptions.RemoveEmptyEntries)[1..].Select(x => long.Parse(x, CultureInfo.InvariantCulture)).ToArray();
        long total = f.Take(8).Sum(), idle = f[3] + f[4];
        return (total - idle, f[6], total);
    }

    private static string CpuSplit((long Busy, long Softirq, long Total) a, (long Busy, long Softirq, long Total) b)
    {
        double t = Math.Max(1, b.Total - a.Total);
        return Inv($"machine_busy={(b.Busy - a.Busy) / t * 100:0}%(softirq {(b.Softirq - a.Softirq) / t * 100:0}%)");
    }

    private static NetResult NetTrial(string root, string udpflood, double seconds, EventOptions? events, bool probes, bool recordIt, string setup)
    {
        using var lab = NetLab.Up(LabName(), events, probes);
        using var server = new Background(["ip", "netns", "exec", lab.ServerNs, "iperf3", "-s", "-B", NetLab.ServerIp, "--forceflush"], TimeSpan.FromSeconds(seconds * 3 + 90));
        if (!server.WaitFor("Server listening", TimeSpan.FromSeconds(10)))
            throw new InvalidOperationException("iperf3 -s did not come up: " + server.Stderr);
        var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
        if (recordIt)
            lab.StartRecording(Path.Combine(root, "net-recording"));
        var secs = seconds.ToString(CultureInfo.InvariantCulture);

        // FXB_PERF=DIR: a system-wide cpu-clock profile of the TCP test, one file per setup
        var perfDir = Environment.GetEnvironmentVariable("FXB_PERF");
        using var perf = string.IsNullOrEmpty(perfDir) ? null
            : new Background(["perf", "record", "-e", "cpu-clock", "-g", "-a", "-o", Path.Combine(perfDir, $"net-{setup}.perf.data"), "--", "sleep", Num(seconds)], TimeSpan.FromSeconds(seconds + 30));
        var c0 = CpuStat();
        var p0 = Process.GetCurrentProcess().TotalProcessorTime;
        using var tcp = Iperf(lab, ["-c", NetLab.ServerIp, "-t", secs, "-J"], seconds);
        var tcpCpu = CpuSplit(c0, CpuStat());
        double recorderTcp = (Process.GetCurrentProcess().TotalProcessorTime - p0).TotalSeconds;
        perf?.Wait(TimeSpan.FromSeconds(30));
        Thread.Sleep(500);
        using var udp = Iperf(lab, ["-c", NetLab.ServerIp, "-u", "-l", "64", "-b", "0", "-t", secs, "-J"], seconds);
        Thread.Sleep(500);
        var (floodSent, floodRecv) = Flood(lab, udpflood, seconds);
        var summary = lab.StopRecording();
        double cpu = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds;
        if (summary is not null && Directory.Exists(summary.Directory))
            Directory.Delete(summary.Directory, true);
        var te = tcp.RootElement.GetProperty("end");
        var ue = udp.RootElement.GetProperty("end");
        double usent = ue.GetProperty("sum_sent").GetProperty("bytes").GetDouble() / 64 / ue.GetProperty("sum_sent").GetProperty("seconds").GetDouble();
        double urecv = ue.GetProperty("sum_received").GetProperty("bytes").GetDouble() / 64 / ue.GetProperty("sum_received").GetProperty("seconds").GetDouble();
        // iperf3's own CPU (getrusage of client and server; with tick accounting the softirq work done
        // in their context, the tc programs included, is charged to them) per GB received
        double gb = te.GetProperty("sum_received").GetProperty("bytes").GetDouble() / 1e9;
        var cu = te.GetProperty("cpu_utilization_percent");
        double iperfCpu = (cu.GetProperty("host_total").GetDouble() + cu.GetProperty("remote_total").GetDouble()) / 100 * te.GetProperty("sum_received").GetProperty("seconds").GetDouble();
        return new NetResult(
            te.GetProperty("sum_received").GetProperty("bits_per_second").GetDouble() / 1e9,
            te.GetProperty("sum_sent").TryGetProperty("retransmits", out var rt) ? rt.GetInt64() : -1,
            tcpCpu, iperfCpu / gb, recordIt ? recorderTcp / gb : 0,
            usent, urecv, ue.GetProperty("sum").GetProperty("lost_percent").GetDouble(),
            floodSent, floodRecv, cpu,
            summary is null ? "recording=none" : NetLab.Describe(summary));
    }

    /// <summary>udpflood at full speed (sendmmsg/recvmmsg, 64 batched datagrams per call): (sent, received) per second of sending.</summary>
    private static (double Sent, double Received) Flood(NetLab lab, string udpflood, double seconds)
    {
        using var recv = new Background(["ip", "netns", "exec", lab.ServerNs, udpflood, "recv", NetLab.ServerIp, "9000", Num(seconds + 20)], TimeSpan.FromSeconds(seconds + 40));
        if (!recv.WaitFor("ready", TimeSpan.FromSeconds(10)))
            throw new InvalidOperationException("udpflood recv did not come up: " + recv.Stderr);
        var send = Commands.Run("ip", ["netns", "exec", lab.ClientNs, udpflood, "send", NetLab.ServerIp, "9000", "0", Num(seconds), "64"], TimeSpan.FromSeconds(seconds + 20));
        if (send.ExitCode != 0)
            throw new InvalidOperationException("udpflood send: " + send.FirstErrorLine);
        recv.Wait(TimeSpan.FromSeconds(seconds + 25));
        var s = KeyValues(send.Stdout);
        var r = KeyValues(recv.Stdout);
        return (s["pps"], r.GetValueOrDefault("received") / s["seconds"]);
    }

    private static JsonDocument Iperf(NetLab lab, string[] args, double seconds)
    {
        var r = Commands.Run("ip", ["netns", "exec", lab.ClientNs, "iperf3", .. args], TimeSpan.FromSeconds(seconds + 30));
        if (r.ExitCode != 0)
            throw new InvalidOperationException($"iperf3 {string.Join(' ', args)}: exit {r.ExitCode}: {r.FirstErrorLine} {r.Stdout[..Math.Min(300, r.Stdout.Length)]}");
        return JsonDocument.Parse(r.Stdout);
    }

    // ---------------------------------------------------------------- capture

    /// <summary>
    /// One lab with the datapath (capture on, snaplen 128) and, per offered load, a fresh
    /// recording and a tcpdump -w on the client's host veth, while udpflood sends 64-byte
    /// datagrams from the client pod to a counting receiver in the server pod.
    /// </summary>
    public static void Capture(string root, string udpflood, double seconds, IReadOnlyList<double> loads, string kinds, uint ringBytes = 16u << 20)
    {
        bool probes = kinds == "all";
        var events = new EventOptions
        {
            SelfPid = (uint)Environment.ProcessId,
            Snaplen = 128,
            RingBytes = ringBytes,
            Kinds = kinds == "all" ? new HashSet<EventKind>() : new HashSet<EventKind> { EventKind.Capture },
        };
        using var lab = NetLab.Up(LabName(), events, probes);
        Console.WriteLine(Inv($"capture setup kinds={kinds} probes={probes} snaplen=128 ring={ringBytes >> 20}MiB veth={lab.ClientLink} ifindex={lab.ClientIfindex} (host side of the client pod, in {lab.NodeNs}) load={NetLab.LoadAvg()}"));
        // a first step of 2 s at 100k/s, reported as warmup: the first recording of a process runs cold (JIT, first batches)
        foreach (var (pps, warm) in loads.Select(l => (l, false)).Prepend((100000.0, true)))
        {
            double secs = warm ? 2 : seconds;
            var pcap = Path.Combine(root, "capture.pcap");
            File.Delete(pcap);
            var dir = Path.Combine(root, "capture-recording");
            using var recv = new Background(["ip", "netns", "exec", lab.ServerNs, udpflood, "recv", NetLab.ServerIp, "9000", Num(secs + 20)], TimeSpan.FromSeconds(secs + 40));
            if (!recv.WaitFor("ready", TimeSpan.FromSeconds(10)))
                throw new InvalidOperationException("udpflood recv did not come up: " + recv.Stderr);
            using var dump = new Background(["ip", "netns", "exec", lab.NodeNs, "tcpdump", "-n", "-i", lab.ClientLink, "-w", pcap, "udp and dst port 9000"], TimeSpan.FromSeconds(seconds + 60));
            if (!dump.WaitFor("listening on", TimeSpan.FromSeconds(10)))
                throw new InvalidOperationException("tcpdump did not come up: " + dump.Stderr);
            lab.StartRecording(dir);
            long rx0 = RxPackets(lab);
            var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
            // FXB_PERF=DIR: a system-wide cpu-clock profile of the fastest step
            var perfDir = Environment.GetEnvironmentVariable("FXB_PERF");
            using var perf = string.IsNullOrEmpty(perfDir) || pps != 0 ? null
                : new Background(["perf", "record", "-e", "cpu-clock", "-g", "-a", "-o", Path.Combine(perfDir, $"capture-{kinds}-max.perf.data"), "--", "sleep", Num(secs)], TimeSpan.FromSeconds(secs + 30));
            var send = Commands.Run("ip", ["netns", "exec", lab.ClientNs, udpflood, "send", NetLab.ServerIp, "9000", Num(pps), Num(secs), "64"], TimeSpan.FromSeconds(secs + 20));
            if (send.ExitCode != 0)
                throw new InvalidOperationException("udpflood send: " + send.FirstErrorLine);
            Thread.Sleep(1500); // tcpdump reads a block when it is full or 1 s old (libpcap's timeout): let the last one go
            long rx = RxPackets(lab) - rx0;
            dump.Interrupt(TimeSpan.FromSeconds(20));
            var summary = lab.StopRecording()!;
            double cpu = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds;
            var counters = lab.Counters();
            recv.Wait(TimeSpan.FromSeconds(secs + 25));
            perf?.Wait(TimeSpan.FromSeconds(30));

            var s = KeyValues(send.Stdout);
            long sent = (long)s["sent"];
            double sentPps = s["pps"];
            long tcpdumpKept = Count(dump.Stderr, "packets captured");
            long tcpdumpDropped = Count(dump.Stderr, "packets dropped by kernel");
            long tcpdumpSeen = Count(dump.Stderr, "packets received by filter");
            var r = KeyValues(recv.Stdout);
            var cap = lab.Since(EventKind.Capture, counters);
            var trace = lab.Since(EventKind.Trace, counters);
            ulong userDropped = summary.Loss.TryGetValue("capture", out var l) ? l.UserspaceDropped : 0;
            long kept = CountRows(dir, lab.ClientIfindex);
            long rows = summary.Rows.GetValueOrDefault("capture");
            Console.WriteLine(Inv(
                $"capture {(warm ? "warmup " : "")}offered_pps={(pps == 0 ? "max" : Num(pps))} achieved_pps={sentPps:0} sent={sent} veth_rx={rx} received={r.GetValueOrDefault("received"):0} ") +
                Inv($"tcpdump_kept={tcpdumpKept} tcpdump_dropped={tcpdumpDropped} tcpdump_seen={tcpdumpSeen} ") +
                Inv($"forensics_kept={kept} capture_rows_all_veths={rows} capture_emitted={cap.Emitted} capture_failed={cap.Failed} capture_userspace_dropped={userDropped} trace_emitted={trace.Emitted} trace_failed={trace.Failed} ") +
                Inv($"kept_ratio_forensics/tcpdump={(tcpdumpKept > 0 ? (double)kept / tcpdumpKept : 0):0.000} forensics_kept/sent={(double)kept / Math.Max(1, sent):0.000} tcpdump_kept/sent={(double)tcpdumpKept / Math.Max(1, sent):0.000} ") +
                Inv($"bench_process_cpu={cpu:0.00}s load={NetLab.LoadAvg()}"));
            if (Directory.Exists(dir))
                Directory.Delete(dir, true);
            File.Delete(pcap);
        }
    }

    private static string Num(double v) => v.ToString("0.###", CultureInfo.InvariantCulture);

    /// <summary>Packets the client's host veth received (those the pod sent), from the node namespace.</summary>
    private static long RxPackets(NetLab lab)
    {
        var json = Commands.Ip("-n", lab.NodeNs, "-s", "-j", "link", "show", "dev", lab.ClientLink);
        using var doc = JsonDocument.Parse(json);
        return doc.RootElement[0].GetProperty("stats64").GetProperty("rx").GetProperty("packets").GetInt64();
    }

    private static Dictionary<string, double> KeyValues(string text)
    {
        var d = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (Match m in KeyValue().Matches(text))
            d[m.Groups[1].Value] = double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture);
        return d;
    }

    private static long Count(string tcpdumpStderr, string what)
    {
        var m = Regex.Match(tcpdumpStderr, @"(\d+) " + Regex.Escape(what));
        return m.Success ? long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : -1;
    }

    /// <summary>Capture rows of the client's datagrams as the client's host veth saw them (from-endpoint), from the recording's Parquet.</summary>
    private static long CountRows(string dir, int ifindex)
    {
        var files = Path.Combine(dir, "capture");
        if (!Directory.Exists(files) || !Directory.EnumerateFiles(files, "*.parquet", SearchOption.AllDirectories).Any())
            return 0;
        using var con = new DuckDBConnection("DataSource=:memory:");
        con.Open();
        using var cmd = con.CreateCommand();
        cmd.CommandText = $"select count(*) from read_parquet('{files}/**/*.parquet') where ifindex = {ifindex} and obs_point = 'from-endpoint' and protocol = 'udp' and dst_port = 9000";
        return Convert.ToInt64(cmd.ExecuteScalar(), CultureInfo.InvariantCulture);
    }

    [GeneratedRegex(@"(\w+)=([0-9.]+)")]
    private static partial Regex KeyValue();
}
