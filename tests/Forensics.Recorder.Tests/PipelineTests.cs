using System.Runtime.CompilerServices;
using System.Text;
using Forensics.Datapath.Abi;
using Forensics.Format;
using Forensics.Recorder.Sources;
using Forensics.Recorder.Tables;
using Forensics.Tests;

namespace Forensics.Recorder.Tests;

/// <summary>The recorder's pipeline on an in-memory source: no root, no kernel, no sleeps.</summary>
public class PipelineTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    /// <summary>A trace record of our ABI: header (kind, version, size, cpu, ktime) and the source port, the rest zero.</summary>
    private static byte[] Trace(ulong ktime, ushort sport)
    {
        var r = new byte[Unsafe.SizeOf<TraceEvent>()];
        r[0] = (byte)EventKind.Trace;
        r[1] = Limits.AbiVersion;
        BitConverter.TryWriteBytes(r.AsSpan(2), (ushort)r.Length);
        BitConverter.TryWriteBytes(r.AsSpan(8), ktime);
        BitConverter.TryWriteBytes(r.AsSpan(48), sport); // fx_tuple: saddr[16], daddr[16], sport
        return r;
    }

    private static MemorySource AbiFeed(string name = "feed") =>
        new(name, (rec, rows) => KernelSource.DecodeAbi(rec, rows, new EventContext(0)), r => KernelSource.AbiTableOf(r));

    private static string TempDir() => Path.Combine(Scratch.Dir("fx-pipe-"), "rec");

    private static (RecordingSummary Summary, Manifest Manifest) Record(IRecordSource source, string dir, Action<Recording> whileRunning,
        PipelineOptions? pipeline = null)
    {
        using var rec = new Recording([source], new RecordOptions { OutputDir = dir, Pipeline = pipeline ?? new PipelineOptions(), WriterThreads = 1 }, 0);
        RecordingSummary? summary = null;
        var t = new Thread(() => summary = rec.Run(() => "duration", CancellationToken.None));
        t.Start();
        Assert.True(rec.WaitStarted(Wait), "the source did not start");
        whileRunning(rec);
        Assert.True(t.Join(Wait), "the recording did not end with its source");
        return (summary!, Manifest.Read(dir));
    }

    [Fact]
    public void Recording_MemorySource_EveryRecordARowInOrderInBatches()
    {
        var dir = TempDir();
        using var feed = AbiFeed();
        var (summary, manifest) = Record(feed, dir, _ =>
        {
            for (int i = 0; i < 1000; i++)
                feed.Add(Trace(1_000_000UL + (ulong)i, (ushort)i));
            feed.Complete();
        }, new PipelineOptions { BatchRows = 128, ChunkBytes = 4096 });
        Assert.Equal(1000L, summary.Rows["trace"]);
        var rows = Duck.Query($"SELECT ktime_ns, src_port FROM read_parquet('{dir}/trace/*/*.parquet')");
        Assert.Equal(Enumerable.Range(0, 1000).Select(i => (ushort)i), rows.Select(r => (ushort)r["src_port"]!));
        Assert.Equal(Enumerable.Range(0, 1000).Select(i => 1_000_000UL + (ulong)i), rows.Select(r => (ulong)r["ktime_ns"]!));
        // batches of 128 rows: one row group each
        Assert.Equal(8L, Duck.Scalar($"SELECT count(DISTINCT (file_name, row_group_id)) FROM parquet_metadata('{dir}/trace/*/*.parquet')"));
        Assert.Equal(1000UL, manifest.Sources["feed"].Records);
        Assert.Equal("memory", manifest.Sources["feed"].Kind);
    }

    [Fact]
    public void Recording_SourceCountsItsLoss_InTheManifestAndTheLossTable()
    {
        var dir = TempDir();
        using var feed = AbiFeed();
        var (summary, manifest) = Record(feed, dir, _ =>
        {
            for (int i = 0; i < 10; i++)
                feed.Add(Trace((ulong)i, 1));
            feed.Counts.Emitted("trace", 10);
            feed.Counts.Failed("trace", 7); // the producer says 7 more never reached us
            feed.Complete();
        });
        Assert.Equal(7UL, summary.EventsLost);
        Assert.Equal(7UL, manifest.Loss["trace"].Failed);
        Assert.Equal(10UL, manifest.Loss["trace"].Emitted);
        Assert.Equal(7UL, manifest.Sources["feed"].Loss["trace"].Failed);
        Assert.Equal(7L, Duck.Scalar($"SELECT sum(failed)::BIGINT FROM read_parquet('{dir}/loss/*/*.parquet') WHERE kind = 'trace'"));
        Assert.Equal(10L, summary.Rows["trace"]);
    }

    /// <summary>Decodes only once the gate opens: the decode thread holds every chunk meanwhile.</summary>
    private sealed class GatedFeed(ManualResetEventSlim gate) : IRecordSource
    {
        /// <summary>
        /// Records written: five chunks' worth. Each one that finds no free chunk waits ChunkWaitMs (1 ms) first, which a
        /// loaded machine stretches to tens of milliseconds: 180 such waits (of 200 records) took the test past its 30 s.
        /// </summary>
        public const int Count = 50;

        public int Written;
        public string Name => "gated";
        public string Kind => "memory";
        public string Detail => "";

        public void Run(RecordWriter writer, CancellationToken token)
        {
            writer.Started();
            for (int i = 0; i < Count; i++)
                writer.Write(Trace((ulong)i, (ushort)i));
            Written = Count;
            writer.Flush();
            gate.Set();
        }

        public bool Decode(ReadOnlySpan<byte> record, RowSink rows)
        {
            gate.Wait();
            return KernelSource.DecodeAbi(record, rows, new EventContext(0));
        }

        public string TableOf(ReadOnlySpan<byte> record) => KernelSource.AbiTableOf(record);
        public IReadOnlyDictionary<string, SourceCounts> Counters() => new Dictionary<string, SourceCounts> { ["trace"] = new(Count, 0) };
        public void Dispose() { }
    }

    [Fact]
    public void Pipeline_NoFreeChunk_RecordsDroppedAndCountedByTable()
    {
        var dir = TempDir();
        using var gate = new ManualResetEventSlim();
        using var feed = new GatedFeed(gate);
        int size = Unsafe.SizeOf<TraceEvent>() + 4;
        // two chunks of 10 records: the decoder holds one, the writer fills the other, then nothing is free
        var (summary, manifest) = Record(feed, dir, _ => { }, new PipelineOptions { Chunks = 2, ChunkBytes = size * 10, ChunkWaitMs = 1 });
        var dropped = manifest.Loss["trace"].UserspaceDropped;
        Assert.InRange(dropped, 1UL, GatedFeed.Count - 10UL);
        Assert.Equal(GatedFeed.Count, summary.Rows["trace"] + (long)dropped); // every record is a row or counted
        Assert.Equal(dropped, summary.EventsLost);
        Assert.Equal(dropped, manifest.Sources["gated"].Loss["trace"].UserspaceDropped);
    }

    [Fact]
    public void Recording_Stopped_EverySegmentSealedAndListed()
    {
        var dir = TempDir();
        using var feed = AbiFeed();
        using var cts = new CancellationTokenSource();
        using var rec = new Recording([feed], new RecordOptions { OutputDir = dir, SealInterval = TimeSpan.FromHours(1) }, 0);
        RecordingSummary? summary = null;
        var t = new Thread(() => summary = rec.Run(() => "interrupt", cts.Token));
        t.Start();
        Assert.True(rec.WaitStarted(Wait));
        for (int i = 0; i < 50; i++)
            feed.Add(Trace((ulong)i, (ushort)i));
        feed.Counts.Emitted("trace", 50);
        Assert.True(rec.WaitCaughtUp(Wait));
        cts.Cancel(); // the feed is not complete: the stop seals what was handed over
        Assert.True(t.Join(Wait));
        var manifest = Manifest.Read(dir);
        Assert.Equal("interrupt", manifest.StopReason);
        Assert.NotNull(manifest.EndedAt);
        Assert.Empty(Directory.GetFiles(dir, "*.tmp", SearchOption.AllDirectories));
        var listed = manifest.Tables.Values.SelectMany(x => x.Files).Select(f => f.Path).Order(StringComparer.Ordinal);
        var onDisk = Directory.GetFiles(dir, "*.parquet", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(dir, f)).Order(StringComparer.Ordinal);
        Assert.Equal(onDisk, listed);
        Assert.Equal(50L, manifest.Tables["trace"].Rows);
        foreach (var f in manifest.Tables.Values.SelectMany(x => x.Files))
            Assert.Equal(f.Sha256, Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(Path.Combine(dir, f.Path)))));
    }

    [Fact]
    public void Recording_TypedRowsSource_RowsInTheSchemaTable()
    {
        // a source whose records are not our ABI (here: "src dst port" text lines), decoded into the nat table's columns
        var dir = TempDir();
        using var feed = new MemorySource("lines", (rec, rows) =>
        {
            var f = Encoding.UTF8.GetString(rec).Split(' ');
            var b = rows.Batch("nat");
            int i = b.NextRow();
            foreach (var c in SchemaCatalog.Current("nat").Columns)
                b.Set(i, c.Name, c.Type == "utf8" ? "" : c.Type.StartsWith("timestamp", StringComparison.Ordinal) ? DateTimeOffset.UnixEpoch : 0);
            b.Set(i, "nat_kind", "dnat");
            b.Set(i, "orig_src_ip", f[0]);
            b.Set(i, "orig_dst_ip", f[1]);
            b.Set(i, "orig_dst_port", ushort.Parse(f[2], System.Globalization.CultureInfo.InvariantCulture));
            return true;
        }, _ => "nat");
        var (summary, _) = Record(feed, dir, _ =>
        {
            feed.Add(Encoding.UTF8.GetBytes("10.0.0.1 10.96.0.10 80"));
            feed.Add(Encoding.UTF8.GetBytes("10.0.0.2 10.96.0.10 443"));
            feed.Complete();
        });
        Assert.Equal(2L, summary.Rows["nat"]);
        var rows = Duck.Query($"SELECT orig_src_ip, orig_dst_port, nat_kind FROM read_parquet('{dir}/nat/*/*.parquet')");
        Assert.Equal(["10.0.0.1", "10.0.0.2"], rows.Select(r => (string)r["orig_src_ip"]!));
        Assert.Equal([(ushort)80, (ushort)443], rows.Select(r => (ushort)r["orig_dst_port"]!));
    }

    [Fact]
    public void Recording_UndecodableRecords_CountedNotWritten()
    {
        var dir = TempDir();
        using var feed = AbiFeed();
        using var rec = new Recording([feed], new RecordOptions { OutputDir = dir }, 0);
        var t = new Thread(() => rec.Run(() => "duration", CancellationToken.None));
        t.Start();
        Assert.True(rec.WaitStarted(Wait));
        feed.Add([99, 1, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // kind 99
        feed.Add(Trace(1, 1));
        feed.Complete();
        Assert.True(t.Join(Wait));
        Assert.Equal(1L, Manifest.Read(dir).Tables["trace"].Rows);
        Assert.Equal(1L, rec.UnknownRecords);
    }
}
