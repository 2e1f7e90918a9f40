using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using YamlDotNet.RepresentationModel;
using static Forensics.Datapath.Control.ObjectFields;

namespace Forensics.Datapath.Control;

internal sealed record RawStep(Node At, string Name, string PodText, Node PodNode, string Action, string? Target, Node? TargetNode,
    IReadOnlyList<string> Command, Node? ExpectNode, bool? Delivered, int? DropReason, string? Translation, Node? TranslationNode,
    TimeSpan? Timeout)
{
    /// <summary>from: instead of pod: the step runs on the node or a world host (PodText is "node" or the host's name).</summary>
    public bool FromGiven { get; init; }
}

/// <summary>The Lab document (forensics.dev/v1): CIDRs, node address, world hosts, scenario steps.</summary>
internal sealed record RawLab(DocRef Doc, Node At, string Name, IPNetwork PodCidr, Node PodCidrNode, IPNetwork ServiceCidr,
    Node ServiceCidrNode, IPAddress NodeIp, Node NodeIpNode, List<(Node At, OutsideHost Host)> World, List<RawStep> Steps,
    string NodeKind = LabNodeKinds.Netns, string? NodeFirewall = null)
{
    /// <summary>The node's labels: the lab's defaults (hostname, os, control-plane: one node is the whole cluster) and spec.nodeLabels.</summary>
    public Dictionary<string, string> NodeLabels { get; init; } = new(StringComparer.Ordinal);

    /// <summary>spec.loadBalancerPool: where LoadBalancer services without an address get one (a TEST-NET range).</summary>
    public IPNetwork? LoadBalancerPool { get; init; }

    /// <summary>spec.include: more files of manifests, relative to the lab's.</summary>
    public List<(Node At, string Path)> Include { get; init; } = [];

    /// <summary>spec.nodeListeners: TCP and UDP ports the lab listens on at the node's address.</summary>
    public (List<int> Tcp, List<int> Udp) NodeListeners { get; init; } = ([], []);
}

internal static partial class LabDocument
{
    private static readonly string[] StepActions = ["tcp", "udp", "http", "exec"];

    private static readonly IPNetwork[] TestNets =
        [IPNetwork.Parse("192.0.2.0/24"), IPNetwork.Parse("198.51.100.0/24"), IPNetwork.Parse("203.0.113.0/24")];

    [GeneratedRegex("^[a-z0-9]([-a-z0-9]{0,22}[a-z0-9])?$")]
    private static partial Regex LabName();

    [GeneratedRegex(@"^(?<kind>[A-Za-z]+)\s+(?<from>\S+)\s*->\s*(?<to>\S+)$")]
    private static partial Regex Translation();

    [GeneratedRegex(@"^(?<n>[0-9]+(\.[0-9]+)?)(?<u>ms|s)?$")]
    private static partial Regex Duration();

    /// <summary>A fully qualified DNS name (labels of letters, digits, '-' and '_', dot-separated; trailing dot optional).</summary>
    [GeneratedRegex(@"^([-A-Za-z0-9_]{1,63}\.)*[-A-Za-z0-9_]{1,63}$")]
    private static partial Regex DnsFqdn();

    public static RawLab Read(Node root, RawLab? earlier)
    {
        if (earlier is not null)
            throw root.Error($"a second Lab document (the first is document {earlier.Doc.Index}); a file describes one lab");
        var (name, _, _) = Meta(root, namespaced: false);
        if (!LabName().IsMatch(name))
            throw root.Require("metadata").Require("name").Error(
                $"'{name}' is not a valid lab name (lowercase letters, digits and '-', at most 24)");
        var spec = root.Require("spec").Strict("podCIDR", "serviceCIDR", "nodeIP", "node", "nodeFirewall", "nodeLabels", "nodeListeners", "loadBalancerPool", "include", "world", "steps");
        var include = new List<(Node, string)>();
        if (spec.Get("include") is { } inc)
        {
            foreach (var i in inc.Items())
            {
                var path = i.String();
                if (Path.IsPathRooted(path) || path.Split('/', '\\').Contains(".."))
                    throw i.Error($"'{path}' is not a path inside the lab's folder");
                include.Add((i, path));
            }
        }
        var nodeKind = LabNodeKinds.Netns;
        if (spec.Get("node") is { } nk)
        {
            nodeKind = nk.String();
            if (nodeKind is not (LabNodeKinds.Netns or LabNodeKinds.Containerd))
                throw nk.Error($"node '{nodeKind}' is not supported ({LabNodeKinds.Netns}: namespaces and our datapath; {LabNodeKinds.Containerd}: real containerd pods behind kube-proxy's iptables rules)");
        }
        string? nodeFirewall = null;
        if (spec.Get("nodeFirewall") is { } fw)
        {
            nodeFirewall = fw.String();
            if (nodeKind != LabNodeKinds.Containerd)
                throw fw.Error($"nodeFirewall needs node: {LabNodeKinds.Containerd} (the netns node's rules are the datapath's)");
        }
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
                h.Strict("name", "ip", "tcp", "udp", "dns");
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
                var dns = new Dictionary<string, IPAddress>(StringComparer.Ordinal);
                if (h.Get("dns") is { } dn)
                {
                    // name: address (A or AAAA): the host answers DNS queries on UDP port 53
                    if (udp.Contains(53))
                        throw dn.Error("a host with dns answers on UDP port 53 itself: leave 53 out of udp");
                    if (dn.Yaml is not YamlMappingNode)
                        throw dn.Error("expected a mapping of DNS names to addresses (name: address)");
                    foreach (var (dnsName, at) in dn.Entries())
                    {
                        if (!DnsFqdn().IsMatch(dnsName.TrimEnd('.')))
                            throw at.Error($"'{dnsName}' is not a DNS name");
                        var addr = Probes.Cidrs.ParseAddress(at.String()) ?? throw at.Error($"'{at.Scalar()}' is not an IPv4 or IPv6 address");
                        dns[dnsName.TrimEnd('.').ToLowerInvariant() + "."] = addr;
                    }
                }
                world.Add((h, new OutsideHost(hname, ip, tcp, udp) { Dns = dns }));
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
        var nodeLabels = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["kubernetes.io/hostname"] = $"{name}-node",
            ["kubernetes.io/os"] = "linux",
            ["node-role.kubernetes.io/control-plane"] = "",
        };
        if (spec.Get("nodeLabels") is { } nl)
            foreach (var (k, v) in nl.StringMap())
                nodeLabels[k] = v;
        (List<int> Tcp, List<int> Udp) nodeListeners = ([], []);
        if (spec.Get("nodeListeners") is { } listeners)
        {
            listeners.Strict("tcp", "udp");
            nodeListeners = (PortList(listeners.Get("tcp")), PortList(listeners.Get("udp")));
        }
        IPNetwork? lbPool = null;
        if (spec.Get("loadBalancerPool") is { } poolNode)
        {
            lbPool = Cidr(poolNode);
            if (!TestNets.Any(t => t.Contains(lbPool.Value.BaseAddress) && lbPool.Value.PrefixLength >= t.PrefixLength))
                throw poolNode.Error($"{lbPool} is not inside a TEST-NET range (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24)");
            if (lbPool.Value.Contains(nodeIp) || world.Any(w => lbPool.Value.Contains(w.Item2.Ip)))
                throw poolNode.Error($"{lbPool} holds the node's or a world host's address");
        }
        return new RawLab(root.Doc, root, name, podCidr, podCidrNode, svcCidr, svcCidrNode, nodeIp, nodeIpNode, world, steps, nodeKind, nodeFirewall)
        {
            NodeLabels = nodeLabels,
            NodeListeners = nodeListeners,
            LoadBalancerPool = lbPool,
            Include = include,
        };
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
        s.Strict("name", "pod", "from", "tcp", "udp", "http", "exec", "timeout", "expect");
        var name = s.Require("name").String();
        // where it runs: in a pod (pod:), or on the node or a world host (from:)
        if (s.Get("pod") is not null && s.Get("from") is { } both)
            throw both.Error("a step runs in a pod (pod:) or from the node or a world host (from:), not both");
        var podNode = s.Get("from") ?? s.Get("pod") ?? throw s.Error("pod: required field is missing (or from: node | WORLD-HOST)");
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
                if (!Format.DropReasons.TryParse(r.String(), out int code))
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
            translation, translationNode, timeout) { FromGiven = s.Get("from") is not null };
    }

    /// <summary>The Lab with its steps resolved against the cluster's pods and services.</summary>
    public static LabSpec Build(RawLab lab, List<PodSpec> pods, List<ServiceSpec> services)
    {
        foreach (var (at, h) in lab.World)
        {
            if (pods.Any(p => p.Ip!.Equals(h.Ip)) || services.Any(s => h.Ip.Equals(s.ClusterIp) || s.ExternalIps.Concat(s.LoadBalancerIps).Contains(h.Ip)))
                throw at.Require("ip").Error($"{h.Ip} is already a pod or service address");
        }
        var steps = new List<ScenarioStep>();
        foreach (var s in lab.Steps)
        {
            string source, from = StepSources.Pod;
            if (s.FromGiven)
            {
                if (s.PodText == "node")
                    from = StepSources.Node;
                else if (lab.World.Any(w => w.Host.Name == s.PodText))
                    from = StepSources.World;
                else
                    throw s.PodNode.Error($"'{s.PodText}' is neither the node nor a world host (from: node | WORLD-HOST; a step in a pod says pod: NAME)");
                source = s.PodText;
            }
            else
            {
                source = (FindPod(s.PodText, pods) ?? throw s.PodNode.Error($"no Pod named '{s.PodText}'")).FullName;
            }
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
            steps.Add(new ScenarioStep(s.Name, source, s.Action, target, s.Command, expect, s.Target, s.Timeout) { From = from });
        }
        return new LabSpec(lab.Name, lab.PodCidr, lab.ServiceCidr, lab.NodeIp, lab.World.Select(w => w.Host).ToList(), steps)
        {
            Node = lab.NodeKind,
            NodeFirewall = lab.NodeFirewall,
            NodeTcpPorts = lab.NodeListeners.Tcp,
            NodeUdpPorts = lab.NodeListeners.Udp,
        };
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
        // a service by namespace/name, or by its DNS name: name, name.ns, name.ns.svc, name.ns.svc.cluster.local
        var svc = host.Contains('/', StringComparison.Ordinal)
            ? services.Where(s => $"{s.Namespace}/{s.Name}" == host).ToList()
            : services.Where(s => s.Name == host || $"{s.Name}.{s.Namespace}" == host || $"{s.Name}.{s.Namespace}.svc" == host
                || $"{s.Name}.{s.Namespace}.svc.cluster.local" == host).ToList();
        if (svc.Count > 1)
            svc = svc.Where(s => s.Namespace == "default").ToList();
        foreach (var s in svc)
        {
            if (s.ClusterIp is null)
                throw at.Error($"'{host}' is a {(s.Type == "ExternalName" ? "ExternalName" : "headless")} service: it has no address (name one of its pods)");
            found.Add(($"Service {s.Namespace}/{s.Name}", s.ClusterIp));
        }
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
