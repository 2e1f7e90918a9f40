using Forensics.Datapath.Abi;

namespace Forensics.Datapath.Conntrack;

// Plain data decoded in place from a message (like the event ABI mirrors) and copied by value:
// fields, not properties, so that the decoder fills them by reference without copies.
#pragma warning disable CA1051

/// <summary>What a ctnetlink message says happened to the entry.</summary>
public enum CtEventType : byte
{
    /// <summary>A row of a table dump (IPCTNL_MSG_CT_GET with NLM_F_DUMP), not an event.</summary>
    Dump = 0,

    /// <summary>NFNLGRP_CONNTRACK_NEW: the entry was confirmed (its first packet passed).</summary>
    New = 1,

    /// <summary>NFNLGRP_CONNTRACK_UPDATE: status, protocol state, mark or the like changed.</summary>
    Update = 2,

    /// <summary>NFNLGRP_CONNTRACK_DESTROY: the entry left the table (counters and timestamps are final).</summary>
    Destroy = 3,
}

/// <summary>enum ip_conntrack_status (linux/netfilter/nf_conntrack_common.h).</summary>
[Flags]
public enum CtStatus : uint
{
    None = 0,
    Expected = 1 << 0,
    SeenReply = 1 << 1,
    Assured = 1 << 2,
    Confirmed = 1 << 3,
    SrcNat = 1 << 4,
    DstNat = 1 << 5,
    SeqAdjust = 1 << 6,
    SrcNatDone = 1 << 7,
    DstNatDone = 1 << 8,
    Dying = 1 << 9,
    FixedTimeout = 1 << 10,
    Template = 1 << 11,
    Untracked = 1 << 12,
    Helper = 1 << 13,
    Offload = 1 << 14,
    HwOffload = 1 << 15,
}

/// <summary>Which optional attributes a message carried.</summary>
[Flags]
public enum CtFields : ushort
{
    None = 0,
    Orig = 1 << 0,
    Reply = 1 << 1,
    Status = 1 << 2,
    Mark = 1 << 3,
    Zone = 1 << 4,
    Id = 1 << 5,
    Counters = 1 << 6,
    Timestamp = 1 << 7,
    TcpState = 1 << 8,
    Timeout = 1 << 9,
    Use = 1 << 10,
}

/// <summary>One direction's tuple (CTA_TUPLE_ORIG or CTA_TUPLE_REPLY). Ports in host order.</summary>
public struct CtTuple
{
    public Bytes16 Src;
    public Bytes16 Dst;
    public ushort SrcPort;
    public ushort DstPort;
    public byte Proto;
    public byte IcmpType;
    public byte IcmpCode;
    public ushort IcmpId;

    /// <summary>CTA_TUPLE_ZONE (a zone that applies to this direction only); 0 when absent.</summary>
    public ushort Zone;

    /// <summary>The port-like fields as one pair: TCP/UDP/SCTP ports, or the ICMP id for both (as conntrack keys ICMP).</summary>
    public readonly (ushort Src, ushort Dst) Ports => Proto is 1 or 58 ? (IcmpId, IcmpId) : (SrcPort, DstPort);
}

/// <summary>
/// One conntrack entry as a ctnetlink message carried it (an event or a dump row).
/// Plain data, copied out of the message: valid after the receive buffer is reused.
/// </summary>
public struct ConntrackEntry
{
    public CtEventType Type;

    /// <summary>AF_INET (2) or AF_INET6 (10), from nfgenmsg.</summary>
    public byte Family;

    public CtFields Fields;
    public CtTuple Orig;
    public CtTuple Reply;
    public CtStatus Status;
    public uint Mark;

    /// <summary>CTA_ZONE; absent (0) for the default zone.</summary>
    public ushort Zone;

    /// <summary>CTA_ID: the kernel's id of the entry, stable over its life.</summary>
    public uint Id;

    /// <summary>CTA_TIMEOUT: seconds until the entry expires.</summary>
    public uint Timeout;

    /// <summary>CTA_PROTOINFO_TCP_STATE (enum tcp_conntrack).</summary>
    public byte TcpState;

    /// <summary>CTA_COUNTERS_ORIG/REPLY (only with net.netfilter.nf_conntrack_acct=1).</summary>
    public ulong PacketsOrig, BytesOrig, PacketsReply, BytesReply;

    /// <summary>CTA_TIMESTAMP start/stop, CLOCK_REALTIME ns (only with net.netfilter.nf_conntrack_timestamp=1); stop only on destroy.</summary>
    public ulong StartNs, StopNs;

    public readonly bool Has(CtFields f) => (Fields & f) == f;

    /// <summary>The destination was translated: the original destination differs from the reply's source.</summary>
    public readonly bool IsDnat => Has(CtFields.Orig | CtFields.Reply)
        && (!Same(Orig.Dst, Reply.Src) || Orig.Ports.Dst != Reply.Ports.Src);

    /// <summary>The source was translated: the original source differs from the reply's destination.</summary>
    public readonly bool IsSnat => Has(CtFields.Orig | CtFields.Reply)
        && (!Same(Orig.Src, Reply.Dst) || Orig.Ports.Src != Reply.Ports.Dst);

    /// <summary>DNAT, SNAT or both (the original tuple differs from the reversed reply tuple).</summary>
    public readonly bool IsTranslated => IsDnat || IsSnat;

    /// <summary>The original direction after translation: (source, destination) as the reply tuple reversed.</summary>
    public readonly (Bytes16 Src, ushort SrcPort, Bytes16 Dst, ushort DstPort) Translated =>
        (Reply.Dst, Reply.Ports.Dst, Reply.Src, Reply.Ports.Src);

    private static bool Same(in Bytes16 a, in Bytes16 b) => ((ReadOnlySpan<byte>)a).SequenceEqual(b);
}
