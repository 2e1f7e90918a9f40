using System.Collections;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Forensics.Format;

namespace Forensics.Query.Render;

/// <summary>How replay and monitor print events.</summary>
public enum RenderFormat
{
    /// <summary>The live tools' lines, each after its UTC time (RFC 3339, ns).</summary>
    Text,

    /// <summary>Exactly the live tools' lines: cilium monitor for the datapath, tetra getevents -o compact for processes.</summary>
    Compact,

    /// <summary>One JSON object per event: "type" (the table) and every column.</summary>
    Json,
}

/// <summary>
/// Renders one event row (column name -> value, as the table's schema names
/// them) as a line. Datapath events read like `cilium monitor`, process events
/// like `tetra getevents -o compact`. Shared by `forensics replay` (rows from
/// Parquet) and `forensics monitor` (rows decoded live).
/// </summary>
public sealed class LineRenderer
{
    private readonly RenderFormat _format;

    public LineRenderer(RenderFormat format) => _format = format;

    /// <summary>Arguments of a process image by exec_id, for exit lines (the exit event does not carry them).</summary>
    public Func<ulong, string?>? ArgumentsOf { get; init; }

    /// <summary>The node the events were recorded on: tetra prints it for a process outside any pod.</summary>
    public string? Node { get; init; }

    /// <summary>
    /// cilium monitor's verbose form for drops and traces (pkg/monitor/datapath_drop.go and datapath_trace.go
    /// DumpVerbose, without the packet dissection): a separator line, then "CPU %02d: MARK %#x FROM %d DROP: ...".
    /// </summary>
    public bool Verbose { get; init; }

    /// <summary>Renders the row; null when the row prints nothing (e.g. a loss row with no loss).</summary>
    public string? Render(string table, IReadOnlyDictionary<string, object?> row)
    {
        ArgumentNullException.ThrowIfNull(table);
        ArgumentNullException.ThrowIfNull(row);
        if (_format == RenderFormat.Json)
            return Json(table, row);
        if (HubbleLines.IsHubble(table, row))
            return HubbleLines.Compact(table, row); // hubble observe prints its own time
        var line = table switch
        {
            "drop" when Verbose && _format == RenderFormat.Compact => VerboseDrop(row),
            "trace" when Verbose && _format == RenderFormat.Compact => VerboseTrace(row),
            "drop" => Drop(row),
            "policy" => Policy(row),
            "trace" => Trace(row),
            "nat" => Nat(row),
            "capture" => Capture(row),
            "kdrop" => KernelDrop(row),
            "loss" => Loss(row),
            "exec" => Exec(row),
            "connect" => Connect(row),
            "exit" => Exit(row),
            _ => $"{table}: {string.Join(", ", row.Select(kv => kv.Key + "=" + Format(kv.Value)))}",
        };
        if (line is null || _format == RenderFormat.Compact)
            return line;
        // the recorded nanoseconds (time_ns) when the row has them, else the time as precise as it is
        if (row.TryGetValue("time_ns", out var ns) && ns is not null)
            return FormatTimeNs(Convert.ToInt64(ns, CultureInfo.InvariantCulture)) + " " + line;
        return row.TryGetValue("time", out var t) && t is not null ? FormatTime(t) + " " + line : line;
    }

    // pkg/monitor/datapath_drop.go: "xx drop (%s) flow %#x to endpoint %d, ifindex %d, file %s:%d, " + ", identity %s->%s" + ": %s"
    private static string Drop(IReadOnlyDictionary<string, object?> r)
    {
        var reason = Str(r, "reason_name");
        if (reason.Length == 0)
            reason = DropReasons.NameOf((int)U(r, "reason"));
        return $"xx drop ({reason}) flow {Hex(r, "flow_id")} to endpoint {U(r, "endpoint_id")}, ifindex {U(r, "ifindex")}, file {SourceFile(Str(r, "file"))}:{U(r, "line")}, , identity {Identity(U(r, "src_identity"))}->{Identity(U(r, "dst_identity"))}: {Summary(r)}";
    }

    private const string Separator = "------------------------------------------------------------------------------";

    // "%s MARK %#x FROM %d DROP: %d bytes, reason %s" + ", identity %d->%d" + ", to endpoint %d"; %s is the CPU prefix
    private static string VerboseDrop(IReadOnlyDictionary<string, object?> r)
    {
        var reason = Str(r, "reason_name");
        if (reason.Length == 0)
            reason = DropReasons.NameOf((int)U(r, "reason"));
        return $"{Separator}\nCPU {U(r, "cpu"):D2}: MARK {Hex(r, "flow_id")} FROM {U(r, "endpoint_id")} DROP: {U(r, "pkt_len")} bytes, reason {reason}, identity {U(r, "src_identity")}->{U(r, "dst_identity")}, to endpoint {ToEndpoint(r)}";
    }

    // "%s MARK %#x FROM %d %s: %d bytes (%d captured), state %s, interface %s, identity %d->%d, orig-ip %s, to endpoint %d"
    private static string VerboseTrace(IReadOnlyDictionary<string, object?> r)
    {
        var orig = Str(r, "orig_ip");
        if (orig.Length == 0)
            orig = U(r, "ip_version") == 6 ? "::" : "0.0.0.0";
        var iface = Interface(r);
        return $"{Separator}\nCPU {U(r, "cpu"):D2}: MARK {Hex(r, "flow_id")} FROM {U(r, "endpoint_id")} {Str(r, "obs_point")}: {U(r, "pkt_len")} bytes (0 captured), state {CtState(r)}, interface {iface}, identity {U(r, "src_identity")}->{U(r, "dst_identity")}, orig-ip {orig}, to endpoint {ToEndpoint(r)}";
    }

    // cilium's dst_id: the endpoint the packet goes into, else 0
    private static ulong ToEndpoint(IReadOnlyDictionary<string, object?> r) =>
        Str(r, "direction") == "ingress" || Str(r, "obs_point") == "to-endpoint" ? U(r, "endpoint_id") : 0;

    // pkg/monitor/datapath_policy.go: "Policy verdict log: flow %#x local EP ID %d, remote ID %s, proto %d, %s, action %s, auth: %s, match %s, %s"
    // The datapath has no mutual authentication: the auth type is always "disabled".
    private static string Policy(IReadOnlyDictionary<string, object?> r) =>
        $"Policy verdict log: flow {Hex(r, "flow_id")} local EP ID {U(r, "endpoint_id")}, remote ID {Identity(U(r, "remote_identity"))}, proto {ProtoNumber(Str(r, "protocol"))}, {Str(r, "direction")}, action {Str(r, "action")}, auth: disabled, match {Str(r, "match")}, {Summary(r)}";

    // pkg/monitor/datapath_trace.go: "%s flow %#x " + ", identity %s->%s" + " state %s ifindex %s orig-ip %s: %s", e.g.
    // "-> endpoint 212 flow 0x3000e251 , identity ingress->61131 state new ifindex lxcfc90a8580fd6 orig-ip 10.0.0.192: ..."
    private static string Trace(IReadOnlyDictionary<string, object?> r)
    {
        var orig = Str(r, "orig_ip");
        if (orig.Length == 0)
            orig = U(r, "ip_version") == 6 ? "::" : "0.0.0.0";
        return $"{ObsPoint(r)} flow {Hex(r, "flow_id")} , identity {Identity(U(r, "src_identity"))}->{Identity(U(r, "dst_identity"))} state {CtState(r)} ifindex {Interface(r)} orig-ip {orig}: {Summary(r)}";
    }

    // the interface's name where the recording knows it (cilium monitor resolves it from its link cache), else the number
    private static string Interface(IReadOnlyDictionary<string, object?> r)
    {
        var name = Str(r, "interface");
        return name.Length > 0 ? name : U(r, "ifindex").ToString(CultureInfo.InvariantCulture);
    }

    private static string Nat(IReadOnlyDictionary<string, object?> r)
    {
        var proto = Str(r, "protocol");
        var orig = $"{Addr(Str(r, "orig_src_ip"), U(r, "orig_src_port"), proto)} -> {Addr(Str(r, "orig_dst_ip"), U(r, "orig_dst_port"), proto)}";
        var xl = $"{Addr(Str(r, "xlated_src_ip"), U(r, "xlated_src_port"), proto)} -> {Addr(Str(r, "xlated_dst_ip"), U(r, "xlated_dst_port"), proto)}";
        var service = U(r, "service_id") != 0 ? $" service {U(r, "service_id")}," : "";
        return $"NAT {Str(r, "nat_kind")} flow {Hex(r, "flow_id")} endpoint {U(r, "endpoint_id")},{service} identity {U(r, "src_identity")}->{U(r, "dst_identity")}: {orig} {proto} => {xl}";
    }

    private static string Capture(IReadOnlyDictionary<string, object?> r)
    {
        var drop = U(r, "drop_reason") != 0 ? $" drop ({DropReasons.NameOf((int)U(r, "drop_reason"))})," : "";
        return $"{ObsPoint(r)} capture flow {Hex(r, "flow_id")}{drop} identity {Identity(U(r, "src_identity"))}->{Identity(U(r, "dst_identity"))} ifindex {U(r, "ifindex")} caplen {U(r, "cap_len")} len {U(r, "pkt_len")}: {Summary(r)}";
    }

    private static string KernelDrop(IReadOnlyDictionary<string, object?> r)
    {
        var where = Str(r, "pod").Length > 0 ? $" in {Pod(r)}," : "";
        return $"xx kernel drop ({Str(r, "reason_name")}) at {Str(r, "function")},{where} ifindex {U(r, "ifindex")}: {Summary(r).TrimEnd()}";
    }

    // A row of one CPU's ring buffer (loss v3): cilium monitor's own line for a CPU whose buffer lost events
    // (pkg/monitor/format/format.go FormatLostEvent: "CPU %02d: Lost %d events"). Any other row (user space's drops,
    // another source's loss, a recording made before loss v3) is this tool's line: Cilium prints nothing like it.
    private static string? Loss(IReadOnlyDictionary<string, object?> r)
    {
        var failed = U(r, "failed");
        var user = U(r, "userspace_dropped");
        if (failed + user == 0)
            return null;
        if (r.TryGetValue("cpu", out var cpu) && cpu is not null)
            return string.Create(CultureInfo.InvariantCulture, $"CPU {Convert.ToUInt32(cpu, CultureInfo.InvariantCulture):D2}: Lost {failed + user} events");
        // nat rows come from the datapath's ring buffer and from the kernel's conntrack (ctnetlink), whose loss is ENOBUFS
        var kind = Str(r, "kind");
        return $"Lost {failed + user} {kind} events ({(kind == "nat" ? "ring buffer full or ENOBUFS" : "ring buffer full")}: {failed}, user space: {user})";
    }

    // tetra getevents -o compact (pkg/encoder): "🚀 %-7s" "process", then ProcessInfo (pod or node, binary), then the arguments:
    // "🚀 process default/xwing /usr/bin/curl https://ebpf.io/applications/#tetragon"
    private string Exec(IReadOnlyDictionary<string, object?> r) =>
        $"🚀 process {ProcessInfo(r)} {Str(r, "arguments")}".TrimEnd();

    // "🔌 connect default/xwing /usr/bin/curl tcp 10.32.0.19:33978 -> 104.198.14.52:443" (tetra's tcp_connect: TCP only,
    // so a compact replay prints no UDP connects; text and JSON print every connect).
    private string? Connect(IReadOnlyDictionary<string, object?> r)
    {
        var proto = Str(r, "protocol");
        if (_format == RenderFormat.Compact && proto != "tcp")
            return null;
        return $"🔌 connect {ProcessInfo(r)} {proto} {Addr(Str(r, "src_ip"), U(r, "src_port"), proto)} -> {Addr(Str(r, "dst_ip"), U(r, "dst_port"), proto)}";
    }

    // "💥 exit    default/xwing /usr/bin/curl https://ebpf.io/applications/#tetragon 60"
    private string Exit(IReadOnlyDictionary<string, object?> r)
    {
        var args = Str(r, "arguments"); // Tetragon's exit carries them
        if (args.Length == 0 && r.TryGetValue("exec_id", out var id) && id is not null && ArgumentsOf is not null)
            args = ArgumentsOf(Convert.ToUInt64(id, CultureInfo.InvariantCulture)) ?? "";
        var status = Str(r, "signal");
        if (status.Length == 0)
            status = r.TryGetValue("exit_code", out var c) && c is not null ? Convert.ToInt64(c, CultureInfo.InvariantCulture).ToString(CultureInfo.InvariantCulture) : "0";
        return args.Length > 0 ? $"💥 exit    {ProcessInfo(r)} {args} {status}" : $"💥 exit    {ProcessInfo(r)} {status}";
    }

    /// <summary>
    /// Tetragon's ProcessInfo: the pod (namespace/name), or the node's name for a process outside any pod,
    /// then the binary (its comm when the binary is unknown; left out, not padded, when neither is known).
    /// </summary>
    private string ProcessInfo(IReadOnlyDictionary<string, object?> r)
    {
        var pod = Str(r, "pod");
        var source = pod.Length == 0 ? Node ?? Str(r, "node") : Str(r, "namespace") + "/" + pod;
        var binary = Str(r, "binary");
        if (binary.Length == 0)
            binary = Str(r, "comm");
        return binary.Length == 0 ? source : source + " " + binary;
    }

    private static string Pod(IReadOnlyDictionary<string, object?> r)
    {
        var pod = Str(r, "pod");
        return pod.Length == 0 ? "" : Str(r, "namespace") + "/" + pod;
    }

    // pkg/monitor/datapath_trace.go traceSummary: "-> endpoint N", "<- endpoint N", "-> network", "<- network", "-> stack", ...
    private static string ObsPoint(IReadOnlyDictionary<string, object?> r) => Str(r, "obs_point") switch
    {
        "to-endpoint" => $"-> endpoint {U(r, "endpoint_id")}",
        "from-endpoint" => $"<- endpoint {U(r, "endpoint_id")}",
        var o when o.StartsWith("to-", StringComparison.Ordinal) => "-> " + o[3..],
        var o when o.StartsWith("from-", StringComparison.Ordinal) => "<- " + o[5..],
        _ => "unknown trace",
    };

    // Cilium's trace reasons: new, established, reply, related, reopened, unknown (no connection tracking state).
    private static string CtState(IReadOnlyDictionary<string, object?> r)
    {
        var s = Str(r, "ct_state");
        return s.Length == 0 || s == "none" ? "unknown" : s;
    }

    /// <summary>A security identity as cilium monitor prints it without -n: a reserved identity by its name (world), others by number.</summary>
    internal static string Identity(ulong id) =>
        Forensics.Format.ReservedIdentities.Name(id) ?? id.ToString(CultureInfo.InvariantCulture);

    /// <summary>
    /// A drop's source file as Cilium's BPF file list names files (pkg/monitor/api/files.go: "bpf_lxc.c",
    /// "conntrack.h"): the file's own name, without its directory. Our programs' files keep their names
    /// (datapath.bpf.c, policy.h); they are not mapped onto Cilium's.
    /// </summary>
    internal static string SourceFile(string file) => file.Length == 0 ? "unknown(0)" : Path.GetFileName(file);

    /// <summary>
    /// cilium monitor's connection summary (pkg/monitor/dissect.go GetConnectionSummary): "10.0.0.1:1234 -> 10.0.0.2:80 tcp SYN";
    /// for TCP the flags it names are SYN, ACK, RST and FIN, in that order (a segment with none of them keeps the space).
    /// An ICMP message is "10.0.0.1 -> 10.0.0.2 EchoRequest" (gopacket's type and code names), when the row has
    /// them (the summary "ICMPv4 EchoRequest" the datapath and Hubble write); else "10.0.0.1 -> 10.0.0.2 icmp".
    /// </summary>
    private static string Summary(IReadOnlyDictionary<string, object?> r)
    {
        var proto = Str(r, "protocol");
        if (proto is "icmp" or "icmpv6" && IcmpNames.FromHubbleSummary(Str(r, "summary")) is { } icmp)
            return $"{Str(r, "src_ip")} -> {Str(r, "dst_ip")} {icmp}";
        var s = $"{Addr(Str(r, "src_ip"), U(r, "src_port"), proto)} -> {Addr(Str(r, "dst_ip"), U(r, "dst_port"), proto)} {proto}";
        return proto == "tcp" ? s + " " + CiliumTcpFlags(Str(r, "tcp_flags")) : s;
    }

    private static readonly string[] CiliumFlagOrder = ["SYN", "ACK", "RST", "FIN"];

    /// <summary>The recorded flags ("ACK, PSH, FIN") as Cilium names them ("ACK, FIN").</summary>
    internal static string CiliumTcpFlags(string recorded)
    {
        var have = recorded.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        return string.Join(", ", CiliumFlagOrder.Where(f => have.Contains(f, StringComparer.Ordinal)));
    }

    private static string Addr(string ip, ulong port, string proto)
    {
        if (proto is "icmp" or "icmpv6")
            return ip;
        return ip.Contains(':', StringComparison.Ordinal) ? $"[{ip}]:{port}" : $"{ip}:{port}";
    }

    private static int ProtoNumber(string proto) => proto switch
    {
        "icmp" => 1,
        "tcp" => 6,
        "udp" => 17,
        "icmpv6" => 58,
        "sctp" => 132,
        _ => int.TryParse(proto, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? n : 0,
    };

    private static string Hex(IReadOnlyDictionary<string, object?> r, string key) => "0x" + U(r, key).ToString("x", CultureInfo.InvariantCulture);

    private static string Str(IReadOnlyDictionary<string, object?> r, string key) =>
        r.TryGetValue(key, out var v) && v is not null ? Convert.ToString(v, CultureInfo.InvariantCulture) ?? "" : "";

    private static ulong U(IReadOnlyDictionary<string, object?> r, string key) =>
        r.TryGetValue(key, out var v) && v is not null ? Convert.ToUInt64(v, CultureInfo.InvariantCulture) : 0;

    /// <summary>
    /// RFC 3339 UTC to the precision the value has: a TIMESTAMPTZ (DateTime) to the microsecond
    /// ("2026-12-04T14:48:11.600372Z"), never padded to look like nanoseconds.
    /// </summary>
    public static string FormatTime(object t) => t switch
    {
        DateTimeOffset d => d.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.ffffff", CultureInfo.InvariantCulture) + "Z",
        DateTime d => DateTime.SpecifyKind(d, d.Kind == DateTimeKind.Unspecified ? DateTimeKind.Utc : d.Kind).ToUniversalTime().ToString("yyyy-MM-ddTHH:mm:ss.ffffff", CultureInfo.InvariantCulture) + "Z",
        _ => Convert.ToString(t, CultureInfo.InvariantCulture) ?? "",
    };

    /// <summary>RFC 3339 UTC with nanoseconds, as Tetragon prints times: ns since the Unix epoch, exactly.</summary>
    public static string FormatTimeNs(long unixNs)
    {
        var seconds = Math.DivRem(unixNs, 1_000_000_000L, out var ns);
        if (ns < 0)
        {
            seconds--;
            ns += 1_000_000_000L;
        }
        return DateTime.UnixEpoch.AddSeconds(seconds).ToString("yyyy-MM-ddTHH:mm:ss", CultureInfo.InvariantCulture) + "." + ns.ToString("D9", CultureInfo.InvariantCulture) + "Z";
    }

    private static string Format(object? v) => v switch
    {
        null => "",
        byte[] b => Convert.ToHexStringLower(b),
        DateTime or DateTimeOffset => FormatTime(v),
        _ => Convert.ToString(v, CultureInfo.InvariantCulture) ?? "",
    };

    private static string Json(string table, IReadOnlyDictionary<string, object?> row)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteString("type", table);
            var ns = row.TryGetValue("time_ns", out var exact) && exact is not null ? Convert.ToInt64(exact, CultureInfo.InvariantCulture) : (long?)null;
            foreach (var (k, v) in row)
            {
                w.WritePropertyName(k);
                if (k == "time" && ns is { } n)
                    w.WriteStringValue(FormatTimeNs(n)); // the recorded nanoseconds
                else
                    JsonValue(w, v);
            }
            if (table is "policy" or "drop")
                HubblePolicies(w, row);
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(ms.ToArray());
    }

    /// <summary>
    /// The policies that decided, as Hubble's flow names them (flow.proto: ingress_allowed_by, egress_allowed_by,
    /// ingress_denied_by, egress_denied_by, each a list of Policy {name, namespace, labels, kind}), from the row's
    /// allowed_by/denied_by and, for this tool's datapath, the kind its rules column gives (and the labels Cilium
    /// gives a policy's rules: io.cilium.k8s.policy.derived-from, .name, .namespace). Nothing when no policy decided
    /// (default deny): Hubble's lists are empty then.
    /// </summary>
    private static void HubblePolicies(Utf8JsonWriter w, IReadOnlyDictionary<string, object?> r)
    {
        var dir = Str(r, "direction");
        if (dir is not ("ingress" or "egress"))
            return;
        var kinds = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var rule in Str(r, "rules").Split("; ", StringSplitOptions.RemoveEmptyEntries))
        {
            var parts = rule.Split(' ');
            if (parts.Length == 3 && parts[0].EndsWith("NetworkPolicy", StringComparison.Ordinal))
                kinds.TryAdd(parts[1], parts[0]);
        }
        foreach (var col in new[] { "allowed_by", "denied_by" })
        {
            var policies = Str(r, col).Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (policies.Length == 0)
                continue;
            w.WritePropertyName($"{dir}_{col}");
            w.WriteStartArray();
            foreach (var p in policies)
            {
                var slash = p.IndexOf('/', StringComparison.Ordinal);
                var (ns, name) = slash < 0 ? ("", p) : (p[..slash], p[(slash + 1)..]);
                w.WriteStartObject();
                w.WriteString("name", name);
                if (ns.Length > 0)
                    w.WriteString("namespace", ns);
                if (kinds.TryGetValue(p, out var kind))
                {
                    w.WritePropertyName("labels");
                    w.WriteStartArray();
                    w.WriteStringValue($"k8s:io.cilium.k8s.policy.derived-from={kind}");
                    w.WriteStringValue($"k8s:io.cilium.k8s.policy.name={name}");
                    if (ns.Length > 0)
                        w.WriteStringValue($"k8s:io.cilium.k8s.policy.namespace={ns}");
                    w.WriteEndArray();
                    w.WriteString("kind", kind);
                }
                w.WriteEndObject();
            }
            w.WriteEndArray();
        }
    }

    /// <summary>Writes a value as JSON: numbers as numbers, times as RFC 3339, bytes as base64.</summary>
    public static void JsonValue(Utf8JsonWriter w, object? v)
    {
        ArgumentNullException.ThrowIfNull(w);
        switch (v)
        {
            case null: w.WriteNullValue(); break;
            case bool b: w.WriteBooleanValue(b); break;
            case byte or sbyte or short or ushort or int or uint or long:
                w.WriteNumberValue(Convert.ToInt64(v, CultureInfo.InvariantCulture)); break;
            case ulong u: w.WriteNumberValue(u); break;
            case float or double or decimal: w.WriteNumberValue(Convert.ToDouble(v, CultureInfo.InvariantCulture)); break;
            case System.Numerics.BigInteger bi: w.WriteRawValue(bi.ToString(CultureInfo.InvariantCulture)); break;
            case byte[] bytes: w.WriteBase64StringValue(bytes); break;
            case DateTime or DateTimeOffset: w.WriteStringValue(FormatTime(v)); break;
            case string s: w.WriteStringValue(s); break;
            case IDictionary d:
                w.WriteStartObject();
                foreach (DictionaryEntry e in d)
                {
                    w.WritePropertyName(Convert.ToString(e.Key, CultureInfo.InvariantCulture) ?? "");
                    JsonValue(w, e.Value);
                }
                w.WriteEndObject();
                break;
            case IEnumerable list:
                w.WriteStartArray();
                foreach (var item in list)
                    JsonValue(w, item);
                w.WriteEndArray();
                break;
            default: w.WriteStringValue(Convert.ToString(v, CultureInfo.InvariantCulture)); break;
        }
    }
}
