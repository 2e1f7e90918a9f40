using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Forensics.Datapath;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Probes;
using Forensics.Tests;

namespace Forensics.Kernel.Tests;

/// <summary>
/// The tracing probes on the real kernel: real processes in a network
/// namespace of our own and on the host, real sockets, real drops.
/// </summary>
public partial class ProbeTests
{
    private static TracingProbes LoadProbes(ProbeSet enabled = ProbeSet.All, params string[] excluded)
    {
        Prerequisites.EnsureKernelAccess();
        var probes = TracingProbes.Load(new ProbeOptions
        {
            Events = new EventOptions { RingBytes = 8u << 20, WakeupBytes = 4096 },
            Enabled = enabled,
            ExcludedCidrs = [.. excluded.Select(Cidrs.Parse)],
        });
        probes.Attach();
        return probes;
    }

    private static ulong CgroupIdOfSelf() =>
        ProcfsScanner.Scan().Single(p => p.Pid == (uint)Environment.ProcessId).CgroupId;

    // ---- exec / exit ----------------------------------------------------

    [KernelFact]
    public void Exec_ProcessInNetns_BinaryArgsParentCwdNetnsAndExitCode()
    {
        using var probes = LoadProbes(ProbeSet.Exec | ProbeSet.Exit);
        using var log = new EventLog(probes);
        using var ns = ProbeNetns.Create();
        var cwd = Directory.CreateTempSubdirectory("fxp-cwd-");
        try
        {
            int pid;
            using (var p = ns.Start([ProbeNetns.Python, "-c", "import sys; sys.exit(3)", "alpha", "two words"], cwd.FullName))
            {
                pid = p.Id;
                Assert.True(p.WaitForExit(TimeSpan.FromSeconds(15)));
            }
            Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Exit, pid)), "no exit event");

            var execs = log.Execs(pid).ToList();
            Assert.Equal(2, execs.Count); // ip netns exec, then python in its place
            var ip = execs[0];
            var py = execs[1];
            Assert.Equal("/usr/sbin/ip", EventReader.CString(ip.Filename, ip.FilenameLen));
            Assert.Equal(ProbeNetns.Python, EventReader.CString(py.Filename, py.FilenameLen));
            Assert.Equal([ProbeNetns.Python, "-c", "import sys; sys.exit(3)", "alpha", "two words"], EventReader.Argv(py));
            Assert.Equal(5, py.Argc);
            Assert.Equal(ExecFlags.None, py.Flags);
            Assert.Equal("python3", EventReader.CString(py.Comm));
            Assert.Equal((uint)pid, py.Tid);
            Assert.Equal((uint)Environment.ProcessId, py.Ppid);
            Assert.Equal(0u, py.Uid);
            Assert.Equal(ns.Inode, py.NetnsIno);
            Assert.NotEqual(Attribution.CurrentNetnsInode(), py.NetnsIno);
            Assert.Equal(CgroupIdOfSelf(), py.CgroupId);
            Assert.Equal(cwd.FullName, EventReader.CString(py.Cwd, py.CwdLen));
            var attribution = new Attribution();
            Assert.Null(attribution.Lookup(py.NetnsIno)); // a named network namespace is not a pod
            Assert.Equal(ns.Name, attribution.NetnsName(py.NetnsIno));
            attribution.Register(py.NetnsIno, "default", "xwing");
            Assert.Equal("default/xwing", attribution.Lookup(py.NetnsIno)?.ToString());
            Assert.Null(attribution.Lookup(Attribution.CurrentNetnsInode())); // the host's
            Assert.True(py.ExecId > ip.ExecId, "a later exec has a later exec id");
            Assert.Equal(ip.StartTime, py.StartTime); // same process, new image
            var startTicks = ulong.Parse(File.ReadAllText("/proc/self/stat").Split(')')[1].Split(' ')[20], CultureInfo.InvariantCulture);
            Assert.True(py.StartTime > startTicks * 10_000_000, "boot-time start after this test process's");

            var exit = log.Exits(pid).Single();
            Assert.Equal(3u << 8, exit.ExitCode);
            Assert.Equal(3, ExitStatus.Code(exit.ExitCode));
            Assert.Equal(py.ExecId, exit.ExecId);
            Assert.Equal((uint)Environment.ProcessId, exit.Ppid);
            Assert.Equal(ns.Inode, exit.NetnsIno);
            Assert.Equal("python3", EventReader.CString(exit.Comm));
        }
        finally
        {
            cwd.Delete(true);
        }
    }

    [KernelFact]
    public void Exec_EventClocks_MonotonicHeaderAndBoottimeIds()
    {
        using var probes = LoadProbes(ProbeSet.Exec);
        using var log = new EventLog(probes);
        ulong mono0 = KernelClock.MonotonicNs(), boot0 = KernelClock.BoottimeNs();
        int pid;
        using (var p = Process.Start("/usr/bin/true")!)
        {
            pid = p.Id;
            Assert.True(p.WaitForExit(TimeSpan.FromSeconds(10)));
        }
        ulong mono1 = KernelClock.MonotonicNs(), boot1 = KernelClock.BoottimeNs();
        Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Exec, pid)));

        var exec = log.Execs(pid).Single();
        Assert.InRange(exec.Hdr.Ktime, mono0, mono1);
        Assert.InRange(exec.ExecId, boot0, boot1);
        Assert.InRange(exec.StartTime, boot0, exec.ExecId);
        var seeded = new ProcfsProcess(1, 0, 0, 0, 0, 1, 0, "/x", [], false, "/", "x", 0, 0).ToExecRecord();
        Assert.InRange(EventReader.Read<ExecEvent>(seeded).Hdr.Ktime, mono1, KernelClock.MonotonicNs());
    }

    [KernelFact]
    public void EmitFailures_ExecBurstIntoOnePageRing_CountedPerKind()
    {
        Prerequisites.EnsureKernelAccess();
        using var probes = TracingProbes.Load(new ProbeOptions
        {
            Events = new EventOptions { RingBytes = 4096 }, // two exec events fit
            Enabled = ProbeSet.Exec,
        });
        probes.Attach();
        for (int i = 0; i < 8; i++) // nothing consumes meanwhile
            using (var p = Process.Start("/usr/bin/true")!)
                Assert.True(p.WaitForExit(TimeSpan.FromSeconds(10)));
        var before = probes.Counters()[EventKind.Exec];
        int received = 0;
        using (var reader = new Datapath.Bpf.RingBufferReader(probes.EventsMap, _ => received++))
            reader.Consume();
        var after = probes.Counters()[EventKind.Exec];

        Assert.True(before.Failed >= 6, $"{before.Failed} exec events counted as lost; at least 6 of 8 could not fit");
        Assert.InRange((ulong)received, before.Emitted, after.Emitted);
        // what was emitted before anything consumed is what the ring held: at most two (execs of other processes on
        // the host may slip into the space the reader frees while it consumes: those add to `received`, not to this)
        Assert.InRange(before.Emitted, 1UL, 2UL);
        Assert.Equal(0UL, probes.Counters()[EventKind.Connect].Emitted + probes.Counters()[EventKind.Connect].Failed); // switched off
    }

    [KernelFact]
    public void Exit_KilledWithSigkill_SignalInStatus()
    {
        using var probes = LoadProbes(ProbeSet.Exec | ProbeSet.Exit);
        using var log = new EventLog(probes);
        int pid;
        using (var p = Process.Start("/usr/bin/sleep", "30"))
        {
            pid = p.Id;
            Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Exec, pid)), "no exec event");
            p.Kill(); // SIGKILL
            Assert.True(p.WaitForExit(TimeSpan.FromSeconds(10)));
        }
        Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Exit, pid)), "no exit event");

        var exec = log.Execs(pid).Single();
        Assert.Equal(["/usr/bin/sleep", "30"], EventReader.Argv(exec));
        var exit = log.Exits(pid).Single();
        Assert.Equal("SIGKILL", ExitStatus.Signal(exit.ExitCode));
        Assert.Null(ExitStatus.Code(exit.ExitCode));
        Assert.Equal(exec.ExecId, exit.ExecId);
    }

    [KernelFact]
    public void Exec_CwdBelowAMountPoint_PathWalksAcrossTheMount()
    {
        var root = Directory.CreateTempSubdirectory("fxp-mnt-");
        var mounted = false;
        try
        {
            Cmd.Run("mount", "-t", "tmpfs", "fxp-tmpfs", root.FullName);
            mounted = true;
            var dir = Directory.CreateDirectory(Path.Combine(root.FullName, "inner", "deeper"));
            using var probes = LoadProbes(ProbeSet.Exec);
            using var log = new EventLog(probes);
            int pid;
            using (var p = Process.Start(new ProcessStartInfo("/usr/bin/true") { WorkingDirectory = dir.FullName })!)
            {
                pid = p.Id;
                Assert.True(p.WaitForExit(TimeSpan.FromSeconds(10)));
            }
            Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Exec, pid)));

            var exec = log.Execs(pid).Single();
            Assert.Equal(dir.FullName, EventReader.CString(exec.Cwd, exec.CwdLen));
            Assert.Equal(ExecFlags.None, exec.Flags & ExecFlags.CwdTruncated);
        }
        finally
        {
            if (mounted)
                Cmd.TryRun("umount", "-l", root.FullName);
            root.Delete(true);
        }
    }

    [KernelFact]
    public void Exec_InsideAChroot_CwdIsRelativeToTheProcessRoot()
    {
        var root = Directory.CreateTempSubdirectory("fxp-root-");
        try
        {
            Directory.CreateDirectory(Path.Combine(root.FullName, "usr"));
            Directory.CreateDirectory(Path.Combine(root.FullName, "work", "here"));
            foreach (var link in new[] { "bin", "lib", "lib64" })
                File.CreateSymbolicLink(Path.Combine(root.FullName, link), "usr/" + link);
            using var probes = LoadProbes(ProbeSet.Exec);
            using var log = new EventLog(probes);
            // a private mount namespace holds the bind mount: nothing to clean up after
            using (var p = Process.Start("/usr/bin/unshare", ["--mount", "--propagation", "private", "/bin/sh", "-c",
                $"mount --bind /usr {root.FullName}/usr && exec chroot {root.FullName} /bin/sh -c 'cd /work/here && exec /usr/bin/true chrooted'"])!)
                Assert.True(p.WaitForExit(TimeSpan.FromSeconds(10)));
            Assert.True(log.WaitFor(e => EventReader.Header(e).Kind == EventKind.Exec && EventReader.Argv(EventReader.Read<ExecEvent>(e)) is ["/usr/bin/true", "chrooted"]));

            var exec = log.Of<ExecEvent>(EventKind.Exec).Single(e => EventReader.Argv(e) is ["/usr/bin/true", "chrooted"]);
            Assert.Equal("/work/here", EventReader.CString(exec.Cwd, exec.CwdLen));
            Assert.False(exec.Flags.HasFlag(ExecFlags.CwdTruncated));
        }
        finally
        {
            root.Delete(true);
        }
    }

    [KernelFact]
    public void Exec_CwdDeeperThanTheWalk_FlaggedAndKeepsTheInnermostComponents()
    {
        var root = Directory.CreateTempSubdirectory("fxp-deep-");
        try
        {
            var deep = Path.Combine([root.FullName, .. Enumerable.Range(0, 40).Select(i => $"d{i}")]);
            Directory.CreateDirectory(deep);
            using var probes = LoadProbes(ProbeSet.Exec);
            using var log = new EventLog(probes);
            int pid;
            using (var p = Process.Start(new ProcessStartInfo("/usr/bin/true") { WorkingDirectory = deep })!)
            {
                pid = p.Id;
                Assert.True(p.WaitForExit(TimeSpan.FromSeconds(10)));
            }
            Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Exec, pid)));

            var exec = log.Execs(pid).Single();
            var cwd = EventReader.CString(exec.Cwd, exec.CwdLen);
            Assert.True(exec.Flags.HasFlag(ExecFlags.CwdTruncated));
            Assert.Equal("/" + string.Join('/', Enumerable.Range(8, 32).Select(i => $"d{i}")), cwd); // the 32 innermost
            Assert.EndsWith(cwd, deep, StringComparison.Ordinal);
        }
        finally
        {
            root.Delete(true);
        }
    }

    [KernelFact]
    public void Exec_FilenameAtAndOverTheLimit_KeptWholeOrFlagged()
    {
        var dir = Directory.CreateTempSubdirectory("fxp-name-");
        try
        {
            string Link(int total) // a path of exactly `total` bytes, in components of at most 101
            {
                var path = dir.FullName + "/" + total;
                while (total - path.Length > 101)
                    Directory.CreateDirectory(path += "/" + new string('d', 100));
                path += "/" + new string('n', total - path.Length - 1);
                File.CreateSymbolicLink(path, "/usr/bin/true");
                return path;
            }
            var exact = Link(Limits.FilenameMax);
            var over = Link(Limits.FilenameMax + 44);
            using var probes = LoadProbes(ProbeSet.Exec);
            using var log = new EventLog(probes);
            var pids = new List<int>();
            foreach (var path in new[] { exact, over })
                using (var p = Process.Start(path)!)
                {
                    pids.Add(p.Id);
                    Assert.True(p.WaitForExit(TimeSpan.FromSeconds(10)));
                }
            Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Exec, pids[1])));

            var a = log.Execs(pids[0]).Single();
            Assert.Equal(exact, EventReader.CString(a.Filename, a.FilenameLen));
            Assert.Equal(Limits.FilenameMax, a.FilenameLen);
            Assert.False(a.Flags.HasFlag(ExecFlags.FilenameTruncated));
            var b = log.Execs(pids[1]).Single();
            Assert.True(b.Flags.HasFlag(ExecFlags.FilenameTruncated));
            Assert.Equal(over[..Limits.FilenameMax], EventReader.CString(b.Filename, b.FilenameLen));
        }
        finally
        {
            dir.Delete(true);
        }
    }

    [KernelFact]
    public void Exec_ArgumentsOverTheLimit_TruncatedAndFlagged()
    {
        using var probes = LoadProbes(ProbeSet.Exec);
        using var log = new EventLog(probes);
        var args = Enumerable.Range(0, 30).Select(i => $"{i:D2}" + new string('a', 98)).ToArray(); // 30 x 101 bytes
        int pid;
        using (var p = Process.Start("/usr/bin/true", args))
        {
            pid = p.Id;
            Assert.True(p.WaitForExit(TimeSpan.FromSeconds(10)));
        }
        Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Exec, pid)));

        var exec = log.Execs(pid).Single();
        Assert.True(exec.Flags.HasFlag(ExecFlags.ArgsTruncated));
        Assert.Equal(Limits.ArgsMax, exec.ArgsLen);
        Assert.Equal(31, exec.Argc);
        var argv = EventReader.Argv(exec);
        Assert.Equal("/usr/bin/true", argv[0]);
        Assert.Equal(args[..9], argv[1..10]); // 14 + 9 x 101 = 923 bytes fit whole; the 10th is cut
        Assert.StartsWith(argv[10], args[9], StringComparison.Ordinal);
    }

    // ---- connect ---------------------------------------------------------

    /// <summary>Runs a client in the namespace against a listener of ours and checks its connect event field by field.</summary>
    private static void AssertClientConnect(string mode, bool v6)
    {
        using var probes = LoadProbes(ProbeSet.Exec | ProbeSet.Connect);
        using var log = new EventLog(probes);
        using var ns = ProbeNetns.Create();
        var host = IPAddress.Parse(v6 ? ns.HostV6 : ns.HostV4);
        bool tcp = mode == "tcp";
        using var listener = tcp ? new Socket(host.AddressFamily, SocketType.Stream, ProtocolType.Tcp) : new Socket(host.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        listener.Bind(new IPEndPoint(host, 0));
        if (tcp)
            listener.Listen(8);
        int port = ((IPEndPoint)listener.LocalEndPoint!).Port;

        var (pid, localPort) = ns.RunClient(mode, host.ToString(), port);
        Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Connect, pid)), $"no connect event for {mode}");
        log.Settle();

        var ev = log.Connects(pid).Single(); // sendto twice to one destination: reported once
        var exec = log.Execs(pid).Last();
        var expectedKind = mode switch { "tcp" => ConnectKind.Tcp, "udp-connect" => ConnectKind.Udp, _ => ConnectKind.UdpSend };
        Assert.Equal(expectedKind, ev.ConnectKind);
        Assert.Equal(v6 ? 10 : 2, ev.Tuple.Family);
        Assert.Equal(tcp ? 6 : 17, ev.Tuple.Proto);
        Assert.Equal(host, EventReader.Destination(ev.Tuple));
        Assert.Equal(port, ev.Tuple.Dport);
        Assert.Equal(localPort, ev.Tuple.Sport);
        // an unconnected UDP socket has no source address until the route picks one per packet
        var expectedSource = mode is "sendto" or "sendmsg" ? (v6 ? IPAddress.IPv6Any : IPAddress.Any) : IPAddress.Parse(v6 ? ns.NsV6 : ns.NsV4);
        Assert.Equal(expectedSource, EventReader.Source(ev.Tuple));
        Assert.Equal((uint)pid, ev.Pid);
        Assert.Equal((uint)pid, ev.Tid);
        Assert.Equal(0u, ev.Uid);
        Assert.Equal(ns.Inode, ev.NetnsIno);
        Assert.Equal("python3", EventReader.CString(ev.Comm));
        Assert.Equal(ProbeNetns.Python, EventReader.CString(exec.Filename, exec.FilenameLen));
        Assert.Equal(exec.ExecId, ev.ExecId);
        Assert.Equal(exec.CgroupId, ev.CgroupId);
        Assert.Equal(0UL, probes.FilteredConnects);
    }

    [KernelFact]
    public void Connect_TcpV4FromNetns_EventFieldByField() => AssertClientConnect("tcp", v6: false);

    [KernelFact]
    public void Connect_TcpV6FromNetns_EventFieldByField() => AssertClientConnect("tcp", v6: true);

    [KernelFact]
    public void Connect_UdpConnectV4FromNetns_EventFieldByField() => AssertClientConnect("udp-connect", v6: false);

    [KernelFact]
    public void Connect_UdpConnectV6FromNetns_EventFieldByField() => AssertClientConnect("udp-connect", v6: true);

    [KernelFact]
    public void Connect_UdpSendtoV4Unconnected_ReportedOncePerDestination() => AssertClientConnect("sendto", v6: false);

    [KernelFact]
    public void Connect_UdpSendtoV6Unconnected_ReportedOncePerDestination() => AssertClientConnect("sendto", v6: true);

    [KernelFact]
    public void Connect_UdpSendmsgV4Unconnected_EventFieldByField() => AssertClientConnect("sendmsg", v6: false);

    [KernelFact]
    public void Connect_UdpSendmsgV6Unconnected_EventFieldByField() => AssertClientConnect("sendmsg", v6: true);

    [KernelFact]
    public void Connect_TcpOnTheHostToLoopback_HostNetnsAndTuple()
    {
        using var probes = LoadProbes(ProbeSet.Exec | ProbeSet.Connect);
        using var log = new EventLog(probes);
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;

        var (pid, localPort) = ProbeNetns.RunClientProcess(Process.Start(new ProcessStartInfo(ProbeNetns.Python, ["-c", ProbeNetns.Client, "tcp", "127.0.0.1", port.ToString(CultureInfo.InvariantCulture)]) { RedirectStandardOutput = true })!);
        Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Connect, pid)));

        var ev = log.Connects(pid).Single();
        Assert.Equal(ConnectKind.Tcp, ev.ConnectKind);
        Assert.Equal("127.0.0.1:" + localPort, $"{EventReader.Source(ev.Tuple)}:{ev.Tuple.Sport}");
        Assert.Equal("127.0.0.1:" + port, $"{EventReader.Destination(ev.Tuple)}:{ev.Tuple.Dport}");
        Assert.Equal(Attribution.CurrentNetnsInode(), ev.NetnsIno);
        Assert.Equal(log.Execs(pid).Single().ExecId, ev.ExecId);
        Assert.Equal(CgroupIdOfSelf(), ev.CgroupId);
    }

    /// <summary>bash's /dev/tcp connects with a blocking connect(): the call returns only after the handshake.</summary>
    private static Process BlockingConnect(ProbeNetns ns, string host, int port) =>
        ns.Start(["/usr/bin/bash", "-c", $"exec 3<>/dev/tcp/{host}/{port}; echo connected"]);

    [KernelFact]
    public void Connect_BlockingTcpAnswered_ReportedWhenTheHandshakeEnds()
    {
        using var probes = LoadProbes(ProbeSet.Exec | ProbeSet.Connect);
        using var log = new EventLog(probes);
        using var ns = ProbeNetns.Create();
        using var listener = new TcpListener(IPAddress.Parse(ns.HostV4), 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;

        int pid;
        using (var p = BlockingConnect(ns, ns.HostV4, port))
        {
            pid = p.Id;
            Assert.Equal("connected", p.StandardOutput.ReadLine());
            Assert.True(p.WaitForExit(TimeSpan.FromSeconds(10)));
        }
        using var accepted = listener.AcceptSocket();
        Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Connect, pid)));
        log.Settle();

        var ev = log.Connects(pid).Single();
        Assert.Equal(ConnectKind.Tcp, ev.ConnectKind);
        Assert.Equal(accepted.RemoteEndPoint, new IPEndPoint(EventReader.Source(ev.Tuple), ev.Tuple.Sport));
        Assert.Equal(accepted.LocalEndPoint, new IPEndPoint(EventReader.Destination(ev.Tuple), ev.Tuple.Dport));
        Assert.Equal("bash", EventReader.CString(ev.Comm));
        Assert.Equal(log.Execs(pid).Last().ExecId, ev.ExecId);
        Assert.Equal(ns.Inode, ev.NetnsIno);
    }

    [KernelFact]
    public void Connect_BlockingTcpRefused_SourcePortReported()
    {
        using var probes = LoadProbes(ProbeSet.Exec | ProbeSet.Connect);
        using var log = new EventLog(probes);
        using var ns = ProbeNetns.Create();
        int port;
        using (var closed = new TcpListener(IPAddress.Parse(ns.HostV4), 0))
        {
            closed.Start();
            port = ((IPEndPoint)closed.LocalEndpoint).Port;
        } // nothing listens there now: the SYN is answered with a RST

        int pid;
        using (var p = ns.Start(["/usr/bin/bash", "-c", $"exec 3<>/dev/tcp/{ns.HostV4}/{port} || exit 7; echo connected"]))
        {
            pid = p.Id;
            Assert.True(p.WaitForExit(TimeSpan.FromSeconds(10)));
            Assert.Equal(7, p.ExitCode); // connection refused
        }
        Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Connect, pid)), "no connect event for a refused connect");
        log.Settle();

        var ev = log.Connects(pid).Single();
        Assert.Equal(ConnectKind.Tcp, ev.ConnectKind);
        Assert.Equal(port, ev.Tuple.Dport);
        Assert.InRange(ev.Tuple.Sport, 1024, 65535); // the ephemeral port the SYN left from, not 0
        Assert.Equal(IPAddress.Parse(ns.NsV4), EventReader.Source(ev.Tuple));
    }

    [KernelFact]
    public void Connect_BlockingTcpUnanswered_ReportedAtTheFirstSynRetransmit()
    {
        using var probes = LoadProbes(ProbeSet.Exec | ProbeSet.Connect);
        using var log = new EventLog(probes);
        using var ns = ProbeNetns.Create();

        using var p = BlockingConnect(ns, ns.Unanswering, 80);
        try
        {
            // connect() is still blocked: the SYN went nowhere; the retransmit after ~1 s reports it (the bound is for a
            // loaded machine, where starting ip netns exec and bash alone can take seconds; connect() blocks for minutes)
            Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Connect, p.Id), seconds: 30), "no connect event while connect() blocks");
            Assert.False(p.HasExited);
            var ev = log.Connects(p.Id).Single();
            Assert.Equal(ConnectKind.Tcp, ev.ConnectKind);
            Assert.Equal(IPAddress.Parse(ns.Unanswering), EventReader.Destination(ev.Tuple));
            Assert.Equal(80, ev.Tuple.Dport);
            Assert.NotEqual(0, ev.Tuple.Sport);
            Assert.Equal(IPAddress.Parse(ns.NsV4), EventReader.Source(ev.Tuple));
        }
        finally
        {
            p.Kill(true);
            p.WaitForExit(TimeSpan.FromSeconds(10));
        }
        log.Settle();
        Assert.Single(log.Connects(p.Id)); // the interrupted connect() does not report it again
    }

    [KernelFact]
    public void Connect_ByAForkedChildThatNeverExecs_NamesTheParentsImage()
    {
        using var probes = LoadProbes(ProbeSet.Exec | ProbeSet.Connect);
        using var log = new EventLog(probes);
        using var ns = ProbeNetns.Create();
        using var listener = new TcpListener(IPAddress.Parse(ns.HostV4), 0);
        listener.Start();
        const string forking = """
            import os, socket, sys
            pid = os.fork()
            if pid == 0:
                s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
                print(os.getpid(), s.getsockname()[1], flush=True)
                os._exit(0)
            os.waitpid(pid, 0)
            """;

        int parent;
        string line;
        using (var p = ns.Start([ProbeNetns.Python, "-c", forking, ns.HostV4, ((IPEndPoint)listener.LocalEndpoint).Port.ToString(CultureInfo.InvariantCulture)]))
        {
            parent = p.Id;
            line = p.StandardOutput.ReadLine()!;
            Assert.True(p.WaitForExit(TimeSpan.FromSeconds(15)));
        }
        int child = int.Parse(line.Split(' ')[0], CultureInfo.InvariantCulture);
        Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Connect, child)));

        var ev = log.Connects(child).Single();
        Assert.Empty(log.Execs(child));
        Assert.Equal(log.Execs(parent).Last().ExecId, ev.ExecId);
        Assert.Equal(int.Parse(line.Split(' ')[1], CultureInfo.InvariantCulture), ev.Tuple.Sport);
    }

    [KernelFact]
    public void ConnectFilter_ExcludedCidrs_NoEventInRingAndCounted()
    {
        using var ns = ProbeNetns.Create();
        using var probes = LoadProbes(ProbeSet.Exec | ProbeSet.Connect, ns.ExcludedV4Cidr, ns.ExcludedV6Cidr);
        using var log = new EventLog(probes);
        using var tcp4 = new TcpListener(IPAddress.Any, 0);
        tcp4.Start();
        int port = ((IPEndPoint)tcp4.LocalEndpoint).Port;
        using var tcp6 = new TcpListener(IPAddress.IPv6Any, port);
        tcp6.Server.DualMode = false;
        tcp6.Start();

        var excluded = new[]
        {
            ns.RunClient("tcp", ns.ExcludedHostV4, port),
            ns.RunClient("tcp", ns.ExcludedHostV6, port),
            ns.RunClient("udp-connect", ns.ExcludedHostV4, port),
            ns.RunClient("sendto", ns.ExcludedHostV6, port),
            ns.RunClient("sendto", "::ffff:" + ns.ExcludedHostV4, port), // IPv4-mapped: the IPv4 list applies
        };
        var allowed = ns.RunClient("tcp", ns.HostV4, port);
        Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Connect, allowed.Pid)), "the connect outside the excluded CIDRs was not reported");
        log.Settle();

        foreach (var (pid, _) in excluded)
        {
            Assert.NotEmpty(log.Execs(pid)); // the process ran and was seen
            Assert.Empty(log.Connects(pid));
        }
        var excludedNets = new[] { Cidrs.Parse(ns.ExcludedV4Cidr), Cidrs.Parse(ns.ExcludedV6Cidr) };
        Assert.DoesNotContain(log.Of<ConnectEvent>(EventKind.Connect), e => excludedNets.Any(n => n.Contains(EventReader.Destination(e.Tuple))));
        Assert.Equal(IPAddress.Parse(ns.HostV4), EventReader.Destination(log.Connects(allowed.Pid).Single().Tuple));
        // sendto sends twice to one destination: each send is filtered, and counted
        Assert.Equal(7UL, probes.FilteredConnects);
    }

    [KernelFact]
    public void ConnectFilter_TetragonQuickstartPolicy_ExcludesItsNotDAddrListInTheKernel()
    {
        using var ns = ProbeNetns.Create();
        var policy = TracingPolicyReader.ReadFile(Path.Combine(AppContext.BaseDirectory, "testdata", "tetragon_network_egress_cluster.yaml"),
            name => name switch { "PODCIDR" => ns.ExcludedV4Cidr, "SERVICECIDR" => "10.96.0.0/12", _ => null });
        Prerequisites.EnsureKernelAccess();
        using var probes = TracingProbes.Load(new ProbeOptions { Enabled = ProbeSet.Exec | ProbeSet.Connect, ConnectFilters = policy.Filters });
        probes.Attach();
        using var log = new EventLog(probes);
        using var any = new TcpListener(IPAddress.Any, 0);
        any.Start();
        int port = ((IPEndPoint)any.LocalEndpoint).Port;

        (int Pid, int Port) HostClient(string host) => ProbeNetns.RunClientProcess(Process.Start(new ProcessStartInfo(ProbeNetns.Python,
            ["-c", ProbeNetns.Client, "tcp", host, port.ToString(CultureInfo.InvariantCulture)]) { RedirectStandardOutput = true })!);
        // the counter is machine-wide and other processes use 127.0.0.1 too: each of ours adds at least one
        ulong f0 = probes.UnselectedConnects;
        var loopback = HostClient("127.0.0.1");              // NotDAddr 127.0.0.1
        ulong f1 = probes.UnselectedConnects;
        var pod = ns.RunClient("tcp", ns.ExcludedHostV4, port); // NotDAddr ${PODCIDR}
        ulong f2 = probes.UnselectedConnects;
        var otherLoopback = HostClient("127.0.0.2");         // 127.0.0.1 is a /32: reported
        var outside = ns.RunClient("tcp", ns.HostV4, port);      // reported
        Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Connect, outside.Pid)));
        Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Connect, otherLoopback.Pid)));
        log.Settle();

        Assert.Empty(log.Connects(loopback.Pid));
        Assert.Empty(log.Connects(pod.Pid));
        Assert.Equal(IPAddress.Parse("127.0.0.2"), EventReader.Destination(log.Connects(otherLoopback.Pid).Single().Tuple));
        Assert.Equal(IPAddress.Parse(ns.HostV4), EventReader.Destination(log.Connects(outside.Pid).Single().Tuple));
        Assert.True(f1 > f0 && f2 > f1, $"filtered connects {f0} -> {f1} -> {f2}");
    }

    [KernelFact]
    public void Probes_ConnectSwitchedOff_NoConnectProgramAndNoConnectEvents()
    {
        using var probes = LoadProbes(ProbeSet.Exec);
        using var log = new EventLog(probes);
        using var ns = ProbeNetns.Create();
        using var listener = new TcpListener(IPAddress.Parse(ns.HostV4), 0);
        listener.Start();

        var (pid, _) = ns.RunClient("tcp", ns.HostV4, ((IPEndPoint)listener.LocalEndpoint).Port);
        Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Exec, pid)));
        log.Settle();

        Assert.DoesNotContain("fx_tcp_state", probes.Programs);
        Assert.DoesNotContain("fx_kfree_skb", probes.Programs);
        Assert.Contains("fx_exec", probes.Programs);
        Assert.Empty(log.Of<ConnectEvent>(EventKind.Connect));
        Assert.Empty(log.Of<KdropEvent>(EventKind.Kdrop));
        Assert.Equal(0UL, probes.Counters()[EventKind.Connect].Emitted);
        Assert.NotEmpty(log.Execs(pid));
    }

    // ---- processes older than the recording --------------------------------

    [KernelFact]
    public void SeedProcesses_ProcessStartedBeforeLoad_HasIdentityAndItsConnectNamesIt()
    {
        using var ns = ProbeNetns.Create();
        using var listener = new TcpListener(IPAddress.Parse(ns.HostV4), 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var cwd = Directory.CreateTempSubdirectory("fxp-old-");
        var old = ns.Start([ProbeNetns.Python, "-c", ProbeNetns.Client, "wait-tcp", ns.HostV4, port.ToString(CultureInfo.InvariantCulture)], cwd.FullName, stdin: true);
        try
        {
            // wait until ip netns exec has become python
            var sw = Stopwatch.StartNew();
            while (!(new FileInfo($"/proc/{old.Id}/exe").LinkTarget ?? "").Contains("python", StringComparison.Ordinal) && sw.Elapsed.TotalSeconds < 10)
                Thread.Sleep(20);

            using var probes = LoadProbes(ProbeSet.Exec | ProbeSet.Connect);
            using var log = new EventLog(probes);
            var seeded = probes.SeedProcesses();

            var p = seeded.Single(s => s.Pid == (uint)old.Id);
            Assert.Equal(new FileInfo(ProbeNetns.Python).ResolveLinkTarget(true)!.FullName, p.Binary);
            Assert.Equal([ProbeNetns.Python, "-c", ProbeNetns.Client, "wait-tcp", ns.HostV4, port.ToString(CultureInfo.InvariantCulture)], p.Argv);
            Assert.Equal(cwd.FullName, p.Cwd);
            Assert.Equal(ns.Inode, p.NetnsIno);
            Assert.Equal((uint)Environment.ProcessId, p.Ppid);
            Assert.Equal("python3", p.Comm);
            Assert.Equal(CgroupIdOfSelf(), p.CgroupId);
            var self = seeded.Single(s => s.Pid == (uint)Environment.ProcessId);
            Assert.Equal(self.ExecId, p.ParentExecId);
            Assert.Equal(p.ExecId, probes.ExecIdOf(p.Pid));
            Assert.Equal(self.ExecId, probes.ExecIdOf(self.Pid));

            var rec = EventReader.Read<ExecEvent>(p.ToExecRecord(0));
            Assert.True(rec.Flags.HasFlag(ExecFlags.Procfs));
            Assert.Equal(p.ExecId, rec.ExecId);

            // the old process connects now: its event names the seeded image
            old.StandardInput.WriteLine();
            var (pid, localPort) = ProbeNetns.RunClientProcess(old);
            Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Connect, pid)));
            var ev = log.Connects(pid).Single();
            Assert.Equal(p.ExecId, ev.ExecId);
            Assert.Equal(localPort, ev.Tuple.Sport);
            Assert.Empty(log.Execs(pid)); // it never exec'd during the recording

            // a new child of this (seeded) process names it as its parent image
            int child;
            using (var c = Process.Start("/usr/bin/true")!)
            {
                child = c.Id;
                Assert.True(c.WaitForExit(TimeSpan.FromSeconds(10)));
            }
            Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Exec, child)));
            Assert.Equal(self.ExecId, log.Execs(child).Single().ParentExecId);
        }
        finally
        {
            try
            {
                old.Kill(true);
            }
            catch (InvalidOperationException)
            {
                // already ended (and disposed by RunClientProcess)
            }
            old.Dispose();
            cwd.Delete(true);
        }
    }

    // ---- kernel drops --------------------------------------------------------

    private static void AssertNoSocketDrop(string mode, bool v6)
    {
        using var probes = LoadProbes(ProbeSet.Kdrop);
        using var log = new EventLog(probes);
        using var ns = ProbeNetns.Create();
        var reasons = KernelDropReasons.FromRunningKernel();
        var symbols = KernelSymbols.Load();
        var host = IPAddress.Parse(v6 ? ns.HostV6 : ns.HostV4);
        int closedPort;
        using (var probe = new Socket(host.AddressFamily, mode == "tcp" ? SocketType.Stream : SocketType.Dgram, mode == "tcp" ? ProtocolType.Tcp : ProtocolType.Udp))
        {
            probe.Bind(new IPEndPoint(host, 0));
            closedPort = ((IPEndPoint)probe.LocalEndPoint!).Port; // free now, closed once disposed
        }
        int proto = mode == "tcp" ? 6 : 17;
        bool Match(byte[] e)
        {
            if (EventReader.Header(e).Kind != EventKind.Kdrop)
                return false;
            var k = EventReader.Read<KdropEvent>(e);
            return k.Tuple.Proto == proto && k.Tuple.Dport == closedPort && EventReader.Destination(k.Tuple).Equals(host);
        }

        var (_, localPort) = ns.RunClient(mode, host.ToString(), closedPort);
        Assert.True(log.WaitFor(Match), $"no kernel drop of the {mode} packet to the closed port");

        var drop = EventReader.Read<KdropEvent>(log.Events.First(Match));
        Assert.Equal("NO_SOCKET", reasons.Name(drop.Reason));
        Assert.Equal(IPAddress.Parse(v6 ? ns.NsV6 : ns.NsV4), EventReader.Source(drop.Tuple));
        Assert.Equal(localPort, drop.Tuple.Sport);
        Assert.Equal(v6 ? 10 : 2, drop.Tuple.Family);
        Assert.Equal(v6 ? 0x86dd : 0x0800, drop.L3Proto);
        if (mode == "tcp")
            Assert.Equal(0x02, drop.Tuple.TcpFlags); // the SYN
        Assert.Equal((uint)ns.HostIfindex, drop.Ifindex); // received on our veth's host end
        Assert.Equal(Attribution.CurrentNetnsInode(), drop.NetnsIno);
        // from the IP header on: IPv4 20 / IPv6 40, UDP 8 + 1 byte of data, TCP 20 + SYN options
        if (mode == "tcp")
            Assert.InRange(drop.PktLen, v6 ? 60u : 40u, v6 ? 100u : 80u);
        else
            Assert.Equal(v6 ? 49u : 29u, drop.PktLen);
        var function = symbols.Resolve(drop.Location);
        Assert.Matches(FunctionPattern(), function);
        Assert.Contains(mode == "tcp" ? "tcp" : "udp", function, StringComparison.Ordinal);
        // consumed packets are not drops: no event carries a reason up to SKB_CONSUMED
        Assert.DoesNotContain(log.Of<KdropEvent>(EventKind.Kdrop), k => k.Reason <= reasons.Value("CONSUMED"));
    }

    [GeneratedRegex(@"^[A-Za-z_][A-Za-z0-9_.]*\+0x[0-9a-f]+$")]
    private static partial Regex FunctionPattern();

    [KernelFact]
    public void Kdrop_UdpV4ToPortWithoutSocket_NoSocketReasonWithTupleAndFunction() => AssertNoSocketDrop("sendto", v6: false);

    [KernelFact]
    public void Kdrop_UdpV6ToPortWithoutSocket_NoSocketReasonWithTupleAndFunction() => AssertNoSocketDrop("sendto", v6: true);

    [KernelFact]
    public void Kdrop_TcpSynV4ToClosedPort_NoSocketReasonWithTupleAndFunction() => AssertNoSocketDrop("tcp", v6: false);

    [KernelFact]
    public void Kdrop_UdpFromHostIntoNetns_DropAttributedToTheNetnsAndItsDevice()
    {
        using var probes = LoadProbes(ProbeSet.Kdrop);
        using var log = new EventLog(probes);
        using var ns = ProbeNetns.Create();
        var reasons = KernelDropReasons.FromRunningKernel();
        int nsIfindex = int.Parse(Cmd.Run("ip", "netns", "exec", ns.Name, "cat", $"/sys/class/net/{ns.Name}-n/ifindex").Trim(), CultureInfo.InvariantCulture);
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        client.Bind(new IPEndPoint(IPAddress.Parse(ns.HostV4), 0));
        const int port = 9; // nothing listens in a fresh namespace
        bool Match(byte[] e) => EventReader.Header(e).Kind == EventKind.Kdrop && EventReader.Read<KdropEvent>(e) is var k
            && k.Tuple.Proto == 17 && k.Tuple.Dport == port && EventReader.Destination(k.Tuple).Equals(IPAddress.Parse(ns.NsV4));

        client.SendTo([1, 2, 3], new IPEndPoint(IPAddress.Parse(ns.NsV4), port));
        Assert.True(log.WaitFor(Match), "no drop inside the namespace");

        var drop = EventReader.Read<KdropEvent>(log.Events.First(Match));
        Assert.Equal("NO_SOCKET", reasons.Name(drop.Reason));
        Assert.Equal(ns.Inode, drop.NetnsIno);
        Assert.Equal((uint)nsIfindex, drop.Ifindex);
        Assert.Equal(((IPEndPoint)client.LocalEndPoint!).Port, drop.Tuple.Sport);
        Assert.Equal(ns.Name, new Attribution().NetnsName(drop.NetnsIno));
    }

    [KernelFact]
    public void KernelDropReasons_FromBtf_MatchTheTracepointsOwnNames()
    {
        Prerequisites.EnsureKernelAccess();
        var reasons = KernelDropReasons.FromRunningKernel();
        var format = File.ReadAllText("/sys/kernel/tracing/events/skb/kfree_skb/format");
        var pairs = TracepointSymbol().Matches(format).Select(m => (Value: uint.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), Name: m.Groups[2].Value)).ToList();

        Assert.True(pairs.Count > 10, "the tracepoint's format lists its reasons");
        foreach (var (value, name) in pairs)
            Assert.Equal(name, reasons.Name(value));
    }

    [GeneratedRegex(@"\{ (\d+), ""([A-Z0-9_]+)"" \}")]
    private static partial Regex TracepointSymbol();
}
