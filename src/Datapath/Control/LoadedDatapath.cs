using System.Net;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Bpf;

namespace Forensics.Datapath.Control;

/// <summary>
/// The Cilium-like datapath and its control plane: loads bpf/datapath.bpf.o,
/// turns the cluster description (pods, services, policies, the lab's CIDRs
/// and node address) into map entries, attaches the programs to each
/// endpoint's host-side veth and to the node's network device, and dumps its
/// tables. Disposing detaches everything and frees the maps.
/// </summary>
public sealed class LoadedDatapath : IEventSource
{
    public const string FromEndpoint = "fx_from_endpoint";
    public const string ToEndpoint = "fx_to_endpoint";
    public const string FromNetwork = "fx_from_network";
    public const string ToNetwork = "fx_to_network";

    private readonly object gate = new();
    private readonly BpfObject obj;
    private ClusterSpec cluster;
    private readonly IdentityAllocator ids = new();
    private readonly Dictionary<string, PodSpec> pods = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ushort> endpointIds = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (PodSpec Pod, int Ifindex, ushort Id)> endpoints = new(StringComparer.Ordinal);
    private readonly List<TcxLink> links = [];
    private readonly Dictionary<string, CompiledEndpointPolicy> compiled = new(StringComparer.Ordinal);
    private readonly List<ServiceInfo> services = [];
    // keys written last time, by their bytes (the address arrays have no value equality)
    private Dictionary<string, IpcacheKey> ipcacheKeys = [];
    private HashSet<PolicyKey> policyKeys = [];
    // the map keys each compiled entry was written as (a port range is several)
    private Dictionary<string, ServiceKey> serviceKeys = [];
    private HashSet<BackendKey> backendKeys = [];
    // every set of policy rules an entry was compiled from, by id; ids are never reused while loaded
    private readonly Dictionary<string, PolicyRuleSet> ruleSets = new(StringComparer.Ordinal);
    // the same sets by id, for the decode thread (RulesOf) while the policies change
    private readonly System.Collections.Concurrent.ConcurrentDictionary<uint, PolicyRuleSet> ruleSetsById = new();
    private bool disposed;
    private bool auditMode;
    // toFQDNs: every name DNS answers to endpoints showed (through a port with DNS rules), with its addresses; kept while loaded
    private readonly Dictionary<string, SortedSet<IPAddress>> learntNames = new(StringComparer.Ordinal);
    private readonly object dnsGate = new();
    private RingBufferReader? dnsReader;
    private Thread? dnsThread;
    private volatile bool dnsStop;
    private long dnsAnswers, dnsLearnt;

    private LoadedDatapath(BpfObject obj, ClusterSpec cluster)
    {
        this.obj = obj;
        this.cluster = cluster;
        EventsMap = obj.Map(EventChannel.EventsMap);
        EmitStatsMap = obj.Map(EventChannel.StatsMap);
    }

    public string Name => EmbeddedObjects.Datapath;
    public BpfMap EventsMap { get; }
    public BpfMap EmitStatsMap { get; }

    /// <summary>The loaded object (programs for BPF_PROG_TEST_RUN, maps).</summary>
    internal BpfObject Object => obj;

    /// <summary>The cluster as loaded (with the policies in force).</summary>
    public ClusterSpec Cluster
    {
        get
        {
            lock (gate)
                return cluster;
        }
    }

    /// <summary>
    /// Puts a new set of policies in force: identities for new CIDRs, every
    /// endpoint's entries recompiled, stale entries removed. Connections already
    /// tracked keep going, as in Cilium.
    /// </summary>
    public void ReplacePolicies(IReadOnlyList<NetworkPolicySpec> policies)
    {
        ArgumentNullException.ThrowIfNull(policies);
        ObjectDisposedException.ThrowIf(disposed, this);
        lock (gate)
        {
            cluster = cluster with { Policies = policies };
            ids.Preallocate(cluster);
            Sync();
        }
    }

    /// <summary>Loads the datapath programmed for a cluster; nothing is attached until AttachEndpoint/AttachNetworkDevice.</summary>
    public static LoadedDatapath Load(ClusterSpec cluster, EventOptions options)
    {
        ArgumentNullException.ThrowIfNull(cluster);
        ArgumentNullException.ThrowIfNull(options);
        Prerequisites.EnsureKernelAccess();
        var obj = BpfObject.OpenEmbedded(EmbeddedObjects.Datapath);
        try
        {
            EventChannel.Configure(obj, options);
            obj.Load();
            var dp = new LoadedDatapath(obj, cluster);
            dp.Initialize();
            return dp;
        }
        catch
        {
            obj.Dispose();
            throw;
        }
    }

    private void Initialize()
    {
        foreach (var pod in cluster.Pods)
            pods[pod.FullName] = pod;
        ids.Preallocate(cluster);
        ushort next = 1;
        foreach (var name in pods.Keys.Order(StringComparer.Ordinal))
            endpointIds[name] = next++;
        if (cluster.Lab is { } lab)
        {
            if (!PolicyCompiler.IsV4(lab.NodeIp) || !PolicyCompiler.IsV4(lab.PodCidr.BaseAddress) || !PolicyCompiler.IsV4(lab.ServiceCidr.BaseAddress))
                throw new ArgumentException("SNAT needs IPv4 node address, pod CIDR and service CIDR", nameof(cluster));
            var cfg = new NatConfig
            {
                NodeAddr = MapAddress.From(lab.NodeIp),
                PodNet = MapAddress.From(lab.PodCidr.BaseAddress),
                SvcNet = MapAddress.From(lab.ServiceCidr.BaseAddress),
                PodPrefix = (byte)lab.PodCidr.PrefixLength,
                SvcPrefix = (byte)lab.ServiceCidr.PrefixLength,
                Family = MapAddress.AfInet,
                Enabled = 1,
            };
            obj.Map("fx_nat_cfg").Update(0u, cfg);
        }
        Sync();
    }

    /// <summary>
    /// Cilium's policy audit mode: connections policy would deny pass, and
    /// their verdicts say "audit" instead of "deny".
    /// </summary>
    public bool PolicyAuditMode
    {
        get
        {
            lock (gate)
                return auditMode;
        }
        set
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            lock (gate)
            {
                auditMode = value;
                SyncPolicies();
            }
        }
    }

    /// <summary>The identity of a pod (allocating one for a pod not in the cluster description).</summary>
    public SecurityIdentity IdentityOf(PodSpec pod)
    {
        lock (gate)
            return ids.ForPod(pod);
    }

    /// <summary>Every identity known, reserved ones included.</summary>
    public IReadOnlyList<SecurityIdentity> Identities
    {
        get
        {
            lock (gate)
                return [.. ids.All];
        }
    }

    /// <summary>
    /// Programs a pod as a local endpoint behind the host-side veth
    /// <paramref name="hostIfindex"/> and attaches the datapath to it with tcx
    /// links: ingress runs from-endpoint (packets leaving the pod), egress runs
    /// to-endpoint (packets entering it). The ifindex is resolved in the calling
    /// thread's network namespace (call it from the node's namespace). Returns
    /// the endpoint id.
    /// </summary>
    public int AttachEndpoint(PodSpec pod, int hostIfindex)
    {
        ArgumentNullException.ThrowIfNull(pod);
        lock (gate)
        {
            // attaching again (same or another veth) replaces the earlier attachment
            if (endpoints.TryGetValue(pod.FullName, out var earlier))
                DetachLinks(earlier.Ifindex);
            var id = RegisterEndpoint(pod, hostIfindex);
            try
            {
                links.Add(obj.Program(FromEndpoint).AttachTcx(hostIfindex, TcDirection.Ingress));
                links.Add(obj.Program(ToEndpoint).AttachTcx(hostIfindex, TcDirection.Egress));
            }
            catch
            {
                DetachLinks(hostIfindex);
                endpoints.Remove(pod.FullName);
                obj.Map("fx_endpoints").Delete((uint)hostIfindex);
                Sync();
                throw;
            }
            return id;
        }
    }

    /// <summary>Programs the maps for an endpoint without attaching (BPF_PROG_TEST_RUN tests).</summary>
    internal int RegisterEndpoint(PodSpec pod, int hostIfindex)
    {
        ArgumentNullException.ThrowIfNull(pod);
        ObjectDisposedException.ThrowIf(disposed, this);
        if (pod.Ip is null)
            throw new ArgumentException($"pod {pod.FullName} has no IP address", nameof(pod));
        if (hostIfindex <= 0)
            throw new ArgumentOutOfRangeException(nameof(hostIfindex), $"ifindex {hostIfindex}");
        lock (gate)
        {
            if (endpoints.Values.FirstOrDefault(e => e.Ifindex == hostIfindex && e.Pod.FullName != pod.FullName) is { Pod: not null } other)
                throw new ArgumentException($"ifindex {hostIfindex} already belongs to {other.Pod.FullName}", nameof(hostIfindex));
            if (endpoints.TryGetValue(pod.FullName, out var earlier) && earlier.Ifindex != hostIfindex)
                obj.Map("fx_endpoints").Delete((uint)earlier.Ifindex);
            pods[pod.FullName] = pod;
            ids.ForPod(pod);
            if (!endpointIds.TryGetValue(pod.FullName, out var id))
                endpointIds[pod.FullName] = id = (ushort)(endpointIds.Count == 0 ? 1 : endpointIds.Values.Max() + 1);
            endpoints[pod.FullName] = (pod, hostIfindex, id);
            Sync();
            return id;
        }
    }

    /// <summary>
    /// Attaches to the node's device towards the outside world: egress
    /// masquerades pod connections leaving the pod and service CIDRs to the
    /// node address (SNAT), ingress translates their return traffic back. The
    /// ifindex is resolved in the calling thread's network namespace.
    /// </summary>
    public void AttachNetworkDevice(int ifindex)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        lock (gate)
        {
            var ingress = obj.Program(FromNetwork).AttachTcx(ifindex, TcDirection.Ingress);
            try
            {
                links.Add(obj.Program(ToNetwork).AttachTcx(ifindex, TcDirection.Egress));
            }
            catch
            {
                ingress.Dispose();
                throw;
            }
            links.Add(ingress);
        }
    }

    private void DetachLinks(int ifindex)
    {
        foreach (var l in links.Where(l => l.Ifindex == ifindex).ToList())
        {
            l.Dispose();
            links.Remove(l);
        }
    }

    /// <summary>Rewrites every control-plane map from the current state, deleting what is no longer wanted.</summary>
    private void Sync()
    {
        SyncLearntIdentities();
        SyncIpcache();
        SyncServices();
        SyncPolicies();
        SyncDnsLearning();
        ControlPlaneChanged?.Invoke(ControlPlaneLocked());
    }

    /// <summary>The policy context with the names DNS answers showed (what toFQDNs selects).</summary>
    private PolicyContext Context() => PolicyContext.Of(cluster) with
    {
        LearntNames = learntNames.ToDictionary(kv => kv.Key, kv => (IReadOnlyList<IPAddress>)[.. kv.Value], StringComparer.Ordinal),
    };

    private IEnumerable<FqdnSelector> FqdnSelectors => cluster.Policies.SelectMany(p => p.Egress).SelectMany(r => r.Fqdns);

    /// <summary>A CIDR identity (/32, /128) for every learnt address a toFQDNs selector in force selects, as Cilium allocates them.</summary>
    private void SyncLearntIdentities()
    {
        var selectors = FqdnSelectors.Distinct().ToList();
        foreach (var (name, addrs) in learntNames)
            if (selectors.Any(f => f.Matches(name)))
                foreach (var ip in addrs)
                    ids.ForCidr(HostPrefix(ip));
    }

    /// <summary>
    /// While a policy has toFQDNs, the programs copy DNS answers into endpoints to the fx_dns ring (fx_dns_cfg[0]),
    /// and a thread learns names from them (<see cref="ProcessDnsAnswers"/>).
    /// </summary>
    private void SyncDnsLearning()
    {
        bool on = FqdnSelectors.Any();
        obj.Map("fx_dns_cfg").Update(0u, on ? 1u : 0u);
        if (!on || dnsThread is not null)
            return;
        dnsThread = new Thread(() =>
        {
            while (!dnsStop)
            {
                try
                {
                    ProcessDnsAnswers(100);
                }
                catch (ObjectDisposedException)
                {
                    return;
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    // learning stops; the datapath goes on (what it already learnt stays in force)
                    DnsError = e.Message;
                    return;
                }
            }
        }) { IsBackground = true, Name = "fx-dns" };
        dnsThread.Start();
    }

    /// <summary>Why learning names from DNS answers stopped; null while it runs (or never started).</summary>
    public string? DnsError { get; private set; }

    /// <summary>DNS answers read from the datapath so far, and addresses learnt from them (new name-address pairs).</summary>
    public (long Answers, long Learnt) DnsCounts => (Interlocked.Read(ref dnsAnswers), Interlocked.Read(ref dnsLearnt));

    /// <summary>The names learnt from DNS answers and their addresses (what toFQDNs selectors choose from).</summary>
    public IReadOnlyDictionary<string, IReadOnlyList<IPAddress>> LearntNames
    {
        get
        {
            lock (gate)
                return Context().LearntNames;
        }
    }

    /// <summary>
    /// Reads the DNS answers the programs copied (waiting up to <paramref name="timeoutMs"/> for one) and learns
    /// from each what Cilium's DNS proxy would: the answer's A/AAAA addresses for the name asked (and CNAME targets),
    /// when the lookup went through a port whose rules have DNS rules letting the name through, to a server that
    /// rule's peers select. Learnt addresses get CIDR identities and every toFQDNs selector matching the name selects
    /// them. Returns the number of name-address pairs newly learnt.
    /// </summary>
    public int ProcessDnsAnswers(int timeoutMs = 0)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        var got = new List<(DnsAnswer Hdr, byte[] Payload)>();
        lock (dnsGate)
        {
            // the handler copies each record into the list of the call that polls
            dnsReader ??= new RingBufferReader(obj.Map("fx_dns"), record =>
            {
                int size = System.Runtime.InteropServices.Marshal.SizeOf<DnsAnswer>();
                if (record.Length < size)
                    return;
                var hdr = System.Runtime.InteropServices.MemoryMarshal.Read<DnsAnswer>(record);
                int len = Math.Min(hdr.Len, record.Length - size);
                pendingDns?.Add((hdr, record.Slice(size, len).ToArray()));
            });
            pendingDns = got;
            dnsReader.Poll(timeoutMs);
            pendingDns = null;
        }
        var said = new List<string>();
        if (obj.Map("fx_dns_cfg").TryLookup<uint, uint>(1u, out var lost) && lost > dnsLostSeen)
        {
            said.Add($"toFQDNs: {lost - dnsLostSeen} DNS answers lost (the fx_dns ring was full): names in them were not learnt");
            dnsLostSeen = lost;
        }
        if (got.Count == 0)
        {
            foreach (var line in said)
                NameLearnt?.Invoke(line);
            return 0;
        }
        Interlocked.Add(ref dnsAnswers, got.Count);
        int learnt = 0;
        lock (gate)
        {
            if (disposed)
                return 0;
            foreach (var (hdr, payload) in got)
            {
                var ep = endpoints.Values.FirstOrDefault(e => e.Id == hdr.EndpointId);
                // over TCP a message is prefixed by its length (RFC 1035 4.2.2); one split across segments is not read
                var msg = payload.AsSpan();
                if (hdr.Proto == PolicyCompiler.Tcp)
                    msg = msg.Length < 2 ? [] : msg[2..Math.Min(msg.Length, 2 + (msg[0] << 8 | msg[1]))];
                if (ep.Pod is null || !DnsMessage.TryParseResponse(msg, out var question, out var addrs) || addrs.Count == 0)
                    continue;
                var server = MapAddress.To(hdr.Saddr, hdr.Family);
                if (!ProxyLetsThrough(ep.Pod, server, hdr.Proto, hdr.Sport, question))
                    continue;
                foreach (var a in addrs)
                {
                    if (!learntNames.TryGetValue(a.Name, out var set))
                        learntNames[a.Name] = set = new SortedSet<IPAddress>(AddressOrder.Instance);
                    if (set.Add(a.Address))
                    {
                        learnt++;
                        said.Add($"toFQDNs: learnt {a.Name} -> {a.Address} (TTL {a.Ttl} s) from {server}'s answer to {ep.Pod.FullName}");
                    }
                }
            }
            if (learnt > 0)
                Sync();
        }
        Interlocked.Add(ref dnsLearnt, learnt);
        foreach (var line in said)
            NameLearnt?.Invoke(line);
        return learnt;
    }

    private uint dnsLostSeen;

    /// <summary>Told each name-address pair learnt from a DNS answer, and DNS answers lost to a full ring (one line each; called outside the lock).</summary>
    public Action<string>? NameLearnt { get; set; }

    private List<(DnsAnswer Hdr, byte[] Payload)>? pendingDns;

    /// <summary>
    /// Whether Cilium's DNS proxy would have seen this lookup and let the name through: an egress allow rule of a
    /// policy selecting the pod has, on the server's port, DNS rules matching the name, and its peers select the server.
    /// </summary>
    private bool ProxyLetsThrough(PodSpec pod, IPAddress server, byte proto, ushort port, string name)
    {
        var labels = IdentityAllocator.PodLabels(pod);
        var serverId = IdentityOfAddress(server);
        var context = Context();
        foreach (var p in cluster.Policies.Where(p => PolicyCompiler.SelectsPod(p, pod, labels)))
        {
            foreach (var r in p.Egress)
            {
                bool dnsPort = r.Ports.Any(pp => pp.L7 == "dns" && pp.Dns.Any(d => d.Matches(name))
                    && (pp.Protocol.ToUpperInvariant() is "ANY" || PolicyCompiler.ProtocolNumber(pp.Protocol) == proto)
                    && (pp.Name is { } named
                        ? pods.Values.Any(x => x.NamedPorts.TryGetValue(named, out var np) && np.Port == port)
                        : pp.Port == 0 || pp.Port <= port && port <= Math.Max(pp.Port, pp.EndPort)));
                if (!dnsPort)
                    continue;
                var peers = PolicyCompiler.RulePeers(r, p.Clusterwide ? null : p.Namespace, ids, null, context);
                if (peers.Contains(0) || peers.Contains(serverId))
                    return true;
            }
        }
        return false;
    }

    /// <summary>The identity the ipcache gives an address: a pod's, the node's (host), the longest CIDR's, else world.</summary>
    private uint IdentityOfAddress(IPAddress ip)
    {
        if (pods.Values.FirstOrDefault(p => ip.Equals(p.Ip)) is { } pod)
            return ids.ForPod(pod).Id;
        if (cluster.Lab is { } lab && ip.Equals(lab.NodeIp))
            return (uint)ReservedIdentity.Host;
        var cidr = ids.All.Where(i => i.IsCidr && i.Cidr!.Value.Contains(ip)).MaxBy(i => i.Cidr!.Value.PrefixLength);
        return cidr?.Id ?? (uint)ReservedIdentity.World;
    }

    private sealed class AddressOrder : IComparer<IPAddress>
    {
        public static readonly AddressOrder Instance = new();

        public int Compare(IPAddress? x, IPAddress? y)
        {
            var a = x!.GetAddressBytes();
            var b = y!.GetAddressBytes();
            return a.Length != b.Length ? a.Length.CompareTo(b.Length) : a.AsSpan().SequenceCompareTo(b);
        }
    }

    private void SyncIpcache()
    {
        var map = obj.Map("fx_ipcache");
        var want = new Dictionary<string, (IpcacheKey Key, IpcacheValue Value)>(StringComparer.Ordinal);
        void Want(IpcacheKey k, IpcacheValue v) => want[KeyBytes(k)] = (k, v);
        foreach (var id in ids.All.Where(i => i.IsCidr))
            Want(IpcacheKey.Of(id.Cidr!.Value), new IpcacheValue { Identity = id.Id });
        if (cluster.Lab is { } lab)
            Want(IpcacheKey.Of(HostPrefix(lab.NodeIp)), new IpcacheValue { Identity = (uint)ReservedIdentity.Host });
        foreach (var pod in pods.Values.Where(p => p.Ip is not null))
        {
            ushort ep = endpoints.TryGetValue(pod.FullName, out var e) ? e.Id : (ushort)0;
            Want(IpcacheKey.Of(HostPrefix(pod.Ip!)), new IpcacheValue { Identity = ids.ForPod(pod).Id, EndpointId = ep });
        }
        foreach (var (k, v) in want.Values)
            map.Update(k, v);
        foreach (var (bytes, stale) in ipcacheKeys)
            if (!want.ContainsKey(bytes))
                map.Delete(stale);
        ipcacheKeys = want.ToDictionary(kv => kv.Key, kv => kv.Value.Key, StringComparer.Ordinal);
    }

    private void SyncServices()
    {
        var svcMap = obj.Map("fx_services");
        var beMap = obj.Map("fx_backends");
        var wantSvc = new Dictionary<string, (ServiceKey Key, Service Value)>(StringComparer.Ordinal);
        var wantBe = new Dictionary<BackendKey, Backend>();
        services.Clear();
        uint nextId = 1;
        foreach (var s in cluster.Services)
        {
            var members = pods.Values
                .Where(p => p.Namespace == s.Namespace && p.Ip is not null && s.Selector.Count > 0
                    && s.Selector.All(kv => p.Labels.TryGetValue(kv.Key, out var v) && v == kv.Value))
                .OrderBy(p => p.FullName, StringComparer.Ordinal)
                .Take(MapLimits.MaxBackendsPerService)
                .ToList();
            foreach (var port in s.Ports)
            {
                var proto = PolicyCompiler.ProtocolNumber(port.Protocol);
                // a named targetPort resolves per pod; a pod without that port name is no backend (as Kubernetes' endpoints);
                // a service without a selector has the addresses and ports of its Endpoints
                var backends = s.Selector.Count > 0
                    ? members
                        .Select(p => (Ip: p.Ip!, Target: port.TargetName is { } tn
                            ? p.NamedPorts.TryGetValue(tn, out var pp) ? pp.Port : 0
                            : port.TargetPort == 0 ? port.Port : port.TargetPort, Pod: (string?)p.FullName))
                        .Where(b => b.Target != 0)
                        .Select((b, i) => new BackendInfo(i, b.Ip, b.Target, b.Pod))
                        .ToList()
                    : s.Endpoints.Take(MapLimits.MaxBackendsPerService)
                        .Select(ip => (Ip: ip, Target: EndpointPort(s, port), Pod: pods.Values.FirstOrDefault(p => ip.Equals(p.Ip))?.FullName))
                        .Where(b => b.Target != 0)
                        .Select((b, i) => new BackendInfo(i, b.Ip, b.Target, b.Pod))
                        .ToList();
                // every address the service answers on at this port: its cluster IP, the node's address at
                // the node port, its load balancer addresses and external IPs; each is a frontend of its own
                var frontends = new List<(IPAddress Ip, int Port, string Kind)>();
                if (s.ClusterIp is { } cip)
                    frontends.Add((cip, port.Port, "ClusterIP"));
                if (port.NodePort != 0 && cluster.Lab is { } lab)
                    frontends.Add((lab.NodeIp, port.NodePort, "NodePort"));
                frontends.AddRange(s.LoadBalancerIps.Select(ip => (ip, port.Port, "LoadBalancer")));
                frontends.AddRange(s.ExternalIps.Select(ip => (ip, port.Port, "ExternalIP")));
                foreach (var (ip, fport, kind) in frontends)
                {
                    var id = nextId++;
                    services.Add(new ServiceInfo(id, s.Name, s.Namespace, ip, fport, port.Protocol.ToUpperInvariant(), backends) { FrontendType = kind });
                    var key = new ServiceKey { Addr = MapAddress.From(ip), Port = (ushort)fport, Proto = proto, Family = MapAddress.Family(ip) };
                    wantSvc[KeyBytes(key)] = (key, new Service { Id = id, Count = (ushort)backends.Count, AffinityTimeout = (uint)s.AffinityTimeoutSeconds });
                    foreach (var b in backends)
                        wantBe[new BackendKey { ServiceId = id, Slot = (uint)b.Slot }] = new Backend
                        {
                            Addr = MapAddress.From(b.Ip), Port = (ushort)b.Port, Family = MapAddress.Family(b.Ip),
                        };
                }
            }
        }
        // backends first, so that a service never counts a slot not yet written
        foreach (var (k, v) in wantBe)
            beMap.Update(k, v);
        foreach (var (k, v) in wantSvc.Values)
            svcMap.Update(k, v);
        foreach (var (bytes, stale) in serviceKeys)
            if (!wantSvc.ContainsKey(bytes))
                svcMap.Delete(stale);
        foreach (var stale in backendKeys.Where(k => !wantBe.ContainsKey(k)))
            beMap.Delete(stale);
        serviceKeys = wantSvc.ToDictionary(kv => kv.Key, kv => kv.Value.Key, StringComparer.Ordinal);
        backendKeys = [.. wantBe.Keys];
    }

    /// <summary>The backend port of a service without a selector: its Endpoints port of the same name (or its only one), else the target port.</summary>
    private static int EndpointPort(ServiceSpec s, ServicePort port) =>
        s.EndpointPorts.TryGetValue(port.Name ?? "", out var p) ? p
        : s.EndpointPorts.Count == 1 && s.Ports.Count == 1 ? s.EndpointPorts.Values.First()
        : port.TargetName is null ? port.TargetPort == 0 ? port.Port : port.TargetPort : 0;

    private void SyncPolicies()
    {
        var epMap = obj.Map("fx_endpoints");
        var polMap = obj.Map("fx_policy");
        compiled.Clear();
        var context = Context();
        var keys = new Dictionary<PolicyKey, (PolicyFlags Flags, SortedSet<PolicyRuleRef> Allows, SortedSet<PolicyRuleRef> Denies)>();
        void Add(string name, ushort id, CompiledEndpointPolicy c)
        {
            c = c with { Entries = [.. c.Entries.Select(e => e with { RuleId = RuleSetOf(e.Rules) })] };
            compiled[name] = c;
            foreach (var e in c.Entries)
            {
                foreach (var (port, bits) in PortBlocks(e.Protocol, e.Port, e.EndPort))
                {
                    var key = PolicyKey.Of(id, e.Direction, e.Identity, e.Protocol, port, bits);
                    var cur = keys.TryGetValue(key, out var k) ? k
                        : (Flags: PolicyFlags.None, Allows: new SortedSet<PolicyRuleRef>(PolicyRuleRef.Order), Denies: new SortedSet<PolicyRuleRef>(PolicyRuleRef.Order));
                    (e.Deny ? cur.Denies : cur.Allows).UnionWith(e.Rules);
                    keys[key] = (cur.Flags | (e.Allow ? PolicyFlags.Allow : 0) | (e.Deny ? PolicyFlags.Deny : 0), cur.Allows, cur.Denies);
                }
            }
        }
        foreach (var (name, (pod, ifindex, id)) in endpoints)
            Add(name, id, PolicyCompiler.Compile(pod, id, cluster.Policies, ids, context));
        // the host endpoint (Cilium's host firewall), while a host policy selects the lab's node
        ushort? hostId = null;
        if (cluster.Lab is not null && cluster.Policies.Any(p => PolicyCompiler.SelectsNode(p, cluster.NodeLabels)))
        {
            hostId = HostEndpointId();
            Add(PolicyCompiler.HostEndpointName, hostId.Value, PolicyCompiler.CompileHost(hostId.Value, cluster.Policies, ids, context));
        }
        // A longest-prefix match must never hide a deny: an allow inside a deny's range denies too (as Cilium's MapState folds them).
        foreach (var (key, v) in keys.ToList())
        {
            if ((v.Flags & PolicyFlags.Deny) != 0)
                continue;
            var covering = keys.Where(d => (d.Value.Flags & PolicyFlags.Deny) != 0 && d.Key.Covers(key)).OrderByDescending(d => d.Key.Prefixlen).FirstOrDefault();
            if (covering.Value.Denies is { } denies)
                keys[key] = (v.Flags | PolicyFlags.Deny, v.Allows, denies);
        }
        var want = keys.ToDictionary(kv => kv.Key, kv => new PolicyValue
        {
            Flags = kv.Value.Flags,
            ProtoGiven = kv.Key.Prefixlen > PolicyPrefix.AnyProto ? (byte)1 : (byte)0,
            RuleId = RuleSetOf([.. (kv.Value.Flags & PolicyFlags.Deny) != 0 ? kv.Value.Denies : kv.Value.Allows]),
        });
        foreach (var (k, v) in want)
        {
            // keep the hit counter of an entry that stays
            if (policyKeys.Contains(k) && polMap.TryLookup<PolicyKey, PolicyValue>(k, out var old) && old.Flags == v.Flags && old.RuleId == v.RuleId)
                continue;
            polMap.Update(k, v);
        }
        foreach (var stale in policyKeys.Where(k => !want.ContainsKey(k)))
            polMap.Delete(stale);
        policyKeys = [.. want.Keys];
        // endpoints last: a packet never sees an enforced endpoint without its entries
        foreach (var (name, (pod, ifindex, id)) in endpoints)
        {
            var c = compiled[name];
            var flags = (c.IngressEnforced ? EndpointFlags.IngressEnforced : 0) | (c.EgressEnforced ? EndpointFlags.EgressEnforced : 0)
                | (auditMode ? EndpointFlags.Audit : 0);
            epMap.Update((uint)ifindex, new Endpoint
            {
                Addr = MapAddress.From(pod.Ip!), Identity = ids.ForPod(pod).Id, Id = id, Family = MapAddress.Family(pod.Ip!), Flags = flags,
            });
        }
        if (hostId is { } hid)
        {
            var c = compiled[PolicyCompiler.HostEndpointName];
            var flags = (c.IngressEnforced ? EndpointFlags.IngressEnforced : 0) | (c.EgressEnforced ? EndpointFlags.EgressEnforced : 0)
                | (auditMode ? EndpointFlags.Audit : 0);
            var node = cluster.Lab!.NodeIp;
            epMap.Update(HostEndpointKey, new Endpoint
            {
                Addr = MapAddress.From(node), Identity = (uint)ReservedIdentity.Host, Id = hid, Family = MapAddress.Family(node), Flags = flags,
            });
            hostProgrammed = true;
        }
        else if (hostProgrammed)
        {
            epMap.Delete(HostEndpointKey);
            hostProgrammed = false;
        }
    }

    /// <summary>The key of the host endpoint in fx_endpoints (FX_HOST_EP_IFINDEX: no device has ifindex 0).</summary>
    private const uint HostEndpointKey = 0;

    private bool hostProgrammed;

    /// <summary>The host endpoint's id: allocated once, beside the pods' (never one of theirs).</summary>
    private ushort HostEndpointId()
    {
        if (!endpointIds.TryGetValue(PolicyCompiler.HostEndpointName, out var id))
            endpointIds[PolicyCompiler.HostEndpointName] = id = (ushort)(endpointIds.Count == 0 ? 1 : endpointIds.Values.Max() + 1);
        return id;
    }

    /// <summary>
    /// The host endpoint (Cilium's host firewall) while a host policy selects the lab's node: its id, and whether
    /// its ingress and egress are enforced; null when no host policy selects the node.
    /// </summary>
    public (ushort Id, bool IngressEnforced, bool EgressEnforced)? HostEndpoint
    {
        get
        {
            lock (gate)
                return compiled.TryGetValue(PolicyCompiler.HostEndpointName, out var c) && endpointIds.TryGetValue(PolicyCompiler.HostEndpointName, out var id)
                    ? (id, c.IngressEnforced, c.EgressEnforced) : null;
        }
    }

    /// <summary>
    /// A port range as the aligned power-of-two blocks an LPM trie can hold: (first
    /// port, prefix bits); a single port is one block of 16 bits, any port (0) none
    /// of 0 bits, and protocol 0 no port at all.
    /// </summary>
    /// <summary>The policy map keys a compiled entry was written as.</summary>
    private static IEnumerable<PolicyKey> KeysOf(PolicyEntry e) =>
        PortBlocks(e.Protocol, e.Port, e.EndPort).Select(b => PolicyKey.Of(e.EndpointId, e.Direction, e.Identity, e.Protocol, b.Port, b.Bits));

    internal static IEnumerable<(ushort Port, int Bits)> PortBlocks(byte proto, ushort port, ushort end)
    {
        if (proto == 0 || port == 0 && end == 0)
        {
            yield return (0, 0);
            yield break;
        }
        if (end <= port)
        {
            yield return (port, 16);
            yield break;
        }
        int lo = port;
        while (lo <= end)
        {
            int size = 1;
            while (lo % (size * 2) == 0 && lo + size * 2 - 1 <= end && size < 65536)
                size *= 2;
            yield return ((ushort)lo, 16 - System.Numerics.BitOperations.Log2((uint)size));
            lo += size;
        }
    }

    /// <summary>The id of a set of rules (allocated on first sight, from 1; 0 means no rule).</summary>
    private uint RuleSetOf(IReadOnlyList<PolicyRuleRef> rules)
    {
        if (rules.Count == 0)
            return 0;
        var key = string.Join('\n', rules.Select(r => $"{r.Kind}\t{r.Namespace}\t{r.Name}\t{r.Path}"));
        if (!ruleSets.TryGetValue(key, out var set))
        {
            ruleSets[key] = set = new PolicyRuleSet((uint)ruleSets.Count + 1, rules);
            ruleSetsById[set.Id] = set;
        }
        return set.Id;
    }

    /// <summary>
    /// The rules behind the id a verdict or policy drop carries (fx_policy_value.rule_id); empty for 0 (no
    /// rule decided: default deny) and for an id this datapath never gave. Thread-safe: ids are never reused.
    /// </summary>
    public IReadOnlyList<PolicyRuleRef> RulesOf(uint ruleId) =>
        ruleSetsById.TryGetValue(ruleId, out var set) ? set.Rules : [];

    private static string KeyBytes<T>(in T key) where T : unmanaged =>
        Convert.ToHexString(System.Runtime.InteropServices.MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in key)));

    private static IPNetwork HostPrefix(IPAddress ip) => new(ip, PolicyCompiler.IsV4(ip) ? 32 : 128);

    /// <summary>
    /// The maps that hold the datapath's state, which <see cref="PinStateMaps"/> pins so that another process
    /// (a recorder attaching to a running datapath) can read them. The ring buffer is not among them: it has
    /// one consumer position, and a second reader would take records from the owner (docs/monitor.md).
    /// </summary>
    public static IReadOnlyList<string> StateMaps { get; } =
        ["fx_ipcache", "fx_endpoints", "fx_policy", "fx_ct", "fx_services", "fx_backends", "fx_lb_flows", "fx_snat", "fx_nat_cfg", EventChannel.StatsMap, "fx_ct_stats", "fx_ct_closed"];

    /// <summary>One of the maps that hold the datapath's state (<see cref="StateMaps"/>): fx_ct for the recorder's flows table.</summary>
    public BpfMap StateMap(string name)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (!StateMaps.Contains(name))
            throw new ArgumentException($"{name} is not one of the datapath's state maps", nameof(name));
        return obj.Map(name);
    }

    /// <summary>Pins every state map in <paramref name="dir"/> (bpffs), one file per map named as the map.</summary>
    public void PinStateMaps(string dir)
    {
        ArgumentNullException.ThrowIfNull(dir);
        ObjectDisposedException.ThrowIf(disposed, this);
        Directory.CreateDirectory(dir);
        lock (gate)
        {
            foreach (var name in StateMaps)
            {
                var path = Path.Combine(dir, name);
                File.Delete(path); // a pin left by an owner that was killed
                obj.Map(name).Pin(path);
            }
        }
    }

    /// <summary>
    /// Called (under the datapath's lock) with the control plane's state after every change to it: what a reader
    /// of the pinned maps needs besides them (see <see cref="ControlPlane"/>).
    /// </summary>
    public Action<DatapathSnapshot>? ControlPlaneChanged { get; set; }

    /// <summary>
    /// What the control plane holds and the maps do not: endpoints with their pods, identities with their labels,
    /// policies as given and as compiled (without hit counts), services with their names and backends' pods. The
    /// kernel's tables (ipcache, conntrack, NAT) are empty; <see cref="ReadKernelTables"/> fills them.
    /// </summary>
    public DatapathSnapshot ControlPlane()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        lock (gate)
            return ControlPlaneLocked();
    }

    private DatapathSnapshot ControlPlaneLocked()
    {
        var eps = endpoints.Values
            .OrderBy(e => e.Id)
            .Select(e => new EndpointInfo(e.Id, e.Pod.Name, e.Pod.Namespace, e.Pod.Ip!, ids.ForPod(e.Pod).Id, e.Ifindex,
                compiled[e.Pod.FullName].IngressEnforced, compiled[e.Pod.FullName].EgressEnforced))
            .ToList();
        var identities = ids.All
            .Select(i => new IdentityInfo(i.Id, i.Labels, i.IsReserved ? "reserved" : i.IsCidr ? "cidr" : "workload"))
            .ToList();
        var entries = compiled.Values.SelectMany(c => c.Entries)
            .OrderBy(e => e.EndpointId).ThenBy(e => e.Direction).ThenBy(e => e.Identity).ThenBy(e => e.Protocol).ThenBy(e => e.Port)
            .ToList();
        var policies = cluster.Policies.Select(p => new PolicyInfo(p.Name, p.Namespace, p.SourceText)).ToList();
        return new DatapathSnapshot(DateTimeOffset.UtcNow, eps, identities, [], policies, entries, [.. services], [], [])
        {
            Rules = [.. ruleSets.Values.OrderBy(r => r.Id)],
        };
    }

    /// <summary>Everything the datapath holds now: endpoints, identities, policies, services, conntrack and NAT tables.</summary>
    public DatapathSnapshot Snapshot()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        lock (gate)
            return ReadKernelTables(ControlPlaneLocked(), obj.Map);
    }

    /// <summary>
    /// The control plane's state completed from the maps: the ipcache, each policy entry's hits, conntrack and the
    /// NAT tables. The same code reads this process's maps and another process's pinned ones.
    /// </summary>
    public static DatapathSnapshot ReadKernelTables(DatapathSnapshot controlPlane, Func<string, BpfMap> map)
    {
        ArgumentNullException.ThrowIfNull(controlPlane);
        ArgumentNullException.ThrowIfNull(map);
        var ipcache = map("fx_ipcache").Entries<IpcacheKey, IpcacheValue>()
            .Select(kv => new IpcacheInfo($"{MapAddress.To(kv.Key.Addr, kv.Key.Family)}/{kv.Key.Prefixlen - 32}", kv.Value.Identity, kv.Value.EndpointId))
            .OrderBy(i => i.Prefix, StringComparer.Ordinal)
            .ToList();
        var polMap = map("fx_policy");
        // an entry is one or more keys of the LPM trie (a port range is blocks of ports): its hits are theirs
        var entries = controlPlane.PolicyEntries
            .Select(e => e with
            {
                Hits = KeysOf(e).Aggregate(0UL, (sum, k) => sum + (polMap.TryLookup<PolicyKey, PolicyValue>(k, out var v) ? v.Hits : 0)),
            })
            .ToList();
        var ct = map("fx_ct").Entries<CtKey, CtEntry>()
            .Select(kv => new ConntrackInfo(
                MapAddress.To(kv.Key.Saddr, kv.Key.Family), kv.Key.Sport, MapAddress.To(kv.Key.Daddr, kv.Key.Family), kv.Key.Dport,
                kv.Key.Proto, kv.Key.Dir, kv.Value.EndpointId, kv.Value.RemoteIdentity, kv.Value.Match, kv.Value.Flags,
                kv.Value.Packets + kv.Value.RevPackets, kv.Value.Bytes + kv.Value.RevBytes, kv.Value.CreatedNs, kv.Value.LastNs, kv.Value.ServiceId,
                (kv.Value.Flags & CtFlags.RevDnat) != 0 ? MapAddress.To(kv.Value.NatAddr, kv.Key.Family) : null,
                (kv.Value.Flags & CtFlags.RevDnat) != 0 ? kv.Value.NatPort : 0))
            .OrderBy(c => c.CreatedNs)
            .ToList();
        var nat = map("fx_snat").Entries<CtKey, NatEntry>()
            .Select(kv => new NatInfo(kv.Key.Dir == Dir.Egress ? "snat" : "rev-snat",
                MapAddress.To(kv.Key.Saddr, kv.Key.Family), kv.Key.Sport, MapAddress.To(kv.Key.Daddr, kv.Key.Family), kv.Key.Dport,
                kv.Key.Proto, MapAddress.To(kv.Value.Addr, kv.Key.Family), kv.Value.Port, 0, kv.Value.CreatedNs))
            .Concat(map("fx_lb_flows").Entries<CtKey, LbFlow>()
                .Select(kv => new NatInfo("lb",
                    MapAddress.To(kv.Key.Saddr, kv.Key.Family), kv.Key.Sport, MapAddress.To(kv.Key.Daddr, kv.Key.Family), kv.Key.Dport,
                    kv.Key.Proto, MapAddress.To(kv.Value.Addr, kv.Key.Family), kv.Value.Port, kv.Value.ServiceId, 0)))
            .ToList();
        return controlPlane with { Taken = DateTimeOffset.UtcNow, Ipcache = ipcache, PolicyEntries = entries, Conntrack = ct, Nat = nat };
    }

    public void Dispose()
    {
        // the DNS thread takes the lock to learn: stop it first
        dnsStop = true;
        dnsThread?.Join(TimeSpan.FromSeconds(5));
        lock (dnsGate)
        {
            dnsReader?.Dispose();
            dnsReader = null;
        }
        lock (gate)
        {
            if (disposed)
                return;
            disposed = true;
            foreach (var l in links)
                l.Dispose();
            links.Clear();
            obj.Dispose();
        }
    }
}
