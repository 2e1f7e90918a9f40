using System.Net.Sockets;
using System.Text.Json;
using Forensics.Runtime.Cri;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;

namespace Forensics.Runtime;

/// <summary>A pod sandbox as the runtime reports it.</summary>
public sealed record SandboxInfo(
    string Id,
    string Namespace,
    string Name,
    string Uid,
    bool Ready,
    DateTime CreatedUtc,
    IReadOnlyDictionary<string, string> Labels,
    IReadOnlyList<string> Ips,
    string? NetnsPath,
    uint NetnsInode,
    int Pid)
{
    public string FullName => $"{Namespace}/{Name}";
}

/// <summary>A container as the runtime reports it.</summary>
public sealed record ContainerInfo(
    string Id,
    string SandboxId,
    string Name,
    string Image,
    string State,
    DateTime CreatedUtc);

/// <summary>What the runtime says about itself (Version).</summary>
public sealed record RuntimeVersion(string Name, string Version, string ApiVersion);

/// <summary>A runtime failure as one line: which endpoint, which call, why.</summary>
public sealed class RuntimeException : Exception
{
    public RuntimeException(string message) : base(message) { }
    public RuntimeException() { }
    public RuntimeException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>
/// A client of the Kubernetes Container Runtime Interface (runtime.v1) over the
/// runtime's unix socket: containerd's CRI plugin, CRI-O. Every call is bounded
/// by <see cref="CallTimeout"/>; every failure is a one-line <see cref="RuntimeException"/>.
/// </summary>
public sealed class CriClient : IDisposable
{
    /// <summary>Where runtimes listen, in the order auto-detection tries them.</summary>
    public static readonly IReadOnlyList<string> WellKnownEndpoints =
    [
        "/run/containerd/containerd.sock",
        "/var/run/crio/crio.sock",
        "/run/crio/crio.sock",
    ];

    private readonly GrpcChannel channel;
    private readonly RuntimeService.RuntimeServiceClient client;

    private CriClient(string socketPath, TimeSpan callTimeout)
    {
        SocketPath = socketPath;
        CallTimeout = callTimeout;
        var handler = new SocketsHttpHandler
        {
            ConnectTimeout = callTimeout,
            ConnectCallback = async (_, token) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), token).ConfigureAwait(false);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        };
        channel = GrpcChannel.ForAddress("http://localhost", new GrpcChannelOptions
        {
            HttpHandler = handler,
            MaxReceiveMessageSize = 64 << 20,
            DisposeHttpClient = true,
        });
        client = new RuntimeService.RuntimeServiceClient(channel);
    }

    /// <summary>The socket path (an endpoint's unix:// prefix removed).</summary>
    public string SocketPath { get; }

    public TimeSpan CallTimeout { get; }

    /// <summary>The endpoint as users write it (unix:///run/containerd/containerd.sock).</summary>
    public string Endpoint => "unix://" + SocketPath;

    /// <summary>A client of <paramref name="endpoint"/> (unix:///path or /path). Nothing is called yet.</summary>
    public static CriClient Create(string endpoint, TimeSpan? callTimeout = null) =>
        new(SocketPathOf(endpoint), callTimeout ?? TimeSpan.FromSeconds(5));

    /// <summary>The socket path of an endpoint: unix:///path, unix:/path or /path; anything else is not supported.</summary>
    public static string SocketPathOf(string endpoint)
    {
        ArgumentException.ThrowIfNullOrEmpty(endpoint);
        var path = endpoint.StartsWith("unix://", StringComparison.Ordinal) ? endpoint[7..]
            : endpoint.StartsWith("unix:", StringComparison.Ordinal) ? endpoint[5..]
            : endpoint;
        if (!path.StartsWith('/'))
            throw new RuntimeException($"runtime endpoint {endpoint}: only unix sockets are supported (unix:///path)");
        return path;
    }

    /// <summary>The first well-known runtime socket that exists, or null.</summary>
    public static string? Detect(string root = "/")
    {
        foreach (var p in WellKnownEndpoints)
        {
            var path = Path.Join(root, p);
            if (Path.Exists(path))
                return "unix://" + p;
        }
        return null;
    }

    public RuntimeVersion Version() =>
        Call("Version", o => client.Version(new VersionRequest { Version = "v1" }, o), r => new RuntimeVersion(r.RuntimeName, r.RuntimeVersion, r.RuntimeApiVersion));

    /// <summary>Every pod sandbox (ready or not), with addresses and network namespaces from their status.</summary>
    public IReadOnlyList<SandboxInfo> ListSandboxes(Func<string, bool>? wantStatus = null)
    {
        var items = Call("ListPodSandbox", o => client.ListPodSandbox(new ListPodSandboxRequest(), o), r => r.Items);
        var list = new List<SandboxInfo>(items.Count);
        foreach (var s in items)
        {
            if (wantStatus is not null && !wantStatus(s.Id))
            {
                list.Add(FromListed(s));
                continue;
            }
            try
            {
                list.Add(Sandbox(s.Id));
            }
            catch (RuntimeException) when (s.State == PodSandboxState.SandboxNotready)
            {
                list.Add(FromListed(s)); // removed meanwhile, or half torn down
            }
        }
        return list;
    }

    private static SandboxInfo FromListed(PodSandbox s) =>
        new(s.Id, s.Metadata?.Namespace ?? "", s.Metadata?.Name ?? "", s.Metadata?.Uid ?? "", s.State == PodSandboxState.SandboxReady,
            FromNs(s.CreatedAt), s.Labels, [], null, 0, 0);

    /// <summary>One sandbox's status (verbose: its network namespace and pid, as containerd and CRI-O report them).</summary>
    public SandboxInfo Sandbox(string id)
    {
        var r = Call("PodSandboxStatus", o => client.PodSandboxStatus(new PodSandboxStatusRequest { PodSandboxId = id, Verbose = true }, o), r => r);
        var s = r.Status ?? throw new RuntimeException($"{Endpoint}: PodSandboxStatus {id}: no status in the answer");
        var ips = new List<string>();
        if (s.Network is { } n)
        {
            if (n.Ip.Length > 0)
                ips.Add(n.Ip);
            ips.AddRange(n.AdditionalIps.Select(a => a.Ip).Where(a => a.Length > 0));
        }
        var (netnsPath, pid) = NetnsOf(r.Info);
        uint inode = 0;
        if (netnsPath is not null)
            inode = Netns.Inode(netnsPath) ?? 0;
        if (inode == 0 && pid > 0)
            inode = Netns.Inode($"/proc/{pid}/ns/net") ?? 0;
        return new SandboxInfo(s.Id, s.Metadata?.Namespace ?? "", s.Metadata?.Name ?? "", s.Metadata?.Uid ?? "",
            s.State == PodSandboxState.SandboxReady, FromNs(s.CreatedAt), s.Labels, ips, netnsPath, inode, pid);
    }

    /// <summary>The network namespace path and pid from a verbose status's "info" JSON (containerd, CRI-O).</summary>
    internal static (string? Path, int Pid) NetnsOf(IDictionary<string, string> info)
    {
        if (!info.TryGetValue("info", out var json))
            return (null, 0);
        try
        {
            using var doc = JsonDocument.Parse(json);
            var root = doc.RootElement;
            int pid = root.TryGetProperty("pid", out var p) && p.ValueKind == JsonValueKind.Number && p.TryGetInt32(out var pv) ? pv : 0;
            string? path = null;
            if (root.TryGetProperty("runtimeSpec", out var spec) && spec.TryGetProperty("linux", out var linux)
                && linux.TryGetProperty("namespaces", out var nss) && nss.ValueKind == JsonValueKind.Array)
                foreach (var ns in nss.EnumerateArray())
                    if (ns.TryGetProperty("type", out var t) && t.GetString() == "network" && ns.TryGetProperty("path", out var np))
                        path = np.GetString();
            return (string.IsNullOrEmpty(path) ? null : path, pid);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            return (null, 0);
        }
    }

    public IReadOnlyList<ContainerInfo> ListContainers() =>
        Call("ListContainers", o => client.ListContainers(new ListContainersRequest(), o),
            r => r.Containers.Select(c => new ContainerInfo(c.Id, c.PodSandboxId, c.Metadata?.Name ?? "", c.Image?.Image ?? "",
                StateName(c.State), FromNs(c.CreatedAt))).ToList());

    public string RunPodSandbox(PodSandboxConfig config, TimeSpan? timeout = null) =>
        Call("RunPodSandbox", o => client.RunPodSandbox(new RunPodSandboxRequest { Config = config }, o), r => r.PodSandboxId, timeout);

    public void StopPodSandbox(string id) => Call("StopPodSandbox", o => client.StopPodSandbox(new StopPodSandboxRequest { PodSandboxId = id }, o), _ => 0, TimeSpan.FromSeconds(30));

    public void RemovePodSandbox(string id) => Call("RemovePodSandbox", o => client.RemovePodSandbox(new RemovePodSandboxRequest { PodSandboxId = id }, o), _ => 0, TimeSpan.FromSeconds(30));

    public string CreateContainer(string sandboxId, ContainerConfig config, PodSandboxConfig sandboxConfig) =>
        Call("CreateContainer", o => client.CreateContainer(new CreateContainerRequest { PodSandboxId = sandboxId, Config = config, SandboxConfig = sandboxConfig }, o),
            r => r.ContainerId, TimeSpan.FromSeconds(30));

    public void StartContainer(string id) => Call("StartContainer", o => client.StartContainer(new StartContainerRequest { ContainerId = id }, o), _ => 0, TimeSpan.FromSeconds(30));

    public void StopContainer(string id, long timeoutSeconds) =>
        Call("StopContainer", o => client.StopContainer(new StopContainerRequest { ContainerId = id, Timeout = timeoutSeconds }, o), _ => 0, TimeSpan.FromSeconds(timeoutSeconds + 30));

    public void RemoveContainer(string id) => Call("RemoveContainer", o => client.RemoveContainer(new RemoveContainerRequest { ContainerId = id }, o), _ => 0, TimeSpan.FromSeconds(30));

    /// <summary>Runs a command in a container (kubectl exec, without a terminal) and waits for it.</summary>
    public (int ExitCode, string Stdout, string Stderr) ExecSync(string containerId, IEnumerable<string> cmd, TimeSpan timeout)
    {
        var req = new ExecSyncRequest { ContainerId = containerId, Timeout = (long)Math.Ceiling(timeout.TotalSeconds) };
        req.Cmd.AddRange(cmd);
        return Call("ExecSync", o => client.ExecSync(req, o), r => (r.ExitCode, r.Stdout.ToStringUtf8(), r.Stderr.ToStringUtf8()), timeout + TimeSpan.FromSeconds(10));
    }

    private static string StateName(ContainerState s) => s switch
    {
        ContainerState.ContainerCreated => "created",
        ContainerState.ContainerRunning => "running",
        ContainerState.ContainerExited => "exited",
        _ => "unknown",
    };

    private static DateTime FromNs(long ns) => ns <= 0 ? DateTime.UnixEpoch : DateTime.UnixEpoch.AddTicks(ns / 100);

    private T Call<TResp, T>(string what, Func<CallOptions, TResp> call, Func<TResp, T> map, TimeSpan? timeout = null)
    {
        // an absent socket is said as such, not as a deadline that a loaded machine may reach first
        if (!Path.Exists(SocketPath))
            throw new RuntimeException($"{Endpoint}: {what}: no such socket (is the runtime running?)");
        try
        {
            var resp = call(new CallOptions(deadline: DateTime.UtcNow + (timeout ?? CallTimeout)));
            return map(resp);
        }
        catch (RpcException e)
        {
            throw new RuntimeException($"{Endpoint}: {what}: {Describe(e)}", e);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new RuntimeException($"{Endpoint}: {what}: the answer is not a CRI message ({e.Message})", e);
        }
        catch (HttpRequestException e)
        {
            throw new RuntimeException($"{Endpoint}: {what}: {Root(e).Message}", e);
        }
    }

    /// <summary>One line for a gRPC failure: the socket's errno when the connection failed, else the status.</summary>
    private string Describe(RpcException e)
    {
        var root = Root(e);
        if (root is SocketException se)
        {
            return se.SocketErrorCode switch
            {
                SocketError.AddressNotAvailable or SocketError.ConnectionRefused when !File.Exists(SocketPath) && !Directory.Exists(Path.GetDirectoryName(SocketPath)) => "no such socket (is the runtime running?)",
                SocketError.AccessDenied => "permission denied (run as root, or as a member of the socket's group)",
                SocketError.ConnectionRefused => "connection refused (nothing listens on the socket)",
                _ when !Path.Exists(SocketPath) => "no such socket (is the runtime running?)",
                _ => se.Message,
            };
        }
        // something listens but does not speak HTTP/2 (gRPC's transport): not a CRI runtime's socket
        for (Exception? x = e; x is not null; x = x.InnerException)
        {
            if (x is IOException io && io.Message.Contains("HTTP/2", StringComparison.Ordinal))
                return $"the answer is not gRPC: {io.Message.TrimEnd('.')} (is this a CRI runtime's socket?)";
        }
        if (e.StatusCode == StatusCode.Unimplemented)
            return "not implemented: the runtime does not serve CRI runtime.v1 (containerd >= 1.6 and CRI-O >= 1.20 do; is containerd's cri plugin disabled?)";
        if (e.StatusCode == StatusCode.DeadlineExceeded)
            return "no answer in time";
        if (e.StatusCode == StatusCode.Internal && root is not RpcException)
            return $"the answer is not gRPC ({root.Message})";
        return string.IsNullOrEmpty(e.Status.Detail) ? e.StatusCode.ToString() : $"{e.StatusCode}: {e.Status.Detail.Split('\n')[0]}";
    }

    private static Exception Root(Exception e)
    {
        while (e.InnerException is not null)
            e = e.InnerException;
        return e;
    }

    public void Dispose() => channel.Dispose();
}
