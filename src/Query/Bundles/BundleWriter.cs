using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Forensics.Query.Recording;

namespace Forensics.Query.Bundles;

/// <summary>What <c>forensics bundle</c> does to a recording on the way into the bundle.</summary>
public sealed record BundleOptions
{
    /// <summary>Regular expressions (.NET syntax) over exec arguments; matches (or their capture groups) become *****.</summary>
    public IReadOnlyList<string> RedactArgs { get; init; } = [];

    /// <summary>Blank the values of VAR=value arguments, and null any env/environment column.</summary>
    public bool DropEnv { get; init; }

    /// <summary>Prefix-preserving anonymization of every IP column with a random key that is not kept.</summary>
    public bool AnonymizeIps { get; init; }

    /// <summary>The readers' limits, which the recording must meet to be bundled.</summary>
    public ReadLimits Limits { get; init; } = ReadLimits.Default;

    /// <summary>Tables (event kinds or snapshot tables) left out.</summary>
    public IReadOnlyList<string> Exclude { get; init; } = [];

    /// <summary>An SSH private key (or a .pub whose private key is in the agent) to sign with via ssh-keygen.</summary>
    public string? SignKey { get; init; }

    public bool Redacts => RedactArgs.Count > 0 || DropEnv || AnonymizeIps || Exclude.Count > 0;
}

/// <summary>What was written.</summary>
public sealed record BundleResult(string Path, string Root, int Files, long Bytes, SignatureInfo? Signature);

/// <summary>Writes bundles: one canonical tar file (see docs/bundles.md).</summary>
public static class BundleWriter
{
    /// <summary>The file extension of a bundle: Forensics eXchange Bundle.</summary>
    public const string Extension = ".fxb";

    /// <summary>Bundles the recording in <paramref name="recordingDir"/> into <paramref name="output"/>.</summary>
    public static BundleResult Create(string recordingDir, string output, BundleOptions options)
    {
        var recDir = Path.GetFullPath(recordingDir);
        // A bundle vouches only for what every reader accepts, and only for intact data: the recording is
        // opened as the readers open it (manifest limits, each file listed once and a regular file inside
        // it, schema versions this tool reads) and every file is checked against its SHA-256.
        using (var rec = RecordingLocator.Open(recDir, options.Limits))
        {
            RecordingLocator.EnsureIntact(rec, recordingDir);
        }
        Output.OutputTarget.EnsureWritable(output, [recDir]);
        var manifestPath = Path.Combine(recDir, "manifest.json");
        var manifest = RecordingManifest.Parse(RegularFile.ReadAllBytes(manifestPath, Path.Combine(recordingDir, "manifest.json"), BundleIndex.MaxManifestBytes, "a bundle's limit"), Path.Combine(recordingDir, "manifest.json"));
        var recordingId = (string)manifest["recording_id"]!;
        var tables = (JsonObject)manifest["tables"]!;
        foreach (var kind in options.Exclude)
        {
            if (!tables.ContainsKey(kind))
            {
                throw new ArgumentException($"--exclude {kind}: the recording has no table {kind} (it has {string.Join(", ", tables.Select(t => t.Key))})");
            }
        }

        var work = Directory.CreateTempSubdirectory("forensics-redact-").FullName;
        try
        {
            if (!OperatingSystem.IsWindows())
            {
                File.SetUnixFileMode(work, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            }
            var sources = Redactor.Apply(manifest, recDir, work, options);
            var manifestBytes = RecordingManifest.Serialize(manifest);
            if (manifestBytes.Length > BundleIndex.MaxManifestBytes)
            {
                throw new RecordingException($"{recordingDir}: the manifest would be {manifestBytes.Length} bytes in the bundle, more than a bundle's limit of {BundleIndex.MaxManifestBytes}");
            }
            var now = DateTimeOffset.UtcNow;
            var first = new CustodyEntry(1, "bundle", now, CustodyEntry.CurrentUser(), Environment.MachineName,
                recordingId, recDir, BundleIndex.Hex(SHA256.HashData(manifestBytes)), null, null, CustodyEntry.Genesis);
            var custody = CustodyEntry.Join([first]);
            return WriteContainer(output, now, recordingId, manifestBytes, custody, sources, options.SignKey);
        }
        finally
        {
            BundleReader.DeleteTree(work);
        }
    }

    /// <summary>
    /// Adds a note to a bundle's custody log, chained to the last entry, and rewrites the bundle
    /// (new root; re-signed when <paramref name="signKey"/> is given). A signed bundle needs a key:
    /// its old signature would not cover the new index.
    /// </summary>
    public static BundleResult AppendNote(string bundlePath, string note, string? signKey, VerifyOptions? verify = null)
    {
        using var opened = BundleReader.Open(bundlePath, verify);
        var r = opened.Report;
        if (r.Signature is not null && signKey is null)
        {
            throw new ArgumentException("the bundle is signed: give --sign-key to re-sign it after adding the note");
        }
        var entry = new CustodyEntry(r.Custody.Count + 1, "note", DateTimeOffset.UtcNow, CustodyEntry.CurrentUser(), Environment.MachineName,
            null, null, null, r.Root, note, CustodyEntry.HashOfLast(r.CustodyBytes));
        var custody = r.CustodyBytes.Concat(entry.Serialize()).Append((byte)'\n').ToArray();
        var sources = r.Index.Entries.Skip(2)
            .Select(e => new SourceFile(e.Path, Path.Combine(opened.Directory, e.Path), e.Bytes, e.Sha256)).ToList();
        return WriteContainer(bundlePath, r.Index.CreatedAt, r.Index.RecordingId, r.ManifestBytes, custody, sources, signKey);
    }

    internal sealed record SourceFile(string Path, string FullPath, long Bytes, string Sha256);

    private static BundleResult WriteContainer(string output, DateTimeOffset created, string recordingId,
        byte[] manifest, byte[] custody, IReadOnlyList<SourceFile> files, string? signKey)
    {
        created = DateTimeOffset.FromUnixTimeSeconds(created.ToUnixTimeSeconds());
        var ordered = files.OrderBy(f => f.Path, StringComparer.Ordinal).ToList();
        var entries = new List<BundleEntry>
        {
            new(BundleIndex.ManifestName, manifest.Length, BundleIndex.Hex(SHA256.HashData(manifest))),
            new(BundleIndex.CustodyName, custody.Length, BundleIndex.Hex(SHA256.HashData(custody))),
        };
        entries.AddRange(ordered.Select(f => new BundleEntry(f.Path, f.Bytes, f.Sha256)));
        var index = new BundleIndex(created, recordingId, entries);
        var indexBytes = index.Serialize();
        var root = BundleIndex.Hex(SHA256.HashData(indexBytes));
        byte[]? sig = null;
        SignatureInfo? sigInfo = null;
        if (signKey is not null)
        {
            sig = SshSig.SignWithSshKeygen(indexBytes, signKey);
            var parsed = SshSig.Parse(sig);
            if (!parsed.Verify(indexBytes))
            {
                throw new InvalidOperationException("ssh-keygen produced a signature that does not verify");
            }
            sigInfo = new SignatureInfo(parsed.Key.Type, parsed.Key.Fingerprint, null);
        }

        var full = Path.GetFullPath(output);
        var tmp = Path.Combine(Path.GetDirectoryName(full)!, "." + Path.GetFileName(full) + "." + Guid.NewGuid().ToString("N")[..8] + ".tmp");
        var mtime = created.ToUnixTimeSeconds();
        try
        {
            using (var fs = new FileStream(tmp, Output.OutputTarget.PrivateFile(FileMode.CreateNew)))
            {
                Entry(fs, BundleIndex.IndexName, indexBytes, mtime);
                Entry(fs, BundleIndex.RootName, Encoding.ASCII.GetBytes(root + "\n"), mtime);
                if (sig is not null)
                {
                    Entry(fs, BundleIndex.SignatureName, sig, mtime);
                }
                Entry(fs, BundleIndex.ManifestName, manifest, mtime);
                Entry(fs, BundleIndex.CustodyName, custody, mtime);
                foreach (var f in ordered)
                {
                    fs.Write(Tar.Header(f.Path, f.Bytes, mtime));
                    using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
                    using (var src = new FileStream(f.FullPath, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan))
                    {
                        var buf = new byte[1 << 16];
                        long total = 0;
                        int n;
                        while ((n = src.Read(buf)) > 0 && total < f.Bytes)
                        {
                            n = (int)Math.Min(n, f.Bytes - total);
                            sha.AppendData(buf, 0, n);
                            fs.Write(buf, 0, n);
                            total += n;
                        }
                        if (total != f.Bytes || src.Position != src.Length)
                        {
                            throw new InvalidDataException($"{f.Path} changed size while bundling");
                        }
                    }
                    if (BundleIndex.Hex(sha.GetHashAndReset()) != f.Sha256)
                    {
                        throw new InvalidDataException($"{f.Path} changed while bundling");
                    }
                    fs.Write(new byte[Tar.Padding(f.Bytes)]);
                }
                fs.Write(new byte[2 * Tar.Block]);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            File.Delete(tmp);
            throw;
        }
        return new BundleResult(full, root, entries.Count, new FileInfo(full).Length, sigInfo);
    }

    private static void Entry(Stream s, string name, byte[] data, long mtime)
    {
        s.Write(Tar.Header(name, data.Length, mtime));
        s.Write(data);
        s.Write(new byte[Tar.Padding(data.Length)]);
    }

    internal static string HashFile(string path)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan);
        return BundleIndex.Hex(SHA256.HashData(fs));
    }
}
