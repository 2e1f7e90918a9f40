using System.Runtime.InteropServices;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Control;
using Forensics.Recorder.Batches;
using Forensics.Recorder.Tables;

namespace Forensics.Recorder.Tests;

/// <summary>
/// Verdicts and policy drops name the rules that decided (issue 12 item 4): the rule id the datapath's event
/// carries is resolved, when the row is decoded, to Hubble's allowed_by / denied_by (namespace/name) and the
/// rules themselves; rule id 0 is default deny and names nothing.
/// </summary>
public class PolicyRuleRowsTests
{
    private static readonly PolicyRuleRef Allow = new("CiliumNetworkPolicy", "default", "backend-from-frontend-8080", "spec.ingress[0]");
    private static readonly PolicyRuleRef Deny = new("CiliumNetworkPolicy", "default", "xwing-denylist", "spec.egressDeny[0]");
    private static readonly PolicyRuleRef Clusterwide = new("CiliumClusterwideNetworkPolicy", "", "no-world", "spec.egressDeny[1]");

    private static EventContext Context() => new(0)
    {
        PolicyRules = id => id switch
        {
            7 => [Allow],
            8 => [Deny, Clusterwide],
            9 => [PolicyRuleRef.DefaultAllow(Dir.Egress)],
            _ => [],
        },
    };

    private static byte[] Record<T>(EventKind kind, Action<byte[], Func<string, int>> fill) where T : struct
    {
        var b = new byte[Marshal.SizeOf<T>()];
        b[(int)Marshal.OffsetOf<Hdr>(nameof(Hdr.Kind))] = (byte)kind;
        BitConverter.TryWriteBytes(b.AsSpan((int)Marshal.OffsetOf<Hdr>(nameof(Hdr.Size))), (ushort)b.Length);
        int tuple = (int)Marshal.OffsetOf<T>("Tuple");
        b[tuple + (int)Marshal.OffsetOf<Datapath.Abi.Tuple>(nameof(Datapath.Abi.Tuple.Family))] = 2;
        b[tuple + (int)Marshal.OffsetOf<Datapath.Abi.Tuple>(nameof(Datapath.Abi.Tuple.Proto))] = 6;
        fill(b, f => (int)Marshal.OffsetOf<T>(f));
        return b;
    }

    private static byte[] Verdict(VerdictAction action, PolicyMatch match, uint ruleId, Dir dir = Dir.Ingress, uint ifindex = 0) => Record<PolicyEvent>(EventKind.Policy, (b, at) =>
    {
        b[at(nameof(PolicyEvent.Action))] = (byte)action;
        b[at(nameof(PolicyEvent.Match))] = (byte)match;
        b[at("Meta") + (int)Marshal.OffsetOf<DpMeta>(nameof(DpMeta.Direction))] = (byte)dir;
        BitConverter.TryWriteBytes(b.AsSpan(at("Meta") + (int)Marshal.OffsetOf<DpMeta>(nameof(DpMeta.Ifindex))), ifindex);
        BitConverter.TryWriteBytes(b.AsSpan(at(nameof(PolicyEvent.RuleId))), ruleId);
    });

    private static byte[] Drop(ushort reason, uint ruleId) => Record<DropEvent>(EventKind.Drop, (b, at) =>
    {
        BitConverter.TryWriteBytes(b.AsSpan(at(nameof(DropEvent.Reason))), reason);
        BitConverter.TryWriteBytes(b.AsSpan(at(nameof(DropEvent.RuleId))), ruleId);
    });

    private static List<Dictionary<string, object?>> Decode(EventKind kind, params byte[][] records)
    {
        var rows = Rows.For(kind, records.Length)!;
        var ctx = Context();
        foreach (var r in records)
            rows.Append(r, ctx);
        return [.. BatchRows.Rows(rows.Batch)];
    }

    [Fact]
    public void PolicyRows_AllowedByARule_AllowedByNamesThePolicyAndRulesTheRule()
    {
        var row = Assert.Single(Decode(EventKind.Policy, Verdict(VerdictAction.Allow, PolicyMatch.L3L4, 7)));
        Assert.Equal("allow", row["action"]);
        Assert.Equal(7u, row["rule_id"]);
        Assert.Equal("default/backend-from-frontend-8080", row["allowed_by"]);
        Assert.Null(row["denied_by"]);
        Assert.Equal("CiliumNetworkPolicy default/backend-from-frontend-8080 spec.ingress[0]", row["rules"]);
    }

    [Fact]
    public void PolicyRows_DeniedByDenyRulesOfTwoPolicies_DeniedByNamesBothAsHubbleDoes()
    {
        var row = Assert.Single(Decode(EventKind.Policy, Verdict(VerdictAction.Deny, PolicyMatch.L3Only, 8, Dir.Egress)));
        Assert.Equal("default/xwing-denylist,no-world", row["denied_by"]); // a clusterwide policy by its name alone
        Assert.Null(row["allowed_by"]);
        Assert.Equal("CiliumNetworkPolicy default/xwing-denylist spec.egressDeny[0]; CiliumClusterwideNetworkPolicy no-world spec.egressDeny[1]", row["rules"]);
    }

    [Fact]
    public void PolicyRows_DeniedWithNoRule_RuleIdZeroAndNothingNamed()
    {
        var row = Assert.Single(Decode(EventKind.Policy, Verdict(VerdictAction.Deny, PolicyMatch.None, 0)));
        Assert.Equal("deny", row["action"]);
        Assert.Equal(0u, row["rule_id"]); // default deny
        Assert.Null(row["denied_by"]);
        Assert.Null(row["allowed_by"]);
        Assert.Null(row["rules"]);
    }

    [Fact]
    public void PolicyRows_CiliumsSynthesizedDefaultAllow_SaidInRulesNoPolicyNamed()
    {
        var row = Assert.Single(Decode(EventKind.Policy, Verdict(VerdictAction.Allow, PolicyMatch.All, 9, Dir.Egress)));
        Assert.Null(row["allowed_by"]);
        Assert.Equal("default allow (egress: no policy enables default deny)", row["rules"]);
    }

    [Fact]
    public void DropRows_PolicyDrops_DenylistNamesItsRuleAndDefaultDenyIsRuleZero()
    {
        var rows = Decode(EventKind.Drop, Drop(181, 8), Drop(133, 0), Drop(158, 0));
        Assert.Equal("default/xwing-denylist,no-world", rows[0]["denied_by"]);
        Assert.Equal(8u, rows[0]["rule_id"]);
        Assert.StartsWith("CiliumNetworkPolicy default/xwing-denylist spec.egressDeny[0]", (string)rows[0]["rules"]!, StringComparison.Ordinal);

        Assert.Equal(0u, rows[1]["rule_id"]); // 133: no rule allowed it
        Assert.Null(rows[1]["denied_by"]);
        Assert.Null(rows[1]["rules"]);

        Assert.Null(rows[2]["rule_id"]); // not a policy drop: no rule to speak of
        Assert.Null(rows[2]["denied_by"]);
    }

    [Fact]
    public void PolicyRows_NoDatapathToAsk_RuleIdKeptNamesNull()
    {
        var rows = Rows.For(EventKind.Policy, 1)!;
        rows.Append(Verdict(VerdictAction.Allow, PolicyMatch.L3L4, 7), new EventContext(0));
        var row = Assert.Single(BatchRows.Rows(rows.Batch));
        Assert.Equal(7u, row["rule_id"]);
        Assert.Null(row["allowed_by"]);
        Assert.Null(row["rules"]);
    }

    [Fact]
    public void PolicyRows_TwoDatapathsWithTheSameRuleIdAndIfindex_EachRowNamesItsOwnDatapathsRuleAndInterface()
    {
        // two running datapaths attached at once number their rules each on its own: id 1 of one is not id 1 of the other
        var shared = new EventContext(0);
        var a = shared.ForDatapath(id => id == 1 ? [Allow] : [], ifindex => ifindex == 5 ? "lxc-a" : null);
        var b = shared.ForDatapath(id => id == 1 ? [Deny] : [], ifindex => ifindex == 5 ? "lxc-b" : null);
        var rows = Rows.For(EventKind.Policy, 3)!;
        rows.Append(Verdict(VerdictAction.Allow, PolicyMatch.L3L4, 1, ifindex: 5), a);
        rows.Append(Verdict(VerdictAction.Deny, PolicyMatch.L3Only, 1, Dir.Egress, ifindex: 5), b);
        rows.Append(Verdict(VerdictAction.Allow, PolicyMatch.L3L4, 1, ifindex: 5), a);
        var r = BatchRows.Rows(rows.Batch).ToList();
        Assert.Equal("default/backend-from-frontend-8080", r[0]["allowed_by"]);
        Assert.Equal("default/xwing-denylist", r[1]["denied_by"]);
        Assert.Equal("default/backend-from-frontend-8080", r[2]["allowed_by"]);
        // and each its own namespace's interface by the same ifindex
        Assert.Equal(["lxc-a", "lxc-b", "lxc-a"], r.Select(x => (string?)x["interface"]));
        Assert.Null(shared.PolicyRules); // the views do not change the context they came from
    }

    [Fact]
    public void ForDatapath_ProcessImagesAndPods_SharedWithTheContextItCameFrom()
    {
        var shared = new EventContext(0);
        var view = shared.ForDatapath(_ => []);
        shared.RegisterBinary(42, "/usr/bin/curl", 7);
        Assert.Equal("/usr/bin/curl", view.Binary(42));
        Assert.Same(shared.Attribution, view.Attribution);
        Assert.Same(shared.Texts, view.Texts);
    }
}
