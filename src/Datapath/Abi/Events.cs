using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Forensics.Datapath.Abi;

// C# mirrors of bpf/include/fx_abi.h. Plain sequential readonly structs read
// straight off the ring buffer with MemoryMarshal.Read. A test reads the
// compiled objects' BTF and checks every size, offset and enum value here.

public enum EventKind : byte
{
    None = 0,
    Drop = 1,
    Policy = 2,
    Nat = 3,
    Trace = 4,
    Capture = 5,
    Exec = 6,
    Exit = 7,
    Connect = 8,
    Kdrop = 9,
    Max = 10,
}

public enum ObsPoint : byte
{
    FromEndpoint = 0,
    ToEndpoint = 1,
    Test = 2,
    FromNetwork = 3,
    ToNetwork = 4,
}

public enum Dir : byte
{
    Ingress = 0,
    Egress = 1,
}

public enum CtState : byte
{
    None = 0,
    New = 1,
    Established = 2,
    Reply = 3,
    Related = 4,
}

public enum VerdictAction : byte
{
    Deny = 0,
    Allow = 1,
    Audit = 2,
}

public enum PolicyMatch : byte
{
    None = 0,
    L3Only = 1,
    L3L4 = 2,
    L4Only = 3,
    All = 4,
}

public enum NatKind : byte
{
    Dnat = 1,
    RevDnat = 2,
    Snat = 3,
    RevSnat = 4,
}

public enum ConnectKind : byte
{
    Tcp = 1,
    Udp = 2,
    UdpSend = 3,
}

public enum SrcFile : byte
{
    Unknown = 0,
    Datapath = 1,
    Policy = 2,
    Conntrack = 3,
    Lb = 4,
    Nat = 5,
    Parse = 6,
}

/// <summary>The BPF source files a drop can name (fx_abi.h FX_FILE_*), by their path under bpf/.</summary>
public static class SrcFiles
{
    public static string Path(SrcFile f) => Forensics.Format.Names.SourceFile((byte)f);

    /// <summary>
    /// The file as cilium monitor names a drop's file (its BPF file list, pkg/monitor/api/files.go:
    /// "bpf_lxc.c", "conntrack.h"): the file's own name without a directory; an unknown id as "unknown(N)".
    /// </summary>
    public static string MonitorName(SrcFile f) =>
        f == SrcFile.Unknown || !Enum.IsDefined(f) ? $"unknown({(byte)f})" : System.IO.Path.GetFileName(Path(f));
}

[Flags]
public enum ExecFlags : uint
{
    None = 0,
    ArgsTruncated = 1,
    FilenameTruncated = 2,
    CwdTruncated = 4,
    Procfs = 8,
}

public static class Limits
{
    public const int FilenameMax = 256;
    public const int ArgsMax = 1024;
    public const int CwdMax = 256;
    public const int CommLen = 16;
    public const int CaptureMax = 256;
    public const byte AbiVersion = 2;
}

[InlineArray(16)] public struct Bytes16 { private byte e0; }
[InlineArray(3)] public struct Bytes3 { private byte e0; }
[InlineArray(4)] public struct Bytes4 { private byte e0; }
[InlineArray(6)] public struct Bytes6 { private byte e0; }
[InlineArray(7)] public struct Bytes7 { private byte e0; }
[InlineArray(256)] public struct Bytes256 { private byte e0; }
[InlineArray(1024)] public struct Bytes1024 { private byte e0; }

[StructLayout(LayoutKind.Sequential)]
public readonly struct Hdr
{
    public readonly EventKind Kind;
    public readonly byte Version;
    public readonly ushort Size;
    public readonly uint Cpu;
    public readonly ulong Ktime;
}

[StructLayout(LayoutKind.Sequential)]
public readonly struct Tuple
{
    public readonly Bytes16 Saddr;
    public readonly Bytes16 Daddr;
    public readonly ushort Sport;
    public readonly ushort Dport;
    public readonly byte Proto;
    public readonly byte Family;
    public readonly byte TcpFlags;

    /// <summary>FX_TUPLE_*: <see cref="IcmpFlag"/> when Sport/Dport are an ICMP message's type and code.</summary>
    public readonly byte Flags;

    /// <summary>FX_TUPLE_ICMP.</summary>
    public const byte IcmpFlag = 0x01;

    /// <summary>Whether Sport/Dport carry the ICMP type and code (the datapath read them from the packet).</summary>
    public bool CarriesIcmp => (Flags & IcmpFlag) != 0;

    /// <summary>The source port: 0 for ICMP (Sport is its type there).</summary>
    public ushort SourcePort => CarriesIcmp ? (ushort)0 : Sport;

    /// <summary>The destination port: 0 for ICMP (Dport is its code there).</summary>
    public ushort DestinationPort => CarriesIcmp ? (ushort)0 : Dport;
}

[StructLayout(LayoutKind.Sequential)]
public readonly struct DpMeta
{
    public readonly uint SrcIdentity;
    public readonly uint DstIdentity;
    public readonly uint Ifindex;
    public readonly uint FlowId;
    public readonly uint PktLen;
    public readonly ushort EndpointId;
    public readonly ObsPoint ObsPoint;
    public readonly Dir Direction;
}

[StructLayout(LayoutKind.Sequential)]
public readonly struct DropEvent
{
    public readonly Hdr Hdr;
    public readonly Tuple Tuple;
    public readonly DpMeta Meta;
    public readonly ushort Reason;
    public readonly ushort Line;
    public readonly SrcFile File;
    public readonly CtState CtState;
    public readonly ushort Pad;
    /// <summary>Policy drops: the deny rules that matched (DatapathSnapshot.Rules); 0 when none did or not a policy drop.</summary>
    public readonly uint RuleId;
    public readonly uint Pad2;
}

[StructLayout(LayoutKind.Sequential)]
public readonly struct PolicyEvent
{
    public readonly Hdr Hdr;
    public readonly Tuple Tuple;
    public readonly DpMeta Meta;
    public readonly uint RemoteIdentity;
    public readonly VerdictAction Action;
    public readonly PolicyMatch Match;
    public readonly ushort Pad;
    /// <summary>The rules of the entry that decided (DatapathSnapshot.Rules); 0 when no entry matched (default deny).</summary>
    public readonly uint RuleId;
    public readonly uint Pad2;
}

[StructLayout(LayoutKind.Sequential)]
public readonly struct NatEvent
{
    public readonly Hdr Hdr;
    public readonly Tuple Orig;
    public readonly Tuple Xlated;
    public readonly DpMeta Meta;
    public readonly uint ServiceId;
    public readonly NatKind NatKind;
    public readonly Bytes3 Pad;
}

[StructLayout(LayoutKind.Sequential)]
public readonly struct TraceEvent
{
    public readonly Hdr Hdr;
    public readonly Tuple Tuple;
    public readonly DpMeta Meta;
    public readonly Bytes16 OrigAddr;
    public readonly CtState CtState;
    public readonly Bytes7 Pad;
}

[StructLayout(LayoutKind.Sequential)]
public readonly struct CaptureEvent
{
    public readonly Hdr Hdr;
    public readonly Tuple Tuple;
    public readonly DpMeta Meta;
    public readonly ushort CapLen;
    public readonly ushort DropReason;
    public readonly CtState CtState;
    public readonly Bytes3 Pad;
    public readonly Bytes256 Data;
}

[StructLayout(LayoutKind.Sequential)]
public readonly struct ExecEvent
{
    public readonly Hdr Hdr;
    public readonly uint Pid;
    public readonly uint Tid;
    public readonly uint Ppid;
    public readonly uint Uid;
    public readonly uint Gid;
    public readonly uint NetnsIno;
    public readonly ulong CgroupId;
    public readonly ulong ExecId;
    public readonly ulong ParentExecId;
    public readonly ulong StartTime;
    public readonly ExecFlags Flags;
    public readonly ushort FilenameLen;
    public readonly ushort ArgsLen;
    public readonly ushort CwdLen;
    public readonly ushort Argc;
    public readonly Bytes16 Comm;
    public readonly Bytes4 Pad;
    public readonly Bytes256 Filename;
    public readonly Bytes1024 Args;
    public readonly Bytes256 Cwd;
}

[StructLayout(LayoutKind.Sequential)]
public readonly struct ExitEvent
{
    public readonly Hdr Hdr;
    public readonly uint Pid;
    public readonly uint Tid;
    public readonly uint Ppid;
    public readonly uint ExitCode;
    public readonly ulong ExecId;
    public readonly ulong CgroupId;
    public readonly uint NetnsIno;
    public readonly uint Pad;
    public readonly Bytes16 Comm;
}

[StructLayout(LayoutKind.Sequential)]
public readonly struct ConnectEvent
{
    public readonly Hdr Hdr;
    public readonly Tuple Tuple;
    public readonly uint Pid;
    public readonly uint Tid;
    public readonly uint Uid;
    public readonly uint NetnsIno;
    public readonly ulong ExecId;
    public readonly ulong CgroupId;
    public readonly Bytes16 Comm;
    public readonly ConnectKind ConnectKind;
    /// <summary>The TracingPolicy selectors of its class that selected it (bit i: selector i of the class's filter); 0xff: no policy hooks the class.</summary>
    public readonly byte Selected;
    public readonly Bytes6 Pad;
}

[StructLayout(LayoutKind.Sequential)]
public readonly struct KdropEvent
{
    public readonly Hdr Hdr;
    public readonly Tuple Tuple;
    public readonly ulong Location;
    public readonly uint Reason;
    public readonly uint NetnsIno;
    public readonly uint Ifindex;
    public readonly uint PktLen;
    public readonly ushort L3Proto;
    public readonly Bytes6 Pad;
}

[StructLayout(LayoutKind.Sequential)]
public struct EmitStats
{
    public ulong Emitted;
    public ulong Failed;
}

[StructLayout(LayoutKind.Sequential)]
public struct Config
{
    public uint KindsEnabled;
    public uint Snaplen;
    public ulong WakeupBytes;
    public uint SelfPid;
    public uint TraceAggregate;
    public uint CaptureFirst;
    public uint Pad;
}
