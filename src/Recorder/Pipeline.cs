using System.Collections.Concurrent;
using System.Diagnostics;
using Forensics.Datapath.Abi;
using Forensics.Recorder.Batches;
using Forensics.Recorder.Sources;
using Forensics.Recorder.Tables;

namespace Forensics.Recorder;

/// <summary>Tuning of the ring buffer -> decode -> batch pipeline.</summary>
public sealed record PipelineOptions
{
    /// <summary>Rows per batch (one Parquet row group). Half of 65536 halved peak memory at 1M events/s
    /// (Parquet.Net allocates per row group) and cost nothing in speed (bench/RESULTS.md).</summary>
    public int BatchRows { get; init; } = 32768;

    /// <summary>A batch with rows is handed on after this long even when not full.</summary>
    public TimeSpan BatchAge { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Bytes per chunk the ring buffer thread copies records into.</summary>
    public int ChunkBytes { get; init; } = 1 << 20;

    /// <summary>Chunks in flight between the ring buffer and the decoder (the user-space buffer). When
    /// all are taken the ring buffer thread waits, so the kernel ring buffer adds to this buffer.</summary>
    public int Chunks { get; init; } = 32;

    /// <summary>How long the ring buffer thread waits for a free chunk before it drops a record.</summary>
    public int ChunkWaitMs { get; init; } = 1000;

    /// <summary>How long the ring buffer thread waits for a wakeup before it looks anyway.</summary>
    public int PollMs { get; init; } = 10;

    /// <summary>Batches per table in flight between the decoder and the consumer.</summary>
    public int BatchesPerTable { get; init; } = 3;
}

/// <summary>
/// Sources -> decode -> batches. Each source runs on its own thread and only copies its records into
/// chunks (for the kernel: the ring buffer callback copies and returns: no decoding, no locks beyond
/// handing a chunk over); one decode thread turns chunks into table batches with the source's decoder and
/// hands full or aged batches to a consumer (the Parquet writers, or the live monitor). When no chunk is
/// free a source's thread waits (the kernel ring then fills, and the kernel counts what it cannot hand
/// over); a record that finds no free chunk for a second is dropped and counted by table.
/// </summary>
public sealed class Pipeline : IDisposable
{
    internal sealed class Chunk(int size)
    {
        public readonly byte[] Data = new byte[size];
        public int Used;
        public int Records;
        public int Source;
        public long FirstTicks;
    }

    private readonly PipelineOptions options;
    private readonly IReadOnlyList<IRecordSource> sources;
    private readonly RecordWriter[] writers;
    private readonly BlockingCollection<Chunk> full = new();
    private readonly BlockingCollection<Chunk> free = new();
    private readonly CountdownEvent started;
    private long unknownRecords;

    public Pipeline(IReadOnlyList<IRecordSource> sources, PipelineOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(sources);
        if (sources.Select(s => s.Name).Distinct(StringComparer.Ordinal).Count() != sources.Count)
            throw new ArgumentException("two sources with the same name", nameof(sources));
        this.sources = sources;
        this.options = options ?? new PipelineOptions();
        for (int i = 0; i < this.options.Chunks; i++)
            free.Add(new Chunk(this.options.ChunkBytes));
        writers = [.. sources.Select((s, i) => new RecordWriter(this, i))];
        started = new CountdownEvent(Math.Max(1, sources.Count));
        if (sources.Count == 0)
            started.Signal();
    }

    public IReadOnlyList<IRecordSource> Sources => sources;

    /// <summary>Set once every source has called <see cref="RecordWriter.Started"/> (or ended).</summary>
    public WaitHandle Started => started.WaitHandle;

    /// <summary>The writer of a source: its records, drops and notes.</summary>
    public RecordWriter WriterOf(IRecordSource source) => writers[IndexOf(source)];

    private int IndexOf(IRecordSource source)
    {
        for (int i = 0; i < sources.Count; i++)
            if (ReferenceEquals(sources[i], source))
                return i;
        throw new ArgumentException($"{source.Name} is not a source of this pipeline", nameof(source));
    }

    /// <summary>Records dropped in user space (no free chunk) by table, summed over the sources.</summary>
    public ulong UserspaceDropped(string table) => writers.Aggregate(0UL, (a, w) => a + w.Dropped(table));

    /// <summary>Records of an unknown kind or ABI version, or that their source could not decode (counted, not decoded).</summary>
    public long UnknownRecords => Interlocked.Read(ref unknownRecords);

    /// <summary>
    /// Runs every source until <paramref name="token"/> is cancelled, then drains them and hands on every
    /// batch. Full and aged batches go to <paramref name="queue"/>, whose consumer returns them with Recycle.
    /// </summary>
    public void Run(BatchQueue queue, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(queue);
        var errors = new Exception?[sources.Count];
        int running = sources.Count;
        var threads = new List<Thread>();
        for (int i = 0; i < sources.Count; i++)
        {
            int n = i;
            var t = new Thread(() =>
            {
                try
                {
                    sources[n].Run(writers[n], token);
                    writers[n].Flush();
                }
#pragma warning disable CA1031 // handed to the caller below
                catch (Exception e)
                {
                    errors[n] = e;
                }
#pragma warning restore CA1031
                finally
                {
                    writers[n].Started(); // an ended source holds nobody up
                    if (Interlocked.Decrement(ref running) == 0)
                        full.CompleteAdding();
                }
            })
            { Name = sources[n].Kind == "bpf" ? "forensics-ring" : "fx-src-" + sources[n].Name, IsBackground = true, Priority = ThreadPriority.AboveNormal };
            threads.Add(t);
        }
        if (sources.Count == 0)
            full.CompleteAdding();
        foreach (var t in threads)
            t.Start();
        try
        {
            DecodeLoop(queue);
        }
        finally
        {
            foreach (var t in threads)
                t.Join();
            queue.Complete();
        }
        for (int i = 0; i < errors.Length; i++)
            if (errors[i] is { } e)
                throw new InvalidOperationException($"source {sources[i].Name} failed: {e.Message}", e);
    }

    public void Dispose()
    {
        full.Dispose();
        free.Dispose();
        started.Dispose();
    }

    internal void SignalStarted() => started.Signal();

    internal int ChunkBytes => options.ChunkBytes;

    internal void Hand(Chunk c) => full.Add(c, CancellationToken.None);

    internal bool TryTakeFree(out Chunk chunk) => free.TryTake(out chunk!, options.ChunkWaitMs);

    internal string TableOf(int source, ReadOnlySpan<byte> record) => sources[source].TableOf(record);

    private void DecodeLoop(BatchQueue queue)
    {
        var sink = new RowSink(queue);
        var ageMs = (long)options.BatchAge.TotalMilliseconds;
        while (!full.IsCompleted)
        {
            if (full.TryTake(out var chunk, 50))
            {
                DecodeChunk(chunk, sink);
                free.Add(chunk);
            }
            sink.HandAged(Environment.TickCount64, ageMs);
        }
        sink.HandAll();
    }

    private void DecodeChunk(Chunk chunk, RowSink sink)
    {
        var source = sources[chunk.Source];
        var data = chunk.Data.AsSpan(0, chunk.Used);
        int off = 0;
        while (off < data.Length)
        {
            int len = BitConverter.ToInt32(data[off..]);
            var rec = data.Slice(off + 4, len);
            off += 4 + len;
            if (!source.Decode(rec, sink))
                unknownRecords++;
            sink.HandIfFull();
        }
    }
}

/// <summary>
/// What a source's thread hands records to: each record is copied into the current chunk (a chunk holds
/// records of one source), and a chunk goes to the decode thread when full, when <see cref="Flush"/> is
/// called, or when <see cref="FlushIfOlderThan"/> finds it old. Used by its source's thread only.
/// </summary>
public sealed class RecordWriter
{
    private readonly Pipeline pipeline;
    private readonly int source;
    private readonly Dictionary<string, ulong> dropped = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ulong> taken = new(StringComparer.Ordinal);
    private readonly List<string> notes = [];
    private Pipeline.Chunk? current;
    private long records;
    private int started;

    internal RecordWriter(Pipeline pipeline, int source)
    {
        this.pipeline = pipeline;
        this.source = source;
    }

    /// <summary>Records handed over so far.</summary>
    public long Records => Interlocked.Read(ref records);

    /// <summary>The source is live: sessions wait for this before they report recording (and tests before they act).</summary>
    public void Started()
    {
        if (Interlocked.Exchange(ref started, 1) == 0)
            pipeline.SignalStarted();
    }

    /// <summary>Copies one record (valid only during the call). The ring buffer callback: no decoding, no allocation.</summary>
    public void Write(ReadOnlySpan<byte> record)
    {
        var c = current;
        int need = 4 + record.Length;
        if (c is null || c.Used + need > c.Data.Length)
        {
            if (need > pipeline.ChunkBytes)
                throw new ArgumentException($"a record of {record.Length} bytes does not fit a chunk", nameof(record));
            if (c is not null)
                pipeline.Hand(c);
            // Wait for the decoder rather than drop: records left in a kernel ring are not lost yet.
            if (!pipeline.TryTakeFree(out c))
            {
                current = null;
                var table = pipeline.TableOf(source, record);
                lock (dropped)
                    dropped[table] = dropped.GetValueOrDefault(table) + 1;
                return;
            }
            c.Used = 0;
            c.Records = 0;
            c.Source = source;
            c.FirstTicks = Environment.TickCount64;
            current = c;
        }
        BitConverter.TryWriteBytes(c.Data.AsSpan(c.Used), record.Length);
        record.CopyTo(c.Data.AsSpan(c.Used + 4));
        c.Used += need;
        c.Records++;
        records++;
        // what the producer's counters count: records from the moment the source is live (not a preamble)
        if (started != 0)
            System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(taken, pipeline.TableOf(source, record), out _)++;
    }

    /// <summary>
    /// Records of a table taken since the source was live (what its producer's emission counter counts; a
    /// preamble written before <see cref="Started"/> is not). Read on the source's thread or once its Run returned.
    /// </summary>
    public ulong Taken(string table) => taken.GetValueOrDefault(table);

    /// <summary>Hands the current chunk to the decode thread when it holds records older than <paramref name="ms"/>.</summary>
    public void FlushIfOlderThan(int ms)
    {
        var c = current;
        if (c is not null && c.Records > 0 && Environment.TickCount64 - c.FirstTicks >= ms)
        {
            pipeline.Hand(c);
            current = null;
        }
    }

    /// <summary>Hands the current chunk to the decode thread now.</summary>
    public void Flush()
    {
        if (current is { Records: > 0 } c)
            pipeline.Hand(c);
        current = null;
    }

    /// <summary>Records of a table dropped because no chunk was free.</summary>
    public ulong Dropped(string table)
    {
        lock (dropped)
            return dropped.GetValueOrDefault(table);
    }

    /// <summary>Tables with dropped records.</summary>
    public IReadOnlyList<string> DroppedTables()
    {
        lock (dropped)
            return [.. dropped.Keys];
    }

    /// <summary>Says what the source did not record and why ("NAT not recorded because ..."): the manifest and info show it.</summary>
    public void NotRecorded(string line)
    {
        lock (notes)
            notes.Add(line);
    }

    public IReadOnlyList<string> Notes()
    {
        lock (notes)
            return [.. notes];
    }
}

/// <summary>
/// The decode thread's batches, one open batch per table: a source's <see cref="IRecordSource.Decode"/>
/// appends rows to them. Kernel records go through their table's <see cref="Rows"/> decoder
/// (<see cref="Rows(EventKind)"/>); rows of other sources are written into a batch with the columns of the
/// table's schema (<see cref="Batch"/>: <see cref="TableBatch.NextRow"/>, then the typed columns or
/// <see cref="TableBatch.Set"/>). A batch is handed on when full or aged.
/// </summary>
public sealed class RowSink
{
    private readonly BatchQueue queue;
    private readonly Rows?[] byKind = new Rows?[(int)EventKind.Max];
    private readonly Dictionary<string, Rows> byTable = new(StringComparer.Ordinal);
    private Rows? last;

    internal RowSink(BatchQueue queue) => this.queue = queue;

    /// <summary>The open batch of an event kind's table, as its ABI decoder.</summary>
    public Rows Rows(EventKind kind)
    {
        var r = byKind[(int)kind];
        if (r is null)
            byKind[(int)kind] = r = queue.Take(Format.Tables.Events[(int)kind - 1]);
        last = r;
        return r;
    }

    /// <summary>The open batch of a table, with room for one more row.</summary>
    public TableBatch Batch(string table)
    {
        ArgumentNullException.ThrowIfNull(table);
        var kind = Tables.Rows.KindOf(table);
        if (kind != EventKind.None)
            return Rows(kind).Batch;
        if (!byTable.TryGetValue(table, out var r))
            byTable[table] = r = queue.Take(table);
        last = r;
        return r.Batch;
    }

    internal void HandIfFull()
    {
        var r = last;
        if (r is not null && r.Batch.IsFull)
        {
            Hand(r);
            last = null;
        }
    }

    private void Hand(Rows r)
    {
        queue.Hand(r);
        int k = Array.IndexOf(byKind, r);
        if (k >= 0)
            byKind[k] = null;
        else
            byTable.Remove(r.Batch.Table);
    }

    internal void HandAged(long now, long ageMs)
    {
        for (int k = 0; k < byKind.Length; k++)
            if (byKind[k] is { } r && r.Batch.Count > 0 && now - r.Batch.FirstRowTicks >= ageMs)
                Hand(r);
        foreach (var r in byTable.Values.Where(r => r.Batch.Count > 0 && now - r.Batch.FirstRowTicks >= ageMs).ToList())
            Hand(r);
        last = null;
    }

    internal void HandAll()
    {
        foreach (var r in byKind.Concat(byTable.Values).OfType<Rows>().Where(r => r.Batch.Count > 0).ToList())
            Hand(r);
        last = null;
    }
}

/// <summary>
/// Batches between the decode thread and their consumer: a small pool of
/// reusable <see cref="Rows"/> per table (so buffers are not reallocated) and
/// a queue of filled ones. When the consumer falls behind, the decoder waits
/// for a free batch, chunks pile up, and the kernel counts what it cannot hand over.
/// </summary>
public sealed class BatchQueue : IDisposable
{
    private readonly BlockingCollection<Rows> filled = new();
    private readonly Dictionary<string, BlockingCollection<Rows>> pools = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> created = new(StringComparer.Ordinal);
    private readonly int capacity;
    private readonly int perTable;

    public BatchQueue(int batchRows, int batchesPerTable)
    {
        capacity = batchRows;
        perTable = batchesPerTable;
    }

    public void Dispose()
    {
        filled.Dispose();
        lock (pools)
            foreach (var p in pools.Values)
                p.Dispose();
    }

    private BlockingCollection<Rows> Pool(string table)
    {
        lock (pools)
        {
            if (!pools.TryGetValue(table, out var p))
                pools[table] = p = new BlockingCollection<Rows>();
            return p;
        }
    }

    /// <summary>A batch for the table: a recycled one, a new one while fewer than the limit exist (batches of
    /// tables never seen are never allocated), else waits for one to come back.</summary>
    internal Rows Take(string table)
    {
        var pool = Pool(table);
        if (pool.TryTake(out var rows))
            return rows;
        int n = created.GetValueOrDefault(table);
        if (n < perTable)
        {
            created[table] = n + 1;
            var kind = Tables.Rows.KindOf(table);
            return kind != EventKind.None ? Tables.Rows.For(kind, capacity)! : new SchemaRows(table, capacity);
        }
        return pool.Take();
    }

    internal void Hand(Rows rows) => filled.Add(rows);

    internal void Complete() => filled.CompleteAdding();

    /// <summary>The next filled batch; false when the pipeline has ended and all were consumed.</summary>
    public bool TryNext(out Rows rows, int timeoutMs) => filled.TryTake(out rows!, timeoutMs);

    /// <summary>
    /// A filled batch, but only while more than <paramref name="backlog"/> wait (for helper writer threads);
    /// otherwise waits <paramref name="pollMs"/> and returns false.
    /// </summary>
    public bool TryNextIfBacklog(int backlog, out Rows rows, int pollMs)
    {
        if (filled.Count > backlog && filled.TryTake(out rows!))
            return true;
        rows = null!;
        Thread.Sleep(pollMs);
        return false;
    }

    public bool IsCompleted => filled.IsCompleted;

    /// <summary>Returns a consumed batch to its pool.</summary>
    public void Recycle(Rows rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        rows.Batch.Reset();
        Pool(rows.Batch.Table).Add(rows);
    }
}
