using Forensics.Datapath.Abi;
using Forensics.Datapath.Control;
using Forensics.Tests;

namespace Forensics.Datapath.Tests;

/// <summary>
/// Cilium's own policy files (testdata/cilium, unmodified copies) loaded as users
/// load them, with pods their selectors select, and compiled: what the policy
/// map then holds is what Cilium's pkg/policy resolves for them.
/// </summary>
public class CiliumPolicyFileTests
{
    private static string CiliumFile(string upstreamPath) => CiliumFiles.PathOf(upstreamPath);

    private const string Lab = CiliumFiles.Lab;

    private static string Pod(string name, params (string K, string V)[] labels) => CiliumFiles.Pod(name, labels);

    private static ClusterSpec LoadWith(string upstreamPath, params string[] docs) => CiliumFiles.LoadWith(upstreamPath, docs);

    private static CompiledEndpointPolicy Compile(ClusterSpec c, string pod)
    {
        var ids = new IdentityAllocator();
        ids.Preallocate(c);
        return PolicyCompiler.Compile(c.Pods.Single(p => p.Name == pod), 1, c.Policies, ids);
    }

    // The files Cilium documents as "default deny, allow nothing" for the direction they name.
    [Theory]
    [InlineData("examples/minikube/sw_deny_policy.yaml", "deathstar", Dir.Ingress)]
    [InlineData("examples/policies/l3/egress-default-deny/egress-default-deny.yaml", "restricted", Dir.Egress)]
    [InlineData("cilium-cli/connectivity/builder/manifests/deny-all-ingress.yaml", "client", Dir.Ingress)]
    [InlineData("cilium-cli/connectivity/builder/manifests/deny-all-egress.yaml", "client", Dir.Egress)]
    [InlineData("test/k8s/manifests/cnp-default-deny-ingress.yaml", "client", Dir.Ingress)]
    [InlineData("test/k8s/manifests/cnp-default-deny-egress.yaml", "client", Dir.Egress)]
    public void Compile_EmptyRuleFile_DirectionEnforcedWithNoAllowEntry(string file, string pod, Dir dir)
    {
        var c = LoadWith(file,
            Pod("deathstar", ("org", "empire"), ("class", "deathstar")),
            Pod("restricted", ("role", "restricted")),
            Pod("client", ("kind", "client")));

        var compiled = Compile(c, pod);

        Assert.True(dir == Dir.Ingress ? compiled.IngressEnforced : compiled.EgressEnforced);
        Assert.False(dir == Dir.Ingress ? compiled.EgressEnforced : compiled.IngressEnforced);
        Assert.Empty(compiled.Entries);
    }

    [Fact]
    public void Compile_DenyToApp1DefaultAllow_OnlyApp1DeniedEverythingElseAllowed()
    {
        var c = LoadWith("test/k8s/manifests/cnp-deny-to-app1-default-allow.yaml",
            Pod("app1", ("id", "app1")), Pod("app2", ("id", "app2")), Pod("app3", ("id", "app3")));
        var ids = new IdentityAllocator();
        ids.Preallocate(c);
        var app1 = ids.ForPod(c.Pods.Single(p => p.Name == "app1")).Id;

        var compiled = PolicyCompiler.Compile(c.Pods.Single(p => p.Name == "app2"), 1, c.Policies, ids);

        Assert.True(compiled.EgressEnforced);
        Assert.False(compiled.IngressEnforced);
        Assert.Equal(
            [(Dir.Egress, 0u, true, false), (Dir.Egress, app1, false, true)],
            compiled.Entries.Select(e => (e.Direction, e.Identity, e.Allow, e.Deny)));
    }

    [Theory]
    [InlineData("egress: \"false\"", "spec.enableDefaultDeny.egress: 'false' is not a boolean")]
    [InlineData("egress: 0", "spec.enableDefaultDeny.egress: '0' is not a boolean")]
    [InlineData("egress: [false]", "spec.enableDefaultDeny.egress: a list is not a boolean")]
    [InlineData("egres: false", "spec.enableDefaultDeny.egres: unknown field")]
    public void Load_EnableDefaultDenyNotBoolean_Refused(string value, string expected)
    {
        var text = File.ReadAllText(CiliumFile("test/k8s/manifests/cnp-deny-to-app1-default-allow.yaml"))
            .Replace("egress: false", value, StringComparison.Ordinal);

        var e = Assert.Throws<ClusterSpecException>(() => ClusterLoader.Load(
            text + "\n---\n" + Lab + "\n---\n" + Pod("app1", ("id", "app1")) + "\n---\n" + Pod("app2", ("id", "app2")), "p.yaml"));

        Assert.DoesNotContain('\n', e.Message);
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("fromEndpoints: []")]
    [InlineData("fromCIDR: []")]
    [InlineData("fromCIDRSet: []")]
    [InlineData("fromEntities: []")]
    public void Compile_PeerListGivenEmpty_AllowsNothingEvenWithPorts(string peers)
    {
        var c = ClusterLoader.Load(string.Join("\n---\n", Lab, Pod("a", ("app", "a")), Pod("b", ("app", "b")), $$"""
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: p}
            spec:
              endpointSelector:
                matchLabels: {app: b}
              ingress:
                - {{peers}}
                  toPorts: [{ports: [{port: "80", protocol: TCP}]}]
            """), "p.yaml");

        var compiled = Compile(c, "b");

        Assert.True(compiled.IngressEnforced);
        Assert.Empty(compiled.Entries);
    }
}

/// <summary>L7 rules: kept, their ports allowed at L4 and said once; --l7 deny denies those ports instead.</summary>
public class CiliumL7Tests
{
    private static ClusterSpec Load() => CiliumFiles.LoadWith("examples/minikube/sw_l3_l4_l7_policy.yaml",
        CiliumFiles.Pod("deathstar", ("org", "empire"), ("class", "deathstar")), CiliumFiles.Pod("tiefighter", ("org", "empire"), ("class", "tiefighter")));

    [Fact]
    public void Compile_HttpRulesOnPort80_L4AllowedAndNotedOnce()
    {
        var c = Load();
        var ids = new IdentityAllocator();
        ids.Preallocate(c);

        var compiled = PolicyCompiler.Compile(c.PodNamed("deathstar"), 1, c.Policies, ids, PolicyContext.Of(c));

        // org=empire: the tiefighter and the deathstars themselves
        Assert.Equal(
            new[] { ids.ForPod(c.PodNamed("deathstar")).Id, ids.ForPod(c.PodNamed("tiefighter")).Id }.Order(),
            compiled.Entries.Select(e => e.Identity).Order());
        Assert.All(compiled.Entries, e => Assert.Equal((PolicyCompiler.Tcp, (ushort)80, true, false), (e.Protocol, e.Port, e.Allow, e.Deny)));
        Assert.Contains(c.Notices, n => n.Contains("L7 rules (http) are kept in the policy snapshot but not enforced", StringComparison.Ordinal));
        Assert.Contains("path: \"/v1/request-landing\"", c.Policies.Single().SourceText, StringComparison.Ordinal);
    }

    [Fact]
    public void Compile_L7Deny_PortWithL7RulesDeniedByDefault()
    {
        var c = Load() with { L7Deny = true };
        var ids = new IdentityAllocator();
        ids.Preallocate(c);

        var compiled = PolicyCompiler.Compile(c.PodNamed("deathstar"), 1, c.Policies, ids, PolicyContext.Of(c));

        Assert.True(compiled.IngressEnforced);
        Assert.Empty(compiled.Entries);
    }
}
