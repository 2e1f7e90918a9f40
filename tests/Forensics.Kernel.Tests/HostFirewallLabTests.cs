using Forensics.Datapath.Control;
using Forensics.Datapath.Lab;
using Forensics.Tests;

namespace Forensics.Kernel.Tests;

/// <summary>
/// Cilium's host firewall on real traffic in a lab: a CiliumClusterwideNetworkPolicy whose nodeSelector selects
/// the lab's node (by its nodeLabels) polices connections to the node's address (a listener on the node, from a
/// world host and from pods) and from the node (to the world and to pods), in the lab's datapath.
/// </summary>
[Collection("lab")]
public class HostFirewallLabTests
{
    [KernelFact]
    public void HostPolicy_RealConnectionsToAndFromTheNode_AllowedPortsPassOthersDroppedByTheHostEndpoint()
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
              nodeLabels: {node-access: ssh}
              nodeListeners: {tcp: [22, 8080, 9090]}
              world:
                - {name: admin, ip: 198.51.100.10, tcp: [443, 80]}
              steps:
                - {name: world-ssh-allowed, from: admin, tcp: node:22, expect: {delivered: true}}
                - {name: world-other-port-denied, from: admin, tcp: node:8080, timeout: 1s, expect: {dropReason: Policy denied}}
                - {name: world-denylisted, from: admin, tcp: node:9090, timeout: 1s, expect: {dropReason: 181}}
                - {name: client-allowed, pod: client, tcp: node:8080, expect: {delivered: true}}
                - {name: other-denied, pod: other, tcp: node:8080, timeout: 1s, expect: {dropReason: 133}}
                - {name: node-to-world-allowed, from: node, tcp: admin:443, expect: {delivered: true}}
                - {name: node-to-world-denied, from: node, tcp: admin:80, timeout: 1s, expect: {dropReason: 133}}
                - {name: node-to-server-allowed, from: node, tcp: server:80, expect: {delivered: true}}
                - {name: node-to-client-denied, from: node, tcp: client:80, timeout: 1s, expect: {dropReason: 133}}
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: client, labels: {app: client}}
            spec: {containers: [{name: c, image: busybox, ports: [{containerPort: 80}]}]}
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: other, labels: {app: other}}
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: server, labels: {app: server}}
            spec: {containers: [{name: c, image: busybox, ports: [{containerPort: 80}]}]}
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
              ingressDeny:
                - fromEntities: [world]
                  toPorts: [{ports: [{port: "9090", protocol: TCP}]}]
              egress:
                - toEntities: [world]
                  toPorts: [{ports: [{port: "443", protocol: TCP}]}]
                - toEndpoints: [{matchLabels: {app: server}}]
                  toPorts: [{ports: [{port: "80", protocol: TCP}]}]
            """, "hostfw-lab.yaml");
        using var lab = NetnsLab.Up(cluster, LabFixture.WithDatapath());
        var r = lab.RunAll().ToDictionary(s => s.Step.Name);
        var dp = ((LabDatapath)lab.Datapath!).Datapath;
        string Rules(uint id) => string.Join(", ", dp.RulesOf(id));

        Assert.All(r.Values, s => Assert.True(s.Passed, $"{s.Step.Name}: {s.Detail}: {string.Join("; ", s.Failures)}"));
        Assert.NotNull(dp.HostEndpoint);
        // the allowed connections were decided by the CCNP's rules, at the host endpoint (remote: world, the client pod, the server pod)
        var ssh = Assert.Single(r["world-ssh-allowed"].Events, e => e.Kind == "policy");
        Assert.Equal(("allowed", "ingress", "198.51.100.10", "192.0.2.1"), (ssh.Verdict, ssh.Direction, ssh.Source, ssh.Destination));
        Assert.Equal("host-fw spec.ingress[0]", Rules(ssh.RuleId));
        var client = Assert.Single(r["client-allowed"].Events, e => e is { Kind: "policy", Direction: "ingress" });
        Assert.Equal("host-fw spec.ingress[1]", Rules(client.RuleId));
        Assert.Equal("host-fw spec.egress[0]", Rules(Assert.Single(r["node-to-world-allowed"].Events, e => e.Kind == "policy").RuleId));
        Assert.Equal("host-fw spec.egress[1]", Rules(Assert.Single(r["node-to-server-allowed"].Events, e => e.Kind == "policy").RuleId));
        // the other port: 133 at the node's address, the host endpoint's default deny (no rule); the denylisted one names the CCNP's deny rule
        var denied = r["world-other-port-denied"].Events.First(e => e.Kind == "drop");
        Assert.Equal((133, "198.51.100.10", "192.0.2.1", 8080, 0u), (denied.Reason, denied.Source, denied.Destination, denied.DestinationPort, denied.RuleId));
        var denylisted = r["world-denylisted"].Events.First(e => e.Kind == "drop");
        Assert.Equal("host-fw spec.ingressDeny[0]", Rules(denylisted.RuleId));
        var fromOther = r["other-denied"].Events.First(e => e.Kind == "drop");
        Assert.Equal(("192.0.2.1", 8080, "ingress"), (fromOther.Destination, fromOther.DestinationPort, fromOther.Direction));
        var toClient = r["node-to-client-denied"].Events.First(e => e.Kind == "drop");
        Assert.Equal(("192.0.2.1", "egress"), (toClient.Source, toClient.Direction));
    }
}
