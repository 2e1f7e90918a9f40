using System.Net;
using Forensics.Datapath.Abi;

namespace Forensics.Datapath.Control;

// Plain records of what the datapath holds at one moment, for a recording to
// embed (the recorder writes them as tables) and for tests to inspect.

public sealed record EndpointInfo(
    ushort Id, string Pod, string Namespace, IPAddress Ip, uint Identity, int Ifindex,
    bool IngressEnforced, bool EgressEnforced);

public sealed record IdentityInfo(uint Id, IReadOnlyList<string> Labels, string Kind);

/// <summary>An ipcache (LPM) entry: prefix -> identity (and the local endpoint owning the address).</summary>
public sealed record IpcacheInfo(string Prefix, uint Identity, ushort EndpointId);

/// <summary>A policy as given, with its source text.</summary>
public sealed record PolicyInfo(string Name, string Namespace, string SourceText);

public sealed record BackendInfo(int Slot, IPAddress Ip, int Port, string? Pod);

/// <summary>One service frontend (ClusterIP:port/protocol) and its backends; Id is the service id in NAT events.</summary>
public sealed record ServiceInfo(
    uint Id, string Name, string Namespace, IPAddress Frontend, int Port, string Protocol, IReadOnlyList<BackendInfo> Backends)
{
    /// <summary>What kind of frontend: ClusterIP, NodePort (the node's address), LoadBalancer or ExternalIP.</summary>
    public string FrontendType { get; init; } = "ClusterIP";
}

public sealed record ConntrackInfo(
    IPAddress Source, int SourcePort, IPAddress Destination, int DestinationPort, byte Protocol, Dir Direction,
    ushort EndpointId, uint RemoteIdentity, PolicyMatch Match, CtFlags Flags,
    ulong Packets, ulong Bytes, ulong CreatedNs, ulong LastNs,
    uint ServiceId, IPAddress? ServiceAddress, int ServicePort);

/// <summary>
/// A translation table entry. Kind "snat": the pod's tuple leaves as
/// (ToAddress, ToPort); "rev-snat": return traffic to (Destination,
/// DestinationPort) goes to (ToAddress, ToPort); "lb": a client's tuple to a
/// service goes to backend (ToAddress, ToPort).
/// </summary>
public sealed record NatInfo(
    string Kind, IPAddress Source, int SourcePort, IPAddress Destination, int DestinationPort, byte Protocol,
    IPAddress ToAddress, int ToPort, uint ServiceId, ulong CreatedNs);

/// <summary>
/// The rules a policy map entry was compiled from, under the id the entry
/// carries into verdict and drop events (id 0, no rule: default deny).
/// </summary>
public sealed record PolicyRuleSet(uint Id, IReadOnlyList<PolicyRuleRef> Rules);

public sealed record DatapathSnapshot(
    DateTimeOffset Taken,
    IReadOnlyList<EndpointInfo> Endpoints,
    IReadOnlyList<IdentityInfo> Identities,
    IReadOnlyList<IpcacheInfo> Ipcache,
    IReadOnlyList<PolicyInfo> Policies,
    IReadOnlyList<PolicyEntry> PolicyEntries,
    IReadOnlyList<ServiceInfo> Services,
    IReadOnlyList<ConntrackInfo> Conntrack,
    IReadOnlyList<NatInfo> Nat)
{
    /// <summary>Every rule set an entry has carried since the datapath was loaded, by id.</summary>
    public IReadOnlyList<PolicyRuleSet> Rules { get; init; } = [];
}
