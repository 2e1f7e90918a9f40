using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using Forensics.Datapath;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Bpf;
using Forensics.Datapath.Control;
using Forensics.Tests;

namespace Forensics.Kernel.Tests;

/// <summary>Runs a command, failing with its stderr on a non-zero exit; bounded in time.</summary>
internal static class Sh
{
    public static string Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(15_000))
        {
            p.Kill(true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} timed out");
        }
        if (p.ExitCode != 0)
            throw new InvalidOperationException($"{file} {string.Join(' ', args)}: exit {p.ExitCode}: {stderr.Result.Trim()}");
        return stdout.Result;
    }

    public static bool TryRun(string file, params string[] args)
    {
        try
        {
            Run(file, args);
            return true;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    public static int Ifindex(string name, string? netns = null) =>
        int.Parse(netns is null
            ? File.ReadAllText($"/sys/class/net/{name}/ifindex").Trim()
            : Run("ip", "netns", "exec", netns, "cat", $"/sys/class/net/{name}/ifindex").Trim(), System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>
/// Veth pairs (fxd prefix, no dummy driver on this kernel) whose ifindexes stand
/// for endpoints' host-side veths in BPF_PROG_TEST_RUN (the kernel needs a real
/// device for skb->ifindex). Deleting one end deletes the pair.
/// </summary>
internal sealed class DummyLinks : IDisposable
{
    private readonly List<string> names = [];

    public DummyLinks(int count)
    {
        var tag = Random.Shared.Next(0x10000, 0xfffff).ToString("x5", System.Globalization.CultureInfo.InvariantCulture);
        try
        {
            for (int i = 0; i < count; i++)
            {
                var name = $"fxd{tag}d{i}";
                Sh.Run("ip", "link", "add", name, "type", "veth", "peer", "name", $"fxd{tag}p{i}");
                names.Add(name);
                Ifindexes.Add(Sh.Ifindex(name));
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public List<int> Ifindexes { get; } = [];

    public void Dispose()
    {
        foreach (var n in names)
            Sh.TryRun("ip", "link", "del", n);
        names.Clear();
    }
}

/// <summary>A loaded datapath with endpoints registered on dummy ifindexes, run through BPF_PROG_TEST_RUN.</summary>
internal sealed class DatapathHarness : IDisposable
{
    public const uint TcActOk = 0;
    public const uint TcActShot = 2;

    private readonly DummyLinks links;
    private readonly RingBufferReader reader;
    private readonly List<byte[]> pending = [];
    private readonly Dictionary<string, int> ifindexOf = new(StringComparer.Ordinal);

    public DatapathHarness(ClusterSpec cluster, EventOptions? options = null, IEnumerable<PodSpec>? endpoints = null)
    {
        Prerequisites.EnsureKernelAccess();
        var eps = (endpoints ?? cluster.Pods).ToList();
        links = new DummyLinks(eps.Count);
        try
        {
            // per-packet tests see every packet's trace and capture: they ask for it (the product's default samples them)
            Dp = Datapath.Control.LoadedDatapath.Load(cluster, options ?? EventOptions.PerPacket with { RingBytes = 1 << 20 });
            for (int i = 0; i < eps.Count; i++)
            {
                Dp.RegisterEndpoint(eps[i], links.Ifindexes[i]);
                ifindexOf[eps[i].FullName] = links.Ifindexes[i];
            }
            reader = new RingBufferReader(Dp.EventsMap, r => pending.Add(r.ToArray()));
        }
        catch
        {
            Dp?.Dispose();
            links.Dispose();
            throw;
        }
    }

    public Datapath.Control.LoadedDatapath Dp { get; }

    public int IfindexOf(PodSpec pod) => ifindexOf[pod.FullName];

    /// <summary>A packet leaving the pod (from-endpoint on its host veth).</summary>
    public TestRunResult From(PodSpec pod, byte[] pkt) =>
        Dp.Object.Program(Datapath.Control.LoadedDatapath.FromEndpoint).TestRun(pkt, ifindex: IfindexOf(pod));

    /// <summary>A packet entering the pod (to-endpoint on its host veth).</summary>
    public TestRunResult To(PodSpec pod, byte[] pkt) =>
        Dp.Object.Program(Datapath.Control.LoadedDatapath.ToEndpoint).TestRun(pkt, ifindex: IfindexOf(pod));

    public TestRunResult ToNetwork(byte[] pkt) => Dp.Object.Program(Datapath.Control.LoadedDatapath.ToNetwork).TestRun(pkt, ifindex: links.Ifindexes[0]);

    public TestRunResult FromNetwork(byte[] pkt) => Dp.Object.Program(Datapath.Control.LoadedDatapath.FromNetwork).TestRun(pkt, ifindex: links.Ifindexes[0]);

    /// <summary>Events emitted since the last call.</summary>
    public Events Take()
    {
        reader.Consume();
        var list = new Events([.. pending]);
        pending.Clear();
        return list;
    }

    public uint IdentityOf(PodSpec pod) => Dp.IdentityOf(pod).Id;

    public void Dispose()
    {
        reader?.Dispose();
        Dp?.Dispose();
        links.Dispose();
    }
}

/// <summary>Where a drop says it was decided.</summary>
internal static class DropSite
{
    /// <summary>The drop's file (by its compile-time id) and line point at an FX_DROP in that BPF source.</summary>
    public static void AssertPointsAtFxDrop(DropEvent d)
    {
        var file = Forensics.Format.Names.SourceFile((byte)d.File);
        var lines = File.ReadAllLines(Forensics.Tests.Repo.Path("bpf", file));
        Assert.InRange(d.Line, 1, lines.Length);
        Assert.Contains("FX_DROP(", lines[d.Line - 1], StringComparison.Ordinal);
    }
}

/// <summary>Decoded events of one step.</summary>
internal sealed class Events(List<byte[]> records)
{
    public List<byte[]> Records { get; } = records;

    private IEnumerable<T> Of<T>(EventKind kind) where T : struct =>
        Records.Where(r => EventReader.Header(r).Kind == kind).Select(r => EventReader.Read<T>(r));

    public List<DropEvent> Drops => [.. Of<DropEvent>(EventKind.Drop)];
    public List<PolicyEvent> Verdicts => [.. Of<PolicyEvent>(EventKind.Policy)];
    public List<NatEvent> Nats => [.. Of<NatEvent>(EventKind.Nat)];
    public List<TraceEvent> Traces => [.. Of<TraceEvent>(EventKind.Trace)];
    public List<CaptureEvent> Captures => [.. Of<CaptureEvent>(EventKind.Capture)];

    public IEnumerable<EventKind> Kinds => Records.Select(r => EventReader.Header(r).Kind);
}

/// <summary>Reading addresses and ports out of packets the programs returned.</summary>
internal static class Pkt
{
    public static IPAddress Src(byte[] p) => new(p.AsSpan(26, 4));
    public static IPAddress Dst(byte[] p) => new(p.AsSpan(30, 4));
    public static int Sport(byte[] p) => BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(14 + (p[14] & 0xf) * 4));
    public static int Dport(byte[] p) => BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(14 + (p[14] & 0xf) * 4 + 2));
    public static string Ep(IPAddress ip, int port) => $"{ip}:{port}";
    public static string Src4(byte[] p) => Ep(Src(p), Sport(p));
    public static string Dst4(byte[] p) => Ep(Dst(p), Dport(p));
    public static string S(in Forensics.Datapath.Abi.Tuple t) => $"{EventReader.Source(t)}:{t.Sport}";
    public static string D(in Forensics.Datapath.Abi.Tuple t) => $"{EventReader.Destination(t)}:{t.Dport}";
}

/// <summary>The cluster the per-packet tests build on, with policies added per test.</summary>
internal static class TestCluster
{
    public static readonly PodSpec Frontend = Pod("frontend-1", "default", "10.244.0.10", ("app", "frontend"));
    public static readonly PodSpec Backend2 = Pod("backend-2", "default", "10.244.0.20", ("app", "backend"));
    public static readonly PodSpec Backend3 = Pod("backend-3", "default", "10.244.0.21", ("app", "backend"));
    public static readonly PodSpec Other = Pod("other-1", "default", "10.244.0.30", ("app", "other"));
    public static readonly PodSpec Tool = Pod("tool-1", "tools", "10.244.1.5", ("app", "frontend"));

    public const string BackendVip = "10.96.0.100";
    public const string EmptyVip = "10.96.0.200";
    public const string NodeIp = "172.16.0.1";

    public static PodSpec Pod(string name, string ns, string ip, params (string K, string V)[] labels) =>
        new(name, ns, labels.ToDictionary(l => l.K, l => l.V), IPAddress.Parse(ip));

    public static EndpointSelector Sel(params (string K, string V)[] labels) => new(labels.ToDictionary(l => l.K, l => l.V));

    public static PolicyRule Rule(IReadOnlyList<EndpointSelector>? endpoints = null, IReadOnlyList<CidrRule>? cidrs = null,
        IReadOnlyList<string>? entities = null, IReadOnlyList<PortProtocol>? ports = null) =>
        new(endpoints ?? [], cidrs ?? [], entities ?? [], ports ?? []);

    public static NetworkPolicySpec Policy(string name, EndpointSelector selector,
        IReadOnlyList<PolicyRule>? ingress = null, IReadOnlyList<PolicyRule>? egress = null,
        IReadOnlyList<PolicyRule>? ingressDeny = null, IReadOnlyList<PolicyRule>? egressDeny = null, string ns = "default") =>
        new(name, ns, selector, ingress ?? [], egress ?? [], ingressDeny ?? [], egressDeny ?? [], $"# {name}\n");

    public static ClusterSpec Cluster(params NetworkPolicySpec[] policies) => new(
        "test.yaml",
        new LabSpec("test", IPNetwork.Parse("10.244.0.0/16"), IPNetwork.Parse("10.96.0.0/12"), IPAddress.Parse(NodeIp), [], []),
        [Frontend, Backend2, Backend3, Other, Tool],
        [
            new ServiceSpec("backend-service", "default", IPAddress.Parse(BackendVip), new Dictionary<string, string> { ["app"] = "backend" },
                [new ServicePort(80, 8080, "TCP"), new ServicePort(53, 5353, "UDP")]),
            new ServiceSpec("empty-service", "default", IPAddress.Parse(EmptyVip), new Dictionary<string, string> { ["app"] = "nothing" },
                [new ServicePort(80, 8080, "TCP")]),
        ],
        policies);
}
