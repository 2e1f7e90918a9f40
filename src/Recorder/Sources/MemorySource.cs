using System.Collections.Concurrent;

namespace Forensics.Recorder.Sources;

/// <summary>
/// Records held in memory, handed over in order: a test's feed, or anything that already has its records
/// (a file read at once). Its decoder turns a record into rows: <see cref="KernelSource.DecodeAbi"/> for
/// our ABI records, or the caller's own for other bytes. Loss the feed knows of is counted with
/// <see cref="Counts"/>.
/// </summary>
public sealed class MemorySource : IRecordSource
{
    private readonly BlockingCollection<byte[]> records = new();
    private readonly Func<ReadOnlySpan<byte>, RowSink, bool> decode;
    private readonly Func<byte[], string> tableOf;

    public MemorySource(string name, Func<ReadOnlySpan<byte>, RowSink, bool> decode, Func<byte[], string> tableOf, string detail = "in memory")
    {
        Name = name;
        this.decode = decode;
        this.tableOf = tableOf;
        Detail = detail;
    }

    public string Name { get; }
    public string Kind => "memory";
    public string Detail { get; }

    /// <summary>What the feed's producer made and lost, per table (the feed's own loss counting).</summary>
    public SourceCounters Counts { get; } = new();

    /// <summary>Queues a record (any thread).</summary>
    public void Add(byte[] record) => records.Add(record);

    /// <summary>No more records: <see cref="Run"/> returns once the queued ones are handed over.</summary>
    public void Complete() => records.CompleteAdding();

    public void Run(RecordWriter writer, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.Started();
        while (!records.IsCompleted)
        {
            if (records.TryTake(out var r, 10, CancellationToken.None))
                writer.Write(r);
            else
                writer.FlushIfOlderThan(0);
            if (token.IsCancellationRequested && records.Count == 0)
                break;
        }
        writer.Flush();
    }

    public bool Decode(ReadOnlySpan<byte> record, RowSink rows) => decode(record, rows);

    public string TableOf(ReadOnlySpan<byte> record) => tableOf(record.ToArray());

    public IReadOnlyDictionary<string, SourceCounts> Counters() => Counts.Snapshot();

    public void Dispose() => records.Dispose();
}
