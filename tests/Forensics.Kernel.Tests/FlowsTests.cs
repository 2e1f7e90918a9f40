using System.Diagnostics;
using System.Globalization;
using Forensics.Datapath;
using Forensics.Datapath.Control;
using Forensics.Datapath.Lab;
using Forensics.Recorder;
using Forensics.Recorder.Sources;
using Forensics.Tests;

namespace Forensics.Kernel.Tests;

/// <summary>
/// Issue 18: the flows table's packets and bytes are what the traffic really was. TCP and UDP, both directions,
/// through real veths: what a generator in the client's and the server's network namespaces sent (each namespace's
/// own IP counters: datagrams, segments and IP bytes out and in) equals the recorded rows, from our datapath's
/// conntrack entries at both endpoints, and from the kernel's conntrack accounting on a node without our datapath.
/// </summary>
[Collection("lab")]
public class FlowsTests
{
    private const int TcpPort = 7070, UdpPort = 7071;
    private const int Up = 300_000, Down = 120_000, Datagrams = 20, DatagramBytes = 700, Replies = 7, ReplyBytes = 1200;

    /// <summary>Packets and IP bytes a network namespace sent and received (its /proc/net/snmp and netstat counters).</summary>
    private readonly record struct IpCounters(ulong OutPackets, ulong OutBytes, ulong InPackets, ulong InBytes)
    {
        public static IpCounters Of(string netns)
        {
            var text = Sh.Run("ip", "netns", "exec", netns, "cat", "/proc/net/snmp", "/proc/net/netstat");
            ulong Field(string prefix, string name)
            {
                var lines = text.Split('\n').Where(l => l.StartsWith(prefix + ":", StringComparison.Ordinal)).ToList();
                var names = lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries);
                var values = lines[1].Split(' ', StringSplitOptions.RemoveEmptyEntries);
                return ulong.Parse(values[Array.IndexOf(names, name)], CultureInfo.InvariantCulture);
            }
            return new IpCounters(Field("Ip", "OutTransmits"), Field("IpExt", "OutOctets"), Field("Ip", "InReceives"), Field("IpExt", "InOctets"));
        }

        public static IpCounters operator -(IpCounters a, IpCounters b) =>
            new(a.OutPackets - b.OutPackets, a.OutBytes - b.OutBytes, a.InPackets - b.InPackets, a.InBytes - b.InBytes);

        /// <summary>Waits until the namespace's counters stop moving (the last ACKs of a closed connection), then reads them.</summary>
        public static IpCounters Settled(string netns)
        {
            var last = Of(netns);
            var sw = Stopwatch.StartNew();
            while (sw.Elapsed < TimeSpan.FromSeconds(10))
            {
                Thread.Sleep(300);
                var now = Of(netns);
                if (now == last)
                    return now;
                last = now;
            }
            return last;
        }
    }

    /// <summary>The server: takes one TCP connection (reads Up bytes, sends Down, closes), then Datagrams UDP datagrams, answered with Replies.</summary>
    private static string ServerScript(string bind, int tcpPort) => $$"""
        import socket
        l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(("{{bind}}", {{tcpPort}})); l.listen(1); l.settimeout(30)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("{{bind}}", {{UdpPort}})); u.settimeout(30)
        print("ready", flush=True)
        c, _ = l.accept(); n = 0
        while True:
            d = c.recv(65536)
            if not d: break
            n += len(d)
        c.sendall(b"d" * {{Down}}); c.shutdown(socket.SHUT_WR)
        while c.recv(65536): pass
        c.close()
        print("tcp", n, flush=True)
        for i in range({{Datagrams}}):
            d, a = u.recvfrom(4096)
        for i in range({{Replies}}):
            u.sendto(b"r" * {{ReplyBytes}}, a)
        print("udp", flush=True)
        """;

    private static string TcpClientScript(string host, int port) => $$"""
        import socket
        s = socket.create_connection(("{{host}}", {{port}}), timeout=30); s.sendall(b"u" * {{Up}}); s.shutdown(socket.SHUT_WR)
        got = 0
        while True:
            d = s.recv(65536)
            if not d: break
            got += len(d)
        print(s.getsockname()[1], got, flush=True); s.close()
        """;

    private static string UdpClientScript(string host, int port) => $$"""
        import socket, time
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(30)
        for i in range({{Datagrams}}):
            u.sendto(b"q" * {{DatagramBytes}}, ("{{host}}", {{port}})); time.sleep(0.005)
        for i in range({{Replies}}):
            u.recvfrom(4096)
        print(u.getsockname()[1], flush=True)
        """;

    private static Process Python(string netns, string script) =>
        Process.Start(new ProcessStartInfo("/usr/sbin/ip", ["netns", "exec", netns, ProbeNetns.Python, "-c", script])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        })!;

    private static string RunToEnd(Process p)
    {
        var output = p.StandardOutput.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromSeconds(60)))
        {
            p.Kill(true);
            throw new TimeoutException("the traffic generator did not finish");
        }
        Assert.True(p.ExitCode == 0, "the traffic generator failed: " + p.StandardError.ReadToEnd());
        return output.Result;
    }

    private static void WaitReady(Process p)
    {
        var line = p.StandardOutput.ReadLineAsync();
        Assert.True(line.Wait(TimeSpan.FromSeconds(20)) && line.Result == "ready", "the server did not start: " + (p.HasExited ? p.StandardError.ReadToEnd() : ""));
    }

    /// <summary>
    /// Runs the exchange: TCP then UDP from <paramref name="clientNs"/> to <paramref name="host"/>; returns the client's
    /// ports and the client namespace's counters of each phase (and the server's, when it has a namespace of its own).
    /// </summary>
    private static (int TcpPort, int UdpPort, IpCounters Tcp, IpCounters Udp, IpCounters? ServerTcp, IpCounters? ServerUdp) Exchange(
        string clientNs, string serverNs, string bind, string host, int tcpPort, string udpHost, int udpPort, bool serverHasOwnNs, int serverTcpPort)
    {
        using var server = Python(serverNs, ServerScript(bind, serverTcpPort));
        WaitReady(server);
        var c0 = IpCounters.Settled(clientNs);
        var s0 = serverHasOwnNs ? IpCounters.Settled(serverNs) : default;
        var tcp = RunToEnd(Python(clientNs, TcpClientScript(host, tcpPort))).Split(' ', StringSplitOptions.TrimEntries);
        Assert.Equal(Down.ToString(CultureInfo.InvariantCulture), tcp[1]);
        var c1 = IpCounters.Settled(clientNs);
        var s1 = serverHasOwnNs ? IpCounters.Settled(serverNs) : default;
        var udp = RunToEnd(Python(clientNs, UdpClientScript(udpHost, udpPort))).Trim();
        Assert.Contains("udp", RunToEnd(server), StringComparison.Ordinal);
        var c2 = IpCounters.Settled(clientNs);
        var s2 = serverHasOwnNs ? IpCounters.Settled(serverNs) : default;
        return (int.Parse(tcp[0], CultureInfo.InvariantCulture), int.Parse(udp, CultureInfo.InvariantCulture), c1 - c0, c2 - c1,
            serverHasOwnNs ? s1 - s0 : null, serverHasOwnNs ? s2 - s1 : null);
    }

    private static (ulong Po, ulong Bo, ulong Pr, ulong Br) Volumes(Dictionary<string, object?> row) =>
        (Convert.ToUInt64(row["packets_orig"], CultureInfo.InvariantCulture), Convert.ToUInt64(row["bytes_orig"], CultureInfo.InvariantCulture),
         Convert.ToUInt64(row["packets_reply"], CultureInfo.InvariantCulture), Convert.ToUInt64(row["bytes_reply"], CultureInfo.InvariantCulture));

    /// <summary>The last row of a connection (its end row): cumulative counters, so the connection's volume.</summary>
    private static Dictionary<string, object?> Last(string dir, string where)
    {
        var rows = Duck.Table(dir, "flows", where).OrderBy(r => (DateTime)r["time"]!).ToList();
        Assert.True(rows.Count > 0, $"no flows row where {where}: {string.Join("; ", Duck.Table(dir, "flows").Select(r => $"{r["src_ip"]}:{r["src_port"]}>{r["dst_ip"]}:{r["dst_port"]} {r["direction"]}"))}");
        Assert.Equal("end", rows[^1]["report"]);
        Assert.All(rows[..^1], r => Assert.Equal("interval", r["report"]));
        return rows[^1];
    }

    [KernelFact]
    public void Flows_TcpAndUdpBetweenLabPods_PacketsAndBytesEachWayEqualWhatEachNamespaceSent()
    {
        var name = LabFixture.UniqueName();
        var cluster = ClusterLoader.Load($$"""
            apiVersion: forensics.dev/v1
            kind: Lab
            metadata:
              name: {{name}}
            spec:
              podCIDR: 10.0.0.0/24
              serviceCIDR: 10.0.1.0/24
              nodeIP: 192.0.2.1
            ---
            apiVersion: v1
            kind: Pod
            metadata:
              name: client
              labels: {app: client}
            ---
            apiVersion: v1
            kind: Pod
            metadata:
              name: server
              labels: {app: server}
            """, "flows.yaml");
        var dir = Path.Combine(Directory.CreateTempSubdirectory("fx-flows-").FullName, "rec");
        try
        {
            using (var lab = NetnsLab.Up(cluster, new LabOptions { Datapath = LabDatapath.Factory(new EventOptions { RingBytes = 4u << 20 }), CollectEvents = false }))
            {
                var dp = ((LabDatapath)lab.Datapath!).Datapath;
                using var source = new DatapathFlowSource([FlowMaps.Of(lab.Name, dp)],
                    new FlowOptions { Interval = TimeSpan.FromSeconds(1), Walk = TimeSpan.FromMilliseconds(200) }, Datapath.Probes.KernelClock.UtcOffsets().Monotonic);
                using var cts = new CancellationTokenSource();
                using var rec = new Recording([source], new RecordOptions { OutputDir = dir }, monotonicToUtcOffsetNs: null);
                var run = new Thread(() => rec.Run(() => "duration", cts.Token));
                run.Start();
                (int, int, IpCounters, IpCounters, IpCounters?, IpCounters?) x;
                try
                {
                    Assert.True(rec.WaitStarted(TimeSpan.FromSeconds(30)), "the recording did not start");
                    var (clientNs, serverNs) = (LabNames.PodNs(lab.Name, cluster.Pods.Single(p => p.Name == "client")), LabNames.PodNs(lab.Name, cluster.Pods.Single(p => p.Name == "server")));
                    var serverIp = lab.PodIp("server").ToString();
                    x = Exchange(clientNs, serverNs, serverIp, serverIp, TcpPort, serverIp, UdpPort, serverHasOwnNs: true, TcpPort);
                    // at least one walk after the traffic (a row every interval while it moved)
                    Assert.True(Until.True(() => source.Counters()["flows"].Emitted >= 2, 30), "no flows rows");
                }
                finally
                {
                    cts.Cancel();
                    run.Join(TimeSpan.FromSeconds(60));
                }
                var (tcpPort, udpPort, tcp, udp, serverTcp, serverUdp) = x;
                var clientIp = lab.PodIp("client").ToString();

                // TCP at the client's endpoint (it opened the connection: egress): orig = what the client sent, reply = what it received
                var c = Last(dir, $"src_ip = '{clientIp}' AND src_port = {tcpPort} AND direction = 'egress'");
                Assert.Equal((tcp.OutPackets, tcp.OutBytes, tcp.InPackets, tcp.InBytes), Volumes(c));
                Assert.True(tcp.OutBytes > Up && tcp.InBytes > Down, $"{tcp}");
                Assert.Equal(("datapath", "fin", "tcp"), ((string?)c["source"], (string?)c["end_reason"], (string?)c["protocol"]));
                Assert.StartsWith("SYN, ACK, FIN", (string?)c["tcp_flags_orig"], StringComparison.Ordinal);
                Assert.StartsWith("SYN, ACK, FIN", (string?)c["tcp_flags_reply"], StringComparison.Ordinal);
                // ... and at the server's (opened to it: ingress), the same connection from the server's counters
                var s = Last(dir, $"src_ip = '{clientIp}' AND src_port = {tcpPort} AND direction = 'ingress'");
                Assert.Equal((serverTcp!.Value.InPackets, serverTcp.Value.InBytes, serverTcp.Value.OutPackets, serverTcp.Value.OutBytes), Volumes(s));
                Assert.NotEqual(c["endpoint_id"], s["endpoint_id"]);
                Assert.True((DateTime)c["first_seen"]! <= (DateTime)c["last_seen"]! && (DateTime)c["last_seen"]! <= (DateTime)c["time"]!);

                // UDP: exactly the datagrams each side sent, each with its 28 bytes of IP and UDP header
                var u = Last(dir, $"src_ip = '{clientIp}' AND src_port = {udpPort} AND direction = 'egress'");
                Assert.Equal(((ulong)Datagrams, (ulong)(Datagrams * (DatagramBytes + 28)), (ulong)Replies, (ulong)(Replies * (ReplyBytes + 28))), Volumes(u));
                Assert.Equal((udp.OutPackets, udp.OutBytes, udp.InPackets, udp.InBytes), Volumes(u));
                Assert.Equal(("recording-end", "udp", (string?)null), ((string?)u["end_reason"], (string?)u["protocol"], (string?)u["tcp_flags_orig"]));
                Assert.Equal((serverUdp!.Value.InPackets, serverUdp.Value.InBytes, serverUdp.Value.OutPackets, serverUdp.Value.OutBytes),
                    Volumes(Last(dir, $"src_ip = '{clientIp}' AND src_port = {udpPort} AND direction = 'ingress'")));

                var m = Format.Manifest.Read(dir);
                Assert.Equal(0UL, m.EventsLost); // every connection the datapath tracked was read
            }
            Assert.Empty(LabFixture.Leftovers(name));
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(dir)!, recursive: true);
        }
    }

    [KernelFact]
    public void Flows_NodeWithoutDatapath_KernelConntrackCountsEachWayAndTheManifestSaysAccountingWasOff()
    {
        using var node = NatNode.Create(NatNode.Rules.Iptables);
        Assert.Equal("0", NatNode.Exec(node.Node, "sysctl", "-n", "net.netfilter.nf_conntrack_acct").Trim());
        var dir = Path.Combine(Directory.CreateTempSubdirectory("fx-ctflows-").FullName, "rec");
        var (services, _, _) = Datapath.Cluster.KubeProxyRules.Read(node.NodePath);
        var source = new Recorder.Conntrack.ConntrackSource(new Recorder.Conntrack.ConntrackSourceOptions
        {
            Capture = new Recorder.Conntrack.ConntrackCaptureOptions { Targets = [new Recorder.Conntrack.ConntrackTarget(node.NodePath, node.Node)], Accounting = true },
            Services = services,
            FlowInterval = TimeSpan.FromSeconds(1),
        });
        try
        {
            using var cts = new CancellationTokenSource();
            using var rec = new Recording([source], new RecordOptions { OutputDir = dir }, monotonicToUtcOffsetNs: null);
            var run = new Thread(() => rec.Run(() => "duration", cts.Token));
            run.Start();
            (int, int, IpCounters, IpCounters, IpCounters?, IpCounters?) x;
            try
            {
                Assert.True(rec.WaitStarted(TimeSpan.FromSeconds(30)), "the recording did not start");
                Assert.Equal("1", NatNode.Exec(node.Node, "sysctl", "-n", "net.netfilter.nf_conntrack_acct").Trim());
                // TCP to the service address (kube-proxy's DNAT to the server); UDP to the server itself
                x = Exchange(node.Client, node.Server, "0.0.0.0", NatNode.ServiceIp, NatNode.ServicePort, NatNode.ServerIp, UdpPort, serverHasOwnNs: true, NatNode.ServerPort);
                Assert.True(rec.WaitCaughtUp(TimeSpan.FromSeconds(30)));
            }
            finally
            {
                cts.Cancel();
                run.Join(TimeSpan.FromSeconds(60));
                source.Dispose();
            }
            var (tcpPort, udpPort, tcp, udp, _, _) = x;
            var t = Last(dir, $"src_ip = '{NatNode.ClientIp}' AND src_port = {tcpPort}");
            Assert.Equal((tcp.OutPackets, tcp.OutBytes, tcp.InPackets, tcp.InBytes), Volumes(t));
            Assert.Equal(("conntrack", NatNode.ServiceIp, NatNode.ServerIp, "default/web:http"), ((string?)t["source"], (string?)t["orig_dst_ip"], (string?)t["dst_ip"], (string?)t["service"]));
            Assert.Equal("fin", t["end_reason"]); // TIME_WAIT at the end of the recording
            var u = Last(dir, $"src_ip = '{NatNode.ClientIp}' AND src_port = {udpPort}");
            Assert.Equal(((ulong)Datagrams, (ulong)(Datagrams * (DatagramBytes + 28)), (ulong)Replies, (ulong)(Replies * (ReplyBytes + 28))), Volumes(u));
            Assert.Equal((udp.OutPackets, udp.OutBytes, udp.InPackets, udp.InBytes), Volumes(u));

            var m = Format.Manifest.Read(dir);
            Assert.Contains(m.Sources["conntrack"].NotRecorded, l => l.Contains("nf_conntrack_acct was 0", StringComparison.Ordinal));
            Assert.Equal("0", NatNode.Exec(node.Node, "sysctl", "-n", "net.netfilter.nf_conntrack_acct").Trim()); // restored
        }
        finally
        {
            source.Dispose();
            Directory.Delete(Path.GetDirectoryName(dir)!, recursive: true);
        }
    }

    [KernelFact]
    public void Flows_TupleReusedBetweenTwoReads_EachConnectionItsOwnEndRowAndNothingLost()
    {
        // a client port reused at once (the server closed first, so the client holds no TIME_WAIT), three times between
        // two reads of the conntrack map: each connection is its own row with its own volume, none counted lost
        var name = LabFixture.UniqueName();
        var cluster = ClusterLoader.Load($$"""
            apiVersion: forensics.dev/v1
            kind: Lab
            metadata:
              name: {{name}}
            spec:
              podCIDR: 10.0.0.0/24
              serviceCIDR: 10.0.1.0/24
              nodeIP: 192.0.2.1
            ---
            apiVersion: v1
            kind: Pod
            metadata:
              name: client
            ---
            apiVersion: v1
            kind: Pod
            metadata:
              name: server
            """, "reuse.yaml");
        var dir = Path.Combine(Directory.CreateTempSubdirectory("fx-reuse-").FullName, "rec");
        try
        {
            using (var lab = NetnsLab.Up(cluster, new LabOptions { Datapath = LabDatapath.Factory(new EventOptions { RingBytes = 4u << 20 }), CollectEvents = false }))
            {
                var dp = ((LabDatapath)lab.Datapath!).Datapath;
                using var source = new DatapathFlowSource([FlowMaps.Of(lab.Name, dp)],
                    new FlowOptions { Interval = TimeSpan.FromSeconds(30), Walk = TimeSpan.FromSeconds(10) }, Datapath.Probes.KernelClock.UtcOffsets().Monotonic);
                using var cts = new CancellationTokenSource();
                using var rec = new Recording([source], new RecordOptions { OutputDir = dir }, monotonicToUtcOffsetNs: null);
                var run = new Thread(() => rec.Run(() => "duration", cts.Token));
                run.Start();
                var serverIp = lab.PodIp("server").ToString();
                try
                {
                    Assert.True(rec.WaitStarted(TimeSpan.FromSeconds(30)), "the recording did not start");
                    using var server = Python(LabNames.PodNs(lab.Name, cluster.Pods.Single(p => p.Name == "server")), $$"""
                        import socket
                        l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(("{{serverIp}}", {{TcpPort}})); l.listen(8); l.settimeout(30)
                        print("ready", flush=True)
                        for i in range(3):
                            c, _ = l.accept(); n = 0
                            while n < 1000 * (i + 1):
                                n += len(c.recv(65536))
                            c.sendall(b"k" * 10); c.close()
                        """);
                    WaitReady(server);
                    var output = RunToEnd(Python(LabNames.PodNs(lab.Name, cluster.Pods.Single(p => p.Name == "client")), $$"""
                        import socket, time
                        for i in range(3):
                            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 47000)); s.settimeout(10)
                            s.connect(("{{serverIp}}", {{TcpPort}})); s.sendall(b"u" * (1000 * (i + 1)))
                            while s.recv(65536): pass
                            s.close(); time.sleep(0.05)
                        print("done", flush=True)
                        """));
                    Assert.Contains("done", output, StringComparison.Ordinal);
                    RunToEnd(server);
                }
                finally
                {
                    cts.Cancel();
                    run.Join(TimeSpan.FromSeconds(60));
                }
                var rows = Duck.Table(dir, "flows", "src_port = 47000 AND direction = 'egress'").OrderBy(r => (DateTime)r["first_seen"]!).ToList();
                Assert.Equal(3, rows.Select(r => r["first_seen"]).Distinct().Count());
                Assert.All(rows, r => Assert.Equal("end", r["report"]));
                // each its own bytes up: 1000, 2000, 3000 of payload and 40-52 bytes of headers per packet
                var up = rows.GroupBy(r => (DateTime)r["first_seen"]!).Select(g => Convert.ToInt64(g.Last()["bytes_orig"], CultureInfo.InvariantCulture)).ToList();
                Assert.True(up[0] > 1000 && up[0] < 2000 && up[1] > 2000 && up[1] < 3000 && up[2] > 3000 && up[2] < 4000, string.Join(", ", up));
                Assert.Equal(0UL, Format.Manifest.Read(dir).EventsLost);
            }
            Assert.Empty(LabFixture.Leftovers(name));
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(dir)!, recursive: true);
        }
    }
}
