using Forensics.Datapath.Conntrack;
using Forensics.Format;
using Forensics.Recorder.Batches;
using Forensics.Recorder.Conntrack;
using Forensics.Recorder.Storage;
using Forensics.Tests;

namespace Forensics.Recorder.Tests;

/// <summary>The kernel's conntrack table as recorded: a captured dump (testdata/ctnetlink) through the writer into Parquet.</summary>
public sealed class ConntrackTableTests
{
    private static List<ConntrackEntry> DumpEntries()
    {
        var list = new List<ConntrackEntry>();
        foreach (var line in File.ReadAllLines(Path.Combine(AppContext.BaseDirectory, "testdata", "ctnetlink", "dump.hex")))
        {
            var bytes = Convert.FromHexString(line[(line.IndexOf(' ', StringComparison.Ordinal) + 1)..]);
            foreach (var m in CtNetlink.Messages(bytes))
                if (CtNetlink.TryParseEntry(m.Bytes, out var e))
                    list.Add(e);
        }
        return list;
    }

    private static void AssertMatchesSchema(TableBatch batch)
    {
        var schema = SchemaCatalog.Current(batch.Table);
        Assert.Equal(schema.Columns.Select(c => c.Name), batch.Columns.Select(c => c.Name));
        foreach (var (want, got) in schema.Columns.Zip(batch.Columns))
        {
            Assert.True(want.Type == Column.TypeName(got.Type), $"{batch.Table}.{want.Name}: schema {want.Type}, writer {Column.TypeName(got.Type)}");
            Assert.True(want.Nullable == got.Nullable, $"{batch.Table}.{want.Name}: schema nullable={want.Nullable}, writer {got.Nullable}");
        }
    }

    [Fact]
    public async Task KernelConntrack_CapturedDump_ParquetRowsAsTheConntrackToolListedThem()
    {
        var netns = new ConntrackNetns(4026532999, "fxcap-n", "/run/netns/fxcap-n");
        var taken = new DateTimeOffset(2026, 12, 4, 14, 50, 0, TimeSpan.Zero);
        var batch = KernelConntrackSnapshot.Build("start", taken, [.. DumpEntries().Select(e => (netns, e))]);
        AssertMatchesSchema(batch);
        Assert.Equal(4, batch.Count);

        var dir = Directory.CreateTempSubdirectory("fx-kct-").FullName;
        try
        {
            var sealedFiles = new List<ManifestFile>();
            await using (var w = new SegmentWriter(dir, "n1", batch, "rec-1", sealedFiles.Add, TimeSpan.FromSeconds(1)))
            {
                await w.WriteAsync(batch);
                await w.SealAsync();
            }
            var path = Path.Combine(dir, Assert.Single(sealedFiles).Path);
            var rows = Duck.Query($"SELECT * FROM read_parquet('{path}') ORDER BY ct_id");
            Assert.Equal(4, rows.Count);
            // conntrack -L: tcp 6 TIME_WAIT src=10.244.1.2 dst=10.96.0.10 sport=52328 dport=80 packets=5 bytes=270
            //               src=10.244.2.2 dst=10.244.1.2 sport=8080 dport=52328 packets=5 bytes=270 [ASSURED] mark=0 id=1721966340
            var tcp = rows.Single(r => Convert.ToUInt32(r["ct_id"], System.Globalization.CultureInfo.InvariantCulture) == 1721966340u);
            Assert.Equal(("tcp", "10.244.1.2", 52328, "10.96.0.10", 80), ((string)tcp["protocol"]!, (string)tcp["orig_src_ip"]!, Convert.ToInt32(tcp["orig_src_port"], System.Globalization.CultureInfo.InvariantCulture), (string)tcp["orig_dst_ip"]!, Convert.ToInt32(tcp["orig_dst_port"], System.Globalization.CultureInfo.InvariantCulture)));
            Assert.Equal(("10.244.2.2", 8080), ((string)tcp["reply_src_ip"]!, Convert.ToInt32(tcp["reply_src_port"], System.Globalization.CultureInfo.InvariantCulture)));
            Assert.Equal("dnat", tcp["nat"]);
            Assert.Equal("TIME_WAIT", tcp["tcp_state"]);
            Assert.Contains("ASSURED", (string)tcp["status"]!, StringComparison.Ordinal);
            Assert.Equal(5UL, Convert.ToUInt64(tcp["packets_orig"], System.Globalization.CultureInfo.InvariantCulture));
            Assert.Equal(270UL, Convert.ToUInt64(tcp["bytes_reply"], System.Globalization.CultureInfo.InvariantCulture));
            Assert.Equal("fxcap-n", tcp["netns"]);
            Assert.Null(tcp["zone"]);
            // udp ... mark=66 zone=7, masqueraded to 198.51.100.1
            var udp = rows.Single(r => (string)r["protocol"]! == "udp");
            Assert.Equal(("snat", "198.51.100.1"), ((string)udp["nat"]!, (string)udp["reply_dst_ip"]!));
            Assert.Equal(66u, Convert.ToUInt32(udp["mark"], System.Globalization.CultureInfo.InvariantCulture));
            Assert.Equal(7, Convert.ToInt32(udp["zone"], System.Globalization.CultureInfo.InvariantCulture));
            var icmp = rows.Single(r => (string)r["protocol"]! == "icmp");
            Assert.Equal("", icmp["nat"]);
            Assert.Null(icmp["tcp_state"]);
            Assert.Equal(4660, Convert.ToInt32(icmp["orig_src_port"], System.Globalization.CultureInfo.InvariantCulture)); // the ICMP id
            // nf_conntrack_timestamp was on: the kernel's creation times, in the order the traffic made them (TCP first, the ping last)
            Assert.All(rows, r => Assert.InRange((DateTime)r["started"]!, new DateTime(2026, 12, 4, 14, 50, 0), new DateTime(2026, 12, 4, 14, 55, 0)));
            Assert.True((DateTime)tcp["started"]! < (DateTime)icmp["started"]!);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void ServicesSnapshot_KubeProxyServices_OneRowPerBackendWithSourceAndPortName()
    {
        var frontends = new List<Datapath.Cluster.ServiceFrontend>
        {
            new("kube-system", "kube-dns", "dns", System.Net.IPAddress.Parse("10.96.0.10"), 53, "udp",
                [new(System.Net.IPAddress.Parse("10.244.0.2"), 53, "kube-system", "coredns-a"), new(System.Net.IPAddress.Parse("10.244.0.3"), 53)], "iptables"),
            new("default", "empty", "", System.Net.IPAddress.Parse("10.96.0.20"), 80, "tcp", [], "iptables"),
        };
        var b = Tables.SnapshotTables.Services("start", DateTimeOffset.UnixEpoch, Tables.ServiceRow.From(frontends, "swcd-node"));
        AssertMatchesSchema(b);
        Assert.Equal(3, b.Count);
        var col = (string n) => b.Columns.Single(c => c.Name == n);
        Assert.Equal(["10.244.0.2", "10.244.0.3", null], ((StringColumn)col("backend_ip")).Values.Take(3));
        Assert.Equal(["kube-system/coredns-a", null, null], ((StringColumn)col("backend_pod")).Values.Take(3));
        Assert.Equal(["dns", "dns", null], ((StringColumn)col("port_name")).Values.Take(3));
        Assert.All(((StringColumn)col("source")).Values.Take(3), v => Assert.Equal("iptables", v));
        Assert.All(((StringColumn)col("netns")).Values.Take(3), v => Assert.Equal("swcd-node", v));
        Assert.False(((Column<int>)col("backend_port")).Valid![2]);
    }

    [Fact]
    public void ConntrackRecord_HeaderAndMessage_RoundTrip()
    {
        var line = File.ReadAllLines(Path.Combine(AppContext.BaseDirectory, "testdata", "ctnetlink", "events.hex"))[0];
        var message = Convert.FromHexString(line[(line.IndexOf(' ', StringComparison.Ordinal) + 1)..]);
        var record = new byte[ConntrackRecord.HeaderBytes + message.Length];
        ConntrackRecord.WriteHeader(record, ConntrackRecord.KindEvent, 3, ConntrackRecord.PhaseNone, 1_764_860_000_123_456_789, 42);
        message.CopyTo(record, ConntrackRecord.HeaderBytes);
        Assert.True(ConntrackRecord.TryRead(record, out var kind, out var netns, out var phase, out var utc, out var mono, out var e));
        Assert.Equal((ConntrackRecord.KindEvent, (byte)3, ConntrackRecord.PhaseNone, 1_764_860_000_123_456_789L, 42UL), (kind, netns, phase, utc, mono));
        Assert.Equal(CtEventType.New, e.Type);
        Assert.True(e.IsDnat);
        record[0] = 0x01; // a record of another source
        Assert.False(ConntrackRecord.TryRead(record, out _, out _, out _, out _, out _, out _));
        Assert.False(ConntrackRecord.TryRead(record.AsSpan(0, 20), out _, out _, out _, out _, out _, out _));
    }
}
