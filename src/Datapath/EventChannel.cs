using Forensics.Datapath.Abi;
using Forensics.Datapath.Bpf;

namespace Forensics.Datapath;

/// <summary>What every program's event channel is configured with before load.</summary>
public sealed record EventOptions
{
    /// <summary>Event kinds to emit; empty means all.</summary>
    public IReadOnlySet<EventKind> Kinds { get; init; } = new HashSet<EventKind>();

    /// <summary>Bytes of each packet to capture (0 turns capture off, at most <see cref="Limits.CaptureMax"/>).</summary>
    public uint Snaplen { get; init; } = 128;

    /// <summary>Ring buffer size in bytes: a power of two, at least a page.</summary>
    public uint RingBytes { get; init; } = 16u << 20;

    /// <summary>Pending bytes at which a program forces a consumer wakeup.</summary>
    public ulong WakeupBytes { get; init; } = 1u << 20;

    /// <summary>A process never reported (the recorder itself); 0 for none.</summary>
    public uint SelfPid { get; init; }

    /// <summary>
    /// Trace events of tracked connections, as Cilium's monitor aggregation: "none" (every packet) or
    /// "medium" (a connection's first packets, new TCP flags per direction, and one every ~5 s).
    /// </summary>
    public MonitorAggregation MonitorAggregation { get; init; } = MonitorAggregation.None;

    public uint KindMask => Kinds.Count == 0 ? 0xffffffffu : Kinds.Aggregate(0u, (m, k) => m | (1u << (int)k));
}

/// <summary>How many trace events a tracked connection makes (bpf/include/fx_abi.h, fx_config.trace_aggregate).</summary>
public enum MonitorAggregation
{
    /// <summary>A trace event for every packet.</summary>
    None,

    /// <summary>Per connection and direction: when it starts, when a TCP flag not traced before appears, and every ~5 s.</summary>
    Medium,
}

/// <summary>
/// A loaded BPF object that emits events: its ring buffer and its per-CPU
/// emission counters (fx_events, fx_emit_stats, from bpf/lib/events.h).
/// </summary>
public interface IEventSource : IDisposable
{
    string Name { get; }
    BpfMap EventsMap { get; }
    BpfMap EmitStatsMap { get; }
}

/// <summary>Configures and reads the event channel every object shares (bpf/lib/events.h).</summary>
public static class EventChannel
{
    public const string EventsMap = "fx_events";
    public const string StatsMap = "fx_emit_stats";
    public const string ConfigVariable = "fx_cfg";

    /// <summary>Writes fx_cfg and sizes the ring buffer; call before <see cref="BpfObject.Load"/>.</summary>
    public static void Configure(BpfObject obj, EventOptions options)
    {
        ArgumentNullException.ThrowIfNull(obj);
        ArgumentNullException.ThrowIfNull(options);
        if (options.Snaplen > Limits.CaptureMax)
            throw new ArgumentOutOfRangeException(nameof(options), $"snaplen {options.Snaplen} is over {Limits.CaptureMax}");
        if (options.RingBytes < 4096 || (options.RingBytes & (options.RingBytes - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(options), $"ring size {options.RingBytes} is not a power of two of at least 4096");
        var cfg = obj.GetReadOnly<Config>(ConfigVariable);
        cfg.KindsEnabled = options.KindMask;
        cfg.Snaplen = options.Snaplen;
        cfg.WakeupBytes = Math.Min(options.WakeupBytes, options.RingBytes / 2);
        cfg.SelfPid = options.SelfPid;
        cfg.TraceAggregate = options.MonitorAggregation == MonitorAggregation.Medium ? 1u : 0u;
        obj.SetReadOnly(ConfigVariable, cfg);
        obj.SetMaxEntries(EventsMap, options.RingBytes);
    }

    /// <summary>Emitted and failed counts per event kind, summed over CPUs and over the sources.</summary>
    public static Dictionary<EventKind, EmitStats> ReadCounters(IEnumerable<IEventSource> sources)
    {
        ArgumentNullException.ThrowIfNull(sources);
        var total = new Dictionary<EventKind, EmitStats>();
        foreach (var s in sources)
        {
            foreach (var (k, v) in ReadCounters(s.EmitStatsMap))
            {
                var t = total.GetValueOrDefault(k);
                t.Emitted += v.Emitted;
                t.Failed += v.Failed;
                total[k] = t;
            }
        }
        return total;
    }

    /// <summary>Emitted and failed counts per CPU and event kind (entries with both zero left out).</summary>
    public static List<Monitoring.StatsEntry> ReadPerCpu(BpfMap stats)
    {
        ArgumentNullException.ThrowIfNull(stats);
        var result = new List<Monitoring.StatsEntry>();
        for (uint k = 1; k < (uint)EventKind.Max; k++)
        {
            var perCpu = stats.LookupPerCpu<uint, EmitStats>(k);
            for (int cpu = 0; cpu < perCpu.Length; cpu++)
                if (perCpu[cpu].Emitted + perCpu[cpu].Failed > 0)
                    result.Add(new Monitoring.StatsEntry((ushort)cpu, (EventKind)k, perCpu[cpu].Emitted, perCpu[cpu].Failed, 0));
        }
        return result;
    }

    /// <summary>Emitted and failed counts per event kind, summed over CPUs.</summary>
    public static IReadOnlyDictionary<EventKind, EmitStats> ReadCounters(BpfMap stats)
    {
        ArgumentNullException.ThrowIfNull(stats);
        var result = new Dictionary<EventKind, EmitStats>();
        for (uint k = 1; k < (uint)EventKind.Max; k++)
        {
            var perCpu = stats.LookupPerCpu<uint, EmitStats>(k);
            var sum = new EmitStats();
            foreach (var s in perCpu)
            {
                sum.Emitted += s.Emitted;
                sum.Failed += s.Failed;
            }
            result[(EventKind)k] = sum;
        }
        return result;
    }
}
