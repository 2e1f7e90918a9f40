using System.Net;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Bpf;

namespace Forensics.Datapath.Control;

/// <summary>A service frontend as a recording's snapshot lists it, with its backends (address, target port).</summary>
public sealed record ReplayService(string Name, string Namespace, IPAddress Frontend, int Port, string Protocol, IReadOnlyList<(IPAddress Ip, int Port)> Backends);

/// <summary>What one program (from-endpoint or to-endpoint of one endpoint) did with a flow's first packet.</summary>
public sealed record ReplayStage(
    string Endpoint,
    Dir Direction,
    bool Dropped,
    ushort DropReason,
    VerdictAction? Action,
    PolicyMatch? Match,
    uint RemoteIdentity,
    IReadOnlyList<PolicyRuleRef> Rules)
{
    /// <summary>The rule id the verdict carried (fx_policy_value.rule_id): 0 when no rule decided.</summary>
    public uint RuleId { get; init; }
}

/// <summary>
/// A flow's first packet through the datapath: delivered or dropped (with the reason), the stage
/// that decided (the one that dropped, else the last policy verdict), and every stage run.
/// </summary>
public sealed record ReplayResult(bool Delivered, ushort DropReason, ReplayStage? Decided, IReadOnlyList<ReplayStage> Stages);

/// <summary>
/// The what-if engine's kernel half: a private instance of the real datapath
/// (bpf/datapath.bpf.o, loaded by libbpf, nothing attached, nothing pinned)
/// programmed by the control plane from a cluster description (pods, policies)
/// plus a recording's service table and reserved-identity prefixes, and a way
/// to run one flow's first packet through it with BPF_PROG_TEST_RUN: the
/// source endpoint's from-endpoint program, then, when the packet is still
/// alive and its (translated) destination is a local endpoint, that
/// endpoint's to-endpoint program. A packet's return value and the drop and
/// policy-verdict events the programs emit are the result.
///
/// The programs find their endpoint by skb->ifindex, and BPF_PROG_TEST_RUN
/// needs an existing device for it: endpoints are registered on ifindexes no
/// device has, and before each run the endpoint's entry is copied to the
/// loopback device's ifindex (1), the device the kernel uses when the run
/// names none. Every map is the control plane's own output otherwise.
/// </summary>
public sealed class PolicyReplay : IDisposable
{
    private const int Loopback = 1;
    private const uint FirstFakeIfindex = 0x4000_0000;
    private const uint TcActShot = 2;
    private const int ClearEvery = 4096;

    private readonly LoadedDatapath dp;
    private readonly RingBufferReader reader;
    private readonly List<byte[]> pending = [];
    private readonly Dictionary<IPAddress, (string Name, Endpoint Entry)> local = [];
    private readonly BpfMap endpointsMap;
    private ushort aliased;
    private int sinceClear;

    private PolicyReplay(LoadedDatapath dp)
    {
        this.dp = dp;
        endpointsMap = dp.Object.Map("fx_endpoints");
        reader = new RingBufferReader(dp.EventsMap, r => pending.Add(r.ToArray()));
    }

    /// <summary>
    /// Loads a private datapath for <paramref name="cluster"/> (its pods, policies; its own
    /// services are not used): <paramref name="localPods"/> become endpoints, the
    /// <paramref name="services"/> and <paramref name="reservedPrefixes"/> (prefix -> reserved
    /// identity, such as the node's address -> host) are written as the recording had them.
    /// </summary>
    public static PolicyReplay Load(ClusterSpec cluster, IReadOnlyList<PodSpec> localPods,
        IReadOnlyList<ReplayService> services, IReadOnlyList<(IPNetwork Prefix, uint Identity)> reservedPrefixes)
    {
        ArgumentNullException.ThrowIfNull(cluster);
        ArgumentNullException.ThrowIfNull(localPods);
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(reservedPrefixes);
        var options = new EventOptions { Kinds = new HashSet<EventKind> { EventKind.Drop, EventKind.Policy }, RingBytes = 1 << 20, Snaplen = 0 };
        var dp = LoadedDatapath.Load(cluster with { Services = [] }, options);
        PolicyReplay? replay = null;
        try
        {
            replay = new PolicyReplay(dp);
            replay.Program(localPods, services, reservedPrefixes);
            return replay;
        }
        catch
        {
            if (replay is not null)
                replay.Dispose();
            else
                dp.Dispose();
            throw;
        }
    }

    private void Program(IReadOnlyList<PodSpec> localPods, IReadOnlyList<ReplayService> services,
        IReadOnlyList<(IPNetwork Prefix, uint Identity)> reservedPrefixes)
    {
        uint fake = FirstFakeIfindex;
        var ifindexOf = new Dictionary<string, uint>(StringComparer.Ordinal);
        foreach (var pod in localPods)
        {
            dp.RegisterEndpoint(pod, (int)fake);
            ifindexOf[pod.FullName] = fake++;
        }
        foreach (var pod in localPods)
        {
            if (!endpointsMap.TryLookup<uint, Endpoint>(ifindexOf[pod.FullName], out var e))
                throw new InvalidOperationException($"endpoint {pod.FullName} was not programmed");
            local[pod.Ip!] = (pod.FullName, e);
        }
        var ipcache = dp.Object.Map("fx_ipcache");
        foreach (var (prefix, identity) in reservedPrefixes)
            ipcache.Update(IpcacheKey.Of(prefix), new IpcacheValue { Identity = identity });

        var svcMap = dp.Object.Map("fx_services");
        var beMap = dp.Object.Map("fx_backends");
        uint id = 1;
        foreach (var s in services)
        {
            var sid = id++;
            for (int slot = 0; slot < s.Backends.Count && slot < MapLimits.MaxBackendsPerService; slot++)
            {
                var (ip, port) = s.Backends[slot];
                beMap.Update(new BackendKey { ServiceId = sid, Slot = (uint)slot },
                    new Backend { Addr = MapAddress.From(ip), Port = (ushort)port, Family = MapAddress.Family(ip) });
            }
            svcMap.Update(
                new ServiceKey { Addr = MapAddress.From(s.Frontend), Port = (ushort)s.Port, Proto = PolicyCompiler.ProtocolNumber(s.Protocol), Family = MapAddress.Family(s.Frontend) },
                new Service { Id = sid, Count = (ushort)Math.Min(s.Backends.Count, MapLimits.MaxBackendsPerService) });
        }
    }

    /// <summary>The identity the control plane derived for a pod's labels.</summary>
    public uint IdentityOf(PodSpec pod) => dp.IdentityOf(pod).Id;

    /// <summary>Program runs so far, and the kernel's own time for them (BPF_PROG_TEST_RUN's duration, ns): the datapath's per-packet cost.</summary>
    public long Runs { get; private set; }

    public ulong KernelNs { get; private set; }

    /// <summary>Whether an address is one of the local endpoints.</summary>
    public bool IsLocal(IPAddress ip) => local.ContainsKey(ip);

    /// <summary>
    /// Runs a flow's first packet (an Ethernet frame, as the source pod sent it) through the
    /// source endpoint's from-endpoint program and, if it passes and its destination is a local
    /// endpoint, that endpoint's to-endpoint program. Each call is a new connection: conntrack
    /// entries of earlier calls never decide a later one's verdict (they are cleared regularly and
    /// distinct flows have distinct tuples).
    /// </summary>
    public ReplayResult Run(byte[] packet)
    {
        ArgumentNullException.ThrowIfNull(packet);
        if (++sinceClear >= ClearEvery)
            ClearConnections();
        var stages = new List<ReplayStage>(2);
        var pkt = packet;
        if (ReplayPackets.Addresses(pkt) is not { } src)
            throw new ArgumentException("not an IPv4 or IPv6 packet", nameof(packet));
        if (local.TryGetValue(src.Src, out var from))
        {
            var (stage, rc, data) = RunAt(from, LoadedDatapath.FromEndpoint, Dir.Egress, pkt);
            stages.Add(stage);
            if (rc == TcActShot)
                return new ReplayResult(false, stage.DropReason, stage, stages);
            pkt = data;
        }
        if (ReplayPackets.Addresses(pkt) is { } dst && local.TryGetValue(dst.Dst, out var to))
        {
            var (stage, rc, _) = RunAt(to, LoadedDatapath.ToEndpoint, Dir.Ingress, pkt);
            stages.Add(stage);
            if (rc == TcActShot)
                return new ReplayResult(false, stage.DropReason, stage, stages);
        }
        var decided = stages.LastOrDefault(s => s.Action is not null) ?? stages.LastOrDefault();
        return new ReplayResult(true, 0, decided, stages);
    }

    private (ReplayStage Stage, uint Rc, byte[] Data) RunAt((string Name, Endpoint Entry) ep, string program, Dir dir, byte[] pkt)
    {
        if (aliased != ep.Entry.Id)
        {
            endpointsMap.Update((uint)Loopback, ep.Entry);
            aliased = ep.Entry.Id;
        }
        var r = dp.Object.Program(program).TestRun(pkt);
        Runs++;
        KernelNs += r.DurationNs;
        reader.Consume();
        ushort reason = 0;
        VerdictAction? action = null;
        PolicyMatch? match = null;
        uint remote = 0;
        uint ruleId = 0;
        foreach (var rec in pending)
        {
            var kind = EventReader.Header(rec).Kind;
            if (kind == EventKind.Drop)
                reason = EventReader.Read<DropEvent>(rec).Reason;
            else if (kind == EventKind.Policy)
            {
                var v = EventReader.Read<PolicyEvent>(rec);
                action = v.Action;
                match = v.Match;
                remote = v.RemoteIdentity;
                ruleId = v.RuleId;
            }
        }
        pending.Clear();
        // the rules behind the entry the verdict hit, by the rule id the datapath gave it (as a recording names them)
        var stage = new ReplayStage(ep.Name, dir, r.ReturnValue == TcActShot, reason, action, match, remote, action is null ? [] : dp.RulesOf(ruleId))
        {
            RuleId = action is null ? 0 : ruleId,
        };
        return (stage, r.ReturnValue, r.DataOut);
    }

    /// <summary>Forgets every tracked connection and service flow (each replayed flow is a new connection).</summary>
    private void ClearConnections()
    {
        sinceClear = 0;
        foreach (var name in (ReadOnlySpan<string>)["fx_ct", "fx_lb_flows"])
        {
            var map = dp.Object.Map(name);
            foreach (var k in map.Keys<CtKey>())
                map.Delete(k);
        }
    }

    public void Dispose()
    {
        reader.Dispose();
        dp.Dispose();
    }
}
