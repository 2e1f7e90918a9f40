using System.Globalization;
using Forensics.Recorder.Batches;
using Forensics.Recorder.Storage;
using Forensics.Recorder.Tables;

namespace Forensics.Cilium;

/// <summary>
/// Rows of a source that is not the kernel, written as a recording: one batch per table and node
/// (a cluster-wide Hubble export holds many nodes: each is its own node= partition), sealed Parquet
/// segments with the same writer and manifest as every recording. Thread-safe: the Hubble and
/// Tetragon streams of one recording share it.
/// </summary>
public sealed class RecordingSink : IAsyncDisposable
{
    private readonly object gate = new();
    private readonly string dir;
    private readonly int batchRows;
    private readonly TimeSpan sealInterval;
    private readonly Dictionary<(string Table, string Node), (RowWriter Writer, SegmentWriter Segments)> open = [];
    private readonly Dictionary<string, int> segmentNumbers = new(StringComparer.Ordinal);
    private long lastSeal = Environment.TickCount64;

    public RecordingSink(string outputDir, Manifest manifest, int batchRows = 32768, TimeSpan? sealInterval = null)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        dir = outputDir;
        Manifest = manifest;
        this.batchRows = batchRows;
        this.sealInterval = sealInterval ?? TimeSpan.FromSeconds(2);
        System.IO.Directory.CreateDirectory(dir);
        manifest.Sources ??= [];
        lock (gate)
            manifest.Write(dir);
    }

    public Manifest Manifest { get; }

    public string Directory => dir;

    /// <summary>The source's entry in the manifest (created on first use).</summary>
    public ManifestSource Source(string name, string kind, string? address)
    {
        lock (gate)
        {
            var s = Manifest.Sources!.FirstOrDefault(x => x.Name == name && x.Kind == kind && x.Address == address);
            if (s is null)
                Manifest.Sources!.Add(s = new ManifestSource { Name = name, Kind = kind, Address = address });
            return s;
        }
    }

    /// <summary>Runs <paramref name="fill"/> on a fresh row of the table's batch for the node (under the sink's lock).</summary>
    public void Row(string table, string node, Action<RowWriter> fill)
    {
        ArgumentNullException.ThrowIfNull(fill);
        lock (gate)
        {
            var key = (table, NodeFolder(node));
            if (!open.TryGetValue(key, out var w))
            {
                var batch = NewBatch(table);
                open[key] = w = (new RowWriter(batch), new SegmentWriter(dir, key.Item2, batch, Manifest.RecordingId, OnSealed, sealInterval,
                    nextSegment: () => NextSegment(table)));
            }
            w.Writer.Begin();
            fill(w.Writer);
            if (w.Writer.Batch.IsFull)
                Flush(w.Writer.Batch, w.Segments);
        }
    }

    /// <summary>A row of the loss table (per second, source and kind).</summary>
    public void Loss(string node, DateTime utc, string kind, ulong failed, string source, string? detail) =>
        Row("loss", node, w =>
        {
            long ns = (utc.ToUniversalTime().Ticks - DateTime.UnixEpoch.Ticks) * 100;
            w.Time("time", ns - ns % 1_000_000_000);
            w.Str("kind", kind);
            w.U64("failed", failed);
            w.Str("source", source);
            w.Str("detail", detail);
        });

    /// <summary>Writes batches older than the seal interval and seals segments that are due; call now and then.</summary>
    public void Tick()
    {
        lock (gate)
        {
            if (Environment.TickCount64 - lastSeal < (long)sealInterval.TotalMilliseconds)
                return;
            lastSeal = Environment.TickCount64;
            foreach (var (_, (writer, segments)) in open)
            {
                Flush(writer.Batch, segments);
                segments.SealIfDueAsync().GetAwaiter().GetResult();
            }
            Manifest.Write(dir);
        }
    }

    /// <summary>Writes every batch, seals every segment, and writes the final manifest.</summary>
    public void Complete(string stopReason)
    {
        lock (gate)
        {
            foreach (var (_, (writer, segments)) in open)
            {
                Flush(writer.Batch, segments);
                segments.SealAsync().GetAwaiter().GetResult();
            }
            Manifest.EndedAt = DateTime.UtcNow;
            Manifest.StopReason = stopReason;
            Manifest.EventsLost = Manifest.Loss.Values.Aggregate(0UL, (a, l) => a + l.Failed + l.UserspaceDropped);
            Manifest.Write(dir);
        }
    }

    /// <summary>Adds to the manifest's loss of a kind (what a source reported lost).</summary>
    public void CountLoss(string kind, ulong failed)
    {
        lock (gate)
        {
            if (!Manifest.Loss.TryGetValue(kind, out var l))
                Manifest.Loss[kind] = l = new ManifestLoss();
            l.Failed += failed;
        }
    }

    /// <summary>Updates the manifest under the sink's lock.</summary>
    public void Update(Action<Manifest> change)
    {
        ArgumentNullException.ThrowIfNull(change);
        lock (gate)
            change(Manifest);
    }

    public async ValueTask DisposeAsync()
    {
        List<SegmentWriter> writers;
        lock (gate)
            writers = [.. open.Values.Select(v => v.Segments)];
        foreach (var w in writers)
            await w.DisposeAsync(); // abandons what was not sealed by Complete
    }

    /// <summary>A node name as a partition folder: '/' (Hubble's cluster/node) and '%' percent-encoded, as Hive does.</summary>
    public static string NodeFolder(string node) =>
        string.IsNullOrEmpty(node) ? "unknown" : node.Replace("%", "%25", StringComparison.Ordinal).Replace("/", "%2F", StringComparison.Ordinal);

    private TableBatch NewBatch(string table)
    {
        if (table == "loss")
            return new LossRows(batchRows).Batch;
        var kind = Enum.Parse<Forensics.Datapath.Abi.EventKind>(table, ignoreCase: true);
        return Rows.For(kind, batchRows)!.Batch;
    }

    private static void Flush(TableBatch batch, SegmentWriter segments)
    {
        if (batch.Count == 0)
            return;
        segments.WriteAsync(batch).GetAwaiter().GetResult();
        batch.Reset();
    }

    private int NextSegment(string table) =>
        segmentNumbers[table] = segmentNumbers.GetValueOrDefault(table) + 1;

    private void OnSealed(ManifestFile file)
    {
        var table = file.Path.Split('/')[0];
        Manifest.AddFile(table, SegmentWriter.VersionOf(table), file);
    }

    internal static string Num(long n) => n.ToString(CultureInfo.InvariantCulture);
}
