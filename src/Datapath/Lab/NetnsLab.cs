using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json;
using Forensics.Datapath.Bpf;
using Forensics.Datapath.Control;
using Forensics.Datapath.Interop;
using Forensics.Datapath.Monitoring;

namespace Forensics.Datapath.Lab;

/// <summary>The datapath as the lab drives it: attached to every pod's host veth and to the node's world device.</summary>
public interface ILabDatapath : IDisposable
{
    /// <summary>The ring buffer the attached programs emit into.</summary>
    IEventSource Events { get; }

    void AttachEndpoint(PodSpec pod, int hostIfindex);

    void AttachNetworkDevice(int ifindex);
}

public sealed record LabOptions
{
    /// <summary>Loads the datapath for the cluster; null builds the lab without one (plain routing).</summary>
    public Func<ClusterSpec, ILabDatapath>? Datapath { get; init; }

    /// <summary>How to run this program's own verbs (lab serve, lab connect); null detects it.</summary>
    public IReadOnlyList<string>? SelfCommand { get; init; }

    /// <summary>How long listeners may take to come up.</summary>
    public TimeSpan ReadyTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Whether the lab reads the datapath's ring buffer itself (to check steps' drop
    /// reasons and translations). A recorder that drains the ring buffer sets false.
    /// </summary>
    public bool CollectEvents { get; init; } = true;

    /// <summary>
    /// Whether this process serves the datapath's events on the lab's monitor socket and pins its state maps,
    /// so that `monitor` and `record` in other processes can attach to it (docs/monitor.md). The lab then reads
    /// the ring buffer itself; a recorder that drains the ring buffer leaves this false.
    /// </summary>
    public bool Serve { get; init; }

    /// <summary>Bytes of each monitor client's queue.</summary>
    public int MonitorQueueBytes { get; init; } = 4 << 20;

    /// <summary>Progress lines (what is being made).</summary>
    public Action<string>? Progress { get; init; }
}

/// <summary>
/// A single-machine cluster made of network namespaces: a node namespace that
/// routes (and carries the datapath), one namespace per pod with a veth pair to
/// the node, and a world namespace with the outside hosts, their listeners, and a
/// veth to the node's world-facing device (which carries the node address).
/// Nothing is added to the machine's own namespace, so labs (and the user's
/// network) never collide.
/// </summary>
public sealed class NetnsLab : IDisposable
{
    public const string Gateway = "169.254.1.1";
    private static readonly string[] FixedNamespaces = ["the node", "the world"];
    private static readonly TcDirection[] Directions = [TcDirection.Ingress, TcDirection.Egress];
    private static readonly TimeSpan DefaultStepTimeout = TimeSpan.FromSeconds(2);

    private readonly LabOptions options;
    private readonly IReadOnlyList<string> self;
    private ILabDatapath? datapath;
    private EventCollector? collector;
    private MonitorServer? server;
    private readonly bool owned;
    private bool disposed;
    private LabLock? labLock;

    private NetnsLab(ClusterSpec cluster, LabState state, LabOptions options, IReadOnlyList<string> self, bool owned = true)
    {
        Cluster = cluster;
        State = state;
        this.options = options;
        this.self = self;
        this.owned = owned;
    }

    /// <summary>
    /// A lab another process has up (from its state file), to run steps in; disposing
    /// it leaves the lab up. Drop reasons and translations are not observed (the
    /// datapath's ring buffer belongs to the up process).
    /// </summary>
    public static NetnsLab Attach(ClusterSpec cluster, LabOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(cluster);
        var name = cluster.Lab?.Name ?? throw new LabException($"{cluster.SourceFile}: no Lab document: a lab needs one (kind: Lab)");
        var state = LabState.Read(name) ?? throw new LabException($"lab {name} is not up");
        if (state.Phase != "ready")
            throw new LabException($"lab {name} is {state.Phase}, not ready");
        options ??= new LabOptions();
        return new NetnsLab(cluster, state, options, options.SelfCommand ?? SelfCommand.Detect(), owned: false);
    }

    public ClusterSpec Cluster { get; }
    public LabState State { get; }
    public string Name => State.Name;
    public bool HasDatapath => datapath is not null;

    /// <summary>The node is real containerd pods behind kube-proxy's rules (spec.node: containerd).</summary>
    public bool IsContainerdNode => Cluster.Lab?.Node == LabNodeKinds.Containerd;

    /// <summary>What a user must know once about this lab's node (null for the netns node).</summary>
    public string? Notice => IsContainerdNode
        ? "node: containerd pods behind kube-proxy's iptables rules; our datapath is not attached and CiliumNetworkPolicies are not enforced (steps expecting a policy drop are not applicable)"
        : null;
    public ILabDatapath? Datapath => datapath;
    public EventCollector? Events => collector;

    /// <summary>The monitor socket's server, when the lab serves its datapath's events.</summary>
    public MonitorServer? Server => server;

    /// <summary>Builds the lab. On any failure everything made so far is removed and a one-line <see cref="LabException"/> thrown.</summary>
    public static NetnsLab Up(ClusterSpec cluster, LabOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(cluster);
        options ??= new LabOptions();
        var spec = cluster.Lab ?? throw new LabException($"{cluster.SourceFile}: no Lab document: a lab needs one (kind: Lab)");
        if (LibC.geteuid() != 0)
            throw new LabException("the lab makes network namespaces: run as root (sudo)");
        CheckNames(cluster);
        var self = options.SelfCommand ?? SelfCommand.Detect();

        // One process builds a lab; a second `up` of the same lab is refused before it touches anything.
        var held = LabLock.Acquire(spec.Name);
        try
        {
            var lab = UpLocked(cluster, spec, options, self);
            lab.labLock = held;
            return lab;
        }
        catch
        {
            held.Dispose();
            throw;
        }
    }

    private static NetnsLab UpLocked(ClusterSpec cluster, LabSpec spec, LabOptions options, IReadOnlyList<string> self)
    {
        var existing = LabState.Read(spec.Name);
        if (existing is not null && existing.UpAlive() && existing.UpPid != Environment.ProcessId)
            throw new LabException($"lab {spec.Name} is already up (pid {existing.UpPid}): run `forensics lab down` first");
        if (existing is not null || LabNames.Namespaces(cluster).Any(NetNamespace.Exists))
            Down(spec.Name, cluster); // leftovers of an up that was killed

        var state = new LabState
        {
            Name = spec.Name,
            SourceFile = Path.GetFullPath(cluster.SourceFile),
            UpPid = Environment.ProcessId,
            UpStartTime = LabState.ProcessStartTime(Environment.ProcessId) ?? 0,
            CreatedUtc = DateTime.UtcNow,
            NodeNetns = LabNames.NodeNs(spec.Name),
            WorldNetns = LabNames.WorldNs(spec.Name),
            WorldLink = LabNames.WorldLink(spec.Name),
        };
        state.Save();
        var lab = new NetnsLab(cluster, state, options, self);
        try
        {
            lab.Build();
            if (options.Datapath is not null && !lab.IsContainerdNode)
                lab.AttachDatapath(options.Datapath);
            state.Phase = "ready";
            state.Save();
            return lab;
        }
        catch (Exception e)
        {
            lab.collector?.Dispose();
            lab.server?.Dispose();
            lab.datapath?.Dispose();
            try
            {
                Down(spec.Name, cluster);
            }
            catch (LabException)
            {
                // report the first failure, not the cleanup's
            }
            throw e is LabException ? e : new LabException($"lab {spec.Name}: {e.Message}", e);
        }
    }

    private static void CheckNames(ClusterSpec cluster)
    {
        var lab = cluster.Lab!.Name;
        var seen = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (ns, what) in LabNames.Namespaces(cluster).Zip(FixedNamespaces.Concat(cluster.Pods.Select(p => "Pod " + p.FullName))))
            if (!seen.TryAdd(ns, what))
                throw new LabException($"{what} and {seen[ns]} would share the network namespace {ns}: rename one");
        var links = new Dictionary<string, string>(StringComparer.Ordinal) { [LabNames.WorldLink(lab)] = "the world" };
        foreach (var p in cluster.Pods)
            if (!links.TryAdd(LabNames.PodLink(lab, p), p.FullName))
                throw new LabException($"Pod {p.FullName} and {links[LabNames.PodLink(lab, p)]} would share the link name {LabNames.PodLink(lab, p)}: rename one");
    }

    private void Say(string line) => options.Progress?.Invoke(line);

    private void AddNamespace(string ns)
    {
        State.Namespaces.Add(ns);
        State.Save(); // write-ahead: down finds it even if we die right after
        Commands.Ip("netns", "add", ns);
        Commands.Ip("-n", ns, "link", "set", "lo", "up");
    }

    private void Build()
    {
        var spec = Cluster.Lab!;
        var node = State.NodeNetns;
        var world = State.WorldNetns;
        Say($"node namespace {node}");
        AddNamespace(node);
        Commands.Sysctl(node, ("net.ipv4.ip_forward", "1"), ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv6.conf.all.disable_ipv6", "1"), ("net.ipv6.conf.default.disable_ipv6", "1"));

        // The outside world: one namespace holding every outside host's address,
        // reachable from the node through its world-facing device (the node address).
        Say($"world namespace {world}: {string.Join(", ", spec.Outside.Select(h => $"{h.Name} {h.Ip}"))}");
        AddNamespace(world);
        Commands.Sysctl(world, ("net.ipv6.conf.all.disable_ipv6", "1"), ("net.ipv6.conf.default.disable_ipv6", "1"));
        var wl = State.WorldLink;
        var nodeMac = LabNames.Mac($"{Name}/node/world");
        var worldMac = LabNames.Mac($"{Name}/world/eth0");
        Commands.Ip("-n", node, "link", "add", wl, "address", nodeMac, "type", "veth", "peer", "name", "eth0", "address", worldMac, "netns", world);
        Commands.Ip("-n", node, "addr", "add", $"{spec.NodeIp}/32", "dev", wl);
        Commands.Ip("-n", node, "link", "set", wl, "up");
        Commands.Ip("-n", world, "link", "set", "eth0", "up");
        foreach (var h in spec.Outside)
        {
            Commands.Ip("-n", world, "addr", "add", $"{h.Ip}/32", "dev", "eth0");
            Commands.Ip("-n", node, "route", "add", $"{h.Ip}/32", "dev", wl);
            Commands.Ip("-n", node, "neigh", "replace", h.Ip.ToString(), "lladdr", worldMac, "dev", wl, "nud", "permanent");
        }
        // The world knows the node address only: traffic that was not SNATed gets no reply.
        Commands.Ip("-n", world, "route", "add", $"{spec.NodeIp}/32", "dev", "eth0", "scope", "link");
        Commands.Ip("-n", world, "neigh", "replace", spec.NodeIp.ToString(), "lladdr", nodeMac, "dev", "eth0", "nud", "permanent");
        // ...and, through it, the services' load balancer addresses and external IPs (as a router announcing them would)
        foreach (var ip in Cluster.Services.SelectMany(sv => sv.LoadBalancerIps.Concat(sv.ExternalIps)).Distinct())
            Commands.Ip("-n", world, "route", "add", $"{ip}/32", "via", spec.NodeIp.ToString(), "dev", "eth0");
        State.WorldIfindex = Ifindex(node, wl);
        State.Save();

        if (IsContainerdNode)
        {
            BuildContainerdPods();
            return;
        }
        foreach (var pod in Cluster.Pods)
        {
            var ns = LabNames.PodNs(Name, pod);
            var hl = LabNames.PodLink(Name, pod);
            var ip = pod.Ip ?? throw new LabException($"Pod {pod.FullName} has no address");
            Say($"pod {pod.FullName}: namespace {ns}, {ip}, host link {hl}");
            AddNamespace(ns);
            Commands.Sysctl(ns, ("net.ipv6.conf.all.disable_ipv6", "1"), ("net.ipv6.conf.default.disable_ipv6", "1"));
            var hostMac = LabNames.Mac($"{Name}/{pod.FullName}/host");
            var podMac = LabNames.Mac($"{Name}/{pod.FullName}/eth0");
            Commands.Ip("-n", node, "link", "add", hl, "address", hostMac, "type", "veth", "peer", "name", "eth0", "address", podMac, "netns", ns);
            Commands.Ip("-n", node, "link", "set", hl, "up");
            Commands.Ip("-n", ns, "addr", "add", $"{ip}/32", "dev", "eth0");
            Commands.Ip("-n", ns, "link", "set", "eth0", "up");
            // Pod: default route via a link-local gateway whose MAC is the host veth's (no ARP needed).
            Commands.Ip("-n", ns, "route", "add", Gateway, "dev", "eth0", "scope", "link");
            Commands.Ip("-n", ns, "route", "add", "default", "via", Gateway, "dev", "eth0");
            Commands.Ip("-n", ns, "neigh", "replace", Gateway, "lladdr", hostMac, "dev", "eth0", "nud", "permanent");
            // Node: a /32 route per pod to its host veth.
            Commands.Ip("-n", node, "route", "add", $"{ip}/32", "dev", hl);
            Commands.Ip("-n", node, "neigh", "replace", ip.ToString(), "lladdr", podMac, "dev", hl, "nud", "permanent");
            State.Endpoints.Add(new LabEndpoint { Pod = pod.FullName, Netns = ns, HostLink = hl, Ifindex = Ifindex(node, hl), Ip = ip.ToString() });
            State.Save();
        }

        // Listeners: the outside hosts' ports, the node's, and every pod's containerPorts and the target ports of its services.
        var started = StartWorldListeners();
        foreach (var pod in Cluster.Pods)
        {
            var ports = ListenPorts(pod);
            if (ports.Count == 0)
                continue;
            var args = new List<string> { "--name", pod.Name };
            foreach (var p in ports)
                args.AddRange([p.Protocol == "UDP" ? "--udp" : "--tcp", $"{pod.Ip}:{p.Port}"]);
            started.Add(StartServer(LabNames.PodNs(Name, pod), pod.FullName, args));
        }
        WaitReady(started);
    }

    /// <summary>The containerd node: containerd in the node namespace, CRI pods, kube-proxy rules, then the world's listeners.</summary>
    private void BuildContainerdPods()
    {
        using var cri = ContainerdNode.Start(State, Cluster.Lab!, Say);
        ContainerdNode.ImportImages(State, Cluster, Say);
        ContainerdNode.RunPods(State, Cluster, cri, self, Say);
        ContainerdNode.ApplyRules(State, Cluster, Say);
        var started = StartWorldListeners();
        ContainerdNode.WaitReady(State, cri, options.ReadyTimeout);
        WaitReady(started);
    }

    /// <summary>The world hosts' listeners, and the node's (spec.nodeListeners, on the node's address).</summary>
    private List<LabProcess> StartWorldListeners()
    {
        var spec = Cluster.Lab!;
        var world = State.WorldNetns;
        Directory.CreateDirectory(LabNames.LogDir(Name));
        var started = new List<LabProcess>();
        if (spec.NodeTcpPorts.Count + spec.NodeUdpPorts.Count > 0)
        {
            var args = new List<string> { "--name", "node" };
            args.AddRange(spec.NodeTcpPorts.SelectMany(p => new[] { "--tcp", $"{spec.NodeIp}:{p}" }));
            args.AddRange(spec.NodeUdpPorts.SelectMany(p => new[] { "--udp", $"{spec.NodeIp}:{p}" }));
            started.Add(StartServer(State.NodeNetns, "the node", args));
        }
        if (spec.Outside.Any(h => h.TcpPorts.Count + h.UdpPorts.Count + h.Dns.Count > 0))
        {
            var args = new List<string> { "--name", "world" };
            foreach (var h in spec.Outside)
            {
                args.AddRange(["--name", $"{h.Ip}={h.Name}"]);
                args.AddRange(h.TcpPorts.SelectMany(p => new[] { "--tcp", $"{h.Ip}:{p}" }));
                args.AddRange(h.UdpPorts.SelectMany(p => new[] { "--udp", $"{h.Ip}:{p}" }));
                args.AddRange(h.Dns.SelectMany(kv => new[] { "--dns", $"{h.Ip}={kv.Key}={kv.Value}" }));
            }
            started.Add(StartServer(world, "world", args));
        }
        return started;
    }

    /// <summary>
    /// What a pod listens on: its containerPorts, and the target ports of the services that
    /// select it (a manifest often leaves containerPorts out; the service says where it answers).
    /// </summary>
    internal IReadOnlyList<PortProtocol> ListenPorts(PodSpec pod)
    {
        var ports = new List<PortProtocol>(pod.ContainerPorts);
        foreach (var svc in Cluster.Services.Where(sv => sv.Namespace == pod.Namespace && sv.Selector.Count > 0
            && sv.Selector.All(kv => pod.Labels.TryGetValue(kv.Key, out var v) && v == kv.Value)))
            foreach (var sp in svc.Ports)
            {
                int port = sp.TargetName is { } name ? pod.NamedPorts.TryGetValue(name, out var np) ? np.Port : 0 : sp.TargetPort == 0 ? sp.Port : sp.TargetPort;
                var pp = new PortProtocol(port, sp.Protocol);
                if (port != 0 && !ports.Contains(pp))
                    ports.Add(pp);
            }
        return ports;
    }

    private static int Ifindex(string netns, string link)
    {
        var json = Commands.Ip("-n", netns, "-j", "link", "show", "dev", link);
        using var doc = JsonDocument.Parse(json);
        return doc.RootElement[0].GetProperty("ifindex").GetInt32();
    }

    private LabProcess StartServer(string netns, string what, List<string> serveArgs)
    {
        var log = Path.Combine(LabNames.LogDir(Name), netns + ".log");
        File.Delete(log);
        var argv = new List<string> { "ip", "netns", "exec", netns };
        argv.AddRange(self);
        argv.AddRange(["lab", "serve"]);
        argv.AddRange(serveArgs);
        // exec keeps one PID through sh, ip netns exec and the server; output goes to a log, not to us.
        var script = "exec " + string.Join(' ', argv.Select(Commands.ShellQuote)) + $" >{Commands.ShellQuote(log)} 2>&1 </dev/null";
        var psi = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(script);
        using var p = Process.Start(psi) ?? throw new LabException($"cannot start the listener in {netns}");
        var proc = new LabProcess { Pid = p.Id, StartTime = LabState.ProcessStartTime(p.Id) ?? 0, Netns = netns, What = $"listener for {what}" };
        State.Processes.Add(proc);
        State.Save();
        return proc;
    }

    private void WaitReady(List<LabProcess> processes)
    {
        var deadline = Stopwatch.StartNew();
        foreach (var p in processes)
        {
            var log = Path.Combine(LabNames.LogDir(Name), p.Netns + ".log");
            while (true)
            {
                var text = File.Exists(log) ? File.ReadAllText(log) : "";
                if (text.StartsWith("ready", StringComparison.Ordinal))
                    break;
                if (LabState.ProcessStartTime(p.Pid) is null || deadline.Elapsed > options.ReadyTimeout)
                {
                    var why = text.Split('\n').Select(l => l.Trim()).FirstOrDefault(l => l.Length > 0) ?? "no output";
                    throw new LabException($"the {p.What} in {p.Netns} did not come up within {options.ReadyTimeout.TotalSeconds:0}s: {why}");
                }
                Thread.Sleep(50);
            }
        }
    }

    private void AttachDatapath(Func<ClusterSpec, ILabDatapath> load)
    {
        Say("datapath: loading and attaching to every pod's host veth and the world device");
        datapath = load(Cluster);
        // toFQDNs: what the datapath learns from DNS answers, as progress lines
        if (datapath is LabDatapath learning)
            learning.Datapath.NameLearnt = Say;
        if (options.Serve && datapath is LabDatapath served)
            Serve(served);
        if (options.CollectEvents || server is not null)
            collector = new EventCollector(datapath.Events, server, keep: options.CollectEvents);
        var dp = datapath;
        var ids = NetNamespace.Run(State.NodeNetns, () =>
        {
            foreach (var ep in State.Endpoints)
                dp.AttachEndpoint(Cluster.Pods.Single(p => p.FullName == ep.Pod), ep.Ifindex);
            dp.AttachNetworkDevice(State.WorldIfindex);
            var attached = new HashSet<uint>();
            foreach (var ifindex in State.Endpoints.Select(e => e.Ifindex).Append(State.WorldIfindex))
                foreach (var dir in Directions)
                    attached.UnionWith(BpfPrograms.AttachedTcx(ifindex, dir));
            return attached.Order().ToList();
        });
        State.ProgramIds = ids;
        State.DatapathAttached = true;
        State.Save();
    }

    /// <summary>Pins the state maps, keeps the control plane's file current, and opens the monitor socket.</summary>
    private void Serve(LabDatapath lab)
    {
        var pins = LabNames.PinDir(Name);
        var control = LabNames.ControlFile(Name);
        State.PinDir = pins;
        State.ControlFile = control;
        State.MonitorSocket = LabNames.MonitorSocket(Name);
        State.Save(); // write-ahead: down removes the pins and the socket
        Say($"datapath: state maps pinned in {pins}, events served on {State.MonitorSocket}");
        Directory.CreateDirectory(LabNames.LogDir(Name));
        lab.Datapath.PinStateMaps(pins);
        lab.Datapath.ControlPlaneChanged = cp => PinnedDatapath.WriteControlPlane(control, cp);
        PinnedDatapath.WriteControlPlane(control, lab.Datapath.ControlPlane());
        var (utcOffset, _) = Probes.KernelClock.UtcOffsets();
        var o = lab.Options;
        var stats = lab.Datapath.EmitStatsMap;
        server = new MonitorServer(new MonitorServerOptions
        {
            SocketPath = State.MonitorSocket,
            QueueBytes = options.MonitorQueueBytes,
            Cpus = BpfMap.PossibleCpus,
            KernelCounters = () => EventChannel.ReadPerCpu(stats),
            Log = options.Progress,
            Hello = new MonitorHello
            {
                Lab = Name,
                Node = Environment.MachineName,
                Pid = Environment.ProcessId,
                BootId = File.Exists("/proc/sys/kernel/random/boot_id") ? File.ReadAllText("/proc/sys/kernel/random/boot_id").Trim() : "",
                MonotonicToUtcOffsetNs = utcOffset,
                Kinds = [.. (o.Kinds.Count == 0 ? Enumerable.Range(1, (int)Abi.EventKind.Max - 1).Select(k => (Abi.EventKind)k) : o.Kinds)
                    .Where(k => k <= Abi.EventKind.Capture).Order().Select(k => k.ToString().ToLowerInvariant())],
                RingBytes = o.RingBytes,
                Snaplen = o.Snaplen,
                MonitorAggregation = o.MonitorAggregation.ToString().ToLowerInvariant(),
                CaptureFirst = o.CaptureFirst,
                PinDir = pins,
                ControlFile = control,
                Netns = State.NodeNetns,
                StartedUtc = State.CreatedUtc,
                PodCidrs = Cluster.Lab is { } spec ? [spec.PodCidr.ToString()] : [],
                ServiceCidrs = Cluster.Lab is { } spec2 ? [spec2.ServiceCidr.ToString()] : [],
            },
        });
    }

    /// <summary>The pod's address in this lab.</summary>
    public IPAddress PodIp(string pod) =>
        IPAddress.Parse(State.Endpoints.FirstOrDefault(e => e.Pod == pod || e.Pod == "default/" + pod)?.Ip
            ?? throw new LabException($"no pod {pod} in lab {Name}"));

    /// <summary>
    /// Runs one step's traffic inside its pod (or on the node, or on a world host from its address) and reports
    /// what it met (and, with a datapath, what the datapath saw).
    /// </summary>
    public StepReport RunStep(ScenarioStep step)
    {
        ArgumentNullException.ThrowIfNull(step);
        ObjectDisposedException.ThrowIf(disposed, this);
        LabEndpoint? ep = null;
        string netns, sourceIp;
        string? bind = null;
        switch (step.From)
        {
            case StepSources.Node:
                (netns, sourceIp) = (State.NodeNetns, Cluster.Lab!.NodeIp.ToString());
                break;
            case StepSources.World:
                var host = Cluster.Lab!.Outside.FirstOrDefault(h => h.Name == step.Pod) ?? throw new LabException($"step {step.Name}: no world host {step.Pod} in lab {Name}");
                // the world namespace holds every world host's address: the step's connections leave from this one's
                (netns, sourceIp, bind) = (State.WorldNetns, host.Ip.ToString(), host.Ip.ToString());
                break;
            default:
                ep = State.Endpoints.FirstOrDefault(e => e.Pod == step.Pod) ?? throw new LabException($"step {step.Name}: no pod {step.Pod} in lab {Name}");
                (netns, sourceIp) = (ep.Netns, ep.Ip);
                break;
        }
        var timeout = step.Timeout ?? DefaultStepTimeout;
        collector?.Drain();
        ulong since = Monotonic.NowNs();
        var argv = new List<string> { "netns", "exec", netns };
        if (step.Action == "exec")
        {
            argv.AddRange(step.Command);
        }
        else
        {
            argv.AddRange(self);
            argv.AddRange(["lab", "connect", step.Action, step.Target!, "--timeout", timeout.TotalSeconds.ToString("0.###", CultureInfo.InvariantCulture)]);
            if (bind is not null)
                argv.AddRange(["--source", bind]);
        }
        var limit = step.Action == "exec" ? (step.Timeout ?? TimeSpan.FromSeconds(10)) : timeout * 2 + TimeSpan.FromSeconds(30);
        // containerd node: in the pod's first container, as kubectl exec would (argv after "ip netns exec NS").
        var r = State.Node == LabNodeKinds.Containerd && ep is not null
            ? ContainerdNode.Exec(Name, ep, argv.Skip(3).ToList(), limit)
            : Commands.Run("ip", argv, limit);
        ConnectResult? cr = null;
        string result;
        string detail;
        if (step.Action == "exec")
        {
            result = r.TimedOut ? "timeout" : "exited";
            detail = r.TimedOut ? $"killed after {limit.TotalSeconds:0.#}s" : $"exit {r.ExitCode}";
            var first = r.Stdout.Split('\n').Select(l => l.Trim()).FirstOrDefault(l => l.Length > 0) ?? r.FirstErrorLine;
            if (first.Length > 0)
                detail += ": " + first;
        }
        else
        {
            var line = r.Stdout.Split('\n').Select(l => l.Trim()).LastOrDefault(l => l.StartsWith('{'));
            cr = line is null ? null : ConnectResult.Parse(line);
            if (cr is null)
                throw new LabException($"step {step.Name}: lab connect gave no result (exit {r.ExitCode}): {r.FirstErrorLine}");
            result = cr.Result;
            detail = Describe(cr);
        }
        // Give the datapath's last events (the final ACK, the RST, late drops) a moment to arrive.
        IReadOnlyList<ObservedEvent> observed = [];
        if (collector is not null)
        {
            Thread.Sleep(150);
            collector.Drain();
            var addrs = new HashSet<string>(StringComparer.Ordinal) { sourceIp };
            if (step.Target is { } t)
                addrs.Add(t[..t.IndexOf(':', StringComparison.Ordinal)]);
            observed = collector.Since(since).Where(e => e.Involves(addrs)).ToList();
        }
        bool delivered = cr?.Delivered ?? (result == "exited" && r.ExitCode == 0);
        var report = new StepReport(step, sourceIp, result, delivered, cr?.Sent ?? 0, cr?.Received ?? 0,
            step.Action == "exec" ? r.ExitCode : (delivered ? 0 : 1), r.Elapsed, detail, cr, HasDatapath, observed);
        if (State.Node == LabNodeKinds.Containerd && step.Expect?.DropReason is { } why)
            return report with { NotApplicable = $"expects a datapath drop ({why} {Format.DropReasons.NameOf(why)}): CiliumNetworkPolicies are not enforced on a containerd node" };
        return report with { Failures = Check(report) };
    }

    /// <summary>Runs every step of the scenario in order.</summary>
    public IReadOnlyList<StepReport> RunAll() => Cluster.Lab!.Steps.Select(RunStep).ToList();

    private static string Describe(ConnectResult c)
    {
        var s = $"{c.Result} {c.Remote}";
        if (c.Local is not null && c.Result is "connected" or "replied")
            s += $" from {c.Local}";
        if (c.HttpStatus is { } code)
            s += $" HTTP {code}";
        if (c.Sent + c.Received > 0)
            s += $", sent {c.Sent} received {c.Received} bytes";
        s += $" in {c.Milliseconds} ms";
        if (!string.IsNullOrEmpty(c.Reply))
            s += $": \"{c.Reply.ReplaceLineEndings(" ")}\"";
        return s;
    }

    /// <summary>What the step's expectation asked and the report does not show, one line each.</summary>
    private static List<string> Check(StepReport r)
    {
        var e = r.Step.Expect;
        var failures = new List<string>();
        if (e is null)
            return failures;
        if (e.Delivered is { } d && d != r.Delivered)
            failures.Add(d ? $"expected delivered, got {r.Result}" : $"expected dropped, but it was delivered ({r.Result})");
        if (!r.DatapathAttached)
            return failures; // reasons and translations need the datapath's events
        if (e.DropReason is { } reason && !r.Events.Any(x => x.Kind == "drop" && x.Reason == reason))
        {
            var seen = r.Events.Where(x => x.Kind == "drop").Select(x => $"{x.Reason} ({Format.DropReasons.NameOf(x.Reason)})").Distinct().ToList();
            failures.Add($"expected a drop with reason {reason} ({Format.DropReasons.NameOf(reason)}), saw {(seen.Count == 0 ? "no drop" : string.Join(", ", seen))}");
        }
        if (e.Translation is { } tr && !r.Events.Any(x => x.MatchesTranslation(tr)))
        {
            var seen = r.Events.Where(x => x.Kind == "nat").Select(x => x.Text).Distinct().ToList();
            failures.Add($"expected {tr}, saw {(seen.Count == 0 ? "no translation" : string.Join("; ", seen))}");
        }
        return failures;
    }

    /// <summary>
    /// Removes everything a lab made: its up process (SIGTERM, then SIGKILL), every
    /// process inside its namespaces, the namespaces (and with them every link,
    /// route and tcx attachment), pinned BPF objects, logs and the state file.
    /// Idempotent; works from the state file, the spec, or both.
    /// </summary>
    public static IReadOnlyList<string> Down(string name, ClusterSpec? cluster = null)
    {
        ArgumentNullException.ThrowIfNull(name);
        var removed = new List<string>();
        var state = LabState.Read(name);
        var namespaces = new List<string>();
        if (state is not null)
            namespaces.AddRange(state.Namespaces);
        if (cluster?.Lab is not null)
            namespaces.AddRange(LabNames.Namespaces(cluster));
        namespaces = namespaces.Distinct().ToList();

        if (state is not null && state.UpPid != Environment.ProcessId && state.UpAlive())
        {
            Signal(state.UpPid, LibC.SIGTERM);
            if (!WaitGone(state.UpPid, state.UpStartTime, TimeSpan.FromSeconds(10)))
            {
                Signal(state.UpPid, LibC.SIGKILL);
                WaitGone(state.UpPid, state.UpStartTime, TimeSpan.FromSeconds(5));
            }
            removed.Add($"process {state.UpPid} (lab up)");
        }
        // The up process is gone (or this is it): no other process may build this lab while it is removed.
        using var downLock = LabLock.TryAcquire(name, TimeSpan.FromSeconds(15))
            ?? throw new LabException($"lab {name} is held by another process (pid {Files.LockHolder(LabLock.PathOf(name))}): it did not end; try again");
        // Listeners the state knows of (even if their namespace is already gone).
        foreach (var p in state?.Processes ?? [])
        {
            if (p.Pid != Environment.ProcessId && LabState.Running(p.Pid, p.StartTime))
            {
                Signal(p.Pid, LibC.SIGKILL);
                WaitGone(p.Pid, p.StartTime, TimeSpan.FromSeconds(5));
                removed.Add($"process {p.Pid} ({p.What})");
            }
        }
        // Anything else still living in the lab's namespaces (a containerd node's pods included).
        var inodes = namespaces.Select(NetNamespace.Inode).OfType<ulong>().Concat(ContainerdNode.PodNetnsInodes(name)).ToHashSet();
        if (inodes.Count > 0 || Directory.Exists(ContainerdNode.Dir(name)))
        {
            foreach (var pid in ProcessesIn(inodes).Concat(ContainerdNode.CgroupProcesses(name)).Distinct())
            {
                var t = LabState.ProcessStartTime(pid) ?? 0;
                Signal(pid, LibC.SIGKILL);
                WaitGone(pid, t, TimeSpan.FromSeconds(5));
                removed.Add($"process {pid}");
            }
        }
        if (Directory.Exists(ContainerdNode.Dir(name)))
            ContainerdNode.RemoveLeftovers(name, removed);
        foreach (var ns in namespaces.AsEnumerable().Reverse())
        {
            if (!NetNamespace.Exists(ns))
                continue;
            var r = Commands.Run("ip", ["netns", "del", ns]);
            if (r.ExitCode != 0 && NetNamespace.Exists(ns))
                throw new LabException($"ip netns del {ns}: {r.FirstErrorLine}");
            removed.Add($"namespace {ns}");
        }
        var pins = LabNames.PinDir(name);
        if (Directory.Exists(pins))
        {
            foreach (var f in Directory.EnumerateFileSystemEntries(pins, "*", SearchOption.AllDirectories).OrderByDescending(f => f.Length))
            {
                if (Directory.Exists(f))
                    Directory.Delete(f);
                else
                    File.Delete(f);
            }
            Directory.Delete(pins);
            removed.Add($"pinned objects {pins}");
        }
        var logs = LabNames.LogDir(name);
        if (Directory.Exists(logs))
            Directory.Delete(logs, recursive: true);
        if (state is not null)
        {
            LabState.Delete(name);
            removed.Add($"state {LabNames.StateFile(name)}");
        }
        return removed;
    }

    private static void Signal(int pid, int sig) => LibC.kill(pid, sig);

    private static bool WaitGone(int pid, ulong startTime, TimeSpan limit)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < limit)
        {
            if (!LabState.Running(pid, startTime))
                return true;
            Thread.Sleep(20);
        }
        return false;
    }

    /// <summary>PIDs (not ours) whose network namespace is one of <paramref name="inodes"/>.</summary>
    public static IReadOnlyList<int> ProcessesIn(IReadOnlySet<ulong> inodes)
    {
        ArgumentNullException.ThrowIfNull(inodes);
        var pids = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out int pid) || pid == Environment.ProcessId)
                continue;
            if (NetNamespace.InodeOfProcess(pid) is { } ino && inodes.Contains(ino))
                pids.Add(pid);
        }
        return pids;
    }

    /// <summary>Detaches the datapath and removes the lab.</summary>
    public void Dispose()
    {
        if (disposed)
            return;
        disposed = true;
        collector?.Dispose();
        server?.Dispose();
        datapath?.Dispose();
        try
        {
            if (owned)
                Down(Name, Cluster);
        }
        finally
        {
            labLock?.Dispose();
        }
    }
}

/// <summary>What one step met.</summary>
public sealed record StepReport(
    ScenarioStep Step,
    string PodIp,
    string Result,
    bool Delivered,
    long Sent,
    long Received,
    int ExitCode,
    TimeSpan Elapsed,
    string Detail,
    ConnectResult? Connect,
    bool DatapathAttached,
    IReadOnlyList<ObservedEvent> Events)
{
    /// <summary>Why the step does not meet its expectation; empty when it does (or has none).</summary>
    public IReadOnlyList<string> Failures { get; init; } = [];

    /// <summary>Why the step's expectation does not apply to this lab's node (not checked); null when it does.</summary>
    public string? NotApplicable { get; init; }

    public bool Passed => Failures.Count == 0;
}

/// <summary>CLOCK_MONOTONIC in nanoseconds: the clock of bpf_ktime_get_ns().</summary>
public static class Monotonic
{
    public static ulong NowNs() => Probes.KernelClock.MonotonicNs();
}
