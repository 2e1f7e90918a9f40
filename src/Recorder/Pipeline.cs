using System.Collections.Concurrent;
using System.Diagnostics;
using Forensics.Datapath;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Bpf;
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
/// Ring buffer -> decode -> batches, on two threads: the ring buffer thread
/// only copies records into chunks (no decoding, no locks beyond handing a
/// chunk over); the decode thread turns chunks into table batches and hands
/// full or aged batches to a consumer (the Parquet writer, or the live
/// monitor). When no chunk is free the ring buffer thread stops draining the
/// kernel ring (which then fills, and the kernel counts what it cannot hand
/// over); a record that finds no free chunk for a second is dropped and counted by kind.
/// </summary>
public sealed class Pipeline : IDisposable
{
    private sealed class Chunk(int size)
    {
        public readonly byte[] Data = new byte[size];
        public int Used;
        public int Records;
        public long FirstTicks;
    }

    private readonly PipelineOptions options;
    private readonly IReadOnlyList<IEventSource> sources;
    private readonly EventContext context;
    private readonly BlockingCollection<Chunk> full = new();
    private readonly BlockingCollection<Chunk> free = new();
    private readonly long[] userDrops = new long[(int)EventKind.Max];
    private readonly long[] decoded = new long[(int)EventKind.Max];
    private long unknownRecords;
    private Chunk? current;

    public Pipeline(IReadOnlyList<IEventSource> sources, EventContext context, PipelineOptions? options = null)
    {
        this.sources = sources;
        this.context = context;
        this.options = options ?? new PipelineOptions();
        for (int i = 0; i < this.options.Chunks; i++)
            free.Add(new Chunk(this.options.ChunkBytes));
    }

    /// <summary>Records dropped in user space (no free chunk), by kind.</summary>
    public ulong UserspaceDropped(EventKind k) => (ulong)Interlocked.Read(ref userDrops[(int)k]);

    /// <summary>Records decoded into rows, by kind.</summary>
    public ulong Decoded(EventKind k) => (ulong)Interlocked.Read(ref decoded[(int)k]);

    /// <summary>Records of an unknown kind or ABI version (counted, not decoded).</summary>
    public long UnknownRecords => Interlocked.Read(ref unknownRecords);

    /// <summary>
    /// Runs until <paramref name="token"/> is cancelled, then drains the ring
    /// buffers and hands on every batch. <paramref name="consume"/> gets full
    /// and aged batches on the caller-provided consumer thread (see
    /// <see cref="BatchQueue"/>); it must return the batch with Recycle.
    /// </summary>
    public void Run(BatchQueue queue, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(queue);
        Exception? pollError = null;
        var poll = new Thread(() =>
        {
            try
            {
                PollLoop(token);
            }
#pragma warning disable CA1031 // handed to the caller below
            catch (Exception e)
            {
                pollError = e;
            }
#pragma warning restore CA1031
            finally
            {
                full.CompleteAdding();
            }
        })
        { Name = "forensics-ring", IsBackground = true, Priority = ThreadPriority.AboveNormal };
        poll.Start();
        try
        {
            DecodeLoop(queue);
        }
        finally
        {
            poll.Join();
            queue.Complete();
        }
        if (pollError is not null)
            throw new InvalidOperationException("ring buffer reader failed: " + pollError.Message, pollError);
    }

    public void Dispose()
    {
        full.Dispose();
        free.Dispose();
    }

    private void PollLoop(CancellationToken token)
    {
        using var reader = new RingBufferReader(sources.Select(s => s.EventsMap).ToList(), OnRecord);
        while (!token.IsCancellationRequested)
        {
            reader.Poll(options.PollMs);
            var c = current;
            if (c is not null && c.Records > 0 && Environment.TickCount64 - c.FirstTicks >= 20)
            {
                full.Add(c, CancellationToken.None);
                current = null;
            }
        }
        reader.Consume();
        if (current is { Records: > 0 })
            full.Add(current, CancellationToken.None);
        current = null;
    }

    // The ring buffer callback: copy and return. No decoding, no allocation.
    private void OnRecord(ReadOnlySpan<byte> record)
    {
        var c = current;
        int need = 4 + record.Length;
        if (c is null || c.Used + need > c.Data.Length)
        {
            if (c is not null)
                full.Add(c);
            // Wait for the decoder rather than drop: records left in the kernel ring are not lost yet.
            if (!free.TryTake(out c, options.ChunkWaitMs))
            {
                current = null;
                int kind = record.Length > 0 && record[0] < (int)EventKind.Max ? record[0] : 0;
                Interlocked.Increment(ref userDrops[kind]);
                return;
            }
            c.Used = 0;
            c.Records = 0;
            c.FirstTicks = Environment.TickCount64;
            current = c;
        }
        BitConverter.TryWriteBytes(c.Data.AsSpan(c.Used), record.Length);
        record.CopyTo(c.Data.AsSpan(c.Used + 4));
        c.Used += need;
        c.Records++;
    }

    private void DecodeLoop(BatchQueue queue)
    {
        var rows = new Rows?[(int)EventKind.Max];
        var ageMs = (long)options.BatchAge.TotalMilliseconds;
        while (!full.IsCompleted)
        {
            if (full.TryTake(out var chunk, 50))
            {
                DecodeChunk(chunk, rows, queue);
                free.Add(chunk);
            }
            long now = Environment.TickCount64;
            for (int k = 0; k < rows.Length; k++)
            {
                var r = rows[k];
                if (r is not null && r.Batch.Count > 0 && now - r.Batch.FirstRowTicks >= ageMs)
                {
                    queue.Hand(r);
                    rows[k] = null;
                }
            }
        }
        foreach (var r in rows)
            if (r is not null && r.Batch.Count > 0)
                queue.Hand(r);
    }

    private void DecodeChunk(Chunk chunk, Rows?[] rows, BatchQueue queue)
    {
        var data = chunk.Data.AsSpan(0, chunk.Used);
        int off = 0;
        while (off < data.Length)
        {
            int len = BitConverter.ToInt32(data[off..]);
            var rec = data.Slice(off + 4, len);
            off += 4 + len;
            if (rec.Length < 16 || rec[1] != Limits.AbiVersion || rec[0] == 0 || rec[0] >= (int)EventKind.Max)
            {
                Interlocked.Increment(ref unknownRecords);
                continue;
            }
            int kind = rec[0];
            var r = rows[kind] ??= queue.Take((EventKind)kind);
            r.Append(rec, context);
            decoded[kind]++;
            if (r.Batch.IsFull)
            {
                queue.Hand(r);
                rows[kind] = null;
            }
        }
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
    private readonly Dictionary<EventKind, BlockingCollection<Rows>> pools = [];
    private readonly Dictionary<EventKind, int> created = [];
    private readonly int capacity;
    private readonly int perTable;

    public BatchQueue(int batchRows, int batchesPerTable)
    {
        capacity = batchRows;
        perTable = batchesPerTable;
        for (var k = EventKind.Drop; k < EventKind.Max; k++)
            pools[k] = new BlockingCollection<Rows>();
    }

    public void Dispose()
    {
        filled.Dispose();
        foreach (var p in pools.Values)
            p.Dispose();
    }

    /// <summary>A batch for the kind: a recycled one, a new one while fewer than the limit exist (batches of
    /// kinds never seen are never allocated), else waits for one to come back.</summary>
    internal Rows Take(EventKind kind)
    {
        var pool = pools[kind];
        if (pool.TryTake(out var rows))
            return rows;
        int n = created.GetValueOrDefault(kind);
        if (n < perTable)
        {
            created[kind] = n + 1;
            return Rows.For(kind, capacity)!;
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
        pools[Enum.Parse<EventKind>(rows.Batch.Table, ignoreCase: true)].Add(rows);
    }
}
