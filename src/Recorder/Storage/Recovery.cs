using System.Globalization;
using System.Security.Cryptography;
using Forensics.Format;
using Parquet;

namespace Forensics.Recorder.Storage;

public sealed record RecoveryResult(int FilesAdded, long RowsAdded, int UnsealedFiles, long UnsealedBytes, bool WasComplete)
{
    /// <summary>Events estimated lost between the last manifest the recorder wrote and its end (a crash's gap).</summary>
    public ulong EstimatedLost { get; init; }

    /// <summary>Seconds between the last manifest and the recorder's last sign of life.</summary>
    public double GapSeconds { get; init; }

    /// <summary>Whether <see cref="EstimatedLost"/> was counted exactly, from the kernel's counters the recorder left pinned.</summary>
    public bool Exact { get; init; }
}

/// <summary>
/// Turns what a killed recorder left into a readable recording: sealed
/// segments written after the last manifest update are verified (their
/// footer opens), hashed and added; unsealed .tmp segments (no footer, not
/// readable) are left in place, counted, and named in the manifest.
/// </summary>
public static class Recovery
{
    public static async Task<RecoveryResult> RecoverAsync(string dir)
    {
        var manifest = Manifest.Read(dir);
        bool complete = manifest.EndedAt is not null && manifest.StopReason != "recording";
        // When the recorder last counted (its manifest) and when it was last alive (its reserve's heartbeat, or the
        // newest file it wrote): what it emitted in between is lost with it.
        var manifestWritten = File.GetLastWriteTimeUtc(Path.Combine(dir, Manifest.FileName));
        var reserve = Path.Combine(dir, Recording.ReserveFile);
        DateTime alive = File.Exists(reserve) ? File.GetLastWriteTimeUtc(reserve) : manifestWritten;
        var unsealedByTable = new Dictionary<string, int>(StringComparer.Ordinal);
        var listed = manifest.Tables.Values.SelectMany(t => t.Files).Select(f => f.Path).ToHashSet(StringComparer.Ordinal);
        int added = 0, unsealed = 0;
        long rowsAdded = 0, unsealedBytes = 0;
        foreach (var tableDir in Directory.EnumerateDirectories(dir).Order(StringComparer.Ordinal))
        {
            var table = Path.GetFileName(tableDir);
            foreach (var file in Directory.EnumerateFiles(tableDir, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
            {
                var info = new FileInfo(file);
                if (info.LinkTarget is not null)
                    continue; // never follow links
                var rel = Path.GetRelativePath(dir, file).Replace('\\', '/');
                if (info.LastWriteTimeUtc > alive)
                    alive = info.LastWriteTimeUtc;
                if (file.EndsWith(".parquet.tmp", StringComparison.Ordinal))
                {
                    unsealed++;
                    unsealedBytes += info.Length;
                    unsealedByTable[table] = unsealedByTable.GetValueOrDefault(table) + 1;
                    continue;
                }
                if (!file.EndsWith(".parquet", StringComparison.Ordinal) || listed.Contains(rel))
                    continue;
                long rows;
                int version;
                try
                {
                    await using var reader = await ParquetReader.CreateAsync(file);
                    // the version the segment says it was written in (its key/value metadata)
                    version = reader.CustomMetadata.TryGetValue("forensics.schema_version", out var v)
                        && int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n : SchemaCatalog.VersionOf(table);
                    rows = 0;
                    for (int g = 0; g < reader.RowGroupCount; g++)
                    {
                        using var rg = reader.OpenRowGroupReader(g);
                        rows += rg.RowCount;
                    }
                }
                catch (Exception e) when (e is IOException or InvalidDataException or Parquet.ParquetException)
                {
                    continue; // not a complete Parquet file: not part of the recording
                }
                var bytes = await File.ReadAllBytesAsync(file);
                manifest.AddFile(table, version, new ManifestFile
                {
                    Path = rel,
                    Rows = rows,
                    Bytes = bytes.Length,
                    Sha256 = Convert.ToHexStringLower(SHA256.HashData(bytes)),
                });
                added++;
                rowsAdded += rows;
            }
        }
        ulong estimated = 0;
        double gap = 0;
        bool exact = false;
        var pins = KernelCounterPins.DirOf(manifest.RecordingId);
        // the reserve's room is what a full disk has left for this manifest
        File.Delete(reserve);
        if (!complete || added > 0)
        {
            if (!complete)
            {
                var kernel = KernelCounterPins.Read(pins);
                (estimated, gap) = EstimateGap(manifest, manifestWritten, alive, unsealedByTable,
                    kernel is null ? null : await KernelTruthAsync(dir, manifest, kernel));
                exact = kernel is not null;
            }
            manifest.Recovered = true;
            manifest.StopReason = "recovered";
            manifest.EndedAt ??= new DateTimeOffset(alive, TimeSpan.Zero);
            manifest.UnsealedSegments = unsealed;
            manifest.UnsealedBytes = unsealedBytes;
            ManifestStore.Write(manifest, dir);
        }
        KernelCounterPins.Remove(pins);
        return new RecoveryResult(added, rowsAdded, unsealed, unsealedBytes, complete && added == 0) { EstimatedLost = estimated, GapSeconds = gap, Exact = exact };
    }

    /// <summary>
    /// Per table the kernel alone fed: what the recording must say of it, from the kernel's final counters (emitted,
    /// failed) against the rows sealed: every event handed over is a sealed row or lost in user space. The exec rows
    /// of processes found in /proc at start (procfs) are rows no program emitted.
    /// </summary>
    private static async Task<Dictionary<string, ManifestLoss>> KernelTruthAsync(string dir, Manifest m, Dictionary<string, Sources.SourceCounts> kernel)
    {
        var truth = new Dictionary<string, ManifestLoss>(StringComparer.Ordinal);
        foreach (var (table, c) in kernel)
        {
            if (c.Emitted == 0 && c.Failed == 0)
                continue;
            // another source's rows in the same table (conntrack's nat, a datapath's socket): the rows are not the kernel's alone
            if (m.Sources.Any(s => s.Key != "kernel" && s.Key != GapSource && s.Value.Loss.ContainsKey(table)))
                continue;
            long rows = m.Tables.TryGetValue(table, out var t) ? t.Rows : 0;
            if (table == "exec" && t is not null)
                rows -= await CountTrueAsync(dir, t.Files, "procfs");
            ulong kernelRows = (ulong)Math.Max(0, rows);
            truth[table] = new ManifestLoss { Emitted = c.Emitted, Failed = c.Failed, UserspaceDropped = c.Emitted > kernelRows ? c.Emitted - kernelRows : 0 };
        }
        return truth;
    }

    private static async Task<long> CountTrueAsync(string dir, IEnumerable<ManifestFile> files, string column)
    {
        long n = 0;
        foreach (var f in files)
        {
            await using var reader = await ParquetReader.CreateAsync(Path.Combine(dir, f.Path));
            var field = reader.Schema.DataFields.FirstOrDefault(d => d.Name == column);
            if (field is null)
                continue;
            for (int g = 0; g < reader.RowGroupCount; g++)
            {
                using var rg = reader.OpenRowGroupReader(g);
                var values = new bool[rg.RowCount];
                await rg.ReadAsync<bool>(field, values.AsMemory(), null, default);
                n += values.Count(v => v);
            }
        }
        return n;
    }

    /// <summary>The manifest's source entry that holds a crash's estimated loss.</summary>
    public const string GapSource = "recover";

    /// <summary>
    /// A killed recorder's last seconds: each table's events in the gap between its last manifest and its last
    /// sign of life, at the rate the manifest counted until then (at least one per unsealed segment, which held
    /// rows). Added to the manifest as a source of kind "estimate" and to the loss, so that events_lost is never
    /// 0 when events are missing; the source's note says it is an estimate.
    /// </summary>
    private static (ulong Lost, double GapSeconds) EstimateGap(Manifest m, DateTime manifestWritten, DateTime alive, Dictionary<string, int> unsealed,
        Dictionary<string, ManifestLoss>? kernel)
    {
        double gap = Math.Max(0, (alive - manifestWritten).TotalSeconds);
        double counted = Math.Max(0.001, (manifestWritten - m.StartedAt.UtcDateTime).TotalSeconds);
        var entry = kernel is null
            ? new ManifestSource { Kind = "estimate", Detail = "events of a killed recorder's last seconds, estimated by recover" }
            : new ManifestSource { Kind = "kernel-counters", Detail = "events of a killed recorder's last seconds, counted by recover from the kernel's emission counters (fx_emit_stats) the recorder kept pinned in bpffs; tables other sources also fed are estimated" };
        ulong total = 0, exactLost = 0;
        foreach (var (table, truth) in kernel ?? [])
        {
            // the kernel's own count: what it handed over or could not, to the end of the programs (they detach when the recorder dies)
            var sum = m.Loss.TryGetValue(table, out var s) ? s : m.Loss[table] = new ManifestLoss();
            var more = new ManifestLoss
            {
                Emitted = truth.Emitted > sum.Emitted ? truth.Emitted - sum.Emitted : 0,
                Failed = truth.Failed > sum.Failed ? truth.Failed - sum.Failed : 0,
                UserspaceDropped = truth.UserspaceDropped > sum.UserspaceDropped ? truth.UserspaceDropped - sum.UserspaceDropped : 0,
            };
            ulong before = sum.Failed + sum.UserspaceDropped;
            m.Loss[table] = truth;
            if (truth.Failed + truth.UserspaceDropped > before)
                exactLost += truth.Failed + truth.UserspaceDropped - before;
            if (more.Emitted + more.Failed + more.UserspaceDropped > 0)
                entry.Loss[table] = more;
        }
        // (the loss table's own segment is the recorder's accounting, not a source's events)
        foreach (var table in m.Loss.Keys.Concat(unsealed.Keys.Where(t => t != Format.Tables.Loss)).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal))
        {
            if (kernel?.ContainsKey(table) == true)
                continue;
            var l = m.Loss.GetValueOrDefault(table);
            ulong emitted = l?.Emitted ?? 0;
            // counted as emitted by the last manifest but in no sealed segment (in flight), plus the gap at the counted rate
            long rows = m.Tables.TryGetValue(table, out var t) ? t.Rows : 0;
            ulong inFlight = (ulong)Math.Max(0L, (long)emitted - rows - (long)(l?.UserspaceDropped ?? 0));
            ulong n = inFlight + (ulong)Math.Round(emitted / counted * gap);
            n = Math.Max(n, (ulong)unsealed.GetValueOrDefault(table));
            if (n == 0)
                continue;
            entry.Loss[table] = new ManifestLoss { Emitted = n, UserspaceDropped = n };
            var sum = m.Loss.TryGetValue(table, out var s) ? s : m.Loss[table] = new ManifestLoss();
            sum.Emitted += n;
            sum.UserspaceDropped += n;
            total += n;
        }
        if (total + exactLost == 0)
            return (0, gap);
        if (exactLost > 0)
            entry.NotRecorded.Add(string.Create(CultureInfo.InvariantCulture,
                $"the recorder was killed: {exactLost} more events were lost than its last manifest (at {manifestWritten:yyyy-MM-ddTHH:mm:ss.fffZ}) counted, {gap:0.0} s before its end: the kernel's counters of what its programs emitted, against the sealed rows; exact"));
        if (total > 0)
            entry.NotRecorded.Add(string.Create(CultureInfo.InvariantCulture,
                $"the recorder was killed: about {total} events were not sealed: those the last manifest (at {manifestWritten:yyyy-MM-ddTHH:mm:ss.fffZ}) counted as emitted beyond its sealed rows, and {gap:0.0} s after it at each table's counted rate (at least one per unsealed segment); an estimate"));
        m.Sources[GapSource] = entry;
        m.EventsLost = m.Loss.Values.Aggregate(0UL, (a, l) => a + l.Failed + l.UserspaceDropped);
        return (total + exactLost, gap);
    }
}
