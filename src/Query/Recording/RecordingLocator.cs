using System.Security.Cryptography;
using Forensics.Format;

namespace Forensics.Query.Recording;

/// <summary>One file of a recording, checked to lie inside it.</summary>
public sealed record RecordingFile(string Table, string RelativePath, string FullPath, string Node, ManifestFile Entry);

/// <summary>
/// A recording directory whose manifest was read and whose listed files were checked to be
/// plain files inside it. Disposing it releases what opening took (a bundle's extraction).
/// </summary>
public sealed record OpenedRecording(string Root, Manifest Manifest, IReadOnlyList<RecordingFile> Files) : IDisposable
{
    internal IDisposable? Cleanup { get; init; }

    public IEnumerable<RecordingFile> FilesOf(string table) => Files.Where(f => f.Table == table);

    public void Dispose() => Cleanup?.Dispose();
}

/// <summary>The verdict on one file's hash.</summary>
public sealed record FileVerification(string RelativePath, string Table, bool Ok, string Problem);

/// <summary>
/// Finds and opens recordings. A recording is a directory with manifest.json;
/// only files listed in the manifest are part of it, and each must be a plain
/// file inside the directory: no absolute paths, no "..", no symbolic links on
/// the way, no FIFOs or devices (a Parquet file has at least 12 bytes, which
/// those do not report).
/// </summary>
public static class RecordingLocator
{
    /// <summary>
    /// Turns a non-directory path (a bundle file) into a verified recording directory and
    /// what deletes it afterwards. Set by the bundle support; null: bundles are not supported.
    /// </summary>
    public static Func<string, (string Directory, IDisposable Cleanup)>? BundleOpener { get; set; }

    public const string ManifestName = "manifest.json";
    private const int MinParquetBytes = 12;

    /// <summary>Opens the recording at path (a directory, its manifest.json, or a bundle file).</summary>
    public static OpenedRecording Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var full = Path.GetFullPath(path);
        string root;
        IDisposable? cleanup = null;
        if (Directory.Exists(full))
            root = full;
        else if (File.Exists(full) && Path.GetFileName(full) == ManifestName)
            root = Path.GetDirectoryName(full)!;
        else if (File.Exists(full))
        {
            if (BundleOpener is null)
                throw new RecordingException($"{path}: not a recording directory (bundle files are not supported by this build)");
            (root, cleanup) = BundleOpener(full);
            root = Path.GetFullPath(root);
        }
        else
            throw new RecordingException($"{path}: no such recording");
        try
        {
            return OpenDirectory(root, path) with { Cleanup = cleanup };
        }
        catch
        {
            cleanup?.Dispose();
            throw;
        }
    }

    private static OpenedRecording OpenDirectory(string root, string path)
    {
        var manifestPath = Path.Combine(root, ManifestName);
        var mi = new FileInfo(manifestPath);
        if (!mi.Exists)
            throw new RecordingException($"{path}: not a recording (no {ManifestName})");
        if (mi.LinkTarget is not null)
            throw new RecordingException($"{path}: {ManifestName} is a symbolic link; refusing it");
        Manifest manifest;
        try
        {
            manifest = Manifest.Parse(File.ReadAllBytes(manifestPath), manifestPath);
        }
        catch (ManifestException e)
        {
            throw new RecordingException(e.Message, e);
        }

        var files = new List<RecordingFile>();
        foreach (var (table, t) in manifest.Tables.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            if (!IsSafeName(table))
                throw new RecordingException($"{path}: manifest names a table \"{table}\" that is not a plain name");
            foreach (var f in t.Files)
            {
                var fullFile = ResolveInside(root, f.Path, path);
                var node = NodeOf(f.Path) ?? manifest.Node;
                files.Add(new RecordingFile(table, f.Path, fullFile, node, f));
            }
        }
        return new OpenedRecording(root, manifest, files);
    }

    /// <summary>Hashes every file the manifest lists and compares size and SHA-256.</summary>
    public static IReadOnlyList<FileVerification> Verify(OpenedRecording rec)
    {
        ArgumentNullException.ThrowIfNull(rec);
        var result = new List<FileVerification>();
        foreach (var f in rec.Files)
        {
            var info = new FileInfo(f.FullPath);
            if (!info.Exists)
            {
                result.Add(new FileVerification(f.RelativePath, f.Table, false, "missing"));
                continue;
            }
            if (info.Length != f.Entry.Bytes)
            {
                result.Add(new FileVerification(f.RelativePath, f.Table, false, $"{info.Length} bytes, manifest says {f.Entry.Bytes}"));
                continue;
            }
            var hash = Sha256Of(f.FullPath);
            result.Add(string.Equals(hash, f.Entry.Sha256, StringComparison.OrdinalIgnoreCase)
                ? new FileVerification(f.RelativePath, f.Table, true, "")
                : new FileVerification(f.RelativePath, f.Table, false, $"SHA-256 {hash} differs from the manifest's {f.Entry.Sha256}"));
        }
        return result;
    }

    public static string Sha256Of(string file)
    {
        using var s = File.OpenRead(file);
        return Convert.ToHexStringLower(SHA256.HashData(s));
    }

    /// <summary>The full path of a manifest-relative path, refusing anything that could leave the recording.</summary>
    internal static string ResolveInside(string root, string relative, string shownAs)
    {
        if (string.IsNullOrEmpty(relative) || relative.Contains('\\', StringComparison.Ordinal) || relative.Contains('\0', StringComparison.Ordinal)
            || relative.StartsWith('/') || relative.Contains('\'', StringComparison.Ordinal))
            throw new RecordingException($"{shownAs}: manifest lists \"{Printable(relative)}\", which is not a plain relative path");
        var parts = relative.Split('/');
        if (parts.Any(p => p.Length == 0 || p == "." || p == ".."))
            throw new RecordingException($"{shownAs}: manifest lists \"{Printable(relative)}\", which leaves the recording or is not normalized");
        var current = root;
        for (var i = 0; i < parts.Length; i++)
        {
            current = Path.Combine(current, parts[i]);
            var last = i == parts.Length - 1;
            FileSystemInfo fsi = last ? new FileInfo(current) : new DirectoryInfo(current);
            if (fsi.LinkTarget is not null)
                throw new RecordingException($"{shownAs}: {relative}: {(last ? "" : parts[i] + " ")}is a symbolic link; refusing to follow it out of the recording");
            if (!fsi.Exists)
                throw new RecordingException($"{shownAs}: {relative}: listed in the manifest but missing");
        }
        var file = new FileInfo(current);
        if ((file.Attributes & FileAttributes.Directory) != 0 || file.Length < MinParquetBytes)
            throw new RecordingException($"{shownAs}: {relative}: not a regular Parquet file");
        var fullRoot = Path.TrimEndingDirectorySeparator(root) + Path.DirectorySeparatorChar;
        if (!Path.GetFullPath(current).StartsWith(fullRoot, StringComparison.Ordinal))
            throw new RecordingException($"{shownAs}: {relative}: outside the recording");
        return Path.GetFullPath(current);
    }

    private static string? NodeOf(string relative)
    {
        foreach (var p in relative.Split('/'))
            if (p.StartsWith("node=", StringComparison.Ordinal))
                return p["node=".Length..].Replace('+', '/'); // a '/' in a node name (Hubble's cluster/node) is '+' in its folder
        return null;
    }

    internal static bool IsSafeName(string s) =>
        s.Length is > 0 and <= 64 && s.All(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '_');

    private static string Printable(string s) => new(s.Select(c => char.IsControl(c) ? '?' : c).ToArray());
}
