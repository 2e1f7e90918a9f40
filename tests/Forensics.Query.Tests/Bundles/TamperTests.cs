using System.Text;
using Forensics.Query.Bundles;

namespace Forensics.Query.Tests.Bundles;

/// <summary>
/// The tamper matrix: single-byte changes at sampled offsets covering every region of a signed
/// bundle (each header's fields, each entry's first, middle and last byte, padding, end-of-archive
/// marker), truncations, an appended byte, renamed, added and removed entries, and edited custody
/// entries. Every mutation is checked to really change the file, and verify must refuse each.
/// </summary>
[Collection("bundles")]
public sealed class TamperTests : IDisposable
{
    private static readonly int[] HeaderOffsets = [0, 1, 50, 99, 100, 104, 107, 108, 116, 124, 130, 135, 136, 140, 147, 148, 152, 154, 155, 156, 157, 200, 257, 262, 263, 264, 265, 297, 329, 336, 337, 345, 400, 499, 500, 511];
    private static readonly byte[] Deltas = [0x01, 0x80, 0xFF];

    private readonly TestRecording _rec = TestRecording.Standard();
    private readonly Scratch _s = new();
    private readonly string _file;
    private readonly string _allowed;
    private readonly byte[] _original;

    public TamperTests()
    {
        var key = _s.SshKey("signer");
        _allowed = _s.AllowedSigners("alice@example", key);
        _file = _s.PathOf("signed.fxb");
        BundleWriter.Create(_rec.Dir, _file, new BundleOptions { SignKey = key });
        BundleWriter.AppendNote(_file, "second custody entry", key);
        _original = File.ReadAllBytes(_file);
        BundleReader.Verify(_file, new VerifyOptions(_allowed)); // the untampered bundle passes
    }

    [Fact]
    public void Verify_EverySampledSingleByteChange_IsDetected()
    {
        var entries = RawTar.Split(_original);
        Assert.Contains(entries, e => e.Name == "index.sig");
        var offsets = new SortedSet<long>();
        foreach (var e in entries)
        {
            foreach (var o in HeaderOffsets)
            {
                offsets.Add(e.HeaderOffset + o);
            }
            var n = e.Data.Length;
            foreach (var o in new long[] { 0, 1, n / 3, n / 2, 2 * n / 3, n - 2, n - 1 }.Where(o => o >= 0 && o < n))
            {
                offsets.Add(e.DataOffset + o);
            }
            var pad = (512 - n % 512) % 512;
            if (pad > 0)
            {
                offsets.Add(e.DataOffset + n);
                offsets.Add(e.DataOffset + n + pad - 1);
            }
        }
        var end = entries[^1].DataOffset + entries[^1].Data.Length + (512 - entries[^1].Data.Length % 512) % 512;
        foreach (var o in new long[] { end, end + 1, end + 511, end + 512, end + 1000, end + 1023 })
        {
            offsets.Add(o);
        }
        Assert.Equal(_original.Length, end + 1024);

        var undetected = new List<string>();
        var classes = new HashSet<BundleError>();
        foreach (var offset in offsets)
        {
            foreach (var delta in Deltas)
            {
                var mutated = (byte[])_original.Clone();
                mutated[offset] ^= delta;
                Assert.NotEqual(_original[offset], mutated[offset]);
                Assert.False(mutated.AsSpan().SequenceEqual(_original));
                File.WriteAllBytes(_file, mutated);
                try
                {
                    BundleReader.Verify(_file, new VerifyOptions(_allowed));
                    undetected.Add($"offset {offset} ^ 0x{delta:x2} ({Region(entries, offset)})");
                }
                catch (BundleException e)
                {
                    classes.Add(e.Error);
                    Assert.DoesNotContain('\n', e.Message);
                }
            }
        }
        Assert.True(undetected.Count == 0, "undetected: " + string.Join("; ", undetected));
        Assert.True(offsets.Count > 300, $"only {offsets.Count} offsets sampled");
        // The failures are classified, not lumped together.
        Assert.Superset(new HashSet<BundleError> { BundleError.Malformed, BundleError.RootMismatch, BundleError.FileChanged, BundleError.SignatureBad }, classes);
    }

    [Fact]
    public void Verify_EveryByteOfASmallSignedBundle_FlippedOneBit_IsDetected()
    {
        // Exhaustive over a one-table bundle: no byte of the file is free to change.
        using var rec = new TestRecording().Segment("loss", TestRecording.Row(("kind", "drop"), ("emitted", 1))).Seal();
        var key = _s.SshKey("small");
        var file = _s.PathOf("small.fxb");
        BundleWriter.Create(rec.Dir, file, new BundleOptions { SignKey = key });
        var original = File.ReadAllBytes(file);
        var undetected = new List<int>();
        for (var i = 0; i < original.Length; i++)
        {
            var mutated = (byte[])original.Clone();
            mutated[i] ^= 0x01;
            Assert.NotEqual(original[i], mutated[i]);
            File.WriteAllBytes(file, mutated);
            try
            {
                BundleReader.Verify(file);
                undetected.Add(i);
            }
            catch (BundleException e)
            {
                Assert.DoesNotContain('\n', e.Message);
            }
        }
        Assert.True(undetected.Count == 0, $"{undetected.Count} undetected offsets, first {string.Join(", ", undetected.Take(10))}");
        File.WriteAllBytes(file, original);
        BundleReader.Verify(file);
    }

    [Fact]
    public void Verify_Truncated_IsDetectedAsTruncated()
    {
        var entries = RawTar.Split(_original);
        var cuts = new SortedSet<long> { 0, 1, 511, 512, _original.Length - 1, _original.Length - 512, _original.Length - 1024 };
        foreach (var e in entries)
        {
            cuts.Add(e.HeaderOffset + 100);
            cuts.Add(e.DataOffset + e.Data.Length / 2);
        }
        foreach (var len in cuts)
        {
            File.WriteAllBytes(_file, _original.AsSpan(0, (int)len).ToArray());
            Assert.NotEqual(_original.Length, new FileInfo(_file).Length);
            var error = Scratch.Fails(_file, new VerifyOptions(_allowed));
            Assert.True(error is BundleError.Truncated or BundleError.Malformed, $"cut at {len}: {error}");
            if (len > 1024)
            {
                Assert.Equal(BundleError.Truncated, error);
            }
        }
    }

    [Fact]
    public void Verify_AppendedByte_IsDetected()
    {
        foreach (var b in new byte[] { 0, 0x41 })
        {
            File.WriteAllBytes(_file, [.. _original, b]);
            Assert.Equal(_original.Length + 1, new FileInfo(_file).Length);
            var e = Assert.Throws<BundleException>(() => BundleReader.Verify(_file));
            Assert.Equal(BundleError.Malformed, e.Error);
            Assert.Contains("after the end of the archive", e.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Verify_RenamedAddedRemovedEntries_AreNamed()
    {
        var entries = RawTar.Split(_original);
        var mtime = RawTar.MTime(_original);
        var victim = entries.First(e => e.Name.StartsWith("drop/", StringComparison.Ordinal));

        var renamed = RawTar.Join(entries.Select(e => (e == victim ? "drop/node=node-a/seg-000099.parquet" : e.Name, e.Data)), mtime);
        var e1 = Mutated(renamed, BundleError.FileRenamed);
        Assert.Contains("drop/node=node-a/seg-000001.parquet was renamed to drop/node=node-a/seg-000099.parquet", e1.Message, StringComparison.Ordinal);

        var added = RawTar.Join(entries.Select(e => (e.Name, e.Data)).Append(("exec/node=node-a/seg-000777.parquet", "PAR1 extra PAR1"u8.ToArray())), mtime);
        var e2 = Mutated(added, BundleError.FileAdded);
        Assert.Contains("exec/node=node-a/seg-000777.parquet", e2.Message, StringComparison.Ordinal);

        var removed = RawTar.Join(entries.Where(e => e != victim).Select(e => (e.Name, e.Data)), mtime);
        var e3 = Mutated(removed, BundleError.FileMissing);
        Assert.StartsWith(victim.Name + " is missing", e3.Message, StringComparison.Ordinal);

        var reordered = RawTar.Join(entries.Where(e => e != victim).Append(victim).Select(e => (e.Name, e.Data)), mtime);
        Mutated(reordered, BundleError.Malformed);

        var unsigned = RawTar.Join(entries.Where(e => e.Name != "index.sig").Select(e => (e.Name, e.Data)), mtime);
        Mutated(unsigned, BundleError.Unsigned);
    }

    [Fact]
    public void Verify_EditedCustodyEntry_IsDetectedAtEveryLevelOfRepair()
    {
        var entries = RawTar.Split(_original);
        var mtime = RawTar.MTime(_original);
        var custody = entries.Single(e => e.Name == "custody.jsonl");
        var text = Encoding.UTF8.GetString(custody.Data);
        var user = Environment.UserName;
        // Same length, so that the size still matches and only the contents differ.
        var forged = Encoding.UTF8.GetBytes(ReplaceFirst(text, "\"user\":\"" + user, "\"user\":\"" + new string('m', user.Length)));
        Assert.Equal(custody.Data.Length, forged.Length);

        // 1. Just the edit: the custody log no longer matches the index.
        var plain = RawTar.Join(entries.Select(e => (e.Name, e == custody ? forged : e.Data)), mtime);
        var e1 = Mutated(plain, BundleError.FileChanged);
        Assert.StartsWith("custody.jsonl changed", e1.Message, StringComparison.Ordinal);

        // 2. The forger also fixes the index and root: the chain from entry 2 breaks.
        var index = BundleIndex.Parse(entries[0].Data);
        var fixedIndex = index with
        {
            Entries = index.Entries.Select(x => x.Path == "custody.jsonl"
                ? new BundleEntry(x.Path, forged.Length, Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(forged)))
                : x).ToList(),
        };
        var ib = fixedIndex.Serialize();
        var root = Encoding.ASCII.GetBytes(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(ib)) + "\n");
        var repaired = entries.Where(e => e.Name != "index.sig")
            .Select(e => (e.Name, e.Name switch { "index.json" => ib, "index.sha256" => root, "custody.jsonl" => forged, _ => e.Data }));
        var e2 = Mutated(RawTar.Join(repaired, mtime), BundleError.CustodyBroken);
        Assert.Contains("custody entry 2 does not chain to entry 1", e2.Message, StringComparison.Ordinal);

        // 3. The forger also re-chains entry 2: only the signature (or the root quoted in the ticket) catches it.
        var lines = Encoding.UTF8.GetString(forged).TrimEnd('\n').Split('\n');
        var oldPrev = CustodyEntry.ParseLog(custody.Data)[1].Prev;
        var newPrev = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(lines[0])));
        var rechained = Encoding.UTF8.GetBytes(lines[0] + "\n" + lines[1].Replace(oldPrev, newPrev, StringComparison.Ordinal) + "\n");
        Assert.Equal(2, CustodyEntry.ParseLog(rechained).Count);
        var ib3 = (index with
        {
            Entries = index.Entries.Select(x => x.Path == "custody.jsonl"
                ? new BundleEntry(x.Path, rechained.Length, Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(rechained)))
                : x).ToList(),
        }).Serialize();
        var root3 = Encoding.ASCII.GetBytes(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(ib3)) + "\n");
        var full = entries.Select(e => (e.Name, e.Name switch { "index.json" => ib3, "index.sha256" => root3, "custody.jsonl" => rechained, _ => e.Data }));
        Mutated(RawTar.Join(full, mtime), BundleError.SignatureBad);
        var originalRoot = Encoding.ASCII.GetString(entries[1].Data).Trim();
        var unsignedForgery = RawTar.Join(full.Where(e => e.Name != "index.sig"), mtime);
        File.WriteAllBytes(_file, unsignedForgery);
        Assert.Equal(BundleError.RootMismatch, Scratch.Fails(_file, new VerifyOptions(ExpectedRoot: originalRoot)));
    }

    private BundleException Mutated(byte[] bytes, BundleError expected)
    {
        Assert.False(bytes.AsSpan().SequenceEqual(_original), "the mutation changed nothing");
        File.WriteAllBytes(_file, bytes);
        var e = Assert.Throws<BundleException>(() => BundleReader.Verify(_file, new VerifyOptions(_allowed)));
        Assert.True(expected == e.Error, $"expected {expected}, got {e.Error}: {e.Message}");
        return e;
    }

    private static string ReplaceFirst(string s, string what, string with)
    {
        var i = s.IndexOf(what, StringComparison.Ordinal);
        Assert.True(i >= 0, $"{what} not in {s}");
        return s[..i] + with + s[(i + what.Length)..];
    }

    private static string Region(List<RawEntry> entries, long offset)
    {
        var e = entries.LastOrDefault(x => x.HeaderOffset <= offset);
        if (e is null)
        {
            return "?";
        }
        return offset < e.DataOffset ? $"{e.Name} header byte {offset - e.HeaderOffset}"
            : offset < e.DataOffset + e.Data.Length ? $"{e.Name} data byte {offset - e.DataOffset}"
            : $"after {e.Name}";
    }

    public void Dispose()
    {
        _rec.Dispose();
        _s.Dispose();
    }
}
