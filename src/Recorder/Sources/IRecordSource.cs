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
public readonly record struct SourceCounts(ulong Emitted, ulong Failed, ulong Dropped = 0);

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
