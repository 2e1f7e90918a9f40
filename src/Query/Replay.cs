using System.Globalization;
using Forensics.Query.Render;
using Forensics.Query.Schema;

namespace Forensics.Query;

/// <summary>What replay prints.</summary>
public sealed record ReplayFilter
{
    /// <summary>Tables to print (drop, policy, trace, nat, capture, exec, exit, connect, kdrop, loss); empty: all but capture.</summary>
    public IReadOnlyList<string> Kinds { get; init; } = [];

    /// <summary>Pods ("pod" or "namespace/pod"): process events of these pods, datapath events from or to them.</summary>
    public IReadOnlyList<string> Pods { get; init; } = [];

    public string? Namespace { get; init; }

    /// <summary>Process events only of these binaries (full path or base name) or comms; datapath events are not filtered by it.</summary>
    public IReadOnlyList<string> Processes { get; init; } = [];

    public DateTimeOffset? Since { get; init; }
    public DateTimeOffset? Until { get; init; }
}

/// <summary>`forensics replay`: the recording's events in time order, rendered as the live tools print them.</summary>
public static class Replay
{
    public static readonly IReadOnlyDictionary<string, string> KindAliases = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
    {
        ["drop"] = "drop", ["policy"] = "policy", ["policy-verdict"] = "policy", ["trace"] = "trace", ["nat"] = "nat",
        ["capture"] = "capture", ["exec"] = "exec", ["process"] = "exec", ["process_exec"] = "exec", ["exit"] = "exit",
        ["process_exit"] = "exit", ["connect"] = "connect", ["kdrop"] = "kdrop", ["loss"] = "loss", ["lost"] = "loss",
    };

    private static readonly HashSet<string> ProcessTables = ["exec", "exit", "connect"];

    public static IEnumerable<string> Lines(QuerySession session, ReplayFilter filter, RenderFormat format)
    {
        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(filter);
        var kinds = filter.Kinds.Count == 0
            ? QuerySession.EventTables.Where(t => t != "capture").ToList()
            : filter.Kinds.Select(k => KindAliases.TryGetValue(k, out var t) ? t : throw new QueryException($"unknown event kind \"{k}\" (kinds: {string.Join(", ", KindAliases.Keys.Order(StringComparer.Ordinal))})")).Distinct().ToList();

        var args = new Dictionary<(string, ulong), string>();
        foreach (var row in session.Rows("SELECT recording, exec_id, arguments FROM processes"))
            args[((string)row["recording"]!, Convert.ToUInt64(row["exec_id"], CultureInfo.InvariantCulture))] = (string?)row["arguments"] ?? "";

        var events = new List<(long TimeNs, ulong Ktime, int Order, string Node, string Table, string Recording, Dictionary<string, object?> Row)>();
        foreach (var table in kinds)
        {
            var where = Where(table, filter);
            var order = QuerySession.EventTables.ToList().IndexOf(table);
            foreach (var row in session.Rows($"SELECT * FROM {SqlTypes.Ident(table)}{where} ORDER BY ALL"))
            {
                // The UTC time orders events across nodes; the kernel time (ns) orders them within one.
                var ns = row.TryGetValue("time_ns", out var exact) && exact is not null ? Convert.ToInt64(exact, CultureInfo.InvariantCulture) : row["time"] switch
                {
                    DateTime dt => (dt.ToUniversalTime().Ticks - DateTime.UnixEpoch.Ticks) * 100,
                    DateTimeOffset dto => (dto.UtcTicks - DateTime.UnixEpoch.Ticks) * 100,
                    _ => 0L,
                };
                var k = row.TryGetValue("ktime_ns", out var kt) && kt is not null ? Convert.ToUInt64(kt, CultureInfo.InvariantCulture) : 0;
                events.Add((ns, k, order, (string?)row["node"] ?? "", table, (string)row["recording"]!, row));
            }
        }
        var multi = session.Recordings.Count > 1;
        foreach (var e in events.OrderBy(e => e.TimeNs).ThenBy(e => e.Node, StringComparer.Ordinal).ThenBy(e => e.Ktime).ThenBy(e => e.Order))
        {
            var renderer = new LineRenderer(format) { ArgumentsOf = id => args.TryGetValue((e.Recording, id), out var a) ? a : null, Node = e.Node };
            if (!multi || format == RenderFormat.Json)
            {
                if (!multi)
                {
                    e.Row.Remove("recording");
                    e.Row.Remove("node");
                }
                var line = renderer.Render(e.Table, e.Row);
                if (line is not null)
                    yield return line;
            }
            else
            {
                var node = (string?)e.Row["node"];
                e.Row.Remove("recording");
                e.Row.Remove("node");
                var line = renderer.Render(e.Table, e.Row);
                if (line is not null)
                    yield return $"[{node}] {line}";
            }
        }
    }

    private static string Where(string table, ReplayFilter f)
    {
        var conds = new List<string>();
        if (f.Since is { } s)
            conds.Add($"time >= TIMESTAMPTZ {Lit(s)}");
        if (f.Until is { } u)
            conds.Add($"time < TIMESTAMPTZ {Lit(u)}");
        var isProcess = ProcessTables.Contains(table) || table == "kdrop";
        if (f.Pods.Count > 0 || f.Namespace is not null)
        {
            if (isProcess)
                conds.Add(PodCondition("namespace", "pod", f));
            else if (table != "loss")
            {
                var addrs = $"(SELECT addr FROM endpoint_addrs WHERE {PodCondition("namespace", "pod", f)})";
                var cols = table == "nat" ? new[] { "orig_src_ip", "orig_dst_ip", "xlated_src_ip", "xlated_dst_ip" } : ["src_ip", "dst_ip"];
                conds.Add("(" + string.Join(" OR ", cols.Select(c => $"{c} IN {addrs}")) + ")");
            }
        }
        if (f.Processes.Count > 0 && ProcessTables.Contains(table))
        {
            var names = string.Join(", ", f.Processes.Select(SqlTypes.Literal));
            conds.Add($"(\"binary\" IN ({names}) OR regexp_extract(\"binary\", '[^/]*$') IN ({names}) OR comm IN ({names}))");
        }
        return conds.Count == 0 ? "" : " WHERE " + string.Join(" AND ", conds);
    }

    internal static string PodCondition(string nsCol, string podCol, ReplayFilter f)
    {
        var c = new List<string>();
        if (f.Pods.Count > 0)
            c.Add("(" + string.Join(" OR ", f.Pods.Select(p => p.Contains('/', StringComparison.Ordinal)
                ? $"({nsCol} || '/' || {podCol}) = {SqlTypes.Literal(p)}"
                : $"{podCol} = {SqlTypes.Literal(p)}")) + ")");
        if (f.Namespace is not null)
            c.Add($"{nsCol} = {SqlTypes.Literal(f.Namespace)}");
        return string.Join(" AND ", c);
    }

    internal static string Lit(DateTimeOffset t) => SqlTypes.Literal(t.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss.ffffff", CultureInfo.InvariantCulture) + "+00");
}
