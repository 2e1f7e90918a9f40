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
}
