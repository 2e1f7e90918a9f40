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
        var tag = Random.Shared.Next(0x1000, 0xffff).ToString("x4", System.Globalization.CultureInfo.InvariantCulture);
        string node = $"fxd-node-{tag}", nsA = $"fxd-a-{tag}", nsB = $"fxd-b-{tag}";
        string vethA = $"fxd{tag}ha", vethB = $"fxd{tag}hb";
        var client = Pod("client", "default", "10.250.0.10", ("app", "client"));
        var server = Pod("server", "default", "10.250.0.11", ("app", "server"));
        var policy = Policy("server-8080", Sel(("app", "server")),
            ingress: [Rule(endpoints: [Sel(("app", "client"))], ports: [new PortProtocol(8080, "TCP")])]);
        var cluster = new ClusterSpec("traffic.yaml", null, [client, server], [], [policy]);
        var made = new List<string>();
        try
        {
            foreach (var ns in new[] { node, nsA, nsB })
            {
                Sh.Run("ip", "netns", "add", ns);
                made.Add(ns);
            }
            // the node needs lo up and an address on its veths to resolve neighbours
            Sh.Run("ip", "-n", node, "link", "set", "lo", "up");
            Sh.Run("ip", "netns", "exec", node, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1");
            foreach (var (ns, veth, pod) in new[] { (nsA, vethA, client), (nsB, vethB, server) })
            {
                Sh.Run("ip", "-n", node, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns);
                Sh.Run("ip", "-n", ns, "link", "set", "lo", "up");
                Sh.Run("ip", "-n", ns, "addr", "add", $"{pod.Ip}/32", "dev", "eth0");
                Sh.Run("ip", "-n", ns, "link", "set", "eth0", "up");
                Sh.Run("ip", "-n", ns, "route", "add", "default", "dev", "eth0");
                Sh.Run("ip", "-n", node, "addr", "add", "169.254.1.1/32", "dev", veth);
                Sh.Run("ip", "-n", node, "link", "set", veth, "up");
                Sh.Run("ip", "-n", node, "route", "add", $"{pod.Ip}/32", "dev", veth);
                Sh.Run("ip", "netns", "exec", node, "sysctl", "-q", "-w", $"net.ipv4.conf.{veth}.proxy_arp=1");
            }

            using var dp = Datapath.Control.Datapath.Load(cluster, new EventOptions { RingBytes = 1 << 20, Snaplen = 0 });
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
            Assert.Equal(1, listeners.Accepted(8080));
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
        finally
        {
            foreach (var ns in made)
                Sh.TryRun("ip", "netns", "del", ns);
        }
        var left = Sh.Run("ip", "netns", "list");
        Assert.DoesNotContain(tag, left, StringComparison.Ordinal);
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

    /// <summary>TCP listeners created in the calling thread's namespace, counting accepted connections.</summary>
    private sealed class Listeners : IDisposable
    {
        private readonly Dictionary<int, TcpListener> listeners = [];
        private readonly Dictionary<int, int> accepted = [];
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
                        accepted[port]++;
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

        public int Accepted(int port)
        {
            lock (accepted)
                return accepted[port];
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
