namespace Forensics.Query.Tests;

/// <summary>
/// A recording of the lab's example scenarios, built by hand the way the recorder writes it:
///  A: default/xwing -> service default/deathstar (10.96.0.10:80 -> 10.0.1.7:8080), denied by
///     deathstar's ingress policy (drop 133 at to-endpoint), with a captured packet; no connect
///     event (in-cluster destinations are filtered in the kernel).
///  B: default/xwing runs curl to 203.0.113.10:443 outside: exec, connect, egress verdict,
///     SNAT to the node 192.168.100.1:50001, reply through rev-SNAT, exit 0.
///  C: default/xwing's nc (started before the recording) sends UDP to 198.51.100.7:53:
///     connect without an exec event, no exit.
/// </summary>
internal static class Lab
{
    public const string Xwing = "10.0.1.5", Deathstar = "10.0.1.7", Vip = "10.96.0.10", Node = "192.168.100.1", Outside = "203.0.113.10", Dns = "198.51.100.7";
    public const uint XwingId = 1001, DeathstarId = 1002, World = 2;
    public const ushort XwingEp = 11, DeathstarEp = 12;
    public const uint XwingNetns = 4026532100, DeathstarNetns = 4026532200;

    // kernel times (ns since boot) of the steps
    public const ulong T0 = 1_000_000_000;

    public static byte[] SynPacket(string src, ushort sport, string dst, ushort dport)
    {
        var p = new byte[54];
        // Ethernet
        byte[] dmac = [0x02, 0, 0, 0, 0, 0x02], smac = [0x02, 0, 0, 0, 0, 0x01];
        dmac.CopyTo(p, 0);
        smac.CopyTo(p, 6);
        p[12] = 0x08; p[13] = 0x00;
        // IPv4
        p[14] = 0x45; p[16] = 0; p[17] = 40; p[22] = 64; p[23] = 6;
        System.Net.IPAddress.Parse(src).GetAddressBytes().CopyTo(p, 26);
        System.Net.IPAddress.Parse(dst).GetAddressBytes().CopyTo(p, 30);
        var sum = 0;
        for (var i = 14; i < 34; i += 2) sum += (p[i] << 8) | p[i + 1];
        while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
        var csum = (ushort)~sum;
        p[24] = (byte)(csum >> 8); p[25] = (byte)csum;
        // TCP SYN
        p[34] = (byte)(sport >> 8); p[35] = (byte)sport; p[36] = (byte)(dport >> 8); p[37] = (byte)dport;
        p[46] = 0x50; p[47] = 0x02; p[48] = 0xff; p[49] = 0xff;
        return p;
    }

    public static TestRecording Build(string node = "node-a")
    {
        var r = new TestRecording(node);
        r.Add("endpoints",
            new { endpoint_id = XwingEp, @namespace = "default", pod = "xwing", ip = Xwing, identity = XwingId, ifindex = 21u },
            new { endpoint_id = DeathstarEp, @namespace = "default", pod = "deathstar", ip = Deathstar, identity = DeathstarId, ifindex = 22u });
        r.Add("identities",
            new { identity = XwingId, labels = "k8s:class=xwing,k8s:io.kubernetes.pod.namespace=default,k8s:org=alliance", kind = "endpoint" },
            new { identity = DeathstarId, labels = "k8s:class=deathstar,k8s:io.kubernetes.pod.namespace=default,k8s:org=empire", kind = "endpoint" });
        r.Add("services", new { service_id = 7u, @namespace = "default", name = "deathstar", frontend_ip = Vip, port = (ushort)80, protocol = "tcp", backend_ip = Deathstar, backend_port = 8080, backend_pod = "deathstar" });

        // A: xwing -> deathstar service, denied at deathstar
        var a = T0 + 1_000_000;
        r.Add("exec", new { ktime_ns = a - 500_000, pid = 300u, tid = 300u, ppid = 1u, exec_id = 5001ul, binary = "/usr/bin/curl", arguments = "-s http://10.96.0.10/v1/request-landing", comm = "curl", netns_ino = XwingNetns, @namespace = "default", pod = "xwing", process_start = TestRecording.Start });
        r.Add("nat", new { ktime_ns = a, nat_kind = "dnat", ip_version = (byte)4, protocol = "tcp", orig_src_ip = Xwing, orig_src_port = (ushort)40000, orig_dst_ip = Vip, orig_dst_port = (ushort)80, xlated_src_ip = Xwing, xlated_src_port = (ushort)40000, xlated_dst_ip = Deathstar, xlated_dst_port = (ushort)8080, service_id = 7u, src_identity = XwingId, dst_identity = DeathstarId, endpoint_id = XwingEp, ifindex = 21u, flow_id = 0xa1u, pkt_len = 60u, obs_point = "from-endpoint", direction = "egress" });
        r.Add("policy", new { ktime_ns = a + 1000, ip_version = (byte)4, src_ip = Xwing, src_port = (ushort)40000, dst_ip = Deathstar, dst_port = (ushort)8080, protocol = "tcp", tcp_flags = "SYN", src_identity = XwingId, dst_identity = DeathstarId, endpoint_id = XwingEp, ifindex = 21u, flow_id = 0xa1u, pkt_len = 60u, obs_point = "from-endpoint", direction = "egress", remote_identity = DeathstarId, action = "allow", match = "L3-L4", source = "datapath", rule_id = 3u, allowed_by = "default/xwing-egress", rules = "CiliumNetworkPolicy default/xwing-egress spec.egress[0]" });
        r.Add("trace", new { ktime_ns = a + 2000, ip_version = (byte)4, src_ip = Xwing, src_port = (ushort)40000, dst_ip = Deathstar, dst_port = (ushort)8080, protocol = "tcp", tcp_flags = "SYN", src_identity = XwingId, dst_identity = DeathstarId, endpoint_id = XwingEp, ifindex = 21u, flow_id = 0xa1u, pkt_len = 60u, obs_point = "from-endpoint", direction = "egress", ct_state = "new" });
        r.Add("policy", new { ktime_ns = a + 3000, ip_version = (byte)4, src_ip = Xwing, src_port = (ushort)40000, dst_ip = Deathstar, dst_port = (ushort)8080, protocol = "tcp", tcp_flags = "SYN", src_identity = XwingId, dst_identity = DeathstarId, endpoint_id = DeathstarEp, ifindex = 22u, flow_id = 0xa1u, pkt_len = 60u, obs_point = "to-endpoint", direction = "ingress", remote_identity = XwingId, action = "deny", match = "none", source = "datapath", rule_id = 0u });
        for (var i = 0; i < 3; i++) // the SYN and two retransmissions
            r.Add("drop", new { ktime_ns = a + 4000 + (ulong)i * 1_000_000_000, ip_version = (byte)4, src_ip = Xwing, src_port = (ushort)40000, dst_ip = Deathstar, dst_port = (ushort)8080, protocol = "tcp", tcp_flags = "SYN", src_identity = XwingId, dst_identity = DeathstarId, endpoint_id = DeathstarEp, ifindex = 22u, flow_id = 0xa1u, pkt_len = 60u, obs_point = "to-endpoint", direction = "ingress", reason = (ushort)133, reason_name = "Policy denied", file = "policy.h", line = (ushort)42, ct_state = "new", source = "datapath", rule_id = 0u });
        r.Add("capture", new { ktime_ns = a + 4000, ip_version = (byte)4, src_ip = Xwing, src_port = (ushort)40000, dst_ip = Deathstar, dst_port = (ushort)8080, protocol = "tcp", tcp_flags = "SYN", src_identity = XwingId, dst_identity = DeathstarId, endpoint_id = DeathstarEp, ifindex = 22u, flow_id = 0xa1u, pkt_len = 54u, obs_point = "to-endpoint", direction = "ingress", cap_len = (ushort)54, drop_reason = (ushort)133, ct_state = "new", data = SynPacket(Xwing, 40000, Deathstar, 8080) });
        r.Add("capture", new { ktime_ns = a + 2000, ip_version = (byte)4, src_ip = Xwing, src_port = (ushort)40000, dst_ip = Deathstar, dst_port = (ushort)8080, protocol = "tcp", tcp_flags = "SYN", src_identity = XwingId, dst_identity = DeathstarId, endpoint_id = XwingEp, ifindex = 21u, flow_id = 0xa1u, pkt_len = 54u, obs_point = "from-endpoint", direction = "egress", cap_len = (ushort)54, drop_reason = (ushort)0, ct_state = "new", data = SynPacket(Xwing, 40000, Deathstar, 8080) });
        r.Add("exit", new { ktime_ns = a + 3_000_000_000, pid = 300u, ppid = 1u, exec_id = 5001ul, binary = "/usr/bin/curl", exit_code = 28, status = 28u << 8, comm = "curl", netns_ino = XwingNetns, @namespace = "default", pod = "xwing" });

        // B: curl to the outside, SNAT to the node, answered, exit 0
        var b = T0 + 5_000_000_000;
        r.Add("exec", new { ktime_ns = b, pid = 301u, tid = 301u, ppid = 1u, exec_id = 5002ul, binary = "/usr/bin/curl", arguments = "https://203.0.113.10/", comm = "curl", netns_ino = XwingNetns, @namespace = "default", pod = "xwing", process_start = TestRecording.Start });
        r.Add("connect", new { ktime_ns = b + 1_000_000, pid = 301u, tid = 301u, exec_id = 5002ul, binary = "/usr/bin/curl", comm = "curl", connect_kind = "tcp", ip_version = (byte)4, src_ip = Xwing, src_port = (ushort)40001, dst_ip = Outside, dst_port = (ushort)443, protocol = "tcp", netns_ino = XwingNetns, @namespace = "default", pod = "xwing" });
        r.Add("policy", new { ktime_ns = b + 1_001_000, ip_version = (byte)4, src_ip = Xwing, src_port = (ushort)40001, dst_ip = Outside, dst_port = (ushort)443, protocol = "tcp", tcp_flags = "SYN", src_identity = XwingId, dst_identity = World, endpoint_id = XwingEp, ifindex = 21u, flow_id = 0xb2u, pkt_len = 60u, obs_point = "from-endpoint", direction = "egress", remote_identity = World, action = "allow", match = "L3-Only", source = "datapath", rule_id = 4u, allowed_by = "default/xwing-egress", rules = "CiliumNetworkPolicy default/xwing-egress spec.egress[1]" });
        r.Add("trace", new { ktime_ns = b + 1_002_000, ip_version = (byte)4, src_ip = Xwing, src_port = (ushort)40001, dst_ip = Outside, dst_port = (ushort)443, protocol = "tcp", tcp_flags = "SYN", src_identity = XwingId, dst_identity = World, endpoint_id = XwingEp, ifindex = 21u, flow_id = 0xb2u, pkt_len = 60u, obs_point = "from-endpoint", direction = "egress", ct_state = "new" });
        r.Add("nat", new { ktime_ns = b + 1_003_000, nat_kind = "snat", ip_version = (byte)4, protocol = "tcp", orig_src_ip = Xwing, orig_src_port = (ushort)40001, orig_dst_ip = Outside, orig_dst_port = (ushort)443, xlated_src_ip = Node, xlated_src_port = (ushort)50001, xlated_dst_ip = Outside, xlated_dst_port = (ushort)443, src_identity = XwingId, dst_identity = World, endpoint_id = XwingEp, ifindex = 21u, flow_id = 0xb2u, pkt_len = 60u, obs_point = "from-endpoint", direction = "egress" });
        r.Add("nat", new { ktime_ns = b + 2_000_000, nat_kind = "rev-snat", ip_version = (byte)4, protocol = "tcp", orig_src_ip = Outside, orig_src_port = (ushort)443, orig_dst_ip = Node, orig_dst_port = (ushort)50001, xlated_src_ip = Outside, xlated_src_port = (ushort)443, xlated_dst_ip = Xwing, xlated_dst_port = (ushort)40001, src_identity = World, dst_identity = XwingId, endpoint_id = XwingEp, ifindex = 21u, flow_id = 0xb3u, pkt_len = 60u, obs_point = "to-endpoint", direction = "ingress" });
        r.Add("trace", new { ktime_ns = b + 2_001_000, ip_version = (byte)4, src_ip = Outside, src_port = (ushort)443, dst_ip = Xwing, dst_port = (ushort)40001, protocol = "tcp", tcp_flags = "SYN, ACK", src_identity = World, dst_identity = XwingId, endpoint_id = XwingEp, ifindex = 21u, flow_id = 0xb3u, pkt_len = 60u, obs_point = "to-endpoint", direction = "ingress", ct_state = "reply", orig_ip = Node });
        r.Add("exit", new { ktime_ns = b + 50_000_000, pid = 301u, ppid = 1u, exec_id = 5002ul, binary = "/usr/bin/curl", exit_code = 0, status = 0u, comm = "curl", netns_ino = XwingNetns, @namespace = "default", pod = "xwing" });
        // its volume (the flows table, from the datapath's conntrack entry at xwing's endpoint): a row while open, one at its end
        var bFirst = TestRecording.Start.AddTicks((long)(b + 1_002_000) / 100);
        r.Add("flows",
            new { time = bFirst.AddSeconds(1), report = "interval", source = "datapath", datapath = "lab", first_seen = bFirst, last_seen = bFirst.AddMilliseconds(900), ip_version = (byte)4, src_ip = Xwing, src_port = (ushort)40001, dst_ip = Outside, dst_port = (ushort)443, protocol = "tcp", direction = "egress", endpoint_id = XwingEp, src_identity = XwingId, dst_identity = World, packets_orig = 5ul, bytes_orig = 700ul, packets_reply = 4ul, bytes_reply = 4200ul, tcp_flags_orig = "SYN, ACK, PSH", tcp_flags_reply = "SYN, ACK, PSH" },
            new { time = bFirst.AddSeconds(2), report = "end", end_reason = "fin", source = "datapath", datapath = "lab", first_seen = bFirst, last_seen = bFirst.AddMilliseconds(1040), ip_version = (byte)4, src_ip = Xwing, src_port = (ushort)40001, dst_ip = Outside, dst_port = (ushort)443, protocol = "tcp", direction = "egress", endpoint_id = XwingEp, src_identity = XwingId, dst_identity = World, packets_orig = 12ul, bytes_orig = 1850ul, packets_reply = 15ul, bytes_reply = 18342ul, tcp_flags_orig = "SYN, ACK, FIN, PSH", tcp_flags_reply = "SYN, ACK, FIN, PSH" });

        // C: nc started before the recording sends UDP outside; never exits
        var c = T0 + 8_000_000_000;
        r.Add("connect", new { ktime_ns = c, pid = 250u, tid = 250u, exec_id = 4000ul, binary = "/usr/bin/nc", comm = "nc", connect_kind = "udp-send", ip_version = (byte)4, src_ip = Xwing, src_port = (ushort)53000, dst_ip = Dns, dst_port = (ushort)53, protocol = "udp", netns_ino = XwingNetns, @namespace = "default", pod = "xwing" });
        // its volume from the kernel's conntrack (a node's masquerade), still open at the end
        r.Add("flows", new { time = TestRecording.Start.AddSeconds(20), report = "end", end_reason = "recording-end", source = "conntrack", datapath = "host", first_seen = TestRecording.Start.AddTicks((long)c / 100), ip_version = (byte)4, src_ip = Xwing, src_port = (ushort)53000, dst_ip = Dns, dst_port = (ushort)53, protocol = "udp", xlated_src_ip = Node, xlated_src_port = (ushort)50002, packets_orig = 1ul, bytes_orig = 73ul, packets_reply = 1ul, bytes_reply = 145ul, ct_id = 77u, netns_ino = 4026531840u });
        // an in-cluster connect that is not external
        r.Add("connect", new { ktime_ns = c + 1000, pid = 250u, tid = 250u, exec_id = 4000ul, binary = "/usr/bin/nc", comm = "nc", connect_kind = "tcp", ip_version = (byte)4, src_ip = Xwing, src_port = (ushort)53001, dst_ip = Deathstar, dst_port = (ushort)8080, protocol = "tcp", netns_ino = XwingNetns, @namespace = "default", pod = "xwing" });

        r.Add("kdrop", new { ktime_ns = c + 5000, reason = 2u, reason_name = "NO_SOCKET", location = 0xffffffff81000000ul, function = "tcp_v4_rcv+0x1a", l3_proto = (ushort)0x0800, ip_version = (byte)4, src_ip = Outside, src_port = (ushort)443, dst_ip = Node, dst_port = (ushort)59999, protocol = "tcp", netns_ino = 4026531840u, ifindex = 2u, pkt_len = 60u });
        // the kernel's ring buffer on CPU 1 could not take 3 trace events in that second (loss v3: a row per CPU that
        // lost, one without a CPU for the rest)
        r.Add("loss", new { time = TestRecording.Start.AddSeconds(9), kind = "trace", emitted = 40ul, failed = 3ul, userspace_dropped = 0ul, cpu = 1u });
        r.Add("loss", new { time = TestRecording.Start.AddSeconds(9), kind = "trace", emitted = 60ul, failed = 0ul, userspace_dropped = 0ul });
        r.Loss["trace"] = new Forensics.Format.ManifestLoss { Emitted = 100, Failed = 3, UserspaceDropped = 0 };
        r.Build();
        return r;
    }
}
