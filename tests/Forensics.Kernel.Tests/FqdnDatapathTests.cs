using System.Diagnostics;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Control;
using Forensics.Tests;
using static Forensics.Kernel.Tests.DatapathHarness;

namespace Forensics.Kernel.Tests;

/// <summary>
/// toFQDNs through the real programs (BPF_PROG_TEST_RUN): the DNS answer a pod
/// receives is copied by the datapath to user space, where the control plane
/// learns the name's addresses as Cilium's DNS proxy does, and only then does
/// the toFQDNs rule allow them.
/// </summary>
public class FqdnDatapathTests
{
    private static int sport = 45000;

    private static ushort NextPort() => (ushort)Interlocked.Increment(ref sport);

    /// <summary>A DNS lookup: the query leaves the pod, the answer comes back to it; both must pass.</summary>
    private static void Lookup(DatapathHarness h, PodSpec pod, string server, string name, params string[] addresses)
    {
        var port = NextPort();
        var client = pod.Ip!.ToString();
        var q = h.From(pod, Packets.UdpPayload(client, port, server, 53, DnsPackets.Query(port, name)));
        Assert.True(q.ReturnValue == TcActOk, $"the query for {name} was dropped");
        var a = h.To(pod, Packets.UdpPayload(server, 53, client, port, DnsPackets.Response(port, name, [.. addresses.Select(x => (name, x))])));
        Assert.True(a.ReturnValue == TcActOk, $"the answer for {name} was dropped");
        h.Take();
    }

    /// <summary>A DNS lookup over TCP: handshake, then the answer in one segment with its 2-byte length.</summary>
    private static void LookupTcp(DatapathHarness h, PodSpec pod, string server, string name, string address)
    {
        var port = NextPort();
        var client = pod.Ip!.ToString();
        Assert.True(h.From(pod, Packets.Tcp(client, port, server, 53)).ReturnValue == TcActOk, $"the TCP lookup of {name} was dropped");
        Assert.Equal(TcActOk, h.To(pod, Packets.Tcp(server, 53, client, port, 0x12)).ReturnValue);
        var msg = DnsPackets.Response(port, name, [(name, address)]);
        var framed = new byte[2 + msg.Length];
        framed[0] = (byte)(msg.Length >> 8);
        framed[1] = (byte)msg.Length;
        msg.CopyTo(framed, 2);
        Assert.Equal(TcActOk, h.To(pod, Packets.TcpPayload(server, 53, client, port, framed)).ReturnValue);
        h.Take();
    }

    /// <summary>Waits (bounded) until the control plane has learnt a name.</summary>
    private static void WaitLearnt(DatapathHarness h, string name)
    {
        var sw = Stopwatch.StartNew();
        while (!h.Dp.LearntNames.ContainsKey(name) && sw.Elapsed < TimeSpan.FromSeconds(10))
            h.Dp.ProcessDnsAnswers(50);
        Assert.True(h.Dp.LearntNames.ContainsKey(name), $"{name} was not learnt; learnt: {string.Join(", ", h.Dp.LearntNames.Keys)}");
    }

    private static (uint Verdict, Events Events) Connect(DatapathHarness h, PodSpec pod, string dst, ushort port)
    {
        var r = h.From(pod, Packets.Tcp(pod.Ip!.ToString(), NextPort(), dst, port));
        return (r.ReturnValue, h.Take());
    }

    private static void AssertDenied((uint Verdict, Events Events) r, string what)
    {
        Assert.True(r.Verdict == TcActShot, what + " was not dropped");
        Assert.Equal((ushort)DropReason.Policy, Assert.Single(r.Events.Drops).Reason);
    }

    [KernelFact]
    public void ToFqdns_BeforeAndAfterTheLookup_DeniedThenAllowedOnlyForTheLearntNamesAddresses()
    {
        var c = ClusterLoader.Load(CiliumFiles.Lab + "\n---\n" + CiliumFiles.Pod("client", ("kind", "client")) + "\n---\n"
            + CiliumFiles.Pod("noproxy", ("kind", "noproxy")) + """

            ---
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: to-allowed-example}
            spec:
              endpointSelector: {matchLabels: {kind: client}}
              egress:
                - toFQDNs: [{matchName: allowed.example}, {matchPattern: "*.allowed.example"}]
                  toPorts: [{ports: [{port: "80", protocol: TCP}]}]
                - toEntities: [world]
                  toPorts: [{ports: [{port: "53", protocol: UDP}], rules: {dns: [{matchPattern: "*"}]}}]
            ---
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: dns-without-proxy}
            spec:
              endpointSelector: {matchLabels: {kind: noproxy}}
              egress:
                - toFQDNs: [{matchName: hidden.example}]
                - toEntities: [world]
                  toPorts: [{ports: [{port: "53", protocol: UDP}]}]
            """, "fqdn.yaml");
        using var h = new DatapathHarness(c);
        var client = c.PodNamed("client");
        var noproxy = c.PodNamed("noproxy");
        const string Resolver = "203.0.113.53";

        // default deny until the name was resolved
        AssertDenied(Connect(h, client, "203.0.113.10", 80), "a connect before the lookup");

        Lookup(h, client, Resolver, "allowed.example", "203.0.113.10");
        WaitLearnt(h, "allowed.example.");

        var allowed = Connect(h, client, "203.0.113.10", 80);
        Assert.Equal(TcActOk, allowed.Verdict);
        var v = Assert.Single(allowed.Events.Verdicts);
        Assert.Equal((VerdictAction.Allow, PolicyMatch.L3L4), (v.Action, v.Match));
        // the remote identity is the learnt address's CIDR identity
        var id = Assert.Single(h.Dp.Identities, i => i.Cidr?.ToString() == "203.0.113.10/32");
        Assert.Equal(id.Id, v.RemoteIdentity);
        Assert.Contains(h.Dp.Snapshot().Ipcache, i => i.Prefix == "203.0.113.10/32" && i.Identity == id.Id);
        // only the rule's port
        AssertDenied(Connect(h, client, "203.0.113.10", 443), "the learnt address on another port");

        // an answer nobody asked for is not a lookup (not a reply of a tracked connection): nothing is learnt
        var unsolicited = h.To(client, Packets.UdpPayload(Resolver, 53, client.Ip!.ToString(), 47999,
            DnsPackets.Response(1, "www.allowed.example", [("www.allowed.example", "203.0.113.30")])));
        Assert.Equal(TcActOk, unsolicited.ReturnValue);
        // a lookup without DNS rules on its port is not seen by Cilium's proxy: nothing is learnt
        Lookup(h, noproxy, Resolver, "hidden.example", "203.0.113.40");
        // a name no selector matches is learnt, and selects nothing
        Lookup(h, client, Resolver, "other.example", "203.0.113.20");
        WaitLearnt(h, "other.example.");

        Assert.DoesNotContain("www.allowed.example.", h.Dp.LearntNames.Keys);
        Assert.DoesNotContain("hidden.example.", h.Dp.LearntNames.Keys);
        AssertDenied(Connect(h, client, "203.0.113.20", 80), "the address of a name no selector matches");
        AssertDenied(Connect(h, client, "203.0.113.30", 80), "an address from an unsolicited answer");
        AssertDenied(Connect(h, noproxy, "203.0.113.40", 80), "an address looked up without DNS rules");

        // a matchPattern selects a name under it, once resolved
        Lookup(h, client, Resolver, "api.allowed.example", "203.0.113.31");
        WaitLearnt(h, "api.allowed.example.");
        Assert.Equal(TcActOk, Connect(h, client, "203.0.113.31", 80).Verdict);
    }

    [KernelFact]
    public void CiliumCliClientEgressToFqdns_AsItsTestExpects_OnlyTheResolvedTargetOnPort80()
    {
        // cilium-cli's client-egress-to-fqdns (rendered as cilium-cli renders it for one.one.one.one): the client
        // resolves through kube-dns (DNS rules matchPattern "*"), reaches the target's address on port 80 and
        // nothing else; Cilium's own e2e script: "nslookup cilium.io; curl cilium.io" works, "curl google.com" fails
        const string File = "cilium-cli/connectivity/builder/manifests/client-egress-to-fqdns.yaml";
        var c = CiliumCorpus.Load(File);
        using var h = new DatapathHarness(c);
        var client = c.Pods.First(p => p.Labels.GetValueOrDefault("kind") == "client");
        var dns = c.Pods.First(p => p.Labels.GetValueOrDefault("k8s-app") == "kube-dns");

        AssertDenied(Connect(h, client, "198.51.100.10", 80), "the target before the lookup");
        Lookup(h, client, dns.Ip!.ToString(), "one.one.one.one", "198.51.100.10");
        Lookup(h, client, dns.Ip!.ToString(), "google.com", "198.51.100.20");
        WaitLearnt(h, "one.one.one.one.");
        WaitLearnt(h, "google.com.");

        Assert.Equal(TcActOk, Connect(h, client, "198.51.100.10", 80).Verdict);
        AssertDenied(Connect(h, client, "198.51.100.10", 443), "the target on 443");
        AssertDenied(Connect(h, client, "198.51.100.20", 80), "google.com");

        // the file allows DNS over TCP too: an answer there is learnt as well (a new address of the same name)
        AssertDenied(Connect(h, client, "198.51.100.12", 80), "the TCP-answered address before the lookup");
        LookupTcp(h, client, dns.Ip!.ToString(), "one.one.one.one", "198.51.100.12");
        var sw = Stopwatch.StartNew();
        while (!h.Dp.LearntNames["one.one.one.one."].Any(a => a.ToString() == "198.51.100.12") && sw.Elapsed < TimeSpan.FromSeconds(10))
            h.Dp.ProcessDnsAnswers(50);
        Assert.Equal(TcActOk, Connect(h, client, "198.51.100.12", 80).Verdict);
    }

    [KernelFact]
    public void CiliumExampleFqdnFiles_AfterTheLookup_AllowedAsTheirDocsSay()
    {
        // examples/policies/l3/fqdn/fqdn.yaml: my-remote-service.com at L3 (any port) once resolved through kube-dns;
        // examples/kubernetes-dns/dns-pattern.yaml: "*.github.com" selects api.github.com, not github.com
        (string File, string Name, string Address, bool Allowed)[] cases =
        [
            ("examples/policies/l3/fqdn/fqdn.yaml", "my-remote-service.com", "198.51.100.30", true),
            ("examples/policies/l3/fqdn/fqdn.yaml", "other-service.com", "198.51.100.31", false),
            ("examples/kubernetes-dns/dns-pattern.yaml", "api.github.com", "198.51.100.40", true),
            ("examples/kubernetes-dns/dns-pattern.yaml", "github.com", "198.51.100.41", false),
        ];
        foreach (var group in cases.GroupBy(x => x.File))
        {
            var c = CiliumCorpus.Load(group.Key);
            using var h = new DatapathHarness(c);
            var dns = c.Pods.First(p => p.Labels.GetValueOrDefault("k8s-app") == "kube-dns");
            var subject = c.Pods.First(p => p != dns);
            foreach (var (_, name, address, allowed) in group)
            {
                AssertDenied(Connect(h, subject, address, 8443), $"{group.Key}: {address} before the lookup");
                Lookup(h, subject, dns.Ip!.ToString(), name, address);
                WaitLearnt(h, name + ".");
                var r = Connect(h, subject, address, 8443);
                if (allowed)
                    Assert.True(r.Verdict == TcActOk, $"{group.Key}: {name} ({address}) was not allowed after the lookup");
                else
                    AssertDenied(r, $"{group.Key}: {name} ({address})");
            }
        }
    }
}
