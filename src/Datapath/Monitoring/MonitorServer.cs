using System.Buffers.Binary;
using System.Net.Sockets;
using Forensics.Datapath.Abi;

namespace Forensics.Datapath.Monitoring;

/// <summary>How a datapath's owner serves its events.</summary>
public sealed record MonitorServerOptions
{
    /// <summary>The unix socket to listen on; its folder is made 0700 and the socket 0600 (root only).</summary>
    public required string SocketPath { get; init; }

    /// <summary>What every client is told first (the server fills in the queue size).</summary>
    public required MonitorHello Hello { get; init; }

    /// <summary>The kernel's cumulative per-CPU emission counters (fx_emit_stats); read by each client's sender about once a second.</summary>
    public Func<IReadOnlyList<StatsEntry>> KernelCounters { get; init; } = () => [];

    /// <summary>Bytes of each client's queue (a power of two): what a client may fall behind before its events are dropped.</summary>
    public int QueueBytes { get; init; } = 4 << 20;

    /// <summary>How often each client gets the counters (and so its lost-event lines).</summary>
    public TimeSpan StatsInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Possible CPUs (the range of a record's cpu field).</summary>
    public int Cpus { get; init; } = Environment.ProcessorCount;

    /// <summary>Clients joining and leaving, one line each.</summary>
    public Action<string>? Log { get; init; }
}

/// <summary>
/// Serves a datapath's ring buffer records to local clients, as the Cilium agent serves `cilium monitor`.
/// The owner of the datapath stays the only reader of its ring buffer (a ring buffer has one consumer
/// position: a second reader would take records from the first). Each record it reads is handed to
/// <see cref="Publish"/>, which copies it into every interested client's bounded queue and never waits: a
/// full queue drops the record for that client alone and counts it by CPU and kind. Each client has a
/// thread of its own that sends its queue, and the counters every second, so a slow, stopped or killed
/// client costs the datapath and the other clients nothing. Wire format: docs/monitor.md.
/// </summary>
public sealed class MonitorServer : IDisposable
{
    private const int SolSocket = 1;
    private const int SoPeercred = 17;

    private readonly MonitorServerOptions options;
    private readonly Socket listener;
    private readonly Thread acceptThread;
    private readonly Lock gate = new();
    private readonly List<Thread> clientThreads = [];
    private Client[] clients = [];
    private volatile bool stopping;
    private long served;
    private bool disposed;

    private sealed class Client(int id, Socket socket, uint mask, int queueBytes, int cpus, string who) : IDisposable
    {
        public readonly int Id = id;
        public readonly Socket Socket = socket;
        public readonly uint Mask = mask;
        public readonly FrameQueue Queue = new(queueBytes);
        public readonly int Cpus = cpus;
        // [cpu * Max + kind]; the last row counts records whose cpu is out of range. Written by the ring thread only.
        public readonly ulong[] Dropped = new ulong[(cpus + 1) * (int)EventKind.Max];
        public readonly string Who = who;
        public long Queued; // written by the ring thread only

        public void CountDrop(uint cpu, int kind)
        {
            int row = cpu < (uint)Cpus ? (int)cpu : Cpus;
            Dropped[row * (int)EventKind.Max + kind]++;
        }

        public void Dispose() => Queue.Dispose();
    }

    /// <summary>Binds the socket and starts accepting; throws <see cref="IOException"/> when it cannot.</summary>
    public MonitorServer(MonitorServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (!OperatingSystem.IsLinux())
            throw new PlatformNotSupportedException("a monitor socket needs Linux");
        this.options = options;
        var path = options.SocketPath;
        if (System.Text.Encoding.UTF8.GetByteCount(path) > 107)
            throw new IOException($"monitor socket path {path} is longer than a unix socket address allows (107 bytes)");
        var dir = Path.GetDirectoryName(path)!;
        Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        File.SetUnixFileMode(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        File.Delete(path); // a socket left by an owner that was killed
        listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(path));
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            listener.Listen(16);
        }
        catch (SocketException e)
        {
            listener.Dispose();
            throw new IOException($"cannot listen on {path}: {e.Message}", e);
        }
        acceptThread = new Thread(AcceptLoop) { IsBackground = true, Name = "monitor accept" };
        acceptThread.Start();
    }

    public string SocketPath => options.SocketPath;

    /// <summary>Clients connected now.</summary>
    public int ClientCount => Volatile.Read(ref clients).Length;

    /// <summary>Clients served since the start.</summary>
    public long ClientsServed => Interlocked.Read(ref served);

    /// <summary>
    /// The ring buffer thread: one record, valid only during the call. Copies it into each interested
    /// client's queue, or counts it as dropped for that client. Takes no lock, never waits.
    /// </summary>
    public void Publish(ReadOnlySpan<byte> record)
    {
        var list = Volatile.Read(ref clients);
        if (list.Length == 0 || record.Length < 8)
            return;
        int kind = record[0];
        if (kind >= (int)EventKind.Max)
            kind = 0;
        uint cpu = BinaryPrimitives.ReadUInt32LittleEndian(record[4..]);
        foreach (var c in list)
        {
            if (((c.Mask >> kind) & 1) == 0)
                continue;
            if (!c.Queue.TryWrite(FrameType.Event, record))
            {
                c.CountDrop(cpu, kind);
                continue;
            }
            c.Queued++;
            if (c.Queue.Pending > c.Queue.Capacity / 2)
                c.Queue.Signal();
        }
    }

    /// <summary>The ring buffer thread, after each pass over the ring: wakes the senders that have something to send.</summary>
    public void Flush()
    {
        foreach (var c in Volatile.Read(ref clients))
            c.Queue.Signal();
    }

    private void AcceptLoop()
    {
        int next = 0;
        while (!stopping)
        {
            Socket s;
            try
            {
                s = listener.Accept();
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                if (stopping)
                    return;
                Thread.Sleep(50);
                continue;
            }
            int id = ++next;
            var t = new Thread(() => Serve(s, id)) { IsBackground = true, Name = $"monitor client {id}" };
            lock (gate)
            {
                clientThreads.RemoveAll(x => !x.IsAlive);
                clientThreads.Add(t);
            }
            t.Start();
        }
    }

    private static (int Pid, uint Uid) PeerOf(Socket s)
    {
        var cred = new byte[12];
        try
        {
            int n = s.GetRawSocketOption(SolSocket, SoPeercred, cred);
            if (n >= 12)
                return (BinaryPrimitives.ReadInt32LittleEndian(cred), BinaryPrimitives.ReadUInt32LittleEndian(cred.AsSpan(4)));
        }
        catch (SocketException)
        {
        }
        return (0, uint.MaxValue);
    }

    private void Serve(Socket socket, int id)
    {
        Client? client = null;
        try
        {
            var (pid, uid) = PeerOf(socket);
            if (uid != Interop.LibC.geteuid())
            {
                Send(socket, MonitorWire.ControlFrame(FrameType.Bye, new MonitorBye { Reason = $"uid {uid} may not read this datapath's events (the socket is its owner's)" }));
                return;
            }
            socket.ReceiveTimeout = 5000;
            var (type, payload) = MonitorClient.ReadFrame(socket, new byte[MonitorWire.HeaderBytes]);
            if (type != FrameType.Subscribe)
                throw new InvalidDataException($"expected a subscribe frame, got {type}");
            var sub = MonitorWire.ReadControl<MonitorSubscribe>(payload, type);
            if (sub.Version != MonitorWire.Version)
            {
                Send(socket, MonitorWire.ControlFrame(FrameType.Bye, new MonitorBye { Reason = $"monitor socket version {sub.Version} asked, this datapath serves version {MonitorWire.Version}" }));
                return;
            }
            uint mask = 0;
            foreach (var k in sub.Kinds)
            {
                int i = Array.IndexOf(KindNames, k);
                if (i <= 0)
                {
                    Send(socket, MonitorWire.ControlFrame(FrameType.Bye, new MonitorBye { Reason = $"unknown event kind '{k}'" }));
                    return;
                }
                mask |= 1u << i;
            }
            if (mask == 0)
                mask = ~0u;
            client = new Client(id, socket, mask, options.QueueBytes, Math.Max(1, options.Cpus), $"client {id} ({(sub.Client.Length > 0 ? sub.Client : "?")}, pid {pid})");
            // Join first, then take the counters' baseline: what is emitted from now on is either queued or counted.
            lock (gate)
                Volatile.Write(ref clients, [.. clients, client]);
            Interlocked.Increment(ref served);
            options.Log?.Invoke($"monitor: {client.Who} joined for {(mask == ~0u ? "every kind" : string.Join(",", sub.Kinds))}");
            Send(socket, MonitorWire.ControlFrame(FrameType.Hello, options.Hello with { QueueBytes = options.QueueBytes, Cpus = Math.Max(1, options.Cpus) }));
            Send(socket, MonitorWire.StatsFrame(Stats(client)));
            SendLoop(client);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or IOException or InvalidDataException)
        {
            if (client is not null && !stopping)
                options.Log?.Invoke($"monitor: {client.Who} left ({Reason(e)}) after {Volatile.Read(ref client.Queued)} events");
        }
        finally
        {
            if (client is not null)
            {
                lock (gate)
                    Volatile.Write(ref clients, clients.Where(c => c != client).ToArray());
                client.Dispose();
            }
            socket.Dispose();
        }
    }

    private static string Reason(Exception e) => e is SocketException se ? se.SocketErrorCode switch
    {
        SocketError.ConnectionReset or SocketError.Shutdown or SocketError.ConnectionAborted => "disconnected",
        _ => se.Message,
    } : e.Message;

    private static void Send(Socket s, ReadOnlySpan<byte> bytes)
    {
        while (bytes.Length > 0)
        {
            int n = s.Send(bytes, SocketFlags.None);
            bytes = bytes[n..];
        }
    }

    private void SendLoop(Client c)
    {
        long intervalMs = (long)options.StatsInterval.TotalMilliseconds;
        long nextStats = Environment.TickCount64 + intervalMs;
        long drainUntil = long.MaxValue;
        while (true)
        {
            // Everything pending now ends at a frame boundary (the producer publishes whole frames), so sending
            // all of it, in two pieces when it wraps, leaves the stream at a boundary for the counters' frame.
            long pending = c.Queue.Pending;
            bool sent = pending > 0;
            while (pending > 0)
            {
                var chunk = c.Queue.Peek((int)Math.Min(pending, int.MaxValue));
                Send(c.Socket, chunk.Span);
                c.Queue.Advance(chunk.Length);
                pending -= chunk.Length;
            }
            long now = Environment.TickCount64;
            if (now >= nextStats)
            {
                Send(c.Socket, MonitorWire.StatsFrame(Stats(c)));
                nextStats = now + intervalMs;
            }
            if (stopping)
            {
                if (drainUntil == long.MaxValue)
                    drainUntil = now + 1000;
                if (c.Queue.Pending == 0 || now >= drainUntil)
                    break;
                continue;
            }
            if (!sent)
                c.Queue.Wait((int)Math.Clamp(nextStats - now, 1, intervalMs));
        }
        Send(c.Socket, MonitorWire.StatsFrame(Stats(c)));
        Send(c.Socket, MonitorWire.ControlFrame(FrameType.Bye, new MonitorBye { Reason = "the datapath is going down" }));
        c.Socket.Shutdown(SocketShutdown.Both);
    }

    /// <summary>The kernel's counters for the client's kinds, with the client's own drops, per CPU.</summary>
    private List<StatsEntry> Stats(Client c)
    {
        var result = new Dictionary<(ushort, EventKind), StatsEntry>();
        IReadOnlyList<StatsEntry> kernel;
        try
        {
            kernel = options.KernelCounters();
        }
        catch (Bpf.BpfException)
        {
            kernel = [];
        }
        foreach (var k in kernel)
            if (((c.Mask >> (int)k.Kind) & 1) != 0)
                result[(k.Cpu, k.Kind)] = k with { Dropped = 0 };
        for (int row = 0; row <= c.Cpus; row++)
        {
            for (int kind = 1; kind < (int)EventKind.Max; kind++)
            {
                ulong d = Volatile.Read(ref c.Dropped[row * (int)EventKind.Max + kind]);
                if (d == 0)
                    continue;
                var key = ((ushort)(row < c.Cpus ? row : ushort.MaxValue), (EventKind)kind);
                result[key] = result.GetValueOrDefault(key, new StatsEntry(key.Item1, key.Item2, 0, 0, 0)) with { Dropped = d };
            }
        }
        return [.. result.Values.Where(e => e.Emitted + e.Failed + e.Dropped > 0).OrderBy(e => e.Cpu).ThenBy(e => e.Kind)];
    }

    /// <summary>Table names by event kind (index = kind).</summary>
    internal static readonly string[] KindNames = ["", .. Format.Tables.Events];

    /// <summary>Stops accepting, gives each client a second to take what is queued, says goodbye, removes the socket.</summary>
    public void Dispose()
    {
        if (disposed)
            return;
        disposed = true;
        stopping = true;
        listener.Dispose();
        foreach (var c in Volatile.Read(ref clients))
            c.Queue.WakeUp();
        List<Thread> threads;
        lock (gate)
            threads = [.. clientThreads];
        var deadline = Environment.TickCount64 + 3000;
        foreach (var t in threads)
        {
            if (!t.Join(TimeSpan.FromMilliseconds(Math.Max(0, deadline - Environment.TickCount64))))
                break;
        }
        // a client that does not read (stopped, or its socket buffer full): its send is aborted
        foreach (var c in Volatile.Read(ref clients))
            c.Socket.Dispose();
        foreach (var t in threads)
            t.Join(TimeSpan.FromSeconds(1));
        acceptThread.Join(TimeSpan.FromSeconds(1));
        try
        {
            File.Delete(options.SocketPath);
        }
        catch (IOException)
        {
        }
    }
}
