using System.Collections;
using System.Globalization;
using Forensics.Query.Output;

namespace Forensics.Query;

/// <summary>Prints flow_story rows as stories: the process, then every event of the flow, the outcome and what is missing.</summary>
public static class FlowStory
{
    public static void Write(QuerySession session, QueryResult flows, TextWriter w)
    {
        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(flows);
        ArgumentNullException.ThrowIfNull(w);
        if (flows.Rows.Count == 0)
        {
            w.WriteLine("no flow matches");
            return;
        }
        foreach (var row in flows.Rows)
        {
            var f = flows.Columns.Select((c, i) => (c, v: row[i])).ToDictionary(x => x.c, x => x.v, StringComparer.Ordinal);
            string S(string k) => f.TryGetValue(k, out var v) ? ResultWriter.Cell(v) : "";
            var client = S("client_pod").Length > 0 ? $"{S("client")} ({S("client_pod")})" : S("client");
            var server = S("server_workload").Length > 0 ? $"{S("server")} ({S("server_workload")})" : S("server");
            w.WriteLine($"flow {S("protocol")} {client} -> {server}   [{S("node")}]");
            if (S("exec_time").Length > 0)
                w.WriteLine($"  {Clock(f["exec_time"])}  exec      pid {S("pid")} {S("binary")} {S("arguments")}".TrimEnd());
            foreach (var e in session.Rows(Reconstructions.FlowEvents(S("flow"))))
                w.WriteLine($"  {Clock(e["time"])}  {Step(e)}");
            if (S("exit_time").Length > 0)
                w.WriteLine($"  {Clock(f["exit_time"])}  exit      {(S("signal").Length > 0 ? S("signal") : "code " + S("exit_code"))}");
            w.WriteLine($"  outcome   {S("outcome")}{(S("drop_reason").Length > 0 ? ": " + S("drop_reason") : "")}");
            var missing = f.TryGetValue("missing", out var m) && m is IEnumerable list and not string ? list.Cast<object?>().Select(ResultWriter.Cell).ToList() : [];
            if (missing.Count == 0)
                w.WriteLine("  missing   nothing: every link was made");
            foreach (var x in missing)
                w.WriteLine($"  missing   {x}");
            if (S("process_candidates").Length > 0)
                w.WriteLine($"  candidates (not linked: alive in the client's network namespace then) {S("process_candidates")}");
            w.WriteLine();
        }
    }

    private static string Clock(object? t) => t switch
    {
        DateTime d => d.ToString("HH:mm:ss.ffffff", CultureInfo.InvariantCulture),
        DateTimeOffset d => d.UtcDateTime.ToString("HH:mm:ss.ffffff", CultureInfo.InvariantCulture),
        _ => ResultWriter.Cell(t),
    };

    private static string By(string decided) => decided.Length == 0 ? "" : ", " + decided;

    private static string Step(Dictionary<string, object?> e)
    {
        string S(string k) => e.TryGetValue(k, out var v) ? ResultWriter.Cell(v) : "";
        var proto = S("protocol");
        string A(string ip, string port) => proto is "icmp" or "icmpv6" ? S(ip) : S(ip).Contains(':', StringComparison.Ordinal) ? $"[{S(ip)}]:{S(port)}" : $"{S(ip)}:{S(port)}";
        var tuple = $"{A("src_ip", "src_port")} -> {A("dst_ip", "dst_port")} {proto}{(S("tcp_flags").Length > 0 ? " " + S("tcp_flags") : "")}";
        var step = S("step");
        return step switch
        {
            "connect" => S("state") == proto ? $"connect   {tuple}" : $"connect   {tuple} ({S("state")})",
            "dnat" or "snat" or "rev-dnat" or "rev-snat" => $"{step,-9} {tuple} => {S("xlated_src")} -> {S("xlated_dst")}",
            // what decided: the rules that allowed or denied, or default deny (Hubble's ingress_allowed_by, egress_denied_by)
            "policy" => $"policy    {S("direction")} {S("action")} (match {S("match")}{By(S("decided_by"))}) at endpoint {S("endpoint_id")}: {tuple}",
            "drop" => $"drop      {S("reason_name")} ({S("reason")}{By(S("decided_by"))}) at {S("obs_point")} of endpoint {S("endpoint_id")}: {tuple}",
            "kdrop" => $"kdrop     {S("reason_name")}: {tuple}",
            "trace" => $"trace     {S("obs_point")} endpoint {S("endpoint_id")} state {S("state")}: {tuple}",
            _ => $"{step,-9} {tuple}",
        };
    }
}
