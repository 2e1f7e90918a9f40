using System.Diagnostics;
using System.Globalization;

namespace Forensics.Kernel.Tests;

/// <summary>
/// A node made of plain network namespaces, translated by the kernel (not our datapath):
/// "fxct-ID-n" (the node) routes between a client ("-c", 10.244.1.2), a server ("-s",
/// 10.244.2.2, port 8080) and an outside host ("-w", 203.0.113.7 behind 198.51.100.2 on
/// TEST-NET). The node's rules are iptables (a kube-proxy style DNAT of the service address
/// 10.96.0.10:80 to the server with its `ns/svc:port` comment, MASQUERADE towards the outside,
/// a DROP of 203.0.113.9) or the same in nftables. Disposing deletes the namespaces (their
/// veths, rules and conntrack entries go with them).
/// </summary>
internal sealed class NatNode : IDisposable
{
    public const string ServiceIp = "10.96.0.10";
    public const int ServicePort = 80;
    public const string ClientIp = "10.244.1.2";
    public const string ServerIp = "10.244.2.2";
    public const int ServerPort = 8080;
    public const string NodeOuterIp = "198.51.100.1";
    public const string WorldIp = "203.0.113.7";
    public const string DroppedIp = "203.0.113.9";
    public const int WorldPort = 5353;
    /// <summary>The conntrack mark the node's rules set on the service's connections.</summary>
    public const int ServiceMark = 42;

    private readonly List<string> namespaces = [];

    private NatNode(string prefix) => Prefix = prefix;

    public string Prefix { get; }
    public string Node => Prefix + "-n";
    public string Client => Prefix + "-c";
    public string Server => Prefix + "-s";
    public string World => Prefix + "-w";
    public string NodePath => "/run/netns/" + Node;

    public enum Rules
    {
        Iptables,
        Nftables,
    }

    public static NatNode Create(Rules rules)
    {
        var id = Random.Shared.Next(0x100000, 0xffffff).ToString("x6", CultureInfo.InvariantCulture);
        var n = new NatNode("fxct-" + id);
        try
        {
            n.Setup(rules);
            return n;
        }
        catch
        {
            n.Dispose();
            throw;
        }
    }

    private void Setup(Rules rules)
    {
        foreach (var ns in new[] { Node, Client, Server, World })
        {
            Cmd.Run("ip", "netns", "add", ns);
            namespaces.Add(ns);
            Cmd.Run("ip", "-n", ns, "link", "set", "lo", "up");
        }
        Veth("c0", Client, "10.244.1.1", ClientIp);
        Veth("s0", Server, "10.244.2.1", ServerIp);
        Veth("w0", World, NodeOuterIp, "198.51.100.2", prefixLength: 24);
        Cmd.Run("ip", "-n", World, "addr", "add", WorldIp + "/32", "dev", "lo");
        Cmd.Run("ip", "-n", World, "addr", "add", DroppedIp + "/32", "dev", "lo");
        Cmd.Run("ip", "-n", Node, "route", "add", "203.0.113.0/24", "via", "198.51.100.2");
        Exec(Node, "sysctl", "-qw", "net.ipv4.ip_forward=1");
        var outer = Prefix + "-w0";
        if (rules == Rules.Iptables)
        {
            Exec(Node, "iptables", "-t", "nat", "-A", "PREROUTING", "-d", ServiceIp, "-p", "tcp", "--dport", "80",
                "-m", "comment", "--comment", "default/web:http", "-j", "DNAT", "--to-destination", $"{ServerIp}:{ServerPort}");
            Exec(Node, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", outer, "-j", "MASQUERADE");
            // a connection mark on the service's connections, as a CNI or kube-proxy sets one (0x4000 marks for masquerade)
            Exec(Node, "iptables", "-t", "mangle", "-A", "PREROUTING", "-d", ServiceIp, "-p", "tcp", "--dport", "80", "-j", "CONNMARK", "--set-mark", ServiceMark.ToString(CultureInfo.InvariantCulture));
            Exec(Node, "iptables", "-A", "FORWARD", "-d", DroppedIp, "-j", "DROP");
        }
        else
        {
            var ruleset = $$"""
                table ip fxct {
                    chain pre {
                        type nat hook prerouting priority dstnat; policy accept;
                        ip daddr {{ServiceIp}} tcp dport {{ServicePort}} ct mark set {{ServiceMark}} dnat to {{ServerIp}}:{{ServerPort}} comment "default/web:http"
                    }
                    chain post {
                        type nat hook postrouting priority srcnat; policy accept;
                        oifname "{{outer}}" masquerade
                    }
                    chain filt {
                        type filter hook forward priority filter; policy accept;
                        ip daddr {{DroppedIp}} drop
                    }
                }
                """;
            var file = Path.Combine(Path.GetTempPath(), Prefix + ".nft");
            File.WriteAllText(file, ruleset);
            try
            {
                Exec(Node, "nft", "-f", file);
            }
            finally
            {
                File.Delete(file);
            }
        }
    }

    private void Veth(string suffix, string peerNs, string nodeIp, string peerIp, int prefixLength = 24)
    {
        var hostSide = Prefix + "-" + suffix;
        Cmd.Run("ip", "link", "add", hostSide, "netns", Node, "type", "veth", "peer", "name", "eth0", "netns", peerNs);
        Cmd.Run("ip", "-n", Node, "addr", "add", $"{nodeIp}/{prefixLength}", "dev", hostSide);
        Cmd.Run("ip", "-n", Node, "link", "set", hostSide, "up");
        Cmd.Run("ip", "-n", peerNs, "addr", "add", $"{peerIp}/{prefixLength}", "dev", "eth0");
        Cmd.Run("ip", "-n", peerNs, "link", "set", "eth0", "up");
        Cmd.Run("ip", "-n", peerNs, "route", "add", "default", "via", nodeIp);
    }

    public static string Exec(string ns, params string[] argv) => Cmd.Run("ip", ["netns", "exec", ns, .. argv]);

    /// <summary>A TCP server (the backend) that answers each connection with "ok"; and a UDP echo on the outside host.</summary>
    public Process StartServers(int connections)
    {
        var backend = Start(Server, $$"""
            import socket
            l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            l.bind(("0.0.0.0", {{ServerPort}})); l.listen(64); l.settimeout(20)
            print("ready", flush=True)
            for _ in range({{connections}}):
                c, _ = l.accept(); c.recv(16); c.sendall(b"ok"); c.close()
            """);
        WaitReady(backend);
        return backend;
    }

    public Process StartWorldEcho()
    {
        var echo = Start(World, $$"""
            import socket
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("{{WorldIp}}", {{WorldPort}})); u.settimeout(20)
            print("ready", flush=True)
            d, a = u.recvfrom(64); u.sendto(b"pong", a)
            """);
        WaitReady(echo);
        return echo;
    }

    /// <summary>Runs a client script in the client namespace to completion; returns what it printed.</summary>
    public string RunClient(string script)
    {
        using var p = Start(Client, script);
        var output = p.StandardOutput.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromSeconds(20)))
        {
            p.Kill(true);
            throw new TimeoutException("the client did not finish");
        }
        Assert.True(p.ExitCode == 0, "client failed: " + p.StandardError.ReadToEnd());
        return output.Result;
    }

    /// <summary>The client's script: one TCP exchange with the service address, one UDP exchange with the outside, one TCP attempt at the dropped address.</summary>
    public static string ServiceAndWorldClient => $$"""
        import socket
        s = socket.create_connection(("{{ServiceIp}}", {{ServicePort}}), timeout=5); s.sendall(b"hi")
        print("tcp", s.getsockname()[1], s.recv(16).decode(), flush=True); s.close()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5); u.sendto(b"ping", ("{{WorldIp}}", {{WorldPort}}))
        print("udp", u.getsockname()[1], u.recvfrom(64)[0].decode(), flush=True)
        d = socket.socket(); d.settimeout(1)
        try:
            d.connect(("{{DroppedIp}}", 443))
        except OSError:
            pass
        print("dropped", d.getsockname()[1], flush=True)
        """;

    private static Process Start(string ns, string script) =>
        Process.Start(new ProcessStartInfo("/usr/sbin/ip", ["netns", "exec", ns, ProbeNetns.Python, "-c", script])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        })!;

    private static void WaitReady(Process p)
    {
        var line = p.StandardOutput.ReadLineAsync();
        if (!line.Wait(TimeSpan.FromSeconds(15)) || line.Result != "ready")
        {
            p.Kill(true);
            throw new TimeoutException("a server did not start: " + p.StandardError.ReadToEnd());
        }
    }

    public void Dispose()
    {
        foreach (var ns in namespaces)
            Cmd.TryRun("ip", "netns", "del", ns);
    }
}

/// <summary>Waits on a condition with a bound.</summary>
internal static class Until
{
    public static bool True(Func<bool> condition, double seconds = 10)
    {
        var sw = Stopwatch.StartNew();
        while (!condition())
        {
            if (sw.Elapsed.TotalSeconds > seconds)
                return false;
            Thread.Sleep(20);
        }
        return true;
    }
}
