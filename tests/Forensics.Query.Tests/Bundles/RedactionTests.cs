using System.Net;
using System.Text;
using DuckDB.NET.Data;
using Forensics.Query.Bundles;

namespace Forensics.Query.Tests.Bundles;

[Collection("bundles")]
public sealed class RedactionTests
{
    private static readonly string[] Secrets = ["hunter2-S3CRET", "ghp_TOKENabc123XYZ", "AWS_SECRET_VALUE_987", "bearer-SECRET-zz9", "pg-Pa55word"];
    private static readonly string[] OriginalIps = ["10.0.1.5", "10.0.1.77", "10.0.2.9", "203.0.113.7", "fd00::1:5", "10.96.0.10"];

    private static TestRecording WithSecrets() => new TestRecording()
        .Segment("exec",
            TestRecording.Row(("pid", 1), ("binary", "/usr/bin/mysql"), ("arguments", $"-u admin --password={Secrets[0]} -h 10.0.1.77"), ("comm", "mysql")),
            TestRecording.Row(("pid", 2), ("binary", "/usr/bin/env"), ("arguments", $"GITHUB_TOKEN={Secrets[1]} AWS_SECRET_ACCESS_KEY={Secrets[2]} ./deploy.sh --prod"), ("comm", "env")),
            TestRecording.Row(("pid", 3), ("binary", "/usr/bin/curl"), ("arguments", $"-H Authorization: Bearer {Secrets[3]} http://203.0.113.7/"), ("comm", "curl")),
            TestRecording.Row(("pid", 4), ("binary", "/bin/sh"), ("arguments", $"-c PGPASSWORD={Secrets[4]} psql"), ("comm", "sh")))
        .Segment("connect",
            TestRecording.Row(("pid", 3), ("src_ip", "10.0.1.5"), ("dst_ip", "203.0.113.7"), ("dst_port", 80), ("ip_version", 4), ("protocol", "tcp")))
        .Segment("drop",
            TestRecording.Row(("src_ip", "10.0.1.5"), ("dst_ip", "10.0.2.9"), ("reason", 133), ("ip_version", 4), ("protocol", "tcp")),
            TestRecording.Row(("src_ip", "10.0.1.77"), ("dst_ip", "10.0.2.9"), ("reason", 133), ("ip_version", 4), ("protocol", "tcp")),
            TestRecording.Row(("src_ip", "fd00::1:5"), ("dst_ip", "fd00::2:9"), ("reason", 133), ("ip_version", 6), ("protocol", "tcp")))
        .Segment("endpoints",
            TestRecording.Row(("endpoint_id", 1), ("pod", "db"), ("ip", "10.0.1.5")),
            TestRecording.Row(("endpoint_id", 2), ("pod", "web"), ("ip", "10.0.2.9")))
        .Segment("identities",
            TestRecording.Row(("identity", 1001), ("labels", "k8s:app=db"), ("kind", "endpoint")))
        .Segment("services",
            TestRecording.Row(("service_id", 7), ("frontend_ip", "10.96.0.10"), ("port", 53), ("backend_ip", "10.0.1.5"), ("backend_port", 53)),
            TestRecording.Row(("service_id", 7), ("frontend_ip", "10.96.0.10"), ("port", 53), ("backend_ip", "10.0.1.77"), ("backend_port", 53)))
        .Segment("trace",
            TestRecording.Row(("src_ip", "10.0.1.5"), ("dst_ip", "10.0.2.9"), ("orig_ip", "10.96.0.10")),
            TestRecording.Row(("src_ip", "10.0.1.5"), ("dst_ip", "10.0.2.9"), ("orig_ip", null)))
        .Seal();

    private static readonly BundleOptions Redact = new()
    {
        RedactArgs = [@"--password=(\S+)", @"Bearer\s+(\S+)"],
        DropEnv = true,
        AnonymizeIps = true,
    };

    [Fact]
    public void Bundle_WithoutRedaction_ContainsPlantedSecrets()
    {
        // The control: the checks below would see the secrets if redaction did not remove them.
        using var rec = WithSecrets();
        using var s = new Scratch();
        var file = s.PathOf("plain.fxb");
        BundleWriter.Create(rec.Dir, file, new BundleOptions());
        var bytes = File.ReadAllBytes(file);
        foreach (var secret in Secrets.Concat(OriginalIps))
        {
            Assert.True(Contains(bytes, secret), $"{secret} not in the unredacted bundle");
        }
    }

    [Fact]
    public void Bundle_WithRedaction_HasNoSecretsInBytesOrRows()
    {
        using var rec = WithSecrets();
        using var s = new Scratch();
        var file = s.PathOf("redacted.fxb");
        BundleWriter.Create(rec.Dir, file, Redact);
        var bytes = File.ReadAllBytes(file);
        foreach (var secret in Secrets.Concat(OriginalIps))
        {
            Assert.False(Contains(bytes, secret), $"{secret} found in the bundle's bytes");
        }

        using var opened = BundleReader.Open(file, parent: s.Dir);
        using var conn = new DuckDBConnection("DataSource=:memory:");
        conn.Open();
        var values = AllText(conn, opened.Directory);
        Assert.NotEmpty(values);
        foreach (var secret in Secrets.Concat(OriginalIps))
        {
            Assert.DoesNotContain(values, v => v.Contains(secret, StringComparison.Ordinal));
        }
        var args = Column(conn, opened.Directory, "exec", "arguments");
        Assert.StartsWith("-u admin --password=***** -h ", args[0], StringComparison.Ordinal);
        // IPs inside arguments are anonymized with the same key as the IP columns.
        Assert.Equal(Column(conn, opened.Directory, "drop", "src_ip")[1], args[0]!["-u admin --password=***** -h ".Length..]);
        Assert.Equal("GITHUB_TOKEN=***** AWS_SECRET_ACCESS_KEY=***** ./deploy.sh --prod", args[1]);
        Assert.StartsWith("-H Authorization: Bearer ***** http://", args[2], StringComparison.Ordinal);
        Assert.Equal("-c PGPASSWORD=***** psql", args[3]);

        var red = opened.Report.Manifest["redaction"]!;
        Assert.Equal(Redact.RedactArgs, red["redact_args"]!["patterns"]!.AsArray().Select(p => (string)p!));
        Assert.NotNull(red["drop_env"]);
        Assert.Contains("not stored", (string)red["anonymize_ips"]!["key"]!, StringComparison.Ordinal);
        Assert.Contains("drop.src_ip", red["columns_rewritten"]!.AsArray().Select(c => (string)c!));
        // Columns no option touches keep their values and Parquet types, but for the recorder's nanosecond
        // times in rewritten files (DuckDB writes them back in µs), which the manifest says.
        var typeChanges = red["type_changes"]!.AsArray().Select(c => (string)c!).ToList();
        Assert.Contains(typeChanges, c => c.StartsWith("exec.time: ", StringComparison.Ordinal));
        Assert.All(typeChanges, c => Assert.Matches(@"^\w+\.(time|taken|process_start): ", c));
        using (var same = conn.CreateCommand())
        {
            var orig = Path.Combine(rec.Dir, "exec/node=node-a/seg-000001.parquet");
            var redacted = Path.Combine(opened.Directory, "exec/node=node-a/seg-000001.parquet");
            same.CommandText = $"SELECT count(*) FROM (SELECT * EXCLUDE (arguments) FROM read_parquet('{orig}', hive_partitioning = false) " +
                $"EXCEPT ALL SELECT * EXCLUDE (arguments) FROM read_parquet('{redacted}', hive_partitioning = false))";
            Assert.Equal(0L, Convert.ToInt64(same.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture));
            same.CommandText = $"SELECT count(*) FROM read_parquet('{redacted}', hive_partitioning = false)";
            Assert.Equal(4L, Convert.ToInt64(same.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture));
        }
        // Rewritten files keep the table stamp in their Parquet metadata.
        using var cmd = conn.CreateCommand();
        cmd.CommandText = $"SELECT decode(value) FROM parquet_kv_metadata('{opened.Directory}/exec/node=node-a/seg-000001.parquet') WHERE decode(key) = 'forensics.table'";
        Assert.Equal("exec", cmd.ExecuteScalar());
    }

    [Fact]
    public void AnonymizeIps_AcrossTables_IsConsistentAndPrefixPreserving()
    {
        using var rec = WithSecrets();
        using var s = new Scratch();
        var file = s.PathOf("anon.fxb");
        BundleWriter.Create(rec.Dir, file, Redact);
        using var opened = BundleReader.Open(file, parent: s.Dir);
        using var conn = new DuckDBConnection("DataSource=:memory:");
        conn.Open();
        var dropSrc = Column(conn, opened.Directory, "drop", "src_ip");
        var dropDst = Column(conn, opened.Directory, "drop", "dst_ip");
        var connectSrc = Column(conn, opened.Directory, "connect", "src_ip");
        var connectDst = Column(conn, opened.Directory, "connect", "dst_ip");
        var traceSrc = Column(conn, opened.Directory, "trace", "src_ip");
        var traceOrig = Column(conn, opened.Directory, "trace", "orig_ip");

        // 10.0.1.5 is drop.src_ip[0], connect.src_ip[0] and trace.src_ip[*]: one anonymized value everywhere.
        Assert.NotEqual("10.0.1.5", dropSrc[0]);
        Assert.Equal(dropSrc[0], connectSrc[0]);
        Assert.All(traceSrc, v => Assert.Equal(dropSrc[0], v));
        Assert.Null(traceOrig[1]);
        Assert.NotNull(traceOrig[0]);

        // Prefixes: 10.0.1.5 and 10.0.1.77 share 25 leading bits, 10.0.2.9 shares 22 with them.
        Assert.Equal(25, CommonPrefix(dropSrc[0]!, dropSrc[1]!));
        Assert.Equal(CommonPrefix(IPAddress.Parse("10.0.1.5"), IPAddress.Parse("10.0.2.9")), CommonPrefix(dropSrc[0]!, dropDst[0]!));
        Assert.Equal(CommonPrefix(IPAddress.Parse("fd00::1:5"), IPAddress.Parse("fd00::2:9")), CommonPrefix(dropSrc[2]!, dropDst[2]!));
        Assert.Equal(CommonPrefix(IPAddress.Parse("10.0.1.5"), IPAddress.Parse("203.0.113.7")), CommonPrefix(connectSrc[0]!, connectDst[0]!));

        // Snapshot tables are anonymized with the same key; labels are not addresses.
        Assert.Equal([dropSrc[0], dropDst[0]], Column(conn, opened.Directory, "endpoints", "ip"));
        Assert.Equal([traceOrig[0], traceOrig[0]], Column(conn, opened.Directory, "services", "frontend_ip"));
        Assert.Equal([dropSrc[0], dropSrc[1]], Column(conn, opened.Directory, "services", "backend_ip"));
        Assert.Equal(["k8s:app=db"], Column(conn, opened.Directory, "identities", "labels"));

        // The manifest's exclude CIDR 10.0.0.0/16 is anonymized with the same key: a CIDR question still works.
        var cidr = (string)opened.Report.Manifest["config"]!["exclude_cidrs"]![0]!;
        Assert.NotEqual("10.0.0.0/16", cidr);
        Assert.EndsWith("/16", cidr, StringComparison.Ordinal);
        using var cmd = conn.CreateCommand();
        cmd.CommandText = $"SELECT count(*) FROM read_parquet('{opened.Directory}/drop/*/*.parquet') WHERE ip_version = 4 AND src_ip::INET <<= '{cidr}'::INET";
        try
        {
            Assert.Equal(2L, Convert.ToInt64(cmd.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture));
        }
        catch (DuckDBException)
        {
            // No inet extension offline: check containment by prefix here instead.
            var net = IPAddress.Parse(cidr.Split('/')[0]);
            Assert.All(dropSrc.Take(2), v => Assert.True(CommonPrefix(IPAddress.Parse(v!), net) >= 16));
        }
    }

    [Fact]
    public void Bundle_RecordingPathWithGlobCharacters_RedactsTheRightFiles()
    {
        using var rec = new TestRecording("fx-test-rec[1]*-")
            .Segment("exec", TestRecording.Row(("arguments", $"--password={Secrets[0]}")))
            .Seal();
        using var s = new Scratch();
        var file = s.PathOf("glob.fxb");
        BundleWriter.Create(rec.Dir, file, Redact);
        using var opened = BundleReader.Open(file, parent: s.Dir);
        using var conn = new DuckDBConnection("DataSource=:memory:");
        conn.Open();
        Assert.Equal(["--password=*****"], Column(conn, opened.Directory, "exec", "arguments"));
    }

    [Fact]
    public void Bundle_OfRedactedRecording_KeepsEarlierRedaction()
    {
        using var rec = WithSecrets();
        using var s = new Scratch();
        var first = s.PathOf("first.fxb");
        BundleWriter.Create(rec.Dir, first, new BundleOptions { DropEnv = true });
        using var opened = BundleReader.Open(first, parent: s.Dir);
        var second = s.PathOf("second.fxb");
        BundleWriter.Create(opened.Directory, second, new BundleOptions { Exclude = ["trace"] });
        var red = BundleReader.Verify(second).Manifest["redaction"]!;
        Assert.Equal("trace", (string?)red["excluded_tables"]![0]);
        Assert.NotNull(red["earlier"]!["drop_env"]);
        // Bundling without options keeps the redaction object as it is.
        var third = s.PathOf("third.fxb");
        BundleWriter.Create(opened.Directory, third, new BundleOptions());
        Assert.NotNull(BundleReader.Verify(third).Manifest["redaction"]!["drop_env"]);
    }

    [Fact]
    public void CryptoPan_SameKey_IsDeterministicAndDifferentKeysDiffer()
    {
        var key = Enumerable.Range(0, 32).Select(i => (byte)i).ToArray();
        using var a = new CryptoPan(key);
        using var b = new CryptoPan(key);
        using var c = CryptoPan.WithRandomKey();
        var ip = IPAddress.Parse("192.0.2.1");
        Assert.Equal(a.Anonymize(ip), b.Anonymize(ip));
        Assert.NotEqual(a.Anonymize(ip), c.Anonymize(ip));
        // Prefix preservation over many pairs.
        var rnd = new Random(7);
        for (var i = 0; i < 200; i++)
        {
            var x = new IPAddress(BitConverter.GetBytes(rnd.Next()));
            var y = new IPAddress(BitConverter.GetBytes(rnd.Next()));
            Assert.Equal(CommonPrefix(x, y), CommonPrefix(a.Anonymize(x), a.Anonymize(y)));
        }
        Assert.EndsWith("/9", a.AnonymizeText("10.128.0.0/9"), StringComparison.Ordinal);
        var net = IPAddress.Parse(a.AnonymizeText("10.128.0.0/9").Split('/')[0]);
        Assert.True(CommonPrefix(net, a.Anonymize(IPAddress.Parse("10.200.1.1"))) >= 9);
        Assert.Equal("not-an-ip", a.AnonymizeText("not-an-ip"));
        Assert.Equal("10", a.AnonymizeText("10"));
        Assert.Equal(a.AnonymizeText("10.96.0.10") + ":53", a.AnonymizeText("10.96.0.10:53"));
        Assert.Equal("[" + a.AnonymizeText("fd00::10") + "]:443", a.AnonymizeText("[fd00::10]:443"));
        Assert.Equal("SYN, ACK", a.AnonymizeText("SYN, ACK"));
        var list = a.AnonymizeText("10.0.0.1, 10.0.0.2").Split(", ");
        Assert.Equal([a.AnonymizeText("10.0.0.1"), a.AnonymizeText("10.0.0.2")], list);
        Assert.True(Redactor.IpColumn("src_ip") && Redactor.IpColumn("ipv4") && Redactor.IpColumn("to_cidr") && Redactor.IpColumn("backend_addrs"));
        Assert.False(Redactor.IpColumn("binary") || Redactor.IpColumn("tcp_flags") || Redactor.IpColumn("description"));
    }

    [Fact]
    public void RedactArguments_TetragonSemantics_MasksGroupsOrWholeMatch()
    {
        var patterns = new[] { new System.Text.RegularExpressions.Regex(@"(?:--password|-p)(?:\s+|=)(\S*)"), new System.Text.RegularExpressions.Regex("secret[0-9]+") };
        Assert.Equal("--password ***** -x *****", Redactor.RedactArguments("--password abc -x secret42", patterns, false));
        Assert.Equal("A=***** b c=***** --opt=x", Redactor.RedactArguments("A=1 b c=d --opt=x", [], true));
        Assert.Null(Redactor.RedactArguments(null, patterns, true));
    }

    private static List<string> AllText(DuckDBConnection conn, string dir)
    {
        var values = new List<string>();
        foreach (var file in Directory.EnumerateFiles(dir, "*.parquet", SearchOption.AllDirectories))
        {
            var cols = new List<string>();
            using (var d = conn.CreateCommand())
            {
                d.CommandText = $"DESCRIBE SELECT * FROM read_parquet('{file}', hive_partitioning = false)";
                using var r = d.ExecuteReader();
                while (r.Read())
                {
                    cols.Add(r.GetString(0));
                }
            }
            using var cmd = conn.CreateCommand();
            cmd.CommandText = $"SELECT {string.Join(", ", cols.Select(c => $"CAST(\"{c}\" AS VARCHAR)"))} FROM read_parquet('{file}', hive_partitioning = false)";
            using var rr = cmd.ExecuteReader();
            while (rr.Read())
            {
                for (var i = 0; i < rr.FieldCount; i++)
                {
                    if (!rr.IsDBNull(i))
                    {
                        values.Add(rr.GetString(i));
                    }
                }
            }
        }
        foreach (var f in new[] { "manifest.json", "custody.jsonl" })
        {
            values.Add(File.ReadAllText(Path.Combine(dir, f)));
        }
        return values;
    }

    private static List<string?> Column(DuckDBConnection conn, string dir, string table, string column)
    {
        using var cmd = conn.CreateCommand();
        cmd.CommandText = $"SELECT \"{column}\" FROM read_parquet('{dir}/{table}/*/*.parquet', hive_partitioning = false, filename = true, file_row_number = true) ORDER BY filename, file_row_number";
        using var r = cmd.ExecuteReader();
        var list = new List<string?>();
        while (r.Read())
        {
            list.Add(r.IsDBNull(0) ? null : r.GetString(0));
        }
        return list;
    }

    private static int CommonPrefix(string a, string b) => CommonPrefix(IPAddress.Parse(a), IPAddress.Parse(b));

    private static int CommonPrefix(IPAddress a, IPAddress b)
    {
        var x = a.GetAddressBytes();
        var y = b.GetAddressBytes();
        Assert.Equal(x.Length, y.Length);
        for (var i = 0; i < x.Length * 8; i++)
        {
            if (((x[i / 8] >> (7 - i % 8)) & 1) != ((y[i / 8] >> (7 - i % 8)) & 1))
            {
                return i;
            }
        }
        return x.Length * 8;
    }

    private static bool Contains(byte[] haystack, string needle) =>
        haystack.AsSpan().IndexOf(Encoding.UTF8.GetBytes(needle)) >= 0;
}
