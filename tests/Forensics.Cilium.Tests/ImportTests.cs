using System.IO.Compression;
using System.Security.Cryptography;
using Forensics.Query;
using Forensics.Format;
using Forensics.Recorder.Storage;

namespace Forensics.Cilium.Tests;

public sealed class ImportTests : IDisposable
{
    private readonly string dir = Fixtures.Temp("fx-import-");

    public void Dispose() => Directory.Delete(dir, true);

    private static List<Dictionary<string, object?>> Rows(string rec, string sql)
    {
        using var s = QuerySession.Open([rec]);
        return [.. s.Rows(sql)];
    }

    private static void Balanced(ManifestSource s)
    {
        // every message is accounted for once: a stored row, a counted skip, or a malformed line
        Assert.Equal(s.Received, s.Stored + s.Skipped.Values.Sum() + s.Malformed);
    }

    [Fact]
    public void ImportHubble_RealExports_EveryObserveFilterFieldIsAColumn()
    {
        var rec = Path.Combine(dir, "rec");
        var files = new[] { Fixtures.Data("hubble_real_flows.jsonl"), Fixtures.Data("hubble_exporter_lines.jsonl") };
        var r = Cli.Run("import", "hubble", files[0], files[1], "-o", rec);
        Assert.True(r.ExitCode == 0, r.Stderr);

        var m = Manifest.Read(rec);
        var (name, src) = Assert.Single(m.Sources);
        Assert.Equal(("hubble", "file"), (name, src.Kind));
        foreach (var (f, entry) in files.Zip(src.Inputs))
        {
            Assert.Equal(Path.GetFullPath(f), entry.Path);
            Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(f))), entry.Sha256);
            Assert.Equal(File.ReadAllLines(f).Length, entry.Lines);
        }
        Assert.Equal(8, src.Received);
        Assert.Equal(1, src.Skipped["debug-event"]);
        Balanced(src);
        Assert.Equal(src.RowsWritten.Values.Sum(), m.Tables.Values.Sum(t => t.Rows));

        // hubble observe --verdict, --drop-reason-desc, --namespace, --pod, --label, --identity, --port, --protocol
        var deny = Assert.Single(Rows(rec, "SELECT * FROM policy"));
        Assert.Equal("DROPPED", deny["verdict"]);
        Assert.Equal("deny", deny["action"]);
        Assert.Equal("L3-Only", deny["match"]);
        Assert.Equal("net-lab/deny-tg-to-echo", deny["denied_by"]);
        Assert.Equal("net-lab", deny["src_namespace"]);
        Assert.Equal("traffic-generator-9b649846d-bxqfc", deny["src_pod"]);
        Assert.Equal("echo-server-65887564dc-jjw7k", deny["dst_pod"]);
        Assert.Equal("k8s:app=traffic-generator", deny["src_labels"]);
        Assert.Equal(24753u, deny["src_identity"]);
        Assert.Equal(24075u, deny["dst_identity"]);
        Assert.Equal((ushort)80, deny["dst_port"]);
        Assert.Equal("tcp", deny["protocol"]);
        Assert.Equal("topgun/cilium-w1", deny["node"]);
        Assert.Contains("policy_log", (string)deny["extra"]!); // a field newer than the .proto subset: kept

        var drops = Rows(rec, "SELECT reason, reason_name, verdict, src_pod, dst_pod, dst_port, src_identity, dst_identity, protocol FROM \"drop\" ORDER BY time");
        Assert.Equal([(ushort)133, (ushort)132, (ushort)133], drops.Select(d => d["reason"]));
        Assert.Equal(["Policy denied", "Invalid source ip", "Policy denied"], drops.Select(d => d["reason_name"]));
        Assert.All(drops, d => Assert.Equal("DROPPED", d["verdict"]));
        Assert.Equal("xwing", drops[2]["src_pod"]);
        Assert.Equal(4u, drops[0]["src_identity"]);

        var traces = Rows(rec, "SELECT * FROM trace ORDER BY time");
        Assert.Equal(3, traces.Count);
        Assert.Equal(["established", "new", "reply"], traces.Select(t => t["ct_state"]));
        Assert.Equal([false, false, true], traces.Select(t => t["is_reply"]));
        Assert.Equal("to-endpoint", traces[2]["obs_point"]);
        Assert.Equal("eni07eaad73233", traces[2]["interface"]);
        Assert.Equal("kube-system", traces[2]["dst_namespace"]);
        Assert.Contains("k8s:app=cbs-csi-controller", (string)traces[2]["dst_labels"]!);
        Assert.Equal("reserved:host,reserved:remote-node", traces[0]["src_labels"]);
        Assert.Equal("hubble", traces[0]["source"]);

        // a Hubble node name "cluster/node" is a folder a bundle accepts, and reads back as it was
        Assert.True(Directory.Exists(Path.Combine(rec, "policy", "node=topgun+cilium-w1")));
        var bundle = Path.Combine(dir, "rec.fxb");
        Assert.Equal(0, Cli.Run("bundle", rec, "-o", bundle).ExitCode);
        Assert.Equal(0, Cli.Run("verify", bundle).ExitCode);
        Assert.Contains("topgun/cilium-w1", Cli.Run("query", bundle, "SELECT node FROM policy").Stdout, StringComparison.Ordinal);

        // drops answers from the imported rows: the pods as Hubble named them
        var byWorkload = Rows(rec, "SELECT source, destination, reason_name FROM drops_by_workload WHERE reason = 133 ORDER BY first_seen");
        Assert.Contains(byWorkload, d => (string?)d["source"] == "default/xwing" && (string?)d["destination"] == "default/deathstar-7848d6c4d5-th9v2");
    }

    [Fact]
    public void ImportHubble_MalformedLines_CountedWithLineNumbersAndTheRestKept()
    {
        var good = File.ReadAllLines(Fixtures.Data("hubble_exporter_lines.jsonl"));
        var file = Path.Combine(dir, "hubble.log");
        File.WriteAllLines(file, [good[0], "this is not json", good[1], "{\"flow\":{\"verdict\":", "", "{\"flow\":{\"verdict\":\"DROPPED\",\"IP\":7}}", good[0]]);
        var rec = Path.Combine(dir, "rec");

        var r = Cli.Run("import", "hubble", file, "-o", rec);

        Assert.Equal(4, r.ExitCode); // events were lost (the malformed lines); the recording holds the rest
        var err = Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("error: 3 malformed line(s) not imported (hubble.log:2, hubble.log:4, hubble.log:6)", err);
        var src = Assert.Single(Manifest.Read(rec).Sources.Values);
        Assert.Equal(3, src.Malformed);
        Assert.Equal([2L, 4L, 6L], src.MalformedExamples.Select(e => e.Line));
        Balanced(src);
        Assert.Equal(3L, Rows(rec, "SELECT count(*) AS n FROM \"drop\"")[0]["n"]);
    }

    [Fact]
    public void ImportHubble_GzipAndRotatedParts_ManifestNamesEachFileWithSha256()
    {
        var lines = File.ReadAllLines(Fixtures.Data("hubble_real_flows.jsonl"));
        var older = Path.Combine(dir, "hubble.log.1.gz");
        using (var gz = new GZipStream(File.Create(older), CompressionLevel.Optimal))
        using (var w = new StreamWriter(gz))
            foreach (var l in lines[..3])
                w.WriteLine(l);
        var current = Path.Combine(dir, "hubble.log");
        File.WriteAllLines(current, lines[3..]);
        var rec = Path.Combine(dir, "rec");

        var r = Cli.Run("import", "hubble", older, current, "-o", rec);

        Assert.True(r.ExitCode == 0, r.Stderr);
        var src = Assert.Single(Manifest.Read(rec).Sources.Values);
        Assert.Equal([true, false], src.Inputs.Select(f => f.Gzip));
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(older))), src.Inputs[0].Sha256); // the file as stored, compressed
        Assert.Equal([3L, lines.Length - 3L], src.Inputs.Select(f => f.Lines));
        Assert.Equal(lines.Length, src.Received);
        Assert.Equal(5L, Rows(rec, "SELECT (SELECT count(*) FROM \"drop\") + (SELECT count(*) FROM policy) + (SELECT count(*) FROM trace) AS n")[0]["n"]);
        var info = Cli.Run("info", rec);
        Assert.Equal(0, info.ExitCode);
        Assert.Contains("source      hubble (file", info.Stdout, StringComparison.Ordinal);
        Assert.Contains($"): {lines.Length} received, 5 stored, 1 not stored, 0 malformed", info.Stdout, StringComparison.Ordinal);
        Assert.Contains($"  input     {older} (3 lines, {new FileInfo(older).Length} bytes, sha256 {src.Inputs[0].Sha256})", info.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void ImportHubble_TruncatedGzip_KeepsWhatCameBeforeAndCountsTheRest()
    {
        var lines = File.ReadAllLines(Fixtures.Data("hubble_real_flows.jsonl"));
        var whole = new MemoryStream();
        using (var gz = new GZipStream(whole, CompressionLevel.Optimal, leaveOpen: true))
        using (var w = new StreamWriter(gz))
            foreach (var l in Enumerable.Repeat(lines[0], 2000))
                w.WriteLine(l);
        var file = Path.Combine(dir, "cut.log.gz");
        File.WriteAllBytes(file, whole.ToArray()[..(int)(whole.Length * 2 / 3)]);
        var rec = Path.Combine(dir, "rec");

        var r = Cli.Run("import", "hubble", file, "-o", rec);

        Assert.Equal(4, r.ExitCode);
        var src = Assert.Single(Manifest.Read(rec).Sources.Values);
        Assert.InRange(src.Stored, 1, 1999);
        Assert.Contains("gzip", src.MalformedExamples.Last().Error, StringComparison.Ordinal);
        Assert.Equal(src.Stored, (long)Rows(rec, "SELECT count(*) AS n FROM \"drop\"")[0]["n"]!);
    }

    [Fact]
    public void ImportTetragon_ReferenceEvents_ExecRowsCarryPodContainerAndIds()
    {
        var rec = Path.Combine(dir, "rec");
        var r = Cli.Run("import", "tetragon", Fixtures.Data("tetragon_process_exec_events.jsonl"), "-o", rec);
        Assert.True(r.ExitCode == 0, r.Stderr);

        var rows = Rows(rec, "SELECT * FROM exec ORDER BY time");
        Assert.Equal(3, rows.Count);
        var netserver = rows[0];
        Assert.Equal("/usr/bin/netserver", netserver["binary"]);
        Assert.Equal("-D", netserver["arguments"]);
        Assert.Equal(68790u, netserver["pid"]);
        Assert.Equal(68598u, netserver["ppid"]);
        Assert.Equal("default", netserver["namespace"]);
        Assert.Equal("tiefighter", netserver["pod"]);
        Assert.Equal("spaceship", netserver["container"]);
        Assert.Equal("containerd://19a02291e106ce6227b684197be232ea57c4e1a5ab2604a12608c325d701c7f4", netserver["container_id"]);
        Assert.Equal("app.kubernetes.io/name=tiefighter,class=tiefighter,org=empire", netserver["pod_labels"]);
        Assert.Equal("Z2tlLW1pY2hpLTIyMDM4LWRlZmF1bHQtcG9vbC00MzczMGZhYi1sOHpyOjEzNjY1ODIyNjI0ODU2OjY4Nzkw", netserver["exec_key"]);
        Assert.Equal(Tetragon.EventDecoder.Id("Z2tlLW1pY2hpLTIyMDM4LWRlZmF1bHQtcG9vbC00MzczMGZhYi1sOHpyOjEzNjY1ODIyNjI0ODU2OjY4Nzkw"), netserver["exec_id"]);
        Assert.Equal(Tetragon.EventDecoder.Id("Z2tlLW1pY2hpLTIyMDM4LWRlZmF1bHQtcG9vbC00MzczMGZhYi1sOHpyOjEzNjYwNDgwNjUxNTk1OjY4NTk4"), netserver["parent_exec_id"]);
        Assert.Equal("tetragon", netserver["source"]);
        Assert.Equal("my-node", netserver["node"]);
        Balanced(Assert.Single(Manifest.Read(rec).Sources.Values));
    }
}
