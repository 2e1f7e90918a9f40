using System.Net;

namespace Forensics.Datapath.Cluster;

/// <summary>One backend of a service port: address, port, and the pod when the source names it.</summary>
public sealed record ServiceEndpoint(IPAddress Ip, int Port, string? PodNamespace = null, string? Pod = null);

/// <summary>
/// One service port as a node sees it: the virtual address (ClusterIP, or an external /
/// load-balancer IP), port and protocol, Kubernetes' port name ("ns/svc:port"), its backends,
/// and where this was learned (<see cref="Source"/>: services-file, iptables, nftables, lab).
/// </summary>
public sealed record ServiceFrontend(
    string Namespace,
    string Name,
    string PortName,
    IPAddress Ip,
    int Port,
    string Protocol,
    IReadOnlyList<ServiceEndpoint> Endpoints,
    string Source,
    string Kind = "cluster IP")
{
    /// <summary>kube-proxy's service port name: "ns/svc:port" (":port" only when the port is named).</summary>
    public string ServicePortName => PortName.Length == 0 ? $"{Namespace}/{Name}" : $"{Namespace}/{Name}:{PortName}";
}

/// <summary>What a node's configuration says about the cluster's services and address ranges.</summary>
public sealed record ClusterServices(IReadOnlyList<ServiceFrontend> Services, IReadOnlyList<IPNetwork> PodCidrs)
{
    public static ClusterServices Empty { get; } = new([], []);
}

/// <summary>A services file or rule set that cannot be read: one line saying where and why.</summary>
public sealed class ClusterInputException : Exception
{
    public ClusterInputException(string message) : base(message) { }
    public ClusterInputException() { }
    public ClusterInputException(string message, Exception inner) : base(message, inner) { }
}
