using System.Net;
using Forensics.Datapath.Abi;

namespace Forensics.Datapath.Control;

/// <summary>One compiled policy map entry: (endpoint, direction, remote identity, protocol, port) -> allow/deny.</summary>
public sealed record PolicyEntry(
    ushort EndpointId,
    string Endpoint,
    Dir Direction,
    uint Identity,
    byte Protocol,
    ushort Port,
    bool Allow,
    bool Deny,
    IReadOnlyList<string> Policies)
{
    /// <summary>The rules the entry was compiled from (for a deny entry, its deny rules; see <see cref="PolicyRuleRef"/>).</summary>
    public IReadOnlyList<PolicyRuleRef> Rules { get; init; } = [];

    /// <summary>The id under which the datapath knows <see cref="Rules"/>: carried by the map entry into verdict and drop events.</summary>
    public uint RuleId { get; init; }

    /// <summary>The last port of the range Port..EndPort (endPort); 0 for a single port.</summary>
    public ushort EndPort { get; init; }

    /// <summary>Connections this entry decided (read from the map in a snapshot).</summary>
    public ulong Hits { get; init; }

    /// <summary>The match type a hit on this entry reports.</summary>
    public PolicyMatch Match => (Identity, Protocol) switch
    {
        (0, 0) => PolicyMatch.All,
        (0, _) => PolicyMatch.L4Only,
        (_, 0) => PolicyMatch.L3Only,
        _ => PolicyMatch.L3L4,
    };
}

/// <summary>What the policies say about one endpoint: whether each direction is enforced, and the entries.</summary>
public sealed record CompiledEndpointPolicy(bool IngressEnforced, bool EgressEnforced, IReadOnlyList<PolicyEntry> Entries);

/// <summary>
/// What compiling a pod's policy needs beyond the policies: every pod (the named
/// ports egress rules resolve), the services (toServices), the node's labels
/// (fromNodes/toNodes), and whether ports with L7 rules are denied (--l7 deny).
/// </summary>
public sealed record PolicyContext(
    IReadOnlyList<PodSpec> Pods,
    IReadOnlyList<ServiceSpec> Services,
    IReadOnlyDictionary<string, string> NodeLabels,
    bool L7Deny)
{
    public static PolicyContext Of(ClusterSpec cluster)
    {
        ArgumentNullException.ThrowIfNull(cluster);
        return new(cluster.Pods, cluster.Services, cluster.NodeLabels, cluster.L7Deny);
    }

    public static PolicyContext Empty { get; } = new([], [], new Dictionary<string, string>(StringComparer.Ordinal), false);

    /// <summary>
    /// The names DNS answers have shown and their addresses (toFQDNs selects these, and only these):
    /// empty until a pod resolved a name.
    /// </summary>
    public IReadOnlyDictionary<string, IReadOnlyList<IPAddress>> LearntNames { get; init; } =
        new Dictionary<string, IReadOnlyList<IPAddress>>(StringComparer.Ordinal);
}

/// <summary>
/// Compiles CiliumNetworkPolicies and CiliumClusterwideNetworkPolicies into
/// per-endpoint policy map entries with Cilium's semantics (pkg/policy/rule.go,
/// rules.go, repository.go): selectors (matchLabels and matchExpressions) select
/// identities by their labels, CIDR rules select CIDR identities inside the
/// prefix and outside its excepts, entities select what Cilium's entity
/// selectors select, fromRequires/toRequires add their conditions to every
/// endpoint selector of every rule selecting the endpoint, nodes select the
/// host identity by the lab's node labels, toServices the backends of services
/// without a selector. A rule with ports and no peer applies to any peer, a
/// rule with peers and no ports to any port, a rule with neither (<c>{}</c>) or
/// with a peer list given empty allows nothing. Named ports resolve against the
/// endpoint's own container ports (ingress) or every pod's (egress, when the
/// name means one number). A direction with any rule is enforced for the
/// endpoints the policy selects; it is default deny unless every such policy
/// says <c>enableDefaultDeny: false</c> for it, in which case an allow-all entry
/// is added (Cilium's synthesized wildcard rule) and only deny rules drop.
/// </summary>
public static class PolicyCompiler
{
    public const byte Icmp = 1;
    public const byte Tcp = 6;
    public const byte Udp = 17;
    public const byte Icmp6 = 58;

    public static CompiledEndpointPolicy Compile(PodSpec pod, ushort endpointId, IReadOnlyList<NetworkPolicySpec> policies, IdentityAllocator ids,
        PolicyContext? context = null)
    {
        ArgumentNullException.ThrowIfNull(pod);
        ArgumentNullException.ThrowIfNull(policies);
        ArgumentNullException.ThrowIfNull(ids);
        var podLabels = IdentityAllocator.PodLabels(pod);
        var selected = policies.Where(p => SelectsPod(p, pod, podLabels)).ToList();
        return CompileSelected(selected, pod.FullName, [pod], endpointId, ids, context ?? PolicyContext.Empty);
    }

    /// <summary>
    /// Whether a policy selects a pod (its labels: <see cref="IdentityAllocator.PodLabels"/>): a namespaced policy
    /// only in its namespace; a host policy (nodeSelector) never (Cilium's rule.matchesSubject).
    /// </summary>
    public static bool SelectsPod(NetworkPolicySpec policy, PodSpec pod, IReadOnlyList<string> podLabels)
    {
        ArgumentNullException.ThrowIfNull(policy);
        ArgumentNullException.ThrowIfNull(pod);
        return !policy.SelectsNodes && (policy.Clusterwide || policy.Namespace == pod.Namespace)
            && Selects(policy.Selector, podLabels, policy.Clusterwide ? null : policy.Namespace);
    }

    /// <summary>The name the host endpoint's policy entries carry (Cilium labels the host endpoint reserved:host).</summary>
    public const string HostEndpointName = "reserved:host";

    /// <summary>
    /// The labels of the lab's one node as Cilium's host endpoint has them: its node labels (source k8s) and
    /// reserved:host. What a nodeSelector, fromNodes and toNodes select it by.
    /// </summary>
    public static IReadOnlyList<string> NodeIdentityLabels(IReadOnlyDictionary<string, string> nodeLabels)
    {
        ArgumentNullException.ThrowIfNull(nodeLabels);
        return [.. nodeLabels.Select(kv => $"k8s:{kv.Key}={kv.Value}"), "reserved:host"];
    }

    /// <summary>Whether a host policy (nodeSelector) selects the lab's node.</summary>
    public static bool SelectsNode(NetworkPolicySpec policy, IReadOnlyDictionary<string, string> nodeLabels)
    {
        ArgumentNullException.ThrowIfNull(policy);
        return policy.SelectsNodes && Selects(policy.Selector, NodeIdentityLabels(nodeLabels), null);
    }

    /// <summary>
    /// The host endpoint's policy (Cilium's host firewall): the host policies whose nodeSelector selects the lab's
    /// node (by <see cref="PolicyContext.NodeLabels"/>), compiled as an endpoint's with the same semantics: a
    /// direction with rules is enforced, default deny unless enableDefaultDeny says otherwise. Named ports on
    /// ingress resolve to nothing (the node has no container ports).
    /// </summary>
    public static CompiledEndpointPolicy CompileHost(ushort endpointId, IReadOnlyList<NetworkPolicySpec> policies, IdentityAllocator ids,
        PolicyContext? context = null)
    {
        ArgumentNullException.ThrowIfNull(policies);
        ArgumentNullException.ThrowIfNull(ids);
        context ??= PolicyContext.Empty;
        var selected = policies.Where(p => SelectsNode(p, context.NodeLabels)).ToList();
        return CompileSelected(selected, HostEndpointName, [], endpointId, ids, context);
    }

    private static CompiledEndpointPolicy CompileSelected(List<NetworkPolicySpec> selected, string endpointName, IReadOnlyList<PodSpec> ownPorts,
        ushort endpointId, IdentityAllocator ids, PolicyContext context)
    {
        bool ingress = false, egress = false, ingressDefaultDeny = false, egressDefaultDeny = false;
        var entries = new Dictionary<(Dir, uint, byte, ushort, ushort), (bool Allow, bool Deny, SortedSet<string> Names, SortedSet<PolicyRuleRef> Allows, SortedSet<PolicyRuleRef> Denies)>();
        // fromRequires/toRequires of every rule that selects the endpoint apply to every endpoint selector (rules.go)
        var requires = new Dictionary<(Dir, bool), List<LabelRequirement>>
        {
            [(Dir.Ingress, false)] = Requirements(selected.SelectMany(p => p.Ingress)),
            [(Dir.Ingress, true)] = Requirements(selected.SelectMany(p => p.IngressDeny)),
            [(Dir.Egress, false)] = Requirements(selected.SelectMany(p => p.Egress)),
            [(Dir.Egress, true)] = Requirements(selected.SelectMany(p => p.EgressDeny)),
        };

        foreach (var p in selected)
        {
            if (p.Ingress.Count + p.IngressDeny.Count > 0)
            {
                ingress = true;
                ingressDefaultDeny |= p.DefaultDenyIngress ?? true;
            }
            if (p.Egress.Count + p.EgressDeny.Count > 0)
            {
                egress = true;
                egressDefaultDeny |= p.DefaultDenyEgress ?? true;
            }
            var name = p.FullName;
            Add(p.Ingress, Dir.Ingress, deny: false, "ingress");
            Add(p.Egress, Dir.Egress, deny: false, "egress");
            Add(p.IngressDeny, Dir.Ingress, deny: true, "ingressDeny");
            Add(p.EgressDeny, Dir.Egress, deny: true, "egressDeny");

            void Add(IReadOnlyList<PolicyRule> rules, Dir dir, bool deny, string section)
            {
                for (int i = 0; i < rules.Count; i++)
                {
                    var r = rules[i];
                    var rule = p.RuleRef(section, i);
                    var ports = RulePorts(r, dir, ownPorts, context, deny);
                    if (ports.Count == 0)
                        continue;
                    foreach (var id in RulePeers(r, p.Clusterwide ? null : p.Namespace, ids, requires[(dir, deny)], context))
                        foreach (var (proto, port, end) in ports)
                            Put((dir, id, proto, port, end), deny, name, rule);
                }
            }
        }
        // Cilium synthesizes an allow-all rule for a direction that only default-allow policies enforce.
        if (ingress && !ingressDefaultDeny)
            Put((Dir.Ingress, 0, 0, 0, 0), deny: false, name: null, PolicyRuleRef.DefaultAllow(Dir.Ingress));
        if (egress && !egressDefaultDeny)
            Put((Dir.Egress, 0, 0, 0, 0), deny: false, name: null, PolicyRuleRef.DefaultAllow(Dir.Egress));

        void Put((Dir, uint, byte, ushort, ushort) key, bool deny, string? name, PolicyRuleRef rule)
        {
            var cur = entries.TryGetValue(key, out var e) ? e
                : (Allow: false, Deny: false, Names: new SortedSet<string>(StringComparer.Ordinal), Allows: new SortedSet<PolicyRuleRef>(PolicyRuleRef.Order), Denies: new SortedSet<PolicyRuleRef>(PolicyRuleRef.Order));
            if (name is not null)
                cur.Names.Add(name);
            (deny ? cur.Denies : cur.Allows).Add(rule);
            entries[key] = (cur.Allow || !deny, cur.Deny || deny, cur.Names, cur.Allows, cur.Denies);
        }

        var list = entries
            .Select(kv => new PolicyEntry(endpointId, endpointName, kv.Key.Item1, kv.Key.Item2, kv.Key.Item3, kv.Key.Item4,
                kv.Value.Allow, kv.Value.Deny, [.. kv.Value.Names])
            {
                EndPort = kv.Key.Item5,
                // deny wins in the datapath, so a deny entry decides by its deny rules
                Rules = kv.Value.Deny ? [.. kv.Value.Denies] : [.. kv.Value.Allows],
            })
            .OrderBy(e => e.Direction).ThenBy(e => e.Identity).ThenBy(e => e.Protocol).ThenBy(e => e.Port).ThenBy(e => e.EndPort)
            .ToList();
        return new CompiledEndpointPolicy(ingress, egress, list);
    }

    /// <summary>Every requires selector of the rules as requirements (matchLabels become In [value]).</summary>
    private static List<LabelRequirement> Requirements(IEnumerable<PolicyRule> rules) =>
        [.. rules.SelectMany(r => r.Requires).SelectMany(s => s.MatchExpressions.Concat(s.MatchLabels.Select(kv => new LabelRequirement(kv.Key, "In", [kv.Value]))))];

    /// <summary>
    /// matchLabels and matchExpressions against identity labels ("source:key=value"),
    /// as Cilium's label selectors match: a key's source (k8s:, reserved:, ...) must
    /// be the label's, a key without one (or any:) matches any source. The policy's
    /// namespace is implied unless the selector names one (or is reserved:).
    /// </summary>
    public static bool Selects(EndpointSelector selector, IReadOnlyList<string> identityLabels, string? policyNamespace)
    {
        ArgumentNullException.ThrowIfNull(selector);
        ArgumentNullException.ThrowIfNull(identityLabels);
        bool namesNamespace = false;
        foreach (var (key, value) in selector.MatchLabels)
        {
            namesNamespace |= NamesNamespace(key);
            if (LabelValue(identityLabels, key) != value)
                return false;
        }
        foreach (var r in selector.MatchExpressions)
        {
            namesNamespace |= NamesNamespace(r.Key);
            if (!r.Matches(LabelValue(identityLabels, r.Key)))
                return false;
        }
        if (!namesNamespace && policyNamespace is not null)
            return identityLabels.Contains($"k8s:{IdentityAllocator.NamespaceLabel}={policyNamespace}", StringComparer.Ordinal);
        return true;
    }

    private static bool NamesNamespace(string key)
    {
        var (source, bare) = SplitKey(key);
        return source == "reserved" || bare == IdentityAllocator.NamespaceLabel || bare.StartsWith(IdentityAllocator.NamespaceLabelsPrefix, StringComparison.Ordinal);
    }

    /// <summary>Label sources Cilium knows; a key prefixed with one of them names that source.</summary>
    private static readonly string[] Sources = ["k8s", "any", "reserved", "cidr", "unspec", "container", "kvstore", "cilium-generated", "fqdn", "node"];

    /// <summary>"k8s:app" -> (k8s, app); "app" -> (any, app).</summary>
    internal static (string Source, string Key) SplitKey(string key)
    {
        int colon = key.IndexOf(':', StringComparison.Ordinal);
        if (colon > 0 && Array.IndexOf(Sources, key[..colon]) >= 0)
            return (key[..colon], key[(colon + 1)..]);
        return ("any", key);
    }

    /// <summary>The value of the label a selector key names (empty for a label without value, null when absent).</summary>
    internal static string? LabelValue(IReadOnlyList<string> identityLabels, string selectorKey)
    {
        var (source, key) = SplitKey(selectorKey);
        foreach (var l in identityLabels)
        {
            int colon = l.IndexOf(':', StringComparison.Ordinal);
            if (colon < 0 || source != "any" && !l.AsSpan(0, colon).SequenceEqual(source))
                continue;
            int eq = l.IndexOf('=', colon + 1);
            var k = eq < 0 ? l[(colon + 1)..] : l[(colon + 1)..eq];
            if (k == key)
                return eq < 0 ? "" : l[(eq + 1)..];
        }
        return null;
    }

    /// <summary>
    /// The identities a rule applies to, as Cilium's mergeIngress/mergeEgress
    /// resolve them: none when a peer list was given empty or when the rule
    /// names neither peers nor ports; {0} (any identity) for ports without peers.
    /// </summary>
    public static IReadOnlySet<uint> RulePeers(PolicyRule rule, string? policyNamespace, IdentityAllocator ids,
        IReadOnlyList<LabelRequirement>? requirements = null, PolicyContext? context = null)
    {
        ArgumentNullException.ThrowIfNull(rule);
        if (rule.SelectsNothing || !rule.PeersGiven && !rule.PortsGiven)
            return new SortedSet<uint>();
        return Peers(rule, policyNamespace, ids, requirements, context);
    }

    /// <summary>(protocol, port) pairs a rule applies to: (0, 0) when it names no ports; none when toPorts names no port.</summary>
    public static IReadOnlyList<(byte Proto, ushort Port)> RulePorts(PolicyRule rule)
    {
        ArgumentNullException.ThrowIfNull(rule);
        return rule.PortsGiven ? Ports(rule) : [(0, 0)];
    }

    /// <summary>
    /// (protocol, port, end port) triples a rule applies to at an endpoint: named ports
    /// resolved (ingress: the endpoint's own; egress: every pod's, when the name means
    /// one number), ports with L7 rules left out of allows under --l7 deny.
    /// </summary>
    private static List<(byte Proto, ushort Port, ushort End)> RulePorts(PolicyRule rule, Dir dir, IReadOnlyList<PodSpec> ownPorts, PolicyContext context, bool deny)
    {
        if (!rule.PortsGiven)
            return [(0, 0, 0)];
        var list = new List<(byte, ushort, ushort)>();
        foreach (var pp in rule.Ports)
        {
            if (pp.L7 is not null && context.L7Deny && !deny)
                continue;
            foreach (var proto in Protocols(pp.Protocol))
            {
                if (pp.Name is { } portName)
                {
                    if (NamedPort(portName, proto, dir == Dir.Ingress ? ownPorts : context.Pods) is { } n)
                        list.Add((proto, n, 0));
                    continue;
                }
                list.Add(proto == 0 ? ((byte)0, (ushort)0, (ushort)0) : (proto, (ushort)pp.Port, (ushort)pp.EndPort));
            }
        }
        return list.Distinct().ToList();
    }

    /// <summary>The number a port name means among these pods for a protocol; null when none or more than one (Cilium's GetNamedPort).</summary>
    private static ushort? NamedPort(string name, byte proto, IReadOnlyList<PodSpec> pods)
    {
        var numbers = pods.SelectMany(p => p.NamedPorts)
            .Where(kv => string.Equals(kv.Key, name, StringComparison.OrdinalIgnoreCase) && ProtocolNumber(kv.Value.Protocol) == proto && kv.Value.Port != 0)
            .Select(kv => kv.Value.Port).Distinct().ToList();
        return numbers.Count == 1 ? (ushort)numbers[0] : null;
    }

    /// <summary>The protocols a policy protocol name stands for: ANY is TCP and UDP (SCTP is not carried), and any protocol with no port.</summary>
    private static byte[] Protocols(string protocol) => protocol.ToUpperInvariant() switch
    {
        "TCP" => [Tcp],
        "UDP" => [Udp],
        "ICMP" => [Icmp],
        "ICMPV6" => [Icmp6],
        "ANY" or "" => [Tcp, Udp],
        _ => throw new ArgumentException($"unsupported protocol '{protocol}'", nameof(protocol)),
    };

    /// <summary>The identities a rule's peers select; {0} (any identity) when it names none.</summary>
    public static IReadOnlySet<uint> Peers(PolicyRule rule, string? policyNamespace, IdentityAllocator ids,
        IReadOnlyList<LabelRequirement>? requirements = null, PolicyContext? context = null)
    {
        ArgumentNullException.ThrowIfNull(rule);
        ArgumentNullException.ThrowIfNull(ids);
        context ??= PolicyContext.Empty;
        var set = new SortedSet<uint>();
        if (!rule.PeersGiven)
        {
            set.Add(0);
            return set;
        }
        var all = ids.All.ToList();
        foreach (var endpoint in rule.Endpoints)
        {
            var sel = requirements is { Count: > 0 } ? endpoint with { MatchExpressions = [.. endpoint.MatchExpressions, .. requirements] } : endpoint;
            foreach (var id in all)
                if (Selects(sel, id.Labels, policyNamespace))
                    set.Add(id.Id);
        }
        // the lab has one node, the host: a node selector selects it by the lab's node labels
        var nodeLabels = NodeIdentityLabels(context.NodeLabels);
        if (rule.Nodes.Any(n => Selects(n, nodeLabels, null)))
            set.Add((uint)ReservedIdentity.Host);
        foreach (var c in rule.Cidrs)
            AddCidr(IdentityAllocator.ParseCidr(c.Cidr), c.Except.Select(IdentityAllocator.ParseCidr).ToList());
        foreach (var svc in rule.Services)
            foreach (var ip in ServiceAddresses(svc, context))
                AddCidr(new IPNetwork(ip, IsV4(ip) ? 32 : 128), []);
        foreach (var entity in rule.Entities)
            foreach (var id in EntityIdentities(entity, all))
                set.Add(id);
        // toFQDNs: the addresses DNS answers gave for matching names, as toCIDRSet entries (fqdn.go GetAsEndpointSelectors)
        foreach (var f in rule.Fqdns)
            foreach (var (name, addrs) in context.LearntNames)
                if (f.Matches(name))
                    foreach (var ip in addrs)
                        AddCidr(new IPNetwork(ip, IsV4(ip) ? 32 : 128), []);
        return set;

        void AddCidr(IPNetwork net, List<IPNetwork> excepts)
        {
            if (net.PrefixLength == 0)
                set.Add((uint)ReservedIdentity.World);
            foreach (var id in all.Where(i => i.IsCidr))
                if (Contains(net, id.Cidr!.Value) && !excepts.Any(e => Contains(e, id.Cidr!.Value)))
                    set.Add(id.Id);
        }
    }

    /// <summary>The backend addresses of the services toServices names: only services without a selector, as Cilium (v1.16) enforces it.</summary>
    public static IEnumerable<IPAddress> ServiceAddresses(ServiceRef svc, PolicyContext context)
    {
        ArgumentNullException.ThrowIfNull(svc);
        ArgumentNullException.ThrowIfNull(context);
        return context.Services
            .Where(s => s.Namespace == svc.Namespace && s.Selector.Count == 0
                && (svc.Name is { } n ? s.Name == n : svc.Selector!.All(kv => s.Labels.TryGetValue(kv.Key, out var v) && v == kv.Value)))
            .SelectMany(s => s.Endpoints);
    }

    /// <summary>What an entity selects (pkg/policy/api/entity.go EntitySelectorMapping): by reserved labels, "cluster" also the cluster's workloads.</summary>
    private static IEnumerable<uint> EntityIdentities(string entity, List<SecurityIdentity> all)
    {
        IEnumerable<SecurityIdentity> With(params string[] labels) => all.Where(i => i.Labels.Any(l => labels.Contains(l, StringComparer.Ordinal)));
        return entity switch
        {
            "all" => [0],
            "none" => [],
            "world" => With("reserved:world", "reserved:world-ipv4", "reserved:world-ipv6").Select(i => i.Id),
            "cluster" => With("reserved:host", "reserved:remote-node", "reserved:init", "reserved:ingress", "reserved:health", "reserved:unmanaged",
                    "reserved:kube-apiserver", $"k8s:{IdentityAllocator.ClusterLabel}={IdentityAllocator.ClusterName}").Select(i => i.Id),
            "host" or "init" or "ingress" or "remote-node" or "health" or "unmanaged" or "kube-apiserver" or "world-ipv4" or "world-ipv6" =>
                With($"reserved:{entity}").Select(i => i.Id),
            _ => throw new ArgumentException($"unknown entity '{entity}'", nameof(entity)),
        };
    }

    /// <summary>(protocol, port) pairs of a rule's numbered ports; ANY expands to TCP and UDP.</summary>
    public static IReadOnlyList<(byte Proto, ushort Port)> Ports(PolicyRule rule)
    {
        ArgumentNullException.ThrowIfNull(rule);
        var list = new List<(byte, ushort)>();
        foreach (var pp in rule.Ports.Where(p => p.Name is null))
        {
            if (pp.Port is < 0 or > 65535)
                throw new ArgumentException($"port {pp.Port} out of range", nameof(rule));
            if (pp.Protocol.ToUpperInvariant() is "ANY" or "" && pp.Port == 0)
            {
                list.Add((0, 0));
                continue;
            }
            foreach (var proto in Protocols(pp.Protocol))
                list.Add((proto, (ushort)pp.Port));
        }
        return list.Distinct().ToList();
    }

    /// <summary>True when inner lies within outer.</summary>
    public static bool Contains(IPNetwork outer, IPNetwork inner) =>
        inner.PrefixLength >= outer.PrefixLength && outer.Contains(inner.BaseAddress);

    public static byte ProtocolNumber(string protocol) => protocol.ToUpperInvariant() switch
    {
        "TCP" => Tcp,
        "UDP" => Udp,
        "ICMP" => Icmp,
        "ICMPV6" => Icmp6,
        _ => throw new ArgumentException($"unsupported protocol '{protocol}'", nameof(protocol)),
    };

    internal static bool IsV4(IPAddress ip) => ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork;
}
