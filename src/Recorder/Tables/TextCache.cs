namespace Forensics.Recorder.Tables;

/// <summary>Makes the text of some event bytes.</summary>
public delegate string TextDecoder(ReadOnlySpan<byte> bytes);

/// <summary>
/// Strings decoded from event bytes, cached by those bytes: exec events repeat their binary, working
/// directory, comm and often their arguments, and a cached string costs a hash and a compare instead
/// of a UTF-8 decode and an allocation (bench/RESULTS.md, exec ingest). Direct-mapped and bounded: a
/// slot holds the last text that hashed to it. Used by the decode thread only.
/// </summary>
public sealed class TextCache
{
    private readonly byte[]?[] keys;
    private readonly string?[] values;
    private readonly int mask;

    public TextCache(int slots = 4096)
    {
        if (slots <= 0 || (slots & (slots - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(slots), "a power of two");
        keys = new byte[]?[slots];
        values = new string?[slots];
        mask = slots - 1;
    }

    /// <summary>The text for these bytes: from the cache when the same bytes were seen (under the same
    /// <paramref name="kind"/>), else made by <paramref name="decode"/> and cached.</summary>
    public string Get(ReadOnlySpan<byte> bytes, byte kind, TextDecoder decode)
    {
        ArgumentNullException.ThrowIfNull(decode);
        var h = new HashCode();
        h.Add(kind);
        h.AddBytes(bytes);
        int slot = h.ToHashCode() & mask;
        var key = keys[slot];
        if (key is not null && key.Length == bytes.Length + 1 && key[0] == kind && bytes.SequenceEqual(key.AsSpan(1)))
            return values[slot]!;
        var fresh = new byte[bytes.Length + 1];
        fresh[0] = kind;
        bytes.CopyTo(fresh.AsSpan(1));
        var text = decode(bytes);
        keys[slot] = fresh;
        values[slot] = text;
        return text;
    }
}
