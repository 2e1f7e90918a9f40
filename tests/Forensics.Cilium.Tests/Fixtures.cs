using Forensics.Cilium.Hubble.Api;
using Forensics.Cilium.Tetragon.Api;
using Forensics.Tests;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;

namespace Forensics.Cilium.Tests;

/// <summary>Real published events as the project's messages, and what the tests construct beside them.</summary>
public static class Fixtures
{
    public static string Data(string name) => Path.Combine(AppContext.BaseDirectory, "testdata", name);

    private static readonly JsonParser Parser = new(JsonParser.Settings.Default.WithIgnoreUnknownFields(true));

    /// <summary>The real Hubble lines (upstream tests, a 1.19 exporter file, the docs) as GetFlowsResponse messages, as a Hubble server streams them.</summary>
    public static List<GetFlowsResponse> HubbleFlows() =>
        [.. File.ReadAllLines(Data("hubble_real_flows.jsonl")).Concat(File.ReadAllLines(Data("hubble_exporter_lines.jsonl")))
            .Where(l => l.Contains("\"flow\"", StringComparison.Ordinal))
            .Select(l => Parser.Parse<GetFlowsResponse>(l))];

    /// <summary>The real Tetragon process_exec events (cilium/tetragon testdata/events.json).</summary>
    public static List<GetEventsResponse> TetragonExecs() =>
        [.. File.ReadAllLines(Data("tetragon_process_exec_events.jsonl")).Where(l => l.Length > 0).Select(l => Parser.Parse<GetEventsResponse>(l))];

    private static readonly Pod Xwing = new() { Namespace = "default", Name = "xwing", Container = new Container { Id = "containerd://3b8e1c", Name = "spaceship" } };

    /// <summary>
    /// The process of Tetragon's network-monitoring walkthrough (docs getting-started/network.md): the
    /// events behind its compact lines `🚀 process default/xwing /usr/bin/curl https://ebpf.io/applications/#tetragon`,
    /// `🔌 connect default/xwing /usr/bin/curl tcp 10.32.0.19:33978 -> 104.198.14.52:443` and
    /// `💥 exit    default/xwing /usr/bin/curl https://ebpf.io/applications/#tetragon 60`, holding exactly their facts.
    /// </summary>
    public static List<GetEventsResponse> TetragonCurl()
    {
        var t0 = Timestamp.FromDateTime(new DateTime(2023, 11, 1, 5, 25, 14, DateTimeKind.Utc));
        Process Curl() => new()
        {
            ExecId = "a2luZC1jb250cm9sLXBsYW5lOjExNDI4NjE2NDAyMTY4OjQ4MDQ1", Pid = 48045, Uid = 0, Cwd = "/", Binary = "/usr/bin/curl",
            Arguments = "https://ebpf.io/applications/#tetragon", Flags = "execve rootcwd clone", StartTime = t0, Pod = Xwing.Clone(),
            ParentExecId = "a2luZC1jb250cm9sLXBsYW5lOjExNDI4NTU1MDEzNjE5OjQ3OTk4", Tid = 48045,
        };
        var parent = new Process { ExecId = "a2luZC1jb250cm9sLXBsYW5lOjExNDI4NTU1MDEzNjE5OjQ3OTk4", Pid = 47998, Binary = "/bin/sh", Pod = Xwing.Clone() };
        return
        [
            new() { ProcessExec = new ProcessExec { Process = Curl(), Parent = parent }, NodeName = "kind-control-plane", Time = t0 },
            new()
            {
                ProcessKprobe = new ProcessKprobe
                {
                    Process = Curl(), Parent = parent, FunctionName = "tcp_connect", PolicyName = "monitor-network-activity-outside-cluster-cidr-range",
                    Action = KprobeAction.Post,
                    Args = { new KprobeArgument { SockArg = new KprobeSock { Family = "AF_INET", Type = "SOCK_STREAM", Protocol = "IPPROTO_TCP", Saddr = "10.32.0.19", Daddr = "104.198.14.52", Sport = 33978, Dport = 443, Cookie = 18446619125386633728, State = "TCP_SYN_SENT" } } },
                },
                NodeName = "kind-control-plane",
                Time = Timestamp.FromDateTime(t0.ToDateTime().AddMilliseconds(3)),
            },
            new() { ProcessExit = new ProcessExit { Process = Curl(), Parent = parent, Status = 60 }, NodeName = "kind-control-plane", Time = Timestamp.FromDateTime(t0.ToDateTime().AddSeconds(1)) },
        ];
    }

    /// <summary>
    /// A socket-LB service translation as Hubble reports it (trace-sock pre-xlate-fwd, then post-xlate-fwd
    /// TRANSLATED with the destination service), constructed: xwing connecting to deathstar's ClusterIP.
    /// </summary>
    public static List<GetFlowsResponse> SockTranslation()
    {
        Flow F(string dst, SocketTranslationPoint p, Verdict v, int nanos) => new()
        {
            Time = new Timestamp { Seconds = 1692619938, Nanos = nanos },
            Verdict = v,
            IP = new IP { Source = "10.244.1.60", Destination = dst, IpVersion = IPVersion.Ipv4 },
            L4 = new Layer4 { TCP = new TCP { SourcePort = 0, DestinationPort = 80 } },
            Source = new Endpoint { ID = 1234, Identity = 40000, Namespace = "default", PodName = "xwing", Labels = { "k8s:class=xwing", "k8s:org=alliance" } },
            Destination = new Endpoint { Identity = 2 },
            Type = FlowType.Sock,
            NodeName = "kind-kind/kind-worker",
            EventType = new CiliumEventType { Type = 7, SubType = (int)p },
            SockXlatePoint = p,
            SocketCookie = 12345,
            DestinationService = p == SocketTranslationPoint.SockXlatePointPostDirectionFwd ? new Service { Namespace = "default", Name = "deathstar" } : null,
            TrafficDirection = TrafficDirection.Egress,
        };
        return
        [
            new() { Flow = F("10.96.0.10", SocketTranslationPoint.SockXlatePointPreDirectionFwd, Verdict.Traced, 1000), NodeName = "kind-kind/kind-worker" },
            new() { Flow = F("10.244.1.5", SocketTranslationPoint.SockXlatePointPostDirectionFwd, Verdict.Translated, 2000), NodeName = "kind-kind/kind-worker" },
        ];
    }

    public static string Temp(string prefix) => Directory.CreateTempSubdirectory(prefix).FullName;

    public static string Repo(params string[] parts) => Forensics.Tests.Repo.Path(parts);
}
