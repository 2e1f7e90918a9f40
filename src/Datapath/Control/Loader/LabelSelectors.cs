namespace Forensics.Datapath.Control;

/// <summary>
/// A Kubernetes LabelSelector (matchLabels and matchExpressions, ANDed) as
/// written: what workloads and services select pods with, and what Cilium's
/// endpoint selectors are made of.
/// </summary>
internal sealed record LabelSelector(IReadOnlyDictionary<string, string> MatchLabels, IReadOnlyList<LabelRequirement> MatchExpressions)
{
    /// <summary>Whether a set of labels satisfies every matchLabels entry and every requirement.</summary>
    public bool Matches(IReadOnlyDictionary<string, string> labels) =>
        MatchLabels.All(kv => labels.TryGetValue(kv.Key, out var v) && v == kv.Value)
        && MatchExpressions.All(r => r.Matches(labels.TryGetValue(r.Key, out var v) ? v : null));
}

internal static class LabelSelectors
{
    public static readonly string[] Operators = ["In", "NotIn", "Exists", "DoesNotExist"];

    /// <summary>Reads {matchLabels, matchExpressions}; an operator or values Kubernetes refuses is an error.</summary>
    public static LabelSelector Read(Node n)
    {
        n.Strict("matchLabels", "matchExpressions");
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        if (n.Get("matchLabels") is { } ml)
        {
            foreach (var (k, v) in ml.StringMap())
            {
                if (k.Length == 0)
                    throw ml.Error("empty label key");
                labels[k] = v;
            }
        }
        var exprs = new List<LabelRequirement>();
        if (n.Get("matchExpressions") is { } me)
        {
            foreach (var e in me.Items())
            {
                e.Strict("key", "operator", "values");
                var key = e.Require("key").String();
                var opNode = e.Require("operator");
                var op = opNode.String();
                if (Array.IndexOf(Operators, op) < 0)
                    throw opNode.Error($"'{op}' is not a valid selector operator ({string.Join(", ", Operators)}): Kubernetes refuses it");
                var values = e.Get("values") is { } vs ? vs.Items().Select(v => v.IsNull ? "" : v.Scalar()).ToList() : [];
                if (op is "In" or "NotIn" && values.Count == 0)
                    throw e.Error($"operator {op} needs values");
                if (op is "Exists" or "DoesNotExist" && values.Count > 0)
                    throw e.Require("values").Error($"operator {op} takes no values");
                exprs.Add(new LabelRequirement(key, op, values));
            }
        }
        return new LabelSelector(labels, exprs);
    }
}
