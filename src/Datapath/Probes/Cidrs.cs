using System.Net;
using System.Net.Sockets;

namespace Forensics.Datapath.Probes;

/// <summary>Parses CIDRs as users write them: "10.0.0.0/8", "fd00::/64", or a bare address (a host).</summary>
public static class Cidrs
{
    /// <summary>
    /// Parses a CIDR or a bare address; host bits are cleared ("10.1.2.3/8" is 10.0.0.0/8,
    /// as Go's net.ParseCIDR that Tetragon uses reads it). Throws <see cref="FormatException"/>.
    /// </summary>
    public static IPNetwork Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var s = text.Trim();
        int slash = s.IndexOf('/', StringComparison.Ordinal);
        var addrText = slash < 0 ? s : s[..slash];
        if (!IPAddress.TryParse(addrText, out var addr) || addr.AddressFamily is not (AddressFamily.InterNetwork or AddressFamily.InterNetworkV6) || addrText.Contains('%', StringComparison.Ordinal))
            throw new FormatException($"'{text}' is not an IPv4 or IPv6 address or CIDR");
        int bits = addr.AddressFamily == AddressFamily.InterNetwork ? 32 : 128;
        int prefix = bits;
        if (slash >= 0 && (!int.TryParse(s[(slash + 1)..], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out prefix) || prefix > bits))
            throw new FormatException($"'{text}' has no valid prefix length (0..{bits})");
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
}
