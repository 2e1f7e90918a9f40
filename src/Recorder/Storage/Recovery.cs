using System.Globalization;
using System.Security.Cryptography;
using Forensics.Format;
using Parquet;

namespace Forensics.Recorder.Storage;

public sealed record RecoveryResult(int FilesAdded, long RowsAdded, int UnsealedFiles, long UnsealedBytes, bool WasComplete);

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
        var listed = manifest.Tables.Values.SelectMany(t => t.Files).Select(f => f.Path).ToHashSet(StringComparer.Ordinal);
        int added = 0, unsealed = 0;
        long rowsAdded = 0, unsealedBytes = 0;
        DateTime? lastWrite = null;
        foreach (var tableDir in Directory.EnumerateDirectories(dir).Order(StringComparer.Ordinal))
        {
            var table = Path.GetFileName(tableDir);
            foreach (var file in Directory.EnumerateFiles(tableDir, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
            {
                var info = new FileInfo(file);
                if (info.LinkTarget is not null)
                    continue; // never follow links
                var rel = Path.GetRelativePath(dir, file).Replace('\\', '/');
                if (file.EndsWith(".parquet.tmp", StringComparison.Ordinal))
                {
                    unsealed++;
                    unsealedBytes += info.Length;
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
                if (lastWrite is null || info.LastWriteTimeUtc > lastWrite)
                    lastWrite = info.LastWriteTimeUtc;
            }
        }
        if (!complete || added > 0)
        {
            manifest.Recovered = true;
            manifest.StopReason = "recovered";
            manifest.EndedAt ??= new DateTimeOffset(lastWrite ?? File.GetLastWriteTimeUtc(Path.Combine(dir, Manifest.FileName)), TimeSpan.Zero);
            manifest.UnsealedSegments = unsealed;
            manifest.UnsealedBytes = unsealedBytes;
            ManifestStore.Write(manifest, dir);
        }
        return new RecoveryResult(added, rowsAdded, unsealed, unsealedBytes, complete && added == 0);
    }
}
