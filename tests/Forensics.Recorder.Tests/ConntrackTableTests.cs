using Forensics.Datapath.Conntrack;
using Forensics.Query.Schema;
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
}
