using Forensics.Query.Schema;

namespace Forensics.Query;

/// <summary>Filters shared by the reconstruction commands.</summary>
public sealed record Filter
{
    public string? Pod { get; init; }
    public string? Namespace { get; init; }
    public string? Reason { get; init; }
    public DateTimeOffset? Since { get; init; }
    public DateTimeOffset? Until { get; init; }
    public string? Address { get; init; }
    public int? Port { get; init; }
    public string? Protocol { get; init; }
    public string? Process { get; init; }

    /// <summary>drops: also the kernel drops that are hidden by default (docs/drops.md).</summary>
    public bool AllReasons { get; init; }
}

/// <summary>The SQL the reconstruction commands run over the views of Sql/views.sql.</summary>
public static class Reconstructions
{
    public static string Drops(Filter f)
    {
        ArgumentNullException.ThrowIfNull(f);
        var c = new List<string>();
        if (f.Pod is not null)
            c.Add($"({PodMatch("src_namespace", "src_pod", f.Pod)} OR {PodMatch("dst_namespace", "dst_pod", f.Pod)})");
        if (f.Namespace is not null)
            c.Add($"(src_namespace = {L(f.Namespace)} OR dst_namespace = {L(f.Namespace)})");
        if (f.Reason is not null)
            c.Add(int.TryParse(f.Reason, out var code) ? $"reason = {code}" : $"(reason_name ILIKE {L("%" + f.Reason + "%")})");
        return $"SELECT source, destination, src_identity, dst_identity, dst_port, protocol, reason, reason_name, decided_by, dropped_by, kernel_reason, count, first_seen, last_seen{Multi()} " +
               $"FROM drops_between({Ts(f.Since)}, {Ts(f.Until)}, all_reasons := {(f.AllReasons ? "true" : "false")}){Where(c)}";
    }

    public static string Nat(Filter f)
    {
        ArgumentNullException.ThrowIfNull(f);
        var c = TimeWindow(f, "first_seen", "last_seen");
        if (f.Pod is not null)
            c.Add($"(client_pod = {L(f.Pod)} OR client_pod LIKE {L("%/" + f.Pod)} OR backend_pod = {L(f.Pod)} OR backend_pod LIKE {L("%/" + f.Pod)})");
        if (f.Namespace is not null)
            c.Add($"(client_pod LIKE {L(f.Namespace + "/%")} OR backend_pod LIKE {L(f.Namespace + "/%")})");
        if (f.Address is not null)
            c.Add($"({L(f.Address)} IN (client_ip, orig_ip, xlated_ip, dst_ip))");
        return $"SELECT source, mapping, protocol, client, client_pod, original, translated, destination, service, backend_pod, packets, replies, first_seen, last_seen{Multi()} FROM nat_mappings{Where(c)} ORDER BY first_seen";
    }

    public static string Connects(Filter f, bool externalOnly)
    {
        ArgumentNullException.ThrowIfNull(f);
        var c = TimeWindow(f, "time", "time");
        if (externalOnly)
            c.Add("external AND NOT reply"); // a server's UDP answer is not a connect
        if (f.Pod is not null)
            c.Add(PodMatch("namespace", "pod", f.Pod));
        if (f.Namespace is not null)
            c.Add($"namespace = {L(f.Namespace)}");
        if (f.Process is not null)
            c.Add($"(\"binary\" = {L(f.Process)} OR regexp_extract(\"binary\", '[^/]*$') = {L(f.Process)} OR comm = {L(f.Process)})");
        return "SELECT time, namespace || '/' || pod AS pod, pid, \"binary\", arguments, protocol, fx_addr(src_ip, src_port) AS source, destination, " +
               $"external, exit_code, signal, exit_time, coalesce(exec_missing, exit_missing) AS missing{Multi()} FROM connects_resolved{Where(c)} ORDER BY time";
    }

    /// <summary>The flows of flow_story matching the filter.</summary>
    public static string Flows(Filter f)
    {
        ArgumentNullException.ThrowIfNull(f);
        var c = TimeWindow(f, "first_seen", "last_seen");
        if (f.Pod is not null)
            c.Add($"({PodLike("client_pod", f.Pod)} OR {PodLike("server_workload", f.Pod)})");
        if (f.Namespace is not null)
            c.Add($"(client_pod LIKE {L(f.Namespace + "/%")} OR server_workload LIKE {L(f.Namespace + "/%")})");
        if (f.Address is not null)
            c.Add($"(client_ip = {L(f.Address)} OR server_ip = {L(f.Address)} OR contains(coalesce(dnat, ''), {L(f.Address)}) OR contains(coalesce(snat, ''), {L(f.Address)}))");
        if (f.Port is { } p)
            c.Add($"(client_port = {p} OR server_port = {p} OR contains(coalesce(dnat, ''), {L(":" + p)}))");
        if (f.Protocol is not null)
            c.Add($"lower(protocol) = lower({L(f.Protocol)})");
        if (f.Process is not null)
            c.Add($"(\"binary\" = {L(f.Process)} OR regexp_extract(\"binary\", '[^/]*$') = {L(f.Process)})");
        return $"SELECT * FROM flow_story{Where(c)} ORDER BY first_seen";
    }

    /// <summary>The events of one flow (by its flow id), in time order.</summary>
    public static string FlowEvents(string flow) =>
        $"SELECT time, step, src_ip, src_port, dst_ip, dst_port, protocol, tcp_flags, obs_point, direction, endpoint_id, state, action, match, reason, reason_name, decided_by, xlated_src, xlated_dst FROM flow_events WHERE flow = {L(flow)} ORDER BY ktime_ns, time";

    private static List<string> TimeWindow(Filter f, string startCol, string endCol)
    {
        var c = new List<string>();
        if (f.Since is not null)
            c.Add($"{endCol} >= {Ts(f.Since)}");
        if (f.Until is not null)
            c.Add($"{startCol} < {Ts(f.Until)}");
        return c;
    }

    private static string PodMatch(string ns, string pod, string value) =>
        value.Contains('/', StringComparison.Ordinal) ? $"({ns} || '/' || {pod}) = {L(value)}" : $"{pod} = {L(value)}";

    private static string PodLike(string col, string value) =>
        value.Contains('/', StringComparison.Ordinal) ? $"{col} = {L(value)}" : $"({col} = {L(value)} OR {col} LIKE {L("%/" + value)})";

    private static string Where(List<string> c) => c.Count == 0 ? "" : " WHERE " + string.Join(" AND ", c);

    private static string Multi() => ", node";

    private static string L(string s) => SqlTypes.Literal(s);

    private static string Ts(DateTimeOffset? t) => t is { } v ? $"TIMESTAMPTZ {Replay.Lit(v)}" : "NULL";
}
