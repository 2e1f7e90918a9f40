using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Forensics.Format;

namespace Forensics.Query.Bundles;

/// <summary>One file of a bundle as the index lists it.</summary>
public sealed record BundleEntry(string Path, long Bytes, string Sha256);

/// <summary>
/// index.json, the first entry of a bundle: every other entry (manifest, custody log, Parquet
/// files) with its size and SHA-256, in archive order. The root hash of a bundle is the SHA-256
/// of index.json's exact bytes; index.sha256 stores it and index.sig signs those bytes.
/// </summary>
public sealed partial record BundleIndex(DateTimeOffset CreatedAt, string RecordingId, IReadOnlyList<BundleEntry> Entries)
{
    public const string Format = "forensics-bundle";
    public const int Version = 1;
    public const string IndexName = "index.json";
    public const string RootName = "index.sha256";
    public const string SignatureName = "index.sig";
    public const string ManifestName = "manifest.json";
    public const string CustodyName = "custody.jsonl";
    public const long MaxIndexBytes = 16 << 20;
    public const long MaxManifestBytes = 64 << 20;
    public const long MaxCustodyBytes = 16 << 20;
    public const long MaxSignatureBytes = 64 << 10;
    public const int MaxEntries = 1_000_000;

    public byte[] Serialize()
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("format", Format);
            w.WriteNumber("bundle_version", Version);
            w.WriteString("created_at", CreatedAt.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture));
            w.WriteString("recording_id", RecordingId);
            w.WriteString("hash", "sha256");
            w.WriteStartArray("entries");
            foreach (var e in Entries)
            {
                w.WriteStartObject();
                w.WriteString("path", e.Path);
                w.WriteNumber("bytes", e.Bytes);
                w.WriteString("sha256", e.Sha256);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        ms.WriteByte((byte)'\n');
        return ms.ToArray();
    }

    /// <summary>Parses index.json strictly: known fields only, safe distinct paths, manifest and custody log first.</summary>
    public static BundleIndex Parse(byte[] bytes)
    {
        try
        {
            using var doc = JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 8 });
            var root = doc.RootElement;
            Only(root, "format", "bundle_version", "created_at", "recording_id", "hash", "entries");
            if (Str(root, "format") != Format || Int(root, "bundle_version") != Version || Str(root, "hash") != "sha256")
            {
                throw new FormatException("not a version 1 forensics bundle index");
            }
            var created = DateTimeOffset.ParseExact(Str(root, "created_at"), "yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal);
            var entries = new List<BundleEntry>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var e in Prop(root, "entries", JsonValueKind.Array).EnumerateArray())
            {
                Only(e, "path", "bytes", "sha256");
                var path = Str(e, "path");
                var size = Int(e, "bytes");
                var sha = Str(e, "sha256");
                if (Tar.UnsafePath(path) is { } why)
                {
                    throw new BundleException(BundleError.Unsafe, $"index lists {Quote(path)}, which {why}");
                }
                if (size < 0 || size > Tar.MaxSize || !IsSha256(sha) || !seen.Add(path) || entries.Count >= MaxEntries)
                {
                    throw new FormatException($"bad or duplicate entry {Quote(path)}");
                }
                entries.Add(new BundleEntry(path, size, sha));
            }
            if (entries.Count < 2 || entries[0].Path != ManifestName || entries[1].Path != CustodyName
                || entries.Skip(2).Any(e => !IsDataPath(e.Path)))
            {
                throw new FormatException("entries must be manifest.json, custody.jsonl, then Parquet files");
            }
            return new BundleIndex(created, Str(root, "recording_id"), entries);
        }
        catch (Exception e) when (e is JsonException or FormatException or InvalidOperationException or KeyNotFoundException)
        {
            throw new BundleException(BundleError.ManifestInvalid, "index.json is malformed: " + e.Message);
        }
    }

    /// <summary>A Parquet file path of a recording: TABLE/.../NAME.parquet with plain segments.</summary>
    public static bool IsDataPath(string path) =>
        Tar.UnsafePath(path) is null && DataPathRegex().IsMatch(path) && path.Length <= 255;

    public static bool IsSha256(string s) => s.Length == 64 && s.All(c => c is (>= '0' and <= '9') or (>= 'a' and <= 'f'));

    public static string Hex(byte[] hash) => Convert.ToHexStringLower(hash);

    public static string Quote(string s) => JsonSerializer.Serialize(s);

    internal static void Only(JsonElement e, params string[] names)
    {
        if (e.ValueKind != JsonValueKind.Object)
        {
            throw new FormatException("expected an object");
        }
        foreach (var p in e.EnumerateObject())
        {
            if (!names.Contains(p.Name))
            {
                throw new FormatException($"unexpected field {Quote(p.Name)}");
            }
        }
    }

    internal static JsonElement Prop(JsonElement e, string name, JsonValueKind kind)
    {
        if (!e.TryGetProperty(name, out var v) || v.ValueKind != kind)
        {
            throw new FormatException($"field {name} missing or not {kind}");
        }
        return v;
    }

    internal static string Str(JsonElement e, string name) => Prop(e, name, JsonValueKind.String).GetString()!;

    internal static long Int(JsonElement e, string name) => Prop(e, name, JsonValueKind.Number).GetInt64();

    [GeneratedRegex(@"^[a-z][a-z0-9_]{0,63}(/[A-Za-z0-9][A-Za-z0-9._=+@-]{0,127}){1,6}\.parquet$")]
    private static partial Regex DataPathRegex();
}

/// <summary>
/// One line of custody.jsonl. Each entry names who did what, when, where; <c>prev</c> is the
/// SHA-256 of the previous line's bytes (64 zeros for the first), so editing or removing an
/// earlier entry breaks the chain.
/// </summary>
public sealed record CustodyEntry(
    int Seq, string Action, DateTimeOffset At, string User, string Host,
    string? RecordingId, string? RecordingPath, string? ManifestSha256, string? PreviousRoot, string? Note, string Prev)
{
    public static readonly string Genesis = new('0', 64);

    public byte[] Serialize()
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            w.WriteNumber("seq", Seq);
            w.WriteString("action", Action);
            w.WriteString("at", At.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture));
            w.WriteString("user", User);
            w.WriteString("host", Host);
            Opt(w, "recording_id", RecordingId);
            Opt(w, "recording_path", RecordingPath);
            Opt(w, "manifest_sha256", ManifestSha256);
            Opt(w, "previous_root", PreviousRoot);
            Opt(w, "note", Note);
            w.WriteString("prev", Prev);
            w.WriteEndObject();
        }
        return ms.ToArray();
    }

    /// <summary>Who is running this: the user name and uid, as the OS reports them.</summary>
    public static string CurrentUser()
    {
        var name = Environment.UserName;
        try
        {
            var uid = File.ReadAllLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("Uid:", StringComparison.Ordinal))?
                .Split('\t', StringSplitOptions.RemoveEmptyEntries).ElementAtOrDefault(1);
            return uid is null ? name : $"{name} (uid {uid})";
        }
        catch (IOException)
        {
            return name;
        }
    }

    private static void Opt(Utf8JsonWriter w, string name, string? v)
    {
        if (v is not null)
        {
            w.WriteString(name, v);
        }
    }

    public static byte[] Join(IEnumerable<CustodyEntry> entries)
    {
        var ms = new MemoryStream();
        foreach (var e in entries)
        {
            ms.Write(e.Serialize());
            ms.WriteByte((byte)'\n');
        }
        return ms.ToArray();
    }

    /// <summary>Parses custody.jsonl and checks its chain; throws <see cref="BundleError.CustodyBroken"/>.</summary>
    public static IReadOnlyList<CustodyEntry> ParseLog(byte[] bytes)
    {
        var list = new List<CustodyEntry>();
        if (bytes.Length == 0 || bytes[^1] != (byte)'\n')
        {
            throw new BundleException(BundleError.CustodyBroken, "custody log is empty or does not end with a newline");
        }
        var prev = Genesis;
        var start = 0;
        while (start < bytes.Length)
        {
            var end = Array.IndexOf(bytes, (byte)'\n', start);
            var line = bytes.AsSpan(start, end - start);
            var n = list.Count + 1;
            CustodyEntry e;
            try
            {
                using var doc = JsonDocument.Parse(line.ToArray());
                var r = doc.RootElement;
                BundleIndex.Only(r, "seq", "action", "at", "user", "host", "recording_id", "recording_path", "manifest_sha256", "previous_root", "note", "prev");
                e = new CustodyEntry(
                    (int)BundleIndex.Int(r, "seq"), BundleIndex.Str(r, "action"),
                    DateTimeOffset.Parse(BundleIndex.Str(r, "at"), CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal),
                    BundleIndex.Str(r, "user"), BundleIndex.Str(r, "host"),
                    OptStr(r, "recording_id"), OptStr(r, "recording_path"), OptStr(r, "manifest_sha256"),
                    OptStr(r, "previous_root"), OptStr(r, "note"), BundleIndex.Str(r, "prev"));
            }
            catch (Exception ex) when (ex is JsonException or FormatException or InvalidOperationException)
            {
                throw new BundleException(BundleError.CustodyBroken, $"custody entry {n} is malformed: {ex.Message}");
            }
            if (e.Seq != n)
            {
                throw new BundleException(BundleError.CustodyBroken, $"custody entry {n} says seq {e.Seq}: an entry was removed or reordered");
            }
            if (e.Prev != prev)
            {
                throw new BundleException(BundleError.CustodyBroken, $"custody entry {n} does not chain to entry {n - 1} (prev {e.Prev[..Math.Min(12, e.Prev.Length)]}..., expected {prev[..12]}...): an earlier entry was edited");
            }
            if (n == 1 && e.Action != "bundle" || n > 1 && e.Action != "note")
            {
                throw new BundleException(BundleError.CustodyBroken, $"custody entry {n} has unexpected action {BundleIndex.Quote(e.Action)}");
            }
            list.Add(e);
            prev = BundleIndex.Hex(SHA256.HashData(line));
            start = end + 1;
        }
        return list;
    }

    private static string? OptStr(JsonElement r, string name) =>
        r.TryGetProperty(name, out var v) ? v.ValueKind == JsonValueKind.String ? v.GetString() : throw new FormatException($"{name} is not a string") : null;

    /// <summary>The hash the next entry chains to.</summary>
    public static string HashOfLast(byte[] log)
    {
        var trimmed = log.AsSpan(0, log.Length - 1);
        var start = trimmed.LastIndexOf((byte)'\n') + 1;
        return BundleIndex.Hex(SHA256.HashData(trimmed[start..]));
    }
}

/// <summary>
/// A recording manifest as bundling handles it: checked by the one manifest model (<see cref="Manifest.Parse"/>:
/// format, version, recording id), and kept as a JSON tree so that redaction rewrites file entries and
/// adds its record without dropping a field.
/// </summary>
public static class RecordingManifest
{
    /// <summary>Parses manifest JSON; throws <see cref="BundleError.ManifestInvalid"/> when it is not one.</summary>
    public static JsonObject Parse(byte[] bytes, string where)
    {
        JsonObject m;
        try
        {
            Manifest.Parse(bytes, where);
            m = JsonNode.Parse(bytes, documentOptions: new JsonDocumentOptions { MaxDepth = 64 }) as JsonObject
                ?? throw new FormatException("not a JSON object");
        }
        catch (ManifestException e)
        {
            var why = e.Message.StartsWith(where + ": ", StringComparison.Ordinal) ? e.Message[(where.Length + 2)..] : e.Message;
            throw new BundleException(BundleError.ManifestInvalid, $"{where} is malformed: {why}");
        }
        catch (Exception e) when (e is JsonException or FormatException)
        {
            throw new BundleException(BundleError.ManifestInvalid, $"{where} is malformed: {e.Message}");
        }
        try
        {
            _ = Files(m).Count();
        }
        catch (Exception e) when (e is FormatException or InvalidOperationException or ArgumentException)
        {
            throw new BundleException(BundleError.ManifestInvalid, $"{where} is malformed: {e.Message}");
        }
        return m;
    }

    /// <summary>Every file the manifest lists: table, file object, path, bytes, sha256.</summary>
    public static IEnumerable<(string Table, JsonObject File, string Path, long Bytes, string Sha256)> Files(JsonObject m)
    {
        var tables = m["tables"] as JsonObject ?? throw new FormatException("tables missing");
        foreach (var (table, node) in tables)
        {
            if (!Regex.IsMatch(table, "^[a-z][a-z0-9_]{0,63}$"))
            {
                throw new FormatException($"bad table name {BundleIndex.Quote(table)}");
            }
            var files = (node as JsonObject)?["files"] as JsonArray ?? throw new FormatException($"table {table}: files missing");
            foreach (var f in files)
            {
                var fo = f as JsonObject ?? throw new FormatException($"table {table}: file entry is not an object");
                var path = (string?)fo["path"] ?? throw new FormatException($"table {table}: file without path");
                var bytes = (long?)fo["bytes"] ?? throw new FormatException($"{path}: bytes missing");
                var sha = (string?)fo["sha256"] ?? throw new FormatException($"{path}: sha256 missing");
                if (!BundleIndex.IsDataPath(path))
                {
                    throw new FormatException($"table {table} lists unsafe path {BundleIndex.Quote(path)}");
                }
                if (!BundleIndex.IsSha256(sha) || bytes < 0)
                {
                    throw new FormatException($"{path}: bad sha256 or size");
                }
                yield return (table, fo, path, bytes, sha);
            }
        }
    }

    public static byte[] Serialize(JsonObject m) =>
        Encoding.UTF8.GetBytes(m.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
}
