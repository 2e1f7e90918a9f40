using Forensics.Cilium.Tetragon.Api;
using Google.Protobuf;

namespace Forensics.Cilium.Tests;

/// <summary>Replay of imported recordings against the real tools' lines.</summary>
public sealed class ReplayTests : IDisposable
{
    private readonly string dir = Fixtures.Temp("fx-replay-");

    public void Dispose() => Directory.Delete(dir, true);

    [Fact]
    public void ReplayCompact_HubblePrinterTestFlow_PrintsHubbleObserveCompactLine()
    {
        // cilium/cilium hubble/pkg/printer/printer_test.go: this flow's jsonpb line and its compact line
        var rec = Path.Combine(dir, "rec");
        var file = Path.Combine(dir, "one.json");
        File.WriteAllLines(file, [File.ReadAllLines(Fixtures.Data("hubble_real_flows.jsonl"))[0]]);
        Assert.Equal(0, Cli.Run("import", "hubble", file, "-o", rec).ExitCode);

        var r = Cli.Run("replay", rec, "-f", "compact");

        Assert.Equal(0, r.ExitCode);
        Assert.Equal("Jan  1 00:20:34.567: 1.1.1.1:31793 (health) -> 2.2.2.2:8080 (ID:12345) Policy denied DROPPED (TCP Flags: SYN)\n", r.Stdout);
    }

    [Fact]
    public void ReplayCompact_TetragonEvents_PrintsTetraCompactLines()
    {
        // cilium/tetragon pkg/encoder/encoder_test.go (events and asserted strings), and the docs' network walkthrough
        static GetEventsResponse Exec(string? node, Pod? pod) => new()
        {
            ProcessExec = new ProcessExec { Process = new Process { Binary = "/usr/bin/curl", Arguments = "cilium.io", Pod = pod, ExecId = "e1" } },
            NodeName = node ?? "",
            Time = new Google.Protobuf.WellKnownTypes.Timestamp { Seconds = 1 },
        };
        var tetragonPod = new Pod { Namespace = "kube-system", Name = "tetragon" };
        var events = new List<GetEventsResponse>
        {
            Exec("my-node", null),
            Exec(null, tetragonPod),
            new() { ProcessExit = new ProcessExit { Process = new Process { Binary = "/usr/bin/curl", Arguments = "cilium.io", Pod = tetragonPod, ExecId = "e2" }, Status = 1 }, Time = new() { Seconds = 2 } },
            new() { ProcessExit = new ProcessExit { Process = new Process { Binary = "/usr/bin/curl", Arguments = "cilium.io", Pod = tetragonPod, ExecId = "e3" }, Signal = "SIGKILL" }, Time = new() { Seconds = 3 } },
        };
        events.AddRange(Fixtures.TetragonCurl());
        var file = Path.Combine(dir, "tetragon.log");
        var fmt = new JsonFormatter(JsonFormatter.Settings.Default.WithPreserveProtoFieldNames(true));
        File.WriteAllLines(file, events.Select(e => fmt.Format(e)));
        var rec = Path.Combine(dir, "rec");
        Assert.Equal(0, Cli.Run("import", "tetragon", file, "-o", rec).ExitCode);

        var r = Cli.Run("replay", rec, "-f", "compact");

        Assert.Equal(0, r.ExitCode);
        Assert.Equal(
        [
            "🚀 process my-node /usr/bin/curl cilium.io",
            "🚀 process kube-system/tetragon /usr/bin/curl cilium.io",
            "💥 exit    kube-system/tetragon /usr/bin/curl cilium.io 1",
            "💥 exit    kube-system/tetragon /usr/bin/curl cilium.io SIGKILL",
            "🚀 process default/xwing /usr/bin/curl https://ebpf.io/applications/#tetragon",
            "🔌 connect default/xwing /usr/bin/curl tcp 10.32.0.19:33978 -> 104.198.14.52:443",
            "💥 exit    default/xwing /usr/bin/curl https://ebpf.io/applications/#tetragon 60",
        ], r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }
}
