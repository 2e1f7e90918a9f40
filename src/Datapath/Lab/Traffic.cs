using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Forensics.Datapath.Lab;

/// <summary>What one connect attempt met. Result: connected, replied, refused, timeout, unreachable, error.</summary>
public sealed record ConnectResult(
    [property: JsonPropertyName("result")] string Result,
    [property: JsonPropertyName("protocol")] string Protocol,
    [property: JsonPropertyName("remote")] string Remote,
    [property: JsonPropertyName("local")] string? Local,
    [property: JsonPropertyName("sent")] long Sent,
    [property: JsonPropertyName("received")] long Received,
    [property: JsonPropertyName("ms")] long Milliseconds,
    [property: JsonPropertyName("reply")] string? Reply,
    [property: JsonPropertyName("status")] int? HttpStatus)
{
    /// <summary>tcp: the connection opened; udp: a reply came back; http: a status line came back.</summary>
    [JsonIgnore]
    public bool Delivered => Result is "connected" or "replied";

    public string ToJson() => JsonSerializer.Serialize(this, TrafficJson.Options);

    public static ConnectResult? Parse(string line)
    {
        try
        {
            return JsonSerializer.Deserialize<ConnectResult>(line, TrafficJson.Options);
        }
        catch (JsonException)
        {
            return null;
        }
    }
}

internal static class TrafficJson
{
    public static readonly JsonSerializerOptions Options = new() { DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull };
}

/// <summary>A listener spec: [IP:]PORT.</summary>
public sealed record ListenSpec(IPAddress Address, int Port)
{
    public static ListenSpec Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int colon = text.LastIndexOf(':');
        var addr = colon < 0 ? IPAddress.Any : IPAddress.Parse(text[..colon]);
        int port = int.Parse(colon < 0 ? text : text[(colon + 1)..], NumberStyles.None, CultureInfo.InvariantCulture);
        if (port is < 1 or > 65535)
            throw new FormatException($"port {port} is out of range");
        return new ListenSpec(addr, port);
    }

    public override string ToString() => $"{Address}:{Port}";
}

/// <summary>
/// The lab's traffic programs, shipped in the forensics binary: a server that
/// answers TCP (echo or HTTP, told apart by the first bytes) and UDP (echo), and
/// a client that connects once and reports what it met. Both are bounded in time.
/// </summary>
public static class Traffic
{
    private static readonly string[] HttpMethods = ["GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "OPTIONS "];

    /// <summary>The reply text a server sends: its name (by local address, else the default) and the local endpoint.</summary>
    private static string Who(IReadOnlyDictionary<string, string> names, string defaultName, EndPoint? local)
    {
        var ip = (local as IPEndPoint)?.Address.ToString() ?? "";
        var name = names.TryGetValue(ip, out var n) ? n : defaultName;
        return $"{name} {local}";
    }

    /// <summary>
    /// Serves until <paramref name="lifetime"/> passes or the token is cancelled.
    /// Writes "ready" on <paramref name="log"/> once every socket is bound.
    /// </summary>
    public static async Task ServeAsync(IReadOnlyList<ListenSpec> tcp, IReadOnlyList<ListenSpec> udp, string defaultName,
        IReadOnlyDictionary<string, string> namesByAddress, TimeSpan lifetime, TextWriter log, CancellationToken token,
        IReadOnlyDictionary<IPAddress, IReadOnlyDictionary<string, IPAddress>>? dns = null)
    {
        ArgumentNullException.ThrowIfNull(tcp);
        ArgumentNullException.ThrowIfNull(udp);
        ArgumentNullException.ThrowIfNull(log);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(token);
        cts.CancelAfter(lifetime);
        var listeners = new List<TcpListener>();
        var sockets = new List<Socket>();
        try
        {
            foreach (var l in tcp)
            {
                var listener = new TcpListener(l.Address, l.Port);
                listener.Server.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
                listener.Start(64);
                listeners.Add(listener);
            }
            foreach (var u in udp)
            {
                var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
                s.SetSocketOption(SocketOptionLevel.IP, SocketOptionName.PacketInformation, true);
                s.Bind(new IPEndPoint(u.Address, u.Port));
                sockets.Add(s);
            }
            var dnsSockets = new List<(Socket Socket, IReadOnlyDictionary<string, IPAddress> Names)>();
            foreach (var (addr, names) in dns ?? new Dictionary<IPAddress, IReadOnlyDictionary<string, IPAddress>>())
            {
                var s = new Socket(addr.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
                s.Bind(new IPEndPoint(addr, 53));
                sockets.Add(s);
                dnsSockets.Add((s, names));
            }
            await log.WriteLineAsync($"ready tcp={string.Join(',', tcp)} udp={string.Join(',', udp)}"
                + (dnsSockets.Count == 0 ? "" : $" dns={string.Join(',', dnsSockets.Select(d => d.Socket.LocalEndPoint))}")).ConfigureAwait(false);
            await log.FlushAsync(cts.Token).ConfigureAwait(false);
            var tasks = listeners.Select(l => AcceptLoop(l, defaultName, namesByAddress, cts.Token))
                .Concat(sockets.Where(s => !dnsSockets.Any(d => d.Socket == s)).Select(s => UdpLoop(s, defaultName, namesByAddress, cts.Token)))
                .Concat(dnsSockets.Select(d => DnsLoop(d.Socket, d.Names, cts.Token))).ToList();
            try
            {
                await Task.WhenAll(tasks).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // lifetime over or stopped
            }
        }
        finally
        {
            foreach (var l in listeners)
                l.Stop();
            foreach (var s in sockets)
                s.Dispose();
        }
    }

    private static async Task AcceptLoop(TcpListener listener, string name, IReadOnlyDictionary<string, string> names, CancellationToken token)
    {
        while (!token.IsCancellationRequested)
        {
            Socket s;
            try
            {
                s = await listener.AcceptSocketAsync(token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (SocketException)
            {
                continue;
            }
            _ = Task.Run(() => Answer(s, name, names, token), token);
        }
    }

    private static async Task Answer(Socket s, string name, IReadOnlyDictionary<string, string> names, CancellationToken token)
    {
        using (s)
        {
            try
            {
                using var cts = CancellationTokenSource.CreateLinkedTokenSource(token);
                cts.CancelAfter(TimeSpan.FromSeconds(5));
                var buf = new byte[4096];
                int n = 0;
                try
                {
                    n = await s.ReceiveAsync(buf, SocketFlags.None, cts.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    // a client that says nothing still gets our name
                }
                var text = Encoding.UTF8.GetString(buf, 0, n);
                var who = Who(names, name, s.LocalEndPoint);
                string reply;
                if (HttpMethods.Any(m => text.StartsWith(m, StringComparison.Ordinal)))
                {
                    var body = who + "\n";
                    reply = $"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {Encoding.UTF8.GetByteCount(body)}\r\nConnection: close\r\n\r\n{body}";
                }
                else
                {
                    reply = $"{who}: {text.TrimEnd()}\n";
                }
                await s.SendAsync(Encoding.UTF8.GetBytes(reply), SocketFlags.None, cts.Token).ConfigureAwait(false);
                s.Shutdown(SocketShutdown.Both);
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException or ObjectDisposedException)
            {
                // the client went away
            }
        }
    }

    private static async Task UdpLoop(Socket s, string name, IReadOnlyDictionary<string, string> names, CancellationToken token)
    {
        var buf = new byte[2048];
        while (!token.IsCancellationRequested)
        {
            try
            {
                var r = await s.ReceiveMessageFromAsync(buf, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), token).ConfigureAwait(false);
                var local = new IPEndPoint(r.PacketInformation.Address, ((IPEndPoint)s.LocalEndPoint!).Port);
                var reply = $"{Who(names, name, local)}: {Encoding.UTF8.GetString(buf, 0, r.ReceivedBytes).TrimEnd()}\n";
                await s.SendToAsync(Encoding.UTF8.GetBytes(reply), SocketFlags.None, r.RemoteEndPoint, token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (SocketException)
            {
                // an ICMP error from an earlier reply; keep serving
            }
        }
    }

    /// <summary>Answers DNS queries for the names given (Control.DnsMessage.Answer); ignores what is not a query.</summary>
    private static async Task DnsLoop(Socket s, IReadOnlyDictionary<string, IPAddress> names, CancellationToken token)
    {
        var buf = new byte[1500];
        while (!token.IsCancellationRequested)
        {
            try
            {
                var r = await s.ReceiveFromAsync(buf, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), token).ConfigureAwait(false);
                if (Control.DnsMessage.Answer(buf.AsSpan(0, r.ReceivedBytes), names) is { } answer)
                    await s.SendToAsync(answer, SocketFlags.None, r.RemoteEndPoint, token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (SocketException)
            {
                // an ICMP error from an earlier reply; keep serving
            }
        }
    }

    /// <summary>
    /// Connects once (tcp, udp or http) and reports what happened; never longer than about twice the timeout.
    /// <paramref name="source"/>: the local address to connect from (a world host's, in the world namespace that holds them all).
    /// </summary>
    public static async Task<ConnectResult> ConnectAsync(string protocol, string target, TimeSpan timeout, IPAddress? source = null)
    {
        ArgumentNullException.ThrowIfNull(protocol);
        ArgumentNullException.ThrowIfNull(target);
        string path = "/";
        int slash = target.IndexOf('/', StringComparison.Ordinal);
        var hostPort = target;
        if (slash >= 0)
        {
            path = target[slash..];
            hostPort = target[..slash];
        }
        var ep = IPEndPoint.Parse(hostPort);
        var sw = Stopwatch.StartNew();
        using var cts = new CancellationTokenSource(timeout);
        var proto = protocol.ToLowerInvariant();
        ConnectResult Make(string result, string? local = null, long sent = 0, long received = 0, string? reply = null, int? status = null) =>
            new(result, proto, ep.ToString(), local, sent, received, sw.ElapsedMilliseconds, reply, status);

        if (proto == "udp")
        {
            using var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            try
            {
                if (source is not null)
                    s.Bind(new IPEndPoint(source, 0));
                await s.ConnectAsync(ep, cts.Token).ConfigureAwait(false);
                var hello = Encoding.UTF8.GetBytes("hello\n");
                int sent = await s.SendAsync(hello, SocketFlags.None, cts.Token).ConfigureAwait(false);
                var buf = new byte[2048];
                int n = await s.ReceiveAsync(buf, SocketFlags.None, cts.Token).ConfigureAwait(false);
                return Make("replied", s.LocalEndPoint?.ToString(), sent, n, Encoding.UTF8.GetString(buf, 0, n).TrimEnd());
            }
            catch (OperationCanceledException)
            {
                return Make("timeout", s.LocalEndPoint?.ToString(), 6);
            }
            catch (SocketException e)
            {
                return Make(Classify(e), s.LocalEndPoint?.ToString());
            }
        }
        if (proto is not ("tcp" or "http"))
            throw new ArgumentException($"protocol '{protocol}' is not tcp, udp or http", nameof(protocol));

        using var t = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (source is not null)
                t.Bind(new IPEndPoint(source, 0));
            await t.ConnectAsync(ep, cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return Make("timeout", t.LocalEndPoint?.ToString());
        }
        catch (SocketException e)
        {
            return Make(Classify(e), t.LocalEndPoint?.ToString());
        }
        var local = t.LocalEndPoint?.ToString();
        // Connected: exchange one message within a fresh timeout, so the reply path is exercised too.
        using var rcts = new CancellationTokenSource(timeout);
        var request = proto == "http"
            ? $"GET {path} HTTP/1.0\r\nHost: {ep}\r\nUser-Agent: forensics-lab\r\n\r\n"
            : "hello\n";
        long sentBytes = 0, received = 0;
        var response = new MemoryStream();
        try
        {
            sentBytes = await t.SendAsync(Encoding.UTF8.GetBytes(request), SocketFlags.None, rcts.Token).ConfigureAwait(false);
            var buf = new byte[4096];
            for (int i = 0; i < 256; i++)
            {
                int n = await t.ReceiveAsync(buf, SocketFlags.None, rcts.Token).ConfigureAwait(false);
                if (n == 0)
                    break;
                received += n;
                response.Write(buf, 0, n);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException)
        {
            // connected, but the reply did not (fully) come back
        }
        var text = Encoding.UTF8.GetString(response.ToArray());
        if (proto == "http")
        {
            var statusLine = text.Split("\r\n")[0];
            var parts = statusLine.Split(' ');
            if (parts.Length >= 2 && parts[0].StartsWith("HTTP/", StringComparison.Ordinal)
                && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int code))
            {
                int body = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
                return Make("replied", local, sentBytes, received, body >= 0 ? text[(body + 4)..].TrimEnd() : "", code);
            }
            return Make(received == 0 ? "timeout" : "error", local, sentBytes, received, text.Length > 0 ? text.TrimEnd() : null);
        }
        return Make("connected", local, sentBytes, received, text.Length > 0 ? text.TrimEnd() : null);
    }

    private static string Classify(SocketException e) => e.SocketErrorCode switch
    {
        SocketError.ConnectionRefused => "refused",
        SocketError.TimedOut => "timeout",
        SocketError.HostUnreachable or SocketError.NetworkUnreachable or SocketError.HostNotFound => "unreachable",
        _ => "error",
    };
}
