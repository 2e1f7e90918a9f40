using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Forensics.Query.Bundles;
using Forensics.Query.Tests.Bundles;

namespace Forensics.Query.Tests;

/// <summary>
/// Issue 13's tries, as generated corpora through the real command: damaged and hostile recording
/// folders, bundles and SQL. For every case and verb: the documented exit code, exactly one
/// <c>error:</c> line and no stack trace, no hang (a time limit), no abort, peak memory bounded,
/// nothing left in the private TMPDIR, and the recording unchanged.
/// </summary>
[Collection("hostile")]
public sealed class HostileInputTests : IDisposable
{
    private const long MaxRssKb = 1_000_000;
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(90);

    private readonly string _dir = Directory.CreateTempSubdirectory("fx-hostile-").FullName;
    private readonly string _tmp;
    private readonly TestRecording _base = Lab.Build();

    public HostileInputTests()
    {
        _tmp = Path.Combine(_dir, "tmp");
        Directory.CreateDirectory(_tmp);
    }

    public void Dispose()
    {
        _base.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    // ---- running the command ---------------------------------------------------------------

    internal sealed record Outcome(int ExitCode, string Stdout, string Stderr, long PeakRssKb, TimeSpan Elapsed);

    /// <summary>Runs forensics with TMPDIR set to a private folder, sampling its peak RSS, killing it at the limit.</summary>
    internal static Outcome Run(string tmp, TimeSpan limit, params string[] args)
    {
        var psi = new ProcessStartInfo(CliRunner.Forensics) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        psi.Environment["TMPDIR"] = tmp;
        psi.Environment.Remove("FORENSICS_DEBUG");
        var sw = Stopwatch.StartNew();
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        long peak = 0;
        while (!p.WaitForExit(20))
        {
            peak = Math.Max(peak, PeakRss(p.Id));
            if (sw.Elapsed > limit)
            {
                p.Kill(entireProcessTree: true);
                p.WaitForExit();
                throw new Xunit.Sdk.XunitException($"forensics {string.Join(' ', args)}: still running after {limit.TotalSeconds} s (a hang)");
            }
        }
        return new Outcome(p.ExitCode, stdout.Result, stderr.Result, peak, sw.Elapsed);
    }

    private static long PeakRss(int pid)
    {
        try
        {
            var line = File.ReadLines($"/proc/{pid}/status").FirstOrDefault(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
            return line is null ? 0 : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (IOException)
        {
            return 0;
        }
    }

    /// <summary>The checks every hostile case shares; returns a complaint or null.</summary>
    internal static string? Judge(Outcome o, int[] expected, string tmp, string what)
    {
        var problems = new List<string>();
        if (!expected.Contains(o.ExitCode))
            problems.Add($"exit {o.ExitCode}, expected {string.Join(" or ", expected)}");
        if (o.ExitCode is 134 or 137 or 139)
            problems.Add("aborted");
        if (o.Stderr.Contains("   at ", StringComparison.Ordinal) || o.Stderr.Contains("Unhandled exception", StringComparison.Ordinal))
            problems.Add("a stack trace");
        if (o.ExitCode != 0 && !System.Text.RegularExpressions.Regex.IsMatch(o.Stderr, "^error: [^\n]+\n$"))
            problems.Add($"stderr is not one error line: {Trim(o.Stderr)}");
        if (o.PeakRssKb > MaxRssKb)
            problems.Add($"peak RSS {o.PeakRssKb} kB");
        if (Leftovers(tmp).FirstOrDefault() is { } left)
            problems.Add($"left {left} behind");
        return problems.Count == 0 ? null : $"{what}: {string.Join("; ", problems)} (stderr: {Trim(o.Stderr)})";
    }

    /// <summary>
    /// What is left in a TMPDIR, except the .NET runtime's own diagnostic sockets
    /// (clr-debug-pipe-PID-*, dotnet-diagnostic-PID-*), which any .NET process killed by a signal leaves.
    /// </summary>
    internal static IEnumerable<string> Leftovers(string tmp) =>
        Directory.EnumerateFileSystemEntries(tmp).Where(f => !Path.GetFileName(f).StartsWith("clr-debug-pipe-", StringComparison.Ordinal)
            && !Path.GetFileName(f).StartsWith("dotnet-diagnostic-", StringComparison.Ordinal));

    private static string Trim(string s) => s.Length > 300 ? s[..300] + "..." : s;

    private static string Listing(string dir) =>
        string.Join("\n", Directory.EnumerateFileSystemEntries(dir, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal)
            .Select(f => $"{f} {(File.Exists(f) && new FileInfo(f).LinkTarget is null && RegularFileOrNull(f) ? Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f))) : "-")}"));

    private static bool RegularFileOrNull(string f) => Forensics.Query.Recording.RegularFile.Kind(f) == "a regular file";

    // ---- a hostile recording folder ------------------------------------------------------------

    private string Copy(string name)
    {
        var to = Path.Combine(_dir, name);
        foreach (var d in Directory.GetDirectories(_base.Root, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(_base.Root, d)));
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(_base.Root, "*", SearchOption.AllDirectories))
            File.Copy(f, Path.Combine(to, Path.GetRelativePath(_base.Root, f)));
        return to;
    }

    private static JsonObject Manifest(string rec) => (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(rec, "manifest.json")))!;

    private static void Save(string rec, JsonNode m) => File.WriteAllText(Path.Combine(rec, "manifest.json"), m.ToJsonString());

    private static JsonArray FilesOf(JsonObject m, string table) => (JsonArray)m["tables"]![table]!["files"]!;

    /// <summary>Each hostile recording, the verbs it goes through and the exit code each must give.</summary>
    private IEnumerable<(string Name, string Path, (string[] Args, int Code)[] Verbs)> Recordings()
    {
        (string[], int)[] All(int code) =>
            [(["info"], code), (["query", "SELECT 1"], code), (["bundle", "-o", BundleOut], code)];
        (string[], int)[] Readers(int code) =>
            [(["info"], code), (["query", "SELECT 1"], code)];

        var fifo = Copy("fifo-manifest");
        File.Delete(Path.Combine(fifo, "manifest.json"));
        Mkfifo(Path.Combine(fifo, "manifest.json"));
        yield return ("manifest.json is a FIFO", fifo, All(7));

        var link = Copy("link-manifest");
        File.Delete(Path.Combine(link, "manifest.json"));
        File.CreateSymbolicLink(Path.Combine(link, "manifest.json"), "/dev/zero");
        yield return ("manifest.json is a link to /dev/zero", link, All(7));

        var big = Copy("big-manifest");
        using (var fs = File.OpenWrite(Path.Combine(big, "manifest.json")))
            fs.SetLength(65L << 20); // sparse: costs no disk
        yield return ("a 65 MiB manifest", big, All(7));

        var twice = Copy("listed-twice");
        var m = Manifest(twice);
        FilesOf(m, "drop").Add(FilesOf(m, "drop")[0]!.DeepClone());
        Save(twice, m);
        yield return ("a file listed twice", twice, All(7));

        var many = Copy("listed-200k-times");
        m = Manifest(many);
        var one = FilesOf(m, "drop")[0]!.ToJsonString();
        var sb = new StringBuilder(m.ToJsonString());
        var files = FilesOf(m, "drop").ToJsonString();
        sb.Replace(files, "[" + string.Join(",", Enumerable.Repeat(one, 200_001)) + "]");
        File.WriteAllText(Path.Combine(many, "manifest.json"), sb.ToString());
        yield return ("one file listed 200,001 times (30 MB manifest)", many, All(7));

        var distinct = Copy("200k-distinct-files");
        m = Manifest(distinct);
        var arr = new JsonArray();
        for (var i = 0; i < 200_001; i++)
            arr.Add(new JsonObject { ["path"] = $"drop/node=node-a/seg-{i:D7}.parquet", ["rows"] = 1, ["bytes"] = 100, ["sha256"] = new string('0', 64) });
        m["tables"]!["drop"]!["files"] = arr;
        Save(distinct, m);
        yield return ("200,001 distinct files listed", distinct, [(["info"], 7), (["query", "SELECT 1"], 7)]);

        foreach (var (name, mutate) in new (string, Action<JsonObject>)[]
        {
            ("\"tables\": null", x => x["tables"] = null),
            ("rows 2^63", x => x["tables"]!["drop"]!["rows"] = JsonValue.Create(9223372036854775808UL)),
            ("a negative row count", x => FilesOf(x, "drop")[0]!["rows"] = -1),
            ("schema version 999", x => x["tables"]!["drop"]!["schema_version"] = 999),
            ("a path out of the recording", x => FilesOf(x, "drop")[0]!["path"] = "../../../../etc/passwd"),
            ("a table named ../x", x => x["tables"]!["../x"] = x["tables"]!["drop"]!.DeepClone()),
            ("a file entry that is null", x => FilesOf(x, "drop").Add(null)),
            ("manifest version 99", x => x["manifest_version"] = 99),
        })
        {
            var r = Copy("m-" + Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(name)))[..8]);
            m = Manifest(r);
            mutate(m);
            Save(r, m);
            yield return (name, r, name is "rows 2^63" or "schema version 999" or "\"tables\": null" ? All(7) : Readers(7));
        }

        var nested = Copy("nested-json");
        File.WriteAllText(Path.Combine(nested, "manifest.json"), new string('[', 100_000) + new string(']', 100_000));
        yield return ("JSON nested 100,000 deep", nested, Readers(7));

        var latin = Copy("not-utf8");
        File.WriteAllBytes(Path.Combine(latin, "manifest.json"), [0x7b, 0xff, 0xfe, 0x7d]);
        yield return ("a manifest that is not UTF-8", latin, Readers(7));

        var listedFifo = Copy("listed-fifo");
        var seg = Path.Combine(listedFifo, "drop", "node=node-a", "seg-000001.parquet");
        File.Delete(seg);
        Mkfifo(seg);
        yield return ("a listed segment is a FIFO", listedFifo, Readers(7));

        var listedLink = Copy("listed-link");
        seg = Path.Combine(listedLink, "drop", "node=node-a", "seg-000001.parquet");
        File.Delete(seg);
        File.CreateSymbolicLink(seg, "/etc/passwd");
        yield return ("a listed segment is a link to /etc/passwd", listedLink, All(7));

        var tampered = Copy("tampered");
        seg = Path.Combine(tampered, "drop", "node=node-a", "seg-000001.parquet");
        var bytes = File.ReadAllBytes(seg);
        bytes[bytes.Length / 2] ^= 1;
        File.WriteAllBytes(seg, bytes);
        yield return ("a segment differs from its hash", tampered, All(6));

        var garbage = Copy("garbage-with-hash");
        seg = Path.Combine(garbage, "drop", "node=node-a", "seg-000001.parquet");
        var junk = RandomNumberGenerator.GetBytes(4096);
        File.WriteAllBytes(seg, junk);
        m = Manifest(garbage);
        FilesOf(m, "drop")[0]!["bytes"] = junk.Length;
        FilesOf(m, "drop")[0]!["sha256"] = Convert.ToHexStringLower(SHA256.HashData(junk));
        Save(garbage, m);
        // The hashes match, so info and bundle have nothing to refuse; DuckDB meets the damage.
        yield return ("a segment of random bytes whose hash the manifest states", garbage,
            [(["info"], 0), (["query", "SELECT 1"], 7), (["drops"], 7)]);

        var empty = Path.Combine(_dir, "empty");
        Directory.CreateDirectory(empty);
        yield return ("an empty folder", empty, Readers(7));
        yield return ("/etc/passwd", "/etc/passwd", [(["info"], 7), (["query", "SELECT 1"], 7)]);
        yield return ("/dev/null", "/dev/null", [(["info"], 7), (["query", "SELECT 1"], 7)]);
        yield return ("/dev/zero", "/dev/zero", [(["info"], 7), (["query", "SELECT 1"], 7)]);
    }

    [Fact]
    public void HostileRecordings_EveryVerb_DocumentedCodeOneLineBounded()
    {
        var cases = Recordings().ToList();
        var before = cases.ToDictionary(c => c.Name, c => Directory.Exists(c.Path) ? Listing(c.Path) : "");
        var runs = cases.SelectMany(c => c.Verbs.Select((v, i) => (c.Name, c.Path, v.Args, v.Code, Index: i))).ToList();
        var problems = new System.Collections.Concurrent.ConcurrentBag<string>();
        Parallel.ForEach(runs, new ParallelOptions { MaxDegreeOfParallelism = 3 }, r =>
        {
            // Each run has its own TMPDIR and output, so that what it leaves is its own.
            var tmp = Directory.CreateTempSubdirectory("fx-hostile-tmp-").FullName;
            try
            {
                var args = r.Args.Select(a => a == BundleOut ? Path.Combine(tmp, "..", Path.GetFileName(tmp) + ".fxb") : a).ToArray();
                var o = Run(tmp, Limit, [args[0], r.Path, .. args[1..]]);
                if (Judge(o, [r.Code], tmp, $"{r.Name}: {args[0]}") is { } p)
                    problems.Add(p);
                File.Delete(Path.Combine(tmp, "..", Path.GetFileName(tmp) + ".fxb"));
            }
            finally
            {
                Directory.Delete(tmp, recursive: true);
            }
        });
        foreach (var c in cases.Where(c => Directory.Exists(c.Path) && Listing(c.Path) != before[c.Name]))
            problems.Add($"{c.Name}: the recording changed");
        Assert.True(problems.IsEmpty, string.Join("\n", problems));
        Assert.True(runs.Count > 50, $"{runs.Count} runs");
    }

    private const string BundleOut = "(bundle output)";

    // ---- hostile bundles -------------------------------------------------------------------------

    private string GoodBundle()
    {
        var file = Path.Combine(_dir, "good.fxb");
        if (!File.Exists(file))
            BundleWriter.Create(_base.Root, file, new BundleOptions());
        return file;
    }

    [Fact]
    public void DamagedBundles_GeneratedCorpus_NeverPassNeverCrash()
    {
        var good = File.ReadAllBytes(GoodBundle());
        var rng = new Random(1234);
        var problems = new List<string>();
        for (var i = 0; i < 16; i++)
        {
            var bytes = (byte[])good.Clone();
            string what;
            switch (i % 4)
            {
                case 0:
                    var at = rng.Next(bytes.Length);
                    bytes[at] ^= (byte)(1 << rng.Next(8));
                    what = $"bit flipped at {at}";
                    break;
                case 1:
                    var len = rng.Next(bytes.Length);
                    bytes = bytes[..len];
                    what = $"truncated to {len}";
                    break;
                case 2:
                    var from = rng.Next(bytes.Length - 512);
                    rng.NextBytes(bytes.AsSpan(from, 512));
                    what = $"512 random bytes at {from}";
                    break;
                default:
                    bytes = [.. bytes, .. RandomNumberGenerator.GetBytes(rng.Next(1, 2048))];
                    what = "bytes appended";
                    break;
            }
            var file = Path.Combine(_dir, $"damaged-{i}.fxb");
            File.WriteAllBytes(file, bytes);
            var verify = Run(_tmp, Limit, "verify", file);
            if (Judge(verify, [.. Enumerable.Range(10, 14)], _tmp, $"verify, {what}") is { } p1)
                problems.Add(p1);
            var query = Run(_tmp, Limit, "query", file, "SELECT count(*) FROM \"drop\"");
            if (Judge(query, [7, .. Enumerable.Range(10, 14)], _tmp, $"query, {what}") is { } p2)
                problems.Add(p2);
        }
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [Fact]
    public void SparseBundle_ClaimingEightGiB_RefusedBeforeAnythingIsExtracted()
    {
        // A bundle whose index lists an 8 GiB entry, sparse on disk: index, root and nothing else real.
        var entries = RawTar.Split(File.ReadAllBytes(GoodBundle()));
        var index = (JsonObject)JsonNode.Parse(entries[0].Data)!;
        var list = (JsonArray)index["entries"]!;
        list[^1]!["bytes"] = Tar.MaxSize;
        var indexBytes = Encoding.UTF8.GetBytes(index.ToJsonString() + "\n");
        var root = Encoding.ASCII.GetBytes(Convert.ToHexStringLower(SHA256.HashData(indexBytes)) + "\n");
        var head = RawTar.Join([("index.json", indexBytes), ("index.sha256", root)], RawTar.MTime(File.ReadAllBytes(GoodBundle())));
        var file = Path.Combine(_dir, "sparse.fxb");
        using (var fs = File.Create(file))
        {
            fs.Write(head, 0, head.Length - 1024);
            fs.SetLength(Tar.MaxSize + (1L << 20));
        }
        var problems = new List<string>();
        foreach (var verb in new[] { "verify", "info", "query" })
        {
            string[] args = verb == "query" ? [verb, file, "SELECT 1"] : [verb, file];
            var o = Run(_tmp, TimeSpan.FromSeconds(30), args);
            if (Judge(o, [(int)BundleError.SizeExceeded], _tmp, verb) is { } p)
                problems.Add(p);
            if (!o.Stderr.Contains("--max-extract-size", StringComparison.Ordinal))
                problems.Add($"{verb}: does not name the option that raises the limit: {o.Stderr}");
        }
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [Fact]
    public void Bundle_ManifestTheReadersRefuse_VerifyRefusesItToo()
    {
        // index, manifest and root consistent, but the manifest names a schema version no reader reads.
        var good = File.ReadAllBytes(GoodBundle());
        var entries = RawTar.Split(good);
        var manifest = (JsonObject)JsonNode.Parse(entries.Single(e => e.Name == "manifest.json").Data)!;
        manifest["tables"]!["drop"]!["schema_version"] = 999;
        var mBytes = Encoding.UTF8.GetBytes(manifest.ToJsonString() + "\n");
        var index = (JsonObject)JsonNode.Parse(entries[0].Data)!;
        var m = ((JsonArray)index["entries"]!).First(e => (string)e!["path"]! == "manifest.json")!;
        m["bytes"] = mBytes.Length;
        m["sha256"] = Convert.ToHexStringLower(SHA256.HashData(mBytes));
        var indexBytes = Encoding.UTF8.GetBytes(index.ToJsonString() + "\n");
        var root = Encoding.ASCII.GetBytes(Convert.ToHexStringLower(SHA256.HashData(indexBytes)) + "\n");
        var rebuilt = entries.Select(e => e.Name switch
        {
            "index.json" => (e.Name, indexBytes),
            "index.sha256" => (e.Name, root),
            "manifest.json" => (e.Name, mBytes),
            _ => (e.Name, e.Data),
        });
        var file = Path.Combine(_dir, "schema999.fxb");
        File.WriteAllBytes(file, RawTar.Join(rebuilt, RawTar.MTime(good)));
        var problems = new List<string>();
        foreach (var verb in new[] { "verify", "info" })
            if (Judge(Run(_tmp, Limit, verb, file), [(int)BundleError.ManifestInvalid], _tmp, verb) is { } p)
                problems.Add(p);
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [Fact]
    public void FifoAsBundle_RefusedWithoutWaiting()
    {
        var fifo = Path.Combine(_dir, "fifo.fxb");
        Mkfifo(fifo);
        Assert.Null(Judge(Run(_tmp, TimeSpan.FromSeconds(30), "verify", fifo), [(int)BundleError.Malformed], _tmp, "verify"));
        Assert.Null(Judge(Run(_tmp, TimeSpan.FromSeconds(30), "info", fifo), [7], _tmp, "info"));
    }

    // ---- hostile SQL ------------------------------------------------------------------------------

    [Fact]
    public void TableFunctionsThatAct_Refused_NoAbortNoFile()
    {
        var logs = Path.Combine(_dir, "duck-logs");
        string[] attempts =
        [
            $"SELECT * FROM enable_logging(storage := 'file', storage_path := '{logs}')",
            "FROM enable_logging()",
            "FROM enable_profiling()",
            "FROM checkpoint()",
            "FROM force_checkpoint()",
            "FROM query('SELECT 42')",
            "FROM query_table('drop')",
            "FROM disable_logging()",
            "FROM duckdb_logs()",
            "SELECT * FROM read_text('/etc/passwd')",
            "SELECT (SELECT count(*) FROM enable_profiling())",
            "WITH x AS (FROM system.main.checkpoint()) SELECT * FROM x",
        ];
        using (var s = QuerySession.Open([_base.Root]))
        {
            foreach (var sql in attempts)
            {
                var e = Assert.Throws<QueryException>(() => s.Execute(sql));
                Assert.Contains("is not allowed", e.Message, StringComparison.Ordinal);
            }
            // What reads still runs, the views' table macros included.
            Assert.Equal(3L, s.Execute("SELECT count(*) FROM range(3) JOIN (SELECT 1 FROM drops_between(TIMESTAMPTZ '2000-01-01', TIMESTAMPTZ '2100-01-01') LIMIT 1) ON true").Rows.Single()[0]);
        }
        // Through the command: the one that aborted the process, and one more.
        var problems = new List<string>();
        foreach (var sql in attempts[..2])
            if (Judge(Run(_tmp, Limit, "query", _base.Root, sql), [1], _tmp, sql) is { } p)
                problems.Add(p);
        Assert.False(Path.Exists(logs), "a log file was written");
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [Fact]
    public void LargeResult_TableRefusedAtMaxRows_CsvStreamsInBoundedMemory()
    {
        var table = Run(_tmp, Limit, "query", _base.Root, "SELECT * FROM range(3000000)", "--max-rows", "100000");
        Assert.Null(Judge(table, [1], _tmp, "table"));
        Assert.Contains("more than 100000 rows", table.Stderr, StringComparison.Ordinal);
        var csv = Path.Combine(_dir, "big.csv");
        var streamed = Run(_tmp, Limit, "query", _base.Root, "SELECT range AS n, repeat('x', 100) AS pad FROM range(3000000)", "-f", "csv", "-o", csv, "--max-rows", "100000");
        Assert.Null(Judge(streamed, [0], _tmp, "csv"));
        Assert.Equal(3_000_001, File.ReadLines(csv).Count());
        Assert.True(streamed.PeakRssKb < 600_000, $"peak RSS {streamed.PeakRssKb} kB streaming 300 MB of CSV");
        if (!OperatingSystem.IsWindows())
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(csv));
    }

    [Fact]
    public void Output_IntoTheRecordingOrOverTheBundle_Refused()
    {
        var seg = Directory.GetFiles(Path.Combine(_base.Root, "exec"), "*.parquet", SearchOption.AllDirectories)[0];
        var before = File.ReadAllBytes(seg);
        var o = Run(_tmp, Limit, "query", _base.Root, "SELECT 1", "-f", "parquet", "-o", seg);
        Assert.Null(Judge(o, [1], _tmp, "-o a segment"));
        Assert.Equal(before, File.ReadAllBytes(seg));
        var bundle = GoodBundle();
        var bytes = File.ReadAllBytes(bundle);
        o = Run(_tmp, Limit, "query", bundle, "SELECT 1", "-o", bundle);
        Assert.Null(Judge(o, [1], _tmp, "-o the bundle"));
        Assert.Equal(bytes, File.ReadAllBytes(bundle));
    }

    [Fact]
    public void Bundle_SignKeyThatIsNoKey_SshKeygensErrorNotBrokenPipe()
    {
        var o = Run(_tmp, Limit, "bundle", _base.Root, "-o", Path.Combine(_dir, "signed.fxb"), "--sign-key", "/etc/passwd");
        Assert.Null(Judge(o, [1], _tmp, "--sign-key /etc/passwd"));
        Assert.Contains("ssh-keygen -Y sign failed", o.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("Broken pipe", o.Stderr, StringComparison.Ordinal);
        Assert.False(File.Exists(Path.Combine(_dir, "signed.fxb")));
    }

    // ---- signals ----------------------------------------------------------------------------------

    [Theory]
    [InlineData("SIGTERM", 15, 143)]
    [InlineData("SIGINT", 2, 130)]
    public async Task Signal_DuringABundleQuery_ExtractionRemoved(string name, int signal, int code)
    {
        var bundle = GoodBundle();
        var psi = new ProcessStartInfo(CliRunner.Forensics, ["query", bundle, "SELECT count(*) FROM range(100000000000)", "--timeout", "60s"])
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        psi.Environment["TMPDIR"] = _tmp;
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        var sw = Stopwatch.StartNew();
        // Wait until the bundle is extracted (its manifest is written first), then signal.
        while (!Directory.EnumerateFiles(_tmp, "manifest.json", SearchOption.AllDirectories).Any())
        {
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60) && !p.HasExited, $"the extraction did not appear ({name})");
            await Task.Delay(20);
        }
        Assert.Equal(0, Kill(p.Id, signal));
        Assert.True(p.WaitForExit(TimeSpan.FromSeconds(30)), $"{name} did not end the query");
        Assert.Equal(code, p.ExitCode);
        var left = Leftovers(_tmp).SelectMany(d => Directory.Exists(d) ? [d, .. Directory.EnumerateFileSystemEntries(d, "*", SearchOption.AllDirectories)] : new[] { d }).ToList();
        Assert.True(left.Count == 0, $"{name} left: {string.Join(", ", left)}; stderr: {await stderr}");
        Assert.DoesNotContain("   at ", await stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void KillNine_DuringABundleQuery_NextReaderSweepsTheLeftover()
    {
        var bundle = GoodBundle();
        var psi = new ProcessStartInfo(CliRunner.Forensics, ["query", bundle, "SELECT count(*) FROM range(100000000000)", "--timeout", "60s"]) { UseShellExecute = false, RedirectStandardError = true };
        psi.Environment["TMPDIR"] = _tmp;
        using var p = Process.Start(psi)!;
        var sw = Stopwatch.StartNew();
        while (!Directory.EnumerateFiles(_tmp, "manifest.json", SearchOption.AllDirectories).Any())
        {
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60) && !p.HasExited, "the extraction did not appear");
            Thread.Sleep(20);
        }
        p.Kill();
        p.WaitForExit();
        Assert.NotEmpty(Leftovers(_tmp)); // kill -9 leaves it
        var next = Run(_tmp, Limit, "info", bundle);
        Assert.Equal(0, next.ExitCode);
        Assert.Empty(Leftovers(_tmp));
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);

    internal static void Mkfifo(string path)
    {
        var (rc, _, err) = Scratch.Run("mkfifo", [path], null);
        Assert.True(rc == 0, err);
    }
}

[CollectionDefinition("hostile", DisableParallelization = true)]
public sealed class HostileCollection;
