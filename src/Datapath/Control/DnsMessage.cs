using System.Buffers.Binary;
using System.Net;
using System.Text;

namespace Forensics.Datapath.Control;

/// <summary>An address record of a DNS answer: the owner name (lower case, with its trailing dot), the address, the TTL.</summary>
public sealed record DnsAddress(string Name, IPAddress Address, uint Ttl);

/// <summary>
/// The part of a DNS response (RFC 1035) toFQDNs needs: the question's name, and
/// the A and AAAA records of the answer section, CNAMEs followed (as Cilium's DNS
/// proxy associates every address of a response with the name asked for, and
/// with each CNAME target on the way). Compression pointers are followed, bounded;
/// a truncated or malformed message is refused, not guessed at.
/// </summary>
public static class DnsMessage
{
    /// <summary>
    /// Reads a response with rcode NOERROR. False for a query, an error response,
    /// or a message that does not parse.
    /// </summary>
    public static bool TryParseResponse(ReadOnlySpan<byte> msg, out string question, out IReadOnlyList<DnsAddress> addresses)
    {
        question = "";
        addresses = [];
        if (msg.Length < 12)
            return false;
        ushort flags = BinaryPrimitives.ReadUInt16BigEndian(msg[2..]);
        if ((flags & 0x8000) == 0 || (flags & 0x000f) != 0)
            return false;
        int qd = BinaryPrimitives.ReadUInt16BigEndian(msg[4..]);
        int an = BinaryPrimitives.ReadUInt16BigEndian(msg[6..]);
        if (qd != 1)
            return false;
        int off = 12;
        if (!TryName(msg, ref off, out question) || off + 4 > msg.Length)
            return false;
        off += 4;
        var list = new List<DnsAddress>();
        var aliases = new HashSet<string>(StringComparer.Ordinal) { question };
        for (int i = 0; i < an; i++)
        {
            if (!TryName(msg, ref off, out var owner) || off + 10 > msg.Length)
                return false;
            ushort type = BinaryPrimitives.ReadUInt16BigEndian(msg[off..]);
            uint ttl = BinaryPrimitives.ReadUInt32BigEndian(msg[(off + 4)..]);
            int rdlen = BinaryPrimitives.ReadUInt16BigEndian(msg[(off + 8)..]);
            off += 10;
            if (off + rdlen > msg.Length)
                return false;
            var rdata = msg.Slice(off, rdlen);
            if (type == 1 && rdlen == 4 || type == 28 && rdlen == 16)
            {
                list.Add(new DnsAddress(owner, new IPAddress(rdata), ttl));
            }
            else if (type == 5)
            {
                int at = off;
                if (!TryName(msg, ref at, out var target))
                    return false;
                if (aliases.Contains(owner))
                    aliases.Add(target);
            }
            off += rdlen;
        }
        // every address reached from the question (through CNAMEs) also belongs to the question's name
        var result = new List<DnsAddress>();
        foreach (var a in list.Where(a => aliases.Contains(a.Name)))
        {
            result.Add(a);
            if (a.Name != question)
                result.Add(a with { Name = question });
        }
        addresses = result;
        return true;
    }

    /// <summary>A domain name at <paramref name="off"/> (advanced past it), lower case with a trailing dot.</summary>
    private static bool TryName(ReadOnlySpan<byte> msg, ref int off, out string name)
    {
        name = "";
        var sb = new StringBuilder();
        int pos = off, jumps = 0;
        bool jumped = false;
        while (true)
        {
            if (pos >= msg.Length)
                return false;
            int len = msg[pos];
            if ((len & 0xc0) == 0xc0)
            {
                if (pos + 1 >= msg.Length || ++jumps > 16)
                    return false;
                if (!jumped)
                    off = pos + 2;
                jumped = true;
                pos = ((len & 0x3f) << 8) | msg[pos + 1];
                continue;
            }
            if ((len & 0xc0) != 0)
                return false;
            pos++;
            if (len == 0)
                break;
            if (pos + len > msg.Length || sb.Length + len + 1 > 255)
                return false;
            foreach (var b in msg.Slice(pos, len))
                sb.Append(b is >= (byte)'A' and <= (byte)'Z' ? (char)(b + 32) : (char)b);
            sb.Append('.');
            pos += len;
        }
        if (!jumped)
            off = pos;
        name = sb.Length == 0 ? "." : sb.ToString();
        return true;
    }
}
