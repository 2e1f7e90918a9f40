using System.Globalization;

namespace Forensics.Format;

/// <summary>
/// ICMP type and code names as gopacket prints them (layers/icmp4.go and icmp6.go, ICMPv4TypeCode.String and
/// ICMPv6TypeCode.String): the type's name ("EchoRequest"); with the code's name when the type names its codes
/// ("DestinationUnreachable(Port)"); "Type(Code: N)" for a code it does not name (or a nonzero code of a type
/// without code names); "T(C)" for a type it does not know. cilium monitor's connection summary prints this
/// after the addresses ("10.0.0.1 -> 10.0.0.2 EchoRequest"); Hubble's summary is "ICMPv4 " or "ICMPv6 " and it.
/// </summary>
public static class IcmpNames
{
    private static readonly Dictionary<byte, (string Type, Dictionary<byte, string>? Codes)> V4 = new()
    {
        [0] = ("EchoReply", null),
        [3] = ("DestinationUnreachable", new()
        {
            [0] = "Net", [1] = "Host", [2] = "Protocol", [3] = "Port", [4] = "FragmentationNeeded", [5] = "SourceRoutingFailed",
            [6] = "NetUnknown", [7] = "HostUnknown", [8] = "SourceIsolated", [9] = "NetAdminProhibited", [10] = "HostAdminProhibited",
            [11] = "NetTOS", [12] = "HostTOS", [13] = "CommAdminProhibited", [14] = "HostPrecedence", [15] = "PrecedenceCutoff",
        }),
        [4] = ("SourceQuench", null),
        [5] = ("Redirect", new() { [0] = "Net", [1] = "Host", [2] = "TOS+Net", [3] = "TOS+Host" }),
        [8] = ("EchoRequest", null),
        [9] = ("RouterAdvertisement", null),
        [10] = ("RouterSolicitation", null),
        [11] = ("TimeExceeded", new() { [0] = "TTLExceeded", [1] = "FragmentReassemblyTimeExceeded" }),
        [12] = ("ParameterProblem", new() { [0] = "PointerIndicatesError", [1] = "MissingOption", [2] = "BadLength" }),
        [13] = ("TimestampRequest", null),
        [14] = ("TimestampReply", null),
        [15] = ("InfoRequest", null),
        [16] = ("InfoReply", null),
        [17] = ("AddressMaskRequest", null),
        [18] = ("AddressMaskReply", null),
    };

    private static readonly Dictionary<byte, (string Type, Dictionary<byte, string>? Codes)> V6 = new()
    {
        [1] = ("DestinationUnreachable", new()
        {
            [0] = "NoRouteToDst", [1] = "AdminProhibited", [2] = "BeyondScopeOfSrc", [3] = "AddressUnreachable",
            [4] = "PortUnreachable", [5] = "SrcAddressFailedPolicy", [6] = "RejectRouteToDst",
        }),
        [2] = ("PacketTooBig", null),
        [3] = ("TimeExceeded", new() { [0] = "HopLimitExceeded", [1] = "FragmentReassemblyTimeExceeded" }),
        [4] = ("ParameterProblem", new() { [0] = "ErroneousHeaderField", [1] = "UnrecognizedNextHeader", [2] = "UnrecognizedNextHeader" }),
        [128] = ("EchoRequest", null),
        [129] = ("EchoReply", null),
        [133] = ("RouterSolicitation", null),
        [134] = ("RouterAdvertisement", null),
        [135] = ("NeighborSolicitation", null),
        [136] = ("NeighborAdvertisement", null),
        [137] = ("Redirect", null),
    };

    /// <summary>gopacket's TypeCode.String() of an ICMPv4 (v6 false) or ICMPv6 message.</summary>
    public static string TypeCode(bool v6, byte type, byte code)
    {
        var ci = CultureInfo.InvariantCulture;
        if (!(v6 ? V6 : V4).TryGetValue(type, out var info))
            return string.Create(ci, $"{type}({code})");
        if (info.Codes is null)
            return code == 0 ? info.Type : string.Create(ci, $"{info.Type}(Code: {code})");
        return info.Codes.TryGetValue(code, out var name) ? $"{info.Type}({name})" : string.Create(ci, $"{info.Type}(Code: {code})");
    }

    /// <summary>Hubble's flow summary of an ICMP message (parser/threefour): "ICMPv4 EchoRequest", "ICMPv6 EchoReply".</summary>
    public static string HubbleSummary(bool v6, byte type, byte code) => (v6 ? "ICMPv6 " : "ICMPv4 ") + TypeCode(v6, type, code);

    /// <summary>The gopacket name in a Hubble-form ICMP summary ("ICMPv4 EchoRequest" -> "EchoRequest"); null for another summary.</summary>
    public static string? FromHubbleSummary(string? summary) =>
        summary is not null && (summary.StartsWith("ICMPv4 ", StringComparison.Ordinal) || summary.StartsWith("ICMPv6 ", StringComparison.Ordinal))
            ? summary[7..] : null;
}
