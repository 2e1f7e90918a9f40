using System.Net;
using System.Net.Sockets;
using Forensics.Datapath.Control;
using Forensics.Datapath.Lab;
using Forensics.Tests;

namespace Forensics.Kernel.Tests;

/// <summary>
/// Cilium's policy language enforced on real traffic in a lab (pods in network
/// namespaces, the datapath on their veths): what the BPF_PROG_TEST_RUN cases
/// check per packet, here with the real tools' packets.
/// </summary>
[Collection("lab")]
public class PolicyLabTests
{
    /// <summary>An ICMPv4 timestamp request (type 13) from a raw socket; exit 0 when the timestamp reply (14) comes back within 2 s.</summary>
    private const string TimestampRequest = """
        import socket, struct, sys, time
        dst = sys.argv[1]
        def csum(b):
            s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
            while s >> 16: s = (s & 0xffff) + (s >> 16)
            return ~s & 0xffff
        body = struct.pack('!HHIII', 0x4242, 1, 0, 0, 0)
        msg = struct.pack('!BBH', 13, 0, csum(struct.pack('!BBH', 13, 0, 0) + body)) + body
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        s.sendto(msg, (dst, 0))
        end = time.monotonic() + 2
        while time.monotonic() < end:
            s.settimeout(max(0.01, end - time.monotonic()))
            try:
                data, addr = s.recvfrom(1024)
            except socket.timeout:
                break
            ihl = (data[0] & 15) * 4
            if addr[0] == dst and data[ihl] == 14:
                sys.exit(0)
        sys.exit(1)
        """;

    [KernelFact]
    public void Icmps_RealPingAndTimestampRequest_OnlyTheAllowedTypePasses()
    {
        var script = Path.Combine(Path.GetTempPath(), $"fx-icmp-ts-{Guid.NewGuid():N}.py");
        File.WriteAllText(script, TimestampRequest);
        try
        {
            var name = LabFixture.UniqueName();
            var cluster = ClusterLoader.Load($$$"""
                apiVersion: forensics.dev/v1
                kind: Lab
                metadata: {name: {{{name}}}}
                spec:
                  podCIDR: 10.0.0.0/24
                  serviceCIDR: 10.0.1.0/24
                  nodeIP: 192.0.2.1
                  steps:
                    - {name: ping-echo-allowed, pod: client, exec: [/bin/busybox, ping, -c, "1", -W, "2", 10.0.0.11], timeout: 5s, expect: {delivered: true}}
                    - {name: timestamp-not-allowed, pod: client, exec: [python3, {{{script}}}, 10.0.0.11], timeout: 5s, expect: {dropReason: Policy denied}}
                    - {name: ping-not-allowed, pod: client, exec: [/bin/busybox, ping, -c, "1", -W, "2", 10.0.0.12], timeout: 5s, expect: {dropReason: Policy denied}}
                    - {name: timestamp-allowed, pod: client, exec: [python3, {{{script}}}, 10.0.0.12], timeout: 5s, expect: {delivered: true}}
                ---
                apiVersion: v1
                kind: Pod
                metadata: {name: client, labels: {app: client}}
                status: {podIP: 10.0.0.10}
                ---
                apiVersion: v1
                kind: Pod
                metadata: {name: pingable, labels: {app: pingable}}
                status: {podIP: 10.0.0.11}
                ---
                apiVersion: v1
                kind: Pod
                metadata: {name: clock, labels: {app: clock}}
                status: {podIP: 10.0.0.12}
                ---
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: echo-only}
                spec:
                  endpointSelector: {matchLabels: {app: pingable}}
                  ingress:
                    - fromEndpoints: [{matchLabels: {app: client}}]
                      icmps: [{fields: [{type: EchoRequest, family: IPv4}]}]
                ---
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: timestamp-only}
                spec:
                  endpointSelector: {matchLabels: {app: clock}}
                  ingress:
                    - fromEndpoints: [{matchLabels: {app: client}}]
                      icmps: [{fields: [{type: 13}]}]
                """, "icmps-lab.yaml");
            using var lab = NetnsLab.Up(cluster, LabFixture.WithDatapath());
            var r = lab.RunAll().ToDictionary(s => s.Step.Name);

            Assert.All(r.Values, s => Assert.True(s.Passed, $"{s.Step.Name}: {s.Detail}: {string.Join("; ", s.Failures)}"));
            // the echo request's verdict: allowed at the pingable pod's ingress by its ICMP rule (L3-L4: the type is the "port")
            var allowed = Assert.Single(r["ping-echo-allowed"].Events, e => e.Kind == "policy");
            Assert.Equal(("allowed", "L3-L4", "ingress", "10.0.0.11"), (allowed.Verdict, allowed.Match, allowed.Direction, allowed.Destination));
            var denied = r["ping-not-allowed"].Events.First(e => e.Kind == "drop");
            Assert.Equal((133, "10.0.0.10", "10.0.0.12"), (denied.Reason, denied.Source, denied.Destination));
            Assert.Equal(0, r["timestamp-allowed"].ExitCode);
            Assert.Contains(r["timestamp-allowed"].Events, e => e is { Kind: "policy", Verdict: "allowed", Destination: "10.0.0.12" });
        }
        finally
        {
            File.Delete(script);
        }
    }

    /// <summary>
    /// A tiny DNS server on a world host's address, inside the lab's world namespace: answers an A query for a
    /// name it knows with its address, anything else with an empty NOERROR answer. Stops when disposed.
    /// </summary>
    private sealed class DnsResponder : IDisposable
    {
        private readonly Socket socket;
        private readonly CancellationTokenSource stop = new();
        private readonly Task loop;
        private int answered;

        public DnsResponder(string netns, string address, IReadOnlyDictionary<string, string> names)
        {
            socket = NetNamespace.Run(netns, () =>
            {
                var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
                s.Bind(new IPEndPoint(IPAddress.Parse(address), 53));
                return s;
            });
            loop = Task.Run(async () =>
            {
                var buf = new byte[1500];
                while (!stop.IsCancellationRequested)
                {
                    SocketReceiveFromResult r;
                    try
                    {
                        r = await socket.ReceiveFromAsync(buf, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), stop.Token);
                    }
                    catch (OperationCanceledException)
                    {
                        return;
                    }
                    var (id, name, type) = DnsPackets.ReadQuery(buf.AsSpan(0, r.ReceivedBytes));
                    var answers = type == DnsPackets.A && names.TryGetValue(name, out var ip) ? [(name, ip)] : new List<(string, string)>();
                    await socket.SendToAsync(DnsPackets.Response(id, name, answers, qtype: type), SocketFlags.None, r.RemoteEndPoint);
                    Interlocked.Increment(ref answered);
                }
            });
        }

        public int Answered => Volatile.Read(ref answered);

        public void Dispose()
        {
            stop.Cancel();
            try
            {
                loop.Wait(TimeSpan.FromSeconds(5));
            }
            catch (AggregateException)
            {
                // the loop ended with the socket
            }
            socket.Dispose();
            stop.Dispose();
        }
    }

    [KernelFact]
    public void ToFqdns_RealLookupFromAPod_ItsAddressAllowedOnlyAfterItAndOtherNamesStayDenied()
    {
        // Cilium: toFQDNs selects the addresses DNS answers gave for matching names, nothing before the lookup;
        // the lookup is seen because the DNS port's rule has DNS rules (Cilium's proxy), which are not enforced here
        var name = LabFixture.UniqueName();
        var cluster = ClusterLoader.Load($$$"""
            apiVersion: forensics.dev/v1
            kind: Lab
            metadata: {name: {{{name}}}}
            spec:
              podCIDR: 10.0.0.0/24
              serviceCIDR: 10.0.1.0/24
              nodeIP: 192.0.2.1
              world:
                - {name: resolver, ip: 203.0.113.53}
                - {name: allowed, ip: 203.0.113.10, tcp: [80]}
                - {name: other, ip: 203.0.113.20, tcp: [80]}
              steps:
                - {name: before-lookup, pod: client, tcp: "203.0.113.10:80", timeout: 1s, expect: {dropReason: Policy denied}}
                - {name: lookup-allowed, pod: client, exec: [/bin/busybox, nslookup, -type=a, allowed.example, 203.0.113.53], timeout: 5s, expect: {delivered: true}}
                - {name: after-lookup, pod: client, tcp: "203.0.113.10:80", timeout: 3s, expect: {delivered: true}}
                - {name: lookup-other, pod: client, exec: [/bin/busybox, nslookup, -type=a, other.example, 203.0.113.53], timeout: 5s, expect: {delivered: true}}
                - {name: other-denied, pod: client, tcp: "203.0.113.20:80", timeout: 1s, expect: {dropReason: Policy denied}}
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: client, labels: {kind: client}}
            ---
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: client-egress-to-fqdns}
            spec:
              endpointSelector: {matchLabels: {kind: client}}
              egress:
                - toFQDNs: [{matchName: allowed.example}]
                  toPorts: [{ports: [{port: "80", protocol: TCP}]}]
                - toEntities: [world]
                  toPorts: [{ports: [{port: "53", protocol: UDP}], rules: {dns: [{matchPattern: "*"}]}}]
            """, "fqdn-lab.yaml");
        Assert.Contains(cluster.Notices, n => n.Contains("toFQDNs selects only addresses learnt from DNS answers", StringComparison.Ordinal));
        var progress = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using var lab = NetnsLab.Up(cluster, LabFixture.WithDatapath() with { Progress = progress.Enqueue });
        using var dns = new DnsResponder(LabNames.WorldNs(name), "203.0.113.53",
            new Dictionary<string, string> { ["allowed.example"] = "203.0.113.10", ["other.example"] = "203.0.113.20" });
        var dp = ((LabDatapath)lab.Datapath!).Datapath;

        var r = lab.RunAll().ToDictionary(s => s.Step.Name);

        Assert.All(r.Values, s => Assert.True(s.Passed, $"{s.Step.Name}: {s.Detail}: {string.Join("; ", s.Failures)}"));
        Assert.True(dns.Answered >= 2, $"the responder answered {dns.Answered} queries");
        Assert.Equal(["203.0.113.10"], dp.LearntNames["allowed.example."].Select(a => a.ToString()));
        // the connect after the lookup: allowed at the client's egress, to the learnt address's CIDR identity
        var id = Assert.Single(dp.Identities, i => i.Cidr?.ToString() == "203.0.113.10/32");
        Assert.Contains(r["after-lookup"].Events, e => e is { Kind: "policy", Verdict: "allowed", Direction: "egress", Destination: "203.0.113.10" }
            && e.RemoteIdentity == id.Id);
        Assert.Contains(r["other-denied"].Events, e => e is { Kind: "drop", Reason: 133, Destination: "203.0.113.20" });
        // the lab says what it learnt, from which server, for which pod
        Assert.Contains("toFQDNs: learnt allowed.example. -> 203.0.113.10 (TTL 300 s) from 203.0.113.53's answer to default/client", progress);
    }
}
