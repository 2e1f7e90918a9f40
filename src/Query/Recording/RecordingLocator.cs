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

    /// <summary>True when every file was already checked against its SHA-256 while opening (a bundle).</summary>
    public bool Verified { get; init; }

    public IEnumerable<RecordingFile> FilesOf(string table) => Files.Where(f => f.Table == table);

    public void Dispose() => Cleanup?.Dispose();
}

/// <summary>The verdict on one file's hash.</summary>
public sealed record FileVerification(string RelativePath, string Table, bool Ok, string Problem);

/// <summary>A recording's files differ from its manifest's sizes or hashes (exit code 6).</summary>
public sealed class RecordingTamperedException : Exception
{
    public RecordingTamperedException(string message) : base(message) { }
    public RecordingTamperedException() { }
    public RecordingTamperedException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>
/// Finds and opens recordings. A recording is a directory with manifest.json;
/// only files listed in the manifest are part of it, and each must be a plain
/// file inside the directory: no absolute paths, no "..", no symbolic links on
/// the way, no FIFOs or devices, each listed once; and the manifest must stay within
/// <see cref="ReadLimits"/>.
/// </summary>
public static class RecordingLocator
{
    /// <summary>
    /// Turns a non-directory path (a bundle file) into a verified recording directory and
    /// what deletes it afterwards. Set by the bundle support; null: bundles are not supported.
    /// </summary>
    public static Func<string, ReadLimits, (string Directory, IDisposable Cleanup)>? BundleOpener { get; set; }

    /// <summary>Whether a regular file is a bundle (its first tar entry is the bundle index). Set with <see cref="BundleOpener"/>.</summary>
    public static Func<string, bool>? IsBundle { get; set; }

    public const string ManifestName = "manifest.json";
    private const int MinParquetBytes = 12;

    /// <summary>Opens the recording at path (a directory, its manifest.json, or a bundle file).</summary>
    public static OpenedRecording Open(string path, ReadLimits? limits = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        limits ??= ReadLimits.Default;
        if (path.Length == 0)
            throw new RecordingException("an empty path is not a recording");
        var full = Path.GetFullPath(path);
        string root;
        IDisposable? cleanup = null;
        var verified = false;
        if (Directory.Exists(full))
            root = full;
        else if (File.Exists(full) && Path.GetFileName(full) == ManifestName)
            root = Path.GetDirectoryName(full)!;
        else if (RegularFile.Kind(full) is { } kind)
        {
            // The path the user typed may be a link to a bundle: follow that one, never one inside a recording.
            var target = new FileInfo(full).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? full;
            kind = RegularFile.Kind(target) ?? kind;
            if (kind != RegularFile.Regular)
                throw new RecordingException($"{path}: is {kind}, not a recording folder or a bundle file");
            if (BundleOpener is null || IsBundle is null)
                throw new RecordingException($"{path}: not a recording directory (bundle files are not supported by this build)");
            if (!IsBundle(target))
                throw new RecordingException($"{path}: not a recording folder or a bundle file");
            (root, cleanup) = BundleOpener(target, limits);
            root = Path.GetFullPath(root);
            verified = true;
        }
        else
            throw new RecordingException($"{path}: no such recording");
        try
        {
            return OpenDirectory(root, path, limits) with { Cleanup = cleanup, Verified = verified };
        }
        catch
        {
            cleanup?.Dispose();
            throw;
        }
    }

    private static OpenedRecording OpenDirectory(string root, string path, ReadLimits limits)
    {
        var manifestPath = Path.Combine(root, ManifestName);
        var mi = new FileInfo(manifestPath);
        if (mi.LinkTarget is not null)
            throw new RecordingException($"{path}: {ManifestName} is a symbolic link; refusing it");
        if (!mi.Exists)
            throw new RecordingException($"{path}: not a recording (no {ManifestName})");
        var bytes = RegularFile.ReadAllBytes(manifestPath, $"{path}: {ManifestName}", limits.MaxManifestBytes, "--max-manifest-size");
        Manifest manifest;
        try
        {
            manifest = Manifest.Parse(bytes, manifestPath); // System.Text.Json refuses bytes that are not UTF-8
        }
        catch (ManifestException e)
        {
            throw new RecordingException(e.Message, e);
        }
        CheckManifest(manifest, path, limits);

        var files = new List<RecordingFile>();
        foreach (var (table, t) in manifest.Tables.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            foreach (var f in t.Files)
            {
                var fullFile = ResolveInside(root, f.Path, path);
                var node = NodeOf(f.Path) ?? manifest.Node;
                files.Add(new RecordingFile(table, f.Path, fullFile, node, f));
            }
        }
        return new OpenedRecording(root, manifest, files);
    }

    /// <summary>
    /// What every reader requires of a manifest besides its files being there: the fields readers
    /// use are present, table names are plain, every file is listed once, counts are not negative,
    /// schema versions are ones this tool reads, and the file count is within the limit.
    /// <c>bundle</c> and <c>verify</c> apply the same checks, so that neither writes nor passes
    /// what the readers refuse.
    /// </summary>
    public static void CheckManifest(Manifest m, string path, ReadLimits limits)
    {
        ArgumentNullException.ThrowIfNull(m);
        ArgumentNullException.ThrowIfNull(limits);
        if (m.Tables is null || m.Host is null || m.Config is null || m.Loss is null)
            throw new RecordingException($"{path}: manifest lacks tables, host, config or loss");
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (table, t) in m.Tables)
        {
            if (!IsSafeName(table))
                throw new RecordingException($"{path}: manifest names a table \"{Printable(table)}\" that is not a plain name");
            if (t?.Files is null)
                throw new RecordingException($"{path}: manifest table {table} has no file list");
            if (t.Rows < 0)
                throw new RecordingException($"{path}: manifest table {table} has a negative row count");
            if (SchemaCatalog.Has(table) && !SchemaCatalog.Versions(table).Contains(t.SchemaVersion))
                throw new RecordingException($"{path}: table {table} has schema version {t.SchemaVersion}, which this tool does not read (it reads {string.Join(", ", SchemaCatalog.Versions(table))})");
            foreach (var f in t.Files)
            {
                if (f is null || f.Path is null || f.Sha256 is null)
                    throw new RecordingException($"{path}: manifest table {table} has a file entry without path or sha256");
                if (!seen.Add(f.Path))
                    throw new RecordingException($"{path}: manifest lists {Printable(f.Path)} twice");
                if (seen.Count > limits.MaxFiles)
                    throw new RecordingException($"{path}: manifest lists more than {limits.MaxFiles} files (--max-files raises the limit)");
                if (f.Rows < 0 || f.Bytes < 0)
                    throw new RecordingException($"{path}: manifest gives {Printable(f.Path)} a negative size or row count");
            }
        }
        foreach (var (kind, l) in m.Loss)
            if (l is null)
                throw new RecordingException($"{path}: manifest loss entry {Printable(kind)} is missing");
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
            string hash;
            try
            {
                hash = Sha256Of(f.FullPath);
            }
            catch (RecordingException e)
            {
                result.Add(new FileVerification(f.RelativePath, f.Table, false, e.Message));
                continue;
            }
            result.Add(string.Equals(hash, f.Entry.Sha256, StringComparison.OrdinalIgnoreCase)
                ? new FileVerification(f.RelativePath, f.Table, true, "")
                : new FileVerification(f.RelativePath, f.Table, false, $"SHA-256 {hash} differs from the manifest's {f.Entry.Sha256}"));
        }
        return result;
    }

    public static string Sha256Of(string file)
    {
        using var s = RegularFile.OpenRead(file, file);
        return Convert.ToHexStringLower(SHA256.HashData(s));
    }

    /// <summary>Throws <see cref="RecordingTamperedException"/> when a file differs from the manifest.</summary>
    public static void EnsureIntact(OpenedRecording rec, string shownAs)
    {
        ArgumentNullException.ThrowIfNull(rec);
        if (rec.Verified)
            return;
        var bad = Verify(rec).Where(v => !v.Ok).ToList();
        if (bad.Count > 0)
            throw new RecordingTamperedException($"{shownAs}: {bad.Count} file{(bad.Count == 1 ? "" : "s")} differ from the manifest (tampered or corrupted), e.g. {bad[0].RelativePath}: {bad[0].Problem}; `forensics info` lists them");
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
        if (RegularFile.Kind(current) is { } kind && kind != RegularFile.Regular)
            throw new RecordingException($"{shownAs}: {relative}: is {kind}, not a regular Parquet file");
        if (new FileInfo(current).Length < MinParquetBytes)
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

    /// <summary>A name from an untrusted manifest, fit for one line: control characters replaced, at most 200 characters.</summary>
    internal static string Printable(string s)
    {
        var t = new string(s.Take(200).Select(c => char.IsControl(c) ? '?' : c).ToArray());
        return s.Length > 200 ? t + "..." : t;
    }
}
