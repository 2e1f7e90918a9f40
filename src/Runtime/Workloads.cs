using System.Globalization;

namespace Forensics.Runtime;

/// <summary>A pod as a recording knows it: from the runtime (CRI) or a pods file.</summary>
public sealed record PodRecord(
    string Uid,
    string Namespace,
    string Name,
    string? SandboxId,
    IReadOnlyList<string> Ips,
    uint NetnsInode,
    IReadOnlyDictionary<string, string> Labels,
    DateTime CreatedUtc,
    bool Ready)
{
    public string FullName => $"{Namespace}/{Name}";

    /// <summary>Same pod, same facts (what a change row is written for).</summary>
    public bool SameAs(PodRecord o) =>
        o.Uid == Uid && o.Namespace == Namespace && o.Name == Name && o.SandboxId == SandboxId && o.NetnsInode == NetnsInode
        && o.Ready == Ready && o.Ips.SequenceEqual(Ips) && o.Labels.Count == Labels.Count
        && o.Labels.All(kv => Labels.TryGetValue(kv.Key, out var v) && v == kv.Value);
}

/// <summary>A container as a recording knows it.</summary>
public sealed record ContainerRecord(
    string Id,
    string Name,
    string Image,
    string PodUid,
    string? SandboxId,
    string State,
    DateTime CreatedUtc)
{
    public bool SameAs(ContainerRecord o) => o.Id == Id && o.Name == Name && o.Image == Image && o.PodUid == PodUid && o.State == State;
}

/// <summary>Who an event belongs to: a pod (with its labels as key=value, comma-separated, sorted; null when none), and the container when the process's cgroup names one.</summary>
public sealed record Owner(string Namespace, string Pod, string PodUid, string? ContainerId, string? Container, string? Labels = null);

/// <summary>What a workload source saw at one moment: every pod and container.</summary>
public sealed record WorkloadSnapshot(IReadOnlyList<PodRecord> Pods, IReadOnlyList<ContainerRecord> Containers);

/// <summary>Where pods and containers come from: the runtime's CRI socket, or a pods file.</summary>
public interface IWorkloadSource : IDisposable
{
    /// <summary>"cri unix:///run/containerd/containerd.sock (containerd 1.6.20)", "pods file pods.json".</summary>
    string Description { get; }

    /// <summary>Whether <see cref="Read"/> can tell more later (CRI: yes; a file: no).</summary>
    bool Live { get; }

    /// <summary>Everything the source knows now; a one-line <see cref="RuntimeException"/> when it cannot tell.</summary>
    WorkloadSnapshot Read();
}

/// <summary>Pods and containers from the runtime over CRI; sandbox status (addresses, network namespace) is asked once per sandbox.</summary>
public sealed class CriWorkloadSource : IWorkloadSource
{
    private readonly CriClient client;
    private readonly Dictionary<string, SandboxInfo> statusCache = new(StringComparer.Ordinal);

    public CriWorkloadSource(CriClient client, RuntimeVersion version)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(version);
        this.client = client;
        Description = $"cri {client.Endpoint} ({version.Name} {version.Version}, CRI {version.ApiVersion})";
    }

    /// <summary>Connects to <paramref name="endpoint"/> (or the first well-known socket) and asks its version; a one-line error when it cannot.</summary>
    public static CriWorkloadSource Connect(string? endpoint)
    {
        endpoint ??= CriClient.Detect() ?? throw new RuntimeException(
            $"no container runtime socket found ({string.Join(", ", CriClient.WellKnownEndpoints)}); give --runtime-endpoint or --pods-file");
        var client = CriClient.Create(endpoint, TimeSpan.FromSeconds(3));
        try
        {
            return new CriWorkloadSource(client, client.Version());
        }
        catch
        {
            client.Dispose();
            throw;
        }
    }

    public string Description { get; }

    public bool Live => true;

    public WorkloadSnapshot Read()
    {
        var sandboxes = client.ListSandboxes(id => !statusCache.ContainsKey(id));
        var pods = new List<PodRecord>(sandboxes.Count);
        var live = new HashSet<string>(StringComparer.Ordinal);
        foreach (var listed in sandboxes)
        {
            live.Add(listed.Id);
            var s = listed;
            if (listed.NetnsInode != 0 || listed.Ips.Count > 0)
                statusCache[listed.Id] = listed;
            else if (statusCache.TryGetValue(listed.Id, out var cached))
                s = cached with { Ready = listed.Ready };
            pods.Add(new PodRecord(s.Uid, s.Namespace, s.Name, s.Id, s.Ips, s.NetnsInode, s.Labels, s.CreatedUtc, s.Ready));
        }
        foreach (var gone in statusCache.Keys.Where(k => !live.Contains(k)).ToList())
            statusCache.Remove(gone);
        var uidBySandbox = pods.Where(p => p.SandboxId is not null).ToDictionary(p => p.SandboxId!, p => p.Uid, StringComparer.Ordinal);
        var containers = client.ListContainers()
            .Select(c => new ContainerRecord(c.Id, c.Name, c.Image, uidBySandbox.GetValueOrDefault(c.SandboxId, ""), c.SandboxId, c.State, c.CreatedUtc))
            .ToList();
        return new WorkloadSnapshot(pods, containers);
    }

    public void Dispose() => client.Dispose();
}

/// <summary>A change to the known pods or containers, for the snapshot tables.</summary>
public sealed record WorkloadChange(DateTime TakenUtc, string Phase, PodRecord? Pod, ContainerRecord? Container);

/// <summary>
/// Pods and containers seen during a recording, and who owns a network namespace or
/// a cgroup. What was once known stays known (a pod deleted mid-recording keeps its
/// attribution for the events before); a network namespace inode or container id
/// taken over by a new pod is attributed to the new one. Lookups are lock-free reads
/// of an immutable index swapped on every change; thread-safe.
/// </summary>
public sealed class WorkloadCatalog
{
    private sealed record Index(
        IReadOnlyDictionary<uint, PodRecord> ByNetns,
        IReadOnlyDictionary<string, PodRecord> ByUid,
        IReadOnlyDictionary<string, ContainerRecord> Containers,
        IReadOnlyDictionary<ulong, string> CgroupToContainer,
        IReadOnlyDictionary<string, PodRecord> ByIp,
        IReadOnlyDictionary<string, string> LabelsByUid,
        IReadOnlyDictionary<string, ContainerRecord> SoleContainer,
        IReadOnlySet<string> Live);

    private readonly object gate = new();
    private readonly Func<string, ulong?> inodeOf;
    private readonly string? cgroupMount;
    private readonly List<WorkloadChange> changes = [];
    private readonly Dictionary<string, PodRecord> pods = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ContainerRecord> containers = new(StringComparer.Ordinal);
    private readonly HashSet<string> livePods = new(StringComparer.Ordinal);
    private readonly HashSet<string> liveContainers = new(StringComparer.Ordinal);
    private Dictionary<ulong, string> cgroups = [];
    private volatile Index index = new(new Dictionary<uint, PodRecord>(), new Dictionary<string, PodRecord>(), new Dictionary<string, ContainerRecord>(),
        new Dictionary<ulong, string>(), new Dictionary<string, PodRecord>(), new Dictionary<string, string>(), new Dictionary<string, ContainerRecord>(),
        new HashSet<string>(StringComparer.Ordinal));

    /// <param name="inodeOf">stat(2)'s inode of a path (a cgroup folder's inode is its cgroup id).</param>
    /// <param name="cgroupMount">The cgroup v2 mount (null: found in /proc/self/mountinfo).</param>
    public WorkloadCatalog(Func<string, ulong?> inodeOf, string? cgroupMount = null)
    {
        ArgumentNullException.ThrowIfNull(inodeOf);
        this.inodeOf = inodeOf;
        this.cgroupMount = cgroupMount ?? CgroupPaths.UnifiedMount();
    }

    public int PodCount => index.ByUid.Count;

    public int ContainerCount => index.Containers.Count;

    /// <summary>Takes what a source saw: new pods and containers, changes, and those gone (kept for earlier events).</summary>
    public void Apply(WorkloadSnapshot seen, DateTime nowUtc, bool first = false)
    {
        ArgumentNullException.ThrowIfNull(seen);
        lock (gate)
        {
            var phaseNew = first ? "start" : "added";
            var seenPods = new HashSet<string>(StringComparer.Ordinal);
            foreach (var p in seen.Pods.Where(p => p.Uid.Length > 0))
            {
                seenPods.Add(p.Uid);
                if (!pods.TryGetValue(p.Uid, out var old))
                    changes.Add(new WorkloadChange(nowUtc, phaseNew, p, null));
                else if (!old.SameAs(p) || !livePods.Contains(p.Uid))
                    changes.Add(new WorkloadChange(nowUtc, "changed", p, null));
                // a sandbox that lost its status (torn down) keeps what was known
                pods[p.Uid] = p.NetnsInode == 0 && old is not null && old.NetnsInode != 0 ? p with { NetnsInode = old.NetnsInode, Ips = old.Ips } : p;
            }
            foreach (var uid in livePods.Where(u => !seenPods.Contains(u)).ToList())
                changes.Add(new WorkloadChange(nowUtc, "removed", pods[uid], null));
            livePods.Clear();
            livePods.UnionWith(seenPods);

            var seenContainers = new HashSet<string>(StringComparer.Ordinal);
            foreach (var c in seen.Containers)
            {
                seenContainers.Add(c.Id);
                if (!containers.TryGetValue(c.Id, out var old))
                    changes.Add(new WorkloadChange(nowUtc, phaseNew, null, c));
                else if (!old.SameAs(c) || !liveContainers.Contains(c.Id))
                    changes.Add(new WorkloadChange(nowUtc, "changed", null, c));
                containers[c.Id] = c.PodUid.Length == 0 && old is not null ? c with { PodUid = old.PodUid } : c;
            }
            foreach (var id in liveContainers.Where(i => !seenContainers.Contains(i)).ToList())
                changes.Add(new WorkloadChange(nowUtc, "removed", null, containers[id]));
            liveContainers.Clear();
            liveContainers.UnionWith(seenContainers);
            if (seen.Containers.Any(c => c.State == "running" && !cgroups.ContainsValue(c.Id)))
                MergeCgroups(ScanCgroups());
            Publish();
        }
    }

    /// <summary>Adds the "end" rows: every pod and container known at the end, as they were last seen.</summary>
    public void End(DateTime nowUtc)
    {
        lock (gate)
        {
            foreach (var p in pods.Values.Where(p => livePods.Contains(p.Uid)))
                changes.Add(new WorkloadChange(nowUtc, "end", p, null));
            foreach (var c in containers.Values.Where(c => liveContainers.Contains(c.Id)))
                changes.Add(new WorkloadChange(nowUtc, "end", null, c));
        }
    }

    /// <summary>Changes since the last call (start rows first), for the pods and containers tables.</summary>
    public IReadOnlyList<WorkloadChange> TakeChanges()
    {
        lock (gate)
        {
            var list = changes.ToList();
            changes.Clear();
            return list;
        }
    }

    /// <summary>Learns pods' network namespaces from processes in their containers (a pods file names no namespace).</summary>
    public int LearnNetnsFromProcesses()
    {
        int learned = 0;
        lock (gate)
        {
            var needing = pods.Values.Where(p => p.NetnsInode == 0).Select(p => p.Uid).ToHashSet(StringComparer.Ordinal);
            if (needing.Count == 0)
                return 0;
            foreach (var dir in Directory.EnumerateDirectories("/proc"))
            {
                if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
                    continue;
                var owner = CgroupPaths.OfProcess(pid);
                if (owner.ContainerId is null || !containers.TryGetValue(owner.ContainerId, out var c) || !needing.Contains(c.PodUid))
                    continue;
                if (Netns.Inode($"/proc/{pid}/ns/net") is { } ino)
                {
                    pods[c.PodUid] = pods[c.PodUid] with { NetnsInode = ino };
                    needing.Remove(c.PodUid);
                    learned++;
                }
            }
            if (learned > 0)
                Publish();
        }
        return learned;
    }

    /// <summary>Rescans the cgroup tree for container folders (after a lookup missed); returns whether it learned something.</summary>
    public bool RescanCgroups()
    {
        lock (gate)
        {
            var fresh = ScanCgroups();
            if (fresh.All(kv => cgroups.TryGetValue(kv.Key, out var v) && v == kv.Value))
                return false;
            MergeCgroups(fresh);
            Publish();
            return true;
        }
    }

    /// <summary>Whether a cgroup id is one the last scan knew (container or not is another matter).</summary>
    public bool KnowsCgroup(ulong cgroupId) => index.CgroupToContainer.ContainsKey(cgroupId);

    /// <summary>
    /// The owner of an event: the container of its cgroup (and that container's pod), else the pod of its network
    /// namespace. The kernel reuses a freed namespace's inode number at once, so the namespace alone is trusted only
    /// where it cannot name the wrong pod: a process of a container the runtime has not listed yet (its cgroup is a
    /// container's folder) is nobody's until it is listed, not the pod whose namespace had that number before; a
    /// process outside every container (`ip netns exec`, `nsenter`) is a live pod's, never a gone one's; an event
    /// of no process (cgroup 0 or the root: softirq, a kernel drop) is the namespace's pod, a live one first.
    /// </summary>
    public Owner? Lookup(uint netnsInode, ulong cgroupId)
    {
        var ix = index;
        bool containerCgroup = false;
        if (cgroupId > 1 && ix.CgroupToContainer.TryGetValue(cgroupId, out var cid))
        {
            if (ix.Containers.TryGetValue(cid, out var c) && ix.ByUid.TryGetValue(c.PodUid, out var cp))
                return new Owner(cp.Namespace, cp.Name, cp.Uid, c.Id, c.Name, ix.LabelsByUid.GetValueOrDefault(cp.Uid));
            containerCgroup = true;
        }
        if (netnsInode == 0 || containerCgroup || !ix.ByNetns.TryGetValue(netnsInode, out var p))
            return null;
        if (cgroupId > 1 && !ix.Live.Contains(p.Uid))
            return null;
        return new Owner(p.Namespace, p.Name, p.Uid, null, null, ix.LabelsByUid.GetValueOrDefault(p.Uid));
    }

    /// <summary>
    /// The pod an address belongs to (for kernel drops in the node's namespace), with its container when the pod has
    /// exactly one running container (every packet of the pod is then that container's; with several, the address
    /// cannot tell which, and the container stays null).
    /// </summary>
    public Owner? LookupIp(string ip)
    {
        ArgumentNullException.ThrowIfNull(ip);
        var ix = index;
        if (!ix.ByIp.TryGetValue(ip, out var p))
            return null;
        var sole = ix.SoleContainer.GetValueOrDefault(p.Uid);
        return new Owner(p.Namespace, p.Name, p.Uid, sole?.Id, sole?.Name, ix.LabelsByUid.GetValueOrDefault(p.Uid));
    }

    /// <summary>A pod by uid (also one that is gone).</summary>
    public PodRecord? PodOf(string uid) => index.ByUid.TryGetValue(uid, out var p) ? p : null;

    /// <summary>Cgroup ids are never reused (64-bit kernfs ids): a removed container's cgroup keeps its entry, for its late events.</summary>
    private void MergeCgroups(Dictionary<ulong, string> fresh)
    {
        var merged = new Dictionary<ulong, string>(cgroups);
        foreach (var (k, v) in fresh)
            merged[k] = v;
        cgroups = merged;
    }

    private Dictionary<ulong, string> ScanCgroups()
    {
        var map = new Dictionary<ulong, string>();
        if (cgroupMount is null || !Directory.Exists(cgroupMount))
            return map;
        try
        {
            foreach (var dir in Directory.EnumerateDirectories(cgroupMount, "*", new EnumerationOptions { RecurseSubdirectories = true, IgnoreInaccessible = true, MaxRecursionDepth = 8 }))
            {
                var name = Path.GetFileName(dir);
                if (name.Length < 64)
                    continue;
                if (CgroupPaths.Parse(name).ContainerId is { } id && inodeOf(dir) is { } ino)
                    map[ino] = id;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // a folder went away during the walk: what was found stands
        }
        return map;
    }

    private void Publish()
    {
        var byNetns = new Dictionary<uint, PodRecord>();
        var byIp = new Dictionary<string, PodRecord>(StringComparer.Ordinal);
        // live pods win over gone ones for a reused inode or address
        foreach (var p in pods.Values.OrderBy(p => livePods.Contains(p.Uid)).ThenBy(p => p.CreatedUtc))
        {
            if (p.NetnsInode != 0)
                byNetns[p.NetnsInode] = p;
            foreach (var ip in p.Ips)
                byIp[ip] = p;
        }
        var labels = pods.Values.Where(p => p.Labels.Count > 0).ToDictionary(p => p.Uid,
            p => string.Join(',', p.Labels.OrderBy(l => l.Key, StringComparer.Ordinal).Select(l => $"{l.Key}={l.Value}")), StringComparer.Ordinal);
        var sole = containers.Values.Where(c => c.State == "running" && c.PodUid.Length > 0).GroupBy(c => c.PodUid, StringComparer.Ordinal)
            .Where(g => g.Count() == 1).ToDictionary(g => g.Key, g => g.Single(), StringComparer.Ordinal);
        index = new Index(byNetns, new Dictionary<string, PodRecord>(pods, StringComparer.Ordinal),
            new Dictionary<string, ContainerRecord>(containers, StringComparer.Ordinal), new Dictionary<ulong, string>(cgroups), byIp, labels, sole,
            new HashSet<string>(livePods, StringComparer.Ordinal));
    }
}
