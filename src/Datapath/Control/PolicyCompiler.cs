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
/// Compiles CiliumNetworkPolicies into per-endpoint policy map entries with
/// Cilium's semantics (pkg/policy/rule.go, repository.go): selectors select
/// identities by labels (in the policy's namespace unless they name the
/// namespace label), CIDR rules select CIDR identities inside the prefix and
/// outside its excepts, entities select reserved identities. A rule with ports
/// and no peer applies to any peer, a rule with peers and no ports to any port,
/// a rule with neither (<c>{}</c>) or with a peer list given empty allows
/// nothing. A direction with any rule is enforced for the endpoints the policy
/// selects; it is default deny unless every such policy says
/// <c>enableDefaultDeny: false</c> for it, in which case an allow-all entry is
/// added (Cilium's synthesized wildcard rule) and only deny rules drop.
/// </summary>
public static class PolicyCompiler
{
    public const byte Tcp = 6;
    public const byte Udp = 17;

    public static CompiledEndpointPolicy Compile(PodSpec pod, ushort endpointId, IReadOnlyList<NetworkPolicySpec> policies, IdentityAllocator ids)
    {
        ArgumentNullException.ThrowIfNull(pod);
        ArgumentNullException.ThrowIfNull(policies);
        ArgumentNullException.ThrowIfNull(ids);
        var podLabels = IdentityAllocator.PodLabels(pod);
        bool ingress = false, egress = false, ingressDefaultDeny = false, egressDefaultDeny = false;
        var entries = new Dictionary<(Dir, uint, byte, ushort), (bool Allow, bool Deny, SortedSet<string> Names, SortedSet<PolicyRuleRef> Allows, SortedSet<PolicyRuleRef> Denies)>();

        foreach (var p in policies)
        {
            if (p.Namespace != pod.Namespace || !Selects(p.Selector, podLabels, p.Namespace))
                continue;
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
            var name = $"{p.Namespace}/{p.Name}";
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
                    foreach (var id in RulePeers(r, p.Namespace, ids))
                        foreach (var (proto, port) in RulePorts(r))
                            Put((dir, id, proto, port), deny, name, rule);
                }
            }
        }
        // Cilium synthesizes an allow-all rule for a direction that only default-allow policies enforce.
        if (ingress && !ingressDefaultDeny)
            Put((Dir.Ingress, 0, 0, 0), deny: false, name: null, PolicyRuleRef.DefaultAllow(Dir.Ingress));
        if (egress && !egressDefaultDeny)
            Put((Dir.Egress, 0, 0, 0), deny: false, name: null, PolicyRuleRef.DefaultAllow(Dir.Egress));

        void Put((Dir, uint, byte, ushort) key, bool deny, string? name, PolicyRuleRef rule)
        {
            var cur = entries.TryGetValue(key, out var e) ? e
                : (Allow: false, Deny: false, Names: new SortedSet<string>(StringComparer.Ordinal), Allows: new SortedSet<PolicyRuleRef>(PolicyRuleRef.Order), Denies: new SortedSet<PolicyRuleRef>(PolicyRuleRef.Order));
            if (name is not null)
                cur.Names.Add(name);
            (deny ? cur.Denies : cur.Allows).Add(rule);
            entries[key] = (cur.Allow || !deny, cur.Deny || deny, cur.Names, cur.Allows, cur.Denies);
        }

        var list = entries
            .Select(kv => new PolicyEntry(endpointId, pod.FullName, kv.Key.Item1, kv.Key.Item2, kv.Key.Item3, kv.Key.Item4,
                kv.Value.Allow, kv.Value.Deny, [.. kv.Value.Names])
            {
                // deny wins in the datapath, so a deny entry decides by its deny rules
                Rules = kv.Value.Deny ? [.. kv.Value.Denies] : [.. kv.Value.Allows],
            })
            .OrderBy(e => e.Direction).ThenBy(e => e.Identity).ThenBy(e => e.Protocol).ThenBy(e => e.Port)
            .ToList();
        return new CompiledEndpointPolicy(ingress, egress, list);
    }

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
    public static IReadOnlySet<uint> RulePeers(PolicyRule rule, string policyNamespace, IdentityAllocator ids)
    {
        ArgumentNullException.ThrowIfNull(rule);
        if (rule.SelectsNothing || !rule.PeersGiven && !rule.PortsGiven)
            return new SortedSet<uint>();
        return Peers(rule, policyNamespace, ids);
    }

    /// <summary>(protocol, port) pairs a rule applies to: (0, 0) when it names no ports; none when toPorts names no port.</summary>
    public static IReadOnlyList<(byte Proto, ushort Port)> RulePorts(PolicyRule rule)
    {
        ArgumentNullException.ThrowIfNull(rule);
        return rule.PortsGiven ? Ports(rule) : [(0, 0)];
    }

    /// <summary>The identities a rule's peers select; {0} (any identity) when it names none.</summary>
    public static IReadOnlySet<uint> Peers(PolicyRule rule, string policyNamespace, IdentityAllocator ids)
    {
        ArgumentNullException.ThrowIfNull(rule);
        ArgumentNullException.ThrowIfNull(ids);
        var set = new SortedSet<uint>();
        if (!rule.PeersGiven)
        {
            set.Add(0);
            return set;
        }
        var all = ids.All.ToList();
        foreach (var sel in rule.Endpoints)
            foreach (var id in all)
                if (id.IsWorkload && Selects(sel, id.Labels, policyNamespace)
                    || id.IsReserved && sel.MatchLabels.Count > 0 && sel.MatchLabels.Keys.All(k => k.StartsWith("reserved:", StringComparison.Ordinal)) && Selects(sel, id.Labels, null))
                    set.Add(id.Id);
        foreach (var c in rule.Cidrs)
        {
            var net = IdentityAllocator.ParseCidr(c.Cidr);
            var excepts = c.Except.Select(IdentityAllocator.ParseCidr).ToList();
            if (net.PrefixLength == 0)
                set.Add((uint)ReservedIdentity.World);
            foreach (var id in all.Where(i => i.IsCidr))
                if (Contains(net, id.Cidr!.Value) && !excepts.Any(e => Contains(e, id.Cidr!.Value)))
                    set.Add(id.Id);
        }
        foreach (var entity in rule.Entities)
        {
            switch (entity.ToLowerInvariant())
            {
                case "all":
                    set.Add(0);
                    break;
                case "world":
                    set.Add((uint)ReservedIdentity.World);
                    foreach (var id in all.Where(i => i.IsCidr))
                        set.Add(id.Id);
                    break;
                case "cluster":
                    foreach (var r in (ReadOnlySpan<ReservedIdentity>)[ReservedIdentity.Host, ReservedIdentity.Health, ReservedIdentity.Init,
                        ReservedIdentity.RemoteNode, ReservedIdentity.KubeApiserver, ReservedIdentity.Ingress])
                        set.Add((uint)r);
                    foreach (var id in all.Where(i => i.IsWorkload))
                        set.Add(id.Id);
                    break;
                case "host":
                    set.Add((uint)ReservedIdentity.Host);
                    break;
                case "remote-node":
                    set.Add((uint)ReservedIdentity.RemoteNode);
                    break;
                case "health":
                    set.Add((uint)ReservedIdentity.Health);
                    break;
                case "init":
                    set.Add((uint)ReservedIdentity.Init);
                    break;
                case "kube-apiserver":
                    set.Add((uint)ReservedIdentity.KubeApiserver);
                    break;
                case "ingress":
                    set.Add((uint)ReservedIdentity.Ingress);
                    break;
                case "unmanaged":
                    set.Add((uint)ReservedIdentity.Unmanaged);
                    break;
                default:
                    throw new ArgumentException($"unknown entity '{entity}'", nameof(rule));
            }
        }
        return set;
    }

    /// <summary>(protocol, port) pairs of a rule's port list; ANY expands to TCP and UDP.</summary>
    public static IReadOnlyList<(byte Proto, ushort Port)> Ports(PolicyRule rule)
    {
        ArgumentNullException.ThrowIfNull(rule);
        var list = new List<(byte, ushort)>();
        foreach (var pp in rule.Ports)
        {
            if (pp.Port is < 0 or > 65535)
                throw new ArgumentException($"port {pp.Port} out of range", nameof(rule));
            var port = (ushort)pp.Port;
            switch (pp.Protocol.ToUpperInvariant())
            {
                case "TCP":
                    list.Add((Tcp, port));
                    break;
                case "UDP":
                    list.Add((Udp, port));
                    break;
                case "ANY" or "":
                    if (port == 0)
                        list.Add((0, 0));
                    else
                    {
                        list.Add((Tcp, port));
                        list.Add((Udp, port));
                    }
                    break;
                default:
                    throw new ArgumentException($"unsupported protocol '{pp.Protocol}'", nameof(rule));
            }
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
        _ => throw new ArgumentException($"unsupported protocol '{protocol}'", nameof(protocol)),
    };

    internal static bool IsV4(IPAddress ip) => ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork;
}
