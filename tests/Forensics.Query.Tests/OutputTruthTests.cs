namespace Forensics.Query.Tests;

/// <summary>What a recording's reconstructions say must be so (issue 12).</summary>
public sealed class OutputTruthTests
{
    private static List<Dictionary<string, object?>> Rows(QuerySession s, string sql) => s.Rows(sql).ToList();

    [Fact]
    public void Drops_ServiceWithoutBackends_NamesTheService()
    {
        // A Service whose selector matches no pod: its VIP has no backend, the datapath drops with 158 before any
        // translation, so the destination is the VIP, whose identity is world. The drop belongs to the service.
        using var rec = new TestRecording();
        rec.Add("endpoints", new { endpoint_id = (ushort)11, @namespace = "default", pod = "xwing", ip = "10.0.0.3", identity = 257u, ifindex = 21u });
        rec.Add("services", new { service_id = 3u, @namespace = "empire", name = "deathstar", frontend_ip = "10.0.1.80", port = (ushort)80, protocol = "TCP" });
        rec.Add("drop", new { ktime_ns = 1_000_000ul, ip_version = (byte)4, src_ip = "10.0.0.3", src_port = (ushort)41000, dst_ip = "10.0.1.80", dst_port = (ushort)80, protocol = "tcp", tcp_flags = "SYN",
            src_identity = 257u, dst_identity = 2u, endpoint_id = (ushort)11, ifindex = 21u, flow_id = 0x9u, pkt_len = 60u, obs_point = "from-endpoint", direction = "egress",
            reason = (ushort)158, reason_name = "Service backend not found", file = "lib/lb.h", line = (ushort)76, ct_state = "new" });
        rec.Build();
        using var s = QuerySession.Open([rec.Root]);
        var d = Rows(s, Reconstructions.Drops(new Filter())).Single();
        Assert.Equal("default/xwing", d["source"]);
        Assert.Equal("empire/deathstar (10.0.1.80:80)", d["destination"]);
        Assert.Equal("Service backend not found", d["reason_name"]);
    }

    [Fact]
    public void ConnectsExternal_ServersUdpReply_NotAConnect()
    {
        // The lab's udp step as recorded: xwing connect()s a UDP socket to the world's resolver, SNAT makes it the
        // node's address, and the world host's server socket answers with sendto() (a udp-send "connect" back).
        using var rec = new TestRecording();
        rec.ExcludeCidrs.Clear();
        rec.ExcludeCidrs.Add("10.0.0.0/24");
        rec.Add("endpoints", new { endpoint_id = (ushort)11, @namespace = "default", pod = "xwing", ip = "10.0.0.3", identity = 257u, ifindex = 21u });
        rec.Add("connect",
            new { ktime_ns = 583_541_659_356ul, pid = 21112u, tid = 21112u, exec_id = 1ul, binary = "/usr/bin/nc", comm = "nc", connect_kind = "udp", ip_version = (byte)4,
                src_ip = "10.0.0.3", src_port = (ushort)34835, dst_ip = "198.51.100.53", dst_port = (ushort)53, protocol = "udp", @namespace = "default", pod = "xwing" },
            new { ktime_ns = 583_545_183_482ul, pid = 20999u, tid = 21003u, exec_id = 2ul, binary = "/usr/sbin/resolver", comm = "resolver", connect_kind = "udp-send", ip_version = (byte)4,
                src_ip = "198.51.100.53", src_port = (ushort)53, dst_ip = "192.0.2.1", dst_port = (ushort)34835, protocol = "udp" });
        rec.Add("nat",
            new { ktime_ns = 583_541_700_000ul, nat_kind = "snat", ip_version = (byte)4, protocol = "udp", orig_src_ip = "10.0.0.3", orig_src_port = (ushort)34835, orig_dst_ip = "198.51.100.53", orig_dst_port = (ushort)53,
                xlated_src_ip = "192.0.2.1", xlated_src_port = (ushort)34835, xlated_dst_ip = "198.51.100.53", xlated_dst_port = (ushort)53, obs_point = "from-endpoint", direction = "egress" });
        rec.Build();
        using var s = QuerySession.Open([rec.Root]);
        var rows = Rows(s, Reconstructions.Connects(new Filter(), externalOnly: true));
        Assert.Equal("/usr/bin/nc", Assert.Single(rows)["binary"]);
        var reply = Rows(s, "SELECT reply FROM connects_resolved WHERE src_port = 53").Single();
        Assert.Equal(true, reply["reply"]);
    }

    [Fact]
    public void ConnectsExternal_UdpSendFirst_StillAConnect()
    {
        // A client that speaks first over UDP to two servers is a connect each time, even when a server answers.
        using var rec = new TestRecording();
        rec.Add("connect",
            new { ktime_ns = 1_000ul, pid = 5u, tid = 5u, exec_id = 1ul, binary = "/usr/bin/dig", comm = "dig", connect_kind = "udp-send", ip_version = (byte)4,
                src_ip = "0.0.0.0", src_port = (ushort)40000, dst_ip = "198.51.100.53", dst_port = (ushort)53, protocol = "udp" },
            new { ktime_ns = 2_000ul, pid = 5u, tid = 5u, exec_id = 1ul, binary = "/usr/bin/dig", comm = "dig", connect_kind = "udp-send", ip_version = (byte)4,
                src_ip = "0.0.0.0", src_port = (ushort)40000, dst_ip = "203.0.113.53", dst_port = (ushort)53, protocol = "udp" },
            new { ktime_ns = 3_000ul, pid = 9u, tid = 9u, exec_id = 2ul, binary = "/usr/sbin/named", comm = "named", connect_kind = "udp-send", ip_version = (byte)4,
                src_ip = "198.51.100.53", src_port = (ushort)53, dst_ip = "192.0.2.1", dst_port = (ushort)40000, protocol = "udp" });
        rec.Build();
        using var s = QuerySession.Open([rec.Root]);
        var rows = Rows(s, Reconstructions.Connects(new Filter(), externalOnly: true));
        Assert.Equal(["198.51.100.53:53", "203.0.113.53:53"], rows.Select(r => (string)r["destination"]!).ToArray());
    }
}
