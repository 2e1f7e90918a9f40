using Forensics.Datapath.Abi;
using Forensics.Datapath.Control;
using Forensics.Tests;
using static Forensics.Kernel.Tests.DatapathHarness;

namespace Forensics.Kernel.Tests;

/// <summary>
/// Cilium's own policy and workload files (testdata/cilium, unmodified) loaded
/// as users load them and enforced by the real datapath programs, one crafted
/// packet at a time through BPF_PROG_TEST_RUN: what Cilium's documentation and
/// pkg/policy say each file allows and denies. Many files per test, one
/// datapath per file, so the kernel time stays small.
/// </summary>
public class CiliumFileDatapathTests
{
    private static readonly string[] Pods =
    [
        CiliumFiles.Pod("deathstar", ("org", "empire"), ("class", "deathstar")),
        CiliumFiles.Pod("xwing", ("org", "alliance"), ("class", "xwing")),
        CiliumFiles.Pod("restricted", ("role", "restricted")),
    ];

    /// <summary>A new TCP connection from one pod to another, through the sender's egress and the receiver's ingress.</summary>
    private static (uint Verdict, Events Events) Connect(DatapathHarness h, ClusterSpec c, string from, string to, ushort port)
    {
        var src = c.PodNamed(from);
        var dst = c.PodNamed(to);
        var pkt = Packets.Tcp(src.Ip!.ToString(), 41000, dst.Ip!.ToString(), port);
        var egress = h.From(src, pkt);
        if (egress.ReturnValue != TcActOk)
            return (egress.ReturnValue, h.Take());
        return (h.To(dst, egress.DataOut).ReturnValue, h.Take());
    }

    [KernelFact]
    public void EmptyRuleFiles_NewConnection_DroppedPolicyDeniedInThatDirectionOnly()
    {
        // Cilium: "ingress: [{}]" / "egress: [{}]" put the endpoint in default deny and allow nothing.
        (string File, string From, string To, Dir Dropped)[] cases =
        [
            ("examples/minikube/sw_deny_policy.yaml", "xwing", "deathstar", Dir.Ingress),
            ("examples/policies/l3/egress-default-deny/egress-default-deny.yaml", "restricted", "xwing", Dir.Egress),
            ("cilium-cli/connectivity/builder/manifests/deny-all-ingress.yaml", "xwing", "deathstar", Dir.Ingress),
            ("cilium-cli/connectivity/builder/manifests/deny-all-egress.yaml", "xwing", "deathstar", Dir.Egress),
            ("test/k8s/manifests/cnp-default-deny-ingress.yaml", "deathstar", "xwing", Dir.Ingress),
            ("test/k8s/manifests/cnp-default-deny-egress.yaml", "deathstar", "xwing", Dir.Egress),
        ];
        foreach (var (file, from, to, dropped) in cases)
        {
            var c = CiliumFiles.LoadWith(file, Pods);
            using var h = new DatapathHarness(c);

            var (verdict, ev) = Connect(h, c, from, to, 80);

            Assert.True(verdict == TcActShot, $"{file}: {from} -> {to} was not dropped");
            var d = Assert.Single(ev.Drops);
            Assert.Equal((ushort)DropReason.Policy, d.Reason);
            Assert.Equal(dropped, d.Meta.Direction);
            var v = Assert.Single(ev.Verdicts, x => x.Action == VerdictAction.Deny);
            Assert.Equal(PolicyMatch.None, v.Match);
            // no rule decided: default deny
            Assert.Equal(0u, v.RuleId);
            Assert.Equal(0u, d.RuleId);
        }
    }

    [KernelFact]
    public void DenyToApp1DefaultAllow_App2ToApp1DeniedByDenylistAndToApp3Allowed()
    {
        var c = CiliumFiles.LoadWith("test/k8s/manifests/cnp-deny-to-app1-default-allow.yaml",
            CiliumFiles.Pod("app1", ("id", "app1")), CiliumFiles.Pod("app2", ("id", "app2")), CiliumFiles.Pod("app3", ("id", "app3")));
        using var h = new DatapathHarness(c);

        var (toApp1, app1Events) = Connect(h, c, "app2", "app1", 80);
        var (toApp3, app3Events) = Connect(h, c, "app2", "app3", 80);

        Assert.Equal(TcActShot, toApp1);
        var drop = Assert.Single(app1Events.Drops);
        Assert.Equal((ushort)DropReason.PolicyDeny, drop.Reason);
        Assert.Equal(TcActOk, toApp3);
        Assert.Empty(app3Events.Drops);
        var allow = Assert.Single(app3Events.Verdicts);
        Assert.Equal((VerdictAction.Allow, PolicyMatch.All, Dir.Egress), (allow.Action, allow.Match, allow.Meta.Direction));
        // the verdicts name the rule that decided: the denylist rule, and Cilium's synthesized allow-all
        var rules = h.Dp.Snapshot().Rules.ToDictionary(r => r.Id, r => string.Join(", ", r.Rules));
        var deny = Assert.Single(app1Events.Verdicts);
        Assert.Equal("default/deny-to-app1-default-allow spec.egressDeny[0]", rules[deny.RuleId]);
        Assert.Equal(deny.RuleId, drop.RuleId);
        Assert.Equal("default allow (egress: no policy enables default deny)", rules[allow.RuleId]);
    }

    [KernelFact]
    public void ServiceSelectingNoPod_LoadsAndItsTrafficDroppedNoServiceBackend()
    {
        // http-sw-app.yaml's deathstar Service, with its deployment scaled to zero
        var c = CiliumFiles.LoadWith("test/k8s/manifests/cnp-default-deny-egress.yaml", CiliumFiles.Pod("xwing", ("org", "alliance")), """
            apiVersion: v1
            kind: Service
            metadata: {name: deathstar}
            spec:
              type: ClusterIP
              ports: [{port: 80}]
              selector: {org: empire, class: deathstar}
            """);
        var svc = Assert.Single(c.Services);
        var xwing = c.PodNamed("xwing");
        using var h = new DatapathHarness(c with { Policies = [] });

        var r = h.From(xwing, Packets.Tcp(xwing.Ip!.ToString(), 41000, svc.ClusterIp!.ToString(), 80));

        Assert.Equal(TcActShot, r.ReturnValue);
        Assert.Equal((ushort)DropReason.NoService, Assert.Single(h.Take().Drops).Reason);
        Assert.Empty(Assert.Single(h.Dp.Snapshot().Services).Backends);
    }
    [KernelFact]
    public void HostFirewallConnectivityManifests_PodToHostAndHostToPod_AsCiliumCliExpects()
    {
        const string node = "192.0.2.1";
        // host-firewall-ingress (cilium-cli: PodToHost; the pod labelled name=client gets ResultPolicyDenyIngressDrop, others OK)
        var ing = CiliumFiles.LoadWith("cilium-cli/connectivity/builder/manifests/host-firewall-ingress.yaml",
            CiliumFiles.Pod("client", ("name", "client")), CiliumFiles.Pod("client2", ("name", "client2")));
        using (var h = new DatapathHarness(ing))
        {
            var hostId = Assert.NotNull(h.Dp.HostEndpoint).Id;
            var client = ing.PodNamed("client");
            var client2 = ing.PodNamed("client2");

            Assert.Equal(TcActOk, h.From(client2, Packets.IcmpEcho(client2.Ip!.ToString(), node, 7)).ReturnValue);
            Assert.Empty(h.Take().Drops);
            Assert.Equal(TcActShot, h.From(client, Packets.IcmpEcho(client.Ip!.ToString(), node, 8)).ReturnValue);
            var ev = h.Take();
            var d = Assert.Single(ev.Drops);
            Assert.Equal(((ushort)DropReason.Policy, hostId, Dir.Ingress), (d.Reason, d.Meta.EndpointId, d.Meta.Direction));
            // the world (fromEntities world) reaches the node
            Assert.Equal(TcActOk, h.FromNetwork(Packets.Tcp("198.51.100.10", 40000, node, 22)).ReturnValue);
            Assert.Empty(h.Take().Drops);
        }

        // host-firewall-egress (cilium-cli: HostToPod on 8080; echo-other-node gets ResultPolicyDenyEgressDrop, others OK)
        var eg = CiliumFiles.LoadWith("cilium-cli/connectivity/builder/manifests/host-firewall-egress.yaml",
            CiliumFiles.Pod("echo-same-node", ("name", "echo-same-node")), CiliumFiles.Pod("echo-other-node", ("name", "echo-other-node")));
        using (var h = new DatapathHarness(eg))
        {
            var hostId = Assert.NotNull(h.Dp.HostEndpoint).Id;
            var same = eg.PodNamed("echo-same-node");
            var other = eg.PodNamed("echo-other-node");

            Assert.Equal(TcActOk, h.To(same, Packets.Tcp(node, 43000, same.Ip!.ToString(), 8080)).ReturnValue);
            Assert.Empty(h.Take().Drops);
            Assert.Equal(TcActShot, h.To(other, Packets.Tcp(node, 43001, other.Ip!.ToString(), 8080)).ReturnValue);
            var d = Assert.Single(h.Take().Drops);
            Assert.Equal(((ushort)DropReason.Policy, hostId, Dir.Egress), (d.Reason, d.Meta.EndpointId, d.Meta.Direction));
            // the node to the world (toEntities world)
            Assert.Equal(TcActOk, h.ToNetwork(Packets.Tcp(node, 42000, "198.51.100.10", 443)).ReturnValue);
            Assert.Empty(h.Take().Drops);
        }
    }
    [KernelFact]
    public void DemoHostPolicy_NodeLabelledNodeAccessSsh_AsTheHostFirewallGuideShows()
    {
        // Documentation/security/host-firewall.rst: the node labelled node-access=ssh; from outside the cluster only
        // TCP/22 and ICMP echo requests, everything from the cluster; "10.0.2.2:49038 -> 10.0.2.15:21 ... action deny, match none"
        const string node = "192.0.2.1";
        var lab = CiliumFiles.Lab.Replace("nodeIP: 192.0.2.1}", "nodeIP: 192.0.2.1, nodeLabels: {node-access: ssh}}", StringComparison.Ordinal);
        Assert.Contains("node-access", lab, StringComparison.Ordinal);
        var c = ClusterLoader.Load(File.ReadAllText(CiliumFiles.PathOf("examples/policies/host/demo-host-policy.yaml")) + "\n---\n" + lab
            + "\n---\n" + CiliumFiles.Pod("app", ("app", "web")), "demo-host-policy.yaml");
        using var h = new DatapathHarness(c);
        var host = Assert.NotNull(h.Dp.HostEndpoint);
        var app = c.PodNamed("app");

        Assert.True(host.IngressEnforced);
        Assert.False(host.EgressEnforced);
        Assert.Equal(TcActOk, h.FromNetwork(Packets.Tcp("198.51.100.10", 49000, node, 22)).ReturnValue);
        Assert.Equal(TcActOk, h.FromNetwork(Packets.IcmpEcho("198.51.100.10", node, 9)).ReturnValue);
        Assert.Equal(TcActOk, h.From(app, Packets.Tcp(app.Ip!.ToString(), 41000, node, 10250)).ReturnValue);
        Assert.Empty(h.Take().Drops);
        Assert.Equal(TcActShot, h.FromNetwork(Packets.Tcp("198.51.100.10", 49038, node, 21)).ReturnValue);
        var ev = h.Take();
        var v = Assert.Single(ev.Verdicts);
        Assert.Equal((VerdictAction.Deny, PolicyMatch.None, Dir.Ingress, (uint)ReservedIdentity.World, host.Id),
            (v.Action, v.Match, v.Meta.Direction, v.RemoteIdentity, v.Meta.EndpointId));
        Assert.Equal((ushort)DropReason.Policy, Assert.Single(ev.Drops).Reason);
        // egress is not enforced (the policy has no egress rules): the node reaches the world on any port
        Assert.Equal(TcActOk, h.ToNetwork(Packets.Tcp(node, 42000, "198.51.100.10", 8443)).ReturnValue);
        // ...and its reply comes back in, though ingress is enforced and allows no such port: tracked as the host's connection
        Assert.Equal(TcActOk, h.FromNetwork(Packets.Tcp("198.51.100.10", 8443, node, 42000, 0x12)).ReturnValue);
        Assert.Empty(h.Take().Drops);
    }
}
