using Forensics.Datapath;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Bpf;
using Forensics.Recorder.Tables;

namespace Forensics.Recorder.Sources;

/// <summary>
/// The kernel: the ring buffers of our BPF objects (probes, the datapath) read by one thread through
/// libbpf, their records decoded by the ABI (bpf/include/fx_abi.h), their per-CPU emission counters
/// (fx_emit_stats) counting what the programs could not hand over. The BPF objects belong to the caller.
/// </summary>
public sealed class KernelSource : IRecordSource
{
    private readonly IReadOnlyList<IEventSource> objects;
    private readonly EventContext context;
    private readonly int pollMs;
    private volatile IReadOnlyDictionary<string, SourceCounts>? final;

    public KernelSource(IReadOnlyList<IEventSource> objects, EventContext context, int pollMs = 10)
    {
        ArgumentNullException.ThrowIfNull(objects);
        ArgumentNullException.ThrowIfNull(context);
        if (objects.Count == 0)
            throw new ArgumentException("no BPF object", nameof(objects));
        this.objects = objects;
        this.context = context;
        this.pollMs = pollMs;
    }

    public string Name => "kernel";
    public string Kind => "bpf";
    public string Detail => "ring buffers of " + string.Join(", ", objects.Select(o => o.Name));

    /// <summary>Event records known at start (processes found in /proc), handed over before the ring buffers.</summary>
    public List<byte[]> Preamble { get; } = [];

    /// <summary>
    /// Called when the recording stops, before its last records are taken: detaches the programs the recording
    /// owns (its probes), so that the counters frozen after the drain are the programs' last and everything they
    /// emitted is a row or counted lost. Null for programs that go on serving others (a lab's datapath).
    /// </summary>
    public Action? StopEmitting { get; init; }

    /// <summary>
    /// A bpffs folder to pin the objects' emission counters in while recording (<see cref="Storage.KernelCounterPins"/>):
    /// what <c>recover</c> counts a killed recorder's loss from. Null: none.
    /// </summary>
    public string? PinDir { get; set; }

    public void Run(RecordWriter writer, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(writer);
        final = null;
        var pinned = PinDir is { } dir && Storage.KernelCounterPins.Pin(dir, objects);
        foreach (var rec in Preamble)
            writer.Write(rec);
        using var reader = new RingBufferReader(objects.Select(s => s.EventsMap).ToList(), writer.Write);
        writer.Started();
        while (!token.IsCancellationRequested)
        {
            reader.Poll(pollMs);
            writer.FlushIfOlderThan(20);
        }
        // The programs go on emitting until their owner detaches them: take what they emitted, then freeze the
        // counters that go with what was taken, so that a recording's loss is counted to its stop and nothing
        // emitted meanwhile is reported neither as a row nor as lost (a busy producer may leave some unread:
        // the recording counts those as lost).
        IReadOnlyDictionary<string, SourceCounts> counts;
        StopEmitting?.Invoke();
        var drain = System.Diagnostics.Stopwatch.StartNew();
        do
        {
            reader.Consume(maxRecords: 1 << 16); // bounded: a flood that never pauses does not hold the stop up
            counts = ReadCounters();
        }
        while (drain.ElapsedMilliseconds < 1000 && counts.Any(kv => kv.Value.Emitted > writer.Taken(kv.Key) + writer.Dropped(kv.Key)));
        final = counts;
        writer.Flush();
        Pinned = pinned;
    }

    /// <summary>Whether the counters were pinned in <see cref="PinDir"/> (the recording removes them once its final manifest is written).</summary>
    public bool Pinned { get; private set; }

    public bool Decode(ReadOnlySpan<byte> record, RowSink rows) => DecodeAbi(record, rows, context);

    /// <summary>Decodes one ABI record (fx_hdr first) into its table's batch; false when it is not one of ours.</summary>
    public static bool DecodeAbi(ReadOnlySpan<byte> record, RowSink rows, EventContext context)
    {
        ArgumentNullException.ThrowIfNull(rows);
        if (record.Length < 16 || record[1] != Limits.AbiVersion || record[0] == 0 || record[0] >= (int)EventKind.Max)
            return false;
        rows.Rows((EventKind)record[0]).Append(record, context);
        return true;
    }

    public string TableOf(ReadOnlySpan<byte> record) => AbiTableOf(record);

    /// <summary>The table of an ABI record by its kind byte.</summary>
    public static string AbiTableOf(ReadOnlySpan<byte> record) =>
        record.Length > 0 && record[0] is > 0 and < (byte)EventKind.Max ? Rows.TableOf((EventKind)record[0]) : "unknown";

    /// <summary>The emission counters; once <see cref="Run"/> has returned, as they were when it took its last records.</summary>
    public IReadOnlyDictionary<string, SourceCounts> Counters() => final ?? ReadCounters();

    /// <summary>Every kind's counters, summed over the objects, with each CPU's (one read of the per-CPU maps).</summary>
    private Dictionary<string, SourceCounts> ReadCounters()
    {
        var perCpu = new Dictionary<string, Dictionary<uint, CpuCounts>>(StringComparer.Ordinal);
        for (var k = EventKind.Drop; k < EventKind.Max; k++)
            perCpu.TryAdd(Rows.TableOf(k), []);
        foreach (var o in objects)
        {
            foreach (var e in EventChannel.ReadPerCpu(o.EmitStatsMap))
            {
                var cpus = perCpu[Rows.TableOf(e.Kind)];
                var c = cpus.GetValueOrDefault(e.Cpu);
                cpus[e.Cpu] = new CpuCounts(c.Emitted + e.Emitted, c.Failed + e.Failed);
            }
        }
        return perCpu.ToDictionary(kv => kv.Key, kv => new SourceCounts(
            kv.Value.Values.Aggregate(0UL, (a, c) => a + c.Emitted), kv.Value.Values.Aggregate(0UL, (a, c) => a + c.Failed)) { PerCpu = kv.Value },
            StringComparer.Ordinal);
    }

    /// <summary>The BPF objects are the caller's to dispose.</summary>
    public void Dispose()
    {
    }
}
