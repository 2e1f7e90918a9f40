namespace Forensics.Query.Tests;

public sealed class ReconstructionTests : IDisposable
{
    private readonly TestRecording _rec = Lab.Build();

    public void Dispose() => _rec.Dispose();

    private static List<Dictionary<string, object?>> Rows(QuerySession s, string sql) => s.Rows(sql).ToList();

    [Fact]
    public void Drops_PolicyDeniedScenario_NamesWorkloadsReasonAndCounts()
    {
        using var s = QuerySession.Open([_rec.Root]);
        var rows = Rows(s, Reconstructions.Drops(new Filter()));
        var d = rows.Single(r => (string?)r["dropped_by"] == "datapath");
        Assert.Equal("default/xwing", d["source"]);
        Assert.Equal("default/deathstar", d["destination"]);
        Assert.Equal(Lab.XwingId, d["src_identity"]);
        Assert.Equal(Lab.DeathstarId, d["dst_identity"]);
        Assert.Equal((ushort)8080, d["dst_port"]);
        Assert.Equal("tcp", d["protocol"]);
        Assert.Equal((ushort)133, d["reason"]);
        Assert.Equal("Policy denied", d["reason_name"]);
        Assert.Equal("default deny", d["decided_by"]); // a 133 whose verdict no rule decided (rule_id 0)
        Assert.Equal(3L, d["count"]);
        Assert.Equal(TestRecording.Start.AddTicks(1_001_004_000 / 100).UtcDateTime, ((DateTime)d["first_seen"]!).ToUniversalTime());
        Assert.Equal(TestRecording.Start.AddTicks(3_001_004_000 / 100).UtcDateTime, ((DateTime)d["last_seen"]!).ToUniversalTime());
    }

    [Fact]
    public void Drops_Filters_SelectByPodNamespaceReasonAndTime()
    {
        using var s = QuerySession.Open([_rec.Root]);
        Assert.Single(Rows(s, Reconstructions.Drops(new Filter { Pod = "deathstar" })));
        Assert.Single(Rows(s, Reconstructions.Drops(new Filter { Pod = "default/xwing" })));
        Assert.Empty(Rows(s, Reconstructions.Drops(new Filter { Pod = "tiefighter" })));
        Assert.Single(Rows(s, Reconstructions.Drops(new Filter { Namespace = "default" })));
        Assert.Empty(Rows(s, Reconstructions.Drops(new Filter { Namespace = "kube-system" })));
        Assert.Single(Rows(s, Reconstructions.Drops(new Filter { Reason = "133" })));
        Assert.Single(Rows(s, Reconstructions.Drops(new Filter { Reason = "policy denied" })));
        Assert.Empty(Rows(s, Reconstructions.Drops(new Filter { Reason = "181" })));
        var window = Rows(s, Reconstructions.Drops(new Filter { Since = TestRecording.Start.AddSeconds(1.5), Until = TestRecording.Start.AddSeconds(2.5) })).Single();
        Assert.Equal(1L, window["count"]);
    }

    [Fact]
    public void Nat_ServiceAndSnat_MappingsWithFlowsAndReplies()
    {
        using var s = QuerySession.Open([_rec.Root]);
        var rows = Rows(s, Reconstructions.Nat(new Filter()));
        Assert.Equal(2, rows.Count);
        var svc = rows.Single(r => (string?)r["mapping"] == "service");
        Assert.Equal("10.96.0.10:80", svc["original"]);
        Assert.Equal("10.0.1.7:8080", svc["translated"]);
        Assert.Equal("default/deathstar", svc["service"]);
        Assert.Equal("default/deathstar", svc["backend_pod"]);
        Assert.Equal("10.0.1.5:40000", svc["client"]);
        Assert.Equal("default/xwing", svc["client_pod"]);
        Assert.Equal(0L, svc["replies"]);
        var snat = rows.Single(r => (string?)r["mapping"] == "snat");
        Assert.Equal("10.0.1.5:40001", snat["original"]);
        Assert.Equal("192.168.100.1:50001", snat["translated"]);
        Assert.Equal("203.0.113.10:443", snat["destination"]);
        Assert.Equal("default/xwing", snat["client_pod"]);
        Assert.Equal(1L, snat["packets"]);
        Assert.Equal(1L, snat["replies"]);
        Assert.Single(Rows(s, Reconstructions.Nat(new Filter { Address = "192.168.100.1" })));
    }

    [Fact]
    public void Connects_External_ProcessArgumentsDestinationAndExitCode()
    {
        using var s = QuerySession.Open([_rec.Root]);
        var rows = Rows(s, Reconstructions.Connects(new Filter(), externalOnly: true));
        Assert.Equal(2, rows.Count); // the in-cluster connect to 10.0.1.7 is not external
        var curl = rows[0];
        Assert.Equal("default/xwing", curl["pod"]);
        Assert.Equal("/usr/bin/curl", curl["binary"]);
        Assert.Equal("https://203.0.113.10/", curl["arguments"]);
        Assert.Equal("203.0.113.10:443", curl["destination"]);
        Assert.Equal(0, curl["exit_code"]);
        Assert.Null(curl["missing"]);
        var nc = rows[1];
        Assert.Equal("/usr/bin/nc", nc["binary"]);
        Assert.Equal("198.51.100.7:53", nc["destination"]);
        Assert.Null(nc["exit_code"]);
        Assert.Contains("no exec event", (string)nc["missing"]!, StringComparison.Ordinal);
        Assert.Equal(3, Rows(s, Reconstructions.Connects(new Filter(), externalOnly: false)).Count);
        Assert.Single(Rows(s, Reconstructions.Connects(new Filter { Process = "curl" }, externalOnly: true)));
    }

    [Fact]
    public void Connects_ClusterCidrOption_CountsAsInside()
    {
        using var s = QuerySession.Open([_rec.Root], new QueryOptions { ClusterCidrs = ["198.51.100.0/24"] });
        var rows = Rows(s, Reconstructions.Connects(new Filter(), externalOnly: true));
        Assert.Equal("/usr/bin/curl", Assert.Single(rows)["binary"]);
    }

    [Fact]
    public void Flow_ExternalCurl_FullStoryNothingMissing()
    {
        using var s = QuerySession.Open([_rec.Root]);
        var f = Rows(s, Reconstructions.Flows(new Filter { Address = Lab.Outside, Port = 443, Pod = "xwing" })).Single();
        Assert.Equal("10.0.1.5:40001", f["client"]);
        Assert.Equal("default/xwing", f["client_pod"]);
        Assert.Equal("203.0.113.10:443", f["server"]);
        Assert.Equal(301u, f["pid"]);
        Assert.Equal("/usr/bin/curl", f["binary"]);
        Assert.Equal("https://203.0.113.10/", f["arguments"]);
        Assert.NotNull(f["connect_time"]);
        Assert.Equal("10.0.1.5:40001 -> 192.168.100.1:50001", f["snat"]);
        Assert.Null(f["dnat"]);
        Assert.Equal("egress allow (match L3-Only, endpoint 11, allowed by CiliumNetworkPolicy default/xwing-egress spec.egress[1])", f["policy"]);
        Assert.Equal("delivered", f["outcome"]);
        Assert.Equal(0, f["exit_code"]);
        Assert.Empty((System.Collections.IEnumerable)f["missing"]!);
    }

    [Fact]
    public void Flow_ServiceDenied_DnatVerdictsDropAndMissingProcess()
    {
        using var s = QuerySession.Open([_rec.Root]);
        var f = Rows(s, Reconstructions.Flows(new Filter { Pod = "deathstar" })).Single(r => (string?)r["server"] == "10.96.0.10:80");
        Assert.Equal("10.96.0.10:80 -> 10.0.1.7:8080", f["dnat"]);
        Assert.Equal("default/deathstar", f["server_workload"]);
        Assert.Contains("ingress deny (match none, endpoint 12, default deny)", (string)f["policy"]!, StringComparison.Ordinal);
        Assert.Contains("egress allow (match L3-L4, endpoint 11, allowed by CiliumNetworkPolicy default/xwing-egress spec.egress[0])", (string)f["policy"]!, StringComparison.Ordinal);
        Assert.Equal("dropped", f["outcome"]);
        Assert.Equal("Policy denied (133, default deny) at to-endpoint of endpoint 12", f["drop_reason"]);
        Assert.Null(f["binary"]);
        var missing = ((System.Collections.IEnumerable)f["missing"]!).Cast<string>().ToList();
        Assert.Contains(missing, m => m.StartsWith("connect: none recorded", StringComparison.Ordinal));
        Assert.Equal("/usr/bin/curl (pid 300)", f["process_candidates"]); // alive in xwing's netns, not linked
        // every event of the flow, through the translation, in kernel time order
        var steps = Rows(s, Reconstructions.FlowEvents((string)f["flow"]!)).Select(e => (string)e["step"]!).ToList();
        Assert.Equal(["dnat", "policy", "trace", "policy", "drop", "drop", "drop"], steps);
    }

    [Fact]
    public void Flow_ProcessStartedBeforeRecording_SaysExecAndExitMissing()
    {
        using var s = QuerySession.Open([_rec.Root]);
        var f = Rows(s, Reconstructions.Flows(new Filter { Address = Lab.Dns })).Single();
        var missing = ((System.Collections.IEnumerable)f["missing"]!).Cast<string>().ToList();
        Assert.Contains(missing, m => m.StartsWith("exec: not recorded", StringComparison.Ordinal));
        Assert.Contains(missing, m => m.StartsWith("exit: none recorded", StringComparison.Ordinal));
        Assert.Contains(missing, m => m.StartsWith("datapath: no packet", StringComparison.Ordinal));
        Assert.Equal("/usr/bin/nc", f["binary"]);
    }

    [Fact]
    public void Flow_TupleReusedByALaterConnect_SplitsIntoTwoFlows()
    {
        using var rec = new TestRecording();
        ulong t1 = 1_000_000_000, t2 = 9_000_000_000;
        foreach (var (t, exec) in new[] { (t1, 1ul), (t2, 2ul) })
        {
            rec.Add("connect", new { ktime_ns = t, pid = 10u, exec_id = exec, binary = "/bin/x", comm = "x", connect_kind = "tcp", ip_version = (byte)4, src_ip = "10.0.1.5", src_port = (ushort)1234, dst_ip = "203.0.113.9", dst_port = (ushort)80, protocol = "tcp", netns_ino = 1u });
            rec.Add("trace", new { ktime_ns = t + 10, ip_version = (byte)4, src_ip = "10.0.1.5", src_port = (ushort)1234, dst_ip = "203.0.113.9", dst_port = (ushort)80, protocol = "tcp", tcp_flags = "SYN", obs_point = "from-endpoint", direction = "egress", ct_state = "new" });
        }
        rec.Add("drop", new { ktime_ns = t2 + 20, ip_version = (byte)4, src_ip = "10.0.1.5", src_port = (ushort)1234, dst_ip = "203.0.113.9", dst_port = (ushort)80, protocol = "tcp", tcp_flags = "SYN", reason = (ushort)181, obs_point = "from-endpoint", direction = "egress", ct_state = "new" });
        rec.Build();
        using var s = QuerySession.Open([rec.Root]);
        var flows = Rows(s, "SELECT outcome, exec_id FROM flow_story ORDER BY first_seen");
        Assert.Equal(2, flows.Count);
        Assert.Equal(("forwarded (left the pod, no answer seen)", 1ul), ((string)flows[0]["outcome"]!, (ulong)flows[0]["exec_id"]!));
        Assert.Equal(("dropped", 2ul), ((string)flows[1]["outcome"]!, (ulong)flows[1]["exec_id"]!));
    }

    [Fact]
    public void PolicyNames_DenyRuleAndHubbleRows_DropsFlowAndReplayNameWhatDecided()
    {
        // issue 12 item 4: what allowed or denied, as Hubble names it (ingress_allowed_by, egress_denied_by), or default deny
        using var rec = new TestRecording();
        const string Rule = "CiliumNetworkPolicy default/xwing-denylist spec.egressDeny[0]";
        var tuple = new { ip_version = (byte)4, src_ip = "10.0.1.5", src_port = (ushort)41000, dst_ip = "203.0.113.66", dst_port = (ushort)443, protocol = "tcp", tcp_flags = "SYN" };
        // this tool's datapath: xwing -> 203.0.113.66:443 denied by an egressDeny rule (181), the verdict and the drop naming it
        rec.Add("policy", new { ktime_ns = 1_000_000_000ul, tuple.ip_version, tuple.src_ip, tuple.src_port, tuple.dst_ip, tuple.dst_port, tuple.protocol, tuple.tcp_flags, src_identity = 1001u, dst_identity = 2u, endpoint_id = (ushort)11, obs_point = "from-endpoint", direction = "egress", remote_identity = 2u, action = "deny", match = "L3-Only", source = "datapath", rule_id = 5u, denied_by = "default/xwing-denylist", rules = Rule });
        rec.Add("drop", new { ktime_ns = 1_000_001_000ul, tuple.ip_version, tuple.src_ip, tuple.src_port, tuple.dst_ip, tuple.dst_port, tuple.protocol, tuple.tcp_flags, src_identity = 1001u, dst_identity = 2u, endpoint_id = (ushort)11, obs_point = "from-endpoint", direction = "egress", reason = (ushort)181, reason_name = "Policy denied by denylist", file = "policy.h", line = (ushort)90, ct_state = "new", source = "datapath", rule_id = 5u, denied_by = "default/xwing-denylist", rules = Rule });
        // Hubble: a deny verdict naming its policy (Hubble names policies, not rules), and a 133 naming none
        rec.Add("policy", new { ktime_ns = 2_000_000_000ul, ip_version = (byte)4, src_ip = "10.0.2.9", src_port = (ushort)42000, dst_ip = "10.0.2.10", dst_port = (ushort)80, protocol = "tcp", tcp_flags = "SYN", direction = "ingress", action = "deny", match = "L3-Only", source = "hubble", verdict = "DROPPED", event_type = 5, denied_by = "net-lab/deny-tg-to-echo" });
        rec.Add("drop", new { ktime_ns = 2_000_001_000ul, ip_version = (byte)4, src_ip = "10.0.2.9", src_port = (ushort)42001, dst_ip = "10.0.2.11", dst_port = (ushort)80, protocol = "tcp", tcp_flags = "SYN", direction = "ingress", reason = (ushort)133, reason_name = "Policy denied", source = "hubble", verdict = "DROPPED", event_type = 1, event_sub_type = 133 });
        rec.Build();

        using (var s = QuerySession.Open([rec.Root]))
        {
            var drops = Rows(s, Reconstructions.Drops(new Filter())).ToDictionary(d => Convert.ToInt32(d["reason"], System.Globalization.CultureInfo.InvariantCulture));
            Assert.Equal("denied by " + Rule, drops[181]["decided_by"]);
            Assert.Equal("default deny", drops[133]["decided_by"]);
        }

        var flow = CliRunner.Run("flow", rec.Root, "--address", "203.0.113.66");
        Assert.Equal(0, flow.ExitCode);
        Assert.Contains($"policy    egress deny (match L3-Only, denied by {Rule}) at endpoint 11: 10.0.1.5:41000 -> 203.0.113.66:443 tcp SYN\n", flow.Stdout, StringComparison.Ordinal);
        Assert.Contains($"drop      Policy denied by denylist (181, denied by {Rule}) at from-endpoint of endpoint 11: 10.0.1.5:41000 -> 203.0.113.66:443 tcp SYN\n", flow.Stdout, StringComparison.Ordinal);
        var hubble = CliRunner.Run("flow", rec.Root, "--address", "10.0.2.10");
        Assert.Contains("policy    ingress deny (match L3-Only, denied by net-lab/deny-tg-to-echo) at endpoint 0: 10.0.2.9:42000 -> 10.0.2.10:80 tcp SYN\n", hubble.Stdout, StringComparison.Ordinal);

        // replay: cilium monitor's verdict line as it is (it names no policy); JSON carries Hubble's fields
        var compact = CliRunner.Run("replay", rec.Root, "-f", "compact", "-t", "policy");
        Assert.Equal(0, compact.ExitCode);
        Assert.Equal("Policy verdict log: flow 0x0 local EP ID 11, remote ID world, proto 6, egress, action deny, auth: disabled, match L3-Only, 10.0.1.5:41000 -> 203.0.113.66:443 tcp SYN", compact.Stdout.Split('\n')[0]);
        var json = CliRunner.Run("replay", rec.Root, "-f", "json", "-t", "policy,drop");
        Assert.Equal(0, json.ExitCode);
        var events = json.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement).ToList();
        var verdict = events.Single(e => e.GetProperty("type").GetString() == "policy" && e.GetProperty("source").GetString() == "datapath");
        var by = Assert.Single(verdict.GetProperty("egress_denied_by").EnumerateArray());
        Assert.Equal("xwing-denylist", by.GetProperty("name").GetString());
        Assert.Equal("default", by.GetProperty("namespace").GetString());
        Assert.Equal("CiliumNetworkPolicy", by.GetProperty("kind").GetString());
        Assert.Equal(["k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy", "k8s:io.cilium.k8s.policy.name=xwing-denylist", "k8s:io.cilium.k8s.policy.namespace=default"],
            by.GetProperty("labels").EnumerateArray().Select(l => l.GetString()));
        Assert.False(verdict.TryGetProperty("egress_allowed_by", out _));
        Assert.Equal(5u, verdict.GetProperty("rule_id").GetUInt32());
        var drop = events.Single(e => e.GetProperty("type").GetString() == "drop" && e.GetProperty("source").GetString() == "datapath");
        Assert.Equal("xwing-denylist", Assert.Single(drop.GetProperty("egress_denied_by").EnumerateArray()).GetProperty("name").GetString());
        var hubbleVerdict = events.Single(e => e.GetProperty("type").GetString() == "policy" && e.GetProperty("source").GetString() == "hubble");
        var hubbleBy = Assert.Single(hubbleVerdict.GetProperty("ingress_denied_by").EnumerateArray());
        Assert.Equal(("deny-tg-to-echo", "net-lab"), (hubbleBy.GetProperty("name").GetString(), hubbleBy.GetProperty("namespace").GetString()));
        Assert.False(hubbleBy.TryGetProperty("kind", out _)); // Hubble's row did not say
        var defaultDeny = events.Single(e => e.GetProperty("type").GetString() == "drop" && e.GetProperty("source").GetString() == "hubble");
        Assert.False(defaultDeny.TryGetProperty("ingress_denied_by", out _)); // default deny: Hubble's lists are empty
    }

    [Fact]
    public void Cli_Reconstructions_PrintTheirAnswers()
    {
        var drops = CliRunner.Run("drops", _rec.Root, "--format", "csv");
        Assert.Equal(0, drops.ExitCode);
        var lines = drops.Stdout.TrimEnd('\n').Split('\n');
        Assert.StartsWith("source,destination,src_identity,dst_identity,dst_port,protocol,reason,reason_name,decided_by,dropped_by,kernel_reason,count,", lines[0], StringComparison.Ordinal);
        Assert.StartsWith("default/xwing,default/deathstar,1001,1002,8080,tcp,133,Policy denied,default deny,datapath,,3,", lines[1], StringComparison.Ordinal);
        Assert.StartsWith($"{Lab.Outside},{Lab.Node},,,59999,tcp,,NO_SOCKET,,kernel,NO_SOCKET,1,", lines[2], StringComparison.Ordinal); // the kernel's drop of scenario C

        var nat = CliRunner.Run("nat", _rec.Root);
        Assert.Equal(0, nat.ExitCode);
        Assert.Contains("10.96.0.10:80", nat.Stdout, StringComparison.Ordinal);
        Assert.Contains("192.168.100.1:50001", nat.Stdout, StringComparison.Ordinal);

        var connects = CliRunner.Run("connects", _rec.Root, "--external", "--format", "json");
        Assert.Equal(0, connects.ExitCode);
        var first = System.Text.Json.JsonDocument.Parse(connects.Stdout.Split('\n')[0]).RootElement;
        Assert.Equal("/usr/bin/curl", first.GetProperty("binary").GetString());
        Assert.Equal(0, first.GetProperty("exit_code").GetInt32());

        var flow = CliRunner.Run("flow", _rec.Root, "--address", Lab.Outside);
        Assert.Equal(0, flow.ExitCode);
        Assert.Contains("flow tcp 10.0.1.5:40001 (default/xwing) -> 203.0.113.10:443", flow.Stdout, StringComparison.Ordinal);
        Assert.Contains("exec      pid 301 /usr/bin/curl https://203.0.113.10/", flow.Stdout, StringComparison.Ordinal);
        Assert.Contains("snat      10.0.1.5:40001 -> 203.0.113.10:443 tcp => 192.168.100.1:50001 -> 203.0.113.10:443", flow.Stdout, StringComparison.Ordinal);
        Assert.Contains("policy    egress allow (match L3-Only, allowed by CiliumNetworkPolicy default/xwing-egress spec.egress[1]) at endpoint 11: 10.0.1.5:40001 -> 203.0.113.10:443 tcp SYN\n", flow.Stdout, StringComparison.Ordinal);
        Assert.Contains("exit      code 0", flow.Stdout, StringComparison.Ordinal);

        // the denied flow: its verdict and drops say that no rule allowed it
        var denied = CliRunner.Run("flow", _rec.Root, "--address", Lab.Vip);
        Assert.Equal(0, denied.ExitCode);
        Assert.Contains("policy    ingress deny (match none, default deny) at endpoint 12: 10.0.1.5:40000 -> 10.0.1.7:8080 tcp SYN\n", denied.Stdout, StringComparison.Ordinal);
        Assert.Contains("drop      Policy denied (133, default deny) at to-endpoint of endpoint 12: 10.0.1.5:40000 -> 10.0.1.7:8080 tcp SYN\n", denied.Stdout, StringComparison.Ordinal);
        Assert.Contains("outcome   dropped: Policy denied (133, default deny) at to-endpoint of endpoint 12\n", denied.Stdout, StringComparison.Ordinal);
        Assert.Contains("outcome   delivered", flow.Stdout, StringComparison.Ordinal);
        Assert.Contains("missing   nothing", flow.Stdout, StringComparison.Ordinal);
    }
}
