using YamlDotNet.RepresentationModel;
using static Forensics.Datapath.Control.ObjectFields;

namespace Forensics.Datapath.Control;

/// <summary>One rule of a CiliumNetworkPolicy document, and every selector in it (to check that each selects something).</summary>
internal sealed record RawPolicy(DocRef Doc, Node At, NetworkPolicySpec Policy, List<(Node At, EndpointSelector Sel, bool IsSubject)> Selectors);

/// <summary>A CiliumNetworkPolicy document (cilium.io/v2): spec or specs, each a rule of Cilium's policy language.</summary>
internal static class PolicyDocument
{
    /// <summary>The entities a policy may name (those the datapath implements).</summary>
    public static IReadOnlyList<string> Entities { get; } = ["world", "host", "cluster", "all"];

    public static List<RawPolicy> Read(Node root, string sourceText)
    {
        var (name, ns, _) = Meta(root);
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
            rule.Strict("endpointSelector", "ingress", "egress", "ingressDeny", "egressDeny", "description", "labels", "enableDefaultDeny");
            var selectors = new List<(Node, EndpointSelector, bool)>();
            var selNode = rule.Require("endpointSelector");
            var subject = Selector(selNode, ns, true);
            selectors.Add((selNode, subject, true));
            var ingress = Rules(rule.Get("ingress"), ns, true, false, selectors);
            var egress = Rules(rule.Get("egress"), ns, false, false, selectors);
            var ingressDeny = Rules(rule.Get("ingressDeny"), ns, true, true, selectors);
            var egressDeny = Rules(rule.Get("egressDeny"), ns, false, true, selectors);
            bool? defaultDenyIngress = null, defaultDenyEgress = null;
            if (rule.Get("enableDefaultDeny") is { } dd)
            {
                dd.Strict("ingress", "egress");
                defaultDenyIngress = dd.Get("ingress")?.YamlBool();
                defaultDenyEgress = dd.Get("egress")?.YamlBool();
            }
            var spec = new NetworkPolicySpec(ruleName, ns, subject, ingress, egress, ingressDeny, egressDeny, sourceText)
            {
                DefaultDenyIngress = defaultDenyIngress,
                DefaultDenyEgress = defaultDenyEgress,
                ResourceName = name,
                SpecPath = path,
            };
            result.Add(new RawPolicy(root.Doc, rule, spec, selectors));
        }
        return result;
    }

    /// <summary>matchLabels, scoped to the policy's namespace as Cilium does for a namespaced policy.</summary>
    private static EndpointSelector Selector(Node n, string ns, bool subject)
    {
        n.Strict("matchLabels");
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        if (n.Get("matchLabels") is { } ml)
        {
            foreach (var (k, v) in ml.StringMap())
            {
                if (k.Length == 0)
                    throw ml.Error("empty label key");
                labels[k] = v;
            }
        }
        bool hasNs = labels.Keys.Any(k => ClusterLoader.StripSource(k) == "io.kubernetes.pod.namespace");
        if (subject && hasNs)
        {
            var given = labels.First(kv => ClusterLoader.StripSource(kv.Key) == "io.kubernetes.pod.namespace");
            if (given.Value != ns)
                throw n.Error($"endpointSelector names namespace '{given.Value}' but the policy is in '{ns}'");
        }
        if (!hasNs)
            labels[ClusterLoader.NamespaceLabel] = ns;
        return new EndpointSelector(labels);
    }

    private static List<PolicyRule> Rules(Node? list, string ns, bool ingress, bool deny, List<(Node, EndpointSelector, bool)> selectors)
    {
        var result = new List<PolicyRule>();
        if (list is null)
            return result;
        string dir = ingress ? "from" : "to";
        foreach (var r in list.Value.Items())
        {
            r.Strict($"{dir}Endpoints", $"{dir}CIDR", $"{dir}CIDRSet", $"{dir}Entities", "toPorts");
            // Cilium: a peer list given empty selects nothing (IngressCommonRule.GetSourceEndpointSelectorsWithRequirements)
            bool selectsNothing = new[] { $"{dir}Endpoints", $"{dir}CIDR", $"{dir}CIDRSet", $"{dir}Entities" }
                .Any(f => r.Get(f) is { } given && given.Items().Count == 0);
            var endpoints = new List<EndpointSelector>();
            if (r.Get($"{dir}Endpoints") is { } eps)
            {
                foreach (var e in eps.Items())
                {
                    var sel = Selector(e, ns, false);
                    endpoints.Add(sel);
                    selectors.Add((e, sel, false));
                }
            }
            var cidrs = new List<CidrRule>();
            if (r.Get($"{dir}CIDR") is { } cl)
                foreach (var c in cl.Items())
                    cidrs.Add(new CidrRule(Cidr(c).ToString(), []));
            if (r.Get($"{dir}CIDRSet") is { } cs)
            {
                foreach (var c in cs.Items())
                {
                    c.Strict("cidr", "except");
                    var net = Cidr(c.Require("cidr"));
                    var except = new List<string>();
                    if (c.Get("except") is { } ex)
                    {
                        foreach (var e in ex.Items())
                        {
                            var en = Cidr(e);
                            if (!net.Contains(en.BaseAddress) || en.PrefixLength < net.PrefixLength)
                                throw e.Error($"{en} is not inside {net}");
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
                    var name = e.String();
                    if (!Entities.Contains(name))
                        throw e.Error($"entity '{name}' is not supported ({string.Join(", ", Entities)})");
                    entities.Add(name);
                }
            }
            var ports = new List<PortProtocol>();
            bool portsGiven = false;
            if (r.Get("toPorts") is { } tps)
            {
                foreach (var tp in tps.Items())
                {
                    portsGiven = true;
                    tp.Strict("ports");
                    if (tp.Get("ports") is not { } pl)
                        continue;
                    foreach (var p in pl.Items())
                    {
                        p.Strict("port", "protocol");
                        int port = 0;
                        if (p.Get("port") is { } pn)
                        {
                            if (!pn.String().All(char.IsAsciiDigit))
                                throw pn.Error($"named port '{pn.Scalar()}' is not supported (use a number)");
                            port = pn.Port(allowZero: true);
                        }
                        ports.Add(new PortProtocol(port, Protocol(p.Get("protocol"), "ANY", "TCP", "UDP", "ANY")));
                    }
                }
            }
            result.Add(new PolicyRule(endpoints, cidrs, entities, ports) { SelectsNothing = selectsNothing, PortsGiven = portsGiven });
        }
        return result;
    }
}
