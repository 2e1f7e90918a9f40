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
            using var lab = Lab.Up(cluster, LabFixture.WithDatapath());
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
}
