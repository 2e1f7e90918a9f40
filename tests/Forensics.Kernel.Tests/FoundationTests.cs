using System.Diagnostics;
using Forensics.Datapath;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Bpf;
using Forensics.Tests;

namespace Forensics.Kernel.Tests;

/// <summary>The foundation end to end: a real program loaded by libbpf fires, and C# reads its event.</summary>
public class FoundationTests
{
    private static BpfObject LoadDatapath(uint ringBytes = 1 << 20, uint snaplen = 64)
    {
        Prerequisites.EnsureKernelAccess();
        var obj = BpfObject.OpenEmbedded(EmbeddedObjects.Datapath);
        var cfg = obj.GetReadOnly<Config>("fx_cfg");
        cfg.Snaplen = snaplen;
        obj.SetReadOnly("fx_cfg", cfg);
        obj.SetMaxEntries("fx_events", ringBytes);
        obj.Load();
        return obj;
    }

    [KernelFact]
    public void TcProgram_TestRunCraftedPacket_EventReadThroughRingBuffer()
    {
        using var obj = LoadDatapath();
        var events = new List<byte[]>();
        using var reader = new RingBufferReader(obj.Map("fx_events"), r => events.Add(r.ToArray()));
        var pkt = Packets.Tcp("10.0.0.5", 33978, "198.51.100.10", 443);

        var run = obj.Program("fx_from_endpoint").TestRun(pkt);
        reader.Consume();

        Assert.Equal(0u, run.ReturnValue); // TC_ACT_OK
        var trace = events.Select(e => EventReader.Read<Hdr>(e)).ToList();
        Assert.Contains(trace, h => h.Kind == EventKind.Trace);
        var ev = EventReader.Read<TraceEvent>(events.First(e => EventReader.Header(e).Kind == EventKind.Trace));
        Assert.Equal(Limits.AbiVersion, ev.Hdr.Version);
        Assert.Equal(104, ev.Hdr.Size);
        Assert.Equal("10.0.0.5", EventReader.Source(ev.Tuple).ToString());
        Assert.Equal("198.51.100.10", EventReader.Destination(ev.Tuple).ToString());
        Assert.Equal(33978, ev.Tuple.Sport);
        Assert.Equal(443, ev.Tuple.Dport);
        Assert.Equal(6, ev.Tuple.Proto);
        Assert.Equal(Packets.TcpSyn, ev.Tuple.TcpFlags);
        Assert.Equal(ObsPoint.FromEndpoint, ev.Meta.ObsPoint);
        Assert.Equal((uint)pkt.Length, ev.Meta.PktLen);

        var cap = EventReader.Read<CaptureEvent>(events.First(e => EventReader.Header(e).Kind == EventKind.Capture));
        Assert.Equal(pkt.Length, cap.CapLen); // 54 bytes: all of it, under the snaplen of 64
        Assert.Equal(pkt, ((ReadOnlySpan<byte>)cap.Data)[..pkt.Length].ToArray());
    }

    [KernelFact]
    public void ExecTracepoint_ProcessRuns_ExecAndExitEventsRead()
    {
        Prerequisites.EnsureKernelAccess();
        using var obj = BpfObject.OpenEmbedded(EmbeddedObjects.Probes);
        obj.Load();
        var events = new List<byte[]>();
        using var reader = new RingBufferReader(obj.Map("fx_events"), r => events.Add(r.ToArray()));
        int pid;
        using (obj.Program("fx_exec").Attach())
        using (obj.Program("fx_exit").Attach())
        {
            using var p = Process.Start(new ProcessStartInfo("/bin/sh", ["-c", "exit 7", "forensics-test-arg"]))!;
            pid = p.Id;
            p.WaitForExit();
            var deadline = Stopwatch.StartNew();
            while (deadline.Elapsed < TimeSpan.FromSeconds(5) && !events.Any(e => IsExitOf(e, pid)))
                reader.Poll(100);
        }

        var exec = events.Where(e => EventReader.Header(e).Kind == EventKind.Exec)
            .Select(e => EventReader.Read<ExecEvent>(e)).Single(e => e.Pid == (uint)pid);
        Assert.Equal("/bin/sh", EventReader.CString(exec.Filename, exec.FilenameLen));
        Assert.Equal(["/bin/sh", "-c", "exit 7", "forensics-test-arg"], EventReader.Argv(exec));
        Assert.Equal((uint)Environment.ProcessId, exec.Ppid);
        Assert.NotEqual(0UL, exec.ExecId);
        Assert.Equal(File.ReadAllText("/proc/self/status").Contains("Uid:\t0", StringComparison.Ordinal) ? 0u : exec.Uid, exec.Uid);

        var exit = EventReader.Read<ExitEvent>(events.First(e => IsExitOf(e, pid)));
        Assert.Equal(7u << 8, exit.ExitCode);
        Assert.Equal(exec.ExecId, exit.ExecId);
    }

    private static bool IsExitOf(byte[] e, int pid) =>
        EventReader.Header(e).Kind == EventKind.Exit && EventReader.Read<ExitEvent>(e).Pid == (uint)pid;

    [KernelFact]
    public void EmitFailures_RingTooSmallForBurst_CountEqualsEventsThatDidNotArrive()
    {
        using var obj = LoadDatapath(ringBytes: 4096, snaplen: 0); // one page: a few dozen trace events
        var stats = obj.Map("fx_emit_stats");
        var pkt = Packets.Udp("10.0.0.5", 5353, "10.0.0.6", 53);
        const int burst = 500;

        obj.Program("fx_from_endpoint").TestRun(pkt, repeat: burst); // nothing consumes during the burst
        int received = 0;
        using (var reader = new RingBufferReader(obj.Map("fx_events"), _ => received++))
            reader.Consume();

        var perCpu = stats.LookupPerCpu<uint, EmitStats>((uint)EventKind.Trace);
        ulong emitted = (ulong)perCpu.Sum(s => (long)s.Emitted);
        ulong failed = (ulong)perCpu.Sum(s => (long)s.Failed);
        Assert.Equal((ulong)burst, emitted + failed);
        Assert.True(failed > 0, "the ring should have overflowed");
        Assert.Equal(emitted, (ulong)received);
        Assert.Equal((ulong)burst - (ulong)received, failed);
    }
}
