using System.Buffers.Binary;
using System.Net;

namespace Forensics.Tests;

/// <summary>Crafted Ethernet/IPv4/IPv6 packets with valid checksums, for BPF_PROG_TEST_RUN.</summary>
public static class Packets
{
    public const byte TcpSyn = 0x02;
    public const byte TcpAck = 0x10;

    public static byte[] Tcp(string src, ushort sport, string dst, ushort dport, byte flags = TcpSyn, int payload = 0) =>
        Build(IPAddress.Parse(src), IPAddress.Parse(dst), 6, L4Tcp(sport, dport, flags, payload));

    public static byte[] Udp(string src, ushort sport, string dst, ushort dport, int payload = 8) =>
        Build(IPAddress.Parse(src), IPAddress.Parse(dst), 17, L4Udp(sport, dport, payload));

    /// <summary>A TCP segment carrying <paramref name="payload"/> (flags: PSH|ACK unless given).</summary>
    public static byte[] TcpPayload(string src, ushort sport, string dst, ushort dport, byte[] payload, byte flags = 0x18)
    {
        var l4 = L4Tcp(sport, dport, flags, payload.Length);
        payload.CopyTo(l4.AsSpan(20));
        return Build(IPAddress.Parse(src), IPAddress.Parse(dst), 6, l4);
    }

    /// <summary>A UDP datagram carrying <paramref name="payload"/>.</summary>
    public static byte[] UdpPayload(string src, ushort sport, string dst, ushort dport, byte[] payload)
    {
        var l4 = new byte[8 + payload.Length];
        BinaryPrimitives.WriteUInt16BigEndian(l4, sport);
        BinaryPrimitives.WriteUInt16BigEndian(l4.AsSpan(2), dport);
        BinaryPrimitives.WriteUInt16BigEndian(l4.AsSpan(4), (ushort)l4.Length);
        payload.CopyTo(l4.AsSpan(8));
        return Build(IPAddress.Parse(src), IPAddress.Parse(dst), 17, l4);
    }

    /// <summary>An ICMPv4 echo request (type 8) or reply (type 0).</summary>
    public static byte[] IcmpEcho(string src, string dst, ushort id, bool reply = false)
    {
        var l4 = new byte[16];
        l4[0] = reply ? (byte)0 : (byte)8;
        BinaryPrimitives.WriteUInt16BigEndian(l4.AsSpan(4), id);
        BinaryPrimitives.WriteUInt16BigEndian(l4.AsSpan(6), 1);
        return Build(IPAddress.Parse(src), IPAddress.Parse(dst), 1, l4);
    }

    /// <summary>An ICMPv4 message of a type and code (e.g. 13, timestamp request) with 16 bytes of body.</summary>
    public static byte[] Icmp4(string src, string dst, byte type, byte code = 0)
    {
        var l4 = new byte[24];
        l4[0] = type;
        l4[1] = code;
        return Build(IPAddress.Parse(src), IPAddress.Parse(dst), 1, l4);
    }

    /// <summary>An ICMPv6 message of a type (e.g. 135, neighbour solicitation) with 20 bytes of body.</summary>
    public static byte[] Icmp6(string src, string dst, byte type)
    {
        var l4 = new byte[24];
        l4[0] = type;
        return Build(IPAddress.Parse(src), IPAddress.Parse(dst), 58, l4);
    }

    /// <summary>An ICMPv4 error (default: port unreachable) quoting the IP header and 8 bytes of <paramref name="quoted"/>.</summary>
    public static byte[] IcmpError(string src, string dst, byte[] quoted, byte type = 3, byte code = 3)
    {
        int ihl = (quoted[14] & 0xf) * 4;
        var l4 = new byte[8 + ihl + 8];
        l4[0] = type;
        l4[1] = code;
        quoted.AsSpan(14, ihl + 8).CopyTo(l4.AsSpan(8));
        return Build(IPAddress.Parse(src), IPAddress.Parse(dst), 1, l4);
    }

    private static byte[] L4Tcp(ushort sport, ushort dport, byte flags, int payload)
    {
        var l4 = new byte[20 + payload];
        BinaryPrimitives.WriteUInt16BigEndian(l4, sport);
        BinaryPrimitives.WriteUInt16BigEndian(l4.AsSpan(2), dport);
        BinaryPrimitives.WriteUInt32BigEndian(l4.AsSpan(4), 1000);
        l4[12] = 5 << 4;
        l4[13] = flags;
        BinaryPrimitives.WriteUInt16BigEndian(l4.AsSpan(14), 64240);
        return l4;
    }

    private static byte[] L4Udp(ushort sport, ushort dport, int payload)
    {
        var l4 = new byte[8 + payload];
        BinaryPrimitives.WriteUInt16BigEndian(l4, sport);
        BinaryPrimitives.WriteUInt16BigEndian(l4.AsSpan(2), dport);
        BinaryPrimitives.WriteUInt16BigEndian(l4.AsSpan(4), (ushort)l4.Length);
        return l4;
    }

    private static byte[] Build(IPAddress src, IPAddress dst, byte proto, byte[] l4)
    {
        bool v6 = src.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6;
        int l3len = v6 ? 40 : 20;
        var pkt = new byte[14 + l3len + l4.Length];
        // Ethernet: locally administered MACs
        pkt[0] = 0x02; pkt[5] = 0x02;
        pkt[6] = 0x02; pkt[11] = 0x01;
        BinaryPrimitives.WriteUInt16BigEndian(pkt.AsSpan(12), (ushort)(v6 ? 0x86dd : 0x0800));
        var ip = pkt.AsSpan(14, l3len);
        if (v6)
        {
            ip[0] = 0x60;
            BinaryPrimitives.WriteUInt16BigEndian(ip[4..], (ushort)l4.Length);
            ip[6] = proto;
            ip[7] = 64;
            src.GetAddressBytes().CopyTo(ip[8..]);
            dst.GetAddressBytes().CopyTo(ip[24..]);
        }
        else
        {
            ip[0] = 0x45;
            BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(20 + l4.Length));
            ip[8] = 64;
            ip[9] = proto;
            src.GetAddressBytes().CopyTo(ip[12..]);
            dst.GetAddressBytes().CopyTo(ip[16..]);
            BinaryPrimitives.WriteUInt16BigEndian(ip[10..], Checksum(ip, 0));
        }
        l4.CopyTo(pkt.AsSpan(14 + l3len));
        var l4span = pkt.AsSpan(14 + l3len);
        if (proto == 1)
        {
            BinaryPrimitives.WriteUInt16BigEndian(l4span[2..], Checksum(l4span, 0));
            return pkt;
        }
        int csumOff = proto switch { 6 => 16, 58 => 2, _ => 6 };
        BinaryPrimitives.WriteUInt16BigEndian(l4span[csumOff..], L4Checksum(ip, v6, proto, l4span));
        return pkt;
    }

    private static ushort L4Checksum(ReadOnlySpan<byte> ip, bool v6, byte proto, ReadOnlySpan<byte> l4)
    {
        uint sum = 0;
        var addrs = v6 ? ip.Slice(8, 32) : ip.Slice(12, 8);
        sum = Add(sum, addrs);
        sum += proto;
        sum += (uint)l4.Length;
        sum = Add(sum, l4);
        var c = Fold(sum);
        return c == 0 && proto == 17 ? (ushort)0xffff : c;
    }

    public static ushort Checksum(ReadOnlySpan<byte> data, uint initial) => Fold(Add(initial, data));

    private static uint Add(uint sum, ReadOnlySpan<byte> data)
    {
        for (int i = 0; i + 1 < data.Length; i += 2)
            sum += BinaryPrimitives.ReadUInt16BigEndian(data[i..]);
        if ((data.Length & 1) != 0)
            sum += (uint)data[^1] << 8;
        return sum;
    }

    private static ushort Fold(uint sum)
    {
        while (sum >> 16 != 0)
            sum = (sum & 0xffff) + (sum >> 16);
        return (ushort)~sum;
    }

    /// <summary>True when the IPv4 header and L4 checksums of a packet are valid.</summary>
    public static bool ChecksumsValid(ReadOnlySpan<byte> pkt)
    {
        bool v6 = BinaryPrimitives.ReadUInt16BigEndian(pkt[12..]) == 0x86dd;
        int l3len = v6 ? 40 : (pkt[14] & 0xf) * 4;
        var ip = pkt.Slice(14, l3len);
        if (!v6 && Checksum(ip, 0) != 0)
            return false;
        byte proto = v6 ? ip[6] : ip[9];
        var l4 = pkt[(14 + l3len)..];
        if (proto == 1)
            return Checksum(pkt[(14 + l3len)..], 0) == 0;
        if (proto != 6 && proto != 17)
            return true;
        uint sum = Add(0, v6 ? ip.Slice(8, 32) : ip.Slice(12, 8)) + proto + (uint)l4.Length;
        return Fold(Add(sum, l4)) == 0;
    }
}
