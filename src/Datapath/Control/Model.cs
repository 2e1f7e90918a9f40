using System.Net;
using Forensics.Datapath.Abi;

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

    /// <summary>spec.serviceAccountName ("default" when not given, as Kubernetes' admission sets it).</summary>
    public string ServiceAccount { get; init; } = "default";

    /// <summary>The labels of the pod's Namespace (kubernetes.io/metadata.name included, as Kubernetes sets it).</summary>
    public IReadOnlyDictionary<string, string> NamespaceLabels { get; init; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>The workload that made the pod ("Deployment default/deathstar"), or null for a Pod document.</summary>
    public string? Owner { get; init; }

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
public sealed record ServicePort(int Port, int TargetPort, string Protocol, string? Name = null, string? TargetName = null)
{
    /// <summary>The port on the node's address (NodePort and LoadBalancer services), 0 for none.</summary>
    public int NodePort { get; init; }
}

/// <summary>
/// A Service: ClusterIP (the virtual address, null for a headless or an
/// ExternalName service), NodePort and LoadBalancer (also reachable on the node's
/// address at each port's NodePort, and on the load balancer's addresses),
/// externalIPs, ClientIP session affinity.
/// </summary>
public sealed record ServiceSpec(
    string Name,
    string Namespace,
    IPAddress? ClusterIp,
    IReadOnlyDictionary<string, string> Selector,
    IReadOnlyList<ServicePort> Ports)
{
    /// <summary>spec.type: ClusterIP, NodePort, LoadBalancer or ExternalName.</summary>
    public string Type { get; init; } = "ClusterIP";

    /// <summary>spec.externalName of an ExternalName service (a DNS name; nothing in the datapath).</summary>
    public string? ExternalName { get; init; }

    /// <summary>spec.externalIPs: more addresses the service answers on, at its ports.</summary>
    public IReadOnlyList<IPAddress> ExternalIps { get; init; } = [];

    /// <summary>A LoadBalancer's addresses (status.loadBalancer.ingress, or taken from the Lab's loadBalancerPool).</summary>
    public IReadOnlyList<IPAddress> LoadBalancerIps { get; init; } = [];

    /// <summary>sessionAffinity ClientIP: how long a client keeps its backend, in seconds; 0 for no affinity.</summary>
    public int AffinityTimeoutSeconds { get; init; }

    /// <summary>The ports of a service without a selector's Endpoints, by port name ("" for an unnamed one).</summary>
    public IReadOnlyDictionary<string, int> EndpointPorts { get; init; } = new Dictionary<string, int>(StringComparer.Ordinal);

    /// <summary>metadata.labels (what toServices' k8sServiceSelector selects services by).</summary>
    public IReadOnlyDictionary<string, string> Labels { get; init; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>The backend addresses of a service without a selector, from its Endpoints document.</summary>
    public IReadOnlyList<IPAddress> Endpoints { get; init; } = [];
}

/// <summary>
/// matchLabels and matchExpressions (ANDed); keys may carry Cilium's source
/// prefix (k8s:, any:, reserved:) and include the namespace label.
/// </summary>
public sealed record EndpointSelector(IReadOnlyDictionary<string, string> MatchLabels)
{
    /// <summary>matchExpressions: In, NotIn, Exists, DoesNotExist.</summary>
    public IReadOnlyList<LabelRequirement> MatchExpressions { get; init; } = [];
}

/// <summary>A label selector requirement (Kubernetes' matchExpressions entry).</summary>
public sealed record LabelRequirement(string Key, string Operator, IReadOnlyList<string> Values)
{
    /// <summary>Whether a label's value (null: the label is absent) satisfies the requirement.</summary>
    public bool Matches(string? value) => Operator switch
    {
        "In" => value is not null && Values.Contains(value, StringComparer.Ordinal),
        "NotIn" => value is null || !Values.Contains(value, StringComparer.Ordinal),
        "Exists" => value is not null,
        "DoesNotExist" => value is null,
        _ => false,
    };
}

/// <summary>
/// A port (0 = any) and protocol: TCP, UDP, ANY, or ICMP/ICMPv6 with the ICMP
/// type as the port (as Cilium's policy map keys ICMP).
/// </summary>
public sealed record PortProtocol(int Port, string Protocol)
{
    /// <summary>endPort: the last port of the range Port..EndPort (0: the single port).</summary>
    public int EndPort { get; init; }

    /// <summary>A named port (toPorts port: "http"), resolved against container ports; Port is then 0.</summary>
    public string? Name { get; init; }

    /// <summary>The L7 protocol of the toPorts entry's rules (http, kafka, dns, or an l7proto), null when it has none.</summary>
    public string? L7 { get; init; }

    /// <summary>
    /// rules.dns: the names Cilium's DNS proxy lets a pod look up through this port (matchName or matchPattern each);
    /// answers to lookups it lets through are where toFQDNs learns addresses. Not enforced (as other L7 rules).
    /// </summary>
    public IReadOnlyList<FqdnSelector> Dns { get; init; } = [];
}

/// <summary>toServices: a Kubernetes service by name, or services by label selector, in a namespace.</summary>
public sealed record ServiceRef(string? Name, string Namespace, IReadOnlyDictionary<string, string>? Selector);

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

    /// <summary>fromRequires/toRequires: conditions every peer endpoint of every rule selecting the endpoint must meet too.</summary>
    public IReadOnlyList<EndpointSelector> Requires { get; init; } = [];

    /// <summary>fromNodes/toNodes: nodes by their labels (the lab's one node is the host identity).</summary>
    public IReadOnlyList<EndpointSelector> Nodes { get; init; } = [];

    /// <summary>toServices: the backends of services without a selector.</summary>
    public IReadOnlyList<ServiceRef> Services { get; init; } = [];

    /// <summary>authentication.mode as given (accepted; mutual authentication is not modelled).</summary>
    public string? Authentication { get; init; }

    /// <summary>
    /// toFQDNs: names whose addresses the rule selects once DNS answers have shown them
    /// (Cilium: the addresses its DNS proxy saw returned for a matching name, as toCIDRSet /32 and /128 entries).
    /// </summary>
    public IReadOnlyList<FqdnSelector> Fqdns { get; init; } = [];

    /// <summary>Whether the rule names any peer (endpoints, CIDRs, entities, nodes, services or names).</summary>
    public bool PeersGiven => Endpoints.Count + Cidrs.Count + Entities.Count + Nodes.Count + Services.Count + Fqdns.Count > 0;
}

/// <summary>
/// A toFQDNs entry (pkg/policy/api/fqdn.go): matchName, a literal name, or matchPattern, where
/// "*" is any run of DNS characters within one label, a leading "**." one or more whole labels, and
/// "*" alone every name (pkg/fqdn/matchpattern). Case-insensitive; a trailing dot is implied.
/// </summary>
public sealed record FqdnSelector(string? MatchName, string? MatchPattern)
{
    /// <summary>The anchored regular expression Cilium compiles the selector to (matchpattern.ToAnchoredRegexp).</summary>
    public string Pattern
    {
        get
        {
            const string dnsChars = "[-a-zA-Z0-9_]";
            var p = (MatchName ?? MatchPattern ?? "").Trim().ToLowerInvariant();
            if (MatchName is null && System.Text.RegularExpressions.Regex.IsMatch(p, "^[*]+[.]?$"))
                return "(^(" + dnsChars + "+[.])+$)|(^[.]$)";
            if (!p.EndsWith('.'))
                p += ".";
            p = p.Replace(".", "[.]", StringComparison.Ordinal);
            p = System.Text.RegularExpressions.Regex.Replace(p, @"^[*]{2,}\[\.\]", "(" + dnsChars + "+([.]" + dnsChars + "+){0,})[.]");
            p = System.Text.RegularExpressions.Regex.Replace(p, "[*]+", dnsChars + "*");
            return "^" + p + "$";
        }
    }

    /// <summary>Whether a DNS name (any case, with or without its trailing dot) is selected.</summary>
    public bool Matches(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        var n = name.ToLowerInvariant();
        return System.Text.RegularExpressions.Regex.IsMatch(n.EndsWith('.') ? n : n + ".", Pattern, System.Text.RegularExpressions.RegexOptions.CultureInvariant);
    }

    public override string ToString() => MatchName is not null ? $"matchName: {MatchName}" : $"matchPattern: {MatchPattern}";
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

    /// <summary>The kind of the document the rule came from; a CiliumClusterwideNetworkPolicy has no namespace ("").</summary>
    public string Kind { get; init; } = "CiliumNetworkPolicy";

    public bool Clusterwide => Kind == "CiliumClusterwideNetworkPolicy";

    /// <summary>
    /// A host policy: spec.nodeSelector (a CiliumClusterwideNetworkPolicy), so <see cref="Selector"/> selects
    /// nodes by their labels, and the policy applies to the host endpoint of the nodes it selects (Cilium's host
    /// firewall), never to pods; a policy with an endpointSelector never applies to the host.
    /// </summary>
    public bool SelectsNodes { get; init; }

    /// <summary>namespace/name as Cilium and Hubble name the policy (the name alone when clusterwide).</summary>
    public string FullName => Clusterwide ? Name : $"{Namespace}/{Name}";

    /// <summary>spec.description.</summary>
    public string? Description { get; init; }

    /// <summary>metadata.name of the document (Name adds "#i" for a rule of a specs list).</summary>
    public string ResourceName { get; init; } = Name;

    /// <summary>Where the rule sits in its document: "spec", or "specs[i]" for a rule of a specs list.</summary>
    public string SpecPath { get; init; } = "spec";

    /// <summary>A reference to one of the rule's sections and entries, e.g. ("ingress", 0) for spec.ingress[0].</summary>
    public PolicyRuleRef RuleRef(string section, int index) =>
        new(Kind, Clusterwide ? "" : Namespace, ResourceName, $"{SpecPath}.{section}[{index}]");
}

/// <summary>
/// One rule of a policy as its author wrote it: the policy (kind, namespace,
/// name; namespace empty for a clusterwide policy) and the rule's place in the
/// document (spec.ingress[0], specs[1].egressDeny[2]). What a verdict names as
/// the rule that allowed or denied it, as Hubble's ingress_allowed_by and
/// egress_denied_by name policies.
/// </summary>
public sealed record PolicyRuleRef(string Kind, string Namespace, string Name, string Path)
{
    /// <summary>
    /// Cilium's synthesized allow-all rule: every policy that selects the
    /// endpoint in this direction says enableDefaultDeny: false, so what no
    /// deny rule denies is allowed.
    /// </summary>
    public static PolicyRuleRef DefaultAllow(Dir direction) =>
        new("", "", "", direction == Dir.Ingress ? "default-allow.ingress" : "default-allow.egress");

    public bool IsDefaultAllow => Kind.Length == 0;

    /// <summary>namespace/name as Hubble prints a policy (the name alone for a clusterwide policy).</summary>
    public string Policy => Namespace.Length == 0 ? Name : $"{Namespace}/{Name}";

    /// <summary>
    /// The labels Cilium gives the rules of a policy from Kubernetes (pkg/k8s/apis/cilium.io
    /// PolicyLabel*), which Hubble reports with a verdict; none for the synthesized rule.
    /// </summary>
    public IReadOnlyList<string> Labels => IsDefaultAllow ? [] :
        Namespace.Length == 0
            ? [$"k8s:io.cilium.k8s.policy.derived-from={Kind}", $"k8s:io.cilium.k8s.policy.name={Name}"]
            : [$"k8s:io.cilium.k8s.policy.derived-from={Kind}", $"k8s:io.cilium.k8s.policy.name={Name}", $"k8s:io.cilium.k8s.policy.namespace={Namespace}"];

    public override string ToString() => IsDefaultAllow
        ? $"default allow ({Path[(Path.IndexOf('.', StringComparison.Ordinal) + 1)..]}: no policy enables default deny)"
        : $"{Policy} {Path}";

    /// <summary>A stable order (kind, namespace, name, path) for sets of rules.</summary>
    public static IComparer<PolicyRuleRef> Order { get; } = Comparer<PolicyRuleRef>.Create((a, b) =>
        string.CompareOrdinal($"{a.Kind}\n{a.Namespace}\n{a.Name}\n{a.Path}", $"{b.Kind}\n{b.Namespace}\n{b.Name}\n{b.Path}"));
}

/// <summary>A host of the "outside world" on a TEST-NET address, with listening ports.</summary>
public sealed record OutsideHost(string Name, IPAddress Ip, IReadOnlyList<int> TcpPorts, IReadOnlyList<int> UdpPorts)
{
    /// <summary>dns: names this host answers DNS queries for (UDP port 53), each with its address; empty: no DNS server.</summary>
    public IReadOnlyDictionary<string, IPAddress> Dns { get; init; } = new Dictionary<string, IPAddress>(StringComparer.Ordinal);
}

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
    TimeSpan? Timeout = null)
{
    /// <summary>
    /// Where the step runs (<see cref="StepSources"/>): in the pod <see cref="Pod"/> names, or (from:) on the node
    /// (Pod is "node": the node's namespace and address) or on a world host (Pod is its name: from its address).
    /// </summary>
    public string From { get; init; } = StepSources.Pod;
}

/// <summary>The values of <see cref="ScenarioStep.From"/>.</summary>
public static class StepSources
{
    public const string Pod = "pod";
    public const string Node = "node";
    public const string World = "world";
}

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

    /// <summary>spec.nodeListeners.tcp: ports the lab listens on at the node's address (what host policies police).</summary>
    public IReadOnlyList<int> NodeTcpPorts { get; init; } = [];

    /// <summary>spec.nodeListeners.udp.</summary>
    public IReadOnlyList<int> NodeUdpPorts { get; init; } = [];
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
    IReadOnlyList<NetworkPolicySpec> Policies)
{
    /// <summary>
    /// --l7 deny: a port whose toPorts entry has L7 rules is denied instead of allowed at
    /// L4, so that no one takes the lab for an L7 proxy.
    /// </summary>
    public bool L7Deny { get; init; }

    /// <summary>The labels of the lab's one node (for fromNodes/toNodes).</summary>
    public IReadOnlyDictionary<string, string> NodeLabels { get; init; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>
    /// What the loader wants the user to know, one line each, said once: documents
    /// skipped (a kind the lab does not model), parts of a policy accepted but not
    /// enforced (L7 rules, authentication).
    /// </summary>
    public IReadOnlyList<string> Notices { get; init; } = [];
}
