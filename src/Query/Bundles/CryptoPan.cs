using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;

namespace Forensics.Query.Bundles;

/// <summary>
/// Prefix-preserving IP address anonymization (Crypto-PAn: Xu, Fan, Ammar, Moon, 2002), for IPv4
/// and, bit for bit the same way, IPv6. Two addresses sharing their first k bits map to two
/// addresses sharing exactly their first k bits, so subnets, CIDR filters and "same /24" questions
/// still work on anonymized data. The key is 32 bytes: an AES-128 key and the block that makes the pad.
/// Thread-safe; results are cached.
/// </summary>
public sealed partial class CryptoPan : IDisposable
{
    private readonly Aes _aes;
    private readonly byte[] _pad = new byte[16];
    private readonly Dictionary<string, string> _cache = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();

    public CryptoPan(ReadOnlySpan<byte> key)
    {
        if (key.Length != 32)
        {
            throw new ArgumentException("Crypto-PAn needs a 32-byte key", nameof(key));
        }
        _aes = Aes.Create();
        _aes.Key = key[..16].ToArray();
        _aes.EncryptEcb(key[16..], _pad, PaddingMode.None);
    }

    /// <summary>A fresh random key, which callers must not store.</summary>
    public static CryptoPan WithRandomKey()
    {
        Span<byte> key = stackalloc byte[32];
        RandomNumberGenerator.Fill(key);
        var p = new CryptoPan(key);
        CryptographicOperations.ZeroMemory(key);
        return p;
    }

    public IPAddress Anonymize(IPAddress address)
    {
        var orig = address.GetAddressBytes();
        var bits = orig.Length * 8;
        var result = new byte[orig.Length];
        Span<byte> input = stackalloc byte[16];
        Span<byte> output = stackalloc byte[16];
        lock (_lock)
        {
            for (var pos = 0; pos < bits; pos++)
            {
                for (var i = 0; i < 16; i++)
                {
                    var lo = i * 8;
                    if (i >= orig.Length || lo >= pos)
                    {
                        input[i] = _pad[i];
                    }
                    else if (lo + 8 <= pos)
                    {
                        input[i] = orig[i];
                    }
                    else
                    {
                        var mask = (byte)(0xFF << (8 - (pos - lo)));
                        input[i] = (byte)((orig[i] & mask) | (_pad[i] & ~mask));
                    }
                }
                _aes.EncryptEcb(input, output, PaddingMode.None);
                result[pos / 8] |= (byte)((output[0] >> 7) << (7 - (pos % 8)));
            }
        }
        for (var i = 0; i < orig.Length; i++)
        {
            result[i] ^= orig[i];
        }
        return new IPAddress(result);
    }

    /// <summary>
    /// Anonymizes a column value: an address, a CIDR (the prefix length kept, host bits cleared),
    /// or a list of those separated by commas or spaces. Anything else is returned unchanged.
    /// </summary>
    public string AnonymizeText(string value)
    {
        lock (_lock)
        {
            if (_cache.TryGetValue(value, out var hit))
            {
                return hit;
            }
        }
        var parts = value.Split([',', ' '], StringSplitOptions.None);
        for (var i = 0; i < parts.Length; i++)
        {
            parts[i] = One(parts[i]);
        }
        var anon = parts.Length == 1 ? parts[0] : Rejoin(value, parts);
        lock (_lock)
        {
            _cache[value] = anon;
        }
        return anon;
    }

    private static string Rejoin(string original, string[] parts)
    {
        // Keep the original separators.
        var sb = new System.Text.StringBuilder();
        var p = 0;
        for (var i = 0; i < original.Length && p < parts.Length; i++)
        {
            if (original[i] is ',' or ' ')
            {
                sb.Append(parts[p++]).Append(original[i]);
            }
        }
        for (; p < parts.Length; p++)
        {
            sb.Append(parts[p]);
        }
        return sb.ToString();
    }

    private string One(string token)
    {
        // addr:port and [v6addr]:port keep their port.
        var ep = EndPoint().Match(token);
        if (ep.Success)
        {
            var host = ep.Groups["v4"].Success ? ep.Groups["v4"].Value : ep.Groups["v6"].Value;
            var anon = One(host);
            return anon == host ? token
                : ep.Groups["v4"].Success ? $"{anon}:{ep.Groups["port"].Value}" : $"[{anon}]:{ep.Groups["port"].Value}";
        }
        var slash = token.IndexOf('/', StringComparison.Ordinal);
        var addrText = slash < 0 ? token : token[..slash];
        // Strict forms only: IPAddress.TryParse also takes "10" or "0x1" as IPv4 addresses.
        var strict = addrText.Contains(':', StringComparison.Ordinal)
            ? !addrText.Contains('%', StringComparison.Ordinal)
            : Dotted().IsMatch(addrText);
        if (!strict || !IPAddress.TryParse(addrText, out var ip))
        {
            return token;
        }
        if (ip.IsIPv4MappedToIPv6)
        {
            return slash < 0 ? Anonymize(ip.MapToIPv4()).MapToIPv6().ToString() : token;
        }
        if (slash < 0)
        {
            return Anonymize(ip).ToString();
        }
        var max = ip.AddressFamily == AddressFamily.InterNetwork ? 32 : 128;
        if (!int.TryParse(token[(slash + 1)..], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var len) || len > max)
        {
            return token;
        }
        var bytes = Anonymize(ip).GetAddressBytes();
        for (var b = 0; b < bytes.Length; b++)
        {
            var keep = Math.Clamp(len - b * 8, 0, 8);
            bytes[b] &= (byte)(0xFF << (8 - keep));
        }
        return new IPAddress(bytes) + "/" + len.ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$")]
    private static partial System.Text.RegularExpressions.Regex Dotted();

    [System.Text.RegularExpressions.GeneratedRegex(@"^(?:(?<v4>\d{1,3}(?:\.\d{1,3}){3})|\[(?<v6>[0-9A-Fa-f:.]+)\]):(?<port>\d{1,5})$")]
    private static partial System.Text.RegularExpressions.Regex EndPoint();

    public void Dispose() => _aes.Dispose();
}
