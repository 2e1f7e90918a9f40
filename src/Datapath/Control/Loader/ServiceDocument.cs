using System.Net;
using System.Net.Sockets;
using YamlDotNet.RepresentationModel;
using static Forensics.Datapath.Control.ObjectFields;

namespace Forensics.Datapath.Control;

internal sealed record RawServicePort(Node At, int Port, string? TargetName, int TargetPort, string Protocol, string? Name, int NodePort, Node? NodePortNode);

/// <summary>
/// A Service document (v1) as written: type, cluster IP (null to assign one;
/// Headless for clusterIP None), selector, ports, externalIPs, the load
/// balancer's addresses, session affinity.
/// </summary>
internal sealed record RawService(DocRef Doc, Node At, string Name, string Namespace, IPAddress? ClusterIp, Node? IpNode,
    Dictionary<string, string> Selector, Node? SelectorNode, List<RawServicePort> Ports)
{
    public string Type { get; init; } = "ClusterIP";
    public bool Headless { get; init; }
    public string? ExternalName { get; init; }
    public Dictionary<string, string> Labels { get; init; } = new(StringComparer.Ordinal);
    public List<(Node At, IPAddress Ip)> ExternalIps { get; init; } = [];
    public List<(Node At, IPAddress Ip)> LoadBalancerIps { get; init; } = [];
    public int AffinityTimeoutSeconds { get; init; }
}

/// <summary>An Endpoints (v1) or EndpointSlice (discovery.k8s.io/v1) document: the backends of a service without a selector.</summary>
internal sealed record RawEndpoints(DocRef Doc, Node At, string Service, string Namespace, List<IPAddress> Addresses, Dictionary<string, int> Ports);

internal static class ServiceDocument
{
    private static readonly string[] ServiceSpecFields =
    [
        "clusterIP", "clusterIPs", "selector", "ports", "type", "sessionAffinity", "sessionAffinityConfig", "ipFamilies",
        "ipFamilyPolicy", "internalTrafficPolicy", "externalTrafficPolicy", "externalIPs", "loadBalancerIP",
        "loadBalancerClass", "loadBalancerSourceRanges", "publishNotReadyAddresses", "healthCheckNodePort",
        "allocateLoadBalancerNodePorts", "externalName", "trafficDistribution",
    ];

    /// <summary>Kubernetes' default NodePort range (--service-node-port-range).</summary>
    public const int NodePortMin = 30000;
    public const int NodePortMax = 32767;

    public static RawService Read(Node root)
    {
        var (name, ns, labels) = Meta(root);
        var spec = root.Require("spec").Strict(ServiceSpecFields);
        var typeNode = spec.Get("type");
        var type = typeNode?.String() ?? "ClusterIP";
        if (type is not ("ClusterIP" or "NodePort" or "LoadBalancer" or "ExternalName"))
            throw typeNode!.Value.Error($"Unsupported value: \"{type}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\" (Kubernetes refuses it)");

        // one address family: the lab's datapath translates IPv4 services
        if (spec.Get("ipFamilies") is { } fams)
            foreach (var f in fams.Items())
                if (f.String() != "IPv4")
                    throw f.Error(f.String() == "IPv6"
                        ? "not supported: ipFamilies IPv6 (the datapath translates IPv4 service addresses only)"
                        : $"'{f.Scalar()}' is not an IP family (IPv4, IPv6)");
        if (spec.Get("ipFamilyPolicy") is { } policy && policy.String() == "RequireDualStack")
            throw policy.Error("RequireDualStack: this cluster is not configured for dual-stack services (the lab is IPv4 only; Kubernetes refuses it)");

        IPAddress? ip = null;
        bool headless = false;
        Node? ipNode = spec.Get("clusterIP");
        if (ipNode is { } cip)
        {
            if (cip.String() == "None")
                headless = true;
            else
                ip = ServiceAddress(cip, "clusterIP");
        }
        if (spec.Get("clusterIPs") is { } cips)
        {
            var list = cips.Items();
            if (list.Count > 1)
                throw list[1].Error("not supported: a second clusterIP (dual-stack; the lab is IPv4 only)");
            if (list.Count == 1 && list[0].String() != (headless ? "None" : ip?.ToString() ?? list[0].String()))
                throw list[0].Error("clusterIPs[0] must be the same as clusterIP (Kubernetes refuses it)");
            if (list.Count == 1 && ipNode is null)
            {
                if (list[0].String() == "None")
                    headless = true;
                else
                {
                    ip = ServiceAddress(list[0], "clusterIP");
                    ipNode = list[0];
                }
            }
        }

        string? externalName = null;
        if (type == "ExternalName")
        {
            externalName = spec.Require("externalName").String();
            if (ipNode is not null && !headless)
                throw ipNode.Value.Error("an ExternalName service has no clusterIP (Kubernetes refuses it)");
        }
        else if (spec.Get("externalName") is { } en)
        {
            throw en.Error($"externalName is for type ExternalName, not {type} (Kubernetes refuses it)");
        }
        if (headless && type is "NodePort" or "LoadBalancer")
            throw ipNode!.Value.Error($"a {type} service cannot be headless (clusterIP None; Kubernetes refuses it)");

        var selectorNode = spec.Get("selector");
        var selector = new Dictionary<string, string>(StringComparer.Ordinal);
        if (selectorNode is { } sel)
            foreach (var (k, v) in sel.StringMap())
                selector[k] = v;

        var ports = new List<RawServicePort>();
        if (spec.Get("ports") is { } portsNode)
        {
            foreach (var p in portsNode.Items())
            {
                p.Strict("name", "port", "targetPort", "protocol", "nodePort", "appProtocol");
                var port = p.Require("port").Port();
                var protoNode = p.Get("protocol");
                if (protoNode is { } pn && pn.String().Equals("SCTP", StringComparison.OrdinalIgnoreCase))
                    throw pn.Error("not supported: protocol SCTP (the datapath does not parse SCTP)");
                var proto = Protocol(protoNode, "TCP", "TCP", "UDP");
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
                int nodePort = 0;
                var nodePortNode = p.Get("nodePort");
                if (nodePortNode is { } npn)
                {
                    if (type is not ("NodePort" or "LoadBalancer"))
                        throw npn.Error($"a {type} service has no nodePort (Kubernetes refuses it)");
                    nodePort = npn.Int(NodePortMin, NodePortMax, "a node port");
                }
                if (ports.Any(o => o.Port == port && o.Protocol == proto))
                    throw p.Error($"{proto} port {port} is listed twice");
                ports.Add(new RawServicePort(p, port, targetName, target, proto, p.Get("name")?.String(), nodePort, nodePortNode));
            }
        }
        if (ports.Count > 1 && ports.FirstOrDefault(p => p.Name is null) is { } unnamed)
            throw unnamed.At.Error("name: Required value: a service with more than one port names each of them (Kubernetes refuses it)");
        if (ports.Count == 0 && type != "ExternalName" && !headless)
            throw root.Require("spec").Error("ports: a service needs at least one port");

        var externalIps = new List<(Node, IPAddress)>();
        if (spec.Get("externalIPs") is { } eips)
            foreach (var e in eips.Items())
                externalIps.Add((e, ServiceAddress(e, "externalIPs")));
        var lbIps = new List<(Node, IPAddress)>();
        if (type == "LoadBalancer")
        {
            if (spec.Get("loadBalancerIP") is { } lbip)
                lbIps.Add((lbip, ServiceAddress(lbip, "loadBalancerIP")));
            if (root.Get("status") is { } st && st.Yaml is YamlMappingNode && st.Get("loadBalancer") is { } lb && lb.Get("ingress") is { } ing)
                foreach (var i in ing.Items())
                    if (i.Get("ip") is { } iip)
                        lbIps.Add((iip, ServiceAddress(iip, "status.loadBalancer.ingress ip")));
        }

        int affinity = 0;
        if (spec.Get("sessionAffinity") is { } sa)
        {
            switch (sa.String())
            {
                case "None":
                    break;
                case "ClientIP":
                    // Kubernetes' default: 10800 s (3 hours)
                    affinity = 10800;
                    if (spec.Get("sessionAffinityConfig") is { } cfg)
                    {
                        cfg.Strict("clientIP");
                        if (cfg.Get("clientIP") is { } cl && cl.Strict("timeoutSeconds").Get("timeoutSeconds") is { } ts)
                            affinity = ts.Int(1, 86400, "a session affinity timeout in seconds");
                    }
                    break;
                default:
                    throw sa.Error($"Unsupported value: \"{sa.Scalar()}\": supported values: \"ClientIP\", \"None\" (Kubernetes refuses it)");
            }
        }
        return new RawService(root.Doc, root, name, ns, ip, ipNode, selector, selectorNode, ports)
        {
            Type = type,
            Headless = headless || type == "ExternalName",
            ExternalName = externalName,
            Labels = labels,
            ExternalIps = externalIps,
            LoadBalancerIps = lbIps,
            AffinityTimeoutSeconds = affinity,
        };
    }

    /// <summary>A service address: IPv4 (the datapath translates IPv4 services).</summary>
    private static IPAddress ServiceAddress(Node n, string what)
    {
        var s = n.String();
        if (Probes.Cidrs.ParseAddress(s) is { AddressFamily: AddressFamily.InterNetworkV6 })
            throw n.Error($"not supported: an IPv6 {what} (the datapath translates IPv4 service addresses only)");
        return Ipv4(n);
    }

    /// <summary>Endpoints (v1) or EndpointSlice (discovery.k8s.io/v1): addresses and named ports of a service without a selector.</summary>
    public static RawEndpoints ReadEndpoints(Node root, string kind)
    {
        var (name, ns, labels) = Meta(root);
        var addresses = new List<IPAddress>();
        var ports = new Dictionary<string, int>(StringComparer.Ordinal);
        void Port(Node p)
        {
            p.Strict("name", "port", "protocol", "appProtocol");
            if (p.Get("protocol") is { } proto && proto.String() == "SCTP")
                throw proto.Error("not supported: protocol SCTP (the datapath does not parse SCTP)");
            ports[p.Get("name")?.String() ?? ""] = p.Require("port").Port();
        }
        if (kind == "Endpoints")
        {
            root.Strict("apiVersion", "kind", "metadata", "subsets");
            foreach (var subset in root.Get("subsets")?.Items() ?? [])
            {
                subset.Strict("addresses", "notReadyAddresses", "ports");
                foreach (var a in subset.Get("addresses")?.Items() ?? [])
                    addresses.Add(Ipv4(a.Strict("ip", "hostname", "nodeName", "targetRef").Require("ip")));
                foreach (var p in subset.Get("ports")?.Items() ?? [])
                    Port(p);
            }
            return new RawEndpoints(root.Doc, root, name, ns, addresses, ports);
        }
        root.Strict("apiVersion", "kind", "metadata", "addressType", "endpoints", "ports");
        if (root.Get("addressType") is { } at && at.String() != "IPv4")
            throw at.Error($"not supported: addressType {at.Scalar()} (the datapath translates IPv4 service addresses only)");
        if (!labels.TryGetValue("kubernetes.io/service-name", out var service))
            throw root.Require("metadata").Error("labels: an EndpointSlice names its service with the label kubernetes.io/service-name");
        foreach (var e in root.Get("endpoints")?.Items() ?? [])
        {
            e.Strict("addresses", "conditions", "hostname", "targetRef", "nodeName", "zone", "hints", "deprecatedTopology");
            foreach (var a in e.Require("addresses").Items())
                addresses.Add(Ipv4(a));
        }
        foreach (var p in root.Get("ports")?.Items() ?? [])
            Port(p);
        return new RawEndpoints(root.Doc, root, service, ns, addresses, ports);
    }
}
