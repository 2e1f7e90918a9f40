using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Forensics.Datapath;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Bpf;
using Forensics.Datapath.Control;
using Forensics.Tests;
using static Forensics.Kernel.Tests.TestCluster;

namespace Forensics.Kernel.Tests;

/// <summary>Runs code on a thread that has joined a named network namespace.</summary>
internal static partial class Netns
{
    private const int CloneNewnet = 0x40000000;

    [DllImport("libc", SetLastError = true)]
#pragma warning disable SYSLIB1054, CA5392 // a test-only call; tests do not allow unsafe code
    private static extern int setns(int fd, int nstype);
#pragma warning restore SYSLIB1054, CA5392

    public static T Run<T>(string name, Func<T> action)
    {
        T result = default!;
        Exception? error = null;
        var t = new Thread(() =>
        {
            try
            {
                using var ns = File.OpenHandle($"/run/netns/{name}");
                if (setns((int)ns.DangerousGetHandle(), CloneNewnet) != 0)
                    throw new InvalidOperationException($"setns({name}): errno {Marshal.GetLastPInvokeError()}");
                result = action();
            }
            catch (Exception e)
            {
                error = e;
            }
        });
        t.Start();
        if (!t.Join(TimeSpan.FromSeconds(30)))
            throw new TimeoutException($"netns {name}: action did not finish");
        if (error is not null)
            throw new InvalidOperationException($"in netns {name}: {error.Message}", error);
        return result;
    }
}

/// <summary>
/// Real traffic: two pod namespaces behind a node namespace that routes
/// between them, the datapath attached (tcx) to the node-side veths; one TCP
/// connect the policy allows, one it drops, events read from the ring buffer.
/// </summary>
public class DatapathTrafficTests
{
    [KernelFact]
    public void TcpConnect_PolicyAllowsOnePort_OneConnectsOtherDroppedWithEvents()
    {
        Prerequisites.EnsureKernelAccess();
        var tag = Topology.NewTag();
        var client = Pod("client", "default", "10.250.0.10", ("app", "client"));
        var server = Pod("server", "default", "10.250.0.11", ("app", "server"));
        var policy = Policy("server-8080", Sel(("app", "server")),
            ingress: [Rule(endpoints: [Sel(("app", "client"))], ports: [new PortProtocol(8080, "TCP")])]);
        var cluster = new ClusterSpec("traffic.yaml", null, [client, server], [], [policy]);
        using var topo = new Topology(tag, [client, server]);
        {
            string node = topo.Node, nsA = topo.PodNs[0], nsB = topo.PodNs[1];
            string vethA = topo.PodVeth[0], vethB = topo.PodVeth[1];
            using var dp = Datapath.Control.LoadedDatapath.Load(cluster, new EventOptions { RingBytes = 1 << 20, Snaplen = 0 });
            var events = new List<byte[]>();
            using var reader = new RingBufferReader(dp.EventsMap, r => events.Add(r.ToArray()));
            int ifA = Sh.Ifindex(vethA, node), ifB = Sh.Ifindex(vethB, node);
            Netns.Run(node, () => (dp.AttachEndpoint(client, ifA), dp.AttachEndpoint(server, ifB)));
            using var listeners = Netns.Run(nsB, () => new Listeners(8080, 9090));

            bool allowed = Netns.Run(nsA, () => TryConnect("10.250.0.11", 8080, TimeSpan.FromSeconds(5)));
            bool dropped = !Netns.Run(nsA, () => TryConnect("10.250.0.11", 9090, TimeSpan.FromSeconds(2)));
            var deadline = Stopwatch.StartNew();
            while (deadline.Elapsed < TimeSpan.FromSeconds(3) && !events.Any(e => EventReader.Header(e).Kind == EventKind.Drop))
                reader.Poll(100);
            reader.Consume();

            Assert.True(allowed, "connect to 8080 should succeed");
            Assert.True(dropped, "connect to 9090 should be dropped");
            Assert.Equal(1, listeners.Accepted(8080, atLeast: 1));
            Assert.Equal(0, listeners.Accepted(9090));
            var clientId = dp.IdentityOf(client).Id;
            var verdicts = events.Where(e => EventReader.Header(e).Kind == EventKind.Policy).Select(e => EventReader.Read<PolicyEvent>(e)).ToList();
            var allow = Assert.Single(verdicts, v => v.Tuple.Dport == 8080);
            Assert.Equal((VerdictAction.Allow, PolicyMatch.L3L4, clientId, Dir.Ingress, (uint)ifB), (allow.Action, allow.Match, allow.RemoteIdentity, allow.Meta.Direction, allow.Meta.Ifindex));
            Assert.All(verdicts.Where(v => v.Tuple.Dport == 9090), v => Assert.Equal(VerdictAction.Deny, v.Action));
            var drops = events.Where(e => EventReader.Header(e).Kind == EventKind.Drop).Select(e => EventReader.Read<DropEvent>(e)).ToList();
            Assert.NotEmpty(drops);
            Assert.All(drops, d =>
            {
                Assert.Equal((ushort)DropReason.Policy, d.Reason);
                Assert.Equal(9090, d.Tuple.Dport);
                Assert.Equal("10.250.0.10", EventReader.Source(d.Tuple).ToString());
                Assert.Equal((uint)ifB, d.Meta.Ifindex);
                Assert.Equal(clientId, d.Meta.SrcIdentity);
            });
            var traces = events.Where(e => EventReader.Header(e).Kind == EventKind.Trace).Select(e => EventReader.Read<TraceEvent>(e)).ToList();
            Assert.Contains(traces, t => t.Meta.ObsPoint == ObsPoint.FromEndpoint && t.Meta.Ifindex == (uint)ifA && t.Tuple.Dport == 8080 && t.CtState == CtState.New);
            Assert.Contains(traces, t => t.Meta.ObsPoint == ObsPoint.FromEndpoint && t.Meta.Ifindex == (uint)ifB && t.Tuple.Sport == 8080 && t.CtState == CtState.Reply);
            Assert.Contains(traces, t => t.Meta.ObsPoint == ObsPoint.ToEndpoint && t.Meta.Ifindex == (uint)ifA && t.Tuple.Sport == 8080 && t.CtState == CtState.Reply);
            Assert.Contains(dp.Snapshot().Conntrack, c => c.DestinationPort == 8080 && c.Direction == Dir.Ingress && c.Packets >= 3);
        }
        topo.Dispose();
        Assert.DoesNotContain(tag, Sh.Run("ip", "netns", "list"), StringComparison.Ordinal);
        Assert.DoesNotContain($"fxd{tag}", Sh.Run("ip", "link"), StringComparison.Ordinal);
    }

    [KernelFact]
    public void ServiceAndOutsideWorld_RealTcp_DnatToBackendAndSnatToNodeAddress()
    {
        Prerequisites.EnsureKernelAccess();
        var tag = Topology.NewTag();
        var client = Pod("xwing", "default", "10.250.0.10", ("class", "xwing"));
        var server = Pod("deathstar-1", "default", "10.250.0.11", ("class", "deathstar"));
        var lab = new LabSpec("t", IPNetwork.Parse("10.250.0.0/24"), IPNetwork.Parse("10.96.0.0/16"), IPAddress.Parse(Topology.NodeIp), [], []);
        var svc = new ServiceSpec("deathstar", "default", IPAddress.Parse("10.96.0.50"), new Dictionary<string, string> { ["class"] = "deathstar" },
            [new ServicePort(80, 8080, "TCP")]);
        var cluster = new ClusterSpec("traffic.yaml", lab, [client, server], [svc], []);
        using var topo = new Topology(tag, [client, server], world: true);
        using var dp = Datapath.Control.LoadedDatapath.Load(cluster, new EventOptions { RingBytes = 1 << 20, Snaplen = 0 });
        var events = new List<byte[]>();
        using var reader = new RingBufferReader(dp.EventsMap, r => events.Add(r.ToArray()));
        int ifA = Sh.Ifindex(topo.PodVeth[0], topo.Node), ifB = Sh.Ifindex(topo.PodVeth[1], topo.Node), ifW = Sh.Ifindex(topo.WorldVeth!, topo.Node);
        Netns.Run(topo.Node, () =>
        {
            dp.AttachEndpoint(client, ifA);
            dp.AttachEndpoint(server, ifB);
            dp.AttachNetworkDevice(ifW);
            return 0;
        });
        using var backend = Netns.Run(topo.PodNs[1], () => new Listeners(8080));
        using var world = Netns.Run(topo.WorldNs!, () => new Listeners(443));

        var viaService = Netns.Run(topo.PodNs[0], () => ConnectAndName("10.96.0.50", 80));
        var outside = Netns.Run(topo.PodNs[0], () => ConnectAndName(Topology.WorldIp, 443));
        reader.Consume();

        Assert.True("10.96.0.50:80" == viaService, $"via service: {viaService}; events:\n{Describe(events)}"); // the client saw the service answer
        Assert.Equal($"{Topology.WorldIp}:443", outside);
        Assert.Equal(1, backend.Accepted(8080, atLeast: 1));
        Assert.Equal(1, world.Accepted(443, atLeast: 1));
        Assert.Equal(IPAddress.Parse(Topology.NodeIp), world.LastPeer(443)!.Address); // masqueraded
        var nats = events.Where(e => EventReader.Header(e).Kind == EventKind.Nat).Select(e => EventReader.Read<NatEvent>(e)).ToList();
        var dnat = Assert.Single(nats, n => n.NatKind == NatKind.Dnat);
        Assert.Equal(("10.96.0.50:80", "10.250.0.11:8080"), (Pkt.D(dnat.Orig), Pkt.D(dnat.Xlated)));
        var rdnat = Assert.Single(nats, n => n.NatKind == NatKind.RevDnat);
        Assert.Equal(("10.250.0.11:8080", "10.96.0.50:80"), (Pkt.S(rdnat.Orig), Pkt.S(rdnat.Xlated)));
        var snat = Assert.Single(nats, n => n.NatKind == NatKind.Snat);
        Assert.Equal(("10.250.0.10", Topology.NodeIp), (EventReader.Source(snat.Orig).ToString(), EventReader.Source(snat.Xlated).ToString()));
        Assert.Equal((uint)ifW, snat.Meta.Ifindex);
        var rsnat = Assert.Single(nats, n => n.NatKind == NatKind.RevSnat);
        Assert.Equal(Pkt.S(snat.Xlated), Pkt.D(rsnat.Orig));
        Assert.Equal(Pkt.S(snat.Orig), Pkt.D(rsnat.Xlated));
        Assert.Equal(dnat.ServiceId, dp.Snapshot().Services.Single().Id);
        Assert.DoesNotContain(events, e => EventReader.Header(e).Kind == EventKind.Drop);
        Assert.DoesNotContain(events, e => EventReader.Header(e).Kind == EventKind.Capture); // snaplen 0: capture off
    }

    private static string Describe(List<byte[]> events) => string.Join('\n', events.Select(e =>
    {
        var h = EventReader.Header(e);
        return h.Kind switch
        {
            EventKind.Trace => $"trace {EventReader.Read<TraceEvent>(e).Meta.ObsPoint} if{EventReader.Read<TraceEvent>(e).Meta.Ifindex} {Pkt.S(EventReader.Read<TraceEvent>(e).Tuple)} -> {Pkt.D(EventReader.Read<TraceEvent>(e).Tuple)} ct {EventReader.Read<TraceEvent>(e).CtState} flags {EventReader.Read<TraceEvent>(e).Tuple.TcpFlags:x}",
            EventKind.Drop => $"drop {EventReader.Read<DropEvent>(e).Reason} {Pkt.S(EventReader.Read<DropEvent>(e).Tuple)} -> {Pkt.D(EventReader.Read<DropEvent>(e).Tuple)}",
            EventKind.Nat => $"nat {EventReader.Read<NatEvent>(e).NatKind} {Pkt.S(EventReader.Read<NatEvent>(e).Orig)} -> {Pkt.D(EventReader.Read<NatEvent>(e).Orig)} => {Pkt.S(EventReader.Read<NatEvent>(e).Xlated)} -> {Pkt.D(EventReader.Read<NatEvent>(e).Xlated)}",
            _ => h.Kind.ToString(),
        };
    }));

    /// <summary>Connects from the calling thread's namespace; "ip:port" of the peer as the socket sees it, or null.</summary>
    private static string? ConnectAndName(string ip, int port)
    {
        using var c = new TcpClient(AddressFamily.InterNetwork);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        try
        {
            c.ConnectAsync(IPAddress.Parse(ip), port, cts.Token).AsTask().GetAwaiter().GetResult();
            return c.Client.RemoteEndPoint?.ToString();
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException)
        {
            return "failed: " + e.Message;
        }
    }

    private static bool TryConnect(string ip, int port, TimeSpan timeout)
    {
        using var c = new TcpClient();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            c.ConnectAsync(IPAddress.Parse(ip), port, cts.Token).AsTask().GetAwaiter().GetResult();
            return c.Connected;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    /// <summary>
    /// A node namespace routing between pod namespaces (fxd-TAG-podN, veths
    /// fxdTAGhN on the node side, gateway 169.254.1.1 as Cilium's pods have) and
    /// optionally an outside-world host on TEST-NET behind the node's device.
    /// Disposing deletes the namespaces, which deletes the veths.
    /// </summary>
    internal sealed class Topology : IDisposable
    {
        public const string NodeIp = "192.0.2.1";
        public const string WorldIp = "198.51.100.10";
        private readonly List<string> made = [];

        public static string NewTag() => Random.Shared.Next(0x1000, 0xffff).ToString("x4", System.Globalization.CultureInfo.InvariantCulture);

        public Topology(string tag, IReadOnlyList<PodSpec> pods, bool world = false)
        {
            Node = $"fxd-{tag}-node";
            try
            {
                Add(Node);
                Sh.Run("ip", "-n", Node, "link", "set", "lo", "up");
                Sh.Run("ip", "netns", "exec", Node, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1");
                for (int i = 0; i < pods.Count; i++)
                {
                    string ns = $"fxd-{tag}-pod{i}", veth = $"fxd{tag}h{i}";
                    Add(ns);
                    PodNs.Add(ns);
                    PodVeth.Add(veth);
                    Sh.Run("ip", "-n", Node, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns);
                    Sh.Run("ip", "-n", ns, "link", "set", "lo", "up");
                    Sh.Run("ip", "-n", ns, "addr", "add", $"{pods[i].Ip}/32", "dev", "eth0");
                    Sh.Run("ip", "-n", ns, "link", "set", "eth0", "up");
                    Sh.Run("ip", "-n", ns, "route", "add", "169.254.1.1", "dev", "eth0");
                    Sh.Run("ip", "-n", ns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0");
                    Sh.Run("ip", "-n", Node, "addr", "add", "169.254.1.1/32", "dev", veth);
                    Sh.Run("ip", "-n", Node, "link", "set", veth, "up");
                    Sh.Run("ip", "-n", Node, "route", "add", $"{pods[i].Ip}/32", "dev", veth);
                }
                if (world)
                {
                    WorldNs = $"fxd-{tag}-world";
                    WorldVeth = $"fxd{tag}hw";
                    Add(WorldNs);
                    Sh.Run("ip", "-n", Node, "link", "add", WorldVeth, "type", "veth", "peer", "name", "eth0", "netns", WorldNs);
                    Sh.Run("ip", "-n", WorldNs, "link", "set", "lo", "up");
                    Sh.Run("ip", "-n", WorldNs, "addr", "add", $"{WorldIp}/32", "dev", "eth0");
                    Sh.Run("ip", "-n", WorldNs, "link", "set", "eth0", "up");
                    Sh.Run("ip", "-n", WorldNs, "route", "add", $"{NodeIp}/32", "dev", "eth0");
                    Sh.Run("ip", "-n", Node, "addr", "add", $"{NodeIp}/32", "dev", WorldVeth);
                    Sh.Run("ip", "-n", Node, "link", "set", WorldVeth, "up");
                    Sh.Run("ip", "-n", Node, "route", "add", $"{WorldIp}/32", "dev", WorldVeth);
                }
            }
            catch
            {
                Dispose();
                throw;
            }
        }

        public string Node { get; }
        public List<string> PodNs { get; } = [];
        public List<string> PodVeth { get; } = [];
        public string? WorldNs { get; }
        public string? WorldVeth { get; }

        private void Add(string ns)
        {
            Sh.Run("ip", "netns", "add", ns);
            made.Add(ns);
        }

        public void Dispose()
        {
            foreach (var ns in made)
                Sh.TryRun("ip", "netns", "del", ns);
            made.Clear();
        }
    }

    /// <summary>TCP listeners created in the calling thread's namespace, counting accepted connections.</summary>
    private sealed class Listeners : IDisposable
    {
        private readonly Dictionary<int, TcpListener> listeners = [];
        private readonly Dictionary<int, int> accepted = [];
        private readonly Dictionary<int, IPEndPoint?> lastPeer = [];
        private readonly CancellationTokenSource stop = new();

        public Listeners(params int[] ports)
        {
            foreach (var port in ports)
            {
                var l = new TcpListener(IPAddress.Any, port);
                l.Start();
                listeners[port] = l;
                accepted[port] = 0;
                _ = AcceptLoop(port, l);
            }
        }

        private async Task AcceptLoop(int port, TcpListener l)
        {
            try
            {
                while (!stop.IsCancellationRequested)
                {
                    using var s = await l.AcceptSocketAsync(stop.Token);
                    lock (accepted)
                    {
                        accepted[port]++;
                        lastPeer[port] = s.RemoteEndPoint as IPEndPoint;
                    }
                }
            }
            catch (OperationCanceledException)
            {
            }
            catch (SocketException)
            {
            }
            catch (ObjectDisposedException)
            {
            }
        }

        public IPEndPoint? LastPeer(int port)
        {
            lock (accepted)
                return lastPeer.GetValueOrDefault(port);
        }

        public int Accepted(int port)
        {
            lock (accepted)
                return accepted[port];
        }

        /// <summary>
        /// The connections accepted on a port, once there are at least <paramref name="atLeast"/> or the time is up:
        /// a client's connect() returns at the SYN-ACK, before the accept loop (a thread-pool continuation) has run.
        /// </summary>
        public int Accepted(int port, int atLeast)
        {
            var sw = Stopwatch.StartNew();
            while (Accepted(port) < atLeast && sw.Elapsed < TimeSpan.FromSeconds(10))
                Thread.Sleep(20);
            return Accepted(port);
        }

        public void Dispose()
        {
            stop.Cancel();
            foreach (var l in listeners.Values)
                l.Stop();
            stop.Dispose();
        }
    }
}
