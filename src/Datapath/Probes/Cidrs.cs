using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Forensics.Datapath.Probes;

/// <summary>
/// Parses CIDRs as Tetragon reads them (Go's net/netip: <c>ParsePrefix</c> when
/// there is a '/', else <c>ParseAddr</c>): "10.0.0.0/8", "fd00::/64", or a bare
/// address (a host). Go refuses what .NET's parser would rewrite: short IPv4
/// forms ("10.1" is not 10.0.0.1, "192.168.1/24" is no prefix), leading zeros
/// ("010.0.0.1"), a prefix length with a sign or leading zero, a zone in a prefix.
/// </summary>
public static class Cidrs
{
    /// <summary>
    /// Parses a CIDR or a bare address; host bits are cleared ("10.1.2.3/8" is 10.0.0.0/8,
    /// which is what the LPM trie Tetragon writes it to matches). Throws <see cref="FormatException"/>.
    /// </summary>
    public static IPNetwork Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var s = text.Trim();
        int slash = s.IndexOf('/', StringComparison.Ordinal);
        var addrText = slash < 0 ? s : s[..slash];
        var addr = ParseAddress(addrText) ?? throw new FormatException($"'{text}' is not an IPv4 or IPv6 address or CIDR");
        int bits = addr.AddressFamily == AddressFamily.InterNetwork ? 32 : 128;
        int prefix = bits;
        if (slash >= 0)
        {
            var p = s[(slash + 1)..];
            if (p.Length == 0 || p.Length > 3 || !p.All(char.IsAsciiDigit) || p.Length > 1 && p[0] == '0'
                || !int.TryParse(p, NumberStyles.None, CultureInfo.InvariantCulture, out prefix) || prefix > bits)
                throw new FormatException($"'{text}' has no valid prefix length (0..{bits})");
        }
        var bytes = addr.GetAddressBytes();
        for (int i = 0; i < bytes.Length; i++)
        {
            int keep = Math.Clamp(prefix - i * 8, 0, 8);
            bytes[i] &= (byte)(0xff << (8 - keep));
        }
        return new IPNetwork(new IPAddress(bytes), prefix);
    }

    public static bool TryParse(string text, out IPNetwork network)
    {
        try
        {
            network = Parse(text);
            return true;
        }
        catch (FormatException)
        {
            network = default;
            return false;
        }
    }

    /// <summary>An address as Go's netip.ParseAddr reads it (without zones); null when Go would refuse it.</summary>
    public static IPAddress? ParseAddress(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text.Contains(':', StringComparison.Ordinal))
        {
            // IPv6: hex groups, '::' at most once, an optional dotted-quad tail; no zone, no brackets
            if (text.Contains('%', StringComparison.Ordinal) || text.Contains('[', StringComparison.Ordinal))
                return null;
            int lastColon = text.LastIndexOf(':');
            var tail = text[(lastColon + 1)..];
            if (tail.Contains('.', StringComparison.Ordinal) && ParseV4(tail) is null)
                return null;
            foreach (var group in (tail.Contains('.', StringComparison.Ordinal) ? text[..lastColon] : text).Split(':'))
                if (group.Length > 4 || !group.All(char.IsAsciiHexDigit))
                    return null;
            return IPAddress.TryParse(text, out var v6) && v6.AddressFamily == AddressFamily.InterNetworkV6 ? v6 : null;
        }
        return ParseV4(text);
    }

    /// <summary>Exactly four decimal parts 0-255 without leading zeros, as Go reads IPv4.</summary>
    private static IPAddress? ParseV4(string text)
    {
        var parts = text.Split('.');
        if (parts.Length != 4)
            return null;
        var b = new byte[4];
        for (int i = 0; i < 4; i++)
        {
            var p = parts[i];
            if (p.Length is 0 or > 3 || !p.All(char.IsAsciiDigit) || p.Length > 1 && p[0] == '0')
                return null;
            int v = int.Parse(p, NumberStyles.None, CultureInfo.InvariantCulture);
            if (v > 255)
                return null;
            b[i] = (byte)v;
        }
        return new IPAddress(b);
    }
}
