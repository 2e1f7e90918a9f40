using System.Globalization;
using Forensics.Recorder.Batches;
using Forensics.Format;
using Forensics.Recorder.Storage;
using Forensics.Recorder.Tables;

namespace Forensics.Cilium;

/// <summary>
/// The recording a <see cref="RecordingSink"/> writes into: its folder, its manifest (changed and written
/// under the owner's lock) and its segment numbers. Standalone for an import or a recording of Cilium
/// sources only; the kernel recording's own when Hubble or Tetragon run beside this tool's probes.
/// </summary>
public interface IRecordingTarget
{
    string Directory { get; }
    string RecordingId { get; }

    /// <summary>Runs <paramref name="change"/> on the manifest under its lock; writes the manifest after it when asked.</summary>
    void WithManifest(Action<Manifest> change, bool write);

    /// <summary>The next segment number of a table (shared by every writer of the recording).</summary>
    int NextSegment(string table);
}

/// <summary>A recording of its own: an import, or `record --from` with Cilium sources only.</summary>
public sealed class StandaloneTarget : IRecordingTarget
{
    private readonly object gate = new();
    private readonly Manifest manifest;
    private readonly Dictionary<string, int> segments = new(StringComparer.Ordinal);

    public StandaloneTarget(string directory, Manifest manifest)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        Directory = directory;
        this.manifest = manifest;
        System.IO.Directory.CreateDirectory(directory);
        ManifestStore.Write(manifest, directory);
    }

    public string Directory { get; }
    public string RecordingId => manifest.RecordingId;

    public void WithManifest(Action<Manifest> change, bool write)
    {
        ArgumentNullException.ThrowIfNull(change);
        lock (gate)
        {
            change(manifest);
            if (write)
                ManifestStore.Write(manifest, Directory);
        }
    }

    public int NextSegment(string table)
    {
        lock (gate)
            return segments[table] = segments.GetValueOrDefault(table) + 1;
    }
}

/// <summary>The kernel recording, with Hubble or Tetragon running beside this tool's probes.</summary>
public sealed class KernelRecordingTarget(Forensics.Recorder.Recording recording, string directory) : IRecordingTarget
{
    public string Directory => directory;
    public string RecordingId => recording.Manifest.RecordingId;
    public void WithManifest(Action<Manifest> change, bool write) => recording.WithManifest(change, write);
    public int NextSegment(string table) => recording.NextSegment(table);
}

/// <summary>
/// Rows of a source that is not the kernel, written as a recording: one batch per table and node
/// (a cluster-wide Hubble export holds many nodes: each is its own node= partition), sealed Parquet
/// segments with the same writer and manifest as every recording. Thread-safe: the Hubble and
/// Tetragon streams of one recording share it.
/// </summary>
public sealed class RecordingSink : IAsyncDisposable
{
    private readonly object gate = new();
    private readonly IRecordingTarget target;
    private readonly int batchRows;
    private readonly TimeSpan sealInterval;
    private readonly Dictionary<(string Table, string Node), (RowWriter Writer, SegmentWriter Segments)> open = [];
    private long lastSeal = Environment.TickCount64;

    public RecordingSink(IRecordingTarget target, int batchRows = 32768, TimeSpan? sealInterval = null)
    {
        ArgumentNullException.ThrowIfNull(target);
        this.target = target;
        this.batchRows = batchRows;
        this.sealInterval = sealInterval ?? TimeSpan.FromSeconds(2);
    }

    public string Directory => target.Directory;

    /// <summary>The source's entry in the manifest (created on first use); change it under <see cref="Update"/> or lock it.</summary>
    public ManifestSource Source(string name, string kind, string? address)
    {
        ManifestSource? s = null;
        var detail = address ?? "";
        target.WithManifest(m =>
        {
            // the manifest's sources are keyed by a name unique in the recording: hubble, hubble-2, ...
            s = m.Sources.Where(x => (x.Key == name || x.Key.StartsWith(name + "-", StringComparison.Ordinal)) && x.Value.Kind == kind && x.Value.Detail == detail)
                .Select(x => x.Value).FirstOrDefault();
            if (s is null)
            {
                var key = name;
                for (int n = 2; m.Sources.ContainsKey(key); n++)
                    key = $"{name}-{n}";
                m.Sources[key] = s = new ManifestSource { Kind = kind, Detail = detail };
            }
        }, write: false);
        return s!;
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
                open[key] = w = (new RowWriter(batch), new SegmentWriter(target.Directory, key.Item2, batch, target.RecordingId, OnSealed, sealInterval,
                    nextSegment: () => target.NextSegment(table)));
            }
            w.Writer.Begin();
            fill(w.Writer);
            if (w.Writer.Batch.IsFull)
                Flush(w.Writer.Batch, w.Segments);
        }
    }

    /// <summary>A row of the loss table (per second, source and kind); <paramref name="cpu"/>: the CPU whose ring buffer lost them, when the source says.</summary>
    public void Loss(string node, DateTime utc, string kind, ulong failed, string source, string? detail, uint? cpu = null) =>
        Row("loss", node, w =>
        {
            if (cpu is { } c)
                w.U32("cpu", c);
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
            target.WithManifest(_ => { }, write: true);
        }
    }

    /// <summary>Writes every batch and seals every segment. With <paramref name="stopReason"/> (a recording of its own), also ends the manifest.</summary>
    public void Complete(string? stopReason)
    {
        lock (gate)
        {
            foreach (var (_, (writer, segments)) in open)
            {
                Flush(writer.Batch, segments);
                segments.SealAsync().GetAwaiter().GetResult();
            }
            target.WithManifest(m =>
            {
                if (stopReason is null)
                    return;
                m.EndedAt = DateTime.UtcNow;
                m.StopReason = stopReason;
                m.EventsLost = m.Loss.Values.Aggregate(0UL, (a, l) => a + l.Failed + l.UserspaceDropped);
            }, write: true);
        }
    }

    /// <summary>
    /// Adds to what a source (Hubble or Tetragon) reported lost: its entry's loss[source].failed, which a kernel
    /// recording sums into the manifest's loss; a recording of its own keeps the manifest's loss[source] as well.
    /// </summary>
    public void CountLoss(string source, ulong failed) => target.WithManifest(m =>
    {
        if (!m.Sources.TryGetValue(source, out var entry))
            m.Sources[source] = entry = new ManifestSource { Kind = "grpc" };
        if (!entry.Loss.TryGetValue(source, out var own))
            entry.Loss[source] = own = new ManifestLoss();
        own.Failed += failed;
        if (!m.Loss.TryGetValue(source, out var l))
            m.Loss[source] = l = new ManifestLoss();
        l.Failed += failed;
    }, write: false);

    /// <summary>Changes the manifest (a source's counters) under the recording's lock.</summary>
    public void Update(Action<Manifest> change) => target.WithManifest(change, write: false);

    public async ValueTask DisposeAsync()
    {
        List<SegmentWriter> writers;
        lock (gate)
            writers = [.. open.Values.Select(v => v.Segments)];
        foreach (var w in writers)
            await w.DisposeAsync(); // abandons what was not sealed by Complete
    }

    /// <summary>
    /// A node name as a partition folder a bundle accepts ([A-Za-z0-9._=+@-]): the '/' of Hubble's
    /// cluster/node becomes '+' (readers turn it back; node names are DNS names, without '+'), any
    /// other character outside that set '_'.
    /// </summary>
    public static string NodeFolder(string node)
    {
        if (string.IsNullOrEmpty(node))
            return "unknown";
        var chars = node.Select(c => c == '/' ? '+' : char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '=' or '@' or '-' ? c : '_').ToArray();
        if (!char.IsAsciiLetterOrDigit(chars[0]))
            return "n" + new string(chars);
        return new string(chars);
    }

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

    private void OnSealed(ManifestFile file)
    {
        var table = file.Path.Split('/')[0];
        target.WithManifest(m => m.AddFile(table, SchemaCatalog.VersionOf(table), file), write: true);
    }

    internal static string Num(long n) => n.ToString(CultureInfo.InvariantCulture);
}
