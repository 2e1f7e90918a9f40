using System.Text.RegularExpressions;
using Forensics.Tests;

namespace Forensics.Query.Tests;

/// <summary>Kernel drops (the kdrop table) in the drops reconstructions, beside our datapath's.</summary>
public sealed partial class KernelDropTests : IDisposable
{
    private readonly TestRecording _rec = new();

    public void Dispose() => _rec.Dispose();

    private static object Kdrop(ulong ktime, string reason, string src, ushort sport, string dst, ushort dport, string protocol = "tcp",
        ushort l3 = 0x0800, string? pod = null, string? ns = null) =>
        new
        {
            ktime_ns = ktime, reason = 1u, reason_name = reason, location = 0xffffffff81000000ul + ktime % 1000, function = "nf_hook_slow+0x9c",
            l3_proto = l3, ip_version = l3 == 0x86dd ? (byte)6 : (byte)4, src_ip = src, src_port = sport, dst_ip = dst, dst_port = dport,
            protocol, netns_ino = 4026532999u, ifindex = 7u, pkt_len = 60u, @namespace = ns, pod,
        };

    private QuerySession Open()
    {
        _rec.Add("endpoints",
            new { endpoint_id = (ushort)11, @namespace = "default", pod = "xwing", ip = "10.0.1.5", identity = 1001u },
            new { endpoint_id = (ushort)12, @namespace = "default", pod = "deathstar", ip = "10.0.1.7", identity = 1002u });
        _rec.Build();
        return QuerySession.Open([_rec.Root]);
    }

    [Fact]
    public void Drops_KernelNetfilterDrop_IsARowOfTheKernelWithTheClientPod()
    {
        _rec.Add("kdrop", Kdrop(1_000_000, "NETFILTER_DROP", "10.0.1.5", 41000, "203.0.113.9", 443, pod: "fx-node"),
            Kdrop(2_000_000_000, "NETFILTER_DROP", "10.0.1.5", 41000, "203.0.113.9", 443, pod: "fx-node"));
        using var s = Open();
        var d = s.Rows(Reconstructions.Drops(new Filter())).Single();
        Assert.Equal("default/xwing", d["source"]);
        Assert.Equal("203.0.113.9", d["destination"]);
        Assert.Equal("kernel", d["dropped_by"]);
        Assert.Equal("NETFILTER_DROP", d["reason_name"]);
        Assert.Null(d["reason"]);
        Assert.Equal(2L, d["count"]);
        Assert.Equal("fx-node", s.Rows("SELECT drop_netns_pod FROM drops_by_workload").Single()["drop_netns_pod"]);
        Assert.Single(s.Rows(Reconstructions.Drops(new Filter { Reason = "netfilter" })));
        Assert.Empty(s.Rows(Reconstructions.Drops(new Filter { Reason = "133" })));
    }

    [Fact]
    public void Drops_HiddenReasonsMulticastAndNonIp_LeftOutUnlessAllReasons()
    {
        _rec.Add("kdrop",
            Kdrop(1_000_000, "QUEUE_PURGE", "10.0.1.5", 41000, "10.0.1.7", 8080),
            Kdrop(2_000_000, "SOCKET_CLOSE", "10.0.1.7", 8080, "10.0.1.5", 41000),
            Kdrop(3_000_000, "NOT_SPECIFIED", "fe80::1", 0, "ff02::16", 0, "icmpv6", l3: 0x86dd),
            Kdrop(4_000_000, "NOT_SPECIFIED", "", 0, "", 0, "0", l3: 0x0806),
            Kdrop(5_000_000, "NO_SOCKET", "10.0.1.5", 41001, "10.0.1.7", 9999));
        using var s = Open();
        var shown = s.Rows(Reconstructions.Drops(new Filter())).ToList();
        Assert.Equal("NO_SOCKET", Assert.Single(shown)["reason_name"]);
        var all = s.Rows(Reconstructions.Drops(new Filter { AllReasons = true })).ToList();
        Assert.Equal(5, all.Count);
        var why = s.Rows("SELECT reason_name, hidden_why FROM drops_resolved WHERE hidden ORDER BY ktime_ns").Select(r => (string?)r["hidden_why"]).ToList();
        Assert.Equal(4, why.Count);
        Assert.StartsWith("a socket's queue was purged", why[0], StringComparison.Ordinal);
        Assert.Equal("to a multicast or broadcast address", why[2]);
        Assert.Equal("not an IPv4 or IPv6 packet", why[3]);
    }

    [Fact]
    public void Drops_SameFlowDroppedByDatapathAndKernel_OneRowNamingBoth()
    {
        // our tc program drops (133); the kernel then frees the packet as TC_INGRESS 20 us later
        _rec.Add("drop", new { ktime_ns = 1_000_000ul, ip_version = (byte)4, src_ip = "10.0.1.5", src_port = (ushort)41000, dst_ip = "10.0.1.7", dst_port = (ushort)8080, protocol = "tcp", src_identity = 1001u, dst_identity = 1002u, reason = (ushort)133 });
        _rec.Add("kdrop", Kdrop(1_020_000, "TC_INGRESS", "10.0.1.5", 41000, "10.0.1.7", 8080));
        // a retransmission one second later: dropped again at both layers
        _rec.Add("drop", new { ktime_ns = 1_001_000_000ul, ip_version = (byte)4, src_ip = "10.0.1.5", src_port = (ushort)41000, dst_ip = "10.0.1.7", dst_port = (ushort)8080, protocol = "tcp", src_identity = 1001u, dst_identity = 1002u, reason = (ushort)133 });
        _rec.Add("kdrop", Kdrop(1_001_030_000, "TC_INGRESS", "10.0.1.5", 41000, "10.0.1.7", 8080));
        // the kernel alone drops another flow
        _rec.Add("kdrop", Kdrop(3_000_000_000, "TC_INGRESS", "10.0.1.5", 41002, "10.0.1.7", 8080));
        using var s = Open();
        var rows = s.Rows(Reconstructions.Drops(new Filter())).ToList();
        Assert.Equal(2, rows.Count);
        var both = rows.Single(r => (string?)r["dropped_by"] == "datapath+kernel");
        Assert.Equal("Policy denied", both["reason_name"]);
        Assert.Equal("TC_INGRESS", both["kernel_reason"]);
        Assert.Equal(2L, both["count"]);
        Assert.Equal("default/xwing", both["source"]);
        Assert.Equal("default/deathstar", both["destination"]);
        var kernel = rows.Single(r => (string?)r["dropped_by"] == "kernel");
        Assert.Equal(1L, kernel["count"]);
        Assert.Equal(3L, (long)s.Rows("SELECT count(*) AS n FROM drops_resolved").Single()["n"]!);
    }

    [GeneratedRegex(@"^\| `([A-Z0-9_]+)` \|", RegexOptions.Multiline)]
    private static partial Regex DocReason();

    [Fact]
    public void HiddenReasons_DocsDropsMd_ListsExactlyTheSame()
    {
        var doc = File.ReadAllText(Repo.Path("docs", "drops.md"));
        var listed = DocReason().Matches(doc).Select(m => m.Groups[1].Value).ToList();
        Assert.Equal(KernelDrops.HiddenReasons.Select(r => r.Reason), listed);
        foreach (var (rule, _) in KernelDrops.HiddenPackets)
            Assert.Contains(rule, doc, StringComparison.Ordinal);
    }
}
