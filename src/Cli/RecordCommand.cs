using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using Forensics.Format;
using Forensics.Datapath;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Probes;
using Forensics.Recorder;
using Forensics.Recorder.Sessions;
using Forensics.Recorder.Tables;

namespace Forensics.Cli;

/// <summary>What <c>forensics record</c> was asked to do, after parsing.</summary>
public sealed record RecordArgs(
    string Output,
    TimeSpan? Duration,
    IReadOnlySet<EventKind> Kinds,
    IReadOnlyList<string> ExcludeCidrs,
    string? TetragonPolicy,
    uint Snaplen,
    uint RingBytes,
    bool Progress,
    string? Lab = null,
    MonitorAggregation MonitorAggregation = MonitorAggregation.Medium,
    uint CaptureFirst = EventOptions.DefaultCaptureFirst,
    bool Probes = true,
    IReadOnlyList<Forensics.Cilium.LiveEndpoint>? Cilium = null,
    int MaxPods = 1000,
    string? RuntimeEndpoint = null,
    string? PodsFile = null,
    IReadOnlyList<string>? Datapaths = null,
    IReadOnlyList<string>? Netns = null,
    string? ServicesFile = null,
    TimeSpan? FlowInterval = null);

/// <summary><c>forensics record</c>: the main job.</summary>
public static class RecordCommand
{
    internal static readonly string[] KindNames = [.. Enumerable.Range(1, (int)EventKind.Max - 1).Select(k => Rows.TableOf((EventKind)k))];

    public static Command Build()
    {
        var duration = Vocabulary.Duration("--duration", "-d", "Stop after this long (e.g. 30s, 10m, 1h); without it, record until Ctrl-C or SIGTERM");
        var output = Vocabulary.Output("Recording folder, created mode 0700 (default: ./recording-YYYYMMDD-HHMMSS)");
        var types = Vocabulary.Types($"Event kinds to record, comma-separated or repeated: {string.Join(", ", KindNames)} (default: all)", KindNames);
        var exclude = Vocabulary.Cidrs("--exclude-cidr", "Never report connects to this CIDR (repeatable); filtered in the kernel, counted");
        var tetragon = Vocabulary.InputFile("--tetragon-policy", "Record the connects a Tetragon TracingPolicy file's network hooks select, filtered in the kernel (docs/tetragon-policy.md; ${VARS} from the environment)");
        var snaplen = Vocabulary.Number("--snaplen", $"Bytes of each packet to capture, 0 turns capture off (max {Limits.CaptureMax})", 128, 0, Limits.CaptureMax);
        var lab = Vocabulary.InputFile("--lab", "Build the lab of this YAML file (Pods, Services, CiliumNetworkPolicies, a Lab), attach the datapath, run its scenario steps, and record it all; the lab is removed afterwards");
        var ring = Vocabulary.Size("--ring-size", "Ring buffer size per BPF object (a power of two from 4K to 1G)", 16UL << 20, 4096, 1UL << 30, powerOfTwo: true);
        var (aggregation, capture, captureFirst) = SamplingOptions();
        var flowInterval = Vocabulary.FlowInterval();
        var maxPods = LabCommand.MaxPodsOption();
        var datapath = new Option<string[]>("--datapath") { Description = "Without --lab: record the running datapath of this lab only (repeatable; default: every running datapath, as `forensics lab up` serves them: its events from its monitor socket, its tables from its pinned maps at start and end)" };
        datapath.Validators.Add(r =>
        {
            foreach (var n in r.Tokens.Select(t => t.Value))
                if (string.IsNullOrWhiteSpace(n))
                    r.AddError("--datapath: an empty lab name");
        });
        var from = new Option<string[]>("--from")
        {
            Description = "What to record, repeatable or comma-separated: probes (this tool's tracing probes, the default), hubble[=ADDR] (Cilium's Hubble: observer.Observer/GetFlows, default " + Forensics.Cilium.LiveEndpoint.HubbleSocket + "; Hubble Relay: host:4245), tetragon[=ADDR] (tetragon.FineGuidanceSensors/GetEvents, default " + Forensics.Cilium.LiveEndpoint.TetragonSocket + "); Hubble and Tetragon alone need no root",
            AllowMultipleArgumentsPerToken = true,
        };
        from.Validators.Add(r =>
        {
            try
            {
                ParseFrom(r.Tokens.Select(t => t.Value), new Forensics.Cilium.TlsOptions());
            }
            catch (FormatException e)
            {
                r.AddError(e.Message);
            }
        });
        var runtime = new Option<string?>("--runtime-endpoint") { Description = "Container runtime CRI socket for pod and container attribution (default: the first of " + string.Join(", ", Forensics.Runtime.CriClient.WellKnownEndpoints) + " that exists)" };
        var pods = Vocabulary.InputFile("--pods-file", "Attribute pods and containers from this file (kubectl get pods -A -o json) instead of asking the runtime");
        var services = Vocabulary.InputFile("--services-file", "Name the services of the kernel's NAT from this file (kubectl get svc,endpointslices -A -o json) before kube-proxy's rules; its addresses are inside the cluster");
        var netns = new Option<string[]>("--netns") { Description = "Also record the kernel's conntrack (NAT), kube-proxy's rules and the node addresses of this network namespace: a name of `ip netns` or a path such as /proc/PID/ns/net (repeatable; a containerd lab's node is <lab>-node)" };
        netns.Validators.Add(r =>
        {
            foreach (var v in r.Tokens.Select(t => t.Value))
            {
                try
                {
                    NetnsPath(v);
                }
                catch (FormatException e)
                {
                    r.AddError(e.Message);
                }
            }
        });
        runtime.Validators.Add(r =>
        {
            if (r.Tokens.Count > 0 && string.IsNullOrWhiteSpace(r.Tokens[0].Value))
                r.AddError("--runtime-endpoint: an empty address");
        });
        var tls = new Option<bool>("--tls") { Description = "Hubble Relay over TLS (as hubble observe --tls)" };
        var tlsInsecure = new Option<bool>("--tls-allow-insecure") { Description = "TLS without checking the server's certificate" };
        var tlsCa = new Option<string[]>("--tls-ca-cert-files") { Description = "PEM files of the CAs that sign the server's certificate", AllowMultipleArgumentsPerToken = true };
        tlsCa.Validators.Add(r =>
        {
            foreach (var f in r.Tokens.Select(t => t.Value))
                if (Vocabulary.InputFileProblem(f) is { } problem)
                    r.AddError($"--tls-ca-cert-files: {f}: {problem}");
        });
        var tlsCert = Vocabulary.InputFile("--tls-client-cert-file", "PEM client certificate (mutual TLS)");
        var tlsKey = Vocabulary.InputFile("--tls-client-key-file", "PEM key of the client certificate");
        var tlsServer = new Option<string?>("--tls-server-name") { Description = "the server name to verify the certificate against" };
        tlsServer.Validators.Add(r =>
        {
            if (r.Tokens.Count > 0 && string.IsNullOrWhiteSpace(r.Tokens[0].Value))
                r.AddError("--tls-server-name: an empty name");
        });
        var cmd = new Command("record", "Record the probes (exec, exit, connect, kernel drops) and every running datapath (`lab up`), with --lab the datapath of a lab scenario, and with --from Cilium's Hubble and Tetragon, to Parquet with a manifest; stops on --duration, Ctrl-C, SIGTERM, or when the lab scenario is done")
        {
            duration, output, lab, datapath, types, exclude, tetragon, snaplen, capture, captureFirst, ring, aggregation, flowInterval, maxPods, runtime, pods, netns, services, from, tls, tlsInsecure, tlsCa, tlsCert, tlsKey, tlsServer,
        };
        cmd.SetAction(parse =>
        {
            var args = new RecordArgs(
                parse.GetValue(output) ?? $"recording-{DateTime.Now:yyyyMMdd-HHmmss}",
                parse.GetValue(duration),
                ParseKinds(parse.GetValue(types) ?? []),
                parse.GetValue(exclude) ?? [],
                parse.GetValue(tetragon),
                (uint)parse.GetValue(snaplen),
                (uint)parse.GetValue(ring).Bytes,
                !Console.IsErrorRedirected,
                parse.GetValue(lab),
                parse.GetValue(aggregation) == "medium" ? MonitorAggregation.Medium : MonitorAggregation.None,
                CaptureFirstOf(parse.GetValue(capture)!, (uint)parse.GetValue(captureFirst)),
                MaxPods: (int)parse.GetValue(maxPods),
                FlowInterval: parse.GetValue(flowInterval).Value is { Ticks: > 0 } fi ? fi : null);
            if (parse.GetValue(capture) == "none")
                args = args with { Snaplen = 0 };
            var tlsOptions = new Forensics.Cilium.TlsOptions
            {
                Enabled = parse.GetValue(tls) || parse.GetValue(tlsCa) is { Length: > 0 } || parse.GetValue(tlsCert) is not null || parse.GetValue(tlsInsecure),
                AllowInsecure = parse.GetValue(tlsInsecure),
                CaCertFiles = parse.GetValue(tlsCa) ?? [],
                ClientCertFile = parse.GetValue(tlsCert),
                ClientKeyFile = parse.GetValue(tlsKey),
                ServerName = parse.GetValue(tlsServer),
            };
            try
            {
                var (probes, cilium) = ParseFrom(parse.GetValue(from) ?? [], tlsOptions);
                args = args with { Probes = probes, Cilium = cilium, Datapaths = parse.GetValue(datapath) ?? [], RuntimeEndpoint = parse.GetValue(runtime), PodsFile = parse.GetValue(pods),
                    Netns = [.. (parse.GetValue(netns) ?? []).Select(NetnsPath)], ServicesFile = parse.GetValue(services) };
                if (args.Lab is not null && args.Datapaths.Count > 0)
                    throw new FormatException("--datapath attaches to a running datapath; --lab builds its own: give one of them");
                if (args.RuntimeEndpoint is not null && args.PodsFile is not null)
                    throw new FormatException("--runtime-endpoint and --pods-file both say where pods come from: give one");
            }
            catch (FormatException e)
            {
                throw new UsageException(e.Message, e);
            }
            return Run(args);
        });
        return cmd;
    }

    /// <summary>
    /// --monitor-aggregation, --capture and --capture-first: what the datapath traces and captures (record --lab and
    /// lab up); the defaults fit a long recording of a busy node (docs/long-recordings.md), every packet is one option away.
    /// </summary>
    internal static (Option<string> Aggregation, Option<string> Capture, Option<long> First) SamplingOptions() => (
        Vocabulary.Choice("--monitor-aggregation",
            "Trace events of tracked connections, as Cilium's monitor aggregation: medium (a connection's first packet and first reply, new TCP flags per direction, one every ~5 s) or none (every packet); drops, verdicts and NAT are never aggregated",
            "medium", "medium", "none"),
        Vocabulary.Choice("--capture",
            "Packets captured (their first --snaplen bytes): first (every dropped packet and the first --capture-first packets of each connection at each endpoint), all (every packet), drops (dropped packets only) or none",
            "first", "first", "all", "drops", "none"),
        Vocabulary.Number("--capture-first", "With --capture first: packets of each connection captured at each endpoint, both directions counted",
            EventOptions.DefaultCaptureFirst, 1, 65535));

    /// <summary>The datapath's capture-first count for a --capture mode.</summary>
    internal static uint CaptureFirstOf(string mode, uint first) => mode switch
    {
        "all" => EventOptions.CaptureAll,
        "drops" => 0,
        _ => first,
    };

    /// <summary>--from values: whether this tool's probes run, and the Cilium sources.</summary>
    internal static (bool Probes, List<Forensics.Cilium.LiveEndpoint> Cilium) ParseFrom(IEnumerable<string> values, Forensics.Cilium.TlsOptions tls)
    {
        var list = values.SelectMany(s => s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToList();
        if (list.Count == 0)
            return (true, []);
        bool probes = false;
        var cilium = new List<Forensics.Cilium.LiveEndpoint>();
        foreach (var v in list)
        {
            if (v.Equals("probes", StringComparison.OrdinalIgnoreCase))
                probes = true;
            else
                cilium.Add(Forensics.Cilium.LiveEndpoint.Parse(v, tls) ?? throw new FormatException($"--from {v}: not a source (probes, hubble[=ADDR], tetragon[=ADDR])"));
        }
        return (probes, cilium);
    }

    /// <summary>A --netns value as a path: a name of `ip netns` (/run/netns/NAME) or a path; it must exist.</summary>
    internal static string NetnsPath(string value)
    {
        var path = value.Contains('/', StringComparison.Ordinal) ? value : Path.Combine("/run/netns", value);
        if (string.IsNullOrWhiteSpace(value) || value is "." or ".." || !File.Exists(path))
            throw new FormatException($"--netns {value}: no such network namespace ({path})");
        return path;
    }

    internal static HashSet<EventKind> ParseKinds(IEnumerable<string> values)
    {
        var kinds = new HashSet<EventKind>();
        foreach (var v in values.SelectMany(s => s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)))
        {
            int i = Array.IndexOf(KindNames, v.ToLowerInvariant());
            if (i < 0)
                throw new FormatException($"unknown event kind '{v}' (kinds: {string.Join(", ", KindNames)})");
            kinds.Add((EventKind)(i + 1));
        }
        return kinds;
    }

    public static int Run(RecordArgs args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var ciliumSources = args.Cilium ?? [];
        if (!args.Probes && args.Lab is null)
        {
            if (ciliumSources.Count == 0)
                return ForensicsCommand.Fail(ExitCode.Usage, "--from names no source");
            // The folder is held (flock) while Hubble and Tetragon write into it, as a kernel recording's is.
            Forensics.Recorder.Storage.OutputFolder folder;
            try
            {
                folder = RecordingSession.PrepareOutput(args.Output);
            }
            catch (RecordingSetupException e)
            {
                return ForensicsCommand.Fail(Exit(e.Problem), e.Message);
            }
            try
            {
                return CiliumRecord.Run(args, ciliumSources);
            }
            finally
            {
                folder.Abandon(); // unlocks; removes the folder only if it made it and nothing was written
            }
        }
        Forensics.Cilium.CiliumSources? cilium = null;
        var session = new RecordingSession(new RecordingSessionOptions
        {
            Output = args.Output,
            Duration = args.Duration,
            Kinds = args.Probes ? args.Kinds : new HashSet<EventKind> { EventKind.Drop, EventKind.Policy, EventKind.Nat, EventKind.Trace, EventKind.Capture },
            ExcludeCidrs = args.ExcludeCidrs,
            TetragonPolicy = args.TetragonPolicy,
            Snaplen = args.Snaplen,
            RingBytes = args.RingBytes,
            MonitorAggregation = args.MonitorAggregation,
            CaptureFirst = args.CaptureFirst,
            FlowInterval = args.FlowInterval,
            Lab = args.Lab,
            MaxPods = args.MaxPods,
            RuntimeEndpoint = args.RuntimeEndpoint,
            PodsFile = args.PodsFile,
            ConntrackNetns = args.Netns ?? [],
            ServicesFile = args.ServicesFile,
            Attach = args.Lab is null ? args.Datapaths ?? [] : null,
            Progress = args.Progress,
            Say = Console.WriteLine,
            Note = m => Console.Error.WriteLine("note: " + m),
            // Hubble and Tetragon write into the recording beside the kernel's sources (until they are sources of the seam)
            Companion = ciliumSources.Count == 0 ? null : (recording, token) =>
            {
                cilium = new Forensics.Cilium.CiliumSources(ciliumSources, new Forensics.Cilium.KernelRecordingTarget(recording, args.Output), Environment.MachineName);
                try
                {
                    foreach (var v in cilium.CheckAsync(TimeSpan.FromSeconds(5), token).GetAwaiter().GetResult())
                        Console.Error.WriteLine($"recording from {v}");
                }
                catch (Forensics.Cilium.SourceUnavailableException e)
                {
                    cilium.DisposeAsync().AsTask().GetAwaiter().GetResult();
                    cilium = null;
                    throw new RecordingSetupException(e.Message, SetupProblem.Prerequisite, e);
                }
                cilium.Start(token);
                return () => cilium.StopAsync(null).GetAwaiter().GetResult();
            },
        });
        using var cts = new CancellationTokenSource();
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; session.StopReason = "interrupt"; cts.Cancel(); });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; session.StopReason = "terminate"; cts.Cancel(); });
        if (args.Progress)
        {
            var waiter = new Thread(() =>
            {
                if (WaitHandle.WaitAny([session.Started.WaitHandle, cts.Token.WaitHandle]) == 0)
                    Console.Error.WriteLine($"recording to {args.Output}{(args.Duration is { } dd ? $" for {dd}" : "")}"
                        + (session.Attached.Count > 0 ? $", the running datapath {string.Join(", ", session.Attached)}" : args.Lab is null ? ", no running datapath" : "")
                        + "; Ctrl-C stops");
            }) { IsBackground = true };
            waiter.Start();
        }
        RecordingSummary summary;
        try
        {
            summary = session.Run(cts.Token);
        }
        catch (RecordingSetupException e)
        {
            return ForensicsCommand.Fail(Exit(e.Problem), e.Message);
        }
        if (cilium is not null && session.Recording is { } rec)
        {
            ulong lost = 0;
            long malformed = 0;
            rec.WithManifest(m =>
            {
                lost = m.Loss.Values.Aggregate(0UL, (a, l) => a + l.Failed + l.UserspaceDropped);
                malformed = Forensics.Cilium.CiliumSources.Malformed(m);
            }, write: true);
            summary = summary with
            {
                EventsLost = lost,
                Rows = rec.Manifest.Tables.ToDictionary(t => t.Key, t => t.Value.Rows),
                Loss = new Dictionary<string, ManifestLoss>(rec.Manifest.Loss),
            };
            if (malformed > 0 && summary.Error is null && lost == 0)
            {
                PrintSummary(summary);
                return ForensicsCommand.Fail(ExitCode.EventsLost, $"{malformed} message(s) from Hubble/Tetragon could not be decoded (counted in the manifest's sources)");
            }
        }
        PrintSummary(summary);
        if (summary.Error is not null)
            return ForensicsCommand.Fail(summary.StopReason == "disk-full" ? ExitCode.DiskFull : ExitCode.Failure, summary.Error);
        if (summary.EventsLost > 0)
            return ForensicsCommand.Fail(ExitCode.EventsLost, $"{summary.EventsLost} events were lost: {LossText(summary.Loss)}");
        return (int)ExitCode.Ok;
    }

    private static ExitCode Exit(SetupProblem p) => p switch
    {
        SetupProblem.DiskFull => ExitCode.DiskFull,
        SetupProblem.Prerequisite => ExitCode.Prerequisite,
        SetupProblem.Failure => ExitCode.Failure,
        _ => ExitCode.BadInput,
    };

    internal static void Print(RecordingSummary s) => PrintSummary(s);

    internal static string LossText(IReadOnlyDictionary<string, ManifestLoss> loss) =>
        string.Join(", ", loss.Where(l => l.Value.Failed + l.Value.UserspaceDropped > 0)
            .Select(l => l.Key is "hubble" or "tetragon"
                ? $"{l.Key} {l.Value.Failed} (reported lost by {l.Key})"
                : $"{l.Key} {l.Value.Failed + l.Value.UserspaceDropped} ({l.Value.Failed} in the kernel: {(l.Key == "nat" ? "ring buffer full or ctnetlink's ENOBUFS" : "ring buffer full")}, {l.Value.UserspaceDropped} in user space)"));

    private static void PrintSummary(RecordingSummary s)
    {
        var inv = CultureInfo.InvariantCulture;
        Console.WriteLine($"recorded {s.Elapsed.TotalSeconds.ToString("F1", inv)}s to {s.Directory} (stopped: {s.StopReason})");
        foreach (var (table, rows) in s.Rows.OrderBy(r => r.Key, StringComparer.Ordinal))
            Console.WriteLine($"  {table,-16} {rows.ToString("N0", inv),12} rows");
        Console.WriteLine($"  {s.Bytes.ToString("N0", inv)} bytes sealed; events lost: {(s.EventsLost == 0 ? "none" : s.EventsLost.ToString(inv))}");
    }
}
