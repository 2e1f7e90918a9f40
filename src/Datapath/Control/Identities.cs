using System.Net;

namespace Forensics.Datapath.Control;

/// <summary>A security identity: its number and the label set it stands for (sorted, "source:key=value").</summary>
public sealed record SecurityIdentity(uint Id, IReadOnlyList<string> Labels)
{
    public bool IsReserved => Id < (uint)ReservedIdentity.MinCluster;
    public bool IsCidr => Id >= (uint)ReservedIdentity.MinLocal;

    /// <summary>The prefix of a CIDR identity.</summary>
    public IPNetwork? Cidr { get; init; }

    public override string ToString() => $"{Id} [{string.Join(' ', Labels)}]";
}

/// <summary>
/// Cilium-compatible identities: reserved ones keep Cilium's numbers, workload
/// identities are allocated from label sets (from 256), CIDR identities from
/// prefixes (local scope, from 1 &lt;&lt; 24). Allocation is deterministic: the
/// same cluster description yields the same numbers.
/// </summary>
public sealed class IdentityAllocator
{
    public const string NamespaceLabel = "io.kubernetes.pod.namespace";
    public const string ClusterLabel = "io.cilium.k8s.policy.cluster";
    public const string ClusterName = "default";

    private readonly Dictionary<string, SecurityIdentity> byLabels = new(StringComparer.Ordinal);
    private readonly Dictionary<uint, SecurityIdentity> byId = [];
    private readonly Dictionary<IPNetwork, SecurityIdentity> byCidr = [];
    private uint nextCluster = (uint)ReservedIdentity.MinCluster;
    private uint nextLocal = (uint)ReservedIdentity.MinLocal;

    public IdentityAllocator()
    {
        // Cilium's reserved identities 1-10 with their labels (Format's table); unknown (0) is never
        // allocated. world-ipv4 and world-ipv6 exist so the entities of those names select something.
        foreach (var (id, label) in Format.ReservedIdentities.Labels)
            if (id is >= (uint)ReservedIdentity.Host and <= (uint)ReservedIdentity.WorldIpv6)
                AddReserved((ReservedIdentity)id, label);
    }

    private void AddReserved(ReservedIdentity id, string label)
    {
        var identity = new SecurityIdentity((uint)id, [label]);
        byLabels[label] = identity;
        byId[(uint)id] = identity;
    }

    public IEnumerable<SecurityIdentity> All => byId.Values.OrderBy(i => i.Id);

    public SecurityIdentity this[uint id] => byId[id];

    public const string ServiceAccountLabel = "io.cilium.k8s.policy.serviceaccount";
    public const string NamespaceLabelsPrefix = "io.cilium.k8s.namespace.labels.";

    /// <summary>
    /// The identity labels of a pod, as Cilium derives them (pkg/k8s, pkg/labelsfilter):
    /// the pod's labels that the default label filter keeps, the namespace, the
    /// service account, the cluster, and the namespace's labels
    /// (io.cilium.k8s.namespace.labels.*), all with the k8s: source.
    /// </summary>
    public static IReadOnlyList<string> PodLabels(PodSpec pod)
    {
        ArgumentNullException.ThrowIfNull(pod);
        var labels = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var (k, v) in pod.Labels)
            if (IdentityLabelFilter.Keep(StripSource(k)))
                labels.Add($"k8s:{StripSource(k)}={v}");
        labels.Add($"k8s:{NamespaceLabel}={pod.Namespace}");
        labels.Add($"k8s:{ClusterLabel}={ClusterName}");
        labels.Add($"k8s:{ServiceAccountLabel}={pod.ServiceAccount}");
        labels.Add($"k8s:{NamespaceLabelsPrefix}kubernetes.io/metadata.name={pod.Namespace}");
        foreach (var (k, v) in pod.NamespaceLabels)
            labels.Add($"k8s:{NamespaceLabelsPrefix}{k}={v}");
        return [.. labels];
    }

    public static string StripSource(string key)
    {
        ArgumentNullException.ThrowIfNull(key);
        foreach (var p in (ReadOnlySpan<string>)["k8s:", "any:"])
            if (key.StartsWith(p, StringComparison.Ordinal))
                return key[p.Length..];
        return key;
    }

    /// <summary>Allocates (or returns) the identity of a label set.</summary>
    public SecurityIdentity ForLabels(IReadOnlyList<string> labels)
    {
        ArgumentNullException.ThrowIfNull(labels);
        var key = string.Join('\n', labels.Order(StringComparer.Ordinal));
        if (byLabels.TryGetValue(key, out var id))
            return id;
        id = new SecurityIdentity(nextCluster++, [.. labels.Order(StringComparer.Ordinal)]);
        byLabels[key] = id;
        byId[id.Id] = id;
        return id;
    }

    public SecurityIdentity ForPod(PodSpec pod) => ForLabels(PodLabels(pod));

    /// <summary>Allocates (or returns) the identity of a CIDR: labels cidr:PREFIX and reserved:world.</summary>
    public SecurityIdentity ForCidr(IPNetwork net)
    {
        if (byCidr.TryGetValue(net, out var id))
            return id;
        id = new SecurityIdentity(nextLocal++, [$"cidr:{net}", "reserved:world"]) { Cidr = net };
        byCidr[net] = id;
        byId[id.Id] = id;
        return id;
    }

    /// <summary>
    /// Allocates identities for every pod and CIDR of a cluster in a fixed order
    /// (label sets and prefixes sorted), so numbers do not depend on attach order.
    /// </summary>
    public void Preallocate(ClusterSpec cluster)
    {
        ArgumentNullException.ThrowIfNull(cluster);
        foreach (var labels in cluster.Pods.Select(PodLabels).DistinctBy(l => string.Join('\n', l)).OrderBy(l => string.Join('\n', l), StringComparer.Ordinal))
            ForLabels(labels);
        var rules = cluster.Policies.SelectMany(p => p.Ingress.Concat(p.Egress).Concat(p.IngressDeny).Concat(p.EgressDeny)).ToList();
        var context = PolicyContext.Of(cluster);
        var cidrs = rules
            .SelectMany(r => r.Cidrs)
            .SelectMany(c => c.Except.Prepend(c.Cidr))
            .Select(ParseCidr)
            .Concat(rules.SelectMany(r => r.Services).SelectMany(s => PolicyCompiler.ServiceAddresses(s, context))
                .Select(ip => new IPNetwork(ip, PolicyCompiler.IsV4(ip) ? 32 : 128)))
            .Where(n => n.PrefixLength > 0)
            .Distinct()
            .OrderBy(n => n.BaseAddress.AddressFamily)
            .ThenBy(n => n.BaseAddress.GetAddressBytes(), ByteOrder.Instance)
            .ThenBy(n => n.PrefixLength);
        foreach (var n in cidrs)
            ForCidr(n);
    }

    /// <summary>A CIDR as written in a policy; a bare address is a host prefix.</summary>
    public static IPNetwork ParseCidr(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (!text.Contains('/', StringComparison.Ordinal))
        {
            var ip = IPAddress.Parse(text);
            return new IPNetwork(ip, ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128);
        }
        var net = IPNetwork.Parse(text);
        return net;
    }

    private sealed class ByteOrder : IComparer<byte[]>
    {
        public static readonly ByteOrder Instance = new();

        public int Compare(byte[]? x, byte[]? y)
        {
            if (x is null || y is null)
                return (x is null ? 0 : 1) - (y is null ? 0 : 1);
            return ((ReadOnlySpan<byte>)x).SequenceCompareTo(y);
        }
    }
}

/// <summary>
/// Cilium's default identity label filter (pkg/labelsfilter defaultLabelPrefixCfg):
/// which of a pod's labels make its identity. Each pattern matches at the start of
/// the key; a label is kept when no ignore pattern matches, or an include pattern
/// matches a longer part of the key than the shortest ignore pattern does.
/// </summary>
public static class IdentityLabelFilter
{
    private static readonly (System.Text.RegularExpressions.Regex Pattern, bool Ignore)[] Patterns =
    [
        .. new[]
        {
            @"io\.kubernetes\.pod\.namespace", @"io\.cilium\.k8s\.namespace\.labels", @"app\.kubernetes\.io", @"io\.cilium\.k8s\.policy\.cluster",
        }.Select(p => (new System.Text.RegularExpressions.Regex(p, System.Text.RegularExpressions.RegexOptions.CultureInvariant), false)),
        .. new[]
        {
            @"io\.kubernetes", @"kubernetes\.io", @"statefulset\.kubernetes\.io/pod-name", @"apps\.kubernetes\.io/pod-index",
            @"batch\.kubernetes\.io/job-completion-index", @"batch\.kubernetes\.io/controller-uid", @".*beta\.kubernetes\.io", @"k8s\.io",
            "pod-template-generation", "pod-template-hash", "controller-revision-hash", "controller-uid", "annotation.*", "etcd_node",
        }.Select(p => (new System.Text.RegularExpressions.Regex(p, System.Text.RegularExpressions.RegexOptions.CultureInvariant), true)),
    ];

    /// <summary>Whether a label key (without source) is part of the identity.</summary>
    public static bool Keep(string key)
    {
        ArgumentNullException.ThrowIfNull(key);
        int included = 0, ignored = 0;
        foreach (var (pattern, ignore) in Patterns)
        {
            var m = pattern.Match(key);
            if (!m.Success || m.Index != 0)
                continue;
            if (ignore)
                ignored = ignored == 0 ? m.Length : Math.Min(ignored, m.Length);
            else
                included = Math.Max(included, m.Length);
        }
        return ignored == 0 || included > ignored;
    }
}
