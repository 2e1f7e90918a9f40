using Forensics.Datapath.Control;
using Forensics.Datapath.Lab;
using Forensics.Tests;

namespace Forensics.Kernel.Tests;

/// <summary>
/// Cilium's host firewall on real traffic in a lab: a CiliumClusterwideNetworkPolicy whose nodeSelector selects
/// the lab's node (by its nodeLabels) polices connections to the node's address (a listener on the node, from a
/// world host and from pods) and from the node (to the world and to pods), in the lab's datapath
/// (examples/hostfw.yaml).
/// </summary>
[Collection("lab")]
public class HostFirewallLabTests
{
    [KernelFact]
    public void HostPolicy_RealConnectionsToAndFromTheNode_AllowedPortsPassOthersDroppedByTheHostEndpoint()
    {
        var name = LabFixture.UniqueName();
        var cluster = LabFixture.Load("hostfw.yaml", name);
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
