using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Forensics.Datapath.Control;

/// <summary>
/// Loads Kubernetes-shaped multi-document YAML (Pod, Service, CiliumNetworkPolicy
/// cilium.io/v2, and our own Lab forensics.dev/v1) into a <see cref="ClusterSpec"/>.
/// Everything is validated before anything is returned: the first problem throws a
/// <see cref="ClusterSpecException"/> whose message is one line naming the file, the
/// line, the document (index, kind and name) and the field.
/// </summary>
public static partial class ClusterLoader
{
    public const string LabApiVersion = "forensics.dev/v1";
    public const string NamespaceLabel = "k8s:io.kubernetes.pod.namespace";

    /// <summary>The entities a policy may name (those the datapath implements).</summary>
    public static IReadOnlyList<string> Entities { get; } = ["world", "host", "cluster", "all"];

    private static readonly string[] ObjectMetaFields =
    [
        "name", "namespace", "labels", "annotations", "uid", "resourceVersion", "generation", "creationTimestamp",
        "deletionTimestamp", "deletionGracePeriodSeconds", "finalizers", "generateName", "managedFields",
        "ownerReferences", "selfLink",
    ];

    private static readonly string[] PodSpecFields =
    [
        "activeDeadlineSeconds", "affinity", "automountServiceAccountToken", "containers", "dnsConfig", "dnsPolicy",
        "enableServiceLinks", "ephemeralContainers", "hostAliases", "hostIPC", "hostNetwork", "hostPID", "hostUsers",
        "hostname", "imagePullSecrets", "initContainers", "nodeName", "nodeSelector", "os", "overhead",
        "preemptionPolicy", "priority", "priorityClassName", "readinessGates", "resourceClaims", "resources",
        "restartPolicy", "runtimeClassName", "schedulerName", "schedulingGates", "securityContext", "serviceAccount",
        "serviceAccountName", "setHostnameAsFQDN", "shareProcessNamespace", "subdomain",
        "terminationGracePeriodSeconds", "tolerations", "topologySpreadConstraints", "volumes",
    ];

    private static readonly string[] ContainerFields =
    [
        "args", "command", "env", "envFrom", "image", "imagePullPolicy", "lifecycle", "livenessProbe", "name", "ports",
        "readinessProbe", "resizePolicy", "resources", "restartPolicy", "securityContext", "startupProbe", "stdin",
        "stdinOnce", "terminationMessagePath", "terminationMessagePolicy", "tty", "volumeDevices", "volumeMounts",
        "workingDir",
    ];

    private static readonly string[] ServiceSpecFields =
    [
        "clusterIP", "clusterIPs", "selector", "ports", "type", "sessionAffinity", "sessionAffinityConfig", "ipFamilies",
        "ipFamilyPolicy", "internalTrafficPolicy", "externalTrafficPolicy", "externalIPs", "loadBalancerIP",
        "loadBalancerClass", "loadBalancerSourceRanges", "publishNotReadyAddresses", "healthCheckNodePort",
        "allocateLoadBalancerNodePorts", "externalName", "trafficDistribution",
    ];

    private static readonly string[] StepActions = ["tcp", "udp", "http", "exec"];

    private static readonly IPNetwork[] TestNets =
        [IPNetwork.Parse("192.0.2.0/24"), IPNetwork.Parse("198.51.100.0/24"), IPNetwork.Parse("203.0.113.0/24")];

    public static ClusterSpec LoadFile(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ClusterSpecException($"{path}: cannot read: {e.Message}");
        }
        return Load(text, path);
    }

    public static ClusterSpec Load(string text, string sourceFile)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(sourceFile);
        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(text));
        }
        catch (YamlException e)
        {
            var msg = LocationPrefix().Replace(e.InnerException is YamlException inner ? inner.Message : e.Message, "");
            if (e.InnerException is ArgumentException)
                msg = "duplicate key";
            throw new ClusterSpecException(
                $"{sourceFile}:{e.Start.Line}: document {stream.Documents.Count + 1}: malformed YAML at column {e.Start.Column}: {msg.ReplaceLineEndings(" ")}");
        }

        var b = new Builder(sourceFile);
        for (int i = 0; i < stream.Documents.Count; i++)
        {
            var root = stream.Documents[i].RootNode;
            var doc = new DocRef(sourceFile, i + 1);
            var node = new Node(doc, root, "");
            if (node.IsNull)
                continue; // an empty document (e.g. a trailing ---)
            long end = i + 1 < stream.Documents.Count ? stream.Documents[i + 1].RootNode.Start.Index : text.Length;
            var src = end > root.Start.Index && end <= text.Length ? DocText(text[(int)root.Start.Index..(int)end]) : "";
            if (root is YamlMappingNode && node.Get("kind") is { } k && k.Yaml is YamlScalarNode { Value: "List" })
            {
                // kubectl get -o yaml: kind List with items, each an object of its own.
                doc.Kind = "List";
                node.Strict("apiVersion", "kind", "metadata", "items");
                if (node.Require("apiVersion").String() != "v1")
                    throw node.Require("apiVersion").Error("a List's apiVersion is v1");
                var items = node.Get("items")?.Items() ?? [];
                for (int j = 0; j < items.Count; j++)
                    b.Document(new Node(new DocRef(sourceFile, i + 1, j), items[j].Yaml, ""), src);
                continue;
            }
            b.Document(node, src);
        }
        return b.Build();
    }

    /// <summary>A document's text without the separator and comments that follow it.</summary>
    private static string DocText(string text)
    {
        var lines = text.Split('\n').ToList();
        while (lines.Count > 0 && (lines[^1].Trim().Length == 0 || lines[^1].TrimEnd() is "---" or "..." || lines[^1].TrimStart().StartsWith('#')))
            lines.RemoveAt(lines.Count - 1);
        return string.Join('\n', lines) + "\n";
    }

    [GeneratedRegex(@"^\(Line: \d+, Col: \d+, Idx: \d+\) - \(Line: \d+, Col: \d+, Idx: \d+\): ")]
    private static partial Regex LocationPrefix();

    [GeneratedRegex("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
    private static partial Regex DnsName();

    [GeneratedRegex("^[a-z0-9]([-a-z0-9]{0,22}[a-z0-9])?$")]
    private static partial Regex LabName();

    [GeneratedRegex(@"^(?<kind>[A-Za-z]+)\s+(?<from>\S+)\s*->\s*(?<to>\S+)$")]
    private static partial Regex Translation();

    [GeneratedRegex(@"^(?<n>[0-9]+(\.[0-9]+)?)(?<u>ms|s)?$")]
    private static partial Regex Duration();

    /// <summary>Whether a matchLabels selector selects a pod (keys may carry k8s: or any:).</summary>
    public static bool Matches(EndpointSelector selector, PodSpec pod)
    {
        ArgumentNullException.ThrowIfNull(selector);
        ArgumentNullException.ThrowIfNull(pod);
        foreach (var (rawKey, value) in selector.MatchLabels)
        {
            var key = StripSource(rawKey);
            if (key is null)
                return false;
            if (key == "io.kubernetes.pod.namespace")
            {
                if (pod.Namespace != value)
                    return false;
            }
            else if (!pod.Labels.TryGetValue(key, out var v) || v != value)
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>The label key without its k8s:/any: source; null for sources pods never carry (reserved:, cidr:...).</summary>
    private static string? StripSource(string key)
    {
        int colon = key.IndexOf(':', StringComparison.Ordinal);
        if (colon < 0)
            return key;
        var source = key[..colon];
        return source is "k8s" or "any" ? key[(colon + 1)..] : null;
    }

    private sealed record RawPod(DocRef Doc, Node At, PodSpec Pod, Node? IpNode, Dictionary<string, PortProtocol> NamedPorts);

    private sealed record RawServicePort(Node At, int Port, string? TargetName, int TargetPort, string Protocol, string? Name);

    private sealed record RawService(DocRef Doc, Node At, string Name, string Namespace, IPAddress? ClusterIp, Node? IpNode,
        Dictionary<string, string> Selector, Node? SelectorNode, List<RawServicePort> Ports);

    private sealed record RawPolicy(DocRef Doc, Node At, NetworkPolicySpec Policy, List<(Node At, EndpointSelector Sel, bool IsSubject)> Selectors);

    private sealed record RawStep(Node At, string Name, string PodText, Node PodNode, string Action, string? Target, Node? TargetNode,
        IReadOnlyList<string> Command, Node? ExpectNode, bool? Delivered, int? DropReason, string? Translation, Node? TranslationNode,
        TimeSpan? Timeout);

    private sealed record RawLab(DocRef Doc, Node At, string Name, IPNetwork PodCidr, Node PodCidrNode, IPNetwork ServiceCidr,
        Node ServiceCidrNode, IPAddress NodeIp, Node NodeIpNode, List<(Node At, OutsideHost Host)> World, List<RawStep> Steps);

    private sealed class Builder(string file)
    {
        private readonly List<RawPod> pods = [];
        private readonly List<RawService> services = [];
        private readonly List<RawPolicy> policies = [];
        private RawLab? lab;

        public void Document(Node root, string sourceText)
        {
            root.Mapping();
            var kind = root.Require("kind").String();
            root.Doc.Kind = kind;
            if (root.Get("metadata") is { } meta && meta.Yaml is YamlMappingNode && meta.Get("name") is { } n)
                root.Doc.Name = (kind is "Lab" ? "" : (meta.Get("namespace") is { } ns ? ns.Scalar() : "default") + "/") + n.Scalar();
            var api = root.Require("apiVersion").String();
            string expectedApi = kind switch
            {
                "Pod" or "Service" => "v1",
                "CiliumNetworkPolicy" => "cilium.io/v2",
                "Lab" => LabApiVersion,
                _ => throw root.Get("kind")!.Value.Error(
                    $"kind '{kind}' is not supported (Pod, Service, CiliumNetworkPolicy, Lab)"),
            };
            if (api != expectedApi)
                throw root.Get("apiVersion")!.Value.Error($"'{api}' is not the apiVersion of {kind} ({expectedApi})");
            switch (kind)
            {
                case "Pod":
                    root.Strict("apiVersion", "kind", "metadata", "spec", "status");
                    Pod(root);
                    break;
                case "Service":
                    root.Strict("apiVersion", "kind", "metadata", "spec", "status");
                    Service(root);
                    break;
                case "CiliumNetworkPolicy":
                    root.Strict("apiVersion", "kind", "metadata", "spec", "specs", "status");
                    Policy(root, sourceText);
                    break;
                default:
                    root.Strict("apiVersion", "kind", "metadata", "spec");
                    Lab(root);
                    break;
            }
        }

        private static (string Name, string Namespace, Dictionary<string, string> Labels) Meta(Node root, bool namespaced = true)
        {
            var meta = root.Require("metadata").Strict(ObjectMetaFields);
            var nameNode = meta.Require("name");
            var name = nameNode.String();
            if (name.Length > 253 || !DnsName().IsMatch(name))
                throw nameNode.Error($"'{name}' is not a valid name (lowercase letters, digits, '-' and '.')");
            var ns = "default";
            if (meta.Get("namespace") is { } nsNode)
            {
                if (!namespaced)
                    throw nsNode.Error("a Lab has no namespace");
                ns = nsNode.String();
                if (!DnsName().IsMatch(ns) || ns.Contains('.', StringComparison.Ordinal) || ns.Length > 63)
                    throw nsNode.Error($"'{ns}' is not a valid namespace");
            }
            var labels = new Dictionary<string, string>(StringComparer.Ordinal);
            if (meta.Get("labels") is { } l)
                foreach (var (k, v) in l.StringMap())
                    labels[k] = v;
            return (name, ns, labels);
        }

        private static string Protocol(Node? n, string dflt, params string[] allowed)
        {
            if (n is null)
                return dflt;
            var p = n.Value.String().ToUpperInvariant();
            if (Array.IndexOf(allowed, p) < 0)
                throw n.Value.Error($"protocol '{n.Value.Scalar()}' is not supported ({string.Join(", ", allowed)})");
            return p;
        }

        private static IPAddress Ipv4(Node n)
        {
            var s = n.String();
            if (!IPAddress.TryParse(s, out var ip) || ip.AddressFamily != AddressFamily.InterNetwork || s.Count(c => c == '.') != 3)
                throw n.Error($"'{s}' is not an IPv4 address");
            return ip;
        }

        private static IPNetwork Cidr(Node n)
        {
            var s = n.String();
            if (!s.Contains('/', StringComparison.Ordinal) || !IPNetwork.TryParse(s, out var net)
                || net.BaseAddress.AddressFamily != AddressFamily.InterNetwork || net.ToString() != s)
                throw n.Error($"'{s}' is not an IPv4 CIDR (address/prefix, host bits zero)");
            return net;
        }

        private void Pod(Node root)
        {
            var (name, ns, labels) = Meta(root);
            var ports = new List<PortProtocol>();
            var named = new Dictionary<string, PortProtocol>(StringComparer.Ordinal);
            if (root.Get("spec") is { } spec)
            {
                spec.Strict(PodSpecFields);
                if (spec.Get("containers") is { } containers)
                {
                    foreach (var c in containers.Items())
                    {
                        c.Strict(ContainerFields);
                        if (c.Get("ports") is not { } cports)
                            continue;
                        foreach (var p in cports.Items())
                        {
                            p.Strict("containerPort", "protocol", "name", "hostPort", "hostIP");
                            var port = p.Require("containerPort").Port();
                            var proto = Protocol(p.Get("protocol"), "TCP", "TCP", "UDP");
                            var pp = new PortProtocol(port, proto);
                            if (ports.Contains(pp))
                                throw p.Error($"{proto} port {port} is listed twice");
                            ports.Add(pp);
                            if (p.Get("name") is { } pn)
                                named[pn.String()] = pp;
                        }
                    }
                }
            }
            IPAddress? ip = null;
            Node? ipNode = null;
            if (root.Get("status") is { } status)
            {
                if (status.Yaml is not YamlMappingNode)
                    throw status.Error("expected a mapping (key: value)");
                if (status.Get("podIP") is { } pip)
                {
                    ip = Ipv4(pip);
                    ipNode = pip;
                }
            }
            pods.Add(new RawPod(root.Doc, root, new PodSpec(name, ns, labels, ip, ports) { NamedPorts = named }, ipNode, named));
        }

        private void Service(Node root)
        {
            var (name, ns, _) = Meta(root);
            var spec = root.Require("spec").Strict(ServiceSpecFields);
            IPAddress? ip = null;
            Node? ipNode = spec.Get("clusterIP");
            if (ipNode is { } cip)
            {
                if (cip.String() == "None")
                    throw cip.Error("headless services (clusterIP: None) are not supported");
                ip = Ipv4(cip);
            }
            if (spec.Get("type") is { } type && type.String() != "ClusterIP")
                throw type.Error($"service type '{type.Scalar()}' is not supported (ClusterIP)");
            var selectorNode = spec.Get("selector");
            var selector = new Dictionary<string, string>(StringComparer.Ordinal);
            if (selectorNode is { } sel)
                foreach (var (k, v) in sel.StringMap())
                    selector[k] = v;
            var ports = new List<RawServicePort>();
            var portsNode = spec.Require("ports");
            foreach (var p in portsNode.Items())
            {
                p.Strict("name", "port", "targetPort", "protocol", "nodePort", "appProtocol");
                var port = p.Require("port").Port();
                var proto = Protocol(p.Get("protocol"), "TCP", "TCP", "UDP");
                int target = port;
                string? targetName = null;
                if (p.Get("targetPort") is { } tp)
                {
                    var t = tp.String();
                    if (t.All(char.IsAsciiDigit))
                        target = tp.Port();
                    else
                        targetName = t;
                }
                if (ports.Any(o => o.Port == port && o.Protocol == proto))
                    throw p.Error($"{proto} port {port} is listed twice");
                ports.Add(new RawServicePort(p, port, targetName, target, proto, p.Get("name")?.String()));
            }
            if (ports.Count == 0)
                throw portsNode.Error("a service needs at least one port");
            services.Add(new RawService(root.Doc, root, name, ns, ip, ipNode, selector, selectorNode, ports));
        }

        private void Policy(Node root, string sourceText)
        {
            var (name, ns, _) = Meta(root);
            var single = root.Get("spec");
            var many = root.Get("specs");
            if (single is null && many is null)
                throw root.Error("spec: required field is missing (spec or specs)");
            var rules = new List<(Node Rule, string Name)>();
            if (single is { } s)
                rules.Add((s, name));
            if (many is { } m)
            {
                var items = m.Items();
                for (int i = 0; i < items.Count; i++)
                    rules.Add((items[i], single is null && items.Count == 1 ? name : $"{name}#{i}"));
            }
            foreach (var (rule, ruleName) in rules)
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
                };
                policies.Add(new RawPolicy(root.Doc, rule, spec, selectors));
            }
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
            bool hasNs = labels.Keys.Any(k => StripSource(k) == "io.kubernetes.pod.namespace");
            if (subject && hasNs)
            {
                var given = labels.First(kv => StripSource(kv.Key) == "io.kubernetes.pod.namespace");
                if (given.Value != ns)
                    throw n.Error($"endpointSelector names namespace '{given.Value}' but the policy is in '{ns}'");
            }
            if (!hasNs)
                labels[NamespaceLabel] = ns;
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

        private void Lab(Node root)
        {
            if (lab is not null)
                throw root.Error($"a second Lab document (the first is document {lab.Doc.Index}); a file describes one lab");
            var (name, _, _) = Meta(root, namespaced: false);
            if (!LabName().IsMatch(name))
                throw root.Require("metadata").Require("name").Error(
                    $"'{name}' is not a valid lab name (lowercase letters, digits and '-', at most 24)");
            var spec = root.Require("spec").Strict("podCIDR", "serviceCIDR", "nodeIP", "world", "steps");
            var podCidrNode = spec.Require("podCIDR");
            var svcCidrNode = spec.Require("serviceCIDR");
            var nodeIpNode = spec.Require("nodeIP");
            var podCidr = Cidr(podCidrNode);
            var svcCidr = Cidr(svcCidrNode);
            if (podCidr.PrefixLength > 30)
                throw podCidrNode.Error($"{podCidr} is too small for pods (at most /30)");
            if (podCidr.Contains(svcCidr.BaseAddress) || svcCidr.Contains(podCidr.BaseAddress))
                throw svcCidrNode.Error($"{svcCidr} overlaps the pod CIDR {podCidr}");
            var nodeIp = Ipv4(nodeIpNode);
            if (podCidr.Contains(nodeIp) || svcCidr.Contains(nodeIp))
                throw nodeIpNode.Error($"{nodeIp} is inside the pod or service CIDR");

            var world = new List<(Node, OutsideHost)>();
            if (spec.Get("world") is { } w)
            {
                foreach (var h in w.Items())
                {
                    h.Strict("name", "ip", "tcp", "udp");
                    var hn = h.Require("name");
                    var hname = hn.String();
                    if (!DnsName().IsMatch(hname))
                        throw hn.Error($"'{hname}' is not a valid name");
                    if (world.Any(x => x.Item2.Name == hname))
                        throw hn.Error($"duplicate world host name '{hname}'");
                    var ipNode = h.Require("ip");
                    var ip = Ipv4(ipNode);
                    if (!TestNets.Any(t => t.Contains(ip)))
                        throw ipNode.Error($"{ip} is not on a TEST-NET range (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24)");
                    if (ip.Equals(nodeIp) || world.Any(x => x.Item2.Ip.Equals(ip)))
                        throw ipNode.Error($"{ip} is already used by the node or another world host");
                    var tcp = PortList(h.Get("tcp"));
                    var udp = PortList(h.Get("udp"));
                    world.Add((h, new OutsideHost(hname, ip, tcp, udp)));
                }
            }
            var steps = new List<RawStep>();
            if (spec.Get("steps") is { } st)
            {
                foreach (var s in st.Items())
                {
                    var step = Step(s);
                    if (steps.Any(x => x.Name == step.Name))
                        throw s.Require("name").Error($"duplicate step name '{step.Name}'");
                    steps.Add(step);
                }
            }
            lab = new RawLab(root.Doc, root, name, podCidr, podCidrNode, svcCidr, svcCidrNode, nodeIp, nodeIpNode, world, steps);
        }

        private static List<int> PortList(Node? n)
        {
            var list = new List<int>();
            if (n is null)
                return list;
            foreach (var p in n.Value.Items())
            {
                var port = p.Port();
                if (list.Contains(port))
                    throw p.Error($"port {port} is listed twice");
                list.Add(port);
            }
            return list;
        }

        private static RawStep Step(Node s)
        {
            s.Strict("name", "pod", "tcp", "udp", "http", "exec", "timeout", "expect");
            var name = s.Require("name").String();
            var podNode = s.Require("pod");
            var actions = StepActions.Where(a => s.Get(a) is not null).ToList();
            if (actions.Count != 1)
                throw s.Error($"a step does exactly one of tcp, udp, http, exec (found {(actions.Count == 0 ? "none" : string.Join(", ", actions))})");
            var action = actions[0];
            var an = s.Require(action);
            string? target = null;
            Node? targetNode = null;
            var command = new List<string>();
            if (action == "exec")
            {
                if (an.Yaml is YamlSequenceNode)
                    command.AddRange(an.Items().Select(i => i.Scalar()));
                else
                    command.AddRange(["/bin/sh", "-c", an.String()]);
                if (command.Count == 0 || command[0].Length == 0)
                    throw an.Error("an empty command");
            }
            else
            {
                target = an.String();
                targetNode = an;
            }
            TimeSpan? timeout = null;
            if (s.Get("timeout") is { } tn)
            {
                var m = Duration().Match(tn.String());
                if (!m.Success)
                    throw tn.Error($"'{tn.Scalar()}' is not a duration (e.g. 2s, 500ms)");
                var v = double.Parse(m.Groups["n"].Value, CultureInfo.InvariantCulture);
                timeout = m.Groups["u"].Value == "ms" ? TimeSpan.FromMilliseconds(v) : TimeSpan.FromSeconds(v);
                if (timeout < TimeSpan.FromMilliseconds(100) || timeout > TimeSpan.FromSeconds(60))
                    throw tn.Error($"{timeout.Value.TotalSeconds}s is out of range (0.1s-60s)");
            }
            bool? delivered = null;
            int? reason = null;
            string? translation = null;
            Node? translationNode = null;
            var en = s.Get("expect");
            if (en is { } e)
            {
                e.Strict("delivered", "dropReason", "translation");
                if (e.Get("delivered") is { } d)
                    delivered = d.Bool();
                if (e.Get("dropReason") is { } r)
                {
                    if (!CiliumDropReasons.TryParse(r.String(), out int code))
                        throw r.Error($"'{r.Scalar()}' is not a Cilium drop reason (a code like 133 or a name like 'Policy denied')");
                    if (delivered == true)
                        throw r.Error("a delivered step has no drop reason");
                    delivered = false;
                    reason = code;
                }
                if (e.Get("translation") is { } t)
                {
                    translation = t.String();
                    translationNode = t;
                }
            }
            return new RawStep(s, name, podNode.String(), podNode, action, target, targetNode, command, en, delivered, reason,
                translation, translationNode, timeout);
        }

        public ClusterSpec Build()
        {
            // Duplicates.
            foreach (var g in pods.GroupBy(p => p.Pod.FullName).Where(g => g.Count() > 1))
                throw g.Skip(1).First().At.Require("metadata").Require("name").Error($"duplicate Pod {g.Key} (first in document {g.First().Doc.Index})");
            foreach (var g in services.GroupBy(s => $"{s.Namespace}/{s.Name}").Where(g => g.Count() > 1))
                throw g.Skip(1).First().At.Require("metadata").Require("name").Error($"duplicate Service {g.Key} (first in document {g.First().Doc.Index})");
            foreach (var g in policies.GroupBy(p => $"{p.Policy.Namespace}/{p.Policy.Name}").Where(g => g.Count() > 1))
                throw g.Skip(1).First().At.Error($"duplicate CiliumNetworkPolicy {g.Key} (first in document {g.First().Doc.Index})");

            // Pod addresses: given ones checked, missing ones assigned from the pod CIDR in document order.
            var used = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var p in pods.Where(p => p.Pod.Ip is not null))
            {
                var ip = p.Pod.Ip!;
                if (lab is not null && !lab.PodCidr.Contains(ip))
                    throw p.IpNode!.Value.Error($"{ip} is outside the lab's pod CIDR {lab.PodCidr}");
                if (lab is not null && (ip.Equals(lab.PodCidr.BaseAddress) || ip.Equals(Last(lab.PodCidr))))
                    throw p.IpNode!.Value.Error($"{ip} is the network or broadcast address of {lab.PodCidr}");
                if (used.TryGetValue(ip.ToString(), out var other))
                    throw p.IpNode!.Value.Error($"{ip} is already the address of {other}");
                used[ip.ToString()] = "Pod " + p.Pod.FullName;
            }
            var finalPods = new List<PodSpec>();
            foreach (var p in pods)
            {
                var pod = p.Pod;
                if (pod.Ip is null)
                {
                    if (lab is null)
                        throw p.At.Error("status.podIP: missing, and there is no Lab document with a podCIDR to assign it from");
                    var ip = NextFree(lab.PodCidr, used) ?? throw p.At.Error($"status.podIP: the pod CIDR {lab.PodCidr} is full");
                    used[ip.ToString()] = "Pod " + pod.FullName;
                    pod = pod with { Ip = ip };
                }
                finalPods.Add(pod);
            }

            // Services.
            foreach (var s in services.Where(s => s.ClusterIp is not null))
            {
                var ip = s.ClusterIp!;
                if (lab is not null && !lab.ServiceCidr.Contains(ip))
                    throw s.IpNode!.Value.Error($"{ip} is outside the lab's service CIDR {lab.ServiceCidr}");
                if (used.TryGetValue(ip.ToString(), out var other))
                    throw s.IpNode!.Value.Error($"{ip} is already the address of {other}");
                used[ip.ToString()] = $"Service {s.Namespace}/{s.Name}";
            }
            var finalServices = new List<ServiceSpec>();
            foreach (var s in services)
            {
                var ip = s.ClusterIp;
                if (ip is null)
                {
                    if (lab is null)
                        throw s.At.Error("spec.clusterIP: missing, and there is no Lab document with a serviceCIDR to assign it from");
                    ip = NextFree(lab.ServiceCidr, used) ?? throw s.At.Error($"spec.clusterIP: the service CIDR {lab.ServiceCidr} is full");
                    used[ip.ToString()] = $"Service {s.Namespace}/{s.Name}";
                }
                // A selector that matches no Pod is valid (a deployment scaled to zero): the service
                // loads without backends and its traffic is dropped as Cilium drops it (158).
                var ports = new List<ServicePort>();
                foreach (var sp in s.Ports)
                    ports.Add(new ServicePort(sp.Port, sp.TargetName is null ? sp.TargetPort : 0, sp.Protocol, sp.Name, sp.TargetName));
                finalServices.Add(new ServiceSpec(s.Name, s.Namespace, ip, s.Selector, ports));
            }

            // Policies: every selector selects something.
            foreach (var p in policies)
            {
                foreach (var (at, sel, subject) in p.Selectors)
                {
                    if (sel.MatchLabels.Keys.Any(k => StripSource(k) is null))
                        continue; // reserved:/cidr: labels select no pod, nothing to check
                    if (!finalPods.Any(pod => Matches(sel, pod)))
                        throw at.Error($"{(subject ? "endpointSelector" : "selector")} matches no Pod ({Show(sel.MatchLabels)})");
                }
            }

            LabSpec? labSpec = null;
            if (lab is not null)
                labSpec = BuildLab(lab, finalPods, finalServices);
            return new ClusterSpec(file, labSpec, finalPods, finalServices, policies.Select(p => p.Policy).ToList());
        }

        private static string Show(IReadOnlyDictionary<string, string> labels) =>
            string.Join(", ", labels.Select(kv => $"{kv.Key}={kv.Value}"));

        private static IPAddress Last(IPNetwork net)
        {
            var b = net.BaseAddress.GetAddressBytes();
            uint v = (uint)(b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]);
            v |= net.PrefixLength == 0 ? uint.MaxValue : (1u << (32 - net.PrefixLength)) - 1;
            return new IPAddress([(byte)(v >> 24), (byte)(v >> 16), (byte)(v >> 8), (byte)v]);
        }

        private static IPAddress? NextFree(IPNetwork net, Dictionary<string, string> used)
        {
            var b = net.BaseAddress.GetAddressBytes();
            uint start = (uint)(b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]);
            ulong size = 1UL << (32 - net.PrefixLength);
            for (ulong i = 1; i + 1 < size && i < 65536; i++)
            {
                uint v = start + (uint)i;
                var ip = new IPAddress([(byte)(v >> 24), (byte)(v >> 16), (byte)(v >> 8), (byte)v]);
                if (!used.ContainsKey(ip.ToString()))
                    return ip;
            }
            return null;
        }

        private static LabSpec BuildLab(RawLab lab, List<PodSpec> pods, List<ServiceSpec> services)
        {
            foreach (var (at, h) in lab.World)
            {
                if (pods.Any(p => p.Ip!.Equals(h.Ip)) || services.Any(s => s.ClusterIp.Equals(h.Ip)))
                    throw at.Require("ip").Error($"{h.Ip} is already a pod or service address");
            }
            var steps = new List<ScenarioStep>();
            foreach (var s in lab.Steps)
            {
                var pod = FindPod(s.PodText, pods) ?? throw s.PodNode.Error($"no Pod named '{s.PodText}'");
                string? target = null;
                if (s.Target is { } t)
                {
                    string path = "";
                    int slash = t.IndexOf('/', StringComparison.Ordinal);
                    var hostPort = t;
                    if (s.Action == "http" && slash >= 0)
                    {
                        path = t[slash..];
                        hostPort = t[..slash];
                    }
                    int colon = hostPort.LastIndexOf(':');
                    if (colon <= 0 || colon == hostPort.Length - 1)
                        throw s.TargetNode!.Value.Error($"'{t}' is not HOST:PORT{(s.Action == "http" ? "[/path]" : "")}");
                    var port = hostPort[(colon + 1)..];
                    if (!int.TryParse(port, NumberStyles.None, CultureInfo.InvariantCulture, out int pn) || pn < 1 || pn > 65535)
                        throw s.TargetNode!.Value.Error($"'{port}' is out of range for a port (1-65535)");
                    var ip = Resolve(hostPort[..colon], lab, pods, services, s.TargetNode!.Value);
                    target = $"{ip}:{pn}{path}";
                }
                string? translation = null;
                if (s.Translation is { } tr)
                    translation = NormalizeTranslation(tr, lab, pods, services, s.TranslationNode!.Value);
                var expect = s.ExpectNode is null ? null : new StepExpectation(s.Delivered, s.DropReason, translation);
                steps.Add(new ScenarioStep(s.Name, pod.FullName, s.Action, target, s.Command, expect, s.Target, s.Timeout));
            }
            return new LabSpec(lab.Name, lab.PodCidr, lab.ServiceCidr, lab.NodeIp, lab.World.Select(w => w.Host).ToList(), steps);
        }

        private static PodSpec? FindPod(string text, List<PodSpec> pods)
        {
            if (text.Contains('/', StringComparison.Ordinal))
                return pods.FirstOrDefault(p => p.FullName == text);
            var byName = pods.Where(p => p.Name == text).ToList();
            return byName.Count == 1 ? byName[0] : byName.FirstOrDefault(p => p.Namespace == "default");
        }

        private static IPAddress Resolve(string host, RawLab lab, List<PodSpec> pods, List<ServiceSpec> services, Node at)
        {
            if (IPAddress.TryParse(host, out var literal) && literal.AddressFamily == AddressFamily.InterNetwork && host.Count(c => c == '.') == 3)
                return literal;
            var found = new List<(string What, IPAddress Ip)>();
            if (host == "node")
                found.Add(("the node", lab.NodeIp));
            if (FindPod(host, pods) is { } pod)
                found.Add(($"Pod {pod.FullName}", pod.Ip!));
            var svc = host.Contains('/', StringComparison.Ordinal)
                ? services.Where(s => $"{s.Namespace}/{s.Name}" == host).ToList()
                : services.Where(s => s.Name == host || $"{s.Name}.{s.Namespace}" == host).ToList();
            if (svc.Count > 1)
                svc = svc.Where(s => s.Namespace == "default").ToList();
            found.AddRange(svc.Select(s => ($"Service {s.Namespace}/{s.Name}", s.ClusterIp)));
            found.AddRange(lab.World.Where(w => w.Host.Name == host).Select(w => ($"world host {w.Host.Name}", w.Host.Ip)));
            return found.Count switch
            {
                1 => found[0].Ip,
                0 => throw at.Error($"'{host}' is neither an IPv4 address nor a Pod, Service or world host"),
                _ => throw at.Error($"'{host}' is ambiguous: {string.Join(", ", found.Select(f => f.What))}"),
            };
        }

        private static string NormalizeTranslation(string text, RawLab lab, List<PodSpec> pods, List<ServiceSpec> services, Node at)
        {
            var m = Translation().Match(text);
            if (!m.Success)
                throw at.Error($"'{text}' is not 'DNAT HOST[:PORT] -> HOST[:PORT]' or 'SNAT HOST[:PORT] -> HOST[:PORT]'");
            var kind = m.Groups["kind"].Value.ToUpperInvariant();
            if (kind is not ("DNAT" or "SNAT"))
                throw at.Error($"'{m.Groups["kind"].Value}' is not DNAT or SNAT");
            string End(string e)
            {
                int colon = e.LastIndexOf(':');
                if (colon < 0)
                    return Resolve(e, lab, pods, services, at).ToString();
                var port = e[(colon + 1)..];
                if (!int.TryParse(port, NumberStyles.None, CultureInfo.InvariantCulture, out int pn) || pn < 1 || pn > 65535)
                    throw at.Error($"'{port}' is out of range for a port (1-65535)");
                return $"{Resolve(e[..colon], lab, pods, services, at)}:{pn}";
            }
            return $"{kind} {End(m.Groups["from"].Value)} -> {End(m.Groups["to"].Value)}";
        }
    }
}
