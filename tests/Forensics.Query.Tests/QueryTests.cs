using Forensics.Format;
using Forensics.Query.Recording;

namespace Forensics.Query.Tests;

public sealed class QueryTests : IDisposable
{
    private readonly TestRecording _rec = Lab.Build();

    public void Dispose() => _rec.Dispose();

    private static object? Scalar(QuerySession s, string sql) => s.Execute(sql).Rows.Single()[0];

    [Fact]
    public void EventView_LabRecording_ReturnsRowsWithSchemaTypes()
    {
        using var s = QuerySession.Open([_rec.Root]);
        var r = s.Execute("SELECT src_port, reason, time, ktime_ns FROM \"drop\" ORDER BY ktime_ns");
        Assert.Equal(3, r.Rows.Count);
        Assert.Equal((ushort)40000, r.Rows[0][0]);
        Assert.Equal((ushort)133, r.Rows[0][1]);
        Assert.Equal(["UnsignedSmallInt", "UnsignedSmallInt", "TimestampTz", "UnsignedBigInt"], r.Types);
        Assert.Equal("node-a", Scalar(s, "SELECT DISTINCT node FROM \"drop\""));
        Assert.Equal(_rec.RecordingId, Scalar(s, "SELECT DISTINCT recording FROM exec"));
    }

    [Fact]
    public void Views_TwoRecordings_RecordingAndNodeColumnsTellThemApart()
    {
        using var other = Lab.Build("node-b");
        using var s = QuerySession.Open([_rec.Root, other.Root]);
        var r = s.Execute("SELECT node, recording, count(*) FROM \"drop\" GROUP BY ALL ORDER BY node");
        Assert.Equal(2, r.Rows.Count);
        Assert.Equal(("node-a", _rec.RecordingId, 3L), ((string)r.Rows[0][0]!, (string)r.Rows[0][1]!, (long)r.Rows[0][2]!));
        Assert.Equal(("node-b", other.RecordingId, 3L), ((string)r.Rows[1][0]!, (string)r.Rows[1][1]!, (long)r.Rows[1][2]!));
        // the reconstructions keep them apart too
        Assert.Equal(2L, Scalar(s, "SELECT count(DISTINCT node) FROM drops_by_workload"));
        Assert.Equal(2L, Scalar(s, "SELECT count(*) FROM recordings"));
    }

    [Fact]
    public void Views_RecordingWithEveryTable_EveryViewBindsToTheWrittenColumns()
    {
        // One row in every table of the catalog, written by the recorder's writers: a view that names a column the
        // recorder does not write (as the old SnapshotSchemas let views do) fails to bind here.
        using var rec = new TestRecording();
        foreach (var table in SchemaCatalog.Tables)
            rec.Add(table, new Dictionary<string, object?>());
        rec.Build();
        using var s = QuerySession.Open([rec.Root]);
        var views = s.Execute("SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY view_name").Rows.Select(r => (string)r[0]!).ToList();
        Assert.Contains("drops_by_workload", views);
        Assert.Contains("flow_volumes", views);
        var failed = new List<string>();
        foreach (var v in views)
        {
            try
            {
                s.Execute($"SELECT * FROM \"{v}\" LIMIT 1");
            }
            catch (Exception e) when (e is QueryException or DuckDB.NET.Data.DuckDBException)
            {
                failed.Add($"{v}: {e.Message}");
            }
        }
        Assert.True(failed.Count == 0, string.Join("\n", failed));
        Assert.True(views.Count > 20, $"only {views.Count} views");
    }

    [Fact]
    public void Views_SameRecordingTwice_Refused()
    {
        var e = Assert.Throws<RecordingException>(() => QuerySession.Open([_rec.Root, _rec.Root]));
        Assert.Contains("given twice", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Views_SegmentWithoutANewerColumn_ReadsItAsNull()
    {
        // An older writer's segment lacking the nullable orig_ip column: union by name fills NULL.
        var dir = Path.Combine(_rec.Root, "trace", "node=node-a");
        var file = Path.Combine(dir, "seg-000099.parquet");
        using (var c = new DuckDB.NET.Data.DuckDBConnection("DataSource=:memory:"))
        {
            c.Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = $"COPY (SELECT TIMESTAMPTZ '2026-11-23 10:00:30+00' AS time, 30000000000::UBIGINT AS ktime_ns, 0::UINTEGER AS cpu, 4::UTINYINT AS ip_version, '10.0.1.5' AS src_ip, 1::USMALLINT AS src_port, '10.0.1.7' AS dst_ip, 2::USMALLINT AS dst_port, 'udp' AS protocol, '' AS tcp_flags, 1001::UINTEGER AS src_identity, 1002::UINTEGER AS dst_identity, 11::USMALLINT AS endpoint_id, 21::UINTEGER AS ifindex, 5::UINTEGER AS flow_id, 40::UINTEGER AS pkt_len, 'from-endpoint' AS obs_point, 'egress' AS direction, 'new' AS ct_state) TO '{file}' (FORMAT parquet)";
            cmd.ExecuteNonQuery();
        }
        var manifestPath = Path.Combine(_rec.Root, "manifest.json");
        var m = Manifest.Parse(File.ReadAllBytes(manifestPath), manifestPath);
        m.Tables["trace"].Files.Add(new ManifestFile { Path = "trace/node=node-a/seg-000099.parquet", Rows = 1, Bytes = new FileInfo(file).Length, Sha256 = RecordingLocator.Sha256Of(file) });
        File.WriteAllBytes(manifestPath, m.ToJson());

        using var s = QuerySession.Open([_rec.Root]);
        var r = s.Execute("SELECT orig_ip, src_port FROM trace WHERE flow_id = 5");
        Assert.Null(r.Rows.Single()[0]);
        Assert.Equal((ushort)1, r.Rows.Single()[1]);
        Assert.Equal(4L, Scalar(s, "SELECT count(*) FROM trace"));
    }

    [Fact]
    public void Views_FileNotInManifest_IsNotPartOfTheRecording()
    {
        File.Copy(Path.Combine(_rec.Root, "drop/node=node-a/seg-000001.parquet"), Path.Combine(_rec.Root, "drop/node=node-a/seg-000777.parquet"));
        using var s = QuerySession.Open([_rec.Root]);
        Assert.Equal(3L, Scalar(s, "SELECT count(*) FROM \"drop\""));
    }

    [Fact]
    public void SnapshotTable_AbsentFromRecording_IsAnEmptyView()
    {
        using var s = QuerySession.Open([_rec.Root]);
        Assert.Equal(0L, Scalar(s, "SELECT count(*) FROM policies"));
        Assert.Equal(0L, Scalar(s, "SELECT count(*) FROM conntrack"));
    }

    [Fact]
    public void Open_UnsupportedSchemaVersion_Refused()
    {
        var manifestPath = Path.Combine(_rec.Root, "manifest.json");
        File.WriteAllText(manifestPath, File.ReadAllText(manifestPath).Replace("\"schema_version\": 1", "\"schema_version\": 99", StringComparison.Ordinal));
        var e = Assert.Throws<RecordingException>(() => QuerySession.Open([_rec.Root]));
        Assert.Contains("schema version 99", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("10.0.1.5", "10.0.0.0/16", true)]
    [InlineData("10.1.1.5", "10.0.0.0/16", false)]
    [InlineData("10.0.1.5", "10.0.1.5", true)]
    [InlineData("10.0.1.6", "10.0.1.5/32", false)]
    [InlineData("203.0.113.10", "0.0.0.0/0", true)]
    [InlineData("192.168.1.129", "192.168.1.128/25", true)]
    [InlineData("192.168.1.127", "192.168.1.128/25", false)]
    [InlineData("fd00::1", "fd00::/8", true)]
    [InlineData("fe80::1", "fd00::/8", false)]
    [InlineData("2001:db8::ff", "2001:db8::/126", false)]
    [InlineData("2001:db8::3", "2001:db8::/126", true)]
    [InlineData("2001:db8:0:0:0:0:0:3", "2001:db8::/127", false)]
    [InlineData("::1", "::1/128", true)]
    [InlineData("10.0.1.5", "fd00::/8", false)]
    [InlineData("fd00::1", "10.0.0.0/8", false)]
    [InlineData("not-an-ip", "10.0.0.0/8", false)]
    public void FxInCidr_Address_MatchesPrefix(string ip, string cidr, bool expected)
    {
        using var s = QuerySession.Open([_rec.Root]);
        Assert.Equal(expected, Scalar(s, $"SELECT fx_in_cidr('{ip}', '{cidr}')"));
    }

    [Fact]
    public void Macros_ReasonsIdentitiesAddressesProtocols_NameThem()
    {
        using var s = QuerySession.Open([_rec.Root]);
        Assert.Equal("Policy denied", Scalar(s, "SELECT fx_drop_reason(133)"));
        Assert.Equal("Policy denied by denylist", Scalar(s, "SELECT fx_drop_reason(181)"));
        Assert.Equal("Unknown reason 250", Scalar(s, "SELECT fx_drop_reason(250)"));
        Assert.Equal("reserved:world", Scalar(s, "SELECT fx_identity_labels(2)"));
        Assert.Equal("k8s:class=xwing,k8s:io.kubernetes.pod.namespace=default,k8s:org=alliance", Scalar(s, "SELECT fx_identity_labels(1001)"));
        Assert.Equal("default/deathstar", Scalar(s, "SELECT fx_pod('10.0.1.7')"));
        Assert.Equal("[fd00::1]:80", Scalar(s, "SELECT fx_addr('fd00::1', 80)"));
        Assert.Equal("10.0.0.1:80", Scalar(s, "SELECT fx_addr('10.0.0.1', 80)"));
        Assert.Equal("tcp", Scalar(s, "SELECT fx_proto_name(6)"));
        Assert.Equal(17, Scalar(s, "SELECT fx_proto_num('udp')"));
        Assert.Equal(true, Scalar(s, "SELECT fx_in_cluster('10.96.0.10')"));
        Assert.Equal(false, Scalar(s, "SELECT fx_in_cluster('203.0.113.10')"));
    }

    [Fact]
    public void Query_BadSql_OneLineQueryException()
    {
        using var s = QuerySession.Open([_rec.Root]);
        var e = Assert.Throws<QueryException>(() => s.Execute("SELEC nothing FROM"));
        Assert.DoesNotContain('\n', e.Message);
        Assert.Contains("syntax error", e.Message, StringComparison.OrdinalIgnoreCase);
        var e2 = Assert.Throws<QueryException>(() => s.Execute("SELECT * FROM nosuch_table"));
        Assert.DoesNotContain('\n', e2.Message);
    }

    [Fact]
    public void Query_LongerThanTheTimeLimit_Interrupted()
    {
        using var s = QuerySession.Open([_rec.Root], new QueryOptions { Limits = new QueryLimits { Timeout = TimeSpan.FromMilliseconds(500) } });
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var e = Assert.Throws<QueryException>(() => s.Execute("SELECT count(*) FROM range(1000000000000) a, range(1000) b"));
        Assert.Contains("time limit", e.Message, StringComparison.Ordinal);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(20), $"took {sw.Elapsed}");
        // the session still answers afterwards
        Assert.Equal(3L, s.Execute("SELECT count(*) FROM \"drop\"").Rows.Single()[0]);
    }

    [Fact]
    public void Query_OverTheMemoryLimit_FailsWithOneLine()
    {
        using var s = QuerySession.Open([_rec.Root], new QueryOptions { Limits = new QueryLimits { MemoryLimit = "64MB" } });
        var e = Assert.Throws<QueryException>(() => s.Execute("SELECT list(range) FROM range(100000000)"));
        Assert.Contains("memory", e.Message, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain('\n', e.Message);
    }
}

public sealed class SnapshotLayoutTests
{
    [Fact]
    public void Snapshot_RecorderLayout_ResolvesWorkloadsAndLabels()
    {
        using var rec = new TestRecording();
        rec.Add("endpoints", new { phase = "start", endpoint_id = (ushort)12, pod = "deathstar", @namespace = "default", ip = "10.0.1.7", identity = 1002u, ifindex = 22u });
        rec.Add("identities", new { phase = "start", identity = 1002u, labels = "k8s:class=deathstar k8s:org=empire", kind = "endpoint" });
        rec.Add("drop", new { ktime_ns = 5ul, ip_version = (byte)4, src_ip = "10.0.1.5", src_port = (ushort)1, dst_ip = "10.0.1.7", dst_port = (ushort)80, protocol = "tcp", dst_identity = 1002u, reason = (ushort)133 });
        rec.Build();
        using var s = QuerySession.Open([rec.Root]);
        var d = s.Rows("SELECT * FROM drops_by_workload").Single();
        Assert.Equal("default/deathstar", d["destination"]);
        Assert.Equal("k8s:class=deathstar k8s:org=empire", d["dst_labels"]);
        Assert.Equal("10.0.1.5", d["source"]);
        Assert.Equal((ushort)12, s.Execute("SELECT endpoint_id FROM endpoints").Rows.Single()[0]);
    }

    [Fact]
    public void Fixture_ColumnTheSchemaLacks_IsRefused()
    {
        using var rec = new TestRecording();
        rec.Add("endpoints", new { endpoint_id = (ushort)12, ipv6 = "fd00::7" });
        Assert.Throws<ArgumentException>(() => rec.Build());
    }
}

public sealed class BundleHookTests
{
    [Fact]
    public void Open_FileWithBundleOpener_QueriesTheExtractedDirectoryAndCleansUp()
    {
        using var rec = Lab.Build();
        var bundle = Path.Combine(Path.GetTempPath(), "fxq-" + Guid.NewGuid().ToString("N")[..8] + ".fxb");
        File.WriteAllText(bundle, "stand-in for a bundle");
        var extracted = Path.Combine(Path.GetTempPath(), "fxq-x-" + Guid.NewGuid().ToString("N")[..8]);
        var cleaned = false;
        var isBundle = RecordingLocator.IsBundle;
        RecordingLocator.IsBundle = path => path == bundle;
        RecordingLocator.BundleOpener = (path, _) =>
        {
            Assert.Equal(bundle, path);
            CopyTree(rec.Root, extracted);
            return (extracted, new Cleanup(() => { Directory.Delete(extracted, true); cleaned = true; }));
        };
        try
        {
            using (var s = QuerySession.Open([bundle]))
                Assert.Equal(3L, s.Execute("SELECT count(*) FROM \"drop\"").Rows.Single()[0]);
            Assert.True(cleaned);
            Assert.False(Directory.Exists(extracted));
        }
        finally
        {
            RecordingLocator.BundleOpener = null;
            RecordingLocator.IsBundle = isBundle;
            File.Delete(bundle);
        }
    }

    private static void CopyTree(string from, string to)
    {
        foreach (var d in Directory.GetDirectories(from, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, d)));
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from, "*", SearchOption.AllDirectories))
            File.Copy(f, Path.Combine(to, Path.GetRelativePath(from, f)));
    }

    private sealed class Cleanup(Action a) : IDisposable
    {
        public void Dispose() => a();
    }
}
