using System.Net;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Probes;

namespace Forensics.Recorder.Tables;

/// <summary>
/// What decoding needs beyond the record itself: the clock conversion, name
/// tables, and what earlier events taught (exec id -> binary). Used only by
/// the decode thread, except the registrations, which are thread-safe.
/// </summary>
public sealed class EventContext
{
    private readonly Dictionary<uint, string> v4 = [];
    private readonly Dictionary<(ulong, ulong), string> v6 = [];
    private readonly Images images;

    public EventContext(long monotonicToUtcOffsetNs)
    {
        MonotonicToUtcOffsetNs = monotonicToUtcOffsetNs;
        images = new Images();
    }

    private EventContext(EventContext of, Func<uint, IReadOnlyList<Datapath.Control.PolicyRuleRef>> policyRules, Func<uint, string?> interfaceName)
    {
        MonotonicToUtcOffsetNs = of.MonotonicToUtcOffsetNs;
        BoottimeToUtcOffsetNs = of.BoottimeToUtcOffsetNs;
        KernelDropReason = of.KernelDropReason;
        KernelSymbol = of.KernelSymbol;
        Texts = of.Texts;
        Attribution = of.Attribution;
        images = of.images;
        PolicyRules = policyRules;
        InterfaceName = interfaceName;
    }

    /// <summary>
    /// This context for the records of one datapath among several (each numbers its rule ids and has its interfaces
    /// itself): the same clocks, names, pods and process images, with that datapath's rules behind the rule ids and
    /// its namespace's interfaces behind the ifindexes (this context's when not given).
    /// </summary>
    public EventContext ForDatapath(Func<uint, IReadOnlyList<Datapath.Control.PolicyRuleRef>> policyRules, Func<uint, string?>? interfaceName = null)
    {
        ArgumentNullException.ThrowIfNull(policyRules);
        return new EventContext(this, policyRules, interfaceName ?? InterfaceName);
    }

    /// <summary>UTC ns = kernel CLOCK_MONOTONIC ns + this, measured once at recording start.</summary>
    public long MonotonicToUtcOffsetNs { get; }

    /// <summary>Names of the running kernel's enum skb_drop_reason values.</summary>
    public Func<uint, string> KernelDropReason { get; set; } = r => r.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>The name of an interface of the datapath's network namespace by its ifindex; null when unknown.</summary>
    public Func<uint, string?> InterfaceName { get; set; } = _ => null;

    /// <summary>Resolves a kernel address to symbol+offset.</summary>
    public Func<ulong, string> KernelSymbol { get; set; } = a => "0x" + a.ToString("x", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Boot-time ns to UTC ns (for task start times).</summary>
    public long BoottimeToUtcOffsetNs { get; init; }

    public long Utc(ulong ktime) => (long)ktime + MonotonicToUtcOffsetNs;

    /// <summary>Texts of exec events (binary, arguments, cwd, comm), cached by their bytes.</summary>
    public TextCache Texts { get; } = new();

    /// <summary>
    /// The policy rules behind a rule id of this tool's datapath (LoadedDatapath.RulesOf; empty for an unknown id);
    /// null without a datapath. Thread-safe.
    /// </summary>
    public Func<uint, IReadOnlyList<Datapath.Control.PolicyRuleRef>>? PolicyRules { get; set; }

    /// <summary>Network namespace -> pod (the lab's pods).</summary>
    public Attribution Attribution { get; init; } = new();

    public Workload? Owner(uint inode) => inode == 0 ? null : Attribution.Lookup(inode);

    /// <summary>The workload scopes of TracingPolicy selectors (null: none has one): a connect out of scope is counted, not a row.</summary>
    public ConnectScopes? ConnectScopes { get; set; }

    /// <summary>Pods and containers from the container runtime or a pods file (null: none asked for).</summary>
    public Runtime.WorkloadWatcher? Workloads { get; set; }

    private readonly Dictionary<(string, ushort, string, ushort, byte), (uint Netns, ulong Cgroup)> recentConnects = [];
    private readonly Queue<(string, ushort, string, ushort, byte)> connectOrder = new();

    /// <summary>
    /// Who a process event belongs to: the container of its cgroup and that container's pod (from
    /// the runtime), else the pod of its network namespace (runtime, then the lab and named
    /// namespaces). An unknown cgroup makes the runtime be asked again (rate-limited), so a pod
    /// created a moment ago is attributed from its first events.
    /// </summary>
    public EventOwner Owner(uint netnsIno, ulong cgroupId)
    {
        if (Workloads is { } w && w.Lookup(netnsIno, cgroupId) is { } o)
            return new EventOwner(o.Namespace, o.Pod, o.PodUid, o.ContainerId, o.Container, o.Labels);
        var lab = Owner(netnsIno);
        return lab is null ? EventOwner.None : new EventOwner(lab.Namespace, lab.Name, null, null, null, null);
    }

    /// <summary>Remembers which process made a connection (its addresses and ports), for the kernel drops of its packets.</summary>
    public void RememberConnect(in Datapath.Abi.Tuple t, uint netnsIno, ulong cgroupId)
    {
        var key = (Ip(t.Saddr, t.Family), t.Sport, Ip(t.Daddr, t.Family), t.Dport, t.Proto);
        if (!recentConnects.ContainsKey(key))
        {
            connectOrder.Enqueue(key);
            if (connectOrder.Count > 65536)
                recentConnects.Remove(connectOrder.Dequeue());
        }
        recentConnects[key] = (netnsIno, cgroupId);
    }

    /// <summary>
    /// Who a kernel drop belongs to: the pod of the network namespace it happened in; in the
    /// node's namespace (a forwarded packet), the process whose connect used the same addresses
    /// and ports, else the pod that owns the source address.
    /// </summary>
    public EventOwner DropOwner(uint netnsIno, in Datapath.Abi.Tuple t)
    {
        var byNetns = Owner(netnsIno, 0);
        var key = (Ip(t.Saddr, t.Family), t.Sport, Ip(t.Daddr, t.Family), t.Dport, t.Proto);
        if (recentConnects.TryGetValue(key, out var c))
        {
            var byConnect = Owner(c.Netns, c.Cgroup);
            if (byNetns.Pod is null || byNetns.PodUid == byConnect.PodUid)
                return byConnect.Pod is null ? byNetns : byConnect;
        }
        if (byNetns.Pod is not null)
            return byNetns;
        // the drop of a packet sent before its connect was decoded (a SYN dropped inside connect()), or not by a connect
        return Workloads?.Catalog.LookupIp(key.Item1) is { } o ? new EventOwner(o.Namespace, o.Pod, o.PodUid, o.ContainerId, o.Container, o.Labels) : EventOwner.None;
    }

    /// <summary>
    /// Binaries by exec id are kept in two generations of at most this many each (a few MiB), so that a
    /// long recording of many short processes does not grow without bound. An image is not forgotten at
    /// its exit: a forked child (a daemon whose parent exited) keeps running it under the same exec id.
    /// An image is forgotten only after two generations of newer execs.
    /// </summary>
    public int BinaryGeneration
    {
        get => images.Generation;
        init => images.Generation = value;
    }

    /// <summary>Remembers a process image's binary and the network namespace it was executed in.</summary>
    public void RegisterBinary(ulong execId, string binary, uint netnsIno = 0)
    {
        lock (images)
        {
            if (++images.Registered > images.Generation)
            {
                images.Older = images.Current;
                images.Current = [];
                images.Registered = 1;
            }
            images.Current[execId] = (binary, netnsIno);
        }
    }

    public string? Binary(ulong execId)
    {
        if (execId == 0)
            return null;
        lock (images)
            return images.Find(execId)?.Binary;
    }

    /// <summary>
    /// The network namespace the image was executed in, when its exec was seen: a process belongs to the
    /// pod it was started in. A command that only entered a pod's namespace (`ip -n POD-NETNS ...`, setns)
    /// is not one of the pod's processes.
    /// </summary>
    public uint? ExecNetns(ulong execId)
    {
        if (execId == 0)
            return null;
        lock (images)
            return images.Find(execId)?.Netns;
    }

    /// <summary>Process images whose binary is known (both generations).</summary>
    public int KnownBinaries
    {
        get
        {
            lock (images)
                return images.Current.Count + images.Older.Count;
        }
    }

    /// <summary>The address as text, cached: few distinct addresses, many events.</summary>
    public string Ip(in Bytes16 addr, byte family)
    {
        ReadOnlySpan<byte> b = addr;
        if (family == 10)
        {
            var key = (BitConverter.ToUInt64(b), BitConverter.ToUInt64(b[8..]));
            if (!v6.TryGetValue(key, out var s6))
                v6[key] = s6 = Cap(v6.Count, new IPAddress(b).ToString());
            return s6;
        }
        uint k = BitConverter.ToUInt32(b);
        if (!v4.TryGetValue(k, out var s))
            v4[k] = s = Cap(v4.Count, new IPAddress(b[..4]).ToString());
        return s;
    }

    private string Cap(int count, string s)
    {
        if (count > 1_000_000)
        {
            v4.Clear();
            v6.Clear();
        }
        return s;
    }

    /// <summary>Process images by exec id in two generations; shared by the views of one context (locked on itself).</summary>
    private sealed class Images
    {
        public int Generation = 1 << 16;
        public int Registered;
        public Dictionary<ulong, (string Binary, uint Netns)> Current = [];
        public Dictionary<ulong, (string Binary, uint Netns)> Older = [];

        public (string Binary, uint Netns)? Find(ulong execId) =>
            Current.TryGetValue(execId, out var b) || Older.TryGetValue(execId, out b) ? b : null;
    }
}

/// <summary>The pod columns of an event (labels: key=value, comma-separated, sorted); all null on the host.</summary>
public readonly record struct EventOwner(string? Namespace, string? Pod, string? PodUid, string? ContainerId, string? Container, string? Labels)
{
    public static readonly EventOwner None;
}
