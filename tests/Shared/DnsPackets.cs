using System.Buffers.Binary;
using System.Net;

namespace Forensics.Tests;

/// <summary>DNS messages (RFC 1035) for tests: a query, and a response with A/AAAA and CNAME records.</summary>
public static class DnsPackets
{
    public const ushort A = 1;
    public const ushort Cname = 5;
    public const ushort Aaaa = 28;

    /// <summary>A query for one name (recursion desired).</summary>
    public static byte[] Query(ushort id, string name, ushort type = A)
    {
        var m = new List<byte>();
        Header(m, id, 0x0100, 1, 0);
        Name(m, name);
        U16(m, type);
        U16(m, 1);
        return [.. m];
    }

    /// <summary>
    /// A response to a query for <paramref name="question"/>: each answer is (owner, value) where the value is an
    /// address (A or AAAA) or, prefixed "cname:", a CNAME target. rcode 0 unless given.
    /// </summary>
    public static byte[] Response(ushort id, string question, IReadOnlyList<(string Owner, string Value)> answers, ushort qtype = A, int rcode = 0, uint ttl = 300)
    {
        var m = new List<byte>();
        Header(m, id, (ushort)(0x8180 | rcode), 1, (ushort)answers.Count);
        Name(m, question);
        U16(m, qtype);
        U16(m, 1);
        foreach (var (owner, value) in answers)
        {
            // the question's name by a compression pointer to offset 12, others in full
            if (owner == question)
                m.AddRange([0xc0, 12]);
            else
                Name(m, owner);
            byte[] rdata;
            ushort type;
            if (value.StartsWith("cname:", StringComparison.Ordinal))
            {
                var r = new List<byte>();
                Name(r, value[6..]);
                rdata = [.. r];
                type = Cname;
            }
            else
            {
                rdata = IPAddress.Parse(value).GetAddressBytes();
                type = rdata.Length == 4 ? A : Aaaa;
            }
            U16(m, type);
            U16(m, 1);
            U16(m, (ushort)(ttl >> 16));
            U16(m, (ushort)ttl);
            U16(m, (ushort)rdata.Length);
            m.AddRange(rdata);
        }
        return [.. m];
    }

    /// <summary>The id and question name of a query (for a responder).</summary>
    public static (ushort Id, string Name, ushort Type) ReadQuery(ReadOnlySpan<byte> q)
    {
        var id = BinaryPrimitives.ReadUInt16BigEndian(q);
        int off = 12;
        var labels = new List<string>();
        while (off < q.Length && q[off] != 0)
        {
            int len = q[off];
            labels.Add(System.Text.Encoding.ASCII.GetString(q.Slice(off + 1, len)));
            off += len + 1;
        }
        off++;
        var type = off + 2 <= q.Length ? BinaryPrimitives.ReadUInt16BigEndian(q[off..]) : (ushort)0;
        return (id, string.Join('.', labels), type);
    }

    private static void Header(List<byte> m, ushort id, ushort flags, ushort qd, ushort an)
    {
        U16(m, id);
        U16(m, flags);
        U16(m, qd);
        U16(m, an);
        U16(m, 0);
        U16(m, 0);
    }

    private static void Name(List<byte> m, string name)
    {
        foreach (var label in name.TrimEnd('.').Split('.', StringSplitOptions.RemoveEmptyEntries))
        {
            m.Add((byte)label.Length);
            m.AddRange(System.Text.Encoding.ASCII.GetBytes(label));
        }
        m.Add(0);
    }

    private static void U16(List<byte> m, ushort v)
    {
        m.Add((byte)(v >> 8));
        m.Add((byte)v);
    }
}
