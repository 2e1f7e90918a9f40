using Forensics.Query.Tests;
using Forensics.Tests;

namespace Forensics.Kernel.Tests;

/// <summary>
/// `forensics whatif` over the recordings of two nodes at once (built with the recorder's writers):
/// a flow leaving xwing on node-a and dropped entering deathstar-1 on node-b is one flow, replayed
/// from xwing's egress to deathstar's ingress through the real programs.
/// </summary>
public class WhatIfNodesTests
{
    private const string Xwing = "10.0.0.3", Deathstar = "10.0.1.4";

    private const string DeathstarPolicy = """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata:
          name: deathstar-empire-only
        spec:
          endpointSelector:
            matchLabels:
              class: deathstar
          ingress:
            - fromEndpoints:
                - matchLabels:
                    org: empire
        """;

    private static TestRecording Node(string node, string pod, string ip, uint identity)
    {
        var r = new TestRecording(node);
        var taken = TestRecording.Start;
        r.Add("endpoints", new { phase = "end", taken, endpoint_id = (ushort)1, @namespace = "default", pod, ip, identity, ifindex = 5u, ingress_enforced = pod != "xwing", egress_enforced = false });
        foreach (var (id, l) in new[] { (259u, "k8s:class=xwing k8s:io.cilium.k8s.policy.cluster=default k8s:io.kubernetes.pod.namespace=default k8s:org=alliance"),
                                         (258u, "k8s:class=deathstar k8s:io.cilium.k8s.policy.cluster=default k8s:io.kubernetes.pod.namespace=default k8s:org=empire") })
            r.Add("identities", new { phase = "end", taken, identity = id, labels = l, kind = "workload" });
        r.Add("policies", new { phase = "end", taken, name = "deathstar-empire-only", @namespace = "default", source_text = DeathstarPolicy + "\n" });
        return r;
    }

    [KernelFact]
    public void WhatIf_TwoNodesFlowDroppedAtTheOtherNode_OneFlowReplayedAcrossBothEndpoints()
    {
        using var a = Node("node-a", "xwing", Xwing, 259);
        using var b = Node("node-b", "deathstar-1", Deathstar, 258);
        var flow = new { ip_version = (byte)4, src_ip = Xwing, src_port = (ushort)40000, dst_ip = Deathstar, dst_port = (ushort)80, protocol = "tcp", tcp_flags = "SYN", src_identity = 259u, dst_identity = 258u, source = "datapath" };
        a.Add("trace", new { flow.ip_version, flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port, flow.protocol, flow.tcp_flags, flow.src_identity, flow.dst_identity, flow.source,
            ktime_ns = 1_000_000UL, endpoint_id = (ushort)1, obs_point = "from-endpoint", direction = "egress", ct_state = "new" });
        b.Add("drop", new { flow.ip_version, flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port, flow.protocol, flow.tcp_flags, flow.src_identity, flow.dst_identity, flow.source,
            ktime_ns = 1_001_000UL, endpoint_id = (ushort)1, obs_point = "to-endpoint", direction = "ingress", reason = (ushort)133, reason_name = "Policy denied", ct_state = "new" });
        a.Build();
        b.Build();

        var (code, rows, err) = WhatIfTests.WhatIf(a.Root, b.Root);
        var (code2, removed, err2) = WhatIfTests.WhatIf(a.Root, b.Root, "--remove-policy", "deathstar-empire-only");

        Assert.True(code == 0, $"exit {code}: {err}");
        var row = Assert.Single(rows);
        Assert.Equal(("default/xwing", "default/deathstar-1", 80, 1L), (row.Source, row.Destination, row.Port, row.Flows));
        Assert.Equal(("dropped", "133 Policy denied", "dropped", "133 Policy denied", false), (row.Recorded, row.RecordedReason, row.New, row.NewReason, row.Changed));
        Assert.Equal(("ingress default/deathstar-1", "default deny (no rule allows)", "5-tuple"), (row.DecidedAt, row.Rule, row.Packet));
        Assert.True(code2 == 0, $"exit {code2}: {err2}");
        var open = Assert.Single(removed);
        Assert.Equal(("delivered", true), (open.New, open.Changed));
    }
}
