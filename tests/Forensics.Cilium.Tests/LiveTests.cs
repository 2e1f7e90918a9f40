using Forensics.Cilium.Hubble.Api;
using Forensics.Cilium.Tetragon.Api;
using Forensics.Query;
using Forensics.Format;
using Forensics.Recorder.Storage;

namespace Forensics.Cilium.Tests;

/// <summary>`record --from hubble|tetragon` against in-process gRPC servers on unix sockets (no root, no kernel).</summary>
public sealed class LiveTests : IDisposable
{
    private readonly string dir = Fixtures.Temp("fx-live-");

    public void Dispose() => Directory.Delete(dir, true);

    private static List<Dictionary<string, object?>> Rows(string rec, string sql)
    {
        using var s = QuerySession.Open([rec]);
        return [.. s.Rows(sql)];
    }

    /// <summary>The recording's manifest once its sources have received <paramref name="messages"/> in all (bounded wait).</summary>
    private static bool Received(string rec, long messages) => Cli.Until(() =>
    {
        try
        {
            return File.Exists(Path.Combine(rec, "manifest.json")) && Manifest.Read(rec).Sources.Values.Sum(s => s.Received) >= messages;
        }
        catch (InvalidDataException)
        {
            return false;
        }
        catch (IOException)
        {
            return false;
        }
    }, TimeSpan.FromSeconds(60));

    [Fact]
    public async Task RecordFrom_HubbleAndTetragonServers_EveryEventIsARowOrCounted()
    {
        await using var server = await TestServer.StartAsync();
        var hubble = new Script();
        foreach (var f in Fixtures.HubbleFlows().Concat(Fixtures.SockTranslation()))
            hubble.Add(f);
        hubble.Add(new GetFlowsResponse { LostEvents = new LostEvent { Source = LostEventSource.HubbleRingBuffer, NumEventsLost = 7 }, NodeName = "k8s1" });
        hubble.Add(new GetFlowsResponse { LostEvents = new LostEvent { Source = LostEventSource.PerfEventRingBuffer, NumEventsLost = 4, Cpu = 3 }, NodeName = "k8s1" });
        hubble.Garbage([0xff, 0xff, 0xff, 0x0f, 0x01]); // no GetFlowsResponse
        server.Hubble.Enqueue(hubble);
        var tetragon = new Script();
        foreach (var e in Fixtures.TetragonExecs().Concat(Fixtures.TetragonCurl()))
            tetragon.Add(e);
        tetragon.Add(new GetEventsResponse { RateLimitInfo = new RateLimitInfo { NumberOfDroppedProcessEvents = 5 }, NodeName = "kind-control-plane" });
        tetragon.Add(new GetEventsResponse { ProcessKprobe = new ProcessKprobe { Process = new Process { Binary = "/usr/bin/curl", ExecId = "x" }, FunctionName = "tcp_close" } });
        server.Tetragon.Enqueue(tetragon);
        int sent = hubble.Messages.Count + tetragon.Messages.Count;
        var rec = Path.Combine(dir, "rec");

        using var record = Cli.Start("record", "--from", $"hubble={server.Address}", "--from", $"tetragon={server.Address}", "-o", rec);
        bool got = Received(rec, sent);
        record.Terminate();
        var r = record.Wait();
        Assert.True(got, $"the recorder did not receive every message in time (server sent {server.HubbleSent}+{server.TetragonSent} of {sent}): {r.Stderr}{r.Stdout}");

        // events were lost (Hubble's 7 and a perf ring's 4 on CPU 3, Tetragon's rate limit 5): exit 4, one line that says so
        Assert.Equal(4, r.ExitCode);
        var err = Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => l.StartsWith("error:", StringComparison.Ordinal));
        Assert.Contains("16 events were lost", err, StringComparison.Ordinal);

        var m = Manifest.Read(rec);
        Assert.Equal(16UL, m.EventsLost);
        var h = m.Sources["hubble"];
        var t = m.Sources["tetragon"];
        Assert.Equal(hubble.Messages.Count, h.Received);
        Assert.Equal(tetragon.Messages.Count, t.Received);
        Assert.Equal(1, h.Malformed);
        Assert.Equal(7UL, h.Lost["HUBBLE_RING_BUFFER"]);
        Assert.Equal(4UL, h.Lost["PERF_EVENT_RING_BUFFER"]);
        Assert.Equal(5UL, t.Lost["rate-limit"]);
        Assert.Equal(1, t.Skipped["kprobe tcp_close"]);
        foreach (var s in new[] { h, t })
            Assert.Equal(s.Received, s.Stored + s.Skipped.Values.Sum() + s.Malformed);
        // rows out == events in: every stored event is exactly its rows
        var tables = Rows(rec, "SELECT (SELECT count(*) FROM \"drop\") AS d, (SELECT count(*) FROM policy) AS p, (SELECT count(*) FROM trace) AS tr, (SELECT count(*) FROM nat) AS n, (SELECT count(*) FROM exec) AS e, (SELECT count(*) FROM exit) AS x, (SELECT count(*) FROM connect) AS c")[0];
        Assert.Equal(h.RowsWritten.Values.Sum() + t.RowsWritten.Values.Sum(), tables.Values.Sum(v => Convert.ToInt64(v, System.Globalization.CultureInfo.InvariantCulture)));
        Assert.Equal(h.Stored, (long)tables["d"]! + (long)tables["p"]! + (long)tables["tr"]! + (long)tables["n"]!);
        Assert.Equal(t.Stored, (long)tables["e"]! + (long)tables["x"]! + (long)tables["c"]!);
        var loss = Rows(rec, "SELECT source, failed, cpu FROM loss WHERE source IS NOT NULL ORDER BY source, failed");
        Assert.Equal([("hubble", 4UL, (uint?)3), ("hubble", 7UL, null), ("tetragon", 5UL, null)],
            loss.Select(l => ((string)l["source"]!, (ulong)l["failed"]!, (uint?)l["cpu"])));
        // replay: the perf ring's loss on CPU 3 as cilium monitor printed it; Hubble's own buffer's in this tool's line
        var replay = Cli.Run("replay", rec, "-f", "compact", "-t", "loss");
        Assert.Equal(["CPU 03: Lost 4 events", "Lost 7 flow events (ring buffer full: 7, user space: 0)"],
            replay.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.Contains("flow events", StringComparison.Ordinal) || l.StartsWith("CPU ", StringComparison.Ordinal)).Order(StringComparer.Ordinal));

        // the verbs answer from them
        var drops = Cli.Run("drops", rec);
        Assert.Contains("default/xwing", drops.Stdout, StringComparison.Ordinal);
        Assert.Contains("Policy denied", drops.Stdout, StringComparison.Ordinal);
        var nat = Rows(rec, "SELECT mapping, original, translated, service, client_pod FROM nat_mappings");
        var svc = Assert.Single(nat);
        Assert.Equal(("service", "10.96.0.10:80", "10.244.1.5:80", "default/deathstar", "default/xwing"),
            ((string)svc["mapping"]!, (string)svc["original"]!, (string)svc["translated"]!, (string)svc["service"]!, (string)svc["client_pod"]!));
        Assert.Contains("default/deathstar", Cli.Run("nat", rec).Stdout, StringComparison.Ordinal);
        var external = Cli.Run("connects", "--external", rec);
        Assert.Equal(0, external.ExitCode);
        Assert.Contains("104.198.14.52:443", external.Stdout, StringComparison.Ordinal);
        Assert.Contains("/usr/bin/curl", external.Stdout, StringComparison.Ordinal);
        var flow = Cli.Run("flow", rec, "--pod", "xwing");
        Assert.True(flow.ExitCode == 0, flow.Stderr);
        Assert.Contains("104.198.14.52", flow.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task RecordFrom_ServerClosesTheStream_ReconnectsAndRecordsTheGap()
    {
        await using var server = await TestServer.StartAsync();
        var flows = Fixtures.HubbleFlows();
        var first = new Script { HoldOpen = false };
        first.Add(flows[1]).Add(flows[2]);
        var second = new Script(); // as Hubble answers since=: from the last flow received, then newer ones
        second.Add(flows[2]).Add(flows[4]);
        server.Hubble.Enqueue(first);
        server.Hubble.Enqueue(second);
        var rec = Path.Combine(dir, "rec");

        using var record = Cli.Start("record", "--from", $"hubble={server.Address}", "-o", rec);
        bool got = Received(rec, 4);
        record.Terminate();
        var r = record.Wait();
        Assert.True(got, $"the recorder did not receive the flows of both streams ({server.HubbleStreams} streams, {server.HubbleSent} sent): {r.Stderr}{r.Stdout}");

        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(2, server.HubbleStreams);
        var h = Assert.Single(Manifest.Read(rec).Sources.Values);
        Assert.Equal(4, h.Received);
        Assert.Equal(3, h.Stored);
        Assert.Equal(1, h.Skipped["recorded before a reconnect"]);
        Assert.Equal(2, h.Connects);
        Assert.Equal(1UL, h.Lost["reconnect gaps (events not counted)"]);
        Assert.Contains("the server ended the stream", Assert.Single(h.Disconnects), StringComparison.Ordinal);
        var gap = Assert.Single(Rows(rec, "SELECT detail FROM loss WHERE source = 'hubble'"));
        Assert.StartsWith("no stream from ", (string)gap["detail"]!, StringComparison.Ordinal);
        Assert.Equal(3L, Rows(rec, "SELECT (SELECT count(*) FROM trace) + (SELECT count(*) FROM policy) AS n")[0]["n"]);
    }

    [Fact]
    public void RecordFrom_NoServer_OneLineErrorAndExit3()
    {
        var sock = Path.Combine(dir, "absent.sock");
        var r = Cli.Run("record", "--from", $"tetragon=unix://{sock}", "-o", Path.Combine(dir, "rec"), "-d", "5s");

        Assert.Equal(3, r.ExitCode);
        var line = Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Equal($"error: cannot reach tetragon at unix://{sock}: no socket at {sock} (is Tetragon running on this node?)", line);
    }
}

/// <summary>Hubble Relay over TLS, with the options `hubble observe` takes.</summary>
public sealed class RelayTlsTests : IDisposable
{
    private readonly string dir = Fixtures.Temp("fx-tls-");

    public void Dispose() => Directory.Delete(dir, true);

    private static System.Security.Cryptography.X509Certificates.X509Certificate2 SelfSigned()
    {
        using var key = System.Security.Cryptography.ECDsa.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP256);
        var req = new System.Security.Cryptography.X509Certificates.CertificateRequest("CN=relay.test", key, System.Security.Cryptography.HashAlgorithmName.SHA256);
        var san = new System.Security.Cryptography.X509Certificates.SubjectAlternativeNameBuilder();
        san.AddDnsName("relay.test");
        req.CertificateExtensions.Add(san.Build());
        req.CertificateExtensions.Add(new System.Security.Cryptography.X509Certificates.X509BasicConstraintsExtension(true, false, 0, true));
        using var cert = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        return System.Security.Cryptography.X509Certificates.X509CertificateLoader.LoadPkcs12(cert.Export(System.Security.Cryptography.X509Certificates.X509ContentType.Pkcs12), null);
    }

    [Fact]
    public async Task RecordFrom_RelayOverTls_CaFileAndServerNameVerifyTheServer()
    {
        using var cert = SelfSigned();
        await using var server = await TestServer.StartTlsAsync(cert);
        var script = new Script();
        foreach (var f in Fixtures.HubbleFlows().Take(3))
            script.Add(f);
        server.Hubble.Enqueue(script);
        var ca = Path.Combine(dir, "ca.pem");
        File.WriteAllText(ca, cert.ExportCertificatePem());

        // no CA: the server's certificate is not trusted, a one-line error
        var refused = Cli.Run("record", "--from", $"hubble={server.TcpAddress}", "--tls", "-o", Path.Combine(dir, "refused"), "-d", "5s");
        Assert.Equal(3, refused.ExitCode);
        Assert.StartsWith($"error: cannot reach hubble at {server.TcpAddress}:", Assert.Single(refused.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries)));

        var rec = Path.Combine(dir, "rec");
        using var record = Cli.Start("record", "--from", $"hubble={server.TcpAddress}", "--tls", "--tls-ca-cert-files", ca, "--tls-server-name", "relay.test", "-o", rec);
        bool got = Cli.Until(() =>
        {
            try
            {
                return File.Exists(Path.Combine(rec, "manifest.json")) && Manifest.Read(rec).Sources.Values.Sum(s => s.Received) >= 3;
            }
            catch (Exception e) when (e is IOException or InvalidDataException)
            {
                return false;
            }
        }, TimeSpan.FromSeconds(60));
        record.Terminate();
        var r = record.Wait();
        Assert.True(got && r.ExitCode == 0, r.Stderr + r.Stdout);
        Assert.Equal(3, Assert.Single(Manifest.Read(rec).Sources.Values).Stored);
    }
}
