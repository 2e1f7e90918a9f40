using System.Globalization;
using System.Text;

namespace Forensics.Query.Bundles;

/// <summary>One parsed tar header, as found (nothing trusted yet).</summary>
internal sealed record TarHeader(string Name, long Size, long MTime, char Type, string LinkName);

/// <summary>
/// The ustar subset a bundle uses, written canonically and parsed defensively.
/// Every header of a bundle is exactly <see cref="Header"/>(name, size, mtime): mode 0644,
/// uid/gid 0, empty owner names, type '0' (regular file). A reader re-encodes what it parsed
/// and compares byte for byte, so no header byte is free to change unnoticed.
/// </summary>
internal static class Tar
{
    public const int Block = 512;
    /// <summary>ustar's 11 octal digits.</summary>
    public const long MaxSize = 0x1_FFFF_FFFFL; // 8 GiB - 1

    public static byte[] Header(string name, long size, long mtime)
    {
        if (size is < 0 or > MaxSize)
        {
            throw new ArgumentOutOfRangeException(nameof(size), $"{name}: {size} bytes do not fit a ustar header");
        }
        var h = new byte[Block];
        var (prefix, rest) = Split(name);
        Put(h, 0, 100, rest);
        Put(h, 100, 8, "0000644");
        Put(h, 108, 8, "0000000");
        Put(h, 116, 8, "0000000");
        Put(h, 124, 12, Oct(size, 11));
        Put(h, 136, 12, Oct(mtime, 11));
        h[156] = (byte)'0';
        Put(h, 257, 6, "ustar");
        h[263] = (byte)'0';
        h[264] = (byte)'0';
        Put(h, 329, 8, "0000000");
        Put(h, 337, 8, "0000000");
        Put(h, 345, 155, prefix);
        var sum = Checksum(h);
        Put(h, 148, 8, Oct(sum, 6));
        h[155] = (byte)' ';
        return h;
    }

    /// <summary>Bytes of zero padding after an entry of this size.</summary>
    public static int Padding(long size) => (int)((Block - (size % Block)) % Block);

    /// <summary>
    /// Parses a header block. Returns null for an all-zero block (end of archive).
    /// Throws on a bad checksum or unparsable fields; does not judge the type or name.
    /// </summary>
    public static TarHeader? Parse(ReadOnlySpan<byte> h, long offset)
    {
        if (!h.ContainsAnyExcept((byte)0))
        {
            return null;
        }
        var stored = Octal(h.Slice(148, 8), offset, "checksum");
        if (stored != Checksum(h))
        {
            throw new BundleException(BundleError.Malformed, $"tar header at offset {offset} is corrupt (checksum)");
        }
        var name = Text(h.Slice(0, 100), offset);
        var prefix = h.Slice(257, 6).SequenceEqual("ustar\0"u8) ? Text(h.Slice(345, 155), offset) : "";
        if (prefix.Length > 0)
        {
            name = prefix + "/" + name;
        }
        var type = (char)h[156];
        var size = Octal(h.Slice(124, 12), offset, "size");
        var mtime = Octal(h.Slice(136, 12), offset, "mtime");
        var link = Text(h.Slice(157, 100), offset);
        return new TarHeader(name, size, mtime, type == '\0' ? '0' : type, link);
    }

    /// <summary>Why an entry of this type is refused, or null for a regular file.</summary>
    public static string? Refusal(char type) => type switch
    {
        '0' or '7' => null,
        '1' => "a hard link",
        '2' => "a symbolic link",
        '3' => "a character device",
        '4' => "a block device",
        '5' => "a directory",
        '6' => "a FIFO",
        'x' or 'g' => "a pax extended header",
        'L' or 'K' => "a GNU long-name header",
        _ => $"of unknown type '{(char.IsAsciiLetterOrDigit(type) ? type.ToString() : "\\x" + ((int)type).ToString("x2", CultureInfo.InvariantCulture))}'",
    };

    /// <summary>Why a path is unsafe to extract, or null when it is a plain relative path.</summary>
    public static string? UnsafePath(string path)
    {
        if (path.Length == 0)
        {
            return "has an empty name";
        }
        if (path.StartsWith('/') || path.StartsWith('\\'))
        {
            return "has an absolute path";
        }
        if (path.Contains('\\', StringComparison.Ordinal) || path.Contains(':', StringComparison.Ordinal) && path.Length > 1 && path[1] == ':')
        {
            return "has a backslash or drive letter in its path";
        }
        if (path.Any(c => c < 0x20 || c == 0x7f))
        {
            return "has a control character in its path";
        }
        foreach (var seg in path.Split('/'))
        {
            if (seg == "..")
            {
                return "climbs out with '..'";
            }
            if (seg.Length == 0 || seg == ".")
            {
                return "has an empty or '.' path segment";
            }
        }
        return null;
    }

    private static (string Prefix, string Name) Split(string name)
    {
        if (Encoding.UTF8.GetByteCount(name) <= 100)
        {
            return ("", name);
        }
        for (var i = name.IndexOf('/', StringComparison.Ordinal); i >= 0; i = name.IndexOf('/', i + 1))
        {
            var p = name[..i];
            var n = name[(i + 1)..];
            if (Encoding.UTF8.GetByteCount(p) <= 155 && Encoding.UTF8.GetByteCount(n) <= 100)
            {
                return (p, n);
            }
        }
        throw new ArgumentException($"path too long for a bundle (ustar): {name}", nameof(name));
    }

    private static string Oct(long v, int digits)
    {
        var s = Convert.ToString(v, 8).PadLeft(digits, '0');
        return s.Length == digits ? s : throw new ArgumentOutOfRangeException(nameof(v), $"{v} does not fit {digits} octal digits");
    }

    private static void Put(byte[] h, int at, int len, string value)
    {
        var bytes = Encoding.UTF8.GetBytes(value);
        if (bytes.Length > len)
        {
            throw new ArgumentException($"tar field too long: {value}", nameof(value));
        }
        bytes.CopyTo(h, at);
    }

    private static long Checksum(ReadOnlySpan<byte> h)
    {
        long sum = 0;
        for (var i = 0; i < Block; i++)
        {
            sum += i is >= 148 and < 156 ? (byte)' ' : h[i];
        }
        return sum;
    }

    private static long Octal(ReadOnlySpan<byte> field, long offset, string what)
    {
        var s = Encoding.ASCII.GetString(field).Trim('\0', ' ');
        if (s.Length == 0 || s.Length > 12 || s.Any(c => c is < '0' or > '7'))
        {
            throw new BundleException(BundleError.Malformed, $"tar header at offset {offset} has an unreadable {what} field");
        }
        return Convert.ToInt64(s, 8);
    }

    private static string Text(ReadOnlySpan<byte> field, long offset)
    {
        var end = field.IndexOf((byte)0);
        var bytes = end < 0 ? field : field[..end];
        try
        {
            return new UTF8Encoding(false, true).GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            throw new BundleException(BundleError.Malformed, $"tar header at offset {offset} has a name that is not UTF-8");
        }
    }
}
