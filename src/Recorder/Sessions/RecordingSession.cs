using System.Net;
using Forensics.Datapath;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Bpf;
using Forensics.Datapath.Control;
using Forensics.Datapath.Lab;
using Forensics.Datapath.Monitoring;
using Forensics.Datapath.Probes;
using Forensics.Format;
using Forensics.Recorder.Sources;
using Forensics.Recorder.Storage;
using Forensics.Recorder.Tables;

namespace Forensics.Recorder.Sessions;

/// <summary>What <c>forensics record</c> was asked to do (the CLI maps its options onto this and nothing more).</summary>
public sealed record RecordingSessionOptions
{
    public required string Output { get; init; }
    public TimeSpan? Duration { get; init; }

    /// <summary>Event kinds to record; empty: all.</summary>
    public IReadOnlySet<EventKind> Kinds { get; init; } = new HashSet<EventKind>();

    /// <summary>Connect destinations filtered in the kernel (CIDR text, as typed).</summary>
    public IReadOnlyList<string> ExcludeCidrs { get; init; } = [];

    /// <summary>A Tetragon TracingPolicy file: its network selectors filter connects in the kernel.</summary>
    public string? TetragonPolicy { get; init; }

    public uint Snaplen { get; init; } = 128;
    public uint RingBytes { get; init; } = 16u << 20;

    /// <summary>Trace aggregation of a datapath the session builds (--lab); default medium (docs/long-recordings.md).</summary>
    public MonitorAggregation MonitorAggregation { get; init; } = MonitorAggregation.Medium;

    /// <summary>Packets of each connection captured besides drops (<see cref="EventOptions.CaptureAll"/>: every packet).</summary>
    public uint CaptureFirst { get; init; } = EventOptions.DefaultCaptureFirst;

    /// <summary>
    /// The flows table (per-connection volumes): a row per active connection this often and at its end, from the
    /// datapath's conntrack map (a lab's, every running datapath attached to) and the kernel's conntrack; null: none.
    /// </summary>
    public TimeSpan? FlowInterval { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>A lab YAML: build it, attach the datapath, run its steps, record it all, remove it.</summary>
    public string? Lab { get; init; }

    /// <summary>A lab YAML with more pods than this is refused (ClusterLimits).</summary>
    public int MaxPods { get; init; } = ClusterLimits.Default.MaxPods;

    /// <summary>
    /// Running datapaths to attach to through their monitor sockets (docs/monitor.md), without rebuilding anything:
    /// null attaches to none; empty to every one running; else those named. Their events are recorded with the
    /// probes, their snapshot tables taken from their pinned maps at start and end. Not with <see cref="Lab"/>.
    /// </summary>
    public IReadOnlyList<string>? Attach { get; init; }

    /// <summary>Progress on stderr (a terminal).</summary>
    public bool Progress { get; init; }

    /// <summary>The container runtime's CRI socket for pod and container attribution (null: a well-known socket that exists).</summary>
    public string? RuntimeEndpoint { get; init; }

    /// <summary>Pods and containers from this file (kubectl get pods -A -o json) instead of the runtime.</summary>
    public string? PodsFile { get; init; }

    /// <summary>
    /// Record the kernel's conntrack (NAT by kube-proxy, Docker, a CNI) in the recorder's network namespace and in
    /// <see cref="ConntrackNetns"/>, when nat is among the kinds.
    /// </summary>
    public bool Conntrack { get; init; } = true;

    /// <summary>More network namespaces (paths) whose conntrack tables are recorded: a node's (the containerd lab's).</summary>
    public IReadOnlyList<string> ConntrackNetns { get; init; } = [];

    /// <summary>
    /// Services and their backends from <c>kubectl get svc,endpointslices -A -o json</c>: they name the service of a
    /// conntrack DNAT before kube-proxy's rules do, and their addresses are inside the cluster.
    /// </summary>
    public string? ServicesFile { get; init; }

    /// <summary>Sources besides the kernel's (docs/sources.md): made once the kernel side is up.</summary>
    public IReadOnlyList<Func<EventContext, IRecordSource>> Sources { get; init; } = [];

    /// <summary>
    /// Something that writes into the recording beside its sources (Hubble and Tetragon streams, which keep their
    /// own segment writers): started once the recording exists, given the session's token; the action it returns
    /// stops it once the recording has stopped. It may throw <see cref="RecordingSetupException"/>.
    /// </summary>
    public Func<Recording, CancellationToken, Action>? Companion { get; init; }

    /// <summary>Where step results go (the CLI: stdout).</summary>
    public Action<string>? Say { get; init; }

    /// <summary>Where notes about the input files go (what a lab or TracingPolicy holds that is not modelled; the CLI: stderr, "note: ").</summary>
    public Action<string>? Note { get; init; }

    /// <summary>Recorder tuning (tests, benchmarks).</summary>
    public RecordOptions? Tuning { get; init; }
}

/// <summary>A recording that cannot start: its output folder, its input files, the machine. The message is one line.</summary>
public sealed class RecordingSetupException : Exception
{
    public RecordingSetupException(string message, SetupProblem problem, Exception? inner = null) : base(message, inner) => Problem = problem;
    public RecordingSetupException() { }
    public RecordingSetupException(string message) : base(message) { }
    public RecordingSetupException(string message, Exception inner) : base(message, inner) { }

    public SetupProblem Problem { get; }
}

/// <summary>Why a recording could not start (the CLI maps each to its exit code).</summary>
public enum SetupProblem
{
    /// <summary>Bad input: a non-empty output folder, a bad CIDR, a policy or lab file that cannot be read.</summary>
    BadInput,

    /// <summary>The output folder's disk is full.</summary>
    DiskFull,

    /// <summary>Privileges, kernel features, BPF objects that will not load.</summary>
    Prerequisite,

    /// <summary>The lab could not be built.</summary>
    Failure,
}

/// <summary>
/// <c>forensics record</c>: builds the sources (the probes, a lab's datapath, any other source), runs a
/// <see cref="Recording"/> of them until the token is cancelled, the duration passes or the lab's scenario
/// is done, and takes everything down again. The bench runs the same code.
/// </summary>
public sealed class RecordingSession
{
    private readonly RecordingSessionOptions options;
    private volatile Recording? recording;
    private string reason = "duration";

    public RecordingSession(RecordingSessionOptions options) => this.options = options ?? throw new ArgumentNullException(nameof(options));

    /// <summary>The recording once it runs (for waiting on it).</summary>
    public Recording? Recording => recording;

    /// <summary>Set when the recording runs and every source is live.</summary>
    public ManualResetEventSlim Started { get; } = new();

    /// <summary>Why the token was cancelled ("interrupt", "terminate"); "duration" by default.</summary>
    public string StopReason
    {
        get => reason;
        set => reason = value;
    }

    /// <summary>Runs the recording; throws <see cref="RecordingSetupException"/> when it cannot start.</summary>
    public RecordingSummary Run(CancellationToken token)
    {
        var o = options;
        // One recorder per folder, held until the end; a recording that never started leaves no folder behind.
        var folder = PrepareOutput(o.Output);
        bool started = false;
        try
        {
            return Run(o, () => started = true, token);
        }
        finally
        {
            if (started)
                folder.Dispose();
            else
                folder.Abandon();
        }
    }

    private RecordingSummary Run(RecordingSessionOptions o, Action running, CancellationToken token)
    {
        try
        {
            Prerequisites.EnsureKernelAccess();
        }
        catch (PrerequisiteException e)
        {
            throw new RecordingSetupException(e.Message, SetupProblem.Prerequisite, e);
        }
        var (excluded, tracingPolicy) = ExcludedCidrs(o);
        var context = NewContext();
        // TracingPolicyNamespaced, podSelector, hostSelector: the pod of each reported connect decides (after attribution)
        if (tracingPolicy is { Scoped: true })
            context.ConnectScopes = new ConnectScopes(tracingPolicy.Filters);
        var events = new EventOptions
        {
            Kinds = o.Kinds,
            Snaplen = o.Snaplen,
            RingBytes = o.RingBytes,
            SelfPid = (uint)Environment.ProcessId,
            MonitorAggregation = o.MonitorAggregation,
            CaptureFirst = o.CaptureFirst,
        };
        var cluster = o.Lab is null ? null : LoadLab(o.Lab, o.MaxPods);
        foreach (var n in (tracingPolicy?.Notices ?? []).Concat(cluster?.Notices ?? []))
            o.Note?.Invoke(n);
        var servicesFile = o.ServicesFile is null ? null : LoadServices(o.ServicesFile);

        var objects = new List<IEventSource>();
        var preamble = new List<byte[]>();
        TracingProbes? probes = null;
        NetnsLab? lab = null;
        Workloads? workloads = null;
        var extra = new List<IRecordSource>();
        try
        {
            var probeSet = ProbesFor(o.Kinds);
            if (probeSet != ProbeSet.None)
            {
                try
                {
                    probes = TracingProbes.Load(new ProbeOptions
                    {
                        Events = events, Enabled = probeSet, ExcludedCidrs = excluded, ConnectFilters = tracingPolicy?.Filters ?? [],
                    });
                    objects.Add(probes);
                    probes.Attach();
                    ulong now = KernelClock.MonotonicNs();
                    var seeded = probes.SeedProcesses();
                    if ((probeSet & ProbeSet.Exec) != 0)
                        preamble.AddRange(seeded.Select(p => p.ToExecRecord(now)));
                }
                catch (BpfException e)
                {
                    throw new RecordingSetupException(e.Message, SetupProblem.Prerequisite, e);
                }
            }
            if (cluster is not null)
            {
                try
                {
                    lab = NetnsLab.Up(cluster, new LabOptions
                    {
                        Datapath = LabDatapath.Factory(events),
                        CollectEvents = false,
                        Progress = o.Progress ? m => Console.Error.WriteLine("lab: " + m) : null,
                    });
                    objects.Add(lab.Datapath!.Events);
                    if (lab.Datapath is LabDatapath labDatapath)
                        context.PolicyRules = labDatapath.Datapath.RulesOf; // verdicts and policy drops name their rules
                    context.InterfaceName = new InterfaceNames(Path.Combine(NetNamespace.Dir, lab.State.NodeNetns)).Name;
                    foreach (var pod in cluster.Pods)
                        context.Attribution.Register("/run/netns/" + LabNames.PodNs(lab.Name, pod), pod.Namespace, pod.Name, pod.Labels);
                }
                catch (Exception e) when (e is LabException or BpfException)
                {
                    throw new RecordingSetupException(e.Message, SetupProblem.Failure, e);
                }
            }
            if (probes is not null)
            {
                // pods and containers from the runtime (or a pods file); a source that cannot be read is a warning, not a stop
                workloads = Workloads.Open(o.RuntimeEndpoint, o.PodsFile, lab?.Name);
                context.Workloads = workloads.Watcher;
                workloads.Watcher.Start();
            }
            var attached = new List<DatapathSocketSource>();
            if (cluster is null && o.Attach is not null)
            {
                var dpKinds = DatapathKinds(o.Kinds);
                try
                {
                    foreach (var state in dpKinds.Count == 0 ? [] : DatapathSocketSource.Running(o.Attach))
                    {
                        var src = new DatapathSocketSource(state.Name, state.MonitorSocket!, dpKinds, context, "record");
                        extra.Add(src);
                        attached.Add(src);
                        foreach (var ep in state.Endpoints)
                        {
                            var (ns, pod) = ep.Pod.Split('/') is [var a, var b] ? (a, b) : ("default", ep.Pod);
                            try
                            {
                                context.Attribution.Register("/run/netns/" + ep.Netns, ns, pod);
                            }
                            catch (IOException)
                            {
                                // the pod's namespace went away: its events are not attributed
                            }
                        }
                    }
                }
                catch (MonitorConnectException e)
                {
                    throw new RecordingSetupException(e.Message, SetupProblem.Prerequisite, e);
                }
            }
            Attached = [.. attached.Select(a => a.Lab)];
            if (o.FlowInterval is { } flowInterval)
            {
                // per-connection volumes from the datapaths' conntrack maps (docs/flows.md)
                var maps = new List<FlowMaps>();
                bool pinned = false;
                if (lab?.Datapath is LabDatapath own)
                    maps.Add(FlowMaps.Of(lab.Name, own.Datapath));
                foreach (var a in attached)
                {
                    try
                    {
                        maps.Add(DatapathFlowSource.OpenPinned(a.Lab, a.Hello.PinDir));
                        pinned = true;
                    }
                    catch (Datapath.Bpf.BpfException e)
                    {
                        // its events are recorded; its flows are not (said in the manifest by the datapath's source)
                        options.Say?.Invoke($"flows of the datapath {a.Lab} not recorded: {e.Message}");
                    }
                }
                if (maps.Count > 0)
                    extra.Add(new DatapathFlowSource(maps, new FlowOptions { Interval = flowInterval }, context.MonotonicToUtcOffsetNs, ownsMaps: pinned));
            }
            foreach (var make in o.Sources)
                extra.Add(make(context));
            // a services file names services first (the cluster's own words), kube-proxy's rules after it
            IReadOnlyList<Datapath.Cluster.ServiceFrontend> nodeServices = servicesFile?.Services ?? [];
            var ranges = new NodeRangesSeen();
            bool conntrack = o.Conntrack && (o.Kinds.Count == 0 || o.Kinds.Contains(EventKind.Nat));
            if (cluster is null)
            {
                // what is inside the cluster, as this node sees it (a lab describes its own): kube-proxy's rules (service
                // ports, --cluster-cidr), CNI configuration, the node's addresses (the recorder's namespace and the node's)
                foreach (var p in new string?[] { null }.Concat(o.ConntrackNetns))
                {
                    if (conntrack)
                    {
                        // run only when NAT is recorded: it starts iptables-save and nft
                        var (svcs, podCidrs, _) = Datapath.Cluster.KubeProxyRules.Read(p);
                        nodeServices = [.. nodeServices, .. svcs];
                        ranges.PodCidrs.AddRange(podCidrs.Select(c => c.ToString()));
                    }
                    try
                    {
                        ranges.NodeAddresses.AddRange(Datapath.Cluster.NodeRanges.Addresses(p).Select(a => a.ToString()));
                    }
                    catch (Exception e) when (e is LabException or IOException or UnauthorizedAccessException)
                    {
                        // a namespace that cannot be entered names no address (its conntrack source says why it is not recorded)
                    }
                }
                ranges.PodCidrs.AddRange(Datapath.Cluster.NodeRanges.CniPodCidrs().Select(r => r.Cidr.ToString()));
                ranges.PodCidrs.AddRange((servicesFile?.PodCidrs ?? []).Select(c => c.ToString()));
            }
            if (conntrack)
            {
                extra.Add(new Conntrack.ConntrackSource(new Conntrack.ConntrackSourceOptions
                {
                    Capture = new Conntrack.ConntrackCaptureOptions
                    {
                        Targets = [new Conntrack.ConntrackTarget(null, "host"), .. o.ConntrackNetns.Select(p => new Conntrack.ConntrackTarget(p, Path.GetFileName(p)))],
                        Accounting = o.FlowInterval is not null,
                    },
                    Services = nodeServices,
                    FlowInterval = o.FlowInterval,
                }));
            }

            var sources = new List<IRecordSource>();
            KernelSource? kernel = null;
            if (objects.Count > 0)
            {
                // the probes are this recording's: detached when it stops, so that what they emitted is counted to their end
                var ownProbes = probes;
                kernel = new KernelSource(objects, context, (o.Tuning ?? new RecordOptions { OutputDir = o.Output }).Pipeline.PollMs)
                {
                    StopEmitting = ownProbes is null ? null : ownProbes.Detach,
                };
                kernel.Preamble.AddRange(preamble);
                sources.Add(kernel);
            }
            sources.AddRange(extra);
            var tuning = (o.Tuning ?? new RecordOptions { OutputDir = o.Output }) with
            {
                OutputDir = o.Output,
                Progress = o.Progress,
                Duration = o.Duration,
                Config = Config(o, cluster, excluded, ranges, tracingPolicy),
            };
            if (attached.Count > 0 && tuning.Config is { } config)
            {
                config.PodCidrs = [.. attached.SelectMany(a => a.Hello.PodCidrs).Distinct(StringComparer.Ordinal)];
                config.ServiceCidrs = [.. attached.SelectMany(a => a.Hello.ServiceCidrs).Distinct(StringComparer.Ordinal)];
                // the running datapath decided what it traces and captures when it was started (lab up): say its settings
                var hello = attached[0].Hello;
                config.Snaplen = hello.Snaplen;
                config.MonitorAggregation = hello.MonitorAggregation;
                (config.Capture, config.CaptureFirst) = ManifestConfig.CaptureMode(hello.Snaplen, hello.CaptureFirst);
            }
            var rec = new Recording(sources, tuning, context.MonotonicToUtcOffsetNs);
            var dp = lab?.Datapath as LabDatapath;
            if (dp is not null)
                rec.Snapshots.AddRange(SnapshotTables.From(dp.Datapath.Snapshot(), "start"));
            if (attached.Count > 0)
            {
                try
                {
                    foreach (var a in attached)
                        rec.Snapshots.AddRange(SnapshotTables.From(a.Snapshot(), "start"));
                }
                catch (Exception e) when (e is IOException or InvalidDataException or Datapath.Bpf.BpfException or UnauthorizedAccessException)
                {
                    throw new RecordingSetupException($"reading the running datapath's state: {e.Message}", SetupProblem.Prerequisite, e);
                }
            }
            rec.EndSnapshots = () =>
            {
                workloads?.Watcher.Stop(); // the "end" rows of pods and containers follow with the last periodic batch
                var end = new List<Batches.TableBatch>();
                if (dp is not null)
                    end.AddRange(SnapshotTables.From(dp.Datapath.Snapshot(), "end"));
                foreach (var a in attached)
                {
                    try
                    {
                        end.AddRange(SnapshotTables.From(a.Snapshot(), "end"));
                    }
                    catch (Exception e) when (e is IOException or InvalidDataException or Datapath.Bpf.BpfException or UnauthorizedAccessException)
                    {
                        // the datapath went down before the end: its start snapshot stands, its source says why
                    }
                }
                return end;
            };
            if (workloads is not null)
                rec.PeriodicBatches = workloads.TakeBatches;
            if (nodeServices.Count > 0)
                rec.Snapshots.Add(SnapshotTables.Services("start", DateTimeOffset.UtcNow, ServiceRow.From(nodeServices)));
            if (probes is not null)
            {
                rec.UpdateManifest = m =>
                {
                    m.FilteredConnects = probes.FilteredConnects + probes.UnselectedConnects + (context.ConnectScopes?.OutOfScope ?? 0);
                    m.Attribution = workloads?.ManifestEntry();
                };
            }
            recording = rec;

            using var stop = CancellationTokenSource.CreateLinkedTokenSource(token);
            if (o.Duration is { } d)
                stop.CancelAfter(d);
            Thread? steps = null;
            var watcher = new Thread(() =>
            {
                if (rec.WaitStarted(TimeSpan.FromSeconds(30)))
                    Started.Set();
            }) { IsBackground = true, Name = "fx-started" };
            watcher.Start();
            if (lab is not null)
            {
                steps = new Thread(() => RunSteps(lab, () => { reason = "scenario-done"; stop.Cancel(); }, stop.Token)) { IsBackground = true, Name = "lab steps" };
                steps.Start();
            }
            var stopCompanion = o.Companion?.Invoke(rec, stop.Token);
            try
            {
                running();
                return rec.Run(() => reason, stop.Token);
            }
            finally
            {
                stop.Cancel();
                steps?.Join(TimeSpan.FromSeconds(30));
                stopCompanion?.Invoke();
            }
        }
        finally
        {
            workloads?.Dispose();
            lab?.Dispose();
            probes?.Dispose();
            foreach (var s in extra)
                s.Dispose();
        }
    }

    /// <summary>The running datapaths this session attached to (their lab names), once it runs.</summary>
    public IReadOnlyList<string> Attached { get; private set; } = [];

    /// <summary>The datapath's event kinds among those asked for (empty: all kinds asked for).</summary>
    public static IReadOnlySet<EventKind> DatapathKinds(IReadOnlySet<EventKind> kinds)
    {
        ArgumentNullException.ThrowIfNull(kinds);
        return Enumerable.Range((int)EventKind.Drop, (int)EventKind.Capture - (int)EventKind.Drop + 1).Select(k => (EventKind)k)
            .Where(k => kinds.Count == 0 || kinds.Contains(k)).ToHashSet();
    }

    /// <summary>The clock offsets and name tables decoding needs, read from the running kernel.</summary>
    /// <summary>
    /// The interface names of a running lab's node namespace (the datapath's ifindex values name them); each
    /// attached datapath's records are decoded with its own (DatapathSocketSource).
    /// </summary>
    internal static Func<uint, string?> InterfaceNamesOf(string lab) => new InterfaceNames(Path.Combine(NetNamespace.Dir, LabNames.NodeNs(lab))).Name;

    public static EventContext NewContext()
    {
        var (mono, boot) = KernelClock.UtcOffsets();
        return new EventContext(mono)
        {
            BoottimeToUtcOffsetNs = boot,
            KernelDropReason = KernelDropReasons.FromRunningKernel().Name,
            KernelSymbol = KernelSymbols.Load().Resolve,
        };
    }

    /// <summary>The probes an event kind selection needs.</summary>
    public static ProbeSet ProbesFor(IReadOnlySet<EventKind> kinds)
    {
        ArgumentNullException.ThrowIfNull(kinds);
        bool All(EventKind k) => kinds.Count == 0 || kinds.Contains(k);
        var set = ProbeSet.None;
        if (All(EventKind.Exec)) set |= ProbeSet.Exec;
        if (All(EventKind.Exit)) set |= ProbeSet.Exit;
        if (All(EventKind.Connect)) set |= ProbeSet.Connect;
        if (All(EventKind.Kdrop)) set |= ProbeSet.Kdrop;
        return set;
    }

    /// <summary>
    /// Claims the output folder for one recorder (<see cref="OutputFolder"/>: absent or empty, created 0700, held by
    /// a flock until disposed; <see cref="OutputFolder.Abandon"/> removes it again when nothing was recorded);
    /// throws <see cref="RecordingSetupException"/>: another process holds it (Failure), not empty or not
    /// writable (BadInput), disk full (DiskFull).
    /// </summary>
    public static OutputFolder PrepareOutput(string output)
    {
        try
        {
            return OutputFolder.Claim(output);
        }
        catch (OutputFolderException e)
        {
            throw new RecordingSetupException(e.Message, e.Problem switch
            {
                OutputFolderProblem.DiskFull => SetupProblem.DiskFull,
                OutputFolderProblem.Busy => SetupProblem.Failure,
                _ => SetupProblem.BadInput,
            }, e);
        }
    }

    private static (List<IPNetwork> Excluded, TracingPolicySet? Policy) ExcludedCidrs(RecordingSessionOptions o)
    {
        try
        {
            List<IPNetwork> excluded = [.. o.ExcludeCidrs.Select(Cidrs.Parse)];
            var policy = o.TetragonPolicy is null ? null : TracingPolicyReader.ReadFile(o.TetragonPolicy);
            return (excluded, policy);
        }
        catch (Exception e) when (e is FormatException or TracingPolicyException or IOException)
        {
            throw new RecordingSetupException(e.Message, SetupProblem.BadInput, e);
        }
    }

    private static Datapath.Cluster.ClusterServices LoadServices(string path)
    {
        try
        {
            return Datapath.Cluster.ServicesFile.Read(path);
        }
        catch (Datapath.Cluster.ClusterInputException e)
        {
            throw new RecordingSetupException(e.Message, SetupProblem.BadInput, e);
        }
    }

    private static ClusterSpec LoadLab(string path, int maxPods)
    {
        try
        {
            var cluster = ClusterLoader.LoadFile(path, ClusterLimits.Default with { MaxPods = maxPods });
            if (cluster.Lab is null)
                throw new ClusterSpecException($"{path}: no Lab document (kind: Lab): --lab needs one");
            return cluster;
        }
        catch (Exception e) when (e is ClusterSpecException or IOException)
        {
            throw new RecordingSetupException(e.Message, SetupProblem.BadInput, e);
        }
    }

    /// <summary>Ranges a node without a lab shows: pod CIDRs (kube-proxy, CNI), its own addresses.</summary>
    private sealed class NodeRangesSeen
    {
        public List<string> PodCidrs { get; } = [];
        public List<string> NodeAddresses { get; } = [];
    }

    private static ManifestConfig Config(RecordingSessionOptions o, ClusterSpec? cluster, List<IPNetwork> excluded, NodeRangesSeen seen, TracingPolicySet? tracingPolicy) => new()
    {
        Kinds = [.. o.Kinds.Count == 0 ? Format.Tables.Events : o.Kinds.Order().Select(Rows.TableOf)],
        Lab = o.Lab is null ? null : Path.GetFullPath(o.Lab),
        PodCidrs = cluster?.Lab is { } l ? [l.PodCidr.ToString()] : [.. seen.PodCidrs.Distinct()],
        ServiceCidrs = cluster?.Lab is { } l2 ? [l2.ServiceCidr.ToString()] : [],
        NodeAddresses = [.. seen.NodeAddresses.Distinct()],
        PoliciesSha256 = cluster is null ? null : Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(
            System.Text.Encoding.UTF8.GetBytes(string.Join("\n---\n", cluster.Policies.Select(p => p.SourceText))))),
        // what the TracingPolicy's NotDAddr leaves out is what its author counts as the cluster
        ExcludeCidrs = [.. excluded.Concat(tracingPolicy?.ExcludedCidrs ?? []).Select(c => c.ToString()).Distinct()],
        Snaplen = o.Snaplen,
        RingBytes = o.RingBytes,
        MonitorAggregation = o.MonitorAggregation.ToString().ToLowerInvariant(),
        Capture = ManifestConfig.CaptureMode(o.Snaplen, o.CaptureFirst).Mode,
        CaptureFirst = ManifestConfig.CaptureMode(o.Snaplen, o.CaptureFirst).First,
        DurationSeconds = o.Duration?.TotalSeconds,
        FlowIntervalSeconds = o.FlowInterval?.TotalSeconds,
    };

    /// <summary>Runs the lab's scenario steps once every source is live; without a duration, ends the recording after them.</summary>
    private void RunSteps(NetnsLab lab, Action done, CancellationToken token)
    {
        if (!WaitHandle.WaitAny([Started.WaitHandle, token.WaitHandle]).Equals(0))
            return;
        foreach (var step in lab.Cluster.Lab!.Steps)
        {
            if (token.IsCancellationRequested)
                return;
            try
            {
                var r = lab.RunStep(step);
                options.Say?.Invoke($"step {step.Name}: {step.Pod} {step.Action} {step.Target}: {r.Result}");
            }
            catch (LabException e)
            {
                options.Say?.Invoke($"step {step.Name}: failed to run: {e.Message}");
            }
        }
        if (options.Duration is null)
        {
            // the last packets and exits reach the ring buffers, then everything counted is taken out of them
            token.WaitHandle.WaitOne(TimeSpan.FromMilliseconds(1500));
            recording?.WaitCaughtUp(TimeSpan.FromSeconds(5));
            done();
        }
    }
}
