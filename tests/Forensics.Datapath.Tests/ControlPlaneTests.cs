using System.Net;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Control;

namespace Forensics.Datapath.Tests;

/// <summary>Identity allocation and policy compilation, without the kernel.</summary>
public class ControlPlaneTests
{
    private static PodSpec Pod(string name, string ns, string ip, params (string K, string V)[] labels) =>
        new(name, ns, labels.ToDictionary(l => l.K, l => l.V), IPAddress.Parse(ip));

    private static EndpointSelector Sel(params (string K, string V)[] labels) => new(labels.ToDictionary(l => l.K, l => l.V));

    private static PolicyRule Rule(IReadOnlyList<EndpointSelector>? endpoints = null, IReadOnlyList<CidrRule>? cidrs = null,
        IReadOnlyList<string>? entities = null, IReadOnlyList<PortProtocol>? ports = null) =>
        new(endpoints ?? [], cidrs ?? [], entities ?? [], ports ?? []);

    private static NetworkPolicySpec Policy(string name, string ns, EndpointSelector selector, IReadOnlyList<PolicyRule>? ingress = null,
        IReadOnlyList<PolicyRule>? egress = null, IReadOnlyList<PolicyRule>? ingressDeny = null) =>
        new(name, ns, selector, ingress ?? [], egress ?? [], ingressDeny ?? [], [], "");

    private static readonly PodSpec Frontend = Pod("frontend-1", "default", "10.0.0.10", ("app", "frontend"));
    private static readonly PodSpec Backend = Pod("backend-2", "default", "10.0.0.20", ("app", "backend"));
    private static readonly PodSpec OtherNsFrontend = Pod("frontend-9", "prod", "10.0.0.30", ("app", "frontend"));

    private static ClusterSpec Cluster(IReadOnlyList<PodSpec> pods, params NetworkPolicySpec[] policies) =>
        new("t.yaml", null, pods, [], policies);

    [Fact]
    public void IdentityAllocator_PodsInAnyOrder_SameNumbersForSameLabels()
    {
        var a = new IdentityAllocator();
        a.Preallocate(Cluster([Frontend, Backend, OtherNsFrontend]));
        var b = new IdentityAllocator();
        b.Preallocate(Cluster([OtherNsFrontend, Backend, Frontend]));

        Assert.Equal(a.ForPod(Frontend).Id, b.ForPod(Frontend).Id);
        Assert.Equal(a.ForPod(Backend).Id, b.ForPod(Backend).Id);
        Assert.NotEqual(a.ForPod(Frontend).Id, a.ForPod(OtherNsFrontend).Id);
        Assert.All([Frontend, Backend, OtherNsFrontend], p => Assert.InRange(a.ForPod(p).Id, 256u, 16777215u));
        Assert.Equal(a.ForPod(Backend), a.ForPod(Pod("backend-3", "default", "10.0.0.21", ("k8s:app", "backend"))));
    }

    [Fact]
    public void IdentityAllocator_Reserved_KeepCiliumNumbers()
    {
        var ids = new IdentityAllocator();

        Assert.Equal(["reserved:host"], ids[1].Labels);
        Assert.Equal(["reserved:world"], ids[2].Labels);
        Assert.Equal(["reserved:remote-node"], ids[6].Labels);
        Assert.Equal(["reserved:kube-apiserver"], ids[7].Labels);
    }

    [Fact]
    public void IdentityAllocator_CidrsOfPolicies_LocalScopeWithWorldLabel()
    {
        var ids = new IdentityAllocator();
        ids.Preallocate(Cluster([Frontend], Policy("p", "default", Sel(("app", "frontend")),
            egress: [Rule(cidrs: [new CidrRule("198.51.100.0/24", ["198.51.100.128/25"])])])));

        var cidrs = ids.All.Where(i => i.IsCidr).ToList();

        Assert.Equal(2, cidrs.Count);
        Assert.Equal(16777216u, cidrs[0].Id);
        Assert.Equal(["cidr:198.51.100.0/24", "reserved:world"], cidrs[0].Labels);
        Assert.Equal(["cidr:198.51.100.128/25", "reserved:world"], cidrs[1].Labels);
    }

    [Fact]
    public void Compile_SelectorWithoutNamespace_SelectsOnlyPolicyNamespace()
    {
        var ids = new IdentityAllocator();
        var cluster = Cluster([Frontend, Backend, OtherNsFrontend],
            Policy("p", "default", Sel(("app", "backend")), ingress: [Rule(endpoints: [Sel(("app", "frontend"))])]));
        ids.Preallocate(cluster);

        var c = PolicyCompiler.Compile(Backend, 7, cluster.Policies, ids);

        Assert.True(c.IngressEnforced);
        Assert.False(c.EgressEnforced);
        var e = Assert.Single(c.Entries);
        Assert.Equal((ids.ForPod(Frontend).Id, (byte)0, (ushort)0, PolicyMatch.L3Only, (ushort)7), (e.Identity, e.Protocol, e.Port, e.Match, e.EndpointId));
        Assert.Equal(["default/p"], e.Policies);
    }

    [Fact]
    public void Compile_SelectorNamingNamespace_SelectsAcrossNamespaces()
    {
        var ids = new IdentityAllocator();
        var cluster = Cluster([Frontend, Backend, OtherNsFrontend],
            Policy("p", "default", Sel(("app", "backend")),
                ingress: [Rule(endpoints: [Sel(("app", "frontend"), ("k8s:io.kubernetes.pod.namespace", "prod"))])]));
        ids.Preallocate(cluster);

        var c = PolicyCompiler.Compile(Backend, 1, cluster.Policies, ids);

        Assert.Equal([ids.ForPod(OtherNsFrontend).Id], c.Entries.Select(e => e.Identity));
    }

    [Fact]
    public void Compile_PolicyInOtherNamespace_DoesNotSelectPod()
    {
        var ids = new IdentityAllocator();
        var cluster = Cluster([Backend], Policy("p", "prod", Sel(), ingress: [Rule(entities: ["all"])]));

        var c = PolicyCompiler.Compile(Backend, 1, cluster.Policies, ids);

        Assert.False(c.IngressEnforced);
        Assert.Empty(c.Entries);
    }

    [Fact]
    public void Compile_AnyProtocolPortAndDenyOverlap_ExpandsAndMergesFlags()
    {
        var ids = new IdentityAllocator();
        var cluster = Cluster([Frontend, Backend], Policy("p", "default", Sel(("app", "backend")),
            ingress: [Rule(ports: [new PortProtocol(53, "ANY")])],
            ingressDeny: [Rule(ports: [new PortProtocol(53, "UDP")])]));
        ids.Preallocate(cluster);

        var c = PolicyCompiler.Compile(Backend, 1, cluster.Policies, ids);

        Assert.Equal(
            [(0u, (byte)6, (ushort)53, true, false), (0u, (byte)17, (ushort)53, true, true)],
            c.Entries.Select(e => (e.Identity, e.Protocol, e.Port, e.Allow, e.Deny)));
        Assert.All(c.Entries, e => Assert.Equal(PolicyMatch.L4Only, e.Match));
    }

    [Fact]
    public void Peers_CidrWithExcept_SelectsPrefixIdentityNotExcepted()
    {
        var ids = new IdentityAllocator();
        var rule = Rule(cidrs: [new CidrRule("198.51.100.0/24", ["198.51.100.128/25"])]);
        ids.Preallocate(Cluster([], Policy("p", "default", Sel(), egress: [rule, Rule(cidrs: [new CidrRule("198.51.100.0/26", [])])])));

        var peers = PolicyCompiler.Peers(rule, "default", ids);

        var byCidr = ids.All.Where(i => i.IsCidr).ToDictionary(i => i.Cidr!.Value.ToString(), i => i.Id);
        Assert.Equal([byCidr["198.51.100.0/24"], byCidr["198.51.100.0/26"]], peers.Order());
    }

    [Fact]
    public void Peers_Entities_MapToReservedAndWorkloadIdentities()
    {
        var ids = new IdentityAllocator();
        ids.Preallocate(Cluster([Frontend, Backend]));

        Assert.Equal([1u], PolicyCompiler.Peers(Rule(entities: ["host"]), "default", ids));
        // world: reserved:world, world-ipv4 and world-ipv6 (Cilium's EntitySelectorMapping)
        Assert.Equal([2u, 9u, 10u], PolicyCompiler.Peers(Rule(entities: ["world"]), "default", ids));
        Assert.Equal([9u], PolicyCompiler.Peers(Rule(entities: ["world-ipv4"]), "default", ids));
        Assert.Equal([7u], PolicyCompiler.Peers(Rule(entities: ["kube-apiserver"]), "default", ids));
        Assert.Empty(PolicyCompiler.Peers(Rule(entities: ["none"]), "default", ids));
        Assert.Equal([0u], PolicyCompiler.Peers(Rule(entities: ["all"]), "default", ids));
        var cluster = PolicyCompiler.Peers(Rule(entities: ["cluster"]), "default", ids);
        Assert.Contains(1u, cluster);
        Assert.Contains(ids.ForPod(Frontend).Id, cluster);
        Assert.Contains(ids.ForPod(Backend).Id, cluster);
        Assert.DoesNotContain(2u, cluster);
        Assert.Throws<ArgumentException>(() => PolicyCompiler.Peers(Rule(entities: ["galaxy"]), "default", ids));
    }

    [Fact]
    public void Compile_NoPeersNoPorts_EnforcedAndAllowsNothing()
    {
        var ids = new IdentityAllocator();
        var cluster = Cluster([Backend], Policy("p", "default", Sel(("app", "backend")), egress: [Rule()]));

        var c = PolicyCompiler.Compile(Backend, 1, cluster.Policies, ids);

        Assert.True(c.EgressEnforced);
        Assert.Empty(c.Entries);
    }

    [Fact]
    public void Compile_PortsWithoutPeers_AnyPeerOnThosePorts()
    {
        var ids = new IdentityAllocator();
        var cluster = Cluster([Backend], Policy("p", "default", Sel(("app", "backend")), egress: [Rule(ports: [new PortProtocol(53, "UDP")])]));

        var e = Assert.Single(PolicyCompiler.Compile(Backend, 1, cluster.Policies, ids).Entries);

        Assert.Equal((Dir.Egress, 0u, (byte)17, (ushort)53, PolicyMatch.L4Only), (e.Direction, e.Identity, e.Protocol, e.Port, e.Match));
    }

    [Fact]
    public void Compile_PeerListGivenEmpty_SelectsNothingEvenWithPorts()
    {
        var ids = new IdentityAllocator();
        var cluster = Cluster([Frontend, Backend], Policy("p", "default", Sel(("app", "backend")),
            ingress: [Rule(ports: [new PortProtocol(80, "TCP")]) with { SelectsNothing = true }]));

        var c = PolicyCompiler.Compile(Backend, 1, cluster.Policies, ids);

        Assert.True(c.IngressEnforced);
        Assert.Empty(c.Entries);
    }

    [Fact]
    public void Compile_EntryOfAllowAndDenyRules_NamesTheRulesThatDecide()
    {
        var ids = new IdentityAllocator();
        var cluster = Cluster([Frontend, Backend],
            Policy("a", "default", Sel(("app", "backend")), ingress: [Rule(entities: ["all"]), Rule(ports: [new PortProtocol(80, "TCP")])]),
            Policy("b", "default", Sel(("app", "backend")), ingress: [Rule(ports: [new PortProtocol(80, "TCP")])],
                ingressDeny: [Rule(ports: [new PortProtocol(80, "TCP")])]));

        var c = PolicyCompiler.Compile(Backend, 1, cluster.Policies, ids);

        var all = c.Entries.Single(e => e.Port == 0);
        Assert.Equal(["default/a spec.ingress[0]"], all.Rules.Select(r => r.ToString()));
        var port80 = c.Entries.Single(e => e.Port == 80);
        Assert.True(port80.Allow && port80.Deny);
        Assert.Equal(["default/b spec.ingressDeny[0]"], port80.Rules.Select(r => r.ToString()));
        Assert.Equal(
            ["k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy", "k8s:io.cilium.k8s.policy.name=b", "k8s:io.cilium.k8s.policy.namespace=default"],
            port80.Rules[0].Labels);
    }

    [Fact]
    public void Compile_DefaultDenyDisabledInEveryPolicy_AllowAllEntryBesideDenies()
    {
        var ids = new IdentityAllocator();
        var cluster = Cluster([Frontend, Backend], Policy("p", "default", Sel(("app", "backend")),
            ingressDeny: [Rule(endpoints: [Sel(("app", "frontend"))])]) with { DefaultDenyIngress = false });
        ids.Preallocate(cluster);

        var c = PolicyCompiler.Compile(Backend, 1, cluster.Policies, ids);

        Assert.True(c.IngressEnforced);
        Assert.Equal(
            [(0u, true, false), (ids.ForPod(Frontend).Id, false, true)],
            c.Entries.Select(e => (e.Identity, e.Allow, e.Deny)));
        Assert.True(Assert.Single(c.Entries[0].Rules).IsDefaultAllow);
    }

    [Fact]
    public void Compile_DefaultDenyDisabledInOnePolicyOnly_OtherPolicyKeepsDefaultDeny()
    {
        var ids = new IdentityAllocator();
        var cluster = Cluster([Frontend, Backend],
            Policy("open", "default", Sel(("app", "backend")), ingressDeny: [Rule(entities: ["world"])]) with { DefaultDenyIngress = false },
            Policy("closed", "default", Sel(("app", "backend")), ingress: [Rule(endpoints: [Sel(("app", "frontend"))])]));
        ids.Preallocate(cluster);

        var c = PolicyCompiler.Compile(Backend, 1, cluster.Policies, ids);

        Assert.DoesNotContain(c.Entries, e => e.Identity == 0 && e.Allow);
    }
}
