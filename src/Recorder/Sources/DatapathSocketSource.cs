using Forensics.Datapath.Abi;
using Forensics.Datapath.Control;
using Forensics.Datapath.Lab;
using Forensics.Datapath.Monitoring;
using Forensics.Recorder.Tables;

namespace Forensics.Recorder.Sources;

/// <summary>
/// A datapath another process owns and keeps running (<c>lab up</c>), read from its monitor socket
/// (docs/monitor.md): its ring buffer records as the owner copied them out, decoded by the ABI as the
/// kernel's own are. Counts, per table, what the datapath emitted since this client joined, what its kernel
/// could not emit (ring buffer full: <c>failed</c>) and what the owner dropped for this client because its
/// queue was full (<c>userspace_dropped</c>); both per CPU for <see cref="Lost"/>.
/// </summary>
public sealed class DatapathSocketSource : IRecordSource, IMonitorHandler
{
    private readonly MonitorClient client;
    private readonly EventContext context;
    private readonly object gate = new();
    private Dictionary<(ushort Cpu, EventKind Kind), StatsEntry>? baseline;
    private Dictionary<(ushort Cpu, EventKind Kind), StatsEntry> latest = [];
    private readonly Dictionary<ushort, ulong> lostPerCpu = [];
    private RecordWriter? writer;

    /// <summary>Connects to the socket and subscribes to <paramref name="kinds"/> (the datapath's kinds only: drop, policy, nat, trace, capture).</summary>
    public DatapathSocketSource(string lab, string socketPath, IEnumerable<EventKind> kinds, EventContext context, string who)
    {
        ArgumentNullException.ThrowIfNull(kinds);
        Lab = lab;
        ArgumentNullException.ThrowIfNull(context);
        client = MonitorClient.Connect(socketPath, [.. kinds.Where(k => k is > EventKind.None and <= EventKind.Capture).Order().Select(Rows.TableOf)], who, TimeSpan.FromSeconds(10));
        var boot = File.Exists("/proc/sys/kernel/random/boot_id") ? File.ReadAllText("/proc/sys/kernel/random/boot_id").Trim() : "";
        if (client.Hello.BootId.Length > 0 && boot.Length > 0 && client.Hello.BootId != boot)
        {
            client.Dispose();
            throw new MonitorConnectException($"{socketPath}: the datapath runs on another boot ({client.Hello.BootId}); its kernel times cannot be read here");
        }
        // its verdicts and policy drops carry its own rule ids, named from its control plane's rule sets; its ifindexes
        // are its node namespace's interfaces
        Func<uint, IReadOnlyList<PolicyRuleRef>> rules = client.Hello.ControlFile.Length == 0 ? _ => [] : PinnedDatapath.RuleResolver(client.Hello.ControlFile);
        this.context = context.ForDatapath(rules, Sessions.RecordingSession.InterfaceNamesOf(lab));
    }

    /// <summary>Every datapath served on this machine now (<see cref="LabState.Serving"/>), or those named.</summary>
    public static IReadOnlyList<LabState> Running(IReadOnlyCollection<string>? names = null)
    {
        var all = LabState.Serving();
        if (names is null || names.Count == 0)
            return all;
        var missing = names.Where(n => all.All(s => s.Name != n)).ToList();
        if (missing.Count > 0)
            throw new MonitorConnectException($"no running datapath named {string.Join(", ", missing)} (running: {(all.Count == 0 ? "none; start one with `forensics lab up FILE`" : string.Join(", ", all.Select(s => s.Name)))})");
        return [.. all.Where(s => names.Contains(s.Name))];
    }

    /// <summary>The lab (datapath) name.</summary>
    public string Lab { get; }

    public MonitorHello Hello => client.Hello;

    /// <summary>Called on the source's thread with a CPU and how many events it lost there since the last call (ring buffer full or this client's queue full).</summary>
    public Action<int, ulong>? Lost { get; init; }

    public string Name => "datapath:" + Lab;
    public string Kind => "socket";
    public string Detail => $"{client.SocketPath} (lab {Lab}, pid {client.Hello.Pid})";

    public void Run(RecordWriter writer, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(writer);
        this.writer = writer;
        writer.Started();
        try
        {
            if (client.Run(this, token))
                writer.NotRecorded($"the datapath {Lab} stopped serving ({client.ByeReason}): nothing after that was recorded from it");
        }
        catch (Exception e) when (e is IOException or InvalidDataException)
        {
            writer.NotRecorded($"the datapath {Lab} went away ({e.Message}): nothing after that was recorded from it");
        }
        writer.Flush();
    }

    void IMonitorHandler.OnEvent(ReadOnlySpan<byte> record)
    {
        var w = writer!;
        w.Write(record);
        w.FlushIfOlderThan(20);
    }

    void IMonitorHandler.OnIdle() => writer?.FlushIfOlderThan(20);

    void IMonitorHandler.OnStats(IReadOnlyList<StatsEntry> stats)
    {
        var now = stats.ToDictionary(e => (e.Cpu, e.Kind));
        Dictionary<ushort, ulong> newLoss = [];
        lock (gate)
        {
            if (baseline is null)
            {
                baseline = now; // the first frame: counts from here on are this client's
                latest = now;
                return;
            }
            foreach (var (key, e) in now)
            {
                var prev = latest.GetValueOrDefault(key, baseline.GetValueOrDefault(key));
                ulong lost = e.Failed - prev.Failed + e.Dropped - prev.Dropped;
                if (lost > 0)
                    newLoss[key.Cpu] = newLoss.GetValueOrDefault(key.Cpu) + lost;
            }
            latest = now;
            foreach (var (cpu, n) in newLoss)
                lostPerCpu[cpu] = lostPerCpu.GetValueOrDefault(cpu) + n;
        }
        writer?.FlushIfOlderThan(0);
        if (Lost is { } report)
            foreach (var (cpu, n) in newLoss.OrderBy(kv => kv.Key))
                report(cpu, n);
    }

    public bool Decode(ReadOnlySpan<byte> record, RowSink rows) => KernelSource.DecodeAbi(record, rows, context);

    public string TableOf(ReadOnlySpan<byte> record) => KernelSource.AbiTableOf(record);

    /// <summary>Since this client joined, per table: emitted (the kernel's), failed (the kernel's ring full), dropped (this client's queue full).</summary>
    public IReadOnlyDictionary<string, SourceCounts> Counters()
    {
        var sums = new Dictionary<string, SourceCounts>(StringComparer.Ordinal);
        var perCpu = new Dictionary<string, Dictionary<uint, CpuCounts>>(StringComparer.Ordinal);
        lock (gate)
        {
            if (baseline is null)
                return sums;
            foreach (var (key, e) in latest)
            {
                var b = baseline.GetValueOrDefault(key);
                var table = Rows.TableOf(key.Kind);
                var s = sums.GetValueOrDefault(table);
                sums[table] = new SourceCounts(s.Emitted + e.Emitted - b.Emitted, s.Failed + e.Failed - b.Failed, s.Dropped + e.Dropped - b.Dropped);
                if (!perCpu.TryGetValue(table, out var cpus))
                    perCpu[table] = cpus = [];
                var c = cpus.GetValueOrDefault(key.Cpu);
                cpus[key.Cpu] = new CpuCounts(c.Emitted + e.Emitted - b.Emitted, c.Failed + e.Failed - b.Failed);
            }
        }
        // the kernel's ring buffer failures per CPU (this client's queue drops stay user space's, without a CPU)
        return sums.ToDictionary(kv => kv.Key, kv => kv.Value with { PerCpu = perCpu[kv.Key] }, StringComparer.Ordinal);
    }

    /// <summary>The running datapath's tables now, from its pinned maps and its control plane's file.</summary>
    public DatapathSnapshot Snapshot() => PinnedDatapath.Snapshot(client.Hello.PinDir, client.Hello.ControlFile);

    public void Dispose() => client.Dispose();
}
