using System.Diagnostics;
using System.Globalization;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Bpf;
using Forensics.Datapath.Probes;

namespace Forensics.Kernel.Tests;

/// <summary>Runs a command to completion (bounded), throwing with its stderr when it fails.</summary>
internal static class Cmd
{
    public static string Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromSeconds(20)))
        {
            p.Kill(true);
            throw new TimeoutException($"{file} {string.Join(' ', args)}: timed out");
        }
        if (p.ExitCode != 0)
            throw new InvalidOperationException($"{file} {string.Join(' ', args)}: exit {p.ExitCode}: {stderr.Result.Trim()}");
        return stdout.Result;
    }

    public static void TryRun(string file, params string[] args)
    {
        try
        {
            Run(file, args);
        }
        catch (InvalidOperationException)
        {
        }
        catch (TimeoutException)
        {
        }
    }
}

/// <summary>
/// A network namespace of our own ("fxp-" names) joined to the root namespace
/// by a veth pair, with IPv4 and IPv6 on both ends and a second ("excluded")
/// subnet on the host end. Disposing deletes both (the peer goes with the namespace).
/// </summary>
internal sealed class ProbeNetns : IDisposable
{
    public const string Python = "/usr/bin/python3";

    /// <summary>A client: MODE HOST PORT; prints its local port. Modes: tcp, udp-connect, sendto, sendmsg; wait-tcp reads a line first.</summary>
    public const string Client = """
        import socket, sys
        mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
        fam = socket.AF_INET6 if ':' in host else socket.AF_INET
        if mode == 'wait-tcp':
            sys.stdin.readline()
            mode = 'tcp'
        if mode == 'tcp':
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.settimeout(5)
            try:
                s.connect((host, port))
            except OSError:
                pass
        elif mode == 'udp-connect':
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.connect((host, port))
            s.send(b'x')
        elif mode == 'sendto':
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.sendto(b'x', (host, port))
            s.sendto(b'y', (host, port))
        elif mode == 'sendmsg':
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.sendmsg([b'x'], [], 0, (host, port))
        print(s.getsockname()[1], flush=True)
        """;

    private ProbeNetns(string name, string hostIf, int subnet)
    {
        Name = name;
        HostIf = hostIf;
        HostV4 = $"10.213.{subnet}.1";
        NsV4 = $"10.213.{subnet}.2";
        HostV6 = $"fd0f:213:{subnet}::1";
        NsV6 = $"fd0f:213:{subnet}::2";
        ExcludedHostV4 = $"10.214.{subnet}.1";
        ExcludedHostV6 = $"fd0f:214:{subnet}::1";
        ExcludedV4Cidr = $"10.214.{subnet}.0/24";
        ExcludedV6Cidr = $"fd0f:214:{subnet}::/64";
        Unanswering = $"10.213.{subnet}.99";
    }

    /// <summary>
    /// An address on the veth's subnet that nobody holds: a permanent neighbour entry in the namespace sends its packets
    /// out to a MAC address nobody has, so nothing answers and a connect() to it blocks (for minutes, until the SYN
    /// retries run out); without the entry ARP would give up after ~3 s and fail the connect() with EHOSTUNREACH.
    /// </summary>
    public string Unanswering { get; }

    public string Name { get; }
    public string HostIf { get; }
    public string HostV4 { get; }
    public string NsV4 { get; }
    public string HostV6 { get; }
    public string NsV6 { get; }
    public string ExcludedHostV4 { get; }
    public string ExcludedHostV6 { get; }
    public string ExcludedV4Cidr { get; }
    public string ExcludedV6Cidr { get; }
    public uint Inode { get; private set; }
    public int HostIfindex { get; private set; }

    // Test classes run in parallel (ProbeTests, TetragonFilterTests): two namespaces alive at once must not share a
    // subnet, or the host routes one's replies into the other. Subnets are handed out in turn, from a random start.
    private static int lastSubnet = Random.Shared.Next(0, 254);

    public static ProbeNetns Create()
    {
        var id = Random.Shared.Next(0x100000, 0xffffff).ToString("x6", CultureInfo.InvariantCulture);
        var n = new ProbeNetns($"fxp-{id}", $"fxp-{id}-h", Interlocked.Increment(ref lastSubnet) % 254 + 1);
        try
        {
            n.Setup(id);
            return n;
        }
        catch
        {
            n.Dispose();
            throw;
        }
    }

    private void Setup(string id)
    {
        var peer = $"fxp-{id}-n";
        Cmd.Run("ip", "netns", "add", Name);
        Cmd.Run("ip", "link", "add", HostIf, "type", "veth", "peer", "name", peer);
        Cmd.Run("ip", "link", "set", peer, "netns", Name);
        Cmd.Run("ip", "addr", "add", HostV4 + "/24", "dev", HostIf);
        Cmd.Run("ip", "addr", "add", ExcludedHostV4 + "/24", "dev", HostIf);
        Cmd.Run("ip", "-6", "addr", "add", HostV6 + "/64", "dev", HostIf, "nodad");
        Cmd.Run("ip", "-6", "addr", "add", ExcludedHostV6 + "/64", "dev", HostIf, "nodad");
        Cmd.Run("ip", "link", "set", HostIf, "up");
        Cmd.Run("ip", "-n", Name, "link", "set", "lo", "up");
        Cmd.Run("ip", "-n", Name, "addr", "add", NsV4 + "/24", "dev", peer);
        Cmd.Run("ip", "-n", Name, "-6", "addr", "add", NsV6 + "/64", "dev", peer, "nodad");
        Cmd.Run("ip", "-n", Name, "link", "set", peer, "up");
        Cmd.Run("ip", "-n", Name, "neigh", "add", Unanswering, "lladdr", "02:00:00:00:d5:63", "nud", "permanent", "dev", peer);
        Cmd.Run("ip", "-n", Name, "route", "add", "default", "via", HostV4);
        Cmd.Run("ip", "-n", Name, "-6", "route", "add", "default", "via", HostV6);
        Inode = Attribution.NetnsInode("/run/netns/" + Name) ?? throw new InvalidOperationException("no inode for " + Name);
        HostIfindex = int.Parse(File.ReadAllText($"/sys/class/net/{HostIf}/ifindex").Trim(), CultureInfo.InvariantCulture);
    }

    /// <summary>Starts argv inside the namespace (ip netns exec replaces itself: same pid).</summary>
    public Process Start(IEnumerable<string> argv, string? cwd = null, bool stdin = false) =>
        Process.Start(new ProcessStartInfo("/usr/sbin/ip", ["netns", "exec", Name, .. argv])
        {
            RedirectStandardOutput = true,
            RedirectStandardInput = stdin,
            WorkingDirectory = cwd ?? "",
        })!;

    /// <summary>Runs the client inside the namespace; returns its pid and the local port it used.</summary>
    public (int Pid, int LocalPort) RunClient(string mode, string host, int port) => RunClientProcess(Start([Python, "-c", Client, mode, host, port.ToString(CultureInfo.InvariantCulture)]));

    public static (int Pid, int LocalPort) RunClientProcess(Process p)
    {
        using (p)
        {
            var line = p.StandardOutput.ReadLineAsync();
            if (!line.Wait(TimeSpan.FromSeconds(15)) || !p.WaitForExit(TimeSpan.FromSeconds(15)))
            {
                p.Kill(true);
                throw new TimeoutException("the client did not finish");
            }
            Assert.Equal(0, p.ExitCode);
            return (p.Id, int.Parse(line.Result!, CultureInfo.InvariantCulture));
        }
    }

    public void Dispose()
    {
        Cmd.TryRun("ip", "netns", "del", Name);
        Cmd.TryRun("ip", "link", "del", HostIf);
    }
}

/// <summary>Everything the probes' ring buffer delivered, copied; polled on demand.</summary>
internal sealed class EventLog : IDisposable
{
    private readonly RingBufferReader reader;

    public EventLog(TracingProbes probes) => reader = new RingBufferReader(probes.EventsMap, r => Events.Add(r.ToArray()));

    public List<byte[]> Events { get; } = [];

    /// <summary>Polls until an event matches (true) or the time runs out (false).</summary>
    public bool WaitFor(Func<byte[], bool> match, double seconds = 5)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            reader.Consume();
            if (Events.Any(match))
                return true;
            if (sw.Elapsed.TotalSeconds > seconds)
                return false;
            reader.Poll(50);
        }
    }

    /// <summary>Drains what is there now, then for a short while more (events of a finished action).</summary>
    public void Settle(int ms = 300)
    {
        var sw = Stopwatch.StartNew();
        while (sw.ElapsedMilliseconds < ms)
            reader.Poll(50);
        reader.Consume();
    }

    public IEnumerable<T> Of<T>(EventKind kind) where T : struct =>
        Events.Where(e => EventReader.Header(e).Kind == kind).Select(e => EventReader.Read<T>(e));

    public IEnumerable<ExecEvent> Execs(int pid) => Of<ExecEvent>(EventKind.Exec).Where(e => e.Pid == (uint)pid);

    public IEnumerable<ExitEvent> Exits(int pid) => Of<ExitEvent>(EventKind.Exit).Where(e => e.Pid == (uint)pid);

    public IEnumerable<ConnectEvent> Connects(int pid) => Of<ConnectEvent>(EventKind.Connect).Where(e => e.Pid == (uint)pid);

    public static bool Is(byte[] e, EventKind kind, int pid) => EventReader.Header(e).Kind == kind && kind switch
    {
        EventKind.Exec => EventReader.Read<ExecEvent>(e).Pid == (uint)pid,
        EventKind.Exit => EventReader.Read<ExitEvent>(e).Pid == (uint)pid,
        EventKind.Connect => EventReader.Read<ConnectEvent>(e).Pid == (uint)pid,
        _ => false,
    };

    public void Dispose() => reader.Dispose();
}
