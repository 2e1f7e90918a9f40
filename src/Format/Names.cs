using System.Globalization;

namespace Forensics.Format;

/// <summary>
/// The text a recording stores for the ABI's enum values (bpf/include/fx_abi.h), by number, as shared
/// string instances (no allocation per event). The recorder writes these, the lab prints them, the
/// query side reads them; a test ties every number to the C# mirror of the ABI's enums.
/// </summary>
public static class Names
{
    private static readonly string[] Protocols = [.. Enumerable.Range(0, 256).Select(p => p switch
    {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        58 => "icmpv6",
        132 => "sctp",
        _ => p.ToString(CultureInfo.InvariantCulture),
    })];

    private static readonly string[] Flags = [.. Enumerable.Range(0, 256).Select(FormatFlags)];

    /// <summary>An IP protocol's name as stored (tcp, udp, icmp, icmpv6, sctp) or its number as text.</summary>
    public static string Protocol(byte p) => Protocols[p];

    /// <summary>The protocol number of a stored protocol name (tcp -> 6), or of a number as text; -1 when neither.</summary>
    public static int ProtocolNumber(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        int i = Array.FindIndex(Protocols, p => string.Equals(p, name, StringComparison.OrdinalIgnoreCase));
        return i >= 0 ? i : -1;
    }

    /// <summary>TCP flags as cilium monitor prints them ("SYN", "SYN, ACK"); empty for other protocols.</summary>
    public static string TcpFlags(byte proto, byte flags) => proto == 6 ? Flags[flags] : "";

    private static string FormatFlags(int f)
    {
        var parts = new List<string>();
        if ((f & 0x02) != 0) parts.Add("SYN");
        if ((f & 0x10) != 0) parts.Add("ACK");
        if ((f & 0x01) != 0) parts.Add("FIN");
        if ((f & 0x04) != 0) parts.Add("RST");
        if ((f & 0x08) != 0) parts.Add("PSH");
        if ((f & 0x20) != 0) parts.Add("URG");
        if ((f & 0x40) != 0) parts.Add("ECE");
        if ((f & 0x80) != 0) parts.Add("CWR");
        return string.Join(", ", parts);
    }

    /// <summary>FX_OBS_*: where the datapath saw the packet.</summary>
    public static IReadOnlyList<string> ObsPoints { get; } = ["from-endpoint", "to-endpoint", "test", "from-network", "to-network"];

    public static string ObsPoint(byte o) => o < ObsPoints.Count ? ObsPoints[o] : "test";

    /// <summary>FX_DIR_*.</summary>
    public static IReadOnlyList<string> Directions { get; } = ["ingress", "egress"];

    public static string Direction(byte d) => d == 0 ? "ingress" : "egress";

    /// <summary>FX_CT_*: the conntrack state of a packet.</summary>
    public static IReadOnlyList<string> CtStates { get; } = ["none", "new", "established", "reply", "related"];

    public static string CtState(byte s) => s < CtStates.Count ? CtStates[s] : "none";

    /// <summary>FX_VERDICT_*: a policy verdict's action as stored (deny, allow, audit).</summary>
    public static IReadOnlyList<string> Actions { get; } = ["deny", "allow", "audit"];

    public static string Action(byte a) => a is 1 or 2 ? Actions[a] : "deny";

    /// <summary>A verdict as cilium monitor's policy-verdict lines and the lab say it (denied, allowed, audit).</summary>
    public static string Verdict(byte a) => a switch { 1 => "allowed", 2 => "audit", _ => "denied" };

    /// <summary>FX_MATCH_*: what part of a policy matched, as cilium monitor prints it.</summary>
    public static IReadOnlyList<string> Matches { get; } = ["none", "L3-Only", "L3-L4", "L4-Only", "all"];

    public static string Match(byte m) => m < Matches.Count ? Matches[m] : "none";

    /// <summary>FX_NAT_* (1-4): a translation as stored (dnat, rev-dnat, snat, rev-snat).</summary>
    public static IReadOnlyList<string> NatKinds { get; } = ["", "dnat", "rev-dnat", "snat", "rev-snat"];

    public static string Nat(byte k) => k is >= 1 and <= 4 ? NatKinds[k] : "rev-snat";

    /// <summary>A translation as the lab prints and its scenarios expect it (DNAT, rev-DNAT, SNAT, rev-SNAT).</summary>
    public static string NatLabel(byte k) => k switch { 1 => "DNAT", 2 => "rev-DNAT", 3 => "SNAT", 4 => "rev-SNAT", _ => "NAT" };

    /// <summary>FX_CONNECT_* (1-3).</summary>
    public static IReadOnlyList<string> ConnectKinds { get; } = ["", "tcp", "udp", "udp-send"];

    public static string Connect(byte k) => k is 1 or 2 ? ConnectKinds[k] : "udp-send";

    /// <summary>FX_FILE_*: the BPF source file a drop was decided in.</summary>
    public static IReadOnlyList<string> SourceFiles { get; } = ["unknown", "datapath.bpf.c", "lib/policy.h", "lib/conntrack.h", "lib/lb.h", "lib/nat.h", "lib/parse.h"];

    public static string SourceFile(byte f) => f < SourceFiles.Count ? SourceFiles[f] : "unknown";

    private static readonly string[] Signals =
    [
        "", "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE", "SIGKILL", "SIGUSR1",
        "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT", "SIGCHLD", "SIGCONT", "SIGSTOP", "SIGTSTP",
        "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH", "SIGIO", "SIGPWR", "SIGSYS",
    ];

    /// <summary>A Linux signal's name (SIGKILL), or SIG and the number.</summary>
    public static string Signal(int sig) => sig > 0 && sig < Signals.Length ? Signals[sig] : "SIG" + sig.ToString(CultureInfo.InvariantCulture);
}
