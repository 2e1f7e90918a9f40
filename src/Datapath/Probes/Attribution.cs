using System.Collections.Concurrent;
using System.Globalization;
using Forensics.Datapath.Interop;

namespace Forensics.Datapath.Probes;

/// <summary>
/// What a network namespace is called: a pod (namespace/name) or a named
/// network namespace (ip netns; Namespace null). Prints as Tetragon's compact
/// output does ("default/xwing").
/// </summary>
public sealed record Workload(string? Namespace, string Name)
{
    /// <summary>The pod's labels, when its registrar knows them (the lab's pods); not part of what prints.</summary>
    public IReadOnlyDictionary<string, string>? Labels { get; init; }

    public override string ToString() => Namespace is null ? Name : $"{Namespace}/{Name}";
}

/// <summary>
/// Maps network namespace inodes (as events carry them) to pods, which the lab
/// registers with their Kubernetes namespace and name; it also knows the names
/// of the named network namespaces under /run/netns, which are not pods.
/// Thread-safe.
/// </summary>
public sealed class Attribution
{
    public const string NamedNetnsDir = "/run/netns";

    private readonly ConcurrentDictionary<uint, Workload> registered = new();
    private readonly ConcurrentDictionary<uint, Workload> named = new();
    private readonly string netnsDir;

    public Attribution(string netnsDir = NamedNetnsDir)
    {
        this.netnsDir = netnsDir;
        Refresh();
    }

    /// <summary>Names a network namespace as a pod (with its labels, when known).</summary>
    public void Register(uint netnsInode, string? @namespace, string pod, IReadOnlyDictionary<string, string>? labels = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(pod);
        registered[netnsInode] = new Workload(@namespace, pod) { Labels = labels };
    }

    /// <summary>Names a pod by the path of its network namespace (/run/netns/NAME, /proc/PID/ns/net).</summary>
    public void Register(string netnsPath, string? @namespace, string pod, IReadOnlyDictionary<string, string>? labels = null) =>
        Register(NetnsInode(netnsPath) ?? throw new FileNotFoundException($"no network namespace at {netnsPath}", netnsPath), @namespace, pod, labels);

    public bool Unregister(uint netnsInode) => registered.TryRemove(netnsInode, out _);

    /// <summary>
    /// The pod of a network namespace; null for the host's, unknown ones, and named namespaces that no
    /// pod registered (a named namespace is not a pod: the lab's own node and world namespaces are not).
    /// </summary>
    public Workload? Lookup(uint netnsInode) => registered.TryGetValue(netnsInode, out var w) ? w : null;

    /// <summary>The name of a named network namespace (ip netns, under /run/netns), null when none has this inode.</summary>
    public string? NetnsName(uint netnsInode) => named.TryGetValue(netnsInode, out var w) ? w.Name : null;

    /// <summary>Rereads the named network namespaces (namespaces created since are found, deleted ones forgotten).</summary>
    public void Refresh()
    {
        var seen = new Dictionary<uint, Workload>();
        if (Directory.Exists(netnsDir))
            foreach (var path in Directory.EnumerateFiles(netnsDir))
                if (NetnsInode(path) is { } ino)
                    seen[ino] = new Workload(null, Path.GetFileName(path));
        foreach (var key in named.Keys)
            if (!seen.ContainsKey(key))
                named.TryRemove(key, out _);
        foreach (var (ino, w) in seen)
            named[ino] = w;
    }

    /// <summary>The inode of a network namespace file (a /run/netns bind mount or a /proc/PID/ns/net link).</summary>
    public static uint? NetnsInode(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        // /proc/PID/ns/net reads as "net:[4026531840]" without needing to stat the namespace
        if (path.StartsWith("/proc/", StringComparison.Ordinal))
        {
            try
            {
                var target = new FileInfo(path).LinkTarget;
                if (target is not null && target.StartsWith("net:[", StringComparison.Ordinal) && target.EndsWith(']'))
                    return uint.Parse(target.AsSpan(5, target.Length - 6), CultureInfo.InvariantCulture);
            }
            catch (IOException)
            {
                return null;
            }
            catch (UnauthorizedAccessException)
            {
                return null;
            }
        }
        return FileStat.Inode(path) is { } ino ? (uint)ino : null;
    }

    /// <summary>The network namespace of this process.</summary>
    public static uint CurrentNetnsInode() => NetnsInode("/proc/self/ns/net") ?? 0;
}
