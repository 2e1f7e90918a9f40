namespace Forensics.Recorder.Sources;

/// <summary>
/// Something that feeds a recording or a monitor: the kernel's BPF ring buffers, a netlink socket, a gRPC
/// stream, a file being imported, a test's in-memory feed (docs/sources.md). A source hands the pipeline
/// records (bytes, copied at once) on its own thread, turns its own records into rows of the recording's
/// tables on the decode thread, and counts what its producer could not deliver.
/// </summary>
public interface IRecordSource : IDisposable
{
    /// <summary>Unique within a session: the key of the manifest's <c>sources</c> ("kernel", "conntrack").</summary>
    string Name { get; }

    /// <summary>bpf, netlink, grpc, file, memory.</summary>
    string Kind { get; }

    /// <summary>Where it reads from (ring buffers, a socket address, input files).</summary>
    string Detail { get; }

    /// <summary>
    /// Runs on a thread of its own: calls <see cref="RecordWriter.Started"/> once it is live (attached,
    /// subscribed, connected), hands every record to <see cref="RecordWriter.Write"/>, and returns once
    /// <paramref name="token"/> is cancelled and what was pending has been handed over (or when its input
    /// ends). An exception stops the recording with a one-line error; what was handed over is kept.
    /// </summary>
    void Run(RecordWriter writer, CancellationToken token);

    /// <summary>
    /// On the decode thread: appends the rows of one record this source wrote (the span is valid only
    /// during the call). Returns false for a record it cannot read (counted as unknown).
    /// </summary>
    bool Decode(ReadOnlySpan<byte> record, RowSink rows);

    /// <summary>The table a record belongs to, for counting one the pipeline had to drop before decoding.</summary>
    string TableOf(ReadOnlySpan<byte> record);

    /// <summary>
    /// What the producer handed over and could not hand over, per table, since the source started (cumulative;
    /// read about once a second from another thread). The kernel's per-CPU emission counters; a netlink
    /// socket's ENOBUFS; a stream's lost-events notices.
    /// </summary>
    IReadOnlyDictionary<string, SourceCounts> Counters();
}

/// <summary>A producer's cumulative counts for one table: events it handed over (as the kernel's fx_emit_stats
/// counts a successful ring buffer reservation), events it could not hand over, and events it had but dropped in
/// user space on their way to this recorder (<paramref name="Dropped"/>: a datapath's monitor socket dropping for a
/// client whose queue was full). <paramref name="Emitted"/> counts those too; they go to <c>userspace_dropped</c>.</summary>
public readonly record struct SourceCounts(ulong Emitted, ulong Failed, ulong Dropped = 0)
{
    /// <summary>
    /// The same <see cref="Emitted"/> and <see cref="Failed"/> per CPU, when the producer counts per CPU (the kernel's
    /// per-CPU fx_emit_stats); null otherwise. Its values sum to <see cref="Emitted"/> and <see cref="Failed"/>.
    /// </summary>
    public IReadOnlyDictionary<uint, CpuCounts>? PerCpu { get; init; }
}

/// <summary>One CPU's cumulative counts of a table: events handed over and events that could not be.</summary>
public readonly record struct CpuCounts(ulong Emitted, ulong Failed);

/// <summary>
/// Rows of the loss table for one table and one second (schema loss v3): a row per CPU that failed to hand events
/// over (that CPU's emitted and failed: cilium monitor's "CPU %02d: Lost %d events"), and one row without a CPU for
/// the rest (emitted on CPUs that lost nothing, failures not counted per CPU, what user space dropped). The rows
/// sum to the second's totals.
/// </summary>
public static class LossSplit
{
    /// <summary>The per-CPU counts of <paramref name="now"/> since <paramref name="before"/>; null when not counted per CPU.</summary>
    public static Dictionary<uint, CpuCounts>? Since(SourceCounts now, SourceCounts before)
    {
        if (now.PerCpu is null)
            return null;
        var d = new Dictionary<uint, CpuCounts>();
        foreach (var (cpu, c) in now.PerCpu)
        {
            var b = before.PerCpu?.GetValueOrDefault(cpu) ?? default;
            if (c.Emitted >= b.Emitted && c.Failed >= b.Failed && (c.Emitted > b.Emitted || c.Failed > b.Failed))
                d[cpu] = new CpuCounts(c.Emitted - b.Emitted, c.Failed - b.Failed);
        }
        return d;
    }

    /// <summary>Adds one source's per-CPU counts to a second's (several sources may feed one table).</summary>
    public static void Add(Dictionary<uint, CpuCounts> into, IReadOnlyDictionary<uint, CpuCounts>? more)
    {
        ArgumentNullException.ThrowIfNull(into);
        foreach (var (cpu, c) in more ?? new Dictionary<uint, CpuCounts>())
        {
            var s = into.GetValueOrDefault(cpu);
            into[cpu] = new CpuCounts(s.Emitted + c.Emitted, s.Failed + c.Failed);
        }
    }

    /// <summary>The rows, CPUs in order, then the row without a CPU when anything is left; nothing when all is zero.</summary>
    public static List<(uint? Cpu, ulong Emitted, ulong Failed, ulong Dropped)> Rows(ulong emitted, ulong failed, ulong dropped, IReadOnlyDictionary<uint, CpuCounts>? perCpu)
    {
        var rows = new List<(uint?, ulong, ulong, ulong)>();
        ulong e = emitted, f = failed;
        foreach (var (cpu, c) in (perCpu ?? new Dictionary<uint, CpuCounts>()).Where(kv => kv.Value.Failed > 0).OrderBy(kv => kv.Key))
        {
            // a CPU's counts are read in the same pass as the totals, so they never exceed them
            ulong ce = Math.Min(c.Emitted, e), cf = Math.Min(c.Failed, f);
            rows.Add((cpu, ce, cf, 0));
            e -= ce;
            f -= cf;
        }
        if (e > 0 || f > 0 || dropped > 0)
            rows.Add((null, e, f, dropped));
        return rows;
    }
}

/// <summary>Thread-safe cumulative counters a source that is not the kernel keeps (see <see cref="IRecordSource.Counters"/>).</summary>
public sealed class SourceCounters
{
    private readonly Dictionary<string, (ulong Emitted, ulong Failed)> counts = new(StringComparer.Ordinal);

    /// <summary>Counts events the producer handed over for the table.</summary>
    public void Emitted(string table, ulong n = 1)
    {
        lock (counts)
        {
            var c = counts.GetValueOrDefault(table);
            counts[table] = (c.Emitted + n, c.Failed);
        }
    }

    /// <summary>Counts events the producer made but could not hand over (ring full, ENOBUFS, a lost-events notice).</summary>
    public void Failed(string table, ulong n = 1)
    {
        lock (counts)
        {
            var c = counts.GetValueOrDefault(table);
            counts[table] = (c.Emitted, c.Failed + n);
        }
    }

    public IReadOnlyDictionary<string, SourceCounts> Snapshot()
    {
        lock (counts)
            return counts.ToDictionary(kv => kv.Key, kv => new SourceCounts(kv.Value.Emitted, kv.Value.Failed), StringComparer.Ordinal);
    }
}

/// <summary>
/// A source that also takes snapshot tables (the kernel's conntrack table at start and end): the recording
/// writes them when it stops, after the source's last records are decoded.
/// </summary>
public interface ISnapshotSource
{
    /// <summary>Called once, on the recording's thread, after the pipeline stopped.</summary>
    IEnumerable<Batches.TableBatch> Snapshots();
}
