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
public enum PolicyFlags : uint
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

[StructLayout(LayoutKind.Sequential)]
public struct PolicyKey
{
    public uint Identity;
    public ushort EndpointId;
    public ushort Dport;
    public byte Proto;
    public Dir Dir;
    public ushort Pad;
}

[StructLayout(LayoutKind.Sequential)]
public struct PolicyValue
{
    public PolicyFlags Flags;
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

[StructLayout(LayoutKind.Sequential)]
public struct CtEntry
{
    public ulong CreatedNs;
    public ulong LastNs;
    public ulong Packets;
    public ulong Bytes;
    public Bytes16 NatAddr;
    public ushort NatPort;
    public ushort EndpointId;
    public uint ServiceId;
    public uint RemoteIdentity;
    public CtFlags Flags;
    public PolicyMatch Match;
    public byte TraceFlags;
    public byte TraceTick;
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
    public byte Pad;
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
