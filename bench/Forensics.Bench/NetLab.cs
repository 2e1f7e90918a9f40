using System.Diagnostics;
using System.Globalization;
using System.Net;
using Forensics.Datapath;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Control;
using Forensics.Datapath.Lab;
using Forensics.Datapath.Probes;
using Forensics.Recorder;
using Forensics.Recorder.Sessions;
using Forensics.Recorder.Sources;
using Forensics.Recorder.Tables;

namespace Forensics.Bench;

/// <summary>
/// A two-pod lab of our own (namespaces and links named fxn*), up with or without the
/// datapath, and a Recording of it run in-process as <c>forensics record --lab</c> runs one.
/// </summary>
internal sealed class NetLab : IDisposable
{
    public const string ClientIp = "10.0.0.10";
    public const string ServerIp = "10.0.0.20";

    private readonly List<IEventSource> sources = [];
    private Recording? recording;
    private Thread? recorder;
    private CancellationTokenSource? cts;
    private RecordingSummary? summary;
    private Dictionary<EventKind, EmitStats> countersAtStart = [];

    private NetLab(NetnsLab lab) => Lab = lab;

    public NetnsLab Lab { get; }
    public string ClientNs => LabNames.PodNs(Lab.Name, Lab.Cluster.Pods[0]);
    public string ServerNs => LabNames.PodNs(Lab.Name, Lab.Cluster.Pods[1]);
    public string NodeNs => Lab.State.NodeNetns;
    public string ClientLink => Lab.State.Endpoints[0].HostLink;
    public int ClientIfindex => Lab.State.Endpoints[0].Ifindex;
    public bool Datapath => Lab.HasDatapath;

    /// <summary>Pods cli (10.0.0.10) and srv (10.0.0.20); a policy lets cli reach srv on any port and protocol.</summary>
    public static ClusterSpec Cluster(string lab)
    {
        static Dictionary<string, string> App(string a) => new() { ["app"] = a };
        var cli = new PodSpec("cli", "default", App("fxn-client"), IPAddress.Parse(ClientIp));
        var srv = new PodSpec("srv", "default", App("fxn-server"), IPAddress.Parse(ServerIp));
        return new ClusterSpec("netbench.yaml",
            new LabSpec(lab, IPNetwork.Parse("10.0.0.0/24"), IPNetwork.Parse("10.0.1.0/24"), IPAddress.Parse("192.0.2.1"), [], []),
            [cli, srv],
            [],
            [new NetworkPolicySpec("srv-from-cli", "default", new EndpointSelector(App("fxn-server")),
                [new PolicyRule([new EndpointSelector(App("fxn-client"))], [], [], [])],
                [], [], [], "# netbench: cli may reach srv on any port\n")]);
    }

    /// <summary>
    /// Brings the lab up. With <paramref name="events"/> the datapath is attached (and,
    /// with <paramref name="probes"/>, the host-wide probes loaded as <c>forensics record</c> does);
    /// without, the pods are plain veths routed by the node namespace.
    /// </summary>
    public static NetLab Up(string name, EventOptions? events, bool probes)
    {
        var cluster = Cluster(name);
        Prerequisites.EnsureKernelAccess(); // mounts tracefs and bpffs as forensics record does
        TracingProbes? p = null;
        if (events is not null && probes)
        {
            p = TracingProbes.Load(new ProbeOptions { Events = events, Enabled = RecordingSession.ProbesFor(events.Kinds) });
            p.Attach();
            p.SeedProcesses();
        }
        NetnsLab lab;
        try
        {
            lab = NetnsLab.Up(cluster, new LabOptions
            {
                Datapath = events is null ? null : LabDatapath.Factory(events),
                CollectEvents = false,
                SelfCommand = ["/bin/false"], // no pod listens: nothing of ours runs in the pods but the benchmark's tools
            });
        }
        catch
        {
            p?.Dispose();
            throw;
        }
        var n = new NetLab(lab);
        if (p is not null)
            n.sources.Add(p);
        if (lab.Datapath is not null)
            n.sources.Add(lab.Datapath.Events);
        return n;
    }

    /// <summary>Starts recording every source into <paramref name="dir"/> (removed first).</summary>
    public void StartRecording(string dir)
    {
        if (sources.Count == 0)
            return;
        if (Directory.Exists(dir))
            Directory.Delete(dir, true);
        var context = RecordingSession.NewContext(); // as forensics record makes it
        countersAtStart = Counters();
        recording = new Recording([new KernelSource(sources, context)], new RecordOptions { OutputDir = dir }, context.MonotonicToUtcOffsetNs);
        cts = new CancellationTokenSource();
        var token = cts.Token;
        var rec = recording;
        summary = null;
        recorder = new Thread(() => summary = rec.Run(() => "duration", token)) { Name = "fxb-recording" };
        recorder.Start();
        if (!rec.WaitStarted(TimeSpan.FromSeconds(30)))
            throw new InvalidOperationException("the recording did not start within 30 s");
    }

    /// <summary>Stops the recording (after a moment for the last events) and returns what it wrote and lost.</summary>
    public RecordingSummary? StopRecording()
    {
        if (recorder is null)
            return null;
        recording!.WaitCaughtUp(TimeSpan.FromSeconds(10)); // every event counted so far is taken out of the rings
        cts!.Cancel();
        if (!recorder.Join(TimeSpan.FromSeconds(60)))
            throw new InvalidOperationException("the recording did not stop within 60 s");
        recorder = null;
        cts.Dispose();
        cts = null;
        return summary ?? throw new InvalidOperationException("the recording ended without a summary");
    }

    /// <summary>Emission counters of every source, summed by kind.</summary>
    public Dictionary<EventKind, EmitStats> Counters() => EventChannel.ReadCounters(sources);

    /// <summary>Counters since the recording started.</summary>
    public EmitStats Since(EventKind kind, Dictionary<EventKind, EmitStats> now)
    {
        var a = countersAtStart.GetValueOrDefault(kind);
        var b = now.GetValueOrDefault(kind);
        return new EmitStats { Emitted = b.Emitted - a.Emitted, Failed = b.Failed - a.Failed };
    }

    /// <summary>Rows and losses per table, as one key=value fragment.</summary>
    public static string Describe(RecordingSummary s)
    {
        var rows = string.Join(",", s.Rows.Where(r => r.Value > 0 && r.Key != "loss").OrderBy(r => r.Key, StringComparer.Ordinal).Select(r => $"{r.Key}:{r.Value}"));
        var loss = string.Join(",", s.Loss.OrderBy(r => r.Key, StringComparer.Ordinal).Select(l => $"{l.Key}:{l.Value.Emitted}/{l.Value.Failed}/{l.Value.UserspaceDropped}"));
        return $"rows[{rows}] emitted/failed/userspace_dropped[{loss}] events_lost={s.EventsLost}";
    }

    public void Dispose()
    {
        try
        {
            if (recorder is not null)
            {
                cts?.Cancel();
                recorder.Join(TimeSpan.FromSeconds(60));
            }
        }
        finally
        {
            Lab.Dispose(); // detaches the datapath, kills what runs in the namespaces, removes them
            foreach (var s in sources.OfType<TracingProbes>())
                s.Dispose();
        }
    }

    public static string LoadAvg() => File.ReadAllText("/proc/loadavg").Split(' ')[..3] is var f ? string.Join("/", f) : "";

    public static string Num(double v, string fmt) => v.ToString(fmt, CultureInfo.InvariantCulture);
}

/// <summary>An external process in the background (a server, a receiver, tcpdump), bounded in time, its output collected.</summary>
internal sealed class Background : IDisposable
{
    private readonly Process p;
    private readonly System.Text.StringBuilder stdout = new(), stderr = new();
    private readonly object gate = new();

    public Background(IEnumerable<string> argv, TimeSpan limit)
    {
        var list = argv.ToList();
        // timeout(1) bounds it even if we die; -s INT so tcpdump writes its counts
        var psi = new ProcessStartInfo("timeout")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add("-s");
        psi.ArgumentList.Add("INT");
        psi.ArgumentList.Add("-k");
        psi.ArgumentList.Add("5");
        psi.ArgumentList.Add(((int)limit.TotalSeconds).ToString(CultureInfo.InvariantCulture));
        foreach (var a in list)
            psi.ArgumentList.Add(a);
        p = Process.Start(psi) ?? throw new InvalidOperationException("cannot start " + list[0]);
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (gate) stdout.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (gate) stderr.AppendLine(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
    }

    public string Stdout { get { lock (gate) return stdout.ToString(); } }
    public string Stderr { get { lock (gate) return stderr.ToString(); } }

    /// <summary>Waits until stdout or stderr holds <paramref name="text"/>; false on timeout or exit.</summary>
    public bool WaitFor(string text, TimeSpan limit)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < limit)
        {
            if (Stdout.Contains(text, StringComparison.Ordinal) || Stderr.Contains(text, StringComparison.Ordinal))
                return true;
            if (p.HasExited)
                return false;
            Thread.Sleep(20);
        }
        return false;
    }

    /// <summary>SIGINT to timeout(1), which passes it on; waits for the exit.</summary>
    public void Interrupt(TimeSpan limit)
    {
        if (!p.HasExited)
            Forensics.Datapath.Lab.Commands.Run("kill", ["-INT", p.Id.ToString(CultureInfo.InvariantCulture)]);
        Wait(limit);
    }

    public void Wait(TimeSpan limit)
    {
        if (!p.WaitForExit(limit))
        {
            try
            {
                p.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
            }
            p.WaitForExit(5000);
        }
        else
        {
            p.WaitForExit(); // flushes the async readers
        }
    }

    public void Dispose()
    {
        if (!p.HasExited)
            Wait(TimeSpan.Zero);
        p.Dispose();
    }
}
