using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Monitoring;

namespace Forensics.Datapath.Tests;

/// <summary>
/// The monitor socket without the kernel: a server fed records as the ring buffer thread feeds it, real unix
/// sockets, real clients. Each client gets every record it asked for in order, or a count of what it lost.
/// </summary>
public sealed class MonitorSocketTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("fxmon-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    private string SocketPath => Path.Combine(dir, "run", "monitor.sock");

    private MonitorServer Server(int queueBytes = 1 << 20, Func<IReadOnlyList<StatsEntry>>? kernel = null) => new(new MonitorServerOptions
    {
        SocketPath = SocketPath,
        QueueBytes = queueBytes,
        Cpus = 4,
        StatsInterval = TimeSpan.FromMilliseconds(100),
        KernelCounters = kernel ?? (() => []),
        Hello = new MonitorHello { Lab = "t", Node = "n", PinDir = "/sys/fs/bpf/forensics/t" },
    });

    /// <summary>A record as the ring buffer holds one: fx_hdr (kind, version, size, cpu, ktime) and a payload.</summary>
    private static byte[] Record(EventKind kind, uint cpu, ulong seq, int size = 88)
    {
        var r = new byte[size];
        r[0] = (byte)kind;
        r[1] = Limits.AbiVersion;
        BinaryPrimitives.WriteUInt16LittleEndian(r.AsSpan(2), (ushort)size);
        BinaryPrimitives.WriteUInt32LittleEndian(r.AsSpan(4), cpu);
        BinaryPrimitives.WriteUInt64LittleEndian(r.AsSpan(8), seq);
        r[size - 1] = (byte)seq;
        return r;
    }

    private sealed class Collect : IMonitorHandler
    {
        public readonly List<byte[]> Records = [];
        public readonly List<IReadOnlyList<StatsEntry>> Stats = [];
        public Func<bool>? StopWhen;
        public CancellationTokenSource Stop = new();

        public void OnEvent(ReadOnlySpan<byte> record)
        {
            Records.Add(record.ToArray());
            Check();
        }

        public void OnStats(IReadOnlyList<StatsEntry> stats)
        {
            Stats.Add(stats);
            Check();
        }

        private void Check()
        {
            if (StopWhen?.Invoke() == true)
                Stop.Cancel();
        }
    }

    private static Thread Run(MonitorClient c, Collect h)
    {
        var t = new Thread(() =>
        {
            try
            {
                c.Run(h, h.Stop.Token);
            }
            catch (IOException)
            {
            }
        }) { IsBackground = true };
        t.Start();
        return t;
    }

    private static void WaitFor(Func<bool> condition, string what)
    {
        var sw = Stopwatch.StartNew();
        while (!condition())
        {
            if (sw.Elapsed > TimeSpan.FromSeconds(20))
                throw new TimeoutException(what);
            Thread.Sleep(5);
        }
    }

    [Fact]
    public void Wire_StatsFrame_RoundTrips()
    {
        StatsEntry[] entries = [new(0, EventKind.Drop, 10, 1, 2), new(3, EventKind.Trace, ulong.MaxValue, 0, 7)];
        var frame = MonitorWire.StatsFrame(entries);
        var (type, len) = MonitorWire.ReadHeader(frame);
        Assert.Equal(FrameType.Stats, type);
        Assert.Equal(entries, MonitorWire.ReadStats(frame.AsSpan(MonitorWire.HeaderBytes, len)));
    }

    [Fact]
    public void Wire_UnknownTypeOrOversizedFrame_Refused()
    {
        var h = new byte[8];
        MonitorWire.WriteHeader(h, (FrameType)99, 4);
        Assert.Throws<InvalidDataException>(() => MonitorWire.ReadHeader(h));
        MonitorWire.WriteHeader(h, FrameType.Event, MonitorWire.MaxEventPayload + 1);
        Assert.Throws<InvalidDataException>(() => MonitorWire.ReadHeader(h));
    }

    [Fact]
    public void Server_SocketAndFolder_OwnerOnly()
    {
        using var server = Server();
        if (!OperatingSystem.IsLinux())
            throw new PlatformNotSupportedException("unix file modes");
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(SocketPath));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(Path.GetDirectoryName(SocketPath)!));
    }

    [Fact]
    public void Client_RecordsPublished_EveryRecordByteForByteInOrder()
    {
        using var server = Server();
        using var client = MonitorClient.Connect(SocketPath, [], "test", TimeSpan.FromSeconds(5));
        Assert.Equal("t", client.Hello.Lab);
        Assert.Equal("/sys/fs/bpf/forensics/t", client.Hello.PinDir);
        Assert.Equal(1 << 20, client.Hello.QueueBytes);
        var sent = Enumerable.Range(0, 5000).Select(i => Record(i % 3 == 0 ? EventKind.Drop : EventKind.Trace, (uint)(i % 4), (ulong)i, 88 + i % 17)).ToList();
        foreach (var r in sent)
            server.Publish(r);
        server.Flush();
        var h = new Collect();
        h.StopWhen = () => h.Records.Count == sent.Count;
        Run(client, h).Join(TimeSpan.FromSeconds(20));
        Assert.Equal(sent.Count, h.Records.Count);
        for (int i = 0; i < sent.Count; i++)
            Assert.Equal(sent[i], h.Records[i]);
    }

    [Fact]
    public void Client_SubscribedToDrops_GetsDropsOnly()
    {
        using var server = Server();
        using var client = MonitorClient.Connect(SocketPath, ["drop"], "test", TimeSpan.FromSeconds(5));
        for (int i = 0; i < 300; i++)
            server.Publish(Record(i % 2 == 0 ? EventKind.Drop : EventKind.Trace, 0, (ulong)i));
        server.Publish(Record(EventKind.Drop, 1, 1000));
        server.Flush();
        var h = new Collect();
        h.StopWhen = () => h.Records.Count > 0 && BinaryPrimitives.ReadUInt64LittleEndian(h.Records[^1].AsSpan(8)) == 1000;
        Run(client, h).Join(TimeSpan.FromSeconds(20));
        Assert.Equal(151, h.Records.Count);
        Assert.All(h.Records, r => Assert.Equal((byte)EventKind.Drop, r[0]));
    }

    [Fact]
    public void Client_UnknownKind_RefusedWithReason()
    {
        using var server = Server();
        var e = Assert.Throws<MonitorConnectException>(() => MonitorClient.Connect(SocketPath, ["bogus"], "test", TimeSpan.FromSeconds(5)));
        Assert.Contains("unknown event kind 'bogus'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Client_NoServer_OneLineError()
    {
        var e = Assert.Throws<MonitorConnectException>(() => MonitorClient.Connect(SocketPath, [], "test", TimeSpan.FromSeconds(5)));
        Assert.StartsWith(SocketPath, e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void SlowClient_QueueFull_DropsCountedPerCpuAndOthersGetEverything()
    {
        using var server = Server(queueBytes: 4096);
        using var stalled = MonitorClient.Connect(SocketPath, [], "stalled", TimeSpan.FromSeconds(5)); // never reads
        using var reader = MonitorClient.Connect(SocketPath, [], "reader", TimeSpan.FromSeconds(5));
        var h = new Collect();
        var readerThread = Run(reader, h);
        int n = 0, published = 0;
        // The stalled client's socket buffer and 4 KiB queue fill; the reader keeps up (its sender drains its queue).
        // A round is 20 frames of 96 bytes, under half the reader's queue: the reader has a round when its sender may
        // not yet have moved the queue's tail past it (a descheduled sender), and a stats frame may be queued beside them.
        for (int round = 0; round < 400; round++)
        {
            for (int i = 0; i < 20; i++, n++)
            {
                server.Publish(Record(EventKind.Trace, (uint)(n % 4), (ulong)n));
                published++;
            }
            server.Flush();
            WaitFor(() => h.Records.Count == published, "the reading client fell behind");
        }
        Assert.Equal(published, h.Records.Count);
        // The stalled client: what it will still receive (socket buffer + queue) plus what was dropped is everything.
        var s = new Collect();
        s.StopWhen = () => s.Stats.Count > 0 && s.Stats[^1].Sum(e => (long)e.Dropped) + s.Records.Count == published;
        var stalledThread = Run(stalled, s);
        stalledThread.Join(TimeSpan.FromSeconds(20));
        var last = s.Stats[^1];
        Assert.Equal(published, s.Records.Count + last.Sum(e => (long)e.Dropped));
        Assert.True(last.Sum(e => (long)e.Dropped) > 0);
        // drops are counted on the CPU the record came from: 4 CPUs, evenly
        Assert.Equal(4, last.Count(e => e.Dropped > 0 && e.Kind == EventKind.Trace));
        h.Stop.Cancel();
        readerThread.Join(TimeSpan.FromSeconds(5));
    }

    [Fact]
    public void KilledClient_ConnectionReset_ServerDropsItAndOthersContinue()
    {
        using var server = Server();
        var killed = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        killed.Connect(new UnixDomainSocketEndPoint(SocketPath));
        killed.Send(MonitorWire.ControlFrame(FrameType.Subscribe, new MonitorSubscribe()));
        killed.Receive(new byte[4096]); // the hello: it is a member now
        using var other = MonitorClient.Connect(SocketPath, [], "other", TimeSpan.FromSeconds(5));
        Assert.Equal(2, server.ClientCount);
        killed.LingerState = new LingerOption(true, 0); // close with a reset, as the kernel does for a killed process
        killed.Dispose();
        for (int i = 0; i < 1000; i++)
            server.Publish(Record(EventKind.Drop, 0, (ulong)i));
        server.Flush();
        WaitFor(() => server.ClientCount == 1, "the server kept the killed client");
        var h = new Collect();
        h.StopWhen = () => h.Records.Count == 1000;
        Run(other, h).Join(TimeSpan.FromSeconds(20));
        Assert.Equal(1000, h.Records.Count);
    }

    [Fact]
    public void Stats_KernelCounters_ForTheClientsKindsWithItsDrops()
    {
        StatsEntry[] kernel = [new(0, EventKind.Drop, 100, 3, 0), new(1, EventKind.Trace, 500, 0, 0)];
        using var server = Server(kernel: () => kernel);
        using var client = MonitorClient.Connect(SocketPath, ["drop"], "test", TimeSpan.FromSeconds(5));
        var h = new Collect();
        h.StopWhen = () => h.Stats.Count >= 2;
        Run(client, h).Join(TimeSpan.FromSeconds(20));
        Assert.Equal([new StatsEntry(0, EventKind.Drop, 100, 3, 0)], h.Stats[0]);
    }

    [Fact]
    public void ServerDispose_ClientsGetQueuedRecordsThenBye()
    {
        var server = Server();
        using var client = MonitorClient.Connect(SocketPath, [], "test", TimeSpan.FromSeconds(5));
        for (int i = 0; i < 100; i++)
            server.Publish(Record(EventKind.Nat, 0, (ulong)i, 128));
        server.Flush();
        var h = new Collect();
        var t = Run(client, h);
        server.Dispose();
        Assert.True(t.Join(TimeSpan.FromSeconds(20)));
        Assert.Equal(100, h.Records.Count);
        Assert.Equal("the datapath is going down", client.ByeReason);
        Assert.False(File.Exists(SocketPath));
    }
}
