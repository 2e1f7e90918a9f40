using Forensics.Datapath.Abi;
using Forensics.Datapath.Control;
using Forensics.Tests;
using static Forensics.Kernel.Tests.DatapathHarness;

namespace Forensics.Kernel.Tests;

/// <summary>
/// Cilium's host firewall (host policies: a CiliumClusterwideNetworkPolicy with a nodeSelector) in the real
/// datapath programs, one crafted packet at a time through BPF_PROG_TEST_RUN: the lab's node is the host
/// endpoint when the nodeSelector selects its labels; connections to the node's address (from the world on the
/// node's device, from pods at their veths) and from it (to the world, to pods) are policed by its policy,
/// replies pass, and a denied one is dropped as Cilium's 133 Policy denied by the host endpoint with the CCNP's
/// rule named by its verdict.
/// </summary>
public class HostFirewallDatapathTests
{
    private const string Node = "192.0.2.1";
    private const string World = "198.51.100.10";
    private const byte SynAck = 0x12;

    private static string Yaml(string nodeLabels) => $$$"""
        apiVersion: forensics.dev/v1
        kind: Lab
        metadata: {name: hostfw}
        spec:
          podCIDR: 10.0.0.0/24
          serviceCIDR: 10.0.1.0/24
          nodeIP: {{{Node}}}
          nodeLabels: {{{nodeLabels}}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: client, labels: {app: client}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: server, labels: {app: server}}
        ---
        apiVersion: cilium.io/v2
        kind: CiliumClusterwideNetworkPolicy
        metadata: {name: host-fw}
        spec:
          nodeSelector: {matchLabels: {node-access: ssh}}
          ingress:
            - fromEntities: [world]
              toPorts: [{ports: [{port: "22", protocol: TCP}]}]
            - fromEndpoints: [{matchLabels: {app: client}}]
              toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
          egress:
            - toEntities: [world]
              toPorts: [{ports: [{port: "443", protocol: TCP}]}]
            - toEndpoints: [{matchLabels: {app: server}}]
              toPorts: [{ports: [{port: "80", protocol: TCP}]}]
        """;

    private static ClusterSpec Selected() => ClusterLoader.Load(Yaml("{node-access: ssh}"), "hostfw.yaml");

    /// <summary>The rules a verdict or drop names, as the snapshot lists them.</summary>
    private static string RuleOf(DatapathHarness h, uint id) => string.Join(", ", h.Dp.RulesOf(id));

    private static void AssertHostPolicyDrop(DatapathHarness h, Events ev, ushort hostId, Dir dir)
    {
        var d = Assert.Single(ev.Drops);
        Assert.Equal((ushort)DropReason.Policy, d.Reason);
        Assert.Equal((hostId, dir), (d.Meta.EndpointId, d.Meta.Direction));
        DropSite.AssertPointsAtFxDrop(d);
        var v = Assert.Single(ev.Verdicts, x => x.Meta.EndpointId == hostId);
        Assert.Equal((VerdictAction.Deny, PolicyMatch.None, dir, 0u), (v.Action, v.Match, v.Meta.Direction, v.RuleId));
        Assert.Equal(0u, d.RuleId);
    }

    [KernelFact]
    public void HostIngress_FromWorldAndPods_AllowedPortPassesOtherPortDroppedByTheHostEndpoint()
    {
        var c = Selected();
        using var h = new DatapathHarness(c);
        var hostId = Assert.NotNull(h.Dp.HostEndpoint).Id;
        var client = c.PodNamed("client");
        var server = c.PodNamed("server");

        // the world to the node's port 22 (fromEntities world): allowed, and the node's reply passes as a reply
        Assert.Equal(TcActOk, h.FromNetwork(Packets.Tcp(World, 40000, Node, 22)).ReturnValue);
        var allowed = Assert.Single(h.Take().Verdicts);
        Assert.Equal((VerdictAction.Allow, PolicyMatch.L3L4, Dir.Ingress, hostId), (allowed.Action, allowed.Match, allowed.Meta.Direction, allowed.Meta.EndpointId));
        Assert.Equal((uint)ReservedIdentity.World, allowed.RemoteIdentity);
        Assert.Equal("host-fw spec.ingress[0]", RuleOf(h, allowed.RuleId));
        Assert.Equal(TcActOk, h.ToNetwork(Packets.Tcp(Node, 22, World, 40000, SynAck)).ReturnValue);
        Assert.Empty(h.Take().Verdicts);

        // ...to another port of the node: dropped, 133 Policy denied, by the host endpoint's ingress default deny
        Assert.Equal(TcActShot, h.FromNetwork(Packets.Tcp(World, 40001, Node, 23)).ReturnValue);
        AssertHostPolicyDrop(h, h.Take(), hostId, Dir.Ingress);

        // a pod the rule names, to the node's 8080: the pod's egress (no policy) then the host's ingress allow it
        var fromClient = h.From(client, Packets.Tcp(client.Ip!.ToString(), 41000, Node, 8080));
        Assert.Equal(TcActOk, fromClient.ReturnValue);
        var hostVerdict = Assert.Single(h.Take().Verdicts);
        Assert.Equal((VerdictAction.Allow, Dir.Ingress, hostId, h.IdentityOf(client)),
            (hostVerdict.Action, hostVerdict.Meta.Direction, hostVerdict.Meta.EndpointId, hostVerdict.RemoteIdentity));
        Assert.Equal("host-fw spec.ingress[1]", RuleOf(h, hostVerdict.RuleId));
        // the node's reply reaches the pod as a reply of the pod's connection
        Assert.Equal(TcActOk, h.To(client, Packets.Tcp(Node, 8080, client.Ip!.ToString(), 41000, SynAck)).ReturnValue);
        Assert.Empty(h.Take().Drops);

        // another pod to the same port: dropped by the host endpoint
        Assert.Equal(TcActShot, h.From(server, Packets.Tcp(server.Ip!.ToString(), 41000, Node, 8080)).ReturnValue);
        AssertHostPolicyDrop(h, h.Take(), hostId, Dir.Ingress);
    }

    [KernelFact]
    public void HostEgress_ToWorldAndPods_AllowedPortPassesOtherDroppedByTheHostEndpoint()
    {
        var c = Selected();
        using var h = new DatapathHarness(c);
        var hostId = Assert.NotNull(h.Dp.HostEndpoint).Id;
        var client = c.PodNamed("client");
        var server = c.PodNamed("server");

        // the node to the world's 443 (toEntities world): allowed; the world's reply comes back in as a reply
        Assert.Equal(TcActOk, h.ToNetwork(Packets.Tcp(Node, 42000, World, 443)).ReturnValue);
        var allowed = Assert.Single(h.Take().Verdicts);
        Assert.Equal((VerdictAction.Allow, Dir.Egress, hostId), (allowed.Action, allowed.Meta.Direction, allowed.Meta.EndpointId));
        Assert.Equal("host-fw spec.egress[0]", RuleOf(h, allowed.RuleId));
        Assert.Equal(TcActOk, h.FromNetwork(Packets.Tcp(World, 443, Node, 42000, SynAck)).ReturnValue);
        Assert.Empty(h.Take().Drops);

        // ...to the world's 80: dropped at the node's device, egress
        Assert.Equal(TcActShot, h.ToNetwork(Packets.Tcp(Node, 42001, World, 80)).ReturnValue);
        AssertHostPolicyDrop(h, h.Take(), hostId, Dir.Egress);

        // the node to the server pod's 80: the host's egress allows it (then the pod's ingress: no policy)
        Assert.Equal(TcActOk, h.To(server, Packets.Tcp(Node, 43000, server.Ip!.ToString(), 80)).ReturnValue);
        var toServer = Assert.Single(h.Take().Verdicts);
        Assert.Equal((VerdictAction.Allow, Dir.Egress, hostId, h.IdentityOf(server)),
            (toServer.Action, toServer.Meta.Direction, toServer.Meta.EndpointId, toServer.RemoteIdentity));
        Assert.Equal("host-fw spec.egress[1]", RuleOf(h, toServer.RuleId));
        Assert.Equal(TcActOk, h.From(server, Packets.Tcp(server.Ip!.ToString(), 80, Node, 43000, SynAck)).ReturnValue);
        Assert.Empty(h.Take().Drops);

        // the node to the client pod: dropped by the host's egress policy before it reaches the pod
        Assert.Equal(TcActShot, h.To(client, Packets.Tcp(Node, 43001, client.Ip!.ToString(), 80)).ReturnValue);
        AssertHostPolicyDrop(h, h.Take(), hostId, Dir.Egress);
    }

    [KernelFact]
    public void NodeSelector_NodeWithoutTheLabel_NoHostEndpointAndNodeTrafficPasses()
    {
        // the same policy, but the node lacks node-access=ssh: nothing selects the host (Cilium: no host endpoint policy)
        var c = ClusterLoader.Load(Yaml("{zone: a}"), "hostfw.yaml");
        using var h = new DatapathHarness(c);
        var server = c.PodNamed("server");

        Assert.Null(h.Dp.HostEndpoint);
        Assert.Equal(TcActOk, h.FromNetwork(Packets.Tcp(World, 40001, Node, 23)).ReturnValue);
        Assert.Equal(TcActOk, h.ToNetwork(Packets.Tcp(Node, 42001, World, 80)).ReturnValue);
        Assert.Equal(TcActOk, h.From(server, Packets.Tcp(server.Ip!.ToString(), 41000, Node, 8080)).ReturnValue);
        var ev = h.Take();
        Assert.Empty(ev.Drops);
        Assert.Empty(ev.Verdicts);
    }
}
