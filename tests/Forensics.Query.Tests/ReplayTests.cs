using Forensics.Format;
using Forensics.Query.Render;

namespace Forensics.Query.Tests;

public sealed class ReplayTests : IDisposable
{
    private readonly TestRecording _rec = Lab.Build();

    public void Dispose() => _rec.Dispose();

    private string Replay(ReplayFilter filter, RenderFormat format)
    {
        using var s = QuerySession.Open([_rec.Root]);
        return string.Join("\n", Forensics.Query.Replay.Lines(s, filter, format)) + "\n";
    }

    [Fact]
    public void Replay_Text_MatchesGolden() => Golden.Assert("replay_text.txt", Replay(new ReplayFilter(), RenderFormat.Text));

    [Fact]
    public void Replay_Compact_MatchesGolden() => Golden.Assert("replay_compact.txt", Replay(new ReplayFilter(), RenderFormat.Compact));

    [Fact]
    public void Replay_JsonDropsAndExecs_MatchesGolden() =>
        Golden.Assert("replay_json.txt", Replay(new ReplayFilter { Kinds = ["drop", "exec"] }, RenderFormat.Json));

    [Fact]
    public void Replay_ProcessFilterAndKinds_OnlyThoseLines()
    {
        var lines = Replay(new ReplayFilter { Kinds = ["process", "exit", "connect"], Processes = ["nc"] }, RenderFormat.Compact).TrimEnd('\n').Split('\n');
        Assert.Equal(["🔌 connect default/xwing /usr/bin/nc tcp 10.0.1.5:53001 -> 10.0.1.7:8080"], lines);
    }

    [Fact]
    public void Replay_PodAndTimeWindow_SelectsEvents()
    {
        var lines = Replay(new ReplayFilter { Kinds = ["drop", "policy-verdict"], Pods = ["deathstar"], Since = TestRecording.Start.AddSeconds(1), Until = TestRecording.Start.AddSeconds(2) }, RenderFormat.Compact).TrimEnd('\n').Split('\n');
        Assert.Equal(3, lines.Length);
        Assert.StartsWith("Policy verdict log: flow 0xa1 local EP ID 11", lines[0], StringComparison.Ordinal);
        Assert.StartsWith("Policy verdict log: flow 0xa1 local EP ID 12", lines[1], StringComparison.Ordinal);
        Assert.Equal("xx drop (Policy denied) flow 0xa1 to endpoint 12, ifindex 22, file policy.h:42, , identity 1001->1002: 10.0.1.5:40000 -> 10.0.1.7:8080 tcp SYN", lines[2]);
        Assert.Empty(Replay(new ReplayFilter { Kinds = ["drop"], Namespace = "kube-system" }, RenderFormat.Compact).Trim());
    }

    private static Dictionary<string, object?> Row(params (string Key, object? Value)[] kv) => kv.ToDictionary(x => x.Key, x => x.Value);

    [Fact]
    public void LineRenderer_CurrentCiliumTraceLine_Reproduced()
    {
        // Real cilium-dbg monitor output (cilium/cilium Documentation/operations/troubleshooting_servicemesh.rst):
        // identities without -n print reserved ones by name (8 = ingress), and "flow %#x " is followed by ", identity".
        var r = new LineRenderer(RenderFormat.Compact);
        Assert.Equal("-> stack flow 0x2481d648 , identity 61131->ingress state reply ifindex 0 orig-ip 0.0.0.0: 10.0.0.164:9080 -> 10.0.0.192:34219 tcp SYN, ACK",
            r.Render("trace", Row(("obs_point", "to-stack"), ("flow_id", 0x2481d648u), ("src_identity", 61131u), ("dst_identity", 8u), ("ct_state", "reply"), ("ifindex", 0u),
                ("orig_ip", "0.0.0.0"), ("src_ip", "10.0.0.164"), ("src_port", (ushort)9080), ("dst_ip", "10.0.0.192"), ("dst_port", (ushort)34219), ("protocol", "tcp"), ("tcp_flags", "SYN, ACK"))));
    }

    [Fact]
    public void LineRenderer_NetworkObsPointAndNoCtState_AsCiliumNamesThem()
    {
        // pkg/monitor/datapath_trace.go traceSummary: TraceToNetwork "-> network", TraceFromNetwork "<- network";
        // traceReasons: TraceReasonUnknown "unknown". Our obs points to-network/from-network, ct state none.
        var r = new LineRenderer(RenderFormat.Compact);
        var to = r.Render("trace", Row(("obs_point", "to-network"), ("flow_id", 0x1u), ("src_identity", 1001u), ("dst_identity", 2u), ("ct_state", "none"), ("ifindex", 3u),
            ("src_ip", "192.0.2.1"), ("src_port", (ushort)40000), ("dst_ip", "198.51.100.10"), ("dst_port", (ushort)443), ("protocol", "tcp"), ("tcp_flags", "SYN")))!;
        Assert.StartsWith("-> network flow 0x1 , identity 1001->world state unknown ifindex 3 orig-ip 0.0.0.0: ", to, StringComparison.Ordinal);
        var from = r.Render("trace", Row(("obs_point", "from-network"), ("flow_id", 0x2u), ("src_identity", 2u), ("dst_identity", 1001u), ("ct_state", "reply"),
            ("src_ip", "198.51.100.10"), ("src_port", (ushort)443), ("dst_ip", "192.0.2.1"), ("dst_port", (ushort)40000), ("protocol", "tcp"), ("tcp_flags", "SYN, ACK")))!;
        Assert.StartsWith("<- network flow 0x2 , identity world->1001 state reply ", from, StringComparison.Ordinal);
    }

    [Fact]
    public void LineRenderer_PolicyVerdict_CarriesAuthAsCurrentCiliumPrints()
    {
        // reference/cilium_policy_verdict_lines.txt holds "Policy verdict log: flow 0x0 local EP ID 1687, remote ID 2, proto 6, ingress,
        // action deny, match none, 10.0.2.2:49038 -> 10.0.2.15:21 tcp SYN" from an older Cilium; the current template
        // (pkg/monitor/datapath_policy.go) adds "auth: %s," and prints the remote identity as its name.
        var r = new LineRenderer(RenderFormat.Compact);
        Assert.Equal("Policy verdict log: flow 0x0 local EP ID 1687, remote ID world, proto 6, ingress, action deny, auth: disabled, match none, 10.0.2.2:49038 -> 10.0.2.15:21 tcp SYN",
            r.Render("policy", Row(("flow_id", 0u), ("endpoint_id", (ushort)1687), ("remote_identity", 2u), ("protocol", "tcp"), ("direction", "ingress"), ("action", "deny"), ("match", "none"),
                ("src_ip", "10.0.2.2"), ("src_port", (ushort)49038), ("dst_ip", "10.0.2.15"), ("dst_port", (ushort)21), ("tcp_flags", "SYN"))));
    }

    [Theory]
    [InlineData("ACK, PSH", "tcp ACK")]
    [InlineData("ACK, PSH, FIN", "tcp ACK, FIN")]
    [InlineData("SYN, ACK, ECE, CWR", "tcp SYN, ACK")]
    [InlineData("ACK, FIN, RST", "tcp ACK, RST, FIN")]
    public void LineRenderer_TcpFlags_OnlyThoseCiliumNames(string recorded, string summaryEnd)
    {
        // pkg/monitor/dissect.go getTCPInfo: SYN, ACK, RST, FIN in that order, nothing else.
        var line = new LineRenderer(RenderFormat.Compact).Render("trace", Row(("obs_point", "to-endpoint"), ("endpoint_id", (ushort)3), ("ct_state", "established"),
            ("src_ip", "10.0.0.1"), ("src_port", (ushort)1), ("dst_ip", "10.0.0.2"), ("dst_port", (ushort)2), ("protocol", "tcp"), ("tcp_flags", recorded)))!;
        Assert.EndsWith("10.0.0.1:1 -> 10.0.0.2:2 " + summaryEnd, line, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(false, 8, 0, "EchoRequest")]
    [InlineData(false, 0, 0, "EchoReply")]
    [InlineData(false, 3, 3, "DestinationUnreachable(Port)")]
    [InlineData(false, 3, 99, "DestinationUnreachable(Code: 99)")]
    [InlineData(false, 11, 0, "TimeExceeded(TTLExceeded)")]
    [InlineData(false, 5, 2, "Redirect(TOS+Net)")]
    [InlineData(false, 8, 1, "EchoRequest(Code: 1)")]
    [InlineData(false, 42, 7, "42(7)")]
    [InlineData(true, 128, 0, "EchoRequest")]
    [InlineData(true, 1, 4, "DestinationUnreachable(PortUnreachable)")]
    [InlineData(true, 3, 0, "TimeExceeded(HopLimitExceeded)")]
    [InlineData(true, 135, 0, "NeighborSolicitation")]
    [InlineData(true, 200, 1, "200(1)")]
    public void IcmpNames_TypeAndCode_AsGopacketPrintsThem(bool v6, byte type, byte code, string expected)
    {
        // gopacket layers/icmp4.go and icmp6.go TypeCode.String(): "%s", "%s(%s)", "%s(Code: %d)", "%d(%d)"
        Assert.Equal(expected, IcmpNames.TypeCode(v6, type, code));
        Assert.Equal((v6 ? "ICMPv6 " : "ICMPv4 ") + expected, IcmpNames.HubbleSummary(v6, type, code));
    }

    [Fact]
    public void LineRenderer_IcmpWithTypeAndCode_NamesThemAsCiliumMonitor()
    {
        // pkg/monitor/dissect.go GetConnectionSummary: an ICMP layer prints "%s -> %s %s" (addresses, gopacket's
        // TypeCode.String()), no ports and no "icmp"; the row holds the type and code as Hubble's summary does.
        var r = new LineRenderer(RenderFormat.Compact);
        Assert.Equal("-> endpoint 3459 flow 0x7 , identity 323->world state new ifindex lxc84b58cbdabfe orig-ip 0.0.0.0: 10.60.0.182 -> 10.60.1.115 EchoRequest",
            r.Render("trace", Row(("obs_point", "to-endpoint"), ("endpoint_id", (ushort)3459), ("flow_id", 7u), ("src_identity", 323u), ("dst_identity", 2u), ("ct_state", "new"),
                ("interface", "lxc84b58cbdabfe"), ("src_ip", "10.60.0.182"), ("src_port", (ushort)0), ("dst_ip", "10.60.1.115"), ("dst_port", (ushort)0), ("protocol", "icmp"),
                ("summary", "ICMPv4 EchoRequest"))));
        var drop = r.Render("drop", Row(("reason", 133u), ("reason_name", "Policy denied"), ("flow_id", 0x5u), ("file", "lib/policy.h"), ("line", 9u), ("src_ip", "fd00::10"),
            ("dst_ip", "fd00::20"), ("protocol", "icmpv6"), ("summary", "ICMPv6 DestinationUnreachable(PortUnreachable)")))!;
        Assert.EndsWith(": fd00::10 -> fd00::20 DestinationUnreachable(PortUnreachable)", drop, StringComparison.Ordinal);
        // a recording made before rows carried type and code: the protocol, as before (not a guessed type)
        var old = r.Render("trace", Row(("obs_point", "to-stack"), ("src_ip", "10.0.0.1"), ("dst_ip", "10.0.0.2"), ("protocol", "icmp")))!;
        Assert.EndsWith(": 10.0.0.1 -> 10.0.0.2 icmp", old, StringComparison.Ordinal);
    }

    [Fact]
    public void LineRenderer_DropFile_OurFileInCiliumsForm()
    {
        // Cilium's drop line names the file as its BPF file list does ("bpf_lxc.c", "conntrack.h"): no directory.
        var line = new LineRenderer(RenderFormat.Compact).Render("drop", Row(("reason", 158u), ("reason_name", "Service backend not found"), ("flow_id", 0x5u), ("endpoint_id", (ushort)0),
            ("ifindex", 4u), ("file", "lib/lb.h"), ("line", 76u), ("src_identity", 257u), ("dst_identity", 2u),
            ("src_ip", "10.0.0.1"), ("src_port", (ushort)5000), ("dst_ip", "10.0.1.90"), ("dst_port", (ushort)80), ("protocol", "tcp"), ("tcp_flags", "SYN")));
        Assert.Equal("xx drop (Service backend not found) flow 0x5 to endpoint 0, ifindex 4, file lb.h:76, , identity 257->world: 10.0.0.1:5000 -> 10.0.1.90:80 tcp SYN", line);
    }

    [Fact]
    public void LineRenderer_TetragonEncoderLines_Reproduced()
    {
        // cilium/tetragon pkg/encoder/encoder_test.go (reference/tetragon_compact_lines.txt).
        var r = new LineRenderer(RenderFormat.Compact) { Node = "my-node", ArgumentsOf = id => id == 7 ? "cilium.io" : null };
        Assert.Equal("🚀 process my-node /usr/bin/curl cilium.io",
            r.Render("exec", Row(("binary", "/usr/bin/curl"), ("arguments", "cilium.io"))));
        Assert.Equal("🚀 process kube-system/tetragon /usr/bin/curl cilium.io",
            r.Render("exec", Row(("namespace", "kube-system"), ("pod", "tetragon"), ("binary", "/usr/bin/curl"), ("arguments", "cilium.io"))));
        Assert.Equal("💥 exit    kube-system/tetragon /usr/bin/curl cilium.io 1",
            r.Render("exit", Row(("namespace", "kube-system"), ("pod", "tetragon"), ("binary", "/usr/bin/curl"), ("exec_id", 7ul), ("exit_code", 1))));
        Assert.Equal("💥 exit    kube-system/tetragon /usr/bin/curl cilium.io SIGKILL",
            r.Render("exit", Row(("namespace", "kube-system"), ("pod", "tetragon"), ("binary", "/usr/bin/curl"), ("exec_id", 7ul), ("signal", "SIGKILL"))));
        // tetragon docs, getting-started/network.md
        Assert.Equal("🔌 connect default/xwing /usr/bin/curl tcp 10.32.0.19:33978 -> 104.198.14.52:443",
            r.Render("connect", Row(("namespace", "default"), ("pod", "xwing"), ("binary", "/usr/bin/curl"), ("protocol", "tcp"),
                ("src_ip", "10.32.0.19"), ("src_port", (ushort)33978), ("dst_ip", "104.198.14.52"), ("dst_port", (ushort)443))));
    }

    [Fact]
    public void LineRenderer_ProcessOutsidePods_NodeNameNotEmpty()
    {
        var r = new LineRenderer(RenderFormat.Compact) { Node = "node-a" };
        Assert.Equal("🚀 process node-a /usr/bin/curl https://ebpf.io/applications/#tetragon",
            r.Render("exec", Row(("binary", "/usr/bin/curl"), ("arguments", "https://ebpf.io/applications/#tetragon"))));
        Assert.Equal("🔌 connect node-a /usr/bin/curl tcp 192.168.1.190:36124 -> 104.198.14.52:443",
            r.Render("connect", Row(("binary", "/usr/bin/curl"), ("protocol", "tcp"), ("src_ip", "192.168.1.190"), ("src_port", (ushort)36124), ("dst_ip", "104.198.14.52"), ("dst_port", (ushort)443))));
    }

    [Fact]
    public void LineRenderer_UdpConnect_CompactOmitsTextKeeps()
    {
        // tetra's compact connect line is its tcp_connect hook: there is no UDP connect line to match.
        var row = Row(("namespace", "default"), ("pod", "xwing"), ("binary", "/usr/bin/nc"), ("protocol", "udp"),
            ("src_ip", "10.0.1.5"), ("src_port", (ushort)53000), ("dst_ip", "198.51.100.7"), ("dst_port", (ushort)53));
        Assert.Null(new LineRenderer(RenderFormat.Compact).Render("connect", row));
        Assert.Equal("🔌 connect default/xwing /usr/bin/nc udp 10.0.1.5:53000 -> 198.51.100.7:53", new LineRenderer(RenderFormat.Text).Render("connect", row));
    }

    // cilium monitor's line for a CPU's ring buffer that lost events (pkg/monitor/format/format.go FormatLostEvent,
    // /work/shared/reference/format_templates_from_source.md): "CPU %02d: Lost %d events"
    [Fact]
    public void LineRenderer_LossRowOfOneCpu_PrintsCiliumsLostLine()
    {
        var compact = new LineRenderer(RenderFormat.Compact);
        Assert.Equal("CPU 01: Lost 3 events", compact.Render("loss", Row(("kind", "trace"), ("emitted", 40ul), ("failed", 3ul), ("userspace_dropped", 0ul), ("cpu", 1u))));
        Assert.Equal("CPU 00: Lost 1 events", compact.Render("loss", Row(("kind", "exec"), ("emitted", 0ul), ("failed", 1ul), ("userspace_dropped", 0ul), ("cpu", 0u))));
        Assert.Equal("CPU 123: Lost 70000 events", compact.Render("loss", Row(("kind", "drop"), ("emitted", 5ul), ("failed", 70000ul), ("userspace_dropped", 0ul), ("cpu", 123u))));
        // a CPU that emitted but lost nothing prints nothing
        Assert.Null(compact.Render("loss", Row(("kind", "trace"), ("emitted", 40ul), ("failed", 0ul), ("userspace_dropped", 0ul), ("cpu", 2u))));
        // text form: the second's time first, then the same line
        Assert.Equal("2026-11-23T10:00:09.000000Z CPU 01: Lost 3 events", new LineRenderer(RenderFormat.Text).Render("loss",
            Row(("time", new DateTime(2026, 11, 23, 10, 0, 9, DateTimeKind.Utc)), ("kind", "trace"), ("failed", 3ul), ("userspace_dropped", 0ul), ("cpu", 1u))));
    }

    [Fact]
    public void LineRenderer_LossRowWithoutCpu_PrintsOwnLineNotCiliums()
    {
        var compact = new LineRenderer(RenderFormat.Compact);
        // user space's drops (cpu null in loss v3) and a loss v2 row (no cpu column) are not a CPU's ring buffer
        var user = compact.Render("loss", Row(("kind", "trace"), ("emitted", 60ul), ("failed", 0ul), ("userspace_dropped", 5ul), ("cpu", null)));
        Assert.Equal("Lost 5 trace events (ring buffer full: 0, user space: 5)", user);
        Assert.DoesNotMatch(@"^CPU \d+: Lost", user);
        Assert.Equal("Lost 3 trace events (ring buffer full: 3, user space: 0)", compact.Render("loss", Row(("kind", "trace"), ("emitted", 100ul), ("failed", 3ul), ("userspace_dropped", 0ul))));
    }

    [Fact]
    public void LineRenderer_NoBinary_NoEmptyPadding()
    {
        var r = new LineRenderer(RenderFormat.Compact) { Node = "node-a" };
        Assert.Equal("🚀 process node-a --firecracker-init", r.Render("exec", Row(("binary", ""), ("comm", ""), ("arguments", "--firecracker-init"))));
        Assert.Equal("🚀 process node-a init --firecracker-init", r.Render("exec", Row(("binary", ""), ("comm", "init"), ("arguments", "--firecracker-init"))));
        Assert.Null(r.Render("loss", Row(("kind", "drop"), ("failed", 0ul), ("userspace_dropped", 0ul))));
    }

    [Fact]
    public void Cli_Replay_CompactPrintsLikeTheLiveTools()
    {
        var r = CliRunner.Run("replay", _rec.Root, "-f", "compact", "-t", "drop,exec");
        Assert.Equal(0, r.ExitCode);
        Assert.Equal(Replay(new ReplayFilter { Kinds = ["drop", "exec"] }, RenderFormat.Compact), r.Stdout);
        var bad = CliRunner.Run("replay", _rec.Root, "-t", "nosuch");
        Assert.Equal(2, bad.ExitCode);
        Assert.StartsWith("error: --types: 'nosuch' is not one of drop, policy, ", bad.Stderr, StringComparison.Ordinal);
    }
}

public sealed class ReplayManyTests
{
    [Fact]
    public void Replay_TwoRecordings_InterleavedInTimeWithTheirNodes()
    {
        using var a = Lab.Build("node-a");
        using var b = Lab.Build("node-b");
        using var s = QuerySession.Open([a.Root, b.Root]);
        var lines = Forensics.Query.Replay.Lines(s, new ReplayFilter { Kinds = ["exec"] }, RenderFormat.Compact).ToList();
        Assert.Equal(4, lines.Count);
        Assert.Equal("[node-a] 🚀 process default/xwing /usr/bin/curl -s http://10.96.0.10/v1/request-landing", lines[0]);
        Assert.Equal("[node-b] 🚀 process default/xwing /usr/bin/curl -s http://10.96.0.10/v1/request-landing", lines[1]);
        Assert.StartsWith("[node-a] ", lines[2], StringComparison.Ordinal);
        Assert.StartsWith("[node-b] ", lines[3], StringComparison.Ordinal);
    }

    [Fact]
    public void Cli_BadTime_UsageError()
    {
        using var a = Lab.Build();
        var r = CliRunner.Run("replay", a.Root, "--since", "yesterday-ish");
        Assert.Equal(2, r.ExitCode);
        Assert.Equal("error: --since: 'yesterday-ish' is not a time (use RFC 3339, e.g. 2026-11-23T10:00:00Z)\n", r.Stderr);
    }
}
