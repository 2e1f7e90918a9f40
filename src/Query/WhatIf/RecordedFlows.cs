using System.Globalization;
using Forensics.Query.Recording;

namespace Forensics.Query.WhatIf;

/// <summary>A pod the datapath served (endpoints snapshot), with its identity's labels.</summary>
public sealed record RecordedEndpoint(string Node, string Namespace, string Pod, string Ip, uint Identity, IReadOnlyList<string> Labels);

/// <summary>A policy in force (policies snapshot): its document as it was given.</summary>
public sealed record RecordedPolicy(string Name, string Namespace, string SourceText);

/// <summary>A service frontend and its backends (services snapshot).</summary>
public sealed record RecordedService(string Name, string Namespace, string FrontendIp, int Port, string Protocol, IReadOnlyList<(string Ip, int Port)> Backends);

/// <summary>
/// What the datapath of a recording was programmed with: the last snapshot of each node
/// (end, else start), its endpoints, policies and services, and the ipcache prefixes of
/// reserved identities (the node's address is the host).
/// </summary>
public sealed record RecordedSnapshot(
    string Phase,
    IReadOnlyList<RecordedEndpoint> Endpoints,
    IReadOnlyList<RecordedPolicy> Policies,
    IReadOnlyList<RecordedService> Services,
    IReadOnlyList<(string Prefix, uint Identity)> ReservedPrefixes)
{
    /// <summary>
    /// Imported from Hubble (issue 20 item 3): the pods, their labels and identities are those Hubble's flows
    /// named, and no policy document is in the recording (Hubble's flows name their policies, not their rules).
    /// </summary>
    public bool FromHubble { get; init; }
}

/// <summary>
/// One distinct flow of a recording, by its 5-tuple as the source sent it (a service's address
/// before translation), with what the recording says became of its first packets: dropped (the
/// first drop's reason and where) or not, and its first captured packet at from-endpoint and at
/// to-endpoint when the recording has them.
/// </summary>
public sealed record RecordedFlow(
    string Node,
    byte IpVersion,
    string Protocol,
    string SrcIp,
    ushort SrcPort,
    string DstIp,
    ushort DstPort,
    string? TranslatedIp,
    ushort TranslatedPort,
    DateTime FirstSeen,
    DateTime LastSeen,
    long Drops,
    ushort DropReason,
    string? DropPoint,
    byte[]? CaptureFrom,
    byte[]? CaptureTo)
{
    public bool Dropped => Drops > 0;

    /// <summary>The protocol number (tcp 6, udp 17, icmp 1, icmpv6 58, or the number as recorded).</summary>
    public byte ProtocolNumber => Protocol switch
    {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmpv6" => 58,
        _ => byte.TryParse(Protocol, NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n : (byte)0,
    };
}

/// <summary>Reads what <c>forensics whatif</c> replays out of a recording: its snapshot and its distinct flows.</summary>
public static class RecordedFlows
{
    /// <summary>Observation points of the endpoint programs, where policy is decided.</summary>
    private const string EndpointPoints = "obs_point IN ('from-endpoint', 'to-endpoint') AND coalesce(source, '') <> 'hubble'";

    /// <summary>
    /// Every distinct flow: first packets (trace and capture rows in conntrack state new, policy
    /// verdicts, drops of new or untracked packets) at the endpoint programs, keyed by the 5-tuple
    /// the source sent (a DNAT event of the same client tuple gives the service address back). A flow
    /// seen on several nodes (leaving one, entering another) is one flow; Node lists them.
    /// </summary>
    public static readonly string FlowsSql = $"""
        WITH obs AS (
            SELECT node, time, time_ns, ip_version, protocol, src_ip, src_port, dst_ip, dst_port, obs_point, 'trace' AS k,
                   CAST(0 AS USMALLINT) AS reason, CAST(NULL AS BLOB) AS data
            FROM trace WHERE ct_state = 'new' AND {EndpointPoints}
            UNION ALL
            SELECT node, time, time_ns, ip_version, protocol, src_ip, src_port, dst_ip, dst_port, obs_point, 'policy', 0, NULL
            FROM policy WHERE {EndpointPoints}
            UNION ALL
            SELECT node, time, time_ns, ip_version, protocol, src_ip, src_port, dst_ip, dst_port, obs_point, 'drop', reason, NULL
            FROM "drop" WHERE ct_state IN ('new', 'none') AND {EndpointPoints}
            UNION ALL
            SELECT node, time, time_ns, ip_version, protocol, src_ip, src_port, dst_ip, dst_port, obs_point, 'capture', 0, data
            FROM capture WHERE ct_state = 'new' AND obs_point IN ('from-endpoint', 'to-endpoint')
        ),
        dnat AS (
            SELECT DISTINCT node, protocol, orig_src_ip, orig_src_port, orig_dst_ip, orig_dst_port, xlated_dst_ip, xlated_dst_port
            FROM nat WHERE nat_kind = 'dnat' AND coalesce(source, '') <> 'hubble'
        ),
        keyed AS (
            SELECT o.*, coalesce(d.orig_dst_ip, o.dst_ip) AS flow_dst_ip, coalesce(d.orig_dst_port, o.dst_port) AS flow_dst_port,
                   CASE WHEN d.orig_dst_ip IS NULL THEN NULL ELSE o.dst_ip END AS xlated_ip,
                   CASE WHEN d.orig_dst_ip IS NULL THEN NULL ELSE o.dst_port END AS xlated_port
            FROM obs o LEFT JOIN dnat d
              ON d.protocol = o.protocol AND d.orig_src_ip = o.src_ip AND d.orig_src_port = o.src_port
             AND d.xlated_dst_ip = o.dst_ip AND d.xlated_dst_port = o.dst_port
        )
        SELECT string_agg(DISTINCT node, ',' ORDER BY node) AS node, ip_version, protocol, src_ip, src_port, flow_dst_ip AS dst_ip, flow_dst_port AS dst_port,
               max(xlated_ip) AS xlated_ip, max(xlated_port) AS xlated_port,
               min(time) AS first_seen, max(time) AS last_seen,
               count(*) FILTER (WHERE k = 'drop') AS drops,
               arg_min(reason, time_ns) FILTER (WHERE k = 'drop') AS drop_reason,
               arg_min(obs_point, time_ns) FILTER (WHERE k = 'drop') AS drop_point,
               arg_min(data, time_ns) FILTER (WHERE k = 'capture' AND obs_point = 'from-endpoint') AS cap_from,
               arg_min(data, time_ns) FILTER (WHERE k = 'capture' AND obs_point = 'to-endpoint') AS cap_to
        FROM keyed
        GROUP BY ip_version, protocol, src_ip, src_port, flow_dst_ip, flow_dst_port
        ORDER BY first_seen, src_ip, src_port, dst_ip, dst_port
        """;

    /// <summary>
    /// The distinct flows Hubble saw (a recording imported from Hubble, or recorded with --from hubble): each
    /// 5-tuple's first packets as the source sent them (not a reply), with Hubble's verdict: dropped (its drop
    /// reason) or not. Hubble exports no packet bytes, so each is rebuilt from its tuple.
    /// </summary>
    public static readonly string HubbleFlowsSql = """
        WITH obs AS (
            SELECT node, time, time_ns, ip_version, protocol, src_ip, src_port, dst_ip, dst_port, 'trace' AS k, CAST(0 AS USMALLINT) AS reason, obs_point
            FROM trace WHERE source = 'hubble' AND NOT coalesce(is_reply, false) AND coalesce(ct_state, '') IN ('new', 'none', '')
            UNION ALL
            SELECT node, time, time_ns, ip_version, protocol, src_ip, src_port, dst_ip, dst_port,
                   CASE WHEN verdict = 'DROPPED' THEN 'drop' ELSE 'policy' END, 0, obs_point
            FROM policy WHERE source = 'hubble' AND NOT coalesce(is_reply, false)
            UNION ALL
            SELECT node, time, time_ns, ip_version, protocol, src_ip, src_port, dst_ip, dst_port, 'drop', reason, obs_point
            FROM "drop" WHERE source = 'hubble' AND NOT coalesce(is_reply, false)
        )
        SELECT string_agg(DISTINCT node, ',' ORDER BY node) AS node, ip_version, lower(protocol) AS protocol, src_ip, src_port, dst_ip, dst_port,
               NULL AS xlated_ip, NULL AS xlated_port, min(time) AS first_seen, max(time) AS last_seen,
               count(*) FILTER (WHERE k = 'drop') AS drops,
               arg_min(reason, time_ns) FILTER (WHERE k = 'drop' AND reason <> 0) AS drop_reason,
               arg_min(obs_point, time_ns) FILTER (WHERE k = 'drop') AS drop_point,
               NULL::BLOB AS cap_from, NULL::BLOB AS cap_to
        FROM obs WHERE src_ip IS NOT NULL AND dst_ip IS NOT NULL
        GROUP BY ip_version, lower(protocol), src_ip, src_port, dst_ip, dst_port
        ORDER BY first_seen, src_ip, src_port, dst_ip, dst_port
        """;

    public static IReadOnlyList<RecordedFlow> Flows(QuerySession session, bool fromHubble = false)
    {
        ArgumentNullException.ThrowIfNull(session);
        var list = new List<RecordedFlow>();
        foreach (var r in session.Rows(fromHubble ? HubbleFlowsSql : FlowsSql))
        {
            list.Add(new RecordedFlow(
                (string)r["node"]!,
                Convert.ToByte(r["ip_version"], CultureInfo.InvariantCulture),
                (string)r["protocol"]!,
                (string)r["src_ip"]!,
                Convert.ToUInt16(r["src_port"], CultureInfo.InvariantCulture),
                (string)r["dst_ip"]!,
                Convert.ToUInt16(r["dst_port"], CultureInfo.InvariantCulture),
                r["xlated_ip"] as string,
                r["xlated_port"] is { } xp ? Convert.ToUInt16(xp, CultureInfo.InvariantCulture) : (ushort)0,
                Time(r["first_seen"]),
                Time(r["last_seen"]),
                Convert.ToInt64(r["drops"], CultureInfo.InvariantCulture),
                r["drop_reason"] is { } dr ? Convert.ToUInt16(dr, CultureInfo.InvariantCulture) : (ushort)0,
                r["drop_point"] as string,
                r["cap_from"] as byte[],
                r["cap_to"] as byte[]));
        }
        return list;
    }

    private static DateTime Time(object? v) => v switch
    {
        DateTime d => DateTime.SpecifyKind(d, DateTimeKind.Utc),
        DateTimeOffset o => o.UtcDateTime,
        _ => default,
    };

    /// <summary>
    /// The datapath's state as the recording last snapshotted it (end, else start): refused when
    /// the recording has no snapshot of endpoints.
    /// </summary>
    public static RecordedSnapshot Snapshot(QuerySession session)
    {
        ArgumentNullException.ThrowIfNull(session);
        // per recording and node, its last snapshot: end, else start
        const string last = "CASE WHEN bool_or(phase = 'end') THEN 'end' WHEN bool_or(phase = 'start') THEN 'start' ELSE max(phase) END";
        var phases = session.Rows($"SELECT DISTINCT {last} AS phase FROM endpoints GROUP BY recording, node")
            .Select(r => (string)r["phase"]!).Order(StringComparer.Ordinal).ToList();
        if (phases.Count == 0 && HubbleSnapshot(session) is { } hubble)
            return hubble;
        if (phases.Count == 0)
            throw new RecordingException($"{Root(session)}: the recording has no snapshot of the datapath's endpoints, identities and policies (recorded without the datapath, or imported): nothing to replay against");
        var phase = string.Join("/", phases);
        var p = $"(recording, node, phase) IN (SELECT (recording, node, {last}) FROM endpoints GROUP BY recording, node)";

        var labels = session.Rows($"SELECT DISTINCT node, identity, labels FROM identities WHERE {p}")
            .GroupBy(r => ((string)r["node"]!, Convert.ToUInt32(r["identity"], CultureInfo.InvariantCulture)))
            .ToDictionary(g => g.Key, g => (string?)g.First()["labels"] ?? "");
        var endpoints = session.Rows($"SELECT DISTINCT node, namespace, pod, ip, identity FROM endpoints WHERE {p} ORDER BY node, namespace, pod")
            .Select(r =>
            {
                var node = (string)r["node"]!;
                var id = Convert.ToUInt32(r["identity"], CultureInfo.InvariantCulture);
                var l = labels.TryGetValue((node, id), out var s) ? s : "";
                return new RecordedEndpoint(node, (string)r["namespace"]!, (string)r["pod"]!, (string)r["ip"]!, id,
                    l.Split([' ', ','], StringSplitOptions.RemoveEmptyEntries));
            })
            .ToList();
        var policies = session.Rows($"SELECT DISTINCT name, namespace, source_text FROM policies WHERE {p} ORDER BY namespace, name")
            .Select(r => new RecordedPolicy((string)r["name"]!, (string)r["namespace"]!, (string?)r["source_text"] ?? ""))
            .ToList();
        var services = session.Rows($"""
                SELECT name, namespace, frontend_ip, port, protocol,
                       list(DISTINCT backend_ip || ' ' || CAST(backend_port AS VARCHAR) ORDER BY backend_ip || ' ' || CAST(backend_port AS VARCHAR))
                         FILTER (WHERE backend_ip IS NOT NULL) AS backends
                FROM services WHERE {p}
                GROUP BY ALL ORDER BY namespace, name, frontend_ip, port
                """)
            .Select(r => new RecordedService((string)r["name"]!, (string)r["namespace"]!, (string)r["frontend_ip"]!,
                Convert.ToInt32(r["port"], CultureInfo.InvariantCulture), (string)r["protocol"]!,
                ((System.Collections.IEnumerable?)r["backends"] ?? Array.Empty<string>()).Cast<object?>()
                    .Select(b => ((string)b!).Split(' '))
                    .Select(b => (b[0], int.Parse(b[1], CultureInfo.InvariantCulture)))
                    .ToList()))
            .ToList();
        // reserved identities other than world: the host (the node's address), remote nodes, ...
        var reserved = session.Rows($"SELECT DISTINCT prefix, identity FROM ipcache WHERE {p} AND identity < 256 AND identity NOT IN (0, 2) ORDER BY prefix")
            .Select(r => ((string)r["prefix"]!, Convert.ToUInt32(r["identity"], CultureInfo.InvariantCulture)))
            .ToList();
        return new RecordedSnapshot(phase, endpoints, policies, services, reserved);
    }

    /// <summary>
    /// A recording of Hubble's flows: the pods are the flows' ends that Hubble named (namespace, pod, address,
    /// identity and labels as Hubble gave them; the last seen wins); reserved identities other than world at the
    /// addresses Hubble gave them. Null when no Hubble flow names a pod.
    /// </summary>
    private static readonly string[] FlowTables = ["\"drop\"", "policy", "trace"];

    private static RecordedSnapshot? HubbleSnapshot(QuerySession session)
    {
        const string ends = """
            SELECT node, time, src_namespace AS ns, src_pod AS pod, src_ip AS ip, src_identity AS identity, src_labels AS labels FROM {0} WHERE source = 'hubble'
            UNION ALL
            SELECT node, time, dst_namespace, dst_pod, dst_ip, dst_identity, dst_labels FROM {0} WHERE source = 'hubble'
            """;
        var all = string.Join(" UNION ALL ", FlowTables.Select(t => string.Format(CultureInfo.InvariantCulture, ends, t)));
        var rows = session.Rows($"WITH e AS ({all}) SELECT ns, pod, ip, arg_max(node, time) AS node, arg_max(identity, time) AS identity, arg_max(labels, time) AS labels " +
                                "FROM e WHERE pod IS NOT NULL AND pod <> '' AND ip IS NOT NULL GROUP BY ns, pod, ip ORDER BY ns, pod, ip").ToList();
        if (rows.Count == 0)
            return null;
        var endpoints = rows.Select(r => new RecordedEndpoint((string?)r["node"] ?? "", (string?)r["ns"] ?? "default", (string)r["pod"]!, (string)r["ip"]!,
                Convert.ToUInt32(r["identity"] ?? 0u, CultureInfo.InvariantCulture),
                ((string?)r["labels"] ?? "").Split([' ', ','], StringSplitOptions.RemoveEmptyEntries)))
            .ToList();
        var reserved = session.Rows($"WITH e AS ({all}) SELECT DISTINCT ip, identity FROM e WHERE (pod IS NULL OR pod = '') AND ip IS NOT NULL AND identity BETWEEN 1 AND 255 AND identity <> 2 ORDER BY ip")
            .Select(r => ((string)r["ip"]!, Convert.ToUInt32(r["identity"], CultureInfo.InvariantCulture)))
            .Select(r => (r.Item1 + (r.Item1.Contains(':', StringComparison.Ordinal) ? "/128" : "/32"), r.Item2))
            .ToList();
        return new RecordedSnapshot("hubble", endpoints, [], [], reserved) { FromHubble = true };
    }

    private static string Root(QuerySession session) => string.Join(", ", session.Recordings.Select(r => r.Root));
}
