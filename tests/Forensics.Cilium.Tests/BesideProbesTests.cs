using Forensics.Query;
using Forensics.Format;
using Forensics.Recorder.Storage;
using Forensics.Tests;

namespace Forensics.Cilium.Tests;

/// <summary>Hubble beside this tool's own probes in one recording (root: the probes are BPF).</summary>
public sealed class BesideProbesTests : IDisposable
{
    private readonly string dir = Fixtures.Temp("fx-beside-");

    public void Dispose() => Directory.Delete(dir, true);

    [KernelFact]
    public async Task RecordFrom_ProbesAndHubble_OneRecordingSourceColumnSaysWhich()
    {
        await using var server = await TestServer.StartAsync();
        var script = new Script();
        var flows = Fixtures.HubbleFlows();
        foreach (var f in flows)
            script.Add(f);
        server.Hubble.Enqueue(script);
        var rec = Path.Combine(dir, "rec");

        using var record = Cli.Start("record", "--from", "probes", "--from", $"hubble={server.Address}", "-t", "exec,exit", "-o", rec);
        bool got = Cli.Until(() =>
        {
            try
            {
                var m = Manifest.Read(rec);
                return m.Sources.Values.Sum(s => s.Received) >= flows.Count && m.Tables.ContainsKey("exec");
            }
            catch (Exception e) when (e is IOException or InvalidDataException)
            {
                return false;
            }
        }, TimeSpan.FromSeconds(60));
        record.Terminate();
        var r = record.Wait();
        Assert.True(got, r.Stderr + r.Stdout);

        using var s = QuerySession.Open([rec]);
        var sources = s.Rows("SELECT 'exec' AS t, source, count(*) AS n FROM exec GROUP BY ALL UNION ALL SELECT 'flows', source, count(*) FROM (SELECT source FROM \"drop\" UNION ALL SELECT source FROM policy UNION ALL SELECT source FROM trace) GROUP BY ALL ORDER BY t")
            .ToDictionary(x => ((string)x["t"]!, (string)x["source"]!), x => (long)x["n"]!);
        Assert.True(sources[("exec", "probes")] > 0); // processes found at start
        Assert.Equal(flows.Count, sources[("flows", "hubble")]);
        var m = Manifest.Read(rec);
        var h = m.Sources["hubble"];
        Assert.Equal(h.Received, h.Stored + h.Skipped.Values.Sum() + h.Malformed);
        // every sealed file is listed once, with the recording's own segment numbering
        var files = m.Tables.Values.SelectMany(t => t.Files).Select(f => f.Path).ToList();
        Assert.Equal(files.Count, files.Distinct().Count());
        Assert.All(files, f => Assert.True(File.Exists(Path.Combine(rec, f)), f));
    }
}
