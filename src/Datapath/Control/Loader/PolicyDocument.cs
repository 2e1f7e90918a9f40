using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using static Forensics.Datapath.Control.ObjectFields;

namespace Forensics.Datapath.Control;

/// <summary>One rule of a policy document, and every selector in it (to say when one selects nothing).</summary>
/// <summary>Notices: what to tell the user about the rule, once per kind of notice (key, text).</summary>
internal sealed record RawPolicy(DocRef Doc, Node At, NetworkPolicySpec Policy, List<(Node At, EndpointSelector Sel, bool IsSubject)> Selectors,
    List<(string Key, string Text)> Notices);

/// <summary>
/// CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy documents (cilium.io/v2):
/// spec or specs, each a rule of Cilium's policy language (pkg/policy/api), read
/// with Cilium's semantics (pkg/k8s/apis/cilium.io/utils ParseToCiliumRule, the
/// sanitize functions of pkg/policy/api). A field Cilium has that is not modelled
/// is "not supported: FIELD"; only a field Cilium does not have is "unknown field".
/// </summary>
internal static partial class PolicyDocument
{
    public const string Clusterwide = "CiliumClusterwideNetworkPolicy";

    /// <summary>Every entity of Cilium's policy language (pkg/policy/api/entity.go).</summary>
    public static IReadOnlyList<string> Entities { get; } =
        ["all", "world", "world-ipv4", "world-ipv6", "cluster", "host", "init", "ingress", "unmanaged", "remote-node", "health", "none", "kube-apiserver"];

    private static readonly Dictionary<string, string> PeerUnsupported = new(StringComparer.Ordinal)
    {
        ["fromGroups"] = "cloud provider groups",
        ["toGroups"] = "cloud provider groups",
    };

    private static readonly string[] L7Kinds = ["http", "kafka", "dns"];

    public static List<RawPolicy> Read(Node root, string sourceText, string kind)
    {
        bool clusterwide = kind == Clusterwide;
        var (name, ns, _) = Meta(root);
        if (clusterwide)
        {
            if (root.Require("metadata").Get("namespace") is { } nsNode)
                throw nsNode.Error("a CiliumClusterwideNetworkPolicy has no namespace");
            ns = "";
        }
        var result = new List<RawPolicy>();
        var single = root.Get("spec");
        var many = root.Get("specs");
        if (single is null && many is null)
            throw root.Error("spec: required field is missing (spec or specs)");
        var rules = new List<(Node Rule, string Name, string Path)>();
        if (single is { } s)
            rules.Add((s, name, "spec"));
        if (many is { } m)
        {
            var items = m.Items();
            for (int i = 0; i < items.Count; i++)
                rules.Add((items[i], single is null && items.Count == 1 ? name : $"{name}#{i}", $"specs[{i}]"));
        }
        foreach (var (rule, ruleName, path) in rules)
        {
            rule.Strict("endpointSelector", "nodeSelector", "ingress", "egress", "ingressDeny", "egressDeny", "description", "labels", "enableDefaultDeny");
            var selectors = new List<(Node, EndpointSelector, bool)>();
            // a host policy (Cilium's host firewall) selects nodes by their labels instead of endpoints (api.Rule.Sanitize)
            var nodeNode = rule.Get("nodeSelector");
            if (nodeNode is { } nn && !clusterwide)
                throw nn.Error("Invalid CiliumNetworkPolicy spec: rule cannot have NodeSelector (Cilium refuses this rule: host policies are CiliumClusterwideNetworkPolicies)");
            if (nodeNode is { } both && rule.Get("endpointSelector") is not null)
                throw both.Error("rule cannot have both EndpointSelector and NodeSelector (Cilium refuses this rule)");
            EndpointSelector subject;
            if (nodeNode is { } nodeSel)
            {
                // ParseToCiliumRule: NewESFromK8sLabelSelector("", ...): keys of any source, no namespace
                subject = Selector(nodeSel, null, peer: false);
            }
            else
            {
                var selNode = rule.Get("endpointSelector") ?? throw rule.Error("endpointSelector: required field is missing (a rule needs one of endpointSelector or nodeSelector)");
                subject = Subject(selNode, ns);
                selectors.Add((selNode, subject, true));
            }
            var notices = new List<(string Key, string Text)>();
            var ingress = Rules(rule.Get("ingress"), ns, "ingress", selectors, notices);
            var egress = Rules(rule.Get("egress"), ns, "egress", selectors, notices);
            var ingressDeny = Rules(rule.Get("ingressDeny"), ns, "ingressDeny", selectors, notices);
            var egressDeny = Rules(rule.Get("egressDeny"), ns, "egressDeny", selectors, notices);
            if (nodeNode is not null)
                HostRuleL7(rule);
            bool? defaultDenyIngress = null, defaultDenyEgress = null;
            if (rule.Get("enableDefaultDeny") is { } dd)
            {
                dd.Strict("ingress", "egress");
                defaultDenyIngress = dd.Get("ingress")?.YamlBool();
                defaultDenyEgress = dd.Get("egress")?.YamlBool();
            }
            if (rule.Get("labels") is { } labels)
                foreach (var l in labels.Items())
                    l.Strict("key", "value", "source").Require("key").String();
            var spec = new NetworkPolicySpec(ruleName, ns, subject, ingress, egress, ingressDeny, egressDeny, sourceText)
            {
                DefaultDenyIngress = defaultDenyIngress,
                DefaultDenyEgress = defaultDenyEgress,
                Kind = kind,
                ResourceName = name,
                SpecPath = path,
                Description = rule.Get("description")?.Scalar(),
                SelectsNodes = nodeNode is not null,
            };
            result.Add(new RawPolicy(root.Doc, rule, spec, selectors, notices));
        }
        return result;
    }

    /// <summary>
    /// What Cilium refuses in a host policy's L7 rules (IngressRule/EgressRule.sanitize with hostPolicy): any L7
    /// rule on ingress, HTTP and Kafka on egress (DNS rules are allowed: the host's DNS lookups go to the proxy).
    /// </summary>
    private static void HostRuleL7(Node rule)
    {
        foreach (var (section, ingress) in new[] { ("ingress", true), ("egress", false) })
            foreach (var r in rule.Get(section)?.Items() ?? [])
                foreach (var tp in r.Get("toPorts")?.Items() ?? [])
                    if (tp.Get("rules") is { } rules)
                    {
                        if (ingress)
                            throw rules.Error("L7 policy is not supported on host ingress yet (Cilium refuses this rule)");
                        foreach (var (field, name) in new[] { ("http", "HTTP"), ("kafka", "Kafka") })
                            if (rules.Get(field) is { } given)
                                throw given.Error($"L7 protocol {name} is not supported on host egress yet (Cilium refuses this rule)");
                    }
    }

    /// <summary>
    /// The rule's subject: in a CiliumNetworkPolicy always the policy's namespace
    /// (Cilium overrides a namespace the selector names, with a warning); in a
    /// clusterwide policy any namespace, and reserved identities.
    /// </summary>
    private static EndpointSelector Subject(Node n, string ns)
    {
        var sel = Selector(n, ns.Length == 0 ? null : ns, peer: false);
        if (ns.Length == 0)
            return sel;
        var labels = sel.MatchLabels.Where(kv => !IsNamespaceKey(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        labels[ClusterLoader.NamespaceLabel] = ns;
        return sel with { MatchLabels = labels };
    }

    private static bool IsNamespaceKey(string key) => PolicyCompiler.SplitKey(key) is ("k8s" or "any", IdentityAllocator.NamespaceLabel);

    /// <summary>
    /// A peer (or requirement) selector as Cilium's getEndpointSelector makes it: a
    /// selector of reserved labels is kept as it is; otherwise one that names no
    /// namespace (and no namespace label) is scoped to the policy's namespace, or,
    /// in a clusterwide policy, to pods of any namespace.
    /// </summary>
    private static EndpointSelector Selector(Node n, string? ns, bool peer)
    {
        var ls = LabelSelectors.Read(n);
        foreach (var r in ls.MatchExpressions.Where(r => r.Values.Any(v => v.Length > 63)))
            throw n.Error($"matchExpressions: '{r.Values.First(v => v.Length > 63)}' is not a valid label value (at most 63 characters)");
        var sel = new EndpointSelector(ls.MatchLabels) { MatchExpressions = ls.MatchExpressions };
        if (!peer)
            return sel;
        var keys = ls.MatchLabels.Keys.Concat(ls.MatchExpressions.Select(r => r.Key)).ToList();
        if (keys.Any(k => PolicyCompiler.SplitKey(k).Source == "reserved"))
            return sel;
        if (keys.Any(IsNamespaceKey))
            return sel;
        if (ns is null)
            return sel with { MatchExpressions = [.. sel.MatchExpressions, new LabelRequirement(ClusterLoader.NamespaceLabel, "Exists", [])] };
        if (keys.Any(k => PolicyCompiler.SplitKey(k).Key.StartsWith(IdentityAllocator.NamespaceLabelsPrefix, StringComparison.Ordinal)))
            return sel;
        var labels = new Dictionary<string, string>(ls.MatchLabels, StringComparer.Ordinal) { [ClusterLoader.NamespaceLabel] = ns };
        return sel with { MatchLabels = labels };
    }

    private static List<PolicyRule> Rules(Node? list, string ns, string section, List<(Node, EndpointSelector, bool)> selectors,
        List<(string Key, string Text)> notices)
    {
        var result = new List<PolicyRule>();
        if (list is null)
            return result;
        bool ingress = section.StartsWith("ingress", StringComparison.Ordinal);
        bool deny = section.EndsWith("Deny", StringComparison.Ordinal);
        string dir = ingress ? "from" : "to";
        string? nsOrNull = ns.Length == 0 ? null : ns;
        foreach (var r in list.Value.Items())
        {
            string[] common = [$"{dir}Endpoints", $"{dir}Requires", $"{dir}CIDR", $"{dir}CIDRSet", $"{dir}Entities", $"{dir}Nodes", "toPorts", "icmps"];
            if (!ingress)
                common = [.. common, "toServices"];
            if (!deny)
                common = [.. common, "authentication"];
            // EgressDenyRule has no toFQDNs
            if (!ingress && !deny)
                common = [.. common, "toFQDNs"];
            var unsupported = PeerUnsupported.Where(kv => kv.Key.StartsWith(dir, StringComparison.Ordinal))
                .ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
            r.Strict(unsupported, common);

            // Cilium refuses a rule that combines two kinds of peer (IngressRule/EgressRule.sanitize)
            var peerFields = new[] { $"{dir}Endpoints", $"{dir}CIDR", $"{dir}CIDRSet", $"{dir}Entities", $"{dir}Nodes", "toServices", "toFQDNs" }
                .Where(f => r.Get(f) is { } given && given.Yaml is YamlDotNet.RepresentationModel.YamlSequenceNode { Children.Count: > 0 }).ToList();
            if (peerFields.Count > 1)
                throw r.Error($"Combining {Pascal(peerFields[0])} and {Pascal(peerFields[1])} is not supported yet (Cilium refuses this rule)");
            if (r.Get("toServices") is { } tsv && r.Get("toPorts") is not null && tsv.Items().Count > 0)
                throw r.Error("Combining ToServices and ToPorts is not supported yet (Cilium refuses this rule)");
            if (r.Get("icmps") is { } ic && ic.Items().Count > 0 && r.Get("toPorts") is { } tp0 && tp0.Items().Count > 0)
                throw r.Error("The ICMPs block may only be present without ToPorts. Define a separate rule to use ToPorts. (Cilium refuses this rule)");

            // a peer list given empty selects nothing (IngressCommonRule.GetSourceEndpointSelectorsWithRequirements)
            bool selectsNothing = new[] { $"{dir}Endpoints", $"{dir}CIDR", $"{dir}CIDRSet", $"{dir}Entities", $"{dir}Nodes" }
                .Any(f => r.Get(f) is { } given && given.Items().Count == 0);
            var endpoints = new List<EndpointSelector>();
            if (r.Get($"{dir}Endpoints") is { } eps)
            {
                foreach (var e in eps.Items())
                {
                    var sel = Selector(e, nsOrNull, peer: true);
                    endpoints.Add(sel);
                    selectors.Add((e, sel, false));
                }
            }
            var requires = new List<EndpointSelector>();
            if (r.Get($"{dir}Requires") is { } reqs)
                foreach (var e in reqs.Items())
                    requires.Add(Selector(e, nsOrNull, peer: true));
            var nodes = new List<EndpointSelector>();
            if (r.Get($"{dir}Nodes") is { } nodeList)
                foreach (var e in nodeList.Items())
                    nodes.Add(Selector(e, null, peer: false));
            var cidrs = new List<CidrRule>();
            if (r.Get($"{dir}CIDR") is { } cl)
                foreach (var c in cl.Items())
                    cidrs.Add(new CidrRule(CiliumCidr(c, bareAddress: true).ToString(), []));
            if (r.Get($"{dir}CIDRSet") is { } cs)
            {
                foreach (var c in cs.Items())
                {
                    c.Strict(new Dictionary<string, string>(StringComparer.Ordinal) { ["cidrGroupRef"] = "CiliumCIDRGroup resources are not modelled" },
                        "cidr", "except");
                    var net = CiliumCidr(c.Require("cidr"), bareAddress: false);
                    var except = new List<string>();
                    if (c.Get("except") is { } ex)
                    {
                        foreach (var e in ex.Items())
                        {
                            var en = CiliumCidr(e, bareAddress: false);
                            if (!net.Contains(en.BaseAddress) || en.BaseAddress.AddressFamily != net.BaseAddress.AddressFamily)
                                throw e.Error($"allow CIDR prefix {net} does not contain exclude CIDR prefix {en}");
                            except.Add(en.ToString());
                        }
                    }
                    cidrs.Add(new CidrRule(net.ToString(), except));
                }
            }
            var entities = new List<string>();
            if (r.Get($"{dir}Entities") is { } ents)
            {
                foreach (var e in ents.Items())
                {
                    var entity = e.String();
                    if (!Entities.Contains(entity))
                        throw e.Error($"unsupported entity: {entity} (Cilium's entities: {string.Join(", ", Entities)})");
                    entities.Add(entity);
                }
            }
            var services = new List<ServiceRef>();
            if (!ingress && r.Get("toServices") is { } svcs)
                foreach (var sv in svcs.Items())
                    services.Add(ServiceReference(sv, ns));
            var fqdns = new List<FqdnSelector>();
            if (!ingress && !deny && r.Get("toFQDNs") is { } fq)
            {
                foreach (var f in fq.Items())
                    fqdns.Add(Fqdn(f));
                if (fqdns.Count > 0)
                    notices.Add(("toFQDNs",
                        $"{r.Doc.File}: {r.Doc}: {r.Path}.toFQDNs: toFQDNs selects only addresses learnt from DNS answers (as Cilium's DNS proxy learns them); before a pod resolves a name, its rule allows nothing"));
            }
            var ports = new List<PortProtocol>();
            bool portsGiven = false;
            if (r.Get("toPorts") is { } tps)
            {
                foreach (var tp in tps.Items())
                {
                    portsGiven = true;
                    string? l7 = null;
                    var dnsRules = new List<FqdnSelector>();
                    if (deny)
                    {
                        tp.Strict("ports");
                    }
                    else
                    {
                        tp.Strict(new Dictionary<string, string>(StringComparer.Ordinal) { ["listener"] = "Envoy listeners are not modelled" },
                            "ports", "rules", "terminatingTLS", "originatingTLS", "serverNames");
                        l7 = L7(tp, ingress, notices, dnsRules);
                    }
                    if (tp.Get("ports") is not { } pl)
                        continue;
                    foreach (var p in pl.Items())
                    {
                        var port = Port(p, deny ? "PortDenyRule" : "PortRule") with { L7 = l7 };
                        // only when given: a port without DNS rules keeps the default (records compare lists by reference)
                        ports.Add(dnsRules.Count == 0 ? port : port with { Dns = dnsRules });
                    }
                }
            }
            if (r.Get("icmps") is { } icmps)
            {
                foreach (var icmp in icmps.Items())
                {
                    portsGiven = true;
                    icmp.Strict("fields");
                    if (icmp.Get("fields") is not { } fields)
                        continue;
                    foreach (var f in fields.Items())
                        ports.Add(IcmpField(f));
                }
            }
            string? auth = null;
            if (!deny && r.Get("authentication") is { } an)
            {
                an.Strict("mode");
                var modeNode = an.Require("mode");
                auth = modeNode.String();
                if (auth is not ("disabled" or "required" or "test-always-fail"))
                    throw modeNode.Error($"'{auth}' is not an authentication mode (disabled, required, test-always-fail)");
                if (auth != "disabled")
                    notices.Add(("authentication",
                        $"{r.Doc.File}: {r.Doc}: {r.Path}.authentication: mode {auth} is accepted, but mutual authentication is not modelled: such rules are enforced without it"));
            }
            result.Add(new PolicyRule(endpoints, cidrs, entities, ports)
            {
                SelectsNothing = selectsNothing,
                PortsGiven = portsGiven,
                Requires = requires,
                Nodes = nodes,
                Services = services,
                Authentication = auth,
                Fqdns = fqdns,
            });
        }
        return result;
    }

    [GeneratedRegex("^[-a-zA-Z0-9_.]+$")]
    private static partial Regex MatchNameChars();

    [GeneratedRegex("^[-a-zA-Z0-9_.*]+$")]
    private static partial Regex MatchPatternChars();

    /// <summary>A toFQDNs entry, checked as Cilium's FQDNSelector.sanitize checks it.</summary>
    private static FqdnSelector Fqdn(Node f)
    {
        f.Strict("matchName", "matchPattern");
        var name = f.Get("matchName")?.String();
        var pattern = f.Get("matchPattern")?.String();
        if (!string.IsNullOrEmpty(name) && !string.IsNullOrEmpty(pattern))
            throw f.Error("only one of MatchName or MatchPattern is allowed in an FQDNSelector");
        if (!string.IsNullOrEmpty(name) && !MatchNameChars().IsMatch(name))
            throw f.Require("matchName").Error($"Invalid characters in MatchName: \"{name}\". Only 0-9, a-z, A-Z and . and - characters are allowed");
        if (!string.IsNullOrEmpty(pattern) && !MatchPatternChars().IsMatch(pattern))
            throw f.Require("matchPattern").Error($"Invalid characters in MatchPattern: \"{pattern}\". Only 0-9, a-z, A-Z and ., - and * characters are allowed");
        if ((name ?? pattern ?? "").Trim().Length > 255)
            throw f.Error($"Invalid MatchPattern: \"{name ?? pattern}\". Must be <= 255 characters long.");
        // an entry with neither selects nothing (an empty pattern matches no name)
        return string.IsNullOrEmpty(name) ? new FqdnSelector(null, pattern ?? "") : new FqdnSelector(name, null);
    }

    private static string Pascal(string field) => char.ToUpperInvariant(field[0]) + field[1..];

    /// <summary>
    /// A CIDR as Cilium reads one (netip.ParsePrefix; toCIDR also takes a bare
    /// address): host bits set are cleared (10.1.2.3/8 is 10.0.0.0/8), IPv4 and IPv6.
    /// </summary>
    private static IPNetwork CiliumCidr(Node n, bool bareAddress)
    {
        var s = n.String();
        if (!s.Contains('/', StringComparison.Ordinal))
        {
            if (!bareAddress)
                throw n.Error($"'{s}' is not a CIDR (address/prefix)");
            var ip = Probes.Cidrs.ParseAddress(s) ?? throw n.Error($"unable to parse CIDR: '{s}' is not an IPv4 or IPv6 address");
            return new IPNetwork(ip, ip.AddressFamily == AddressFamily.InterNetwork ? 32 : 128);
        }
        if (!Probes.Cidrs.TryParse(s, out var net))
            throw n.Error($"unable to parse CIDR: '{s}' (address/prefix, as Go's netip.ParsePrefix reads it)");
        return net;
    }

    [GeneratedRegex("^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")]
    private static partial Regex SvcNameChars();

    /// <summary>A port of toPorts: a number, a named port (an IANA service name, as Cilium reads it), endPort, a protocol.</summary>
    private static PortProtocol Port(Node p, string what)
    {
        p.Strict("port", "endPort", "protocol");
        var protoNode = p.Get("protocol");
        var proto = protoNode is null ? "ANY" : protoNode.Value.String().ToUpperInvariant();
        switch (proto)
        {
            case "TCP" or "UDP" or "ANY":
                break;
            case "SCTP":
                throw protoNode!.Value.Error("not supported: protocol SCTP (the datapath does not parse SCTP)");
            case "ICMP" or "ICMPV6":
                throw protoNode!.Value.Error($"not supported: protocol {protoNode.Value.Scalar()} in toPorts (use icmps, which names ICMP types)");
            default:
                throw protoNode!.Value.Error($"invalid protocol \"{protoNode.Value.Scalar()}\", supported protocols are TCP, UDP, SCTP, ICMP, ICMPV6, ANY");
        }
        int port = 0;
        string? name = null;
        if (p.Get("port") is { } pn)
        {
            var text = pn.String();
            if (IsSvcName(text.ToLowerInvariant()))
                name = text.ToLowerInvariant();
            else if (TryGoUint16(text, out var n))
                port = n;
            else if (text.All(char.IsAsciiDigit))
                throw pn.Error($"{text} is out of range for a port (0-65535)");
            else
                throw pn.Error($"Unable to parse port: '{text}' is neither a port number (0-65535) nor a port name");
        }
        int end = 0;
        if (p.Get("endPort") is { } en)
        {
            end = en.Int(0, 65535, "a port");
            if (name is not null)
                throw en.Error("endPort can only be used with a port number");
            if (end != 0 && end < port)
                throw en.Error($"endPort {end} is below port {port}");
            if (end == port)
                end = 0;
        }
        if (port == 0 && end != 0)
            throw p.Error($"{what}: endPort {end} needs a port");
        return new PortProtocol(port, proto) { EndPort = end, Name = name };
    }

    /// <summary>An IANA service name (RFC 6335 as Kubernetes and Cilium check it): 1-15 of [a-z0-9-], a letter, no "--", no '-' at either end.</summary>
    private static bool IsSvcName(string s) =>
        SvcNameChars().IsMatch(s) && s.Any(char.IsAsciiLetterLower) && !s.Contains("--", StringComparison.Ordinal);

    /// <summary>strconv.ParseUint(s, 0, 16): decimal, 0x hex, 0o/0 octal, 0b binary.</summary>
    private static bool TryGoUint16(string s, out int value)
    {
        value = 0;
        var t = s.Replace("_", "", StringComparison.Ordinal);
        int radix = 10;
        if (t.Length > 1 && t[0] == '0')
        {
            (radix, t) = char.ToLowerInvariant(t[1]) switch
            {
                'x' => (16, t[2..]),
                'o' => (8, t[2..]),
                'b' => (2, t[2..]),
                _ => (8, t[1..]),
            };
        }
        if (t.Length == 0)
            return false;
        long v = 0;
        foreach (var c in t)
        {
            int d = char.IsAsciiDigit(c) ? c - '0' : char.IsAsciiHexDigit(c) ? char.ToLowerInvariant(c) - 'a' + 10 : 99;
            if (d >= radix)
                return false;
            v = v * radix + d;
            if (v > 65535)
                return false;
        }
        value = (int)v;
        return true;
    }

    // pkg/policy/api/icmp.go
    private static readonly Dictionary<string, int> Icmp4Types = new(StringComparer.Ordinal)
    {
        ["EchoReply"] = 0, ["DestinationUnreachable"] = 3, ["Redirect"] = 5, ["Echo"] = 8, ["EchoRequest"] = 8, ["RouterAdvertisement"] = 9,
        ["RouterSelection"] = 10, ["TimeExceeded"] = 11, ["ParameterProblem"] = 12, ["Timestamp"] = 13, ["TimestampReply"] = 14, ["Photuris"] = 40,
        ["ExtendedEchoRequest"] = 42, ["ExtendedEchoReply"] = 43,
    };

    private static readonly Dictionary<string, int> Icmp6Types = new(StringComparer.Ordinal)
    {
        ["DestinationUnreachable"] = 1, ["PacketTooBig"] = 2, ["TimeExceeded"] = 3, ["ParameterProblem"] = 4, ["EchoRequest"] = 128, ["EchoReply"] = 129,
        ["MulticastListenerQuery"] = 130, ["MulticastListenerReport"] = 131, ["MulticastListenerDone"] = 132, ["RouterSolicitation"] = 133,
        ["RouterAdvertisement"] = 134, ["NeighborSolicitation"] = 135, ["NeighborAdvertisement"] = 136, ["RedirectMessage"] = 137,
        ["RouterRenumbering"] = 138, ["ICMPNodeInformationQuery"] = 139, ["ICMPNodeInformationResponse"] = 140,
        ["InverseNeighborDiscoverySolicitation"] = 141, ["InverseNeighborDiscoveryAdvertisement"] = 142, ["HomeAgentAddressDiscoveryRequest"] = 144,
        ["HomeAgentAddressDiscoveryReply"] = 145, ["MobilePrefixSolicitation"] = 146, ["MobilePrefixAdvertisement"] = 147,
        ["DuplicateAddressRequestCodeSuffix"] = 157, ["DuplicateAddressConfirmationCodeSuffix"] = 158, ["ExtendedEchoRequest"] = 160,
        ["ExtendedEchoReply"] = 161,
    };

    /// <summary>An icmps field: family IPv4 (default) or IPv6, and a type by number or by Cilium's name.</summary>
    private static PortProtocol IcmpField(Node f)
    {
        f.Strict("family", "type");
        var familyNode = f.Get("family");
        var family = familyNode?.String() ?? "IPv4";
        if (family is not ("IPv4" or "IPv6"))
            throw familyNode!.Value.Error($"wrong family: {family}");
        var typeNode = f.Require("type");
        var text = typeNode.String();
        int type;
        if (text.All(char.IsAsciiDigit))
            type = typeNode.Int(0, 255, "an ICMP type");
        else if (!(family == "IPv6" ? Icmp6Types : Icmp4Types).TryGetValue(text, out type))
            throw typeNode.Error($"ICMP type {text} not found in {family}");
        return new PortProtocol(type, family == "IPv6" ? "ICMPV6" : "ICMP");
    }

    /// <summary>The L7 part of a toPorts entry: parsed and kept (the policy text is in the snapshot), noted once, not enforced.</summary>
    private static string? L7(Node tp, bool ingress, List<(string Key, string Text)> notices, List<FqdnSelector> dnsRules)
    {
        string? kind = null;
        if (tp.Get("rules") is { } rules)
        {
            rules.Strict("http", "kafka", "dns", "l7proto", "l7");
            var given = L7Kinds.Where(k => rules.Get(k) is not null).ToList();
            if (rules.Get("l7proto") is { } proto)
                given.Add(proto.String());
            else if (rules.Get("l7") is { } l7list)
                throw l7list.Error("'l7' may only be specified when a 'l7proto' is also specified");
            if (given.Count > 1)
                throw rules.Error("multiple L7 protocol rule types specified in single rule");
            if (ingress && rules.Get("dns") is { } dns)
                throw dns.Error("DNS rules are not allowed on ingress");
            if (rules.Get("http") is { } http)
                foreach (var h in http.Items())
                    h.Strict("path", "method", "host", "headers", "headerMatches");
            if (rules.Get("dns") is { } dnsList)
            {
                // a PortRuleDNS may have both (either lets the name through), unlike a toFQDNs entry
                foreach (var d in dnsList.Items())
                {
                    d.Strict("matchName", "matchPattern");
                    var name = d.Get("matchName")?.String();
                    var pattern = d.Get("matchPattern")?.String();
                    if (!string.IsNullOrEmpty(name) && !MatchNameChars().IsMatch(name))
                        throw d.Require("matchName").Error($"Invalid characters in MatchName: \"{name}\". Only 0-9, a-z, A-Z and . and - characters are allowed");
                    if (!string.IsNullOrEmpty(pattern) && !MatchPatternChars().IsMatch(pattern))
                        throw d.Require("matchPattern").Error($"Invalid characters in MatchPattern: \"{pattern}\". Only 0-9, a-z, A-Z and ., - and * characters are allowed");
                    if (!string.IsNullOrEmpty(name))
                        dnsRules.Add(new FqdnSelector(name, null));
                    if (!string.IsNullOrEmpty(pattern))
                        dnsRules.Add(new FqdnSelector(null, pattern));
                }
            }
            if (rules.Get("kafka") is { } kafka)
                foreach (var k in kafka.Items())
                    k.Strict("role", "apiKey", "apiVersion", "clientID", "topic");
            kind = given.FirstOrDefault();
        }
        else if (tp.Get("terminatingTLS") is not null || tp.Get("originatingTLS") is not null || tp.Get("serverNames") is not null)
        {
            kind = "tls";
        }
        if (kind is not null)
            notices.Add(("l7",
                $"{tp.Doc.File}: {tp.Doc}: {tp.Path}: L7 rules ({kind}) are kept in the policy snapshot but not enforced: their ports are allowed at L4 (--l7 deny denies them)"));
        return kind;
    }

    private static ServiceRef ServiceReference(Node sv, string ns)
    {
        sv.Strict("k8sService", "k8sServiceSelector");
        if (sv.Get("k8sService") is { } ks)
        {
            ks.Strict("serviceName", "namespace");
            return new ServiceRef(ks.Require("serviceName").String(), ks.Get("namespace")?.String() ?? ns, null);
        }
        if (sv.Get("k8sServiceSelector") is { } kss)
        {
            kss.Strict("selector", "namespace");
            var sel = LabelSelectors.Read(kss.Require("selector"));
            if (sel.MatchExpressions.Count > 0)
                throw kss.Require("selector").Require("matchExpressions").Error("not supported: matchExpressions in a service selector (matchLabels only)");
            return new ServiceRef(null, kss.Get("namespace")?.String() ?? ns, sel.MatchLabels);
        }
        throw sv.Error("a toServices entry needs k8sService or k8sServiceSelector");
    }
}
