using System.Diagnostics;
using Forensics.Datapath;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Bpf;
using Forensics.Datapath.Lab;
using Forensics.Datapath.Monitoring;
using Forensics.Recorder;

namespace Forensics.Bench;

/// <summary>
/// The monitor socket (issue 21, docs/monitor.md): events per second delivered to one and to three clients
/// of a running datapath, against the same ring buffer drained directly by the same reader thread with no
/// client, in the same run. The producer is the real datapath program run by BPF_PROG_TEST_RUN (trace
/// events, 104 bytes each); the reader is the lab's own (EventCollector), which hands each record to the
/// server; the clients are MonitorClients on their own threads, counting what they receive.
/// </summary>
internal static class MonitorBench
{
    private sealed class Counter : IMonitorHandler
    {
        public long Received;
        public ulong Dropped;
        public ulong Failed;
        private ulong failedBase = ulong.MaxValue;

        public void OnEvent(ReadOnlySpan<byte> record)
        {
            if (record[0] == (byte)EventKind.Trace)
                Interlocked.Increment(ref Received);
        }

        public void OnStats(IReadOnlyList<StatsEntry> stats)
        {
            ulong failed = 0, dropped = 0;
            foreach (var s in stats)
            {
                failed += s.Failed;
                dropped += s.Dropped;
            }
            if (failedBase == ulong.MaxValue)
                failedBase = failed;
            Volatile.Write(ref Failed, failed - failedBase);
            Volatile.Write(ref Dropped, dropped);
        }
    }

    public sealed record Result(string Setup, double Rate, double Seconds, ulong Emitted, ulong KernelFailed, long[] Received, ulong[] Dropped, double ReaderCpu, double SenderCpu, double ClientCpu)
    {
        public double Delivered(int i) => Received[i] / Seconds;
    }

    public static Result Run(int clients, double rate, double seconds, string root)
    {
        var options = new EventOptions { Kinds = new HashSet<EventKind> { EventKind.Trace }, Snaplen = 0, RingBytes = 16u << 20 };
        using var source = new ObjectSource(EmbeddedObjects.Datapath, options);
        var prog = source.Object.Program("fx_from_endpoint");
        var dir = Path.Combine(root, $"monitor-{Environment.ProcessId}");
        MonitorServer? server = clients == 0 ? null : new MonitorServer(new MonitorServerOptions
        {
            SocketPath = Path.Combine(dir, "monitor.sock"),
            Cpus = BpfMap.PossibleCpus,
            KernelCounters = () => EventChannel.ReadPerCpu(source.EmitStatsMap),
            Hello = new MonitorHello { Lab = "bench" },
        });
        var counters = new List<Counter>();
        var threads = new List<Thread>();
        var conns = new List<MonitorClient>();
        using var stop = new CancellationTokenSource();
        for (int i = 0; i < clients; i++)
        {
            var c = MonitorClient.Connect(server!.SocketPath, ["trace"], $"bench-{i}", TimeSpan.FromSeconds(5));
            var h = new Counter();
            conns.Add(c);
            counters.Add(h);
            var t = new Thread(() =>
            {
                try
                {
                    c.Run(h, stop.Token);
                }
                catch (IOException)
                {
                }
            }) { Name = $"fxb-client-{i}", IsBackground = true };
            t.Start();
            threads.Add(t);
        }
        var before = Proc.ThreadCpu();
        var emitted0 = EventChannel.ReadCounters([source]).GetValueOrDefault(EventKind.Trace);
        var reader = new EventCollector(source, server, keep: false);

        int minRuns = rate > 0 ? (int)Math.Clamp(rate / 1000, 1, 100_000) : 100_000;
        long produced = 0;
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed.TotalSeconds < seconds)
        {
            long due = rate > 0 ? (long)(rate * sw.Elapsed.TotalSeconds) : produced + 100_000;
            int n = (int)Math.Min(due - produced, 100_000);
            if (n >= minRuns)
            {
                prog.TestRun(Ingest.Packet, n);
                produced += n;
            }
            else
            {
                Thread.Sleep(1);
            }
        }
        double elapsed = sw.Elapsed.TotalSeconds;
        var now = EventChannel.ReadCounters([source]).GetValueOrDefault(EventKind.Trace);
        ulong emitted = now.Emitted - emitted0.Emitted, failed = now.Failed - emitted0.Failed;
        // every emitted event reaches each client or is counted as dropped for it (bounded wait)
        var wait = Stopwatch.StartNew();
        while (wait.Elapsed < TimeSpan.FromSeconds(20))
        {
            bool done = clients == 0
                ? (ulong)reader.Records >= emitted
                : counters.All(h => (ulong)Interlocked.Read(ref h.Received) + Volatile.Read(ref h.Dropped) >= emitted);
            if (done)
                break;
            Thread.Sleep(20);
        }
        Thread.Sleep(1200); // one more counters frame
        var after = Proc.ThreadCpu();
        double Cpu(Func<string, bool> which) => after.Where(kv => which(kv.Key)).Sum(kv => kv.Value - before.GetValueOrDefault(kv.Key));
        var result = new Result(clients == 0 ? "direct" : $"{clients}-client{(clients > 1 ? "s" : "")}", rate, elapsed, emitted, failed,
            clients == 0 ? [reader.Records] : [.. counters.Select(h => Interlocked.Read(ref h.Received))],
            clients == 0 ? [0] : [.. counters.Select(h => Volatile.Read(ref h.Dropped))],
            Cpu(n => n == "lab events"), Cpu(n => n.StartsWith("monitor client", StringComparison.Ordinal)), Cpu(n => n.StartsWith("fxb-client", StringComparison.Ordinal)));
        reader.Dispose();
        stop.Cancel();
        server?.Dispose();
        foreach (var t in threads)
            t.Join(TimeSpan.FromSeconds(5));
        foreach (var c in conns)
            c.Dispose();
        if (Directory.Exists(dir))
            Directory.Delete(dir, true);
        return result;
    }

    public static string Line(Result r, double direct) =>
        $"monitor setup={r.Setup} target={(r.Rate > 0 ? $"{r.Rate / 1e6:0.00}M/s" : "max")} emitted={r.Emitted} kernel_failed={r.KernelFailed} " +
        $"emitted_rate={r.Emitted / r.Seconds / 1e6:0.000}M/s " +
        string.Join(" ", r.Received.Select((n, i) => $"client{i}[received={n} dropped={r.Dropped[i]} delivered={r.Delivered(i) / 1e6:0.000}M/s ratio_to_direct={(direct > 0 ? r.Delivered(i) / direct : 0):0.00}]")) +
        $" cpu[reader={r.ReaderCpu:0.00}s senders={r.SenderCpu:0.00}s clients={r.ClientCpu:0.00}s]";
}
