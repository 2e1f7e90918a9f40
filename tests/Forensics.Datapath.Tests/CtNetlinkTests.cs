using System.Buffers.Binary;
using System.Net;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Conntrack;

namespace Forensics.Datapath.Tests;

/// <summary>The ctnetlink decoder on datagrams captured from a real kernel (testdata/ctnetlink/README.md).</summary>
public sealed class CtNetlinkTests
{
    private static List<(string Group, byte[] Datagram)> Load(string file) =>
        File.ReadAllLines(Path.Combine(AppContext.BaseDirectory, "testdata", "ctnetlink", file))
            .Where(l => l.Length > 0)
            .Select(l => (l[..l.IndexOf(' ', StringComparison.Ordinal)], Convert.FromHexString(l[(l.IndexOf(' ', StringComparison.Ordinal) + 1)..])))
            .ToList();

    private static List<ConntrackEntry> Entries(IEnumerable<byte[]> datagrams)
    {
        var result = new List<ConntrackEntry>();
        foreach (var d in datagrams)
            foreach (var m in CtNetlink.Messages(d))
                if (CtNetlink.TryParseEntry(m.Bytes, out var e))
                    result.Add(e);
        return result;
    }

    private static string Ip(in Bytes16 a, byte family) =>
        new IPAddress(family == 10 ? ((ReadOnlySpan<byte>)a).ToArray() : ((ReadOnlySpan<byte>)a)[..4].ToArray()).ToString();

    private static ConntrackEntry ById(List<ConntrackEntry> entries, uint id) => Assert.Single(entries, e => e.Id == id);

    [Fact]
    public void Dump_CapturedTable_MatchesConntrackToolListing()
    {
        var dump = Load("dump.hex");
        var entries = Entries(dump.Select(d => d.Datagram));
        Assert.Equal(4, entries.Count);
        Assert.All(entries, e => Assert.Equal(CtEventType.Dump, e.Type));

        var tcp = ById(entries, 1721966340);
        Assert.Equal(2, tcp.Family);
        Assert.Equal(("10.244.1.2", (ushort)52328, "10.96.0.10", (ushort)80), (Ip(tcp.Orig.Src, 2), tcp.Orig.SrcPort, Ip(tcp.Orig.Dst, 2), tcp.Orig.DstPort));
        Assert.Equal(("10.244.2.2", (ushort)8080, "10.244.1.2", (ushort)52328), (Ip(tcp.Reply.Src, 2), tcp.Reply.SrcPort, Ip(tcp.Reply.Dst, 2), tcp.Reply.DstPort));
        Assert.Equal(6, tcp.Orig.Proto);
        Assert.Equal("TIME_WAIT", CtNetlink.TcpStateName(tcp.TcpState));
        Assert.True(tcp.Status.HasFlag(CtStatus.Assured));
        Assert.True(tcp.Status.HasFlag(CtStatus.DstNat));
        Assert.Equal((5UL, 270UL, 5UL, 270UL), (tcp.PacketsOrig, tcp.BytesOrig, tcp.PacketsReply, tcp.BytesReply));
        Assert.True(tcp.IsDnat);
        Assert.False(tcp.IsSnat);
        var x = tcp.Translated;
        Assert.Equal(("10.244.1.2", (ushort)52328, "10.244.2.2", (ushort)8080), (Ip(x.Src, 2), x.SrcPort, Ip(x.Dst, 2), x.DstPort));

        var udp = ById(entries, 392184638);
        Assert.Equal(17, udp.Orig.Proto);
        Assert.Equal(("10.244.1.2", "203.0.113.7", (ushort)5353), (Ip(udp.Orig.Src, 2), Ip(udp.Orig.Dst, 2), udp.Orig.DstPort));
        Assert.Equal(("203.0.113.7", "198.51.100.1"), (Ip(udp.Reply.Src, 2), Ip(udp.Reply.Dst, 2)));
        Assert.Equal(udp.Orig.SrcPort, udp.Reply.DstPort);
        Assert.Equal(66u, udp.Mark);
        Assert.Equal((ushort)7, udp.Zone);
        Assert.True(udp.IsSnat);
        Assert.False(udp.IsDnat);
        Assert.Equal((1UL, 32UL), (udp.PacketsOrig, udp.BytesOrig));

        var v6 = ById(entries, 3204625423);
        Assert.Equal(10, v6.Family);
        Assert.Equal(("fd00:1::2", "fd00:96::10", (ushort)80), (Ip(v6.Orig.Src, 10), Ip(v6.Orig.Dst, 10), v6.Orig.DstPort));
        Assert.Equal(("fd00:2::2", (ushort)8080), (Ip(v6.Reply.Src, 10), v6.Reply.SrcPort));
        Assert.True(v6.IsDnat);
        Assert.Equal((5UL, 370UL), (v6.PacketsOrig, v6.BytesOrig));

        var icmp = ById(entries, 3540905787);
        Assert.Equal(1, icmp.Orig.Proto);
        Assert.Equal(((byte)8, (byte)0, (ushort)4660), (icmp.Orig.IcmpType, icmp.Orig.IcmpCode, icmp.Orig.IcmpId));
        Assert.Equal(((byte)0, (ushort)4660), (icmp.Reply.IcmpType, icmp.Reply.IcmpId));
        Assert.False(icmp.IsTranslated);
        Assert.False(icmp.Has(CtFields.Zone));
    }

    [Fact]
    public void Dump_LastDatagram_IsDoneWithTheRequestSequence()
    {
        var last = Load("dump.hex")[^1].Datagram;
        var e = CtNetlink.Messages(last);
        Assert.True(e.MoveNext());
        Assert.Equal(CtNetlink.NLMSG_DONE, e.Current.Type);
        Assert.Equal(77u, e.Current.Seq);
        Assert.False(e.MoveNext());
    }

    [Fact]
    public void Events_CapturedGroups_DecodeAsNewUpdateDestroy()
    {
        var events = Load("events.hex");
        foreach (var (group, datagram) in events)
        {
            var entries = Entries([datagram]);
            var e = Assert.Single(entries);
            var expected = group switch { "new" => CtEventType.New, "update" => CtEventType.Update, _ => CtEventType.Destroy };
            Assert.Equal(expected, e.Type);
            Assert.True(e.Has(CtFields.Orig | CtFields.Reply | CtFields.Id));
        }
        var all = Entries(events.Select(x => x.Datagram));
        // four connections, each announced once as new and destroyed once
        Assert.Equal(4, all.Count(e => e.Type == CtEventType.New));
        Assert.Equal(4, all.Count(e => e.Type == CtEventType.Destroy));
        Assert.Equal(4, all.Where(e => e.Type == CtEventType.New).Select(e => e.Id).Distinct().Count());
        Assert.Equal(all.Where(e => e.Type == CtEventType.New).Select(e => e.Id).Order(), all.Where(e => e.Type == CtEventType.Destroy).Select(e => e.Id).Order());
    }

    [Fact]
    public void Events_Destroy_CarriesFinalCountersAndTimestamps()
    {
        var all = Entries(Load("events.hex").Select(x => x.Datagram));
        var destroy = Assert.Single(all, e => e.Type == CtEventType.Destroy && e.Family == 2 && e.Orig.Proto == 6);
        var created = Assert.Single(all, e => e.Type == CtEventType.New && e.Id == destroy.Id);
        Assert.True(destroy.Has(CtFields.Counters | CtFields.Timestamp));
        Assert.Equal((5UL, 270UL, 5UL, 270UL), (destroy.PacketsOrig, destroy.BytesOrig, destroy.PacketsReply, destroy.BytesReply));
        Assert.True(destroy.StopNs > destroy.StartNs);
        var start = DateTime.UnixEpoch.AddTicks((long)(destroy.StartNs / 100));
        Assert.InRange(start, new DateTime(2020, 1, 1, 0, 0, 0, DateTimeKind.Utc), new DateTime(2100, 1, 1, 0, 0, 0, DateTimeKind.Utc));
        Assert.True(created.IsDnat);
        Assert.Equal(created.Orig.SrcPort, destroy.Orig.SrcPort);
        Assert.Equal(CtStatus.None, created.Status & CtStatus.Assured); // assured comes with an update
        Assert.Contains(all, e => e.Type == CtEventType.Update && e.Id == destroy.Id && e.Status.HasFlag(CtStatus.Assured));
    }

    [Fact]
    public void TryParseEntry_TruncatedAttribute_IsRejectedWithoutThrowing()
    {
        var datagram = Load("dump.hex")[0].Datagram;
        var e = CtNetlink.Messages(datagram);
        Assert.True(e.MoveNext());
        var msg = e.Current.Bytes.ToArray();
        for (int cut = 0; cut < msg.Length; cut += 7)
        {
            var truncated = msg.AsSpan(0, cut).ToArray();
            if (truncated.Length >= 4)
                BinaryPrimitives.WriteUInt32LittleEndian(truncated, (uint)truncated.Length);
            // a prefix either decodes (the original tuple was whole) or is refused; it never throws
            _ = CtNetlink.TryParseEntry(truncated, out _);
        }
        var bogus = (byte[])msg.Clone();
        BinaryPrimitives.WriteUInt16LittleEndian(bogus.AsSpan(20), 0xffff); // first attribute claims more bytes than there are
        Assert.False(CtNetlink.TryParseEntry(bogus, out _));
    }

    [Fact]
    public void WriteDumpRequest_LayoutIsGetWithDumpFlags()
    {
        var buf = new byte[32];
        int len = CtNetlink.WriteDumpRequest(buf, 77);
        Assert.Equal(20, len);
        // the same bytes dump.py sent
        Assert.Equal("14000000010101034d0000000000000000000000", Convert.ToHexStringLower(buf.AsSpan(0, 20)));
    }

    [Fact]
    public void Messages_ErrorAck_ReportsTheErrno()
    {
        var msg = new byte[36];
        BinaryPrimitives.WriteUInt32LittleEndian(msg, 36);
        BinaryPrimitives.WriteUInt16LittleEndian(msg.AsSpan(4), CtNetlink.NLMSG_ERROR);
        BinaryPrimitives.WriteInt32LittleEndian(msg.AsSpan(16), -1); // -EPERM
        var e = CtNetlink.Messages(msg);
        Assert.True(e.MoveNext());
        Assert.Equal(CtNetlink.NLMSG_ERROR, e.Current.Type);
        Assert.Equal(1, e.Current.Errno);
        Assert.False(CtNetlink.TryParseEntry(msg, out _));
    }

    [Fact]
    public void StatusText_NamesBitsAsTheKernelHeader()
    {
        Assert.Equal("SEEN_REPLY|ASSURED|CONFIRMED|DST_NAT|DST_NAT_DONE",
            CtNetlink.StatusText(CtStatus.SeenReply | CtStatus.Assured | CtStatus.Confirmed | CtStatus.DstNat | CtStatus.DstNatDone));
    }
}
