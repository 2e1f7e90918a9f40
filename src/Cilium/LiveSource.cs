using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using Forensics.Cilium.Hubble;
using Forensics.Cilium.Hubble.Api;
using Forensics.Cilium.Tetragon;
using Forensics.Cilium.Tetragon.Api;
using Forensics.Format;
using Forensics.Recorder.Storage;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Grpc.Net.Client;

namespace Forensics.Cilium;

/// <summary>TLS towards Hubble Relay, as `hubble observe` takes it (--tls, --tls-allow-insecure, --tls-ca-cert-files, --tls-client-cert-file, --tls-client-key-file, --tls-server-name).</summary>
public sealed record TlsOptions
{
    public bool Enabled { get; init; }
    public bool AllowInsecure { get; init; }
    public IReadOnlyList<string> CaCertFiles { get; init; } = [];
    public string? ClientCertFile { get; init; }
    public string? ClientKeyFile { get; init; }
    public string? ServerName { get; init; }
}

/// <summary>A Cilium source to record live: which one, where it listens.</summary>
public sealed record LiveEndpoint(string Name, string Address, TlsOptions Tls)
{
    public const string HubbleSocket = "unix:///var/run/cilium/hubble.sock";
    public const string TetragonSocket = "unix:///var/run/tetragon/tetragon.sock";

    /// <summary>Parses `hubble[=ADDR]` or `tetragon[=ADDR]`; null for a name that is no Cilium source.</summary>
    public static LiveEndpoint? Parse(string value, TlsOptions? tls = null)
    {
        ArgumentNullException.ThrowIfNull(value);
        int eq = value.IndexOf('=', StringComparison.Ordinal);
        var name = (eq < 0 ? value : value[..eq]).Trim().ToLowerInvariant();
        var addr = eq < 0 ? null : value[(eq + 1)..].Trim();
        if (addr is { Length: 0 })
            throw new FormatException($"--from {value}: the address is empty");
        return name switch
        {
            "hubble" => new LiveEndpoint("hubble", addr ?? HubbleSocket, tls ?? new TlsOptions()),
            "tetragon" => new LiveEndpoint("tetragon", addr ?? TetragonSocket, tls ?? new TlsOptions()),
            _ => null,
        };
    }
}

/// <summary>The source cannot be reached or refuses the call: a one-line message.</summary>
public sealed class SourceUnavailableException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// One live stream: Hubble's observer.Observer/GetFlows (follow) or Tetragon's
/// tetragon.FineGuidanceSensors/GetEvents, decoded into the recording as it arrives. Messages are
/// received as bytes and parsed here, so a message that does not parse is counted (malformed) and the
/// stream goes on, and fields the .proto subset lacks are found by number. When the stream ends or
/// breaks, the source reconnects (Hubble from the last flow's time, so its ring buffer fills the gap)
/// and the time without a stream is a row of the loss table and a line in the manifest.
/// </summary>
public sealed class LiveSource
{
    private readonly LiveEndpoint endpoint;
    private readonly RecordingSink sink;
    private readonly ManifestSource stats;
    private readonly FlowDecoder? flows;
    private readonly EventDecoder? events;
    private readonly string defaultNode;
    private Timestamp? lastFlowTime;
    private Timestamp? resumeAfter;
    private long messages;

    public LiveSource(LiveEndpoint endpoint, RecordingSink sink, string defaultNode)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        ArgumentNullException.ThrowIfNull(sink);
        this.endpoint = endpoint;
        this.sink = sink;
        this.defaultNode = defaultNode;
        stats = sink.Source(endpoint.Name, "grpc", endpoint.Address);
        if (endpoint.Name == "hubble")
            flows = new FlowDecoder(sink, stats, defaultNode);
        else
            events = new EventDecoder(sink, stats, defaultNode);
    }

    public LiveEndpoint Endpoint => endpoint;

    /// <summary>Messages received so far (decoded or not).</summary>
    public long Messages => Interlocked.Read(ref messages);

    /// <summary>How long to wait before a reconnect; doubled up to <see cref="MaxBackoff"/>.</summary>
    public TimeSpan Backoff { get; init; } = TimeSpan.FromMilliseconds(200);
    public TimeSpan MaxBackoff { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Called (on the stream's thread) after each message was handled.</summary>
    public Action<long>? OnMessage { get; init; }

    /// <summary>Checks that the source answers (Hubble ServerStatus, Tetragon GetVersion); throws <see cref="SourceUnavailableException"/>.</summary>
    public async Task<string> CheckAsync(TimeSpan timeout, CancellationToken token)
    {
        if (UnixPath(endpoint.Address) is { } path && !File.Exists(path))
            throw new SourceUnavailableException($"cannot reach {endpoint.Name} at {endpoint.Address}: no socket at {path} (is {(endpoint.Name == "hubble" ? "Cilium with Hubble" : "Tetragon")} running on this node?)");
        using var channel = Channel(endpoint);
        try
        {
            var deadline = DateTime.UtcNow + timeout;
            if (endpoint.Name == "hubble")
            {
                var s = await new Observer.ObserverClient(channel).ServerStatusAsync(new ServerStatusRequest(), deadline: deadline, cancellationToken: token);
                return $"Hubble {s.Version}".TrimEnd();
            }
            var v = await new FineGuidanceSensors.FineGuidanceSensorsClient(channel).GetVersionAsync(new GetVersionRequest(), deadline: deadline, cancellationToken: token);
            return $"Tetragon {v.Version}".TrimEnd();
        }
        catch (RpcException e)
        {
            throw new SourceUnavailableException($"cannot reach {endpoint.Name} at {endpoint.Address}: {Detail(e)}", e);
        }
        catch (Exception e) when (e is InvalidOperationException or UriFormatException or IOException or System.Security.Authentication.AuthenticationException)
        {
            throw new SourceUnavailableException($"cannot reach {endpoint.Name} at {endpoint.Address}: {e.Message}", e);
        }
    }

    /// <summary>Streams until <paramref name="token"/> is cancelled, reconnecting when the stream ends or breaks.</summary>
    public async Task RunAsync(CancellationToken token)
    {
        var backoff = Backoff;
        DateTime? downSince = null;
        string? downWhy = null;
        while (!token.IsCancellationRequested)
        {
            try
            {
                using var channel = Channel(endpoint);
                var invoker = channel.CreateCallInvoker();
                using var call = endpoint.Name == "hubble"
                    ? invoker.AsyncServerStreamingCall(FlowsMethod, null, new CallOptions(cancellationToken: token), FlowsRequest())
                    : invoker.AsyncServerStreamingCall(EventsMethod, null, new CallOptions(cancellationToken: token), new GetEventsRequest());
                lock (stats)
                    stats.Connects++;
                bool first = true;
                while (await call.ResponseStream.MoveNext(token))
                {
                    if (first && downSince is { } since)
                    {
                        Gap(since, DateTime.UtcNow, downWhy!);
                        downSince = null;
                    }
                    first = false;
                    backoff = Backoff;
                    Handle(call.ResponseStream.Current);
                }
                downWhy = "the server ended the stream";
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled && token.IsCancellationRequested)
            {
                break;
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
                break;
            }
            catch (RpcException e)
            {
                downWhy = Detail(e);
            }
            catch (Exception e) when (e is IOException or InvalidOperationException or HttpRequestException)
            {
                downWhy = e.Message;
            }
            downSince ??= DateTime.UtcNow;
            lock (stats)
                stats.Disconnects.Add($"{downSince:O} {Importer.OneLine(downWhy ?? "")}");
            try
            {
                await Task.Delay(backoff, token);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, MaxBackoff.Ticks));
        }
        if (downSince is { } s)
            Gap(s, DateTime.UtcNow, (downWhy ?? "") + " (not reconnected before the recording stopped)");
    }

    /// <summary>A time without a stream: a loss row (how many events it missed is not known) and a manifest line.</summary>
    private void Gap(DateTime from, DateTime to, string why)
    {
        var detail = $"no stream from {from:O} to {to:O}: {Importer.OneLine(why)}" + (endpoint.Name == "hubble" ? "; flows since the last one received were asked for again from Hubble's buffer" : "; events in between are not known");
        sink.Loss(defaultNode, from, endpoint.Name == "hubble" ? "flow" : "process", 0, endpoint.Name, detail);
        lock (stats)
            stats.Lost["reconnect gaps (events not counted)"] = stats.Lost.GetValueOrDefault("reconnect gaps (events not counted)") + 1;
    }

    private GetFlowsRequest FlowsRequest()
    {
        var r = new GetFlowsRequest { Follow = true };
        if (lastFlowTime is { } t)
        {
            r.Since = t; // Hubble replays what its ring buffer still holds since then
            resumeAfter = t;
        }
        return r;
    }

    private void Handle(byte[] payload)
    {
        long n = Interlocked.Increment(ref messages);
        var unknown = new List<KeyValuePair<string, string>>();
        try
        {
            if (flows is not null)
            {
                var r = GetFlowsResponse.Parser.ParseFrom(payload);
                if (resumeAfter is { } ra && r.Flow?.Time is { } ft)
                {
                    if (ft.Seconds < ra.Seconds || (ft.Seconds == ra.Seconds && ft.Nanos <= ra.Nanos))
                    {
                        // Hubble's buffer replayed a flow recorded before the reconnect (asked again with since=)
                        lock (stats)
                        {
                            stats.Received++;
                            stats.Skipped["recorded before a reconnect"] = stats.Skipped.GetValueOrDefault("recorded before a reconnect") + 1;
                        }
                        OnMessage?.Invoke(n);
                        return;
                    }
                    resumeAfter = null;
                }
                UnknownFields.FindInWire(payload, GetFlowsResponse.Descriptor, unknown);
                flows.Decode(r.Flow, r.LostEvents, r.NodeStatus, null, r.NodeName, r.Time, unknown);
                if (r.Flow?.Time is { } t2)
                    lastFlowTime = t2;
            }
            else
            {
                var e = GetEventsResponse.Parser.ParseFrom(payload);
                UnknownFields.FindInWire(payload, GetEventsResponse.Descriptor, unknown);
                events!.Decode(e, unknown);
            }
        }
        catch (InvalidProtocolBufferException ex)
        {
            lock (stats)
            {
                stats.Received++;
                stats.Malformed++;
                if (stats.MalformedExamples.Count < Importer.MalformedExamples)
                    stats.MalformedExamples.Add(new ManifestMalformed { Line = n, Error = $"message {n} of the stream ({payload.Length} bytes): {Importer.OneLine(ex.Message)}" });
            }
        }
        sink.Tick();
        OnMessage?.Invoke(n);
    }

    private static readonly Marshaller<byte[]> Raw = new((byte[] b, SerializationContext ctx) => ctx.Complete(b), (DeserializationContext ctx) => ctx.PayloadAsNewBuffer());

    private static readonly Method<GetFlowsRequest, byte[]> FlowsMethod = new(MethodType.ServerStreaming,
        Observer.Descriptor.FullName, "GetFlows", Marshallers.Create((GetFlowsRequest r) => r.ToByteArray(), GetFlowsRequest.Parser.ParseFrom), Raw);

    private static readonly Method<GetEventsRequest, byte[]> EventsMethod = new(MethodType.ServerStreaming,
        FineGuidanceSensors.Descriptor.FullName, "GetEvents", Marshallers.Create((GetEventsRequest r) => r.ToByteArray(), GetEventsRequest.Parser.ParseFrom), Raw);

    private static string Detail(RpcException e) => $"{e.StatusCode}: {Importer.OneLine(e.Status.Detail)}";

    /// <summary>A channel to unix://PATH, or to host:port (plain, or TLS as `hubble observe` does it).</summary>
    public static GrpcChannel Channel(LiveEndpoint ep)
    {
        ArgumentNullException.ThrowIfNull(ep);
        var handler = new SocketsHttpHandler { EnableMultipleHttp2Connections = false, ConnectTimeout = TimeSpan.FromSeconds(5) };
        string address;
        if (UnixPath(ep.Address) is { } path)
        {
            handler.ConnectCallback = async (_, token) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), token);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            };
            address = "http://localhost";
        }
        else
        {
            var hostPort = ep.Address.Contains("://", StringComparison.Ordinal) ? new Uri(ep.Address).Authority : ep.Address;
            address = (ep.Tls.Enabled ? "https://" : "http://") + hostPort;
            if (ep.Tls.Enabled)
            {
                handler.SslOptions = Ssl(ep.Tls);
                if (ep.Tls.ServerName is { Length: > 0 } name)
                {
                    // verified (and sent as SNI) as this name, connected to the address given
                    var target = new Uri("https://" + hostPort);
                    address = $"https://{name}:{target.Port}";
                    handler.ConnectCallback = async (_, token) =>
                    {
                        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                        try
                        {
                            await socket.ConnectAsync(target.IdnHost, target.Port, token);
                            return new NetworkStream(socket, ownsSocket: true);
                        }
                        catch
                        {
                            socket.Dispose();
                            throw;
                        }
                    };
                }
            }
        }
        return GrpcChannel.ForAddress(address, new GrpcChannelOptions { HttpHandler = handler, MaxReceiveMessageSize = 64 << 20, DisposeHttpClient = true });
    }

    /// <summary>The socket path of unix:///path or unix:/path; null for host:port.</summary>
    public static string? UnixPath(string address)
    {
        ArgumentNullException.ThrowIfNull(address);
        if (!address.StartsWith("unix:", StringComparison.Ordinal))
            return null;
        var path = address["unix:".Length..];
        return path.StartsWith("//", StringComparison.Ordinal) ? path[2..] : path;
    }

    private static SslClientAuthenticationOptions Ssl(TlsOptions tls)
    {
        var o = new SslClientAuthenticationOptions();
        if (tls.ServerName is { Length: > 0 })
            o.TargetHost = tls.ServerName;
        if (tls.ClientCertFile is not null)
        {
            var cert = X509Certificate2.CreateFromPemFile(tls.ClientCertFile, tls.ClientKeyFile);
            o.ClientCertificates = [X509CertificateLoader.LoadPkcs12(cert.Export(X509ContentType.Pkcs12), null)];
        }
        if (tls.AllowInsecure)
#pragma warning disable CA5359 // --tls-allow-insecure asks for exactly this, as hubble observe's flag does
            o.RemoteCertificateValidationCallback = (_, _, _, _) => true;
#pragma warning restore CA5359
        else if (tls.CaCertFiles.Count > 0)
        {
            var roots = new X509Certificate2Collection();
            foreach (var f in tls.CaCertFiles)
                roots.ImportFromPemFile(f);
            o.CertificateChainPolicy = new X509ChainPolicy { TrustMode = X509ChainTrustMode.CustomRootTrust, RevocationMode = X509RevocationMode.NoCheck };
            o.CertificateChainPolicy.CustomTrustStore.AddRange(roots);
        }
        return o;
    }
}
