using System.Net;

namespace Forensics.Datapath.Control;

// The cluster as users describe it in Kubernetes-shaped YAML (Pod, Service,
// CiliumNetworkPolicy, and our own Lab), after parsing and validation. The
// YAML loader produces it; the datapath control plane compiles it into BPF map
// entries; the lab builds namespaces and veths from it.

public sealed record PodSpec(
    string Name,
    string Namespace,
    IReadOnlyDictionary<string, string> Labels,
    IPAddress? Ip,
    IReadOnlyList<PortProtocol>? Ports = null)
{
    /// <summary>spec.containers[].ports[]: what the lab listens on inside the pod (TCP or UDP).</summary>
    public IReadOnlyList<PortProtocol> ContainerPorts => Ports ?? [];

    /// <summary>The named container ports (spec.containers[].ports[].name), for named targetPorts and policy ports.</summary>
    public IReadOnlyDictionary<string, PortProtocol> NamedPorts { get; init; } = new Dictionary<string, PortProtocol>(StringComparer.Ordinal);

    public string FullName => $"{Namespace}/{Name}";

    /// <summary>spec.containers[] (name, image), in order; empty when the document gives none.</summary>
    public IReadOnlyList<ContainerSpec> Containers { get; init; } = [];
}

/// <summary>A container of a pod: its name and image as written (the containerd lab node runs it).</summary>
public sealed record ContainerSpec(string Name, string? Image);

/// <summary>
/// A service port. A named targetPort (TargetName) is resolved per backend from
/// its container ports, as Kubernetes resolves it; TargetPort is then 0.
/// </summary>
public sealed record ServicePort(int Port, int TargetPort, string Protocol, string? Name = null, string? TargetName = null);

public sealed record ServiceSpec(
    string Name,
    string Namespace,
    IPAddress ClusterIp,
    IReadOnlyDictionary<string, string> Selector,
    IReadOnlyList<ServicePort> Ports);

/// <summary>matchLabels; keys may carry Cilium's source prefix (k8s:) and include the namespace label.</summary>
public sealed record EndpointSelector(IReadOnlyDictionary<string, string> MatchLabels);

/// <summary>A port (0 = any) and protocol: TCP, UDP or ANY.</summary>
public sealed record PortProtocol(int Port, string Protocol);

public sealed record CidrRule(string Cidr, IReadOnlyList<string> Except);

/// <summary>
/// One ingress/egress rule: peers (endpoints, CIDRs, entities) and ports; empty
/// lists mean "not given". As in Cilium (pkg/policy/rule.go mergeIngress): a rule
/// that names no peer and no port (<c>ingress: [{}]</c>) allows nothing; a rule
/// with ports and no peer applies to every peer; a peer list given empty
/// (<c>fromEndpoints: []</c>) selects nothing, so the rule allows nothing
/// (<see cref="SelectsNothing"/>).
/// </summary>
public sealed record PolicyRule(
    IReadOnlyList<EndpointSelector> Endpoints,
    IReadOnlyList<CidrRule> Cidrs,
    IReadOnlyList<string> Entities,
    IReadOnlyList<PortProtocol> Ports)
{
    /// <summary>A peer list was given empty (fromEndpoints: [], toCIDR: [], toEntities: [] ...): the rule selects no peer.</summary>
    public bool SelectsNothing { get; init; }

    /// <summary>toPorts was given with entries: the rule is L4 (with no port in them it matches nothing).</summary>
    public bool PortsGiven { get; init; } = Ports.Count > 0;

    /// <summary>Whether the rule names any peer (endpoints, CIDRs or entities).</summary>
    public bool PeersGiven => Endpoints.Count + Cidrs.Count + Entities.Count > 0;
}

public sealed record NetworkPolicySpec(
    string Name,
    string Namespace,
    EndpointSelector Selector,
    IReadOnlyList<PolicyRule> Ingress,
    IReadOnlyList<PolicyRule> Egress,
    IReadOnlyList<PolicyRule> IngressDeny,
    IReadOnlyList<PolicyRule> EgressDeny,
    string SourceText)
{
    /// <summary>
    /// spec.enableDefaultDeny.ingress as given (null: not given, which Cilium
    /// reads as true when the policy has ingress or ingressDeny rules).
    /// </summary>
    public bool? DefaultDenyIngress { get; init; }

    /// <summary>spec.enableDefaultDeny.egress as given (null: not given).</summary>
    public bool? DefaultDenyEgress { get; init; }
}

/// <summary>A host of the "outside world" on a TEST-NET address, with listening ports.</summary>
public sealed record OutsideHost(string Name, IPAddress Ip, IReadOnlyList<int> TcpPorts, IReadOnlyList<int> UdpPorts);

/// <summary>
/// What a scenario step's traffic is expected to meet; null fields are not checked.
/// Translation is normalized by the loader: "DNAT 10.0.1.100:8080 -> 10.0.0.12:8080"
/// or "SNAT 10.0.0.20 -> 192.0.2.1" (ports optional, addresses resolved).
/// </summary>
public sealed record StepExpectation(bool? Delivered, int? DropReason, string? Translation);

/// <summary>
/// A scripted step run inside a pod: tcp, http, udp, or any command (exec). Pod is
/// the pod's full name (namespace/name); Target is resolved to "ip:port" (http:
/// "ip:port/path"), TargetText keeps what the user wrote.
/// </summary>
public sealed record ScenarioStep(
    string Name,
    string Pod,
    string Action,
    string? Target,
    IReadOnlyList<string> Command,
    StepExpectation? Expect,
    string? TargetText = null,
    TimeSpan? Timeout = null);

public sealed record LabSpec(
    string Name,
    IPNetwork PodCidr,
    IPNetwork ServiceCidr,
    IPAddress NodeIp,
    IReadOnlyList<OutsideHost> Outside,
    IReadOnlyList<ScenarioStep> Steps)
{
    /// <summary>What the lab's node is made of: <see cref="LabNodeKinds.Netns"/> (default) or <see cref="LabNodeKinds.Containerd"/>.</summary>
    public string Node { get; init; } = LabNodeKinds.Netns;

    /// <summary>spec.nodeFirewall: iptables-restore text applied in the node (containerd node only).</summary>
    public string? NodeFirewall { get; init; }
}

/// <summary>The values of a Lab's spec.node.</summary>
public static class LabNodeKinds
{
    /// <summary>Pods are network namespaces; our datapath is attached to their veths.</summary>
    public const string Netns = "netns";

    /// <summary>Pods are CRI pod sandboxes and containers of a containerd started for the lab; services are kube-proxy iptables rules.</summary>
    public const string Containerd = "containerd";
}

public sealed record ClusterSpec(
    string SourceFile,
    LabSpec? Lab,
    IReadOnlyList<PodSpec> Pods,
    IReadOnlyList<ServiceSpec> Services,
    IReadOnlyList<NetworkPolicySpec> Policies);
