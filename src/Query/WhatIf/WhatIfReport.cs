using Forensics.Format;

namespace Forensics.Query.WhatIf;

/// <summary>
/// What the datapath does now with a flow's first packet: delivered, or dropped with a reason;
/// where it was decided (egress of the source pod, ingress of the destination pod), by which
/// policies and match type; and whether the packet came from the recording's captured bytes or
/// was rebuilt from the 5-tuple. Null when the flow could not be replayed (Skipped says why).
/// </summary>
public sealed record NewVerdict(bool Delivered, ushort DropReason, string DecidedAt, string Rule, bool FromCapture);

/// <summary>A recorded flow and what the changed policy does with it (Verdict null: not replayed, Skipped says why).</summary>
public sealed record ReplayedFlow(RecordedFlow Flow, NewVerdict? Verdict, string? Skipped = null);

/// <summary>
/// Groups replayed flows for <c>forensics whatif</c>: one row per source, destination, port,
/// protocol and outcome pair (recorded, new), with the flows' count and first/last seen.
/// </summary>
public static class WhatIfReport
{
    public static readonly IReadOnlyList<string> Columns =
        ["source", "destination", "port", "protocol", "flows", "first_seen", "last_seen",
         "recorded", "recorded_reason", "new", "new_reason", "decided_at", "rule", "changed", "packet"];

    private static readonly IReadOnlyList<string> Types =
        ["Varchar", "Varchar", "UnsignedSmallInt", "Varchar", "BigInt", "TimestampTz", "TimestampTz",
         "Varchar", "Varchar", "Varchar", "Varchar", "Varchar", "Varchar", "Boolean", "Varchar"];

    /// <summary>A flow's outcome in words: delivered or dropped, and the reason as "133 Policy denied".</summary>
    public static (string Verdict, string Reason) Outcome(bool delivered, ushort reason) =>
        delivered ? ("delivered", "") : ("dropped", reason == 0 ? "" : $"{reason} {DropReasons.NameOf(reason)}");

    /// <summary>Whether a flow the recording saw delivered would now be dropped.</summary>
    public static bool BecomesDropped(ReplayedFlow f) => f.Verdict is { Delivered: false } && !f.Flow.Dropped;

    public static bool Changed(ReplayedFlow f) =>
        f.Verdict is { } v && (v.Delivered == f.Flow.Dropped || (!v.Delivered && v.DropReason != f.Flow.DropReason));

    /// <summary>The rows, grouped; <paramref name="changedOnly"/> keeps the changed ones.</summary>
    public static QueryResult Build(RecordedSnapshot snapshot, IReadOnlyList<ReplayedFlow> flows, bool changedOnly)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        ArgumentNullException.ThrowIfNull(flows);
        var pods = snapshot.Endpoints.GroupBy(e => e.Ip, StringComparer.Ordinal).ToDictionary(g => g.Key, g => $"{g.First().Namespace}/{g.First().Pod}", StringComparer.Ordinal);
        var services = snapshot.Services.GroupBy(s => (s.FrontendIp, s.Port, s.Protocol)).ToDictionary(g => g.Key, g => $"{g.First().Namespace}/{g.First().Name}");
        string Source(RecordedFlow f) => pods.TryGetValue(f.SrcIp, out var p) ? p : f.SrcIp;
        string Destination(RecordedFlow f) =>
            services.TryGetValue((f.DstIp, f.DstPort, f.Protocol), out var s) ? $"service {s}"
            : pods.TryGetValue(f.DstIp, out var p) ? p : f.DstIp;

        var rows = flows
            .Where(f => f.Verdict is not null && (!changedOnly || Changed(f)))
            .GroupBy(f =>
            {
                var (rv, rr) = Outcome(!f.Flow.Dropped, f.Flow.DropReason);
                var (nv, nr) = Outcome(f.Verdict!.Delivered, f.Verdict.DropReason);
                return (Source: Source(f.Flow), Destination: Destination(f.Flow), Port: f.Flow.DstPort, f.Flow.Protocol,
                    Recorded: rv, RecordedReason: rr, New: nv, NewReason: nr, f.Verdict.DecidedAt, f.Verdict.Rule, Changed: Changed(f));
            })
            .OrderBy(g => g.Key.Source, StringComparer.Ordinal).ThenBy(g => g.Key.Destination, StringComparer.Ordinal)
            .ThenBy(g => g.Key.Port).ThenBy(g => g.Key.Protocol, StringComparer.Ordinal)
            .Select(g =>
            {
                int captured = g.Count(f => f.Verdict!.FromCapture);
                var packet = captured == g.Count() ? "captured" : captured == 0 ? "5-tuple" : $"captured {captured}, 5-tuple {g.Count() - captured}";
                return new object?[]
                {
                    g.Key.Source, g.Key.Destination, g.Key.Port, g.Key.Protocol, (long)g.Count(),
                    g.Min(f => f.Flow.FirstSeen), g.Max(f => f.Flow.LastSeen),
                    g.Key.Recorded, g.Key.RecordedReason, g.Key.New, g.Key.NewReason, g.Key.DecidedAt, g.Key.Rule, g.Key.Changed, packet,
                };
            })
            .ToList();
        return new QueryResult(Columns, Types, rows);
    }

    /// <summary>One line for stderr: what was replayed, how, what changed, what could not be replayed and why.</summary>
    public static string Summary(IReadOnlyList<ReplayedFlow> flows, string phase)
    {
        ArgumentNullException.ThrowIfNull(flows);
        var done = flows.Where(f => f.Verdict is not null).ToList();
        int captured = done.Count(f => f.Verdict!.FromCapture);
        int changed = done.Count(Changed);
        int toDropped = done.Count(BecomesDropped);
        int toDelivered = done.Count(f => f.Verdict!.Delivered && f.Flow.Dropped);
        var skipped = flows.Where(f => f.Verdict is null).GroupBy(f => f.Skipped ?? "not replayed")
            .Select(g => $"{g.Count()} not replayed ({g.Key})");
        var parts = new List<string>
        {
            $"whatif: {done.Count} flow{(done.Count == 1 ? "" : "s")} replayed against the {phase} snapshot ({captured} from captured headers, {done.Count - captured} rebuilt from the 5-tuple)",
            $"{changed} changed: {toDropped} delivered -> dropped, {toDelivered} dropped -> delivered, {changed - toDropped - toDelivered} dropped for another reason",
        };
        parts.AddRange(skipped);
        return string.Join("; ", parts);
    }
}
