using Forensics.Datapath.Abi;
using Forensics.Datapath.Control;
using Forensics.Tests;
using static Forensics.Kernel.Tests.DatapathHarness;

namespace Forensics.Kernel.Tests;

/// <summary>
/// Cilium's policy language beyond matchLabels and single ports (issue 17), loaded
/// from YAML and enforced by the real programs through BPF_PROG_TEST_RUN: port
/// ranges (endPort) in the LPM policy map with a deny range inside an allow range,
/// ICMP types, named ports, fromRequires, a clusterwide policy with
/// matchExpressions. One datapath for all of them.
/// </summary>
public class PolicyLanguageDatapathTests
{
    private const string Yaml = """
        apiVersion: v1
        kind: Namespace
        metadata: {name: tools}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: frontend, labels: {app: frontend, env: prod}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: frontend-dev, labels: {app: frontend}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: backend, labels: {app: backend}}
        spec:
          containers:
            - name: web
              image: busybox
              ports: [{containerPort: 8080, name: http}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: ranged, labels: {app: ranged}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: secure, labels: {app: secure}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: pingable, labels: {app: icmp}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: tool, namespace: tools, labels: {app: tool}}
        ---
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: ports-8000-8100}
        spec:
          endpointSelector: {matchLabels: {app: ranged}}
          ingress:
            - toPorts: [{ports: [{port: "8000", endPort: 8100, protocol: TCP}]}]
          ingressDeny:
            - toPorts: [{ports: [{port: "8010", endPort: 8020, protocol: TCP}]}]
        ---
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: named-port}
        spec:
          endpointSelector: {matchLabels: {app: backend}}
          ingress:
            - fromEndpoints: [{matchLabels: {app: frontend}}]
              toPorts: [{ports: [{port: http}]}]
        ---
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: prod-only}
        spec:
          endpointSelector: {matchLabels: {app: secure}}
          ingress:
            - fromRequires: [{matchLabels: {env: prod}}]
            - fromEndpoints: [{matchLabels: {app: frontend}}]
        ---
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: echo}
        spec:
          endpointSelector: {matchLabels: {app: icmp}}
          ingress:
            - fromEndpoints: [{matchLabels: {app: frontend}}]
              icmps: [{fields: [{type: EchoRequest, family: IPv4}]}]
        ---
        apiVersion: cilium.io/v2
        kind: CiliumClusterwideNetworkPolicy
        metadata: {name: tools-from-non-prod}
        spec:
          endpointSelector: {matchLabels: {app: tool}}
          ingress:
            - fromEndpoints:
                - matchExpressions: [{key: env, operator: NotIn, values: [prod]}]
        """;

    private static (uint Verdict, ushort Reason, PolicyMatch Match) Send(DatapathHarness h, ClusterSpec c, string from, string to, Func<string, string, byte[]> build)
    {
        var dst = c.Pods.Single(p => p.Name == to);
        var r = h.To(dst, build(c.Pods.Single(p => p.Name == from).Ip!.ToString(), dst.Ip!.ToString()));
        var ev = h.Take();
        var v = ev.Verdicts.SingleOrDefault();
        return (r.ReturnValue, ev.Drops.SingleOrDefault().Reason, v.Match);
    }

    private static int sport = 42000;

    private static Func<string, string, byte[]> Tcp(ushort port) => (s, d) => Packets.Tcp(s, (ushort)Interlocked.Increment(ref sport), d, port);

    [KernelFact]
    public void PolicyLanguage_RangesIcmpNamedPortsRequiresClusterwide_EnforcedAsCiliumDoes()
    {
        var c = ClusterLoader.Load(CiliumFiles.Lab + "\n---\n" + Yaml, "language.yaml");
        using var h = new DatapathHarness(c);
        var ok = (TcActOk, (ushort)0);
        var denied = (TcActShot, (ushort)DropReason.Policy);
        var denylisted = (TcActShot, (ushort)DropReason.PolicyDeny);
        (uint, ushort) Check(string from, string to, Func<string, string, byte[]> build)
        {
            var (v, reason, _) = Send(h, c, from, to, build);
            return (v, reason);
        }

        // endPort: one allow range, a deny range inside it (LPM keys, the deny folded into the allow blocks it covers)
        Assert.Equal(ok, Check("frontend", "ranged", Tcp(8000)));
        Assert.Equal(ok, Check("frontend", "ranged", Tcp(8009)));
        Assert.Equal(denylisted, Check("frontend", "ranged", Tcp(8010)));
        Assert.Equal(denylisted, Check("frontend", "ranged", Tcp(8015)));
        Assert.Equal(denylisted, Check("frontend", "ranged", Tcp(8020)));
        Assert.Equal(ok, Check("frontend", "ranged", Tcp(8021)));
        Assert.Equal(ok, Check("frontend", "ranged", Tcp(8100)));
        Assert.Equal(denied, Check("frontend", "ranged", Tcp(8101)));
        Assert.Equal(denied, Check("frontend", "ranged", Tcp(7999)));
        Assert.Equal(denied, Check("frontend", "ranged", (s, d) => Packets.Udp(s, 42999, d, 8050)));
        Assert.Equal(PolicyMatch.L4Only, Send(h, c, "frontend", "ranged", Tcp(8050)).Match);

        // a named port resolves to the endpoint's own containerPort
        Assert.Equal(PolicyMatch.L3L4, Send(h, c, "frontend-dev", "backend", Tcp(8080)).Match);
        Assert.Equal(denied, Check("frontend", "backend", Tcp(9090)));

        // fromRequires: the frontend without env=prod is no longer selected
        Assert.Equal(ok, Check("frontend", "secure", Tcp(80)));
        Assert.Equal(denied, Check("frontend-dev", "secure", Tcp(80)));

        // icmps: the echo request is allowed (the type stands in the port), TCP is not
        var echo = Send(h, c, "frontend", "pingable", (s, d) => Packets.IcmpEcho(s, d, 7));
        Assert.Equal((TcActOk, PolicyMatch.L3L4), (echo.Verdict, echo.Match));
        Assert.Equal(denied, Check("frontend", "pingable", Tcp(80)));
        Assert.Equal(denied, Check("frontend", "pingable", (s, d) => Packets.Icmp4(s, d, 13)));

        // clusterwide, matchExpressions NotIn: selects pods of every namespace without env=prod
        Assert.Equal(ok, Check("frontend-dev", "tool", Tcp(22)));
        Assert.Equal(denied, Check("frontend", "tool", Tcp(22)));
    }

    [KernelFact]
    public void Icmps_TypeByNumberOrNameAndFamily_OnlyThatTypeOfThatFamilyPasses()
    {
        // Cilium keys an ICMP rule by its type in the port field (pkg/policy/api/icmp.go, bpf/lib/policy.h:
        // key.dport = type << 8): EchoRequest is allowed, a timestamp request of the same peer is not, and a
        // type allowed for IPv4 allows nothing of ICMPv6
        var policies = ClusterLoader.Load(CiliumFiles.Lab + """

            ---
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: echo-only}
            spec:
              endpointSelector: {matchLabels: {app: icmp}}
              ingress:
                - fromEndpoints: [{matchLabels: {app: frontend}}]
                  icmps:
                    - fields:
                        - type: 8
                        - {family: IPv6, type: EchoRequest}
            """, "icmps.yaml").Policies;
        var fe4 = TestCluster.Pod("frontend", "default", "10.244.0.10", ("app", "frontend"));
        var fe6 = TestCluster.Pod("frontend-6", "default", "fd00::10", ("app", "frontend"));
        var other = TestCluster.Pod("other", "default", "10.244.0.30", ("app", "other"));
        var t4 = TestCluster.Pod("pingable", "default", "10.244.0.20", ("app", "icmp"));
        var t6 = TestCluster.Pod("pingable-6", "default", "fd00::20", ("app", "icmp"));
        var c = new ClusterSpec("icmps.yaml", null, [fe4, fe6, other, t4, t6], [], policies);
        using var h = new DatapathHarness(c);
        (uint Verdict, Events Events) To(PodSpec dst, byte[] pkt) => (h.To(dst, pkt).ReturnValue, h.Take());
        void Denied((uint Verdict, Events Events) r, string what)
        {
            Assert.True(r.Verdict == TcActShot, what + " was not dropped");
            Assert.Equal((ushort)DropReason.Policy, Assert.Single(r.Events.Drops).Reason);
            Assert.Equal((VerdictAction.Deny, PolicyMatch.None), (Assert.Single(r.Events.Verdicts).Action, r.Events.Verdicts[0].Match));
        }

        // the denied ones first: a message of another type with zero identifiers would match the echo's tracked connection
        Denied(To(t4, Packets.Icmp4("10.244.0.10", "10.244.0.20", 13)), "an ICMPv4 timestamp request");
        Denied(To(t4, Packets.Icmp4("10.244.0.10", "10.244.0.20", 42)), "an ICMPv4 extended echo request");
        Denied(To(t6, Packets.Icmp6("fd00::10", "fd00::20", 8)), "ICMPv6 type 8 (allowed only as ICMPv4)");
        Denied(To(t6, Packets.Icmp6("fd00::10", "fd00::20", 160)), "an ICMPv6 extended echo request");
        Denied(To(t4, Packets.IcmpEcho("10.244.0.30", "10.244.0.20", 8)), "an echo request from a peer the rule does not select");
        Denied(To(t4, Packets.Tcp("10.244.0.10", 42100, "10.244.0.20", 8)), "TCP to port 8");

        var echo = To(t4, Packets.IcmpEcho("10.244.0.10", "10.244.0.20", 7));
        var echo6 = To(t6, Packets.Icmp6("fd00::10", "fd00::20", 128));

        Assert.Equal(TcActOk, echo.Verdict);
        var v = Assert.Single(echo.Events.Verdicts);
        Assert.Equal((VerdictAction.Allow, PolicyMatch.L3L4), (v.Action, v.Match));
        Assert.True(v.Tuple.CarriesIcmp);
        Assert.Equal((ushort)8, v.Tuple.Sport);
        Assert.Equal(TcActOk, echo6.Verdict);
        Assert.Equal((VerdictAction.Allow, PolicyMatch.L3L4), (Assert.Single(echo6.Events.Verdicts).Action, echo6.Events.Verdicts[0].Match));
    }
}
