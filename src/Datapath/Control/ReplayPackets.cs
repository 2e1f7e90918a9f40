using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace Forensics.Datapath.Control;

/// <summary>
/// The first packet of a recorded flow as an Ethernet frame for BPF_PROG_TEST_RUN: built from a
/// 5-tuple (a TCP SYN, a UDP datagram, an ICMP echo request), or taken from captured bytes with
/// the destination put back to what the pod sent (a capture at from-endpoint is taken after the
/// service translation) and the lengths fitted to what was captured. Checksums are valid.
/// </summary>
public static class ReplayPackets
{
    public const byte Tcp = 6;
    public const byte Udp = 17;
    public const byte Icmp = 1;
    public const byte Icmp6 = 58;

    /// <summary>A first packet from the 5-tuple; null for a protocol this cannot build.</summary>
    public static byte[]? FromTuple(IPAddress src, ushort sport, IPAddress dst, ushort dport, byte proto)
    {
        ArgumentNullException.ThrowIfNull(src);
        ArgumentNullException.ThrowIfNull(dst);
        if (src.AddressFamily != dst.AddressFamily)
            return null;
        byte[] l4;
        switch (proto)
        {
            case Tcp:
                l4 = new byte[20];
                BinaryPrimitives.WriteUInt16BigEndian(l4, sport);
                BinaryPrimitives.WriteUInt16BigEndian(l4.AsSpan(2), dport);
                BinaryPrimitives.WriteUInt32BigEndian(l4.AsSpan(4), 1);
                l4[12] = 5 << 4;
                l4[13] = 0x02; // SYN
                BinaryPrimitives.WriteUInt16BigEndian(l4.AsSpan(14), 64240);
                break;
            case Udp:
                l4 = new byte[8 + 8];
                BinaryPrimitives.WriteUInt16BigEndian(l4, sport);
                BinaryPrimitives.WriteUInt16BigEndian(l4.AsSpan(2), dport);
                BinaryPrimitives.WriteUInt16BigEndian(l4.AsSpan(4), (ushort)l4.Length);
                break;
            case Icmp when src.AddressFamily == AddressFamily.InterNetwork:
            case Icmp6 when src.AddressFamily == AddressFamily.InterNetworkV6:
                l4 = new byte[16];
                l4[0] = proto == Icmp ? (byte)8 : (byte)128; // echo request
                BinaryPrimitives.WriteUInt16BigEndian(l4.AsSpan(4), sport);
                BinaryPrimitives.WriteUInt16BigEndian(l4.AsSpan(6), 1);
                break;
            default:
                return null;
        }
        bool v4 = src.AddressFamily == AddressFamily.InterNetwork;
        int ipLen = v4 ? 20 : 40;
        var p = new byte[14 + ipLen + l4.Length];
        p[0] = 0x02; p[5] = 0x02; // locally administered MACs
        p[6] = 0x02; p[11] = 0x01;
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(12), v4 ? (ushort)0x0800 : (ushort)0x86dd);
        var ip = p.AsSpan(14);
        if (v4)
        {
            ip[0] = 0x45;
            BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(20 + l4.Length));
            ip[6] = 0x40; // DF
            ip[8] = 64;
            ip[9] = proto;
            src.GetAddressBytes().CopyTo(ip[12..]);
            dst.GetAddressBytes().CopyTo(ip[16..]);
        }
        else
        {
            ip[0] = 0x60;
            BinaryPrimitives.WriteUInt16BigEndian(ip[4..], (ushort)l4.Length);
            ip[6] = proto;
            ip[7] = 64;
            src.GetAddressBytes().CopyTo(ip[8..]);
            dst.GetAddressBytes().CopyTo(ip[24..]);
        }
        l4.CopyTo(p.AsSpan(14 + ipLen));
        FixChecksums(p);
        return p;
    }

    /// <summary>
    /// A captured first packet made whole again for a run: the destination set to
    /// <paramref name="dst"/>:<paramref name="dport"/> (what the pod sent, before a service
    /// translation), the IP (and UDP) lengths cut to the captured bytes, checksums recomputed.
    /// Null when the bytes are not an Ethernet IPv4/IPv6 TCP, UDP or ICMP packet with its headers.
    /// </summary>
    public static byte[]? FromCapture(ReadOnlySpan<byte> captured, IPAddress dst, ushort dport)
    {
        ArgumentNullException.ThrowIfNull(dst);
        if (Layout(captured) is not { } l || l.L4 + L4HeaderLength(l.Proto) > captured.Length)
            return null;
        var p = captured.ToArray();
        var ip = p.AsSpan(14);
        if (l.V4 != (dst.AddressFamily == AddressFamily.InterNetwork))
            return null;
        if (l.V4)
        {
            BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(p.Length - 14));
            dst.GetAddressBytes().CopyTo(ip[16..]);
        }
        else
        {
            BinaryPrimitives.WriteUInt16BigEndian(ip[4..], (ushort)(p.Length - 14 - 40));
            dst.GetAddressBytes().CopyTo(ip[24..]);
        }
        if (l.Proto is Tcp or Udp)
            BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(l.L4 + 2), dport);
        if (l.Proto == Udp)
            BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(l.L4 + 4), (ushort)(p.Length - l.L4));
        FixChecksums(p);
        return p;
    }

    /// <summary>Source and destination of an Ethernet IPv4/IPv6 frame; null when it is neither.</summary>
    public static (IPAddress Src, IPAddress Dst)? Addresses(ReadOnlySpan<byte> p)
    {
        if (Layout(p) is not { } l)
            return null;
        return l.V4
            ? (new IPAddress(p.Slice(26, 4)), new IPAddress(p.Slice(30, 4)))
            : (new IPAddress(p.Slice(22, 16)), new IPAddress(p.Slice(38, 16)));
    }

    private static int L4HeaderLength(byte proto) => proto switch { Tcp => 20, Udp => 8, _ => 8 };

    private readonly record struct Frame(bool V4, byte Proto, int L4);

    private static Frame? Layout(ReadOnlySpan<byte> p)
    {
        if (p.Length < 14 + 20)
            return null;
        var type = BinaryPrimitives.ReadUInt16BigEndian(p[12..]);
        if (type == 0x0800 && p[14] >> 4 == 4)
        {
            int ihl = (p[14] & 0xf) * 4;
            return ihl >= 20 && 14 + ihl <= p.Length ? new Frame(true, p[14 + 9], 14 + ihl) : null;
        }
        if (type == 0x86dd && p.Length >= 14 + 40 && p[14] >> 4 == 6)
            return new Frame(false, p[14 + 6], 14 + 40);
        return null;
    }

    /// <summary>Recomputes the IPv4 header checksum and the TCP, UDP or ICMP checksum over the frame's bytes.</summary>
    private static void FixChecksums(byte[] p)
    {
        if (Layout(p) is not { } l)
            return;
        var ip = p.AsSpan(14, l.L4 - 14);
        if (l.V4)
        {
            ip[10] = ip[11] = 0;
            BinaryPrimitives.WriteUInt16BigEndian(ip[10..], Fold(Sum(ip, 0)));
        }
        var l4 = p.AsSpan(l.L4);
        int at = l.Proto switch { Tcp => 16, Udp => 6, Icmp or Icmp6 => 2, _ => -1 };
        if (at < 0 || at + 2 > l4.Length)
            return;
        l4[at] = l4[at + 1] = 0;
        uint sum = Sum(l4, 0);
        if (l.Proto != Icmp)
        {
            // pseudo-header: addresses, protocol, L4 length
            sum = l.V4 ? Sum(ip.Slice(12, 8), sum) : Sum(ip.Slice(8, 32), sum);
            sum += l.Proto;
            sum += (uint)l4.Length;
        }
        var c = Fold(sum);
        if (c == 0 && l.Proto == Udp)
            c = 0xffff;
        BinaryPrimitives.WriteUInt16BigEndian(l4[at..], c);
    }

    private static uint Sum(ReadOnlySpan<byte> b, uint sum)
    {
        int i = 0;
        for (; i + 1 < b.Length; i += 2)
            sum += (uint)(b[i] << 8 | b[i + 1]);
        if (i < b.Length)
            sum += (uint)(b[i] << 8);
        return sum;
    }

    private static ushort Fold(uint sum)
    {
        while (sum > 0xffff)
            sum = (sum & 0xffff) + (sum >> 16);
        return (ushort)~sum;
    }
}
