using System.Buffers.Binary;

namespace Forensics.Datapath.Conntrack;

/// <summary>
/// ctnetlink on the wire: the message and attribute numbers of linux/netlink.h,
/// linux/netfilter/nfnetlink.h and linux/netfilter/nfnetlink_conntrack.h, request
/// builders, and pure decoders (no socket, no allocation) that tests feed captured bytes.
/// </summary>
public static class CtNetlink
{
    // linux/netlink.h
    public const ushort NLMSG_NOOP = 1;
    public const ushort NLMSG_ERROR = 2;
    public const ushort NLMSG_DONE = 3;
    public const ushort NLMSG_OVERRUN = 4;
    public const ushort NLM_F_REQUEST = 0x01;
    public const ushort NLM_F_MULTI = 0x02;
    public const ushort NLM_F_ACK = 0x04;
    public const ushort NLM_F_DUMP_INTR = 0x10;
    public const ushort NLM_F_ROOT = 0x100;
    public const ushort NLM_F_MATCH = 0x200;
    public const ushort NLM_F_EXCL = 0x200;
    public const ushort NLM_F_CREATE = 0x400;
    public const ushort NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH;
    public const ushort NLA_F_NESTED = 0x8000;
    public const ushort NLA_F_NET_BYTEORDER = 0x4000;
    public const ushort NLA_TYPE_MASK = 0x3fff;
    public const int NlmsgHdrLen = 16;
    public const int NfgenmsgLen = 4;

    // linux/netfilter/nfnetlink.h
    public const int NFNLGRP_CONNTRACK_NEW = 1;
    public const int NFNLGRP_CONNTRACK_UPDATE = 2;
    public const int NFNLGRP_CONNTRACK_DESTROY = 3;
    public const byte NFNETLINK_V0 = 0;
    public const byte NFNL_SUBSYS_CTNETLINK = 1;

    // enum cntl_msg_types
    public const byte IPCTNL_MSG_CT_NEW = 0;
    public const byte IPCTNL_MSG_CT_GET = 1;
    public const byte IPCTNL_MSG_CT_DELETE = 2;

    // enum ctattr_type
    public const ushort CTA_TUPLE_ORIG = 1;
    public const ushort CTA_TUPLE_REPLY = 2;
    public const ushort CTA_STATUS = 3;
    public const ushort CTA_PROTOINFO = 4;
    public const ushort CTA_TIMEOUT = 7;
    public const ushort CTA_MARK = 8;
    public const ushort CTA_COUNTERS_ORIG = 9;
    public const ushort CTA_COUNTERS_REPLY = 10;
    public const ushort CTA_USE = 11;
    public const ushort CTA_ID = 12;
    public const ushort CTA_ZONE = 18;
    public const ushort CTA_TIMESTAMP = 20;

    // enum ctattr_tuple, ctattr_ip, ctattr_l4proto
    public const ushort CTA_TUPLE_IP = 1;
    public const ushort CTA_TUPLE_PROTO = 2;
    public const ushort CTA_TUPLE_ZONE = 3;
    public const ushort CTA_IP_V4_SRC = 1;
    public const ushort CTA_IP_V4_DST = 2;
    public const ushort CTA_IP_V6_SRC = 3;
    public const ushort CTA_IP_V6_DST = 4;
    public const ushort CTA_PROTO_NUM = 1;
    public const ushort CTA_PROTO_SRC_PORT = 2;
    public const ushort CTA_PROTO_DST_PORT = 3;
    public const ushort CTA_PROTO_ICMP_ID = 4;
    public const ushort CTA_PROTO_ICMP_TYPE = 5;
    public const ushort CTA_PROTO_ICMP_CODE = 6;
    public const ushort CTA_PROTO_ICMPV6_ID = 7;
    public const ushort CTA_PROTO_ICMPV6_TYPE = 8;
    public const ushort CTA_PROTO_ICMPV6_CODE = 9;

    // enum ctattr_protoinfo, ctattr_protoinfo_tcp, ctattr_counters, ctattr_tstamp
    public const ushort CTA_PROTOINFO_TCP = 1;
    public const ushort CTA_PROTOINFO_TCP_STATE = 1;
    public const ushort CTA_COUNTERS_PACKETS = 1;
    public const ushort CTA_COUNTERS_BYTES = 2;
    public const ushort CTA_TIMESTAMP_START = 1;
    public const ushort CTA_TIMESTAMP_STOP = 2;

    /// <summary>The nlmsg_type of a ctnetlink message: subsystem in the high byte.</summary>
    public static ushort MsgType(byte msg) => (ushort)((NFNL_SUBSYS_CTNETLINK << 8) | msg);

    /// <summary>Names of enum tcp_conntrack values, as the conntrack tool prints them.</summary>
    public static string TcpStateName(byte state) => state switch
    {
        0 => "NONE",
        1 => "SYN_SENT",
        2 => "SYN_RECV",
        3 => "ESTABLISHED",
        4 => "FIN_WAIT",
        5 => "CLOSE_WAIT",
        6 => "LAST_ACK",
        7 => "TIME_WAIT",
        8 => "CLOSE",
        9 => "SYN_SENT2",
        _ => state.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };

    /// <summary>
    /// Writes a table dump request (IPCTNL_MSG_CT_GET, NLM_F_REQUEST|NLM_F_DUMP) for a
    /// family (0: every family); returns its length.
    /// </summary>
    public static int WriteDumpRequest(Span<byte> buffer, uint seq, byte family = 0, byte subsystem = NFNL_SUBSYS_CTNETLINK)
    {
        const int len = NlmsgHdrLen + NfgenmsgLen;
        if (buffer.Length < len)
            throw new ArgumentException("buffer too small for a dump request", nameof(buffer));
        buffer[..len].Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(buffer, len);
        BinaryPrimitives.WriteUInt16LittleEndian(buffer[4..], (ushort)((subsystem << 8) | IPCTNL_MSG_CT_GET));
        BinaryPrimitives.WriteUInt16LittleEndian(buffer[6..], NLM_F_REQUEST | NLM_F_DUMP);
        BinaryPrimitives.WriteUInt32LittleEndian(buffer[8..], seq);
        buffer[16] = family;
        buffer[17] = NFNETLINK_V0;
        return len;
    }

    /// <summary>One netlink message of a datagram.</summary>
    public readonly ref struct Message
    {
        public Message(ReadOnlySpan<byte> bytes)
        {
            Bytes = bytes;
        }

        /// <summary>The whole message, header included.</summary>
        public ReadOnlySpan<byte> Bytes { get; }
        public ushort Type => BinaryPrimitives.ReadUInt16LittleEndian(Bytes[4..]);
        public ushort Flags => BinaryPrimitives.ReadUInt16LittleEndian(Bytes[6..]);
        public uint Seq => BinaryPrimitives.ReadUInt32LittleEndian(Bytes[8..]);
        public uint PortId => BinaryPrimitives.ReadUInt32LittleEndian(Bytes[12..]);
        public ReadOnlySpan<byte> Payload => Bytes[NlmsgHdrLen..];

        /// <summary>For NLMSG_ERROR: the positive errno, 0 for an acknowledgement.</summary>
        public int Errno => Payload.Length >= 4 ? -BinaryPrimitives.ReadInt32LittleEndian(Payload) : 0;
    }

    /// <summary>The messages of a datagram (nlmsghdr chain, 4-byte aligned). Stops at a malformed length.</summary>
    public ref struct MessageEnumerator
    {
        private ReadOnlySpan<byte> rest;

        public MessageEnumerator(ReadOnlySpan<byte> datagram)
        {
            rest = datagram;
            Current = default;
        }

        public Message Current { get; private set; }

        public readonly MessageEnumerator GetEnumerator() => this;

        public bool MoveNext()
        {
            if (rest.Length < NlmsgHdrLen)
                return false;
            uint len = BinaryPrimitives.ReadUInt32LittleEndian(rest);
            if (len < NlmsgHdrLen || len > rest.Length)
                return false;
            Current = new Message(rest[..(int)len]);
            int next = Align((int)len);
            rest = next >= rest.Length ? [] : rest[next..];
            return true;
        }
    }

    public static MessageEnumerator Messages(ReadOnlySpan<byte> datagram) => new(datagram);

    /// <summary>The attributes of a payload (nlattr chain, 4-byte aligned).</summary>
    public ref struct AttrEnumerator
    {
        private ReadOnlySpan<byte> rest;

        public AttrEnumerator(ReadOnlySpan<byte> attrs)
        {
            rest = attrs;
            Type = 0;
            Value = default;
        }

        /// <summary>nla_type without NLA_F_NESTED / NLA_F_NET_BYTEORDER.</summary>
        public ushort Type { get; private set; }
        public ReadOnlySpan<byte> Value { get; private set; }

        public bool MoveNext()
        {
            if (rest.Length < 4)
                return false;
            ushort len = BinaryPrimitives.ReadUInt16LittleEndian(rest);
            if (len < 4 || len > rest.Length)
                return false;
            Type = (ushort)(BinaryPrimitives.ReadUInt16LittleEndian(rest[2..]) & NLA_TYPE_MASK);
            Value = rest[4..len];
            int next = Align(len);
            rest = next >= rest.Length ? [] : rest[next..];
            return true;
        }
    }

    public static int Align(int len) => (len + 3) & ~3;

    /// <summary>
    /// Whether the message is a ctnetlink entry (an event or a dump row), and its type:
    /// IPCTNL_MSG_CT_NEW with NLM_F_CREATE|NLM_F_EXCL is a new entry, without them an
    /// update (or, with NLM_F_MULTI, a dump row); IPCTNL_MSG_CT_DELETE is a destroy.
    /// </summary>
    public static bool IsEntry(in Message m, out CtEventType type)
    {
        type = CtEventType.Dump;
        if (m.Type == MsgType(IPCTNL_MSG_CT_DELETE))
        {
            type = CtEventType.Destroy;
            return true;
        }
        if (m.Type != MsgType(IPCTNL_MSG_CT_NEW))
            return false;
        if ((m.Flags & NLM_F_MULTI) != 0)
            type = CtEventType.Dump;
        else if ((m.Flags & (NLM_F_CREATE | NLM_F_EXCL)) != 0)
            type = CtEventType.New;
        else
            type = CtEventType.Update;
        return true;
    }

    /// <summary>
    /// Decodes a ctnetlink entry message (header included). False when it is not one or
    /// is malformed (an attribute too short for its type, no original tuple).
    /// </summary>
    public static bool TryParseEntry(ReadOnlySpan<byte> message, out ConntrackEntry entry)
    {
        entry = default;
        if (message.Length < NlmsgHdrLen + NfgenmsgLen)
            return false;
        var m = new Message(message);
        if (!IsEntry(m, out var type))
            return false;
        entry.Type = type;
        entry.Family = m.Payload[0];
        var attrs = new AttrEnumerator(m.Payload[NfgenmsgLen..]);
        while (attrs.MoveNext())
        {
            var v = attrs.Value;
            switch (attrs.Type)
            {
                case CTA_TUPLE_ORIG:
                    if (!ParseTuple(v, ref entry.Orig))
                        return false;
                    entry.Fields |= CtFields.Orig;
                    break;
                case CTA_TUPLE_REPLY:
                    if (!ParseTuple(v, ref entry.Reply))
                        return false;
                    entry.Fields |= CtFields.Reply;
                    break;
                case CTA_STATUS when v.Length >= 4:
                    entry.Status = (CtStatus)BinaryPrimitives.ReadUInt32BigEndian(v);
                    entry.Fields |= CtFields.Status;
                    break;
                case CTA_MARK when v.Length >= 4:
                    entry.Mark = BinaryPrimitives.ReadUInt32BigEndian(v);
                    entry.Fields |= CtFields.Mark;
                    break;
                case CTA_ZONE when v.Length >= 2:
                    entry.Zone = BinaryPrimitives.ReadUInt16BigEndian(v);
                    entry.Fields |= CtFields.Zone;
                    break;
                case CTA_ID when v.Length >= 4:
                    entry.Id = BinaryPrimitives.ReadUInt32BigEndian(v);
                    entry.Fields |= CtFields.Id;
                    break;
                case CTA_TIMEOUT when v.Length >= 4:
                    entry.Timeout = BinaryPrimitives.ReadUInt32BigEndian(v);
                    entry.Fields |= CtFields.Timeout;
                    break;
                case CTA_USE:
                    entry.Fields |= CtFields.Use;
                    break;
                case CTA_PROTOINFO:
                    if (TcpState(v) is byte state)
                    {
                        entry.TcpState = state;
                        entry.Fields |= CtFields.TcpState;
                    }
                    break;
                case CTA_COUNTERS_ORIG:
                    Counters(v, out entry.PacketsOrig, out entry.BytesOrig);
                    entry.Fields |= CtFields.Counters;
                    break;
                case CTA_COUNTERS_REPLY:
                    Counters(v, out entry.PacketsReply, out entry.BytesReply);
                    entry.Fields |= CtFields.Counters;
                    break;
                case CTA_TIMESTAMP:
                    {
                        var ts = new AttrEnumerator(v);
                        while (ts.MoveNext())
                        {
                            if (ts.Value.Length < 8)
                                continue;
                            if (ts.Type == CTA_TIMESTAMP_START)
                                entry.StartNs = BinaryPrimitives.ReadUInt64BigEndian(ts.Value);
                            else if (ts.Type == CTA_TIMESTAMP_STOP)
                                entry.StopNs = BinaryPrimitives.ReadUInt64BigEndian(ts.Value);
                        }
                        entry.Fields |= CtFields.Timestamp;
                        break;
                    }
            }
        }
        return entry.Has(CtFields.Orig);
    }

    private static bool ParseTuple(ReadOnlySpan<byte> v, ref CtTuple t)
    {
        var a = new AttrEnumerator(v);
        bool ip = false;
        while (a.MoveNext())
        {
            switch (a.Type)
            {
                case CTA_TUPLE_IP:
                    {
                        var ipa = new AttrEnumerator(a.Value);
                        while (ipa.MoveNext())
                        {
                            var x = ipa.Value;
                            switch (ipa.Type)
                            {
                                case CTA_IP_V4_SRC when x.Length >= 4: x[..4].CopyTo(t.Src); ip = true; break;
                                case CTA_IP_V4_DST when x.Length >= 4: x[..4].CopyTo(t.Dst); ip = true; break;
                                case CTA_IP_V6_SRC when x.Length >= 16: x[..16].CopyTo(t.Src); ip = true; break;
                                case CTA_IP_V6_DST when x.Length >= 16: x[..16].CopyTo(t.Dst); ip = true; break;
                            }
                        }
                        break;
                    }
                case CTA_TUPLE_PROTO:
                    {
                        var pa = new AttrEnumerator(a.Value);
                        while (pa.MoveNext())
                        {
                            var x = pa.Value;
                            if (x.Length == 0)
                                continue;
                            switch (pa.Type)
                            {
                                case CTA_PROTO_NUM: t.Proto = x[0]; break;
                                case CTA_PROTO_SRC_PORT when x.Length >= 2: t.SrcPort = BinaryPrimitives.ReadUInt16BigEndian(x); break;
                                case CTA_PROTO_DST_PORT when x.Length >= 2: t.DstPort = BinaryPrimitives.ReadUInt16BigEndian(x); break;
                                case CTA_PROTO_ICMP_ID or CTA_PROTO_ICMPV6_ID when x.Length >= 2: t.IcmpId = BinaryPrimitives.ReadUInt16BigEndian(x); break;
                                case CTA_PROTO_ICMP_TYPE or CTA_PROTO_ICMPV6_TYPE: t.IcmpType = x[0]; break;
                                case CTA_PROTO_ICMP_CODE or CTA_PROTO_ICMPV6_CODE: t.IcmpCode = x[0]; break;
                            }
                        }
                        break;
                    }
                case CTA_TUPLE_ZONE when a.Value.Length >= 2:
                    t.Zone = BinaryPrimitives.ReadUInt16BigEndian(a.Value);
                    break;
            }
        }
        return ip;
    }

    private static byte? TcpState(ReadOnlySpan<byte> protoinfo)
    {
        var a = new AttrEnumerator(protoinfo);
        while (a.MoveNext())
        {
            if (a.Type != CTA_PROTOINFO_TCP)
                continue;
            var t = new AttrEnumerator(a.Value);
            while (t.MoveNext())
                if (t.Type == CTA_PROTOINFO_TCP_STATE && t.Value.Length >= 1)
                    return t.Value[0];
        }
        return null;
    }

    private static void Counters(ReadOnlySpan<byte> v, out ulong packets, out ulong bytes)
    {
        packets = bytes = 0;
        var a = new AttrEnumerator(v);
        while (a.MoveNext())
        {
            if (a.Value.Length < 8)
                continue;
            if (a.Type == CTA_COUNTERS_PACKETS)
                packets = BinaryPrimitives.ReadUInt64BigEndian(a.Value);
            else if (a.Type == CTA_COUNTERS_BYTES)
                bytes = BinaryPrimitives.ReadUInt64BigEndian(a.Value);
        }
    }

    /// <summary>The status bits' names (enum ip_conntrack_status without IPS_), joined by '|'.</summary>
    public static string StatusText(CtStatus s)
    {
        if (s == CtStatus.None)
            return "";
        var parts = new List<string>(8);
        foreach (var (bit, name) in StatusNames)
            if ((s & bit) != 0)
                parts.Add(name);
        return string.Join('|', parts);
    }

    private static readonly (CtStatus Bit, string Name)[] StatusNames =
    [
        (CtStatus.Expected, "EXPECTED"), (CtStatus.SeenReply, "SEEN_REPLY"), (CtStatus.Assured, "ASSURED"),
        (CtStatus.Confirmed, "CONFIRMED"), (CtStatus.SrcNat, "SRC_NAT"), (CtStatus.DstNat, "DST_NAT"),
        (CtStatus.SeqAdjust, "SEQ_ADJUST"), (CtStatus.SrcNatDone, "SRC_NAT_DONE"), (CtStatus.DstNatDone, "DST_NAT_DONE"),
        (CtStatus.Dying, "DYING"), (CtStatus.FixedTimeout, "FIXED_TIMEOUT"), (CtStatus.Template, "TEMPLATE"),
        (CtStatus.Untracked, "UNTRACKED"), (CtStatus.Helper, "HELPER"), (CtStatus.Offload, "OFFLOAD"),
        (CtStatus.HwOffload, "HW_OFFLOAD"),
    ];
}
