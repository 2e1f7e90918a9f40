using System.Globalization;

namespace Forensics.Query.Render;

/// <summary>
/// Rows that came from Cilium's Hubble, printed as `hubble observe -o compact` prints their flows
/// (cilium/cilium hubble/pkg/printer, CompactOutput, default options: IP translation on, no node
/// name, times as Go's StampMilli in UTC):
/// "Jan  1 00:20:34.567: 1.1.1.1:31793 (health) -> 2.2.2.2:8080 (ID:12345) Policy denied DROPPED (TCP Flags: SYN)".
/// </summary>
public static class HubbleLines
{
    private const int Drop = 1, Trace = 4, PolicyVerdict = 5, TraceSock = 7;

    // pkg/monitor/api TraceObservationPoints, by the trace message's sub type
    private static readonly string[] ObsPoints =
    [
        "to-endpoint", "to-proxy", "to-host", "to-stack", "to-overlay", "from-endpoint", "from-proxy", "from-host",
        "from-stack", "from-overlay", "from-network", "to-network",
    ];

    /// <summary>Whether the row is one of Hubble's (drop, policy, trace, nat with source hubble).</summary>
    public static bool IsHubble(string table, IReadOnlyDictionary<string, object?> row) =>
        table is "drop" or "policy" or "trace" or "nat" && row.TryGetValue("source", out var s) && s is "hubble";

    /// <summary>The compact line; null for a row derived from another (the nat row of a SNATed flow, whose flow is printed once).</summary>
    public static string? Compact(string table, IReadOnlyDictionary<string, object?> r)
    {
        ArgumentNullException.ThrowIfNull(r);
        if (table == "nat" && I(r, "event_type") != TraceSock && Str(r, "verdict") != "TRANSLATED")
            return null;
        var proto = Str(r, "protocol");
        bool ports = proto is "tcp" or "udp" or "sctp";
        string src = Host(table == "nat" ? Str(r, "orig_src_ip") : Str(r, "src_ip"), ports ? U(r, table == "nat" ? "orig_src_port" : "src_port") : 0,
            Str(r, "src_namespace"), Str(r, "src_pod"), Str(r, "src_service"), Str(r, "src_names"));
        string dst = Host(table == "nat" ? Str(r, "xlated_dst_ip") : Str(r, "dst_ip"), ports ? U(r, table == "nat" ? "xlated_dst_port" : "dst_port") : 0,
            Str(r, "dst_namespace"), Str(r, "dst_pod"), Str(r, "dst_service"), Str(r, "dst_names"));
        string srcId = Identity(U(r, "src_identity")), dstId = Identity(U(r, "dst_identity"));
        string arrow = "->";
        if (!r.TryGetValue("is_reply", out var reply) || reply is null)
            arrow = "<>";
        else if (reply is true)
        {
            (src, dst) = (dst, src);
            (srcId, dstId) = (dstId, srcId);
            arrow = "<-";
        }
        return $"{Time(r)}: {src} {srcId} {arrow} {dst} {dstId} {FlowType(r)} {Verdict(r)} ({Str(r, "summary")})";
    }

    private static string Time(IReadOnlyDictionary<string, object?> r)
    {
        var t = r.TryGetValue("time", out var v) ? v switch
        {
            DateTimeOffset d => d.UtcDateTime,
            DateTime d => d.ToUniversalTime(),
            _ => DateTime.UnixEpoch,
        } : DateTime.UnixEpoch;
        // Go's StampMilli "Jan _2 15:04:05.000": the day padded with a space
        return t.ToString("MMM", CultureInfo.InvariantCulture) + " " + t.Day.ToString(CultureInfo.InvariantCulture).PadLeft(2)
            + " " + t.ToString("HH:mm:ss.fff", CultureInfo.InvariantCulture);
    }

    private static string Host(string ip, ulong port, string ns, string pod, string svc, string names)
    {
        var host = ip;
        if (pod.Length > 0)
            host = ns.Length > 0 ? ns + "/" + pod : pod;
        else if (svc.Length > 0)
            host = svc; // stored as namespace/name
        else if (names.Length > 0)
            host = names;
        if (port == 0)
            return host;
        return host.Contains(':', StringComparison.Ordinal) ? $"[{host}]:{port}" : $"{host}:{port}";
    }

    // pkg/identity reservedIdentityNames: the reference table's names
    private static string Identity(ulong id) => Forensics.Format.ReservedIdentities.Name(id) is { } n ? $"({n})" : $"(ID:{id})";

    private static string FlowType(IReadOnlyDictionary<string, object?> r)
    {
        int? type = I(r, "event_type");
        int sub = I(r, "event_sub_type") ?? 0;
        return type switch
        {
            Trace => sub >= 0 && sub < ObsPoints.Length ? ObsPoints[sub] : sub.ToString(CultureInfo.InvariantCulture),
            Drop => Forensics.Format.DropReasons.All.FirstOrDefault(d => d.Code == (byte)sub)?.Name is { Length: > 0 } name ? name : $"{(byte)sub}, 0",
            PolicyVerdict => $"policy-verdict:{Str(r, "match")} {Direction(Str(r, "direction"))}",
            TraceSock => Str(r, "obs_point"),
            _ => "UNKNOWN",
        };
    }

    private static string Direction(string d) => d switch
    {
        "ingress" => "INGRESS",
        "egress" => "EGRESS",
        "" => "TRAFFIC_DIRECTION_UNKNOWN",
        _ => d,
    };

    private static string Verdict(IReadOnlyDictionary<string, object?> r)
    {
        var v = Str(r, "verdict");
        if (I(r, "event_type") != PolicyVerdict)
            return v.Length == 0 ? "VERDICT_UNKNOWN" : v;
        return v switch
        {
            "FORWARDED" or "REDIRECTED" => "ALLOWED",
            "DROPPED" or "ERROR" => "DENIED",
            "AUDIT" => "AUDITED",
            "" => "VERDICT_UNKNOWN",
            _ => v,
        };
    }

    private static string Str(IReadOnlyDictionary<string, object?> r, string key) =>
        r.TryGetValue(key, out var v) && v is not null ? Convert.ToString(v, CultureInfo.InvariantCulture) ?? "" : "";

    private static ulong U(IReadOnlyDictionary<string, object?> r, string key) =>
        r.TryGetValue(key, out var v) && v is not null ? Convert.ToUInt64(v, CultureInfo.InvariantCulture) : 0;

    private static int? I(IReadOnlyDictionary<string, object?> r, string key) =>
        r.TryGetValue(key, out var v) && v is not null ? Convert.ToInt32(v, CultureInfo.InvariantCulture) : null;
}
