using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Forensics.Datapath.Abi;

namespace Forensics.Datapath.Control;

// C# mirrors of bpf/include/fx_maps.h: the keys and values of the datapath's
// maps. MapAbiTests checks every size, offset and enum value against the
// compiled object's BTF.

/// <summary>Cilium's drop reasons the datapath uses (same numbers as Cilium's bpf/lib/drop_reasons.h).</summary>
public enum DropReason : ushort
{
    InvalidSip = 132,
    Policy = 133,
    Invalid = 134,
    CtInvalidHdr = 135,
    WriteError = 141,
    CsumL3 = 153,
    CsumL4 = 154,
    CtCreateFailed = 155,
    NoService = 158,
    NatNoMapping = 167,
    FragNotFound = 175,
    PolicyDeny = 181,
}

/// <summary>Cilium's reserved identities and identity ranges.</summary>
public enum ReservedIdentity : uint
{
    Unknown = 0,
    Host = 1,
    World = 2,
    Unmanaged = 3,
    Health = 4,
    Init = 5,
    RemoteNode = 6,
    KubeApiserver = 7,
    Ingress = 8,
    WorldIpv4 = 9,
    WorldIpv6 = 10,
    MinCluster = 256,
    MinLocal = 16777216,
}

[Flags]
public enum EndpointFlags : byte
{
    None = 0,
    IngressEnforced = 1,
    EgressEnforced = 2,
    Audit = 4,
}

[Flags]
public enum PolicyFlags : ushort
{
    None = 0,
    Allow = 1,
    Deny = 2,
}

[Flags]
public enum CtFlags : byte
{
    None = 0,
    RevDnat = 1,
    ReplySeen = 2,
    Closing = 4,
    Audited = 8,
}

[Flags]
public enum NatFlags : byte
{
    None = 0,
    ReplySeen = 1,
}

public static class MapLimits
{
    public const int IpcacheMax = 16384;
    public const int EndpointsMax = 1024;
    public const int PolicyMax = 65536;
    public const int CtMax = 65536;
    public const int CtClosedMax = 16384;
    public const int ServicesMax = 1024;
    public const int BackendsMax = 16384;
    public const int LbFlowsMax = 65536;
    public const int NatMax = 65536;
    public const int FragsMax = 8192;
    public const int MaxBackendsPerService = 256;
    public const int SnatPortTries = 8;
}

/// <summary>Address helpers for the 16-byte address fields (IPv4 in the first 4 bytes).</summary>
public static class MapAddress
{
    public const byte AfInet = 2;
    public const byte AfInet6 = 10;

    public static Bytes16 From(IPAddress ip)
    {
        ArgumentNullException.ThrowIfNull(ip);
        var b = new Bytes16();
        ip.GetAddressBytes().CopyTo((Span<byte>)b);
        return b;
    }

    public static byte Family(IPAddress ip)
    {
        ArgumentNullException.ThrowIfNull(ip);
        return ip.AddressFamily == AddressFamily.InterNetworkV6 ? AfInet6 : AfInet;
    }

    public static IPAddress To(in Bytes16 addr, byte family) => EventReader.Address(addr, family);
}

[StructLayout(LayoutKind.Sequential)]
public struct IpcacheKey
{
    public uint Prefixlen;
    public byte Family;
    public Bytes3 Pad;
    public Bytes16 Addr;

    public static IpcacheKey Of(IPNetwork net) => new()
    {
        Prefixlen = 32 + (uint)net.PrefixLength,
        Family = MapAddress.Family(net.BaseAddress),
        Addr = MapAddress.From(net.BaseAddress),
    };
}

[StructLayout(LayoutKind.Sequential)]
public struct IpcacheValue
{
    public uint Identity;
    public ushort EndpointId;
    public ushort Pad;
}

[StructLayout(LayoutKind.Sequential)]
public struct Endpoint
{
    public Bytes16 Addr;
    public uint Identity;
    public ushort Id;
    public byte Family;
    public EndpointFlags Flags;
}

/// <summary>The prefix lengths of the policy LPM trie's keys (fx_policy_prefix).</summary>
public static class PolicyPrefix
{
    public const uint AnyProto = 64;
    public const uint AnyPort = 72;
    public const uint Port = 80;
    public const uint Full = 96;
}

[StructLayout(LayoutKind.Sequential)]
public struct PolicyKey : IEquatable<PolicyKey>
{
    public uint Prefixlen;
    public ushort EndpointId;
    public Dir Dir;
    public byte Pad1;
    public uint Identity;
    public byte Proto;
    public byte Pad2;
    /// <summary>Network byte order (a prefix of its bits is a port range).</summary>
    public ushort Dport;

    /// <summary>A key for (endpoint, direction, identity) and protocol 0 (any), or a protocol and a port block port/bits (bits 0: any port).</summary>
    public static PolicyKey Of(ushort endpoint, Dir dir, uint identity, byte proto, ushort port, int portBits) => new()
    {
        Prefixlen = proto == 0 ? PolicyPrefix.AnyProto : portBits == 0 ? PolicyPrefix.AnyPort : PolicyPrefix.Port + (uint)portBits,
        EndpointId = endpoint,
        Dir = dir,
        Identity = identity,
        Proto = proto,
        Dport = proto == 0 || portBits == 0 ? (ushort)0 : System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(port),
    };

    /// <summary>The first port the key covers (host order).</summary>
    public readonly ushort FirstPort => System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(Dport);

    /// <summary>The number of port bits the key fixes (0: any port, 16: one port).</summary>
    public readonly int PortBits => Prefixlen <= PolicyPrefix.AnyPort ? 0 : (int)(Prefixlen - PolicyPrefix.Port);

    /// <summary>Whether this key covers every packet <paramref name="other"/> covers (same endpoint, direction and identity).</summary>
    public readonly bool Covers(in PolicyKey other)
    {
        if (EndpointId != other.EndpointId || Dir != other.Dir || Identity != other.Identity || Prefixlen > other.Prefixlen)
            return false;
        if (Prefixlen == PolicyPrefix.AnyProto)
            return true;
        if (Proto != other.Proto)
            return false;
        int bits = PortBits;
        if (bits == 0)
            return true;
        uint mask = 0xffffu << (16 - bits) & 0xffff;
        return (FirstPort & mask) == (other.FirstPort & mask);
    }

    public readonly bool Equals(PolicyKey other) =>
        Prefixlen == other.Prefixlen && EndpointId == other.EndpointId && Dir == other.Dir && Identity == other.Identity
        && Proto == other.Proto && Dport == other.Dport;

    public override readonly bool Equals(object? obj) => obj is PolicyKey k && Equals(k);

    public override readonly int GetHashCode() => HashCode.Combine(Prefixlen, EndpointId, Dir, Identity, Proto, Dport);

    public static bool operator ==(PolicyKey a, PolicyKey b) => a.Equals(b);

    public static bool operator !=(PolicyKey a, PolicyKey b) => !a.Equals(b);
}

[StructLayout(LayoutKind.Sequential)]
public struct PolicyValue
{
    public PolicyFlags Flags;
    /// <summary>1 when the entry names a protocol (an L4 match: L3-L4 or L4-only).</summary>
    public byte ProtoGiven;
    public byte Pad;
    public uint RuleId;
    public ulong Hits;
}

[StructLayout(LayoutKind.Sequential)]
public struct CtKey
{
    public Bytes16 Saddr;
    public Bytes16 Daddr;
    public ushort Sport;
    public ushort Dport;
    public byte Proto;
    public Dir Dir;
    public byte Family;
    public byte Pad;
}

/// <summary>
/// A tracked connection at one endpoint (fx_ct_entry). Packets and bytes per direction: forward is the direction of
/// the connection's first packet (the key's tuple), reverse the replies; bytes are IP bytes (from the IP header on).
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public struct CtEntry
{
    public ulong CreatedNs;
    public ulong LastNs;
    public ulong Packets;
    public ulong Bytes;
    public ulong RevPackets;
    public ulong RevBytes;
    public Bytes16 NatAddr;
    public ushort NatPort;
    public ushort EndpointId;
    public uint ServiceId;
    public uint RemoteIdentity;
    public CtFlags Flags;
    public PolicyMatch Match;
    public byte TraceFlags;
    public byte TraceTick;

    /// <summary>TCP flags seen forward (FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 URG 0x20 ECE 0x40 CWR 0x80).</summary>
    public byte TcpFlags;

    /// <summary>TCP flags seen in replies.</summary>
    public byte RevTcpFlags;

    /// <summary>Packets captured at this endpoint so far (capture of a connection's first packets).</summary>
    public ushort Captured;
    public uint Pad;
}

/// <summary>fx_ct_closed's key: a closed connection whose tuple was opened again, by its key and creation time.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct CtClosedKey
{
    public CtKey Key;
    public ulong CreatedNs;
}

/// <summary>fx_ct_stats (per CPU): conntrack entries created and creations the map refused.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct CtStats
{
    public ulong Created;
    public ulong Failed;
}

[StructLayout(LayoutKind.Sequential)]
public struct ServiceKey
{
    public Bytes16 Addr;
    public ushort Port;
    public byte Proto;
    public byte Family;
}

[StructLayout(LayoutKind.Sequential)]
public struct Service
{
    public uint Id;
    public ushort Count;
    public ushort Pad;
    /// <summary>sessionAffinity ClientIP: seconds a client keeps its backend; 0 for none.</summary>
    public uint AffinityTimeout;
}

[StructLayout(LayoutKind.Sequential)]
public struct AffinityKey
{
    public uint ServiceId;
    public uint Pad;
    public Bytes16 Client;
}

[StructLayout(LayoutKind.Sequential)]
public struct Affinity
{
    public ulong LastNs;
    public uint Slot;
    public uint Pad;
}

[StructLayout(LayoutKind.Sequential)]
public struct NodeportEntry
{
    public Bytes16 Addr;
    public ushort Port;
    public NatFlags Flags;
    public byte Seen;
    public uint ServiceId;
}

[StructLayout(LayoutKind.Sequential)]
public struct BackendKey
{
    public uint ServiceId;
    public uint Slot;
}

[StructLayout(LayoutKind.Sequential)]
public struct Backend
{
    public Bytes16 Addr;
    public ushort Port;
    public byte Family;
    public byte Pad;
}

[StructLayout(LayoutKind.Sequential)]
public struct LbFlow
{
    public Bytes16 Addr;
    public ushort Port;
    public ushort Slot;
    public uint ServiceId;
}

[StructLayout(LayoutKind.Sequential)]
public struct NatEntry
{
    public Bytes16 Addr;
    public ushort Port;
    public NatFlags Flags;
    public byte Seen;
    public uint Identity;
    public ulong CreatedNs;
}

[StructLayout(LayoutKind.Sequential)]
public struct NatConfig
{
    public Bytes16 NodeAddr;
    public Bytes16 PodNet;
    public Bytes16 SvcNet;
    public byte PodPrefix;
    public byte SvcPrefix;
    public byte Family;
    public byte Enabled;
}

/// <summary>fx_dns ring buffer record header (struct fx_dns_answer); <see cref="Len"/> payload bytes follow it.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct DnsAnswer
{
    public Bytes16 Saddr;
    public Bytes16 Daddr;
    public ushort EndpointId;
    public ushort Sport;
    public ushort Len;
    public byte Family;
    public byte Proto;
}
