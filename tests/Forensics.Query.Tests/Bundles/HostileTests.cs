using System.Security.Cryptography;
using System.Text;
using Forensics.Query.Bundles;

namespace Forensics.Query.Tests.Bundles;

/// <summary>
/// Crafted hostile bundles: each is refused with a one-line error of the right class, and nothing
/// is left on disk: not at the target the entry aimed for, not in the extraction parent.
/// </summary>
[Collection("bundles")]
public sealed class HostileTests : IDisposable
{
    private readonly TestRecording _rec = TestRecording.Standard();
    private readonly Scratch _s = new();
    private readonly string _parent;
    private readonly List<RawEntry> _entries;
    private readonly long _mtime;
    private readonly string _victim = "/tmp/fx-pwned-" + Guid.NewGuid().ToString("N")[..8];

    public HostileTests()
    {
        var good = _s.PathOf("good.fxb");
        BundleWriter.Create(_rec.Dir, good, new BundleOptions());
        var bytes = File.ReadAllBytes(good);
        _entries = RawTar.Split(bytes);
        _mtime = RawTar.MTime(bytes);
        _parent = Directory.CreateDirectory(_s.PathOf("extract-parent")).FullName;
    }

    public static TheoryData<string, char, string> LinkAndSpecialEntries => new()
    {
        { "symlink", '2', "a symbolic link" },
        { "hardlink", '1', "a hard link" },
        { "chardev", '3', "a character device" },
        { "blockdev", '4', "a block device" },
        { "fifo", '6', "a FIFO" },
        { "directory", '5', "a directory" },
        { "pax", 'x', "a pax extended header" },
    };

    [Theory]
    [MemberData(nameof(LinkAndSpecialEntries))]
    public void Open_LinkOrSpecialEntry_IsRefused(string what, char type, string expected)
    {
        _ = what;
        // The hostile entry carries the name of a listed Parquet file, where extraction would happen.
        var target = _entries[^1].Name;
        var header = RawTar.Header(target, type, 0, type is '1' or '2' ? _victim : "");
        var e = Refused(Insert(_entries.Count - 1, header, []), BundleError.Unsafe);
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("../../../../../../fx-pwned", "climbs out")]
    [InlineData("exec/../../fx-pwned", "climbs out")]
    [InlineData("/tmp/fx-pwned-abs", "absolute path")]
    [InlineData("exec//x.parquet", "empty or '.'")]
    [InlineData("./manifest.json", "empty or '.'")]
    public void Open_PathTraversalEntry_IsRefusedAndNothingEscapes(string name, string expected)
    {
        name = name.Replace("fx-pwned", Path.GetFileName(_victim), StringComparison.Ordinal);
        var full = name.StartsWith('/') ? name : _victim;
        var header = RawTar.Header(name, '0', 5);
        var e = Refused(Insert(4, header, "owned"u8.ToArray()), BundleError.Unsafe);
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(full));
    }

    [Fact]
    public void Open_IndexListingTraversalPath_IsRefused()
    {
        var index = BundleIndex.Parse(_entries[0].Data);
        var evil = index with { Entries = [.. index.Entries, new BundleEntry("../" + Path.GetFileName(_victim), 5, new string('0', 64))] };
        var e = Refused(Rebuild(("index.json", evil.Serialize())), BundleError.Unsafe);
        Assert.Contains("climbs out", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_FileInIndexButNotInManifest_IsRefused()
    {
        // A forger adds a file to the archive and to the index (hashes consistent), but not to the manifest.
        var extra = "exec/node=node-a/seg-000900.parquet";
        var payload = "PAR1 not really PAR1"u8.ToArray();
        var index = BundleIndex.Parse(_entries[0].Data);
        var ib = (index with { Entries = [.. index.Entries, new BundleEntry(extra, payload.Length, Convert.ToHexStringLower(SHA256.HashData(payload)))] }).Serialize();
        var root = Encoding.ASCII.GetBytes(Convert.ToHexStringLower(SHA256.HashData(ib)) + "\n");
        var bytes = RawTar.Join(_entries.Select(e => (e.Name, e.Name switch { "index.json" => ib, "index.sha256" => root, _ => e.Data }))
            .Append((extra, payload)), _mtime);
        var e = Refused(bytes, BundleError.ManifestInvalid);
        Assert.Contains($"index.json lists {extra}, which is not in the manifest", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_DuplicateEntry_IsRefused()
    {
        var dup = _entries[^1];
        var bytes = RawTar.Join(_entries.Select(e => (e.Name, e.Data)).Append((dup.Name, dup.Data)), _mtime);
        var e = Refused(bytes, BundleError.Unsafe);
        Assert.Contains("appears twice", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_HugeDeclaredSize_IsRefusedBeforeReading()
    {
        var target = _entries[^1];
        // A canonical header declaring 8 GiB for a file the manifest says is small.
        var header = Tar.Header(target.Name, Tar.MaxSize, _mtime);
        var bytes = Concat(_entries.Take(_entries.Count - 1), header, target.Data);
        var e = Refused(bytes, BundleError.SizeExceeded);
        Assert.Contains($"declares {Tar.MaxSize} bytes", e.Message, StringComparison.Ordinal);

        // An unlisted entry declaring more than the file holds.
        var unlisted = Tar.Header("exec/node=node-a/seg-009999.parquet", Tar.MaxSize, _mtime);
        Refused(Concat(_entries, unlisted, "x"u8.ToArray()), BundleError.Truncated);

        // A size beyond what ustar can say at all (12 octal digits of 7s).
        var raw = RawTar.Header(target.Name, '0', 0xF_FFFF_FFFFL);
        Refused(Concat(_entries.Take(_entries.Count - 1), raw, target.Data), BundleError.Malformed);
    }

    [Theory]
    [InlineData("{\"format\": \"forensics-recording\"")]
    [InlineData("[]")]
    [InlineData("{\"format\": \"forensics-recording\", \"manifest_version\": 1, \"recording_id\": \"x\", \"tables\": {\"exec\": {\"files\": [{\"path\": \"../../etc/passwd\", \"bytes\": 1, \"sha256\": \"0000000000000000000000000000000000000000000000000000000000000000\"}]}}}")]
    public void Open_MalformedManifest_IsRefused(string manifest)
    {
        var e = Refused(Rebuild(("manifest.json", Encoding.UTF8.GetBytes(manifest))), BundleError.ManifestInvalid);
        Assert.StartsWith("manifest.json is malformed", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_ParquetNotMatchingItsHash_IsRefused()
    {
        // Consistent index and manifest, but one Parquet file's bytes are different (same size).
        var target = _entries.First(x => x.Name.StartsWith("connect/", StringComparison.Ordinal));
        var other = (byte[])target.Data.Clone();
        other[other.Length / 2] ^= 0x5a;
        var bytes = RawTar.Join(_entries.Select(x => (x.Name, x == target ? other : x.Data)), _mtime);
        var e = Refused(bytes, BundleError.FileChanged);
        Assert.StartsWith(target.Name + " changed", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_NotABundle_IsRefused()
    {
        Refused("just some text\n"u8.ToArray(), BundleError.Truncated);
        Refused(new byte[4096], BundleError.Malformed);
        var tarOfOther = RawTar.Join([("notes.txt", "hello"u8.ToArray())], _mtime);
        var e = Refused(tarOfOther, BundleError.Malformed);
        Assert.Contains("not a forensics bundle", e.Message, StringComparison.Ordinal);
    }

    private BundleException Refused(byte[] bundle, BundleError expected)
    {
        var path = _s.PathOf("hostile-" + Guid.NewGuid().ToString("N")[..8] + ".fxb");
        File.WriteAllBytes(path, bundle);
        var e = Assert.Throws<BundleException>(() => BundleReader.Open(path, parent: _parent));
        Assert.True(expected == e.Error, $"expected {expected}, got {e.Error}: {e.Message}");
        Assert.DoesNotContain('\n', e.Message);
        Assert.Empty(Directory.EnumerateFileSystemEntries(_parent));
        Assert.False(File.Exists(_victim));
        Assert.False(File.Exists("/" + Path.GetFileName(_victim)));
        Assert.False(File.Exists(Path.Combine(Path.GetDirectoryName(_parent)!, Path.GetFileName(_victim))));
        return e;
    }

    private byte[] Insert(int at, byte[] header, byte[] data)
    {
        var before = _entries.Take(at).ToList();
        var after = _entries.Skip(at).ToList();
        var ms = new MemoryStream();
        ms.Write(RawTar.Join(before.Select(e => (e.Name, e.Data)), _mtime).AsSpan()[..^1024]);
        ms.Write(header);
        ms.Write(data);
        ms.Write(new byte[(512 - data.Length % 512) % 512]);
        ms.Write(RawTar.Join(after.Select(e => (e.Name, e.Data)), _mtime));
        return ms.ToArray();
    }

    private byte[] Concat(IEnumerable<RawEntry> entries, byte[] header, byte[] data)
    {
        var ms = new MemoryStream();
        ms.Write(RawTar.Join(entries.Select(e => (e.Name, e.Data)), _mtime).AsSpan()[..^1024]);
        ms.Write(header);
        ms.Write(data);
        ms.Write(new byte[(512 - data.Length % 512) % 512]);
        ms.Write(new byte[1024]);
        return ms.ToArray();
    }

    /// <summary>Replaces one entry and recomputes the index hashes and root, as a forger would.</summary>
    private byte[] Rebuild((string Name, byte[] Data) replacement)
    {
        var data = _entries.ToDictionary(e => e.Name, e => e.Data);
        data[replacement.Name] = replacement.Data;
        byte[] indexBytes;
        if (replacement.Name == "index.json")
        {
            indexBytes = replacement.Data;
        }
        else
        {
            var index = BundleIndex.Parse(data["index.json"]);
            indexBytes = (index with
            {
                Entries = index.Entries.Select(x => new BundleEntry(x.Path, data[x.Path].Length, Convert.ToHexStringLower(SHA256.HashData(data[x.Path])))).ToList(),
            }).Serialize();
        }
        data["index.json"] = indexBytes;
        data["index.sha256"] = Encoding.ASCII.GetBytes(Convert.ToHexStringLower(SHA256.HashData(indexBytes)) + "\n");
        return RawTar.Join(_entries.Select(e => (e.Name, data[e.Name])), _mtime);
    }

    public void Dispose()
    {
        _rec.Dispose();
        _s.Dispose();
    }
}
