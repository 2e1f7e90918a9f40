using Forensics.Datapath.Abi;
using Forensics.Datapath.Control;
using Forensics.Tests;

namespace Forensics.Datapath.Tests;

/// <summary>
/// Host policies (a CiliumClusterwideNetworkPolicy with a nodeSelector) as Cilium reads them: they select the
/// node by its labels (the host endpoint), never pods; what Cilium refuses in them is refused; lab steps can
/// run on the node or a world host.
/// </summary>
public class HostPolicyTests
{
    private const string Lab = """
        apiVersion: forensics.dev/v1
        kind: Lab
        metadata: {name: hp}
        spec:
          podCIDR: 10.0.0.0/24
          serviceCIDR: 10.0.1.0/24
          nodeIP: 192.0.2.1
          nodeLabels: {type: worker}
          nodeListeners: {tcp: [22], udp: [8472]}
          world: [{name: admin, ip: 198.51.100.10, tcp: [443]}]
          steps:
            - {name: in, from: admin, tcp: node:22}
            - {name: out, from: node, tcp: admin:443}
            - {name: pod, pod: web, tcp: node:22}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: web, labels: {app: web}}
        """;

    private static ClusterSpec Load(string policy) => ClusterLoader.Load(Lab + "\n---\n" + policy, "hp.yaml");

    [Fact]
    public void NodeSelector_SelectsTheNodeByItsLabels_CompiledForTheHostEndpointAndNeverForPods()
    {
        var c = Load("""
            apiVersion: cilium.io/v2
            kind: CiliumClusterwideNetworkPolicy
            metadata: {name: lock-down}
            spec:
              nodeSelector: {matchLabels: {type: worker}}
              ingress:
                - fromEntities: [world]
                  toPorts: [{ports: [{port: "22", protocol: TCP}]}]
            """);
        var ids = new IdentityAllocator();
        ids.Preallocate(c);
        var p = Assert.Single(c.Policies);

        Assert.True(p.SelectsNodes);
        Assert.True(PolicyCompiler.SelectsNode(p, c.NodeLabels));
        var host = PolicyCompiler.CompileHost(7, c.Policies, ids, PolicyContext.Of(c));
        Assert.True(host.IngressEnforced);
        Assert.False(host.EgressEnforced);
        // world is reserved:world, world-ipv4 and world-ipv6
        Assert.Equal([(uint)ReservedIdentity.World, (uint)ReservedIdentity.WorldIpv4, (uint)ReservedIdentity.WorldIpv6], host.Entries.Select(x => x.Identity));
        Assert.All(host.Entries, x => Assert.Equal((7, "reserved:host", Dir.Ingress, PolicyCompiler.Tcp, (ushort)22),
            (x.EndpointId, x.Endpoint, x.Direction, x.Protocol, x.Port)));
        var e = host.Entries[0];
        Assert.Equal("CiliumClusterwideNetworkPolicy lock-down spec.ingress[0]", $"{e.Rules[0].Kind} {e.Rules[0]}");
        // the pod is not selected by a nodeSelector (Cilium's rule.matchesSubject)
        var pod = PolicyCompiler.Compile(c.Pods.Single(), 1, c.Policies, ids, PolicyContext.Of(c));
        Assert.False(pod.IngressEnforced || pod.EgressEnforced);
        // a node without the label is not selected: no host endpoint policy
        Assert.False(PolicyCompiler.SelectsNode(p, new Dictionary<string, string> { ["type"] = "control" }));
    }

    [Fact]
    public void NodeSelector_MatchingNoNodeLabel_LoadsWithANoticeNamingTheNodeLabels()
    {
        var c = Load("""
            apiVersion: cilium.io/v2
            kind: CiliumClusterwideNetworkPolicy
            metadata: {name: gpu-nodes}
            spec:
              nodeSelector: {matchLabels: {pool: gpu}}
              ingress: [{fromEntities: [world]}]
            """);

        var notice = Assert.Single(c.Notices, n => n.Contains("nodeSelector selects no node", StringComparison.Ordinal));
        Assert.Contains("type=worker", notice, StringComparison.Ordinal);
        Assert.DoesNotContain(c.Notices, n => n.Contains("selects no node", StringComparison.Ordinal) && n != notice);
    }

    [Fact]
    public void EndpointSelectorAll_InAClusterwidePolicy_DoesNotSelectTheNode()
    {
        var c = Load("""
            apiVersion: cilium.io/v2
            kind: CiliumClusterwideNetworkPolicy
            metadata: {name: all-pods}
            spec:
              endpointSelector: {}
              ingress: [{fromEntities: [world]}]
            """);
        var ids = new IdentityAllocator();
        ids.Preallocate(c);

        Assert.False(PolicyCompiler.SelectsNode(Assert.Single(c.Policies), c.NodeLabels));
        var host = PolicyCompiler.CompileHost(7, c.Policies, ids, PolicyContext.Of(c));
        Assert.False(host.IngressEnforced || host.EgressEnforced);
        Assert.True(PolicyCompiler.Compile(c.Pods.Single(), 1, c.Policies, ids, PolicyContext.Of(c)).IngressEnforced);
    }

    [Theory]
    [InlineData("CiliumNetworkPolicy", "nodeSelector: {}\n  ingress: [{fromEntities: [world]}]", "rule cannot have NodeSelector")]
    [InlineData("CiliumClusterwideNetworkPolicy", "nodeSelector: {}\n  endpointSelector: {}", "rule cannot have both EndpointSelector and NodeSelector")]
    [InlineData("CiliumClusterwideNetworkPolicy",
        "nodeSelector: {}\n  ingress: [{toPorts: [{ports: [{port: \"80\", protocol: TCP}], rules: {http: [{method: GET}]}}]}]",
        "L7 policy is not supported on host ingress yet")]
    [InlineData("CiliumClusterwideNetworkPolicy",
        "nodeSelector: {}\n  egress: [{toPorts: [{ports: [{port: \"80\", protocol: TCP}], rules: {http: [{method: GET}]}}]}]",
        "L7 protocol HTTP is not supported on host egress yet")]
    public void HostPolicy_WhatCiliumRefuses_RefusedWithItsWords(string kind, string spec, string message)
    {
        var e = Assert.Throws<ClusterSpecException>(() => Load($"apiVersion: cilium.io/v2\nkind: {kind}\nmetadata: {{name: bad}}\nspec:\n  {spec}\n"));

        Assert.Contains(message, e.Message, StringComparison.Ordinal);
        Assert.Contains("Cilium refuses", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Steps_FromNodeOrWorldHost_RunThereAndNodeListenersAreRead()
    {
        var c = Load("""
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: unused}
            """);
        var steps = c.Lab!.Steps.ToDictionary(s => s.Name);

        Assert.Equal((StepSources.World, "admin", "192.0.2.1:22"), (steps["in"].From, steps["in"].Pod, steps["in"].Target));
        Assert.Equal((StepSources.Node, "node", "198.51.100.10:443"), (steps["out"].From, steps["out"].Pod, steps["out"].Target));
        Assert.Equal((StepSources.Pod, "default/web"), (steps["pod"].From, steps["pod"].Pod));
        Assert.Equal(22, Assert.Single(c.Lab.NodeTcpPorts));
        Assert.Equal(8472, Assert.Single(c.Lab.NodeUdpPorts));
    }

    [Theory]
    [InlineData("{name: x, from: nowhere, tcp: node:22}", "'nowhere' is neither the node nor a world host")]
    [InlineData("{name: x, pod: web, from: node, tcp: node:22}", "not both")]
    [InlineData("{name: x, tcp: node:22}", "pod: required field is missing")]
    public void Steps_BadSource_OneLineError(string step, string message)
    {
        const string last = "    - {name: pod, pod: web, tcp: node:22}";
        Assert.Contains(last, Lab, StringComparison.Ordinal);
        var yaml = Lab.Replace(last, last + "\n    - " + step, StringComparison.Ordinal);
        var e = Assert.Throws<ClusterSpecException>(() => ClusterLoader.Load(yaml, "hp.yaml"));

        Assert.Contains(message, e.Message, StringComparison.Ordinal);
    }
}
