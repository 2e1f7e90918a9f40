using System.Security.Cryptography;
using System.Text;
using DuckDB.NET.Data;
using Forensics.Query.Bundles;

namespace Forensics.Query.Tests.Bundles;

[Collection("bundles")]
public sealed class BundleTests
{
    [Fact]
    public void Bundle_IntactRecording_VerifiesAndExtractsIdenticalFiles()
    {
        using var rec = TestRecording.Standard();
        using var s = new Scratch();
        var file = s.PathOf("incident.fxb");
        var result = BundleWriter.Create(rec.Dir, file, new BundleOptions());

        var report = BundleReader.Verify(file);
        Assert.Equal(result.Root, report.Root);
        Assert.Equal(rec.RecordingId, report.Index.RecordingId);
        Assert.Equal(2 + 5, report.Index.Entries.Count); // manifest, custody, 5 Parquet files
        Assert.Null(report.Signature);

        using var opened = BundleReader.Open(file, parent: s.Dir);
        if (!OperatingSystem.IsWindows())
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(opened.Directory));
        }
        foreach (var e in report.Index.Entries.Skip(2))
        {
            Assert.Equal(File.ReadAllBytes(Path.Combine(rec.Dir, e.Path)), File.ReadAllBytes(Path.Combine(opened.Directory, e.Path)));
        }
        using var conn = new DuckDBConnection("DataSource=:memory:");
        conn.Open();
        using var cmd = conn.CreateCommand();
        cmd.CommandText = $"SELECT count(*) FROM read_parquet('{opened.Directory}/exec/*/*.parquet', hive_partitioning = true) WHERE node = 'node-a'";
        Assert.Equal(3L, Convert.ToInt64(cmd.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture));
        var dir = opened.Directory;
        opened.Dispose();
        Assert.False(Directory.Exists(dir));
    }

    [Fact]
    public void OpenVerified_Bundle_ReturnsFolderThatIsDeletedOnDispose()
    {
        using var rec = TestRecording.Standard();
        using var s = new Scratch();
        var file = s.PathOf("b.fxb");
        BundleWriter.Create(rec.Dir, file, new BundleOptions());
        Assert.True(BundleReader.IsBundle(file));
        Assert.False(BundleReader.IsBundle(Path.Combine(rec.Dir, "manifest.json")));
        string dir;
        using (BundleReader.OpenVerified(file, out dir))
        {
            Assert.True(File.Exists(Path.Combine(dir, "manifest.json")));
            Assert.True(Directory.Exists(Path.Combine(dir, "drop", "node=node-a")));
        }
        Assert.False(Directory.Exists(dir));
    }

    [Fact]
    public void OpenRecording_DirectoryOrBundle_GivesARecordingFolder()
    {
        using var rec = TestRecording.Standard();
        using var s = new Scratch();
        var file = s.PathOf("b.fxb");
        BundleWriter.Create(rec.Dir, file, new BundleOptions());
        using (BundleReader.OpenRecording(rec.Dir, out var same))
        {
            Assert.Equal(rec.Dir, same);
        }
        Assert.True(Directory.Exists(rec.Dir));
        string extracted;
        using (BundleReader.OpenRecording(file, out extracted))
        {
            Assert.NotEqual(rec.Dir, extracted);
            Assert.Equal(File.ReadAllBytes(Path.Combine(rec.Dir, "loss/node=node-a/seg-000001.parquet")),
                File.ReadAllBytes(Path.Combine(extracted, "loss/node=node-a/seg-000001.parquet")));
        }
        Assert.False(Directory.Exists(extracted));
        File.WriteAllText(s.PathOf("not-a-bundle.txt"), "hello");
        Assert.Equal(BundleError.Truncated, Assert.Throws<BundleException>(() => BundleReader.OpenRecording(s.PathOf("not-a-bundle.txt"), out _)).Error);
    }

    [Fact]
    public void Bundle_IsPlainTarThatTarLists()
    {
        using var rec = TestRecording.Standard();
        using var s = new Scratch();
        var file = s.PathOf("b.fxb");
        BundleWriter.Create(rec.Dir, file, new BundleOptions());
        var (rc, stdout, err) = Scratch.Run("tar", ["-tf", file], null);
        Assert.True(rc == 0, err);
        var names = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(["index.json", "index.sha256", "manifest.json", "custody.jsonl"], names[..4]);
        var (rc2, root, _) = Scratch.Run("tar", ["-xOf", file, "index.sha256"], null);
        var (_, index, _) = Scratch.Run("tar", ["-xOf", file, "index.json"], null);
        Assert.Equal(0, rc2);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(index))) + "\n", root);
    }

    [Fact]
    public void Bundle_RecordingFileNotMatchingItsManifest_IsRefused()
    {
        using var rec = TestRecording.Standard();
        using var s = new Scratch();
        var seg = Path.Combine(rec.Dir, "drop", "node=node-a", "seg-000001.parquet");
        var bytes = File.ReadAllBytes(seg);
        bytes[bytes.Length / 2] ^= 0x20;
        File.WriteAllBytes(seg, bytes);
        var e = Assert.Throws<Forensics.Query.Recording.RecordingTamperedException>(() => BundleWriter.Create(rec.Dir, s.PathOf("b.fxb"), new BundleOptions()));
        Assert.Contains("drop/node=node-a/seg-000001.parquet", e.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(s.PathOf("b.fxb")));
    }

    [Fact]
    public void AppendNote_TwoNotes_ChainsEntriesAndChangesRoot()
    {
        using var rec = TestRecording.Standard();
        using var s = new Scratch();
        var file = s.PathOf("b.fxb");
        var first = BundleWriter.Create(rec.Dir, file, new BundleOptions());
        var second = BundleWriter.AppendNote(file, "handed to network team", null);
        var third = BundleWriter.AppendNote(file, "closed: INC-1234", null);

        var r = BundleReader.Verify(file);
        Assert.Equal(third.Root, r.Root);
        Assert.Equal(3, r.Custody.Count);
        Assert.Equal(["bundle", "note", "note"], r.Custody.Select(c => c.Action));
        Assert.Equal("handed to network team", r.Custody[1].Note);
        Assert.Equal(first.Root, r.Custody[1].PreviousRoot);
        Assert.Equal(second.Root, r.Custody[2].PreviousRoot);
        Assert.Equal(rec.RecordingId, r.Custody[0].RecordingId);
        Assert.Equal(Path.GetFullPath(rec.Dir), r.Custody[0].RecordingPath);
        Assert.Equal(Environment.MachineName, r.Custody[0].Host);
        Assert.Contains(Environment.UserName, r.Custody[0].User, StringComparison.Ordinal);
        Assert.Equal(CustodyEntry.Genesis, r.Custody[0].Prev);
        var lines = Encoding.UTF8.GetString(r.CustodyBytes).TrimEnd('\n').Split('\n');
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(lines[1]))), r.Custody[2].Prev);
    }

    [Fact]
    public void Cli_BundleThenVerify_ExitsZeroAndPrintsRoot()
    {
        using var rec = TestRecording.Standard();
        using var s = new Scratch();
        var file = s.PathOf("incident-1234.fxb");
        var (rc, stdout, err) = Scratch.Forensics("bundle", rec.Dir, "-o", file);
        Assert.True(rc == 0, err);
        var root = BundleReader.Verify(file).Root;
        Assert.Contains(root, stdout, StringComparison.Ordinal);

        (rc, stdout, err) = Scratch.Forensics("verify", file, "--root", root);
        Assert.True(rc == 0, err);
        Assert.StartsWith("ok: ", stdout, StringComparison.Ordinal);
        Assert.Contains("custody 1:", stdout, StringComparison.Ordinal);

        (rc, _, err) = Scratch.Forensics("verify", file, "--root", new string('a', 64));
        Assert.Equal((int)BundleError.RootMismatch, rc);
        Assert.Single(err.TrimEnd('\n').Split('\n'));
        Assert.StartsWith("error: root hash mismatch", err, StringComparison.Ordinal);

        (rc, _, err) = Scratch.Forensics("bundle", file, "--append-note", "looked at by bob");
        Assert.True(rc == 0, err);
        (rc, stdout, _) = Scratch.Forensics("verify", file);
        Assert.Equal(0, rc);
        Assert.Contains("note \"looked at by bob\"", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void Cli_VerifyTamperedBundle_ExitsWithClassCodeAndOneLine()
    {
        using var rec = TestRecording.Standard();
        using var s = new Scratch();
        var file = s.PathOf("b.fxb");
        BundleWriter.Create(rec.Dir, file, new BundleOptions());
        var bytes = File.ReadAllBytes(file);
        var seg = RawTar.Split(bytes).First(e => e.Name.StartsWith("exec/", StringComparison.Ordinal));
        bytes[seg.DataOffset + 100] ^= 0x01;
        File.WriteAllBytes(file, bytes);
        var (rc, stdout, err) = Scratch.Forensics("verify", file);
        Assert.Equal((int)BundleError.FileChanged, rc);
        Assert.Equal("", stdout);
        Assert.StartsWith($"error: {seg.Name} changed: ", err, StringComparison.Ordinal);
        Assert.Single(err.TrimEnd('\n').Split('\n'));
    }

    [Fact]
    public void Cli_BundleWithRedactionOptions_VerifiesAndReportsRedaction()
    {
        using var rec = TestRecording.Standard();
        using var s = new Scratch();
        var file = s.PathOf("r.fxb");
        var (rc, _, err) = Scratch.Forensics("bundle", rec.Dir, "-o", file, "--redact-args", "-s", "--redact-args", "-la",
            "--drop-env", "--anonymize-ips", "--exclude", "loss", "--exclude", "connect");
        Assert.True(rc == 0, err);
        var r = BundleReader.Verify(file);
        Assert.Equal(["-s", "-la"], r.Manifest["redaction"]!["redact_args"]!["patterns"]!.AsArray().Select(p => (string)p!));
        Assert.Equal(["loss", "connect"], r.Manifest["redaction"]!["excluded_tables"]!.AsArray().Select(p => (string)p!));
        var (rc2, stdout, _) = Scratch.Forensics("verify", file);
        Assert.Equal(0, rc2);
        var redacted = stdout.Split('\n').Single(l => l.Contains("redacted: ", StringComparison.Ordinal)).Split("redacted: ")[1].Split(", ");
        Assert.Equal(["anonymize_ips", "drop_env", "excluded_tables", "redact_args", "type_changes"], redacted.Order(StringComparer.Ordinal)); // type_changes: the recorder's ns times come back in µs

        (rc, _, err) = Scratch.Forensics("bundle", rec.Dir);
        Assert.Equal(2, rc);
        Assert.StartsWith("error: give the bundle file", err, StringComparison.Ordinal);
        (rc, _, err) = Scratch.Forensics("bundle", rec.Dir, "-o", s.PathOf("x.fxb"), "--redact-args", "(unclosed");
        Assert.Equal(2, rc);
        Assert.False(File.Exists(s.PathOf("x.fxb")));
        (rc, _, _) = Scratch.Forensics("verify", s.PathOf("nonexistent.fxb"));
        Assert.Equal(7, rc);
    }

    [Fact]
    public void Bundle_ExcludeKind_LeavesTableOutAndSaysSo()
    {
        using var rec = TestRecording.Standard();
        using var s = new Scratch();
        var file = s.PathOf("b.fxb");
        BundleWriter.Create(rec.Dir, file, new BundleOptions { Exclude = ["connect"] });
        var r = BundleReader.Verify(file);
        Assert.DoesNotContain(r.Index.Entries, e => e.Path.StartsWith("connect/", StringComparison.Ordinal));
        Assert.Null(r.Manifest["tables"]!["connect"]);
        Assert.Equal("connect", (string?)r.Manifest["redaction"]!["excluded_tables"]![0]);
        Assert.Throws<ArgumentException>(() => BundleWriter.Create(rec.Dir, s.PathOf("c.fxb"), new BundleOptions { Exclude = ["nosuch"] }));
    }
}
