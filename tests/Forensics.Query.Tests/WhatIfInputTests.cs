using Forensics.Query.WhatIf;

namespace Forensics.Query.Tests;

/// <summary>
/// What `forensics whatif` reads out of a recording (no kernel needed): the distinct flows with
/// their recorded outcome and captured packets, and the one-line refusals of recordings it
/// cannot replay (exit 7) before anything is loaded into the kernel.
/// </summary>
public sealed class WhatIfInputTests
{
    [Fact]
    public void Flows_ServiceFlowDeniedAtIngress_OneFlowKeyedByTheServiceAddressWithItsDropAndCaptures()
    {
        using var rec = Lab.Build();
        using var s = QuerySession.Open([rec.Root]);

        var flows = RecordedFlows.Flows(s);

        // A: the DNAT event gives the service address back; the drop (3 packets) and both captures belong to it
        var a = Assert.Single(flows, f => f.SrcPort == 40000);
        Assert.Equal((Lab.Vip, (ushort)80, Lab.Deathstar, (ushort)8080), (a.DstIp, a.DstPort, a.TranslatedIp, a.TranslatedPort));
        Assert.Equal((3L, (ushort)133, "to-endpoint"), (a.Drops, a.DropReason, a.DropPoint));
        Assert.NotNull(a.CaptureFrom);
        Assert.NotNull(a.CaptureTo);
        // B: the outside connection, allowed; its reply (ct reply) is no flow of its own
        var b = Assert.Single(flows, f => f.SrcPort == 40001);
        Assert.Equal((Lab.Outside, (ushort)443, false), (b.DstIp, b.DstPort, b.Dropped));
        Assert.Null(b.CaptureFrom);
        Assert.Equal(2, flows.Count);
    }

    [Fact]
    public void WhatIf_RecordingWithoutSnapshot_OneLineErrorExit7()
    {
        using var rec = new TestRecording();
        rec.Add("drop", new { ktime_ns = 1000UL, ip_version = (byte)4, src_ip = Lab.Xwing, src_port = (ushort)1, dst_ip = Lab.Outside, dst_port = (ushort)443, protocol = "tcp", obs_point = "from-endpoint", direction = "egress", reason = (ushort)133, ct_state = "new" });
        rec.Build();

        var r = CliRunner.Run("whatif", rec.Root, "--remove-policy", "x");

        Assert.Equal(7, r.ExitCode);
        Assert.Equal("", r.Stdout);
        Assert.Matches(@"^error: .*the recording has no snapshot of the datapath's endpoints[^\n]*\n$", r.Stderr);
    }

    [Fact]
    public void WhatIf_RecordingWithoutDatapathEvents_OneLineErrorExit7()
    {
        using var rec = new TestRecording();
        rec.Add("endpoints", new { phase = "start", endpoint_id = Lab.XwingEp, @namespace = "default", pod = "xwing", ip = Lab.Xwing, identity = Lab.XwingId, ifindex = 21u });
        rec.Add("exec", new { ktime_ns = 1000UL, pid = 1u, binary = "/bin/true", comm = "true" });
        rec.Build();

        var r = CliRunner.Run("whatif", rec.Root);

        Assert.Equal(7, r.ExitCode);
        Assert.Matches(@"^error: .*none of the datapath's events[^\n]*\n$", r.Stderr);
    }

    [Fact]
    public void WhatIf_RecordingOfANewerSchema_OneLineErrorExit7()
    {
        using var rec = Lab.Build();
        var manifestPath = Path.Combine(rec.Root, "manifest.json");
        File.WriteAllText(manifestPath, File.ReadAllText(manifestPath).Replace("\"schema_version\": 1", "\"schema_version\": 99", StringComparison.Ordinal));

        var r = CliRunner.Run("whatif", rec.Root);

        Assert.Equal(7, r.ExitCode);
        Assert.Matches(@"^error: .*schema version 99[^\n]*\n$", r.Stderr);
    }
}
