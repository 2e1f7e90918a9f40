namespace Forensics.Query.Tests;

/// <summary>NAT recorded from the kernel's conntrack (nat rows with source conntrack) in the reconstructions.</summary>
public sealed class ConntrackNatTests : IDisposable
{
    private readonly TestRecording _rec = new();

    public void Dispose() => _rec.Dispose();

    private static Dictionary<string, object?> Ct(ulong ktime, string ev, uint id, string kind, string proto, string osrc, ushort osport, string odst, ushort odport,
        string xsrc, ushort xsport, string xdst, ushort xdport, string status, ulong? packets = null, ulong? replies = null, string? service = null) =>
        new Dictionary<string, object?>
        {
            ["ktime_ns"] = ktime, ["nat_kind"] = kind, ["ip_version"] = (byte)4, ["protocol"] = proto,
            ["orig_src_ip"] = osrc, ["orig_src_port"] = osport, ["orig_dst_ip"] = odst, ["orig_dst_port"] = odport,
            ["xlated_src_ip"] = xsrc, ["xlated_src_port"] = xsport, ["xlated_dst_ip"] = xdst, ["xlated_dst_port"] = xdport,
            ["source"] = "conntrack", ["service"] = service, ["ct_event"] = ev, ["ct_id"] = id, ["ct_status"] = status,
            ["reply_src_ip"] = xdst, ["reply_src_port"] = xdport, ["reply_dst_ip"] = xsrc, ["reply_dst_port"] = xsport,
            ["packets_orig"] = packets, ["packets_reply"] = replies, ["netns_ino"] = 4026532777u,
        };

    [Fact]
    public void NatMappings_ConntrackDnatSnatAndBoth_OneFlowPerEntryWithKernelCounters()
    {
        _rec.Add("endpoints",
            new { endpoint_id = (ushort)1, @namespace = "default", pod = "xwing", ip = "10.0.0.3", identity = 1001u },
            new { endpoint_id = (ushort)2, @namespace = "default", pod = "deathstar-1", ip = "10.0.0.5", identity = 1002u });
        _rec.Add("services", new { service_id = 0u, @namespace = "default", name = "deathstar", frontend_ip = "10.0.1.10", port = (ushort)80, protocol = "tcp", backend_ip = "10.0.0.5", backend_port = (ushort)80 });
        _rec.Add("nat",
            // xwing -> deathstar service (kube-proxy DNAT): new, update (reply seen), destroy with the final counters
            Ct(1_000_000_000, "new", 11, "dnat", "tcp", "10.0.0.3", 40000, "10.0.1.10", 80, "10.0.0.3", 40000, "10.0.0.5", 80, "CONFIRMED|DST_NAT|DST_NAT_DONE"),
            Ct(1_001_000_000, "update", 11, "dnat", "tcp", "10.0.0.3", 40000, "10.0.1.10", 80, "10.0.0.3", 40000, "10.0.0.5", 80, "SEEN_REPLY|CONFIRMED|DST_NAT|DST_NAT_DONE"),
            Ct(3_000_000_000, "destroy", 11, "dnat", "tcp", "10.0.0.3", 40000, "10.0.1.10", 80, "10.0.0.3", 40000, "10.0.0.5", 80, "SEEN_REPLY|ASSURED|CONFIRMED|DST_NAT|DST_NAT_DONE", 6, 5),
            // xwing -> outside, masqueraded to the node
            Ct(2_000_000_000, "new", 12, "snat", "udp", "10.0.0.3", 50000, "198.51.100.53", 53, "192.0.2.1", 50000, "198.51.100.53", 53, "CONFIRMED|SRC_NAT|SRC_NAT_DONE", service: null),
            // a NodePort-like flow: the node's address DNATed to a backend and masqueraded to the node's pod-side address
            Ct(2_500_000_000, "new", 13, "dnat+snat", "tcp", "198.51.100.7", 33000, "192.0.2.1", 30080, "10.0.0.1", 61000, "10.0.0.5", 80, "CONFIRMED|SRC_NAT|DST_NAT", service: "default/deathstar:http"));
        _rec.Build();
        using var s = QuerySession.Open([_rec.Root]);
        var rows = s.Rows(Reconstructions.Nat(new Filter())).ToList();
        Assert.Equal(4, rows.Count);
        Assert.All(rows, r => Assert.Equal("conntrack", r["source"]));

        var svc = rows.Single(r => (string?)r["mapping"] == "service" && (string?)r["original"] == "10.0.1.10:80");
        Assert.Equal(("10.0.0.3:40000", "default/xwing", "10.0.0.5:80", "default/deathstar", "default/deathstar-1"),
            ((string?)svc["client"], (string?)svc["client_pod"], (string?)svc["translated"], (string?)svc["service"], (string?)svc["backend_pod"]));
        Assert.Equal((6UL, 5UL), (Convert.ToUInt64(svc["packets"], System.Globalization.CultureInfo.InvariantCulture), Convert.ToUInt64(svc["replies"], System.Globalization.CultureInfo.InvariantCulture)));
        Assert.Equal(TestRecording.Start.AddSeconds(1).UtcDateTime, ((DateTime)svc["first_seen"]!).ToUniversalTime());
        Assert.Equal(TestRecording.Start.AddSeconds(3).UtcDateTime, ((DateTime)svc["last_seen"]!).ToUniversalTime());

        var snat = rows.Single(r => (string?)r["mapping"] == "snat" && (string?)r["client_pod"] == "default/xwing");
        Assert.Equal(("10.0.0.3:50000", "192.0.2.1:50000", "198.51.100.53:53"), ((string?)snat["original"], (string?)snat["translated"], (string?)snat["destination"]));
        Assert.Null(snat["packets"]); // nf_conntrack_acct off: the kernel did not count

        var both = rows.Where(r => (string?)r["client"] == "198.51.100.7:33000").ToList();
        Assert.Equal(["service", "snat"], both.Select(r => (string)r["mapping"]!).Order());
        Assert.Equal("default/deathstar:http", both.Single(r => (string?)r["mapping"] == "service")["service"]);
        Assert.Equal("10.0.0.1:61000", both.Single(r => (string?)r["mapping"] == "snat")["translated"]);
    }

    [Fact]
    public void FlowStory_KernelNodeFlow_DnatFromConntrackAndDeliveredBySeenReply()
    {
        _rec.Add("endpoints", new { endpoint_id = (ushort)1, @namespace = "default", pod = "xwing", ip = "10.0.0.3", identity = 1001u });
        _rec.Add("nat",
            Ct(1_000_000_000, "new", 11, "dnat", "tcp", "10.0.0.3", 40000, "10.0.1.10", 80, "10.0.0.3", 40000, "10.0.0.5", 80, "CONFIRMED|DST_NAT"),
            Ct(1_001_000_000, "update", 11, "dnat", "tcp", "10.0.0.3", 40000, "10.0.1.10", 80, "10.0.0.3", 40000, "10.0.0.5", 80, "SEEN_REPLY|CONFIRMED|DST_NAT"),
            Ct(2_000_000_000, "new", 14, "dnat", "tcp", "10.0.0.3", 40001, "10.0.1.10", 80, "10.0.0.3", 40001, "10.0.0.6", 80, "CONFIRMED|DST_NAT"));
        // the second flow's packet, after DNAT, dropped by the node's firewall
        _rec.Add("kdrop", new { ktime_ns = 2_000_100_000ul, reason = 1u, reason_name = "NETFILTER_DROP", location = 1ul, function = "nf_hook_slow+0x9c", l3_proto = (ushort)0x0800,
            ip_version = (byte)4, src_ip = "10.0.0.3", src_port = (ushort)40001, dst_ip = "10.0.0.6", dst_port = (ushort)80, protocol = "tcp", netns_ino = 4026532777u, pkt_len = 60u });
        _rec.Build();
        using var s = QuerySession.Open([_rec.Root]);
        var flows = s.Rows(Reconstructions.Flows(new Filter())).ToList();
        Assert.Equal(2, flows.Count);
        var ok = flows.Single(f => (string?)f["client"] == "10.0.0.3:40000");
        Assert.Equal("10.0.1.10:80 -> 10.0.0.5:80", ok["dnat"]);
        Assert.Equal("delivered", ok["outcome"]);
        Assert.Equal("default/xwing", ok["client_pod"]);
        var dropped = flows.Single(f => (string?)f["client"] == "10.0.0.3:40001");
        Assert.Equal("10.0.1.10:80 -> 10.0.0.6:80", dropped["dnat"]);
        Assert.Equal("dropped by the kernel", dropped["outcome"]);
        Assert.StartsWith("NETFILTER_DROP", (string)dropped["drop_reason"]!, StringComparison.Ordinal);
    }
}
