using Forensics.Cilium.Hubble.Api;
using Forensics.Cilium.Tetragon.Api;
using Google.Protobuf;
using Grpc.AspNetCore.Server.Model;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Forensics.Cilium.Tests;

/// <summary>
/// What a test server sends on one stream: messages of the project's .proto types (serialized as
/// Hubble/Tetragon would), or raw bytes that are no message; then it closes the stream or holds it open.
/// </summary>
public sealed class Script
{
    public List<byte[]> Messages { get; } = [];
    public bool HoldOpen { get; init; } = true;

    public Script Add(IMessage m)
    {
        Messages.Add(m.ToByteArray());
        return this;
    }

    public Script Garbage(byte[] bytes)
    {
        Messages.Add(bytes);
        return this;
    }
}

/// <summary>
/// An in-process gRPC server on a unix socket implementing observer.Observer (GetFlows, ServerStatus)
/// and tetragon.FineGuidanceSensors (GetEvents, GetVersion), the method names and messages from the
/// project's .proto files. Each stream a client opens plays the next script (the last one repeats).
/// </summary>
public sealed class TestServer : IAsyncDisposable
{
    private readonly WebApplication app;

    public string Socket { get; }
    public string Address => "unix://" + Socket;
    public Queue<Script> Hubble { get; } = new();
    public Queue<Script> Tetragon { get; } = new();

    private int hubbleStreams, tetragonStreams, hubbleSent, tetragonSent;

    /// <summary>Streams opened by clients, per service.</summary>
    public int HubbleStreams => Volatile.Read(ref hubbleStreams);
    public int TetragonStreams => Volatile.Read(ref tetragonStreams);

    /// <summary>Messages written to clients, per service.</summary>
    public int HubbleSent => Volatile.Read(ref hubbleSent);
    public int TetragonSent => Volatile.Read(ref tetragonSent);

    internal void HubbleStream() => Interlocked.Increment(ref hubbleStreams);
    internal void TetragonStream() => Interlocked.Increment(ref tetragonStreams);
    internal void HubbleMessage() => Interlocked.Increment(ref hubbleSent);
    internal void TetragonMessage() => Interlocked.Increment(ref tetragonSent);

    private Script? lastHubble, lastTetragon;

    private TestServer(string socket, System.Security.Cryptography.X509Certificates.X509Certificate2? tls)
    {
        Socket = socket;
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        if (tls is null)
            builder.WebHost.ConfigureKestrel(k => k.ListenUnixSocket(socket, o => o.Protocols = HttpProtocols.Http2));
        else // as Hubble Relay: TCP on loopback with TLS
            builder.WebHost.ConfigureKestrel(k => k.Listen(System.Net.IPAddress.Loopback, 0, o =>
            {
                o.Protocols = HttpProtocols.Http2;
                o.UseHttps(tls);
            }));
        builder.Services.AddGrpc();
        builder.Services.AddSingleton(this);
        app = builder.Build();
        app.MapGrpcService<HubbleService>();
        app.MapGrpcService<TetragonService>();
    }

    public static async Task<TestServer> StartAsync(string? socket = null)
    {
        socket ??= Path.Combine(Path.GetTempPath(), $"fx-grpc-{Guid.NewGuid():N}.sock");
        var s = new TestServer(socket, null);
        await s.app.StartAsync();
        return s;
    }

    /// <summary>A server on 127.0.0.1 with TLS (the certificate's subject: CN=relay.test); <see cref="Address"/> is host:port.</summary>
    public static async Task<TestServer> StartTlsAsync(System.Security.Cryptography.X509Certificates.X509Certificate2 cert)
    {
        var s = new TestServer("", cert);
        await s.app.StartAsync();
        var addr = s.app.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>()
            .Features.Get<Microsoft.AspNetCore.Hosting.Server.Features.IServerAddressesFeature>()!.Addresses.First();
        s.TcpAddress = new Uri(addr).Authority;
        return s;
    }

    /// <summary>host:port of a TLS server.</summary>
    public string? TcpAddress { get; private set; }

    public async ValueTask DisposeAsync()
    {
        using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(2)))
            await app.StopAsync(cts.Token);
        await app.DisposeAsync();
        if (Socket.Length > 0)
            File.Delete(Socket);
    }

    internal Script NextHubble()
    {
        lock (Hubble)
            return lastHubble = Hubble.Count > 0 ? Hubble.Dequeue() : lastHubble ?? new Script();
    }

    internal Script NextTetragon()
    {
        lock (Tetragon)
            return lastTetragon = Tetragon.Count > 0 ? Tetragon.Dequeue() : lastTetragon ?? new Script();
    }

    internal static async Task Play(Script script, IServerStreamWriter<byte[]> writer, ServerCallContext ctx, Action sent)
    {
        foreach (var m in script.Messages)
        {
            await writer.WriteAsync(m, ctx.CancellationToken);
            sent();
        }
        if (script.HoldOpen)
        {
            try
            {
                await Task.Delay(Timeout.Infinite, ctx.CancellationToken);
            }
            catch (OperationCanceledException)
            {
            }
        }
    }

    internal static readonly Marshaller<byte[]> Raw = new((byte[] b, SerializationContext c) => c.Complete(b), (DeserializationContext c) => c.PayloadAsNewBuffer());

    internal static Marshaller<T> Typed<T>(MessageParser<T> parser) where T : IMessage<T> =>
        Marshallers.Create((T m) => m.ToByteArray(), parser.ParseFrom);
}

/// <summary>observer.Observer as the server binds it: GetFlows writes bytes, so a test can send what is no message.</summary>
[BindServiceMethod(typeof(HubbleApi), nameof(BindService))]
public abstract class HubbleApi
{
    public abstract Task GetFlows(GetFlowsRequest request, IServerStreamWriter<byte[]> writer, ServerCallContext context);

    public abstract Task<ServerStatusResponse> ServerStatus(ServerStatusRequest request, ServerCallContext context);

    public static void BindService(ServiceBinderBase binder, HubbleApi? service)
    {
        ArgumentNullException.ThrowIfNull(binder);
        binder.AddMethod(new Method<GetFlowsRequest, byte[]>(MethodType.ServerStreaming, Observer.Descriptor.FullName, "GetFlows",
            TestServer.Typed(GetFlowsRequest.Parser), TestServer.Raw), (ServerStreamingServerMethod<GetFlowsRequest, byte[]>)null!);
        binder.AddMethod(new Method<ServerStatusRequest, ServerStatusResponse>(MethodType.Unary, Observer.Descriptor.FullName, "ServerStatus",
            TestServer.Typed(ServerStatusRequest.Parser), TestServer.Typed(ServerStatusResponse.Parser)), (UnaryServerMethod<ServerStatusRequest, ServerStatusResponse>)null!);
    }
}

public sealed class HubbleService(TestServer server) : HubbleApi
{
    public override Task GetFlows(GetFlowsRequest request, IServerStreamWriter<byte[]> writer, ServerCallContext context)
    {
        server.HubbleStream();
        return TestServer.Play(server.NextHubble(), writer, context, server.HubbleMessage);
    }

    public override Task<ServerStatusResponse> ServerStatus(ServerStatusRequest request, ServerCallContext context) =>
        Task.FromResult(new ServerStatusResponse { Version = "v1.17.0-test", MaxFlows = 4095 });
}

/// <summary>tetragon.FineGuidanceSensors as the server binds it: GetEvents writes bytes.</summary>
[BindServiceMethod(typeof(TetragonApi), nameof(BindService))]
public abstract class TetragonApi
{
    public abstract Task GetEvents(GetEventsRequest request, IServerStreamWriter<byte[]> writer, ServerCallContext context);

    public abstract Task<GetVersionResponse> GetVersion(GetVersionRequest request, ServerCallContext context);

    public static void BindService(ServiceBinderBase binder, TetragonApi? service)
    {
        ArgumentNullException.ThrowIfNull(binder);
        binder.AddMethod(new Method<GetEventsRequest, byte[]>(MethodType.ServerStreaming, FineGuidanceSensors.Descriptor.FullName, "GetEvents",
            TestServer.Typed(GetEventsRequest.Parser), TestServer.Raw), (ServerStreamingServerMethod<GetEventsRequest, byte[]>)null!);
        binder.AddMethod(new Method<GetVersionRequest, GetVersionResponse>(MethodType.Unary, FineGuidanceSensors.Descriptor.FullName, "GetVersion",
            TestServer.Typed(GetVersionRequest.Parser), TestServer.Typed(GetVersionResponse.Parser)), (UnaryServerMethod<GetVersionRequest, GetVersionResponse>)null!);
    }
}

public sealed class TetragonService(TestServer server) : TetragonApi
{
    public override Task GetEvents(GetEventsRequest request, IServerStreamWriter<byte[]> writer, ServerCallContext context)
    {
        server.TetragonStream();
        return TestServer.Play(server.NextTetragon(), writer, context, server.TetragonMessage);
    }

    public override Task<GetVersionResponse> GetVersion(GetVersionRequest request, ServerCallContext context) =>
        Task.FromResult(new GetVersionResponse { Version = "v1.4.0-test" });
}
