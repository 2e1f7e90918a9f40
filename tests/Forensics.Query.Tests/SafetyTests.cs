using Forensics.Format;
using Forensics.Query.Recording;

namespace Forensics.Query.Tests;

/// <summary>Opening a recording someone attached to a ticket cannot read or write anything outside it.</summary>
public sealed class SafetyTests : IDisposable
{
    private readonly TestRecording _rec = Lab.Build();
    private readonly string _outside = Path.Combine(Path.GetTempPath(), "fxq-outside-" + Guid.NewGuid().ToString("N")[..8]);

    public SafetyTests()
    {
        Directory.CreateDirectory(_outside);
        File.WriteAllText(Path.Combine(_outside, "secret.csv"), "user,password\nroot,hunter2\n");
    }

    public void Dispose()
    {
        _rec.Dispose();
        Directory.Delete(_outside, true);
    }

    private string Seg => Path.Combine(_rec.Root, "drop/node=node-a/seg-000001.parquet");

    public static TheoryData<string> Escapes() =>
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_csv_auto('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_blob('/etc/passwd')",
        "SELECT * FROM read_json('/etc/passwd')",
        "SELECT * FROM read_json_auto('/etc/passwd')",
        "SELECT * FROM read_ndjson_objects('/etc/passwd')",
        "SELECT * FROM read_parquet('/etc/passwd')",
        "SELECT * FROM parquet_metadata('/etc/passwd')",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM read_text('REC/../../../../etc/passwd')",
        "SELECT * FROM read_text('SEG/../../../../../../../etc/passwd')",
        "SELECT * FROM read_csv('OUT/secret.csv')",
        "SELECT * FROM query_table('read_text') ",
        "COPY (SELECT 1) TO 'OUT/out.csv'",
        "COPY (SELECT * FROM \"drop\") TO 'REC/drop/node=node-a/new.parquet' (FORMAT parquet)",
        "COPY (SELECT 1 AS a) TO 'SEG' (FORMAT csv, USE_TMP_FILE false)",
        "COPY (SELECT 1 AS a) TO 'SEG' (FORMAT parquet, USE_TMP_FILE false)",
        "SELECT 1; COPY (SELECT 1 AS a) TO 'SEG' (FORMAT csv, USE_TMP_FILE false)",
        "EXPLAIN ANALYZE COPY (SELECT 1 AS a) TO 'SEG' (FORMAT csv, USE_TMP_FILE false)",
        "EXPORT DATABASE 'OUT/export'",
        "ATTACH 'OUT/evil.db' AS evil",
        "ATTACH 'REC/evil.db' AS evil",
        "ATTACH 'SEG' AS seg",
        "ATTACH '/etc/passwd' AS p",
        "INSTALL httpfs",
        "LOAD httpfs",
        "LOAD 'OUT/evil.duckdb_extension'",
        "SET enable_external_access = true",
        "RESET enable_external_access",
        "SET lock_configuration = false",
        "SET allowed_directories = ['/']",
        "SET allowed_paths = ['/etc/passwd']",
        "SET autoload_known_extensions = true",
        "SET memory_limit = '100GB'",
        "CALL enable_logging()",
        "PRAGMA enable_profiling",
        "CREATE TABLE t AS SELECT 1",
        "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
    ];

    private string Expand(string sql) => sql.Replace("REC/", _rec.Root + "/", StringComparison.Ordinal)
        .Replace("SEG", Seg, StringComparison.Ordinal).Replace("OUT/", _outside + "/", StringComparison.Ordinal);

    [Theory]
    [MemberData(nameof(Escapes))]
    public void Query_EscapeAttempt_FailsWithOneLineAndRecordingUnchanged(string attempt)
    {
        var before = _rec.HashAll();
        var outsideBefore = Directory.GetFileSystemEntries(_outside).Order(StringComparer.Ordinal).ToList();
        using (var s = QuerySession.Open([_rec.Root]))
        {
            var e = Assert.Throws<QueryException>(() => s.Execute(Expand(attempt)));
            Assert.DoesNotContain('\n', e.Message);
            Assert.DoesNotContain("hunter2", e.Message, StringComparison.Ordinal);
            Assert.DoesNotContain("root:x:", e.Message, StringComparison.Ordinal);
            // the lock-down still holds afterwards
            Assert.Equal(false, s.Execute("SELECT current_setting('enable_external_access')").Rows.Single()[0]);
            Assert.Equal(true, s.Execute("SELECT current_setting('lock_configuration')").Rows.Single()[0]);
            Assert.Equal(3L, s.Execute("SELECT count(*) FROM \"drop\"").Rows.Single()[0]);
        }
        Assert.Equal(before, _rec.HashAll());
        Assert.Equal(outsideBefore, Directory.GetFileSystemEntries(_outside).Order(StringComparer.Ordinal).ToList());
    }

    [Fact]
    public void Query_EscapeThroughTheCli_OneLineErrorAndExitCode()
    {
        var before = _rec.HashAll();
        var r = CliRunner.Run("query", _rec.Root, "SELECT * FROM read_text('/etc/passwd')");
        Assert.Equal(1, r.ExitCode);
        Assert.Equal("", r.Stdout);
        var lines = r.Stderr.TrimEnd('\n').Split('\n');
        Assert.Single(lines);
        Assert.StartsWith("error: ", lines[0], StringComparison.Ordinal);
        Assert.DoesNotContain("root:", r.Stderr, StringComparison.Ordinal);
        var copy = CliRunner.Run("query", _rec.Root, $"COPY (SELECT 1 AS a) TO '{Seg}' (FORMAT csv, USE_TMP_FILE false)");
        Assert.Equal(1, copy.ExitCode);
        Assert.Single(copy.Stderr.TrimEnd('\n').Split('\n'));
        Assert.Equal(before, _rec.HashAll());
    }

    [Fact]
    public void Open_SymlinkListedInManifest_Refused()
    {
        // A "segment" that is a symbolic link to /etc/passwd, listed with its (fake) hash.
        var link = Path.Combine(_rec.Root, "drop/node=node-a/seg-000002.parquet");
        File.CreateSymbolicLink(link, "/etc/passwd");
        AddToManifest("drop", "drop/node=node-a/seg-000002.parquet");
        var e = Assert.Throws<RecordingException>(() => QuerySession.Open([_rec.Root]));
        Assert.Contains("symbolic link", e.Message, StringComparison.Ordinal);
        var cli = CliRunner.Run("query", _rec.Root, "SELECT 1");
        Assert.Equal(7, cli.ExitCode);
        Assert.Single(cli.Stderr.TrimEnd('\n').Split('\n'));
    }

    [Fact]
    public void Open_SymlinkedTableFolder_Refused()
    {
        var real = Path.Combine(_outside, "node=node-a");
        Directory.Move(Path.Combine(_rec.Root, "exec/node=node-a"), real);
        Directory.CreateSymbolicLink(Path.Combine(_rec.Root, "exec/node=node-a"), real);
        var e = Assert.Throws<RecordingException>(() => QuerySession.Open([_rec.Root]));
        Assert.Contains("symbolic link", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_SymlinkPlantedButNotListed_IgnoredAndNotRead()
    {
        File.CreateSymbolicLink(Path.Combine(_rec.Root, "drop/node=node-a/seg-000003.parquet"), Path.Combine(_outside, "secret.csv"));
        using var s = QuerySession.Open([_rec.Root]);
        Assert.Equal(3L, s.Execute("SELECT count(*) FROM \"drop\"").Rows.Single()[0]);
        Assert.Throws<QueryException>(() => s.Execute($"SELECT * FROM read_csv('{_rec.Root}/drop/node=node-a/seg-000003.parquet')"));
    }

    [Theory]
    [InlineData("drop/node=node-a/../../../etc/passwd")]
    [InlineData("/etc/passwd")]
    [InlineData("drop/./node=node-a/seg-000001.parquet")]
    [InlineData("drop//seg.parquet")]
    [InlineData("drop\\node=node-a\\seg-000001.parquet")]
    public void Open_ManifestPathLeavingTheRecording_Refused(string path)
    {
        AddToManifest("drop", path);
        var e = Assert.Throws<RecordingException>(() => QuerySession.Open([_rec.Root]));
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Open_FifoListedInManifest_Refused()
    {
        var fifo = Path.Combine(_rec.Root, "drop/node=node-a/seg-000004.parquet");
        using (var p = System.Diagnostics.Process.Start("mkfifo", fifo))
            p.WaitForExit(10_000);
        AddToManifest("drop", "drop/node=node-a/seg-000004.parquet");
        var e = Assert.Throws<RecordingException>(() => QuerySession.Open([_rec.Root]));
        Assert.Contains("not a regular", e.Message, StringComparison.Ordinal);
    }

    private void AddToManifest(string table, string path)
    {
        var manifestPath = Path.Combine(_rec.Root, "manifest.json");
        var m = Manifest.Parse(File.ReadAllBytes(manifestPath), manifestPath);
        m.Tables[table].Files.Add(new ManifestFile { Path = path, Rows = 1, Bytes = 100, Sha256 = new string('0', 64) });
        File.WriteAllBytes(manifestPath, m.ToJson());
    }
}

public sealed class CorruptionTests
{
    [Fact]
    public void Query_CorruptSegment_OneLineErrorNotACrash()
    {
        using var rec = Lab.Build();
        var seg = Path.Combine(rec.Root, "drop/node=node-a/seg-000001.parquet");
        var bytes = File.ReadAllBytes(seg);
        Array.Fill(bytes, (byte)0xff, 4, bytes.Length - 8);
        File.WriteAllBytes(seg, bytes);
        var r = CliRunner.Run("query", rec.Root, "SELECT count(*) FROM \"drop\"");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Matches(@"^error: [^\n]+\n$", r.Stderr);
        var snap = Path.Combine(rec.Root, "endpoints/node=node-a/seg-000001.parquet");
        File.WriteAllBytes(snap, new byte[64]);
        // The files are checked against the manifest before DuckDB reads them: exit 6, tampered.
        var open = CliRunner.Run("drops", rec.Root);
        Assert.Equal(6, open.ExitCode);
        Assert.Matches(@"^error: [^\n]+ 2 files differ from the manifest \(tampered or corrupted\)[^\n]+\n$", open.Stderr);
        // Without that check, DuckDB meets the damage: still one line, exit 7, and a note that nothing was checked.
        var unchecked_ = CliRunner.Run("drops", rec.Root, "--no-verify");
        Assert.Equal(7, unchecked_.ExitCode);
        Assert.Matches(@"^note: --no-verify: [^\n]+\nerror: cannot open the recording: [^\n]+\n$", unchecked_.Stderr);
    }
}
