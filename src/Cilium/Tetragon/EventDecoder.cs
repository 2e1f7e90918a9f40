using System.Buffers.Binary;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Forensics.Cilium.Hubble;
using Forensics.Cilium.Tetragon.Api;
using Forensics.Format;
using Forensics.Recorder.Storage;
using Google.Protobuf.WellKnownTypes;

namespace Forensics.Cilium.Tetragon;

/// <summary>
/// Tetragon's events into the recording's tables: process_exec -> exec, process_exit -> exit (with
/// parent, exec id, pod, container), process_kprobe on a connect hook with a sock argument (tcp_connect
/// as the network-monitoring TracingPolicy hooks it, and the other connect and send hooks) -> connect.
/// Rate-limit messages count as loss; throttle messages are loss rows (their events are not counted by
/// Tetragon). Other kinds are counted as skipped. received = stored + skipped + malformed.
/// </summary>
public sealed class EventDecoder
{
    private readonly RecordingSink sink;
    private readonly ManifestSource stats;
    private readonly string defaultNode;

    public EventDecoder(RecordingSink sink, ManifestSource stats, string defaultNode)
    {
        this.sink = sink;
        this.stats = stats;
        this.defaultNode = defaultNode;
    }

    public void Decode(GetEventsResponse e, List<KeyValuePair<string, string>> unknown)
    {
        ArgumentNullException.ThrowIfNull(e);
        ArgumentNullException.ThrowIfNull(unknown);
        lock (stats)
            stats.Received++;
        var node = e.NodeName.Length > 0 ? e.NodeName : defaultNode;
        var extra = UnknownFields.ToJson(unknown);
        long utc = FlowDecoder.Ns(e.Time);
        switch (e.EventCase)
        {
            case GetEventsResponse.EventOneofCase.ProcessExec when e.ProcessExec.Process is not null:
                Exec(node, utc, e.ProcessExec, extra);
                Stored("exec", unknown);
                break;
            case GetEventsResponse.EventOneofCase.ProcessExit when e.ProcessExit.Process is not null:
                Exit(node, utc, e.ProcessExit, extra);
                Stored("exit", unknown);
                break;
            case GetEventsResponse.EventOneofCase.ProcessKprobe when e.ProcessKprobe.Process is not null:
                var kind = ConnectKind(e.ProcessKprobe.FunctionName);
                var sock = e.ProcessKprobe.Args.FirstOrDefault(a => a.ArgCase == KprobeArgument.ArgOneofCase.SockArg)?.SockArg;
                var addr = e.ProcessKprobe.Args.FirstOrDefault(a => a.ArgCase == KprobeArgument.ArgOneofCase.SockaddrArg)?.SockaddrArg;
                if (kind is null || (sock is null && addr is null))
                {
                    Skip("kprobe " + e.ProcessKprobe.FunctionName + (kind is null ? "" : " without a sock argument"));
                    break;
                }
                Connect(node, utc, e.ProcessKprobe, kind, sock, addr, extra);
                Stored("connect", unknown);
                break;
            case GetEventsResponse.EventOneofCase.RateLimitInfo:
                ulong n = e.RateLimitInfo.NumberOfDroppedProcessEvents;
                sink.Loss(node, (e.Time ?? Timestamp.FromDateTime(DateTime.UtcNow)).ToDateTime(), "process", n, "tetragon", $"rate limit: {n} process events dropped");
                sink.CountLoss("tetragon", n);
                lock (stats)
                {
                    Skip("rate-limit report");
                    stats.Lost["rate-limit"] = stats.Lost.GetValueOrDefault("rate-limit") + n;
                }
                break;
            case GetEventsResponse.EventOneofCase.ProcessThrottle:
                var t = e.ProcessThrottle;
                var what = t.Type switch { ThrottleType.ThrottleStart => "start", ThrottleType.ThrottleStop => "stop", var x => FlowDecoder.EnumName(x) };
                sink.Loss(node, (e.Time ?? Timestamp.FromDateTime(DateTime.UtcNow)).ToDateTime(), "process", 0, "tetragon",
                    $"throttle {what}: cgroup {t.Cgroup}" + (t.Type == ThrottleType.ThrottleStart ? " (its events are dropped until stop; Tetragon does not count them)" : ""));
                lock (stats)
                {
                    Skip("throttle report");
                    if (t.Type == ThrottleType.ThrottleStart)
                        stats.Lost["throttle periods (events not counted)"] = stats.Lost.GetValueOrDefault("throttle periods (events not counted)") + 1;
                }
                break;
            default:
                Skip(e.EventCase switch
                {
                    GetEventsResponse.EventOneofCase.None => "empty or unknown event",
                    GetEventsResponse.EventOneofCase.ProcessExec or GetEventsResponse.EventOneofCase.ProcessExit
                        or GetEventsResponse.EventOneofCase.ProcessKprobe => "event without process",
                    var c => Snake(c.ToString()),
                });
                break;
        }
    }

    private void Stored(string table, List<KeyValuePair<string, string>> unknown)
    {
        lock (stats)
        {
            foreach (var u in unknown) // counted where kept: in the row's extra column
                stats.UnknownFields[u.Key] = stats.UnknownFields.GetValueOrDefault(u.Key) + 1;
            stats.Stored++;
            stats.RowsWritten[table] = stats.RowsWritten.GetValueOrDefault(table) + 1;
        }
    }

    private void Skip(string why)
    {
        lock (stats)
            stats.Skipped[why] = stats.Skipped.GetValueOrDefault(why) + 1;
    }

    /// <summary>connect_kind of a hooked function: tcp, udp (connect on a UDP socket) or udp-send; null when the hook is no connect.</summary>
    public static string? ConnectKind(string function)
    {
        // syscall hooks carry an arch prefix (__x64_sys_connect)
        var f = function.StartsWith("__", StringComparison.Ordinal) && function.Contains("_sys_", StringComparison.Ordinal)
            ? function[(function.IndexOf("_sys_", StringComparison.Ordinal) + 1)..] : function;
        return f switch
        {
            "tcp_connect" or "tcp_v4_connect" or "tcp_v6_connect" => "tcp",
            "ip4_datagram_connect" or "ip6_datagram_connect" or "udp_connect" => "udp",
            "udp_sendmsg" or "udpv6_sendmsg" => "udp-send",
            "security_socket_connect" or "sys_connect" or "__sys_connect" => "connect",
            _ => null,
        };
    }

    private static void Process(RowWriter w, long utc, Process p, string? extra)
    {
        w.Time("time", utc);
        w.U32("pid", p.Pid ?? 0);
        w.U32("uid", p.Uid ?? 0);
        w.U64("exec_id", Id(p.ExecId));
        w.Str("binary", p.Binary);
        w.Str("comm", ""); // Tetragon does not send the kernel's comm
        w.U32("netns_ino", p.Ns?.Net?.Inum ?? 0);
        w.Opt("namespace", p.Pod?.Namespace);
        w.Opt("pod", p.Pod?.Name);
        w.Str("source", "tetragon");
        w.Opt("container_id", p.Pod?.Container?.Id);
        w.Opt("container", p.Pod?.Container?.Name);
        w.Opt("pod_uid", p.Pod?.Uid);
        w.Opt("pod_labels", p.Pod is { PodLabels.Count: > 0 } pod
            ? string.Join(',', pod.PodLabels.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Key + "=" + kv.Value)) : null);
        w.Opt("exec_key", p.ExecId);
        w.Str("extra", extra);
    }

    private void Exec(string node, long utc, ProcessExec ev, string? extra) => sink.Row("exec", node, w =>
    {
        var p = ev.Process;
        Process(w, utc, p, extra);
        w.U32("tid", p.Tid ?? p.Pid ?? 0);
        w.U32("ppid", ev.Parent?.Pid ?? 0);
        w.U32("gid", p.ProcessCredentials?.Gid ?? 0);
        w.U64("parent_exec_id", p.ParentExecId.Length > 0 ? Id(p.ParentExecId) : null);
        w.Time("process_start", FlowDecoder.Ns(p.StartTime));
        w.Str("arguments", p.Arguments);
        w.Str("cwd", p.Cwd);
        w.Bool("procfs", p.Flags.Split(' ').Contains("procFS", StringComparer.Ordinal));
        w.Opt("parent_exec_key", p.ParentExecId);
        w.Opt("flags", p.Flags);
    });

    private void Exit(string node, long utc, ProcessExit ev, string? extra) => sink.Row("exit", node, w =>
    {
        var p = ev.Process;
        Process(w, utc, p, extra);
        w.U32("ppid", ev.Parent?.Pid ?? 0);
        int sig = SignalNumber(ev.Signal);
        if (ev.Signal.Length > 0)
        {
            w.I32("exit_code", null);
            w.Str("signal", ev.Signal);
        }
        else
        {
            w.I32("exit_code", (int)ev.Status);
            w.Str("signal", null);
        }
        w.U32("status", ev.Signal.Length > 0 ? (uint)sig : (ev.Status & 0xff) << 8);
        w.U64("parent_exec_id", p.ParentExecId.Length > 0 ? Id(p.ParentExecId) : null);
        w.Opt("parent_exec_key", p.ParentExecId);
        w.Str("arguments", p.Arguments);
    });

    private void Connect(string node, long utc, ProcessKprobe k, string kind, KprobeSock? sock, KprobeSockaddr? addr, string? extra) => sink.Row("connect", node, w =>
    {
        var p = k.Process;
        Process(w, utc, p, extra);
        w.U32("tid", p.Tid ?? p.Pid ?? 0);
        string proto = sock?.Protocol switch
        {
            "IPPROTO_TCP" => "tcp",
            "IPPROTO_UDP" => "udp",
            "IPPROTO_ICMP" => "icmp",
            "IPPROTO_ICMPV6" => "icmpv6",
            "IPPROTO_SCTP" => "sctp",
            null => kind == "tcp" ? "tcp" : kind.StartsWith("udp", StringComparison.Ordinal) ? "udp" : "",
            var x => x.StartsWith("IPPROTO_", StringComparison.Ordinal) ? x["IPPROTO_".Length..].ToLowerInvariant() : x,
        };
        w.Str("connect_kind", kind == "connect" ? proto is "udp" ? "udp" : "tcp" : kind);
        string dst = sock?.Daddr ?? addr?.Addr ?? "";
        string family = sock?.Family ?? addr?.Family ?? "";
        w.U8("ip_version", family == "AF_INET6" || dst.Contains(':', StringComparison.Ordinal) ? (byte)6 : (byte)4);
        w.Str("src_ip", sock?.Saddr ?? "");
        w.U16("src_port", sock?.Sport ?? 0);
        w.Str("dst_ip", dst);
        w.U16("dst_port", sock?.Dport ?? addr?.Port ?? 0);
        w.Str("protocol", proto);
        w.Opt("function", k.FunctionName);
        w.Opt("policy_name", k.PolicyName);
        w.U64("sock_cookie", sock is { Cookie: > 0 } ? sock.Cookie : null);
    });

    /// <summary>exec_id of a Tetragon process: its exec_id text (base64 of node:ktime:pid) hashed to 64 bits, the same for live and imported events.</summary>
    public static ulong Id(string execId)
    {
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(Encoding.UTF8.GetBytes(execId), hash);
        return BinaryPrimitives.ReadUInt64LittleEndian(hash);
    }

    private static readonly string[] Signals =
    [
        "", "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE", "SIGKILL", "SIGUSR1",
        "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT", "SIGCHLD", "SIGCONT", "SIGSTOP", "SIGTSTP",
        "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH", "SIGIO", "SIGPWR", "SIGSYS",
    ];

    private static int SignalNumber(string name) => Math.Max(0, Array.IndexOf(Signals, name));

    private static string Snake(string pascal)
    {
        var sb = new StringBuilder();
        foreach (var ch in pascal)
        {
            if (char.IsUpper(ch) && sb.Length > 0)
                sb.Append('_');
            sb.Append(char.ToLowerInvariant(ch));
        }
        return sb.ToString();
    }

    internal static string Num(ulong n) => n.ToString(CultureInfo.InvariantCulture);
}
