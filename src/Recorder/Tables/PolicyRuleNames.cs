using Forensics.Datapath.Control;

namespace Forensics.Recorder.Tables;

/// <summary>
/// The rule id a verdict or policy drop carries (fx_policy_value.rule_id), resolved to what the rows say:
/// the policies as Hubble names them in ingress_allowed_by / egress_denied_by (namespace/name, comma-separated,
/// the name alone for a clusterwide policy) and the rules themselves (KIND NAMESPACE/NAME PATH, '; '-separated).
/// Cached per datapath (its resolver) and id on the decode thread (ids are never reused while a datapath is loaded;
/// two datapaths number their rules each on its own).
/// </summary>
internal sealed class PolicyRuleNames
{
    private readonly Dictionary<(Func<uint, IReadOnlyList<PolicyRuleRef>> Datapath, uint Id), (string? Policies, string? Rules)> cache = [];

    /// <summary>(policies, rules) of the id; both null for 0 (no rule decided: default deny) or an id the resolver does not know.</summary>
    public (string? Policies, string? Rules) Of(uint ruleId, EventContext ctx)
    {
        if (ruleId == 0 || ctx.PolicyRules is not { } resolve)
            return (null, null);
        if (cache.TryGetValue((resolve, ruleId), out var known))
            return known;
        var rules = resolve(ruleId);
        if (rules.Count == 0)
            return (null, null); // not cached: an id is only ever resolved once its rules are registered
        var policies = rules.Where(r => !r.IsDefaultAllow).Select(r => r.Policy).Distinct(StringComparer.Ordinal).ToList();
        var named = (policies.Count == 0 ? null : string.Join(',', policies), Text(rules));
        cache[(resolve, ruleId)] = named;
        return named;
    }

    /// <summary>The rules as the rows' rules column holds them.</summary>
    public static string Text(IEnumerable<PolicyRuleRef> rules) =>
        string.Join("; ", rules.Select(r => r.IsDefaultAllow ? r.ToString() : $"{r.Kind} {r.Policy} {r.Path}"));
}
