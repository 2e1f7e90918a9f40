using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Forensics.Query.Recording;

namespace Forensics.Query.Bundles;

/// <summary>What the verifier trusts and expects.</summary>
public sealed record VerifyOptions(string? AllowedSignersFile = null, string? PublicKeyFile = null, string? ExpectedRoot = null)
{
    /// <summary>The readers' limits: a bundle that a reading verb would refuse does not verify either.</summary>
    public ReadLimits Limits { get; init; } = ReadLimits.Default;
}

/// <summary>The signature of a verified bundle.</summary>
public sealed record SignatureInfo(string KeyType, string Fingerprint, string? TrustedAs);

/// <summary>What a successful verification found.</summary>
public sealed record VerifyReport(
    string Root, BundleIndex Index, JsonObject Manifest, IReadOnlyList<CustodyEntry> Custody, SignatureInfo? Signature,
    byte[] IndexBytes, byte[] ManifestBytes, byte[] CustodyBytes)
{
    public long DataBytes => Index.Entries.Sum(e => e.Bytes);
}

/// <summary>A bundle verified and extracted into a private temporary folder; disposing deletes the folder.</summary>
public sealed class OpenedBundle : IDisposable
{
    internal OpenedBundle(string directory, VerifyReport report)
    {
        Directory = directory;
        Report = report;
    }

    /// <summary>The extracted recording (manifest.json, custody.jsonl, TABLE/node=HOST/*.parquet), mode 0700.</summary>
    public string Directory { get; }

    public VerifyReport Report { get; }

    public void Dispose()
    {
        BundleReader.DeleteTree(Directory);
        ExtractionFolders.Forget(Directory);
    }
}

/// <summary>
/// The extraction folders this process holds, so that SIGINT, SIGTERM or SIGHUP (the CLI's
/// handler calls <see cref="DeleteAll"/>) leave none behind; one left by a process that was
/// killed outright is deleted by the next reader (<see cref="SweepDead"/>).
/// </summary>
public static class ExtractionFolders
{
    public const string Prefix = "forensics-bundle-";
    private static readonly HashSet<string> Held = new(StringComparer.Ordinal);

    internal static void Hold(string dir)
    {
        lock (Held)
            Held.Add(dir);
    }

    internal static void Forget(string dir)
    {
        lock (Held)
            Held.Remove(dir);
    }

    /// <summary>Set by a signal: the process is ending, nothing more is extracted.</summary>
    public static bool Closing { get; private set; }

    /// <summary>
    /// Held while an extraction creates a folder or a file, and by a signal while it sets <see cref="Closing"/>:
    /// nothing is created after the signal's deletion began (a folder created meanwhile would outlive it).
    /// </summary>
    internal static readonly object Gate = new();

    /// <summary>From a signal handler: stop extracting and delete every folder now (the process ends right after).</summary>
    public static void OnSignal()
    {
        lock (Gate)
            Closing = true;
        DeleteAll();
    }

    public static void DeleteAll()
    {
        string[] dirs;
        lock (Held)
            dirs = [.. Held];
        foreach (var d in dirs)
            BundleReader.DeleteTree(d);
    }

    /// <summary>The name of a new folder: the owner's pid is in it.</summary>
    internal static string NewName() => $"{Prefix}{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..12]}";

    /// <summary>Deletes folders under <paramref name="parent"/> named by <see cref="NewName"/> whose process is gone.</summary>
    internal static void SweepDead(string parent)
    {
        try
        {
            foreach (var d in System.IO.Directory.EnumerateDirectories(parent, Prefix + "*"))
            {
                var rest = Path.GetFileName(d)[Prefix.Length..];
                var dash = rest.IndexOf('-', StringComparison.Ordinal);
                if (dash <= 0 || !int.TryParse(rest[..dash], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var pid))
                    continue;
                if (pid != Environment.ProcessId && !System.IO.Directory.Exists($"/proc/{pid}") && new DirectoryInfo(d).LinkTarget is null)
                    BundleReader.DeleteTree(d);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Someone else's folder, or a race with its owner: leave it.
        }
    }
}

/// <summary>
/// Reads bundles (see docs/bundles.md): verifies everything in one pass over the file and, when
/// asked, extracts into a fresh private folder only the entries the index and manifest list, at
/// the sizes they declare. Any failure throws <see cref="BundleException"/> with one line and a
/// class, and deletes whatever was extracted.
/// </summary>
public static class BundleReader
{
    /// <summary>True when <paramref name="path"/> is a regular file whose first tar entry is a bundle index.</summary>
    public static bool IsBundle(string path)
    {
        if (!File.Exists(path))
        {
            return false;
        }
        try
        {
            using var fs = RegularFile.OpenRead(path, path);
            var h = new byte[Tar.Block];
            if (fs.ReadAtLeast(h, Tar.Block, throwOnEndOfStream: false) < Tar.Block)
            {
                return false;
            }
            return Tar.Parse(h, 0)?.Name == BundleIndex.IndexName;
        }
        catch (Exception e) when (e is BundleException or RecordingException or IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>Verifies a bundle without extracting anything.</summary>
    public static VerifyReport Verify(string path, VerifyOptions? options = null) => Scan(path, options ?? new(), null);

    /// <summary>
    /// Verifies and extracts into a new private folder (0700) under <paramref name="parent"/>
    /// (default: the system temporary folder).
    /// </summary>
    public static OpenedBundle Open(string path, VerifyOptions? options = null, string? parent = null)
    {
        parent ??= Path.GetTempPath();
        ExtractionFolders.SweepDead(parent);
        var dir = Path.Combine(Path.GetFullPath(parent), ExtractionFolders.NewName());
        ExtractionFolders.Hold(dir);
        try
        {
            lock (ExtractionFolders.Gate)
            {
                if (ExtractionFolders.Closing)
                    throw new OperationCanceledException("interrupted");
                Output.OutputTarget.CreatePrivateDirectory(dir);
            }
            var report = Scan(path, options ?? new(), dir);
            return new OpenedBundle(dir, report);
        }
        catch
        {
            DeleteTree(dir);
            ExtractionFolders.Forget(dir);
            throw;
        }
    }

    /// <summary>
    /// For reading verbs: verify <paramref name="bundlePath"/>, extract it into a private temporary
    /// folder and return that folder; dispose the result to delete it. Throws <see cref="BundleException"/>.
    /// </summary>
    public static IDisposable OpenVerified(string bundlePath, out string extractedDir, ReadLimits? limits = null)
    {
        var opened = Open(bundlePath, new VerifyOptions { Limits = limits ?? ReadLimits.Default });
        extractedDir = opened.Directory;
        return opened;
    }

    /// <summary>
    /// For reading verbs that take "a recording directory or a bundle": a directory is returned as
    /// it is (disposing does nothing); a bundle file is verified and extracted as by
    /// <see cref="OpenVerified"/>. Anything else throws <see cref="BundleException"/>.
    /// </summary>
    public static IDisposable OpenRecording(string path, out string recordingDir, ReadLimits? limits = null)
    {
        if (System.IO.Directory.Exists(path))
        {
            recordingDir = path;
            return new NoCleanup();
        }
        if (!File.Exists(path))
        {
            throw new BundleException(BundleError.Malformed, $"{path}: no such recording directory or bundle file");
        }
        return OpenVerified(path, out recordingDir, limits);
    }

    private sealed class NoCleanup : IDisposable
    {
        public void Dispose()
        {
        }
    }

    /// <summary>
    /// Deletes an extraction folder. One deletion at a time: a signal's and the interrupted extraction's own
    /// used to run together, each giving up on an entry the other had just removed, and left the folder behind.
    /// </summary>
    internal static void DeleteTree(string dir)
    {
        lock (DeleteGate)
        {
            for (var attempt = 0; attempt < 3 && System.IO.Directory.Exists(dir); attempt++)
            {
                try
                {
                    System.IO.Directory.Delete(dir, recursive: true);
                }
                catch (IOException)
                {
                    // an entry went away or appeared meanwhile: look again
                }
                catch (UnauthorizedAccessException)
                {
                    return;
                }
            }
        }
    }

    private static readonly object DeleteGate = new();

    private sealed record Seen(string Name, long Size, string Sha256, bool Listed);

    private static VerifyReport Scan(string path, VerifyOptions options, string? extractTo)
    {
        FileStream fs;
        try
        {
            fs = RegularFile.OpenRead(path, path);
        }
        catch (RecordingException e)
        {
            throw new BundleException(BundleError.Malformed, e.Message);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new BundleException(BundleError.Malformed, $"cannot read {path}: {e.Message}");
        }
        using (fs)
        {
            try
            {
                return new Scanner(fs, options, extractTo).Run();
            }
            catch (Exception e) when (e is FormatException or System.Text.DecoderFallbackException or OverflowException
                or System.Text.Json.JsonException or InvalidCastException or IndexOutOfRangeException)
            {
                // Hostile input that slipped past a specific check: still one line, still refused.
                throw new BundleException(BundleError.Malformed, "bundle is malformed: " + e.Message, e);
            }
            catch (IOException e) when ((e.HResult & 0xffff) != 28)
            {
                // ENOSPC (28) is the extraction folder's problem, not the bundle's: it stays an IOException (exit 5).
                throw new BundleException(BundleError.Malformed, $"cannot read {path}: {e.Message}", e);
            }
        }
    }

    private sealed class Scanner(FileStream fs, VerifyOptions options, string? extractTo)
    {
        private readonly long _length = fs.Length;
        private readonly byte[] _block = new byte[Tar.Block];
        private readonly HashSet<string> _names = new(StringComparer.Ordinal);
        private readonly List<Seen> _seen = [];
        private long _pos;

        public VerifyReport Run()
        {
            var trusted = options.AllowedSignersFile is null && options.PublicKeyFile is null
                ? null
                : LoadTrust();

            // 1. index.json: the list of everything else; its hash is the root.
            var ih = NextHeader() ?? throw new BundleException(BundleError.Malformed, "not a forensics bundle: empty archive");
            if (ih.Name != BundleIndex.IndexName)
            {
                throw new BundleException(BundleError.Malformed, $"not a forensics bundle: first entry is {BundleIndex.Quote(ih.Name)}, not index.json");
            }
            var mtime = ih.MTime;
            CheckCanonical(ih, mtime, ih.Offset);
            var indexBytes = ReadSmall(ih, BundleIndex.MaxIndexBytes);
            var index = BundleIndex.Parse(indexBytes);
            if (index.CreatedAt.ToUnixTimeSeconds() != mtime)
            {
                throw new BundleException(BundleError.Malformed, "index.json's tar header time differs from its created_at");
            }
            CheckSize(index);
            var root = BundleIndex.Hex(SHA256.HashData(indexBytes));

            // 2. index.sha256: the root, so that any change to index.json is caught without a signature.
            var rh = NextHeader();
            if (rh is null || rh.Name != BundleIndex.RootName)
            {
                throw new BundleException(BundleError.FileMissing, "index.sha256 (the root hash) is missing after index.json");
            }
            CheckCanonical(rh, mtime, rh.Offset);
            var rootFile = ReadSmall(rh, 65);
            if (!rootFile.AsSpan().SequenceEqual(Encoding.ASCII.GetBytes(root + "\n")))
            {
                throw new BundleException(BundleError.RootMismatch, $"root hash mismatch: index.json hashes to {root}, index.sha256 says {Printable(rootFile)}");
            }
            if (options.ExpectedRoot is { } want && !string.Equals(want.Trim(), root, StringComparison.OrdinalIgnoreCase))
            {
                throw new BundleException(BundleError.RootMismatch, $"root hash mismatch: bundle root is {root}, expected {want.Trim()}");
            }

            var expected = index.Entries.ToDictionary(e => e.Path, StringComparer.Ordinal);
            byte[]? sigBytes = null;
            byte[]? manifestBytes = null;
            byte[]? custodyBytes = null;
            JsonObject? manifest = null;
            IReadOnlyList<CustodyEntry>? custody = null;

            // 3. the rest, in index order; index.sig may come first.
            while (NextHeader() is { } h)
            {
                CheckCanonical(h, mtime, h.Offset);
                if (h.Name == BundleIndex.SignatureName)
                {
                    if (_seen.Count != 0 || sigBytes is not null)
                    {
                        throw new BundleException(BundleError.Malformed, "index.sig is out of place: it must follow index.sha256");
                    }
                    sigBytes = ReadSmall(h, BundleIndex.MaxSignatureBytes);
                    continue;
                }
                if (!expected.TryGetValue(h.Name, out var want2))
                {
                    _seen.Add(new Seen(h.Name, h.Size, HashData(h, null), false));
                    continue;
                }
                if (h.Size > want2.Bytes)
                {
                    throw new BundleException(BundleError.SizeExceeded, $"entry {h.Name} declares {h.Size} bytes, the index and manifest say {want2.Bytes}");
                }
                if (h.Name is BundleIndex.ManifestName or BundleIndex.CustodyName)
                {
                    var bytes = ReadSmall(h, h.Name == BundleIndex.ManifestName ? BundleIndex.MaxManifestBytes : BundleIndex.MaxCustodyBytes);
                    var sha = BundleIndex.Hex(SHA256.HashData(bytes));
                    _seen.Add(new Seen(h.Name, h.Size, sha, true));
                    if (sha != want2.Sha256 || bytes.Length != want2.Bytes)
                    {
                        throw new BundleException(BundleError.FileChanged, $"{h.Name} changed: SHA-256 {sha} differs from the index's {want2.Sha256}");
                    }
                    if (h.Name == BundleIndex.ManifestName)
                    {
                        manifestBytes = bytes;
                        manifest = CheckManifest(bytes, index);
                        Write(h.Name, bytes);
                    }
                    else
                    {
                        custodyBytes = bytes;
                        custody = CustodyEntry.ParseLog(bytes);
                        CheckCustody(custody, index);
                        Write(h.Name, bytes);
                    }
                    continue;
                }
                // Extract only when the manifest has vouched for this file and its size is right.
                var target = extractTo is not null && manifest is not null && h.Size == want2.Bytes ? h.Name : null;
                var hash = HashData(h, target);
                _seen.Add(new Seen(h.Name, h.Size, hash, true));
                if (hash != want2.Sha256 && h.Size == want2.Bytes)
                {
                    throw new BundleException(BundleError.FileChanged, $"{h.Name} changed: SHA-256 {hash} differs from the manifest's {want2.Sha256}");
                }
            }
            EndOfArchive();
            Reconcile(index);

            var sig = CheckSignature(sigBytes, indexBytes, trusted);
            return new VerifyReport(root, index, manifest!, custody!, sig, indexBytes, manifestBytes!, custodyBytes!);
        }

        /// <summary>
        /// Before reading any data: what the index says would be extracted must stay within the
        /// readers' limits and, when extracting, fit the free space of the folder (with 64 MiB to spare).
        /// </summary>
        private void CheckSize(BundleIndex index)
        {
            var limits = options.Limits;
            if (index.Entries.Count - 2 > limits.MaxFiles)
            {
                throw new BundleException(BundleError.SizeExceeded, $"the bundle lists {index.Entries.Count - 2} files, more than the limit of {limits.MaxFiles} (--max-files raises it)");
            }
            var total = index.Entries.Sum(e => e.Bytes);
            if (total > limits.MaxExtractBytes)
            {
                throw new BundleException(BundleError.SizeExceeded, $"the bundle holds {total} bytes, more than the limit of {limits.MaxExtractBytes} (--max-extract-size raises it)");
            }
            if (extractTo is not null)
            {
                long free;
                try
                {
                    free = new DriveInfo(extractTo).AvailableFreeSpace;
                }
                catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException)
                {
                    return; // unknown: the writes themselves will say "disk full"
                }
                if (total + (64L << 20) > free)
                {
                    throw new IOException($"no space left to extract the bundle: it holds {total} bytes, {Path.GetDirectoryName(extractTo)} has {free} free (set TMPDIR to a larger folder)", 28);
                }
            }
        }

        private TrustedKeys LoadTrust()
        {
            try
            {
                return TrustedKeys.Load(options.AllowedSignersFile, options.PublicKeyFile);
            }
            catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException)
            {
                throw new ArgumentException("cannot read trusted keys: " + e.Message, e);
            }
        }

        private static SignatureInfo? CheckSignature(byte[]? sigBytes, byte[] indexBytes, TrustedKeys? trusted)
        {
            if (sigBytes is null)
            {
                return trusted is null ? null : throw new BundleException(BundleError.Unsigned, "bundle is not signed, but a trusted key was required");
            }
            var sig = SshSig.Parse(sigBytes);
            if (sig.Ns != SshSig.Namespace)
            {
                throw new BundleException(BundleError.SignatureBad, $"signature is for namespace {BundleIndex.Quote(sig.Ns)}, not \"forensics\"");
            }
            if (!sig.Verify(indexBytes))
            {
                throw new BundleException(BundleError.SignatureBad, $"signature does not verify ({sig.Key.Type} {sig.Key.Fingerprint}): index.json or index.sig was altered");
            }
            string? who = null;
            if (trusted is not null)
            {
                who = trusted.PrincipalsFor(sig.Key)
                    ?? throw new BundleException(BundleError.SignatureUntrusted, $"signed by another key: {sig.Key.Type} {sig.Key.Fingerprint} is not a trusted key");
            }
            return new SignatureInfo(sig.Key.Type, sig.Key.Fingerprint, who);
        }

        private JsonObject CheckManifest(byte[] bytes, BundleIndex index)
        {
            var m = RecordingManifest.Parse(bytes, "manifest.json");
            try
            {
                // What every reading verb requires of a manifest: a bundle that a reader refuses does not verify.
                RecordingLocator.CheckManifest(Forensics.Format.Manifest.Parse(bytes, "manifest.json"), "manifest.json", options.Limits);
            }
            catch (Exception e) when (e is RecordingException or Forensics.Format.ManifestException)
            {
                throw new BundleException(BundleError.ManifestInvalid, e.Message);
            }
            if ((string?)m["recording_id"] != index.RecordingId)
            {
                throw new BundleException(BundleError.ManifestInvalid, "manifest.json's recording_id differs from the index's");
            }
            var listed = index.Entries.Skip(2).ToDictionary(e => e.Path, StringComparer.Ordinal);
            var inManifest = new HashSet<string>(StringComparer.Ordinal);
            foreach (var (_, _, path, size, sha) in RecordingManifest.Files(m))
            {
                if (!inManifest.Add(path))
                {
                    throw new BundleException(BundleError.ManifestInvalid, $"manifest.json lists {path} twice");
                }
                if (!listed.TryGetValue(path, out var e))
                {
                    throw new BundleException(BundleError.ManifestInvalid, $"manifest.json lists {path}, which the index does not");
                }
                if (e.Bytes != size || e.Sha256 != sha)
                {
                    throw new BundleException(BundleError.ManifestInvalid, $"manifest.json and index.json disagree on {path}");
                }
            }
            if (listed.Keys.FirstOrDefault(p => !inManifest.Contains(p)) is { } extra)
            {
                throw new BundleException(BundleError.ManifestInvalid, $"index.json lists {extra}, which is not in the manifest");
            }
            return m;
        }

        private static void CheckCustody(IReadOnlyList<CustodyEntry> custody, BundleIndex index)
        {
            if (custody[0].RecordingId != index.RecordingId)
            {
                throw new BundleException(BundleError.CustodyBroken, "custody entry 1 names another recording");
            }
        }

        /// <summary>Compares what was seen with what the index lists: renamed, missing, added, changed, order.</summary>
        private void Reconcile(BundleIndex index)
        {
            var seenListed = _seen.Where(s => s.Listed).ToDictionary(s => s.Name, StringComparer.Ordinal);
            var missing = index.Entries.Where(e => !seenListed.ContainsKey(e.Path)).ToList();
            foreach (var extra in _seen.Where(s => !s.Listed))
            {
                var from = missing.FirstOrDefault(m => m.Sha256 == extra.Sha256 && m.Bytes == extra.Size);
                if (from is not null)
                {
                    throw new BundleException(BundleError.FileRenamed, $"entry {from.Path} was renamed to {extra.Name}");
                }
            }
            if (missing.Count > 0)
            {
                throw new BundleException(BundleError.FileMissing, $"{missing[0].Path} is missing" + (missing.Count > 1 ? $" (and {missing.Count - 1} more)" : ""));
            }
            if (_seen.FirstOrDefault(s => !s.Listed) is { } added)
            {
                throw new BundleException(BundleError.FileAdded, $"entry {added.Name} was added: it is not in the index");
            }
            foreach (var s in _seen)
            {
                var e = index.Entries.First(x => x.Path == s.Name);
                if (s.Sha256 != e.Sha256 || s.Size != e.Bytes)
                {
                    throw new BundleException(BundleError.FileChanged, $"{s.Name} changed: " + (s.Size != e.Bytes
                        ? $"{s.Size} bytes, the manifest says {e.Bytes}"
                        : $"SHA-256 {s.Sha256} differs from the manifest's {e.Sha256}"));
                }
            }
            if (!_seen.Select(s => s.Name).SequenceEqual(index.Entries.Select(e => e.Path)))
            {
                throw new BundleException(BundleError.Malformed, "entries are not in index order");
            }
        }

        private sealed record Header(string Name, long Size, long MTime, long Offset);

        private Header? NextHeader()
        {
            var offset = _pos;
            ReadExact(_block, "a tar header");
            var h = Tar.Parse(_block, offset);
            if (h is null)
            {
                _pos -= Tar.Block; // let EndOfArchive see it
                fs.Position = _pos;
                return null;
            }
            if (Tar.Refusal(h.Type) is { } what)
            {
                throw new BundleException(BundleError.Unsafe, $"entry {BundleIndex.Quote(h.Name)} is {what}: refused");
            }
            if (Tar.UnsafePath(h.Name) is { } why)
            {
                throw new BundleException(BundleError.Unsafe, $"entry {BundleIndex.Quote(h.Name)} {why}: refused");
            }
            if (!_names.Add(h.Name))
            {
                throw new BundleException(BundleError.Unsafe, $"entry {BundleIndex.Quote(h.Name)} appears twice: refused");
            }
            return new Header(h.Name, h.Size, h.MTime, offset);
        }

        /// <summary>Before reading an entry's data: it must fit in what is left of the file.</summary>
        private void CheckFits(Header h)
        {
            if (h.Size > _length - _pos)
            {
                throw new BundleException(BundleError.Truncated, $"truncated: entry {h.Name} declares {h.Size} bytes but the file ends {_length - _pos} bytes later");
            }
        }

        private void CheckCanonical(Header h, long mtime, long offset)
        {
            byte[] canonical;
            try
            {
                canonical = Tar.Header(h.Name, h.Size, mtime);
            }
            catch (ArgumentException)
            {
                throw new BundleException(BundleError.Malformed, $"entry {h.Name}: header at offset {offset} cannot be a bundle header");
            }
            if (!canonical.AsSpan().SequenceEqual(_block))
            {
                throw new BundleException(BundleError.Malformed, $"entry {h.Name}: tar header at offset {offset} is not the canonical bundle header (altered metadata)");
            }
        }

        private void EndOfArchive()
        {
            ReadExact(_block, "the end-of-archive marker");
            if (_block.AsSpan().ContainsAnyExcept((byte)0))
            {
                throw new BundleException(BundleError.Malformed, $"end-of-archive marker at offset {_pos - Tar.Block} is not zero");
            }
            ReadExact(_block, "the end-of-archive marker");
            if (_block.AsSpan().ContainsAnyExcept((byte)0))
            {
                throw new BundleException(BundleError.Malformed, $"end-of-archive marker at offset {_pos - Tar.Block} is not zero");
            }
            if (_length != _pos)
            {
                throw new BundleException(BundleError.Malformed, $"{_length - _pos} unexpected byte(s) after the end of the archive (appended data)");
            }
        }

        private byte[] ReadSmall(Header h, long max)
        {
            if (h.Size > max)
            {
                throw new BundleException(BundleError.SizeExceeded, $"entry {h.Name} declares {h.Size} bytes, more than the {max} allowed");
            }
            CheckFits(h);
            var data = new byte[h.Size];
            ReadExact(data, h.Name);
            Padding(h);
            return data;
        }

        private string HashData(Header h, string? extractName)
        {
            CheckFits(h);
            using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            using var output = extractName is null ? null : CreateOutput(extractName);
            var buf = new byte[1 << 16];
            var left = h.Size;
            while (left > 0)
            {
                var n = (int)Math.Min(buf.Length, left);
                ReadExact(buf.AsSpan(0, n), h.Name);
                sha.AppendData(buf, 0, n);
                output?.Write(buf, 0, n);
                left -= n;
            }
            Padding(h);
            return BundleIndex.Hex(sha.GetHashAndReset());
        }

        private void Write(string name, byte[] bytes)
        {
            if (extractTo is null)
            {
                return;
            }
            using var o = CreateOutput(name);
            o.Write(bytes);
        }

        /// <summary>Creates a new file under the private folder; the path was checked and must stay inside it.</summary>
        private FileStream CreateOutput(string name)
        {
            lock (ExtractionFolders.Gate)
            {
                return CreateOutputLocked(name);
            }
        }

        private FileStream CreateOutputLocked(string name)
        {
            if (ExtractionFolders.Closing)
            {
                throw new OperationCanceledException("interrupted");
            }
            var root = Path.GetFullPath(extractTo!) + Path.DirectorySeparatorChar;
            var full = Path.GetFullPath(Path.Combine(root, name));
            if (!full.StartsWith(root, StringComparison.Ordinal) || Tar.UnsafePath(name) is not null)
            {
                throw new BundleException(BundleError.Unsafe, $"entry {name} would land outside the extraction folder: refused");
            }
            var dir = Path.GetDirectoryName(full)!;
            if (OperatingSystem.IsWindows())
            {
                System.IO.Directory.CreateDirectory(dir);
            }
            else
            {
                System.IO.Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            }
            var opts = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.None };
            if (!OperatingSystem.IsWindows())
            {
                opts.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            }
            return new FileStream(full, opts);
        }

        private void Padding(Header h)
        {
            var pad = Tar.Padding(h.Size);
            if (pad == 0)
            {
                return;
            }
            var p = _block.AsSpan(0, pad);
            ReadExact(p, h.Name + "'s padding");
            if (p.ContainsAnyExcept((byte)0))
            {
                throw new BundleException(BundleError.Malformed, $"padding after {h.Name} at offset {_pos - pad} is not zero");
            }
        }

        private void ReadExact(Span<byte> buf, string what)
        {
            var n = fs.ReadAtLeast(buf, buf.Length, throwOnEndOfStream: false);
            _pos += n;
            if (n < buf.Length)
            {
                throw new BundleException(BundleError.Truncated, $"truncated: the file ends at offset {_pos} inside {what}");
            }
        }

        private static string Printable(byte[] b) =>
            new string(Encoding.ASCII.GetString(b).Select(c => c is >= ' ' and < (char)127 ? c : '?').ToArray()).Trim('?');
    }
}
