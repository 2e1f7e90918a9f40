using System.Net.Sockets;
using Forensics.Datapath.Abi;

namespace Forensics.Datapath.Monitoring;

/// <summary>What a monitor client is handed, on the thread that runs <see cref="MonitorClient.Run"/>.</summary>
public interface IMonitorHandler
{
    /// <summary>One record as the datapath's ring buffer held it; valid only during the call.</summary>
    void OnEvent(ReadOnlySpan<byte> record);

    /// <summary>The server's cumulative counters (the first one is the baseline, sent right after the hello).</summary>
    void OnStats(IReadOnlyList<StatsEntry> stats);

    /// <summary>Nothing arrived for a moment (about 20 ms): a recorder hands on what it holds.</summary>
    void OnIdle()
    {
    }
}

/// <summary>A monitor socket that cannot be used: absent, refused, another version, malformed. The message is one line.</summary>
public sealed class MonitorConnectException : Exception
{
    public MonitorConnectException() { }
    public MonitorConnectException(string message) : base(message) { }
    public MonitorConnectException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>
/// A client of a datapath's monitor socket (<see cref="MonitorServer"/>): subscribes to event kinds, reads
/// the hello, then hands every record and every counters frame to a handler until the server says goodbye,
/// the connection breaks, or the token is cancelled.
/// </summary>
public sealed class MonitorClient : IDisposable
{
    private readonly Socket socket;
    private readonly byte[] buffer = new byte[MonitorWire.HeaderBytes + MonitorWire.MaxControlPayload + MonitorWire.MaxEventPayload];
    private int start;
    private int end;

    private MonitorClient(Socket socket, MonitorHello hello, string path)
    {
        this.socket = socket;
        Hello = hello;
        SocketPath = path;
    }

    public MonitorHello Hello { get; }
    public string SocketPath { get; }

    /// <summary>Why the server ended the stream (its bye), or null while it runs or when the connection broke.</summary>
    public string? ByeReason { get; private set; }

    /// <summary>Event records received.</summary>
    public long Events { get; private set; }

    /// <summary>Connects, subscribes to <paramref name="kinds"/> (table names; empty: all) and reads the hello.</summary>
    public static MonitorClient Connect(string path, IEnumerable<string> kinds, string who, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(kinds);
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            s.Connect(new UnixDomainSocketEndPoint(path));
            s.ReceiveTimeout = (int)Math.Clamp(timeout.TotalMilliseconds, 1, int.MaxValue);
            var sub = MonitorWire.ControlFrame(FrameType.Subscribe, new MonitorSubscribe { Kinds = [.. kinds], Client = who });
            s.Send(sub);
            var (type, payload) = ReadFrame(s, new byte[MonitorWire.HeaderBytes]);
            if (type == FrameType.Bye)
                throw new MonitorConnectException($"{path}: the datapath refused: {MonitorWire.ReadControl<MonitorBye>(payload, type).Reason}");
            if (type != FrameType.Hello)
                throw new MonitorConnectException($"{path}: expected a hello, got a {type} frame");
            var hello = MonitorWire.ReadControl<MonitorHello>(payload, type);
            if (hello.Version != MonitorWire.Version)
                throw new MonitorConnectException($"{path}: monitor socket version {hello.Version}, this build reads version {MonitorWire.Version}");
            if (hello.AbiVersion != Limits.AbiVersion)
                throw new MonitorConnectException($"{path}: the datapath writes event ABI version {hello.AbiVersion}, this build reads version {Limits.AbiVersion}: use the same forensics build for both");
            s.ReceiveTimeout = 0;
            return new MonitorClient(s, hello, path);
        }
        catch (SocketException e)
        {
            s.Dispose();
            throw new MonitorConnectException($"{path}: {(e.SocketErrorCode is SocketError.ConnectionRefused or SocketError.AddressNotAvailable ? "no datapath listens (its owner is gone)" : e.Message)}", e);
        }
        catch (InvalidDataException e)
        {
            s.Dispose();
            throw new MonitorConnectException($"{path}: {e.Message}", e);
        }
        catch
        {
            s.Dispose();
            throw;
        }
    }

    /// <summary>Reads one whole frame with blocking receives (the handshake).</summary>
    internal static (FrameType Type, byte[] Payload) ReadFrame(Socket s, byte[] header)
    {
        ReceiveExactly(s, header);
        var (type, len) = MonitorWire.ReadHeader(header);
        var payload = new byte[len];
        ReceiveExactly(s, payload);
        return (type, payload);
    }

    private static void ReceiveExactly(Socket s, Span<byte> dest)
    {
        while (dest.Length > 0)
        {
            int n = s.Receive(dest, SocketFlags.None);
            if (n == 0)
                throw new IOException("the monitor socket closed");
            dest = dest[n..];
        }
    }

    /// <summary>
    /// Hands frames to the handler until the server's bye (returns true), the connection breaks (throws
    /// <see cref="IOException"/>), or the token is cancelled (returns false once the socket is closed).
    /// </summary>
    public bool Run(IMonitorHandler handler, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(handler);
        using var reg = token.Register(() =>
        {
            try
            {
                socket.Shutdown(SocketShutdown.Both);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
            }
        });
        while (true)
        {
            while (TryFrame(out var type, out var payload))
            {
                switch (type)
                {
                    case FrameType.Event:
                        Events++;
                        handler.OnEvent(payload);
                        break;
                    case FrameType.Stats:
                        handler.OnStats(MonitorWire.ReadStats(payload));
                        break;
                    case FrameType.Bye:
                        ByeReason = MonitorWire.ReadControl<MonitorBye>(payload, type).Reason;
                        return true;
                    default:
                        throw new InvalidDataException($"monitor socket: unexpected {type} frame");
                }
            }
            if (start > 0)
            {
                buffer.AsSpan(start, end - start).CopyTo(buffer);
                end -= start;
                start = 0;
            }
            int n;
            try
            {
                if (!socket.Poll(20_000, SelectMode.SelectRead))
                {
                    handler.OnIdle();
                    continue;
                }
                n = socket.Receive(buffer.AsSpan(end), SocketFlags.None);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                if (token.IsCancellationRequested)
                    return false;
                throw new IOException($"{SocketPath}: {e.Message}", e);
            }
            if (n == 0)
            {
                if (token.IsCancellationRequested)
                    return false;
                throw new IOException($"{SocketPath}: the datapath's owner closed the connection without a goodbye (killed?)");
            }
            end += n;
        }
    }

    private bool TryFrame(out FrameType type, out ReadOnlySpan<byte> payload)
    {
        payload = default;
        type = default;
        if (end - start < MonitorWire.HeaderBytes)
            return false;
        var (t, len) = MonitorWire.ReadHeader(buffer.AsSpan(start));
        if (end - start < MonitorWire.HeaderBytes + len)
            return false;
        type = t;
        payload = buffer.AsSpan(start + MonitorWire.HeaderBytes, len);
        start += MonitorWire.HeaderBytes + len;
        return true;
    }

    public void Dispose() => socket.Dispose();
}
