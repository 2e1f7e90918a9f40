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

    /// <summary>
    /// What a small authoritative server answers to a query (the lab's world hosts with <c>dns:</c>): the question
    /// echoed, one A or AAAA record (TTL 300 s) when the name is known with an address of the asked family, no record
    /// for the other family, NXDOMAIN for a name it does not know. Null for what is not a one-question query.
    /// </summary>
    public static byte[]? Answer(ReadOnlySpan<byte> query, IReadOnlyDictionary<string, IPAddress> names)
    {
        ArgumentNullException.ThrowIfNull(names);
        if (query.Length < 12)
            return null;
        ushort flags = BinaryPrimitives.ReadUInt16BigEndian(query[2..]);
        if ((flags & 0x8000) != 0 || BinaryPrimitives.ReadUInt16BigEndian(query[4..]) != 1)
            return null;
        int off = 12;
        if (!TryName(query, ref off, out var name) || off + 4 > query.Length)
            return null;
        ushort type = BinaryPrimitives.ReadUInt16BigEndian(query[off..]);
        int questionEnd = off + 4;
        bool known = names.TryGetValue(name, out var ip);
        byte[]? rdata = known && (type == 1 && ip!.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork
            || type == 28 && ip!.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6) ? ip.GetAddressBytes() : null;
        var r = new List<byte>(questionEnd + 32);
        r.AddRange(query[..2]);
        ushort rflags = (ushort)(0x8400 | (flags & 0x0100) | (known ? 0 : 3));
        r.AddRange([(byte)(rflags >> 8), (byte)rflags, 0, 1, 0, (byte)(rdata is null ? 0 : 1), 0, 0, 0, 0]);
        r.AddRange(query[12..questionEnd]);
        if (rdata is not null)
        {
            // the question's name by a compression pointer to offset 12
            r.AddRange([0xc0, 12, (byte)(type >> 8), (byte)type, 0, 1, 0, 0, 0x01, 0x2c, 0, (byte)rdata.Length]);
            r.AddRange(rdata);
        }
        return [.. r];
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
