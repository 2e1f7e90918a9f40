using System.Diagnostics;
using Forensics.Query.Export;

namespace Forensics.Query.Tests;

public sealed class ExportInfoTests : IDisposable
{
    private readonly TestRecording _rec = Lab.Build();
    private readonly string _pcap = Path.Combine(Path.GetTempPath(), "fxq-" + Guid.NewGuid().ToString("N")[..8] + ".pcapng");

    public void Dispose()
    {
        _rec.Dispose();
        File.Delete(_pcap);
    }

    private static string Tshark(params string[] args)
    {
        var psi = new ProcessStartInfo("tshark") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(60_000), "tshark did not finish");
        Assert.True(p.ExitCode == 0, $"tshark failed: {stderr.Result}");
        return stdout.Result;
    }

    [Fact]
    public void ExportPcap_Captures_TsharkReadsAnnotatedPackets()
    {
        var r = CliRunner.Run("export", _rec.Root, "-o", _pcap);
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("2 packets written", r.Stderr, StringComparison.Ordinal);
        var v = Tshark("-r", _pcap, "-V");
        Assert.Contains("Frame 1:", v, StringComparison.Ordinal);
        Assert.Contains("Frame 2:", v, StringComparison.Ordinal);
        Assert.Contains("Internet Protocol Version 4, Src: 10.0.1.5, Dst: 10.0.1.7", v, StringComparison.Ordinal);
        Assert.Contains("Transmission Control Protocol, Src Port: 40000, Dst Port: 8080", v, StringComparison.Ordinal);
        Assert.Contains("forensics: capture, obs-point from-endpoint, egress, identity 1001->1002, endpoint 11", v, StringComparison.Ordinal);
        Assert.Contains("forensics: drop, obs-point to-endpoint, ingress, drop reason 133 (Policy denied), identity 1001->1002, endpoint 12", v, StringComparison.Ordinal);
        // interfaces per ifindex, times in ns
        var fields = Tshark("-r", _pcap, "-T", "fields", "-e", "frame.interface_name", "-e", "frame.time_epoch", "-e", "frame.len", "-e", "frame.comment");
        var lines = fields.TrimEnd('\n').Split('\n');
        Assert.Equal(2, lines.Length);
        Assert.StartsWith("ifindex 21\t", lines[0], StringComparison.Ordinal);
        Assert.Contains(TestRecording.Start.AddTicks(1_001_002_000 / 100).ToUnixTimeSeconds().ToString(System.Globalization.CultureInfo.InvariantCulture) + ".001002000", lines[0], StringComparison.Ordinal);
        Assert.StartsWith("ifindex 22\t", lines[1], StringComparison.Ordinal);
    }

    [Fact]
    public void ExportPcap_DropsOnly_OnlyTheDroppedPacket()
    {
        using (var s = QuerySession.Open([_rec.Root]))
            Assert.Equal(1, PcapExport.Write(s, _pcap, dropsOnly: true));
        var fields = Tshark("-r", _pcap, "-T", "fields", "-e", "frame.comment");
        Assert.Contains("drop reason 133 (Policy denied)", Assert.Single(fields.TrimEnd('\n').Split('\n')), StringComparison.Ordinal);
    }

    [Fact]
    public void Info_IntactRecording_ReportsAndVerifies()
    {
        var r = CliRunner.Run("info", _rec.Root);
        Assert.Equal(0, r.ExitCode);
        Assert.Contains($"recording   {_rec.RecordingId}", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("host        node-a, kernel 6.18.0-test, x86_64", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("time        2026-11-23T10:00:00.000Z -> 2026-11-23T10:01:00.000Z (60 s)", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("stopped     duration", r.Stdout, StringComparison.Ordinal);
        Assert.Matches($@"\n  drop\s+3 rows\s+1 file\s+schema v{Forensics.Format.SchemaCatalog.CurrentVersion("drop")}\n", r.Stdout);
        Assert.Contains("loss        3 events lost", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("trace            emitted 100, lost in kernel (ring buffer full) 3, lost in user space 0", r.Stdout, StringComparison.Ordinal);
        var files = Directory.GetFiles(_rec.Root, "*.parquet", SearchOption.AllDirectories).Length;
        Assert.Contains($"files       {files} of {files} verified", r.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void Info_TamperedFile_ReportedWithNonZeroExit()
    {
        var seg = Path.Combine(_rec.Root, "drop/node=node-a/seg-000001.parquet");
        var bytes = File.ReadAllBytes(seg);
        bytes[bytes.Length / 2] ^= 0x01;
        File.WriteAllBytes(seg, bytes);
        var r = CliRunner.Run("info", _rec.Root);
        Assert.Equal(6, r.ExitCode);
        Assert.Contains("TAMPERED  drop/node=node-a/seg-000001.parquet: SHA-256", r.Stdout, StringComparison.Ordinal);
        Assert.Equal("error: files differ from the manifest (tampered or corrupted)\n", r.Stderr);
    }

    [Fact]
    public void Info_NotARecording_OneLineError()
    {
        var r = CliRunner.Run("info", Path.GetTempPath());
        Assert.Equal(7, r.ExitCode);
        Assert.Matches(@"^error: .*not a recording \(no manifest.json\)\n$", r.Stderr);
    }
}

public sealed class ManifestReaderTests
{
    [Fact]
    public void Info_EveryManifestField_IsRead()
    {
        // every field the manifest model writes reaches a reader: info prints it (or the views hold it)
        using var rec = Lab.Build();
        var path = Path.Combine(rec.Root, "manifest.json");
        var m = Forensics.Format.Manifest.Parse(File.ReadAllBytes(path), path);
        m.Recovered = true;
        m.FilteredConnects = 41;
        m.UnsealedSegments = 2;
        m.UnsealedBytes = 4242;
        m.Config.RingBytes = 65536;
        m.Config.MonitorAggregation = "medium";
        m.Config.Capture = "first";
        m.Config.CaptureFirst = 6;
        m.Config.FlowIntervalSeconds = 15;
        m.Config.PoliciesSha256 = new string('e', 64);
        m.Config.DurationSeconds = 12.5;
        m.Config.PodCidrs = ["10.244.0.0/16"];
        m.Config.ServiceCidrs = ["10.97.0.0/16"];
        m.Config.NodeAddresses = ["192.0.2.10"];
        m.Redaction = new System.Text.Json.Nodes.JsonObject { ["drop_env"] = true };
        m.Sources["conntrack"] = new Forensics.Format.ManifestSource
        {
            Kind = "netlink", Detail = "ctnetlink in the root namespace", Records = 77,
            Loss = { ["nat"] = new Forensics.Format.ManifestLoss { Emitted = 80, Failed = 3, UserspaceDropped = 0 } },
            NotRecorded = ["NAT of other namespaces not recorded because they were not asked for"],
            Inputs = [new Forensics.Format.ManifestInput { Path = "flows.jsonl", Bytes = 99, Sha256 = new string('d', 64) }],
            RowsWritten = { ["nat"] = 74, ["trace"] = 3 },
        };
        m.Attribution = new Forensics.Format.ManifestAttribution
        {
            Source = "cri unix:///run/containerd/containerd.sock (containerd 1.6.20, CRI v1)", Pods = 5, Containers = 7, Refreshes = 31, Failures = 2,
            Warnings = ["refresh: deadline exceeded"],
        };
        File.WriteAllBytes(path, m.ToJson());
        using var opened = Recording.RecordingLocator.Open(rec.Root);
        var w = new StringWriter();
        Info.Report(opened, w);
        var text = w.ToString();
        foreach (var expected in new[]
        {
            "recovered after a crash", "41 connects", "unsealed segments: 2 (4242 bytes)", "ring 65536 bytes", "aggregated per connection", "the first 6 packets of each connection", "a row per active connection every 15 s",
            new string('e', 64), "duration 12.5 s", "lab test", "snaplen 128", "pods 10.244.0.0/16", "services 10.97.0.0/16", "node 192.0.2.10",
            "drop_env", "source      conntrack (netlink: ctnetlink in the root namespace): 77 records", "nat              emitted 80, not handed over 3",
            "not recorded: NAT of other namespaces", "input     flows.jsonl (99 bytes, sha256 " + new string('d', 64), "boot boot-1", "x86_64",
            "kinds       ", "in-cluster  10.0.0.0/16", "rows      nat 74, trace 3",
            "attribution source: cri unix:///run/containerd/containerd.sock (containerd 1.6.20, CRI v1) (5 pods, 7 containers)",
            "refreshes 31, of them failed 2", "warning: refresh: deadline exceeded",
        })
            Assert.Contains(expected, text, StringComparison.Ordinal);
        // and the cluster ranges are inside the cluster for the reconstructions
        using var s = QuerySession.Open([rec.Root]);
        var sources = s.Execute("SELECT string_agg(cidr || '=' || source, ',' ORDER BY cidr) FROM manifest_cidrs").Rows.Single()[0] as string;
        Assert.Contains("10.244.0.0/16=manifest pod_cidrs", sources, StringComparison.Ordinal);
        Assert.Contains("10.97.0.0/16=manifest service_cidrs", sources, StringComparison.Ordinal);
        Assert.Contains("192.0.2.10=manifest node_addresses", sources, StringComparison.Ordinal);
    }
}
