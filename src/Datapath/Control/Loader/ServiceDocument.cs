using System.Net;
using static Forensics.Datapath.Control.ObjectFields;

namespace Forensics.Datapath.Control;

internal sealed record RawServicePort(Node At, int Port, string? TargetName, int TargetPort, string Protocol, string? Name);

/// <summary>A Service document (v1): cluster IP, selector, ports.</summary>
internal sealed record RawService(DocRef Doc, Node At, string Name, string Namespace, IPAddress? ClusterIp, Node? IpNode,
    Dictionary<string, string> Selector, Node? SelectorNode, List<RawServicePort> Ports);

internal static class ServiceDocument
{
    private static readonly string[] ServiceSpecFields =
    [
        "clusterIP", "clusterIPs", "selector", "ports", "type", "sessionAffinity", "sessionAffinityConfig", "ipFamilies",
        "ipFamilyPolicy", "internalTrafficPolicy", "externalTrafficPolicy", "externalIPs", "loadBalancerIP",
        "loadBalancerClass", "loadBalancerSourceRanges", "publishNotReadyAddresses", "healthCheckNodePort",
        "allocateLoadBalancerNodePorts", "externalName", "trafficDistribution",
    ];

    public static RawService Read(Node root)
    {
        var (name, ns, _) = Meta(root);
        var spec = root.Require("spec").Strict(ServiceSpecFields);
        IPAddress? ip = null;
        Node? ipNode = spec.Get("clusterIP");
        if (ipNode is { } cip)
        {
            if (cip.String() == "None")
                throw cip.Error("not supported: clusterIP None (headless services)");
            ip = Ipv4(cip);
        }
        if (spec.Get("type") is { } type && type.String() != "ClusterIP")
            throw type.Error($"not supported: type {type.Scalar()} (ClusterIP services only)");
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
        return new RawService(root.Doc, root, name, ns, ip, ipNode, selector, selectorNode, ports);
    }
}
