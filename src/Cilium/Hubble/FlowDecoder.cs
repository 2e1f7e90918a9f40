using System.Globalization;
using Forensics.Cilium.Hubble.Api;
using Forensics.Format;
using Forensics.Recorder.Storage;
using Google.Protobuf.WellKnownTypes;

#pragma warning disable CS0612 // Flow.drop_reason and Flow.Summary are deprecated upstream and still sent: read them

namespace Forensics.Cilium.Hubble;

/// <summary>
/// Hubble's flows into the recording's tables, one message at a time (from a GetFlows stream or one
/// line of an export): a drop event -> drop (Cilium's reason code and name), a policy verdict -> policy
/// (verdict, match type, the policies that allowed or denied), a trace -> trace (observation point,
/// reply flag, conntrack reason), a socket translation after the fact -> nat (service); a SNATed flow
/// is its row and a nat row. Lost-events messages count as loss. L7 and debug events are counted as
/// skipped by kind. Every message is accounted: received = stored + skipped + malformed.
/// </summary>
public sealed class FlowDecoder
{
    // Cilium's monitor message types (pkg/monitor/api/types.go)
    public const int MessageTypeDrop = 1, MessageTypeDebug = 2, MessageTypeCapture = 3, MessageTypeTrace = 4,
        MessageTypePolicyVerdict = 5, MessageTypeRecCapture = 6, MessageTypeTraceSock = 7, MessageTypeAccessLog = 129, MessageTypeAgent = 130;

    private readonly RecordingSink sink;
    private readonly ManifestSource stats;
    private readonly string defaultNode;
    private readonly Dictionary<ulong, (string Ip, uint Port)> preXlate = [];
    private readonly Queue<ulong> preXlateOrder = new();

    public FlowDecoder(RecordingSink sink, ManifestSource stats, string defaultNode)
    {
        this.sink = sink;
        this.stats = stats;
        this.defaultNode = defaultNode;
    }

    /// <summary>A GetFlowsResponse (live) or an ExportEvent (an export's line).</summary>
    public void Decode(Flow? flow, LostEvent? lost, NodeStatusEvent? nodeStatus, string? otherKind, string nodeName, Timestamp? time,
        List<KeyValuePair<string, string>> unknown)
    {
        ArgumentNullException.ThrowIfNull(unknown);
        lock (stats)
            stats.Received++;
        var node = string.IsNullOrEmpty(nodeName) ? flow?.NodeName is { Length: > 0 } n ? n : defaultNode : nodeName;
        if (flow is not null)
            DecodeFlow(flow, node, time, unknown);
        else if (lost is not null)
        {
            var when = (time ?? Timestamp.FromDateTime(DateTime.UtcNow)).ToDateTime();
            var cpu = lost.Cpu is { } c ? $" cpu {c}" : "";
            var detail = $"{EnumName(lost.Source)}{cpu}: {lost.NumEventsLost} events lost";
            // a perf ring buffer's loss on one CPU is what cilium monitor prints as "CPU %02d: Lost %d events" (loss v3's cpu)
            uint? onCpu = lost.Source == LostEventSource.PerfEventRingBuffer && lost.Cpu is >= 0 and int k ? (uint)k : null;
            sink.Loss(node, when, "flow", lost.NumEventsLost, "hubble", detail, onCpu);
            sink.CountLoss("hubble", lost.NumEventsLost);
            lock (stats)
            {
                Skip("lost-events report");
                stats.Lost[EnumName(lost.Source)] = stats.Lost.GetValueOrDefault(EnumName(lost.Source)) + lost.NumEventsLost;
            }
        }
        else if (nodeStatus is not null)
        {
            lock (stats)
            {
                Skip("node-status");
                if (nodeStatus.StateChange is NodeState.NodeUnavailable or NodeState.NodeGone or NodeState.NodeError)
                    stats.Disconnects.Add($"{Iso(time)} {EnumName(nodeStatus.StateChange)} {string.Join(",", nodeStatus.NodeNames)} {nodeStatus.Message}".TrimEnd());
            }
        }
        else
        {
            lock (stats)
                Skip(otherKind ?? "empty message");
        }
    }

    private void Skip(string why) => stats.Skipped[why] = stats.Skipped.GetValueOrDefault(why) + 1;

    private void DecodeFlow(Flow f, string node, Timestamp? responseTime, List<KeyValuePair<string, string>> unknown)
    {
        int? type = f.EventType?.Type;
        string? table = null;
        string? skip = null;
        if (f.L7 is not null || type == MessageTypeAccessLog)
            skip = "l7";
        else
        {
            table = type switch
            {
                MessageTypeDrop => "drop",
                MessageTypeTrace => "trace",
                MessageTypePolicyVerdict => "policy",
                MessageTypeTraceSock => f.SockXlatePoint is SocketTranslationPoint.SockXlatePointPostDirectionFwd or SocketTranslationPoint.SockXlatePointPostDirectionRev ? "nat" : "trace",
                null or 0 => f.Verdict switch
                {
                    Verdict.Dropped => "drop",
                    Verdict.Translated => "nat",
                    _ => "trace",
                },
                _ => null,
            };
            if (table is null)
                skip = type switch
                {
                    MessageTypeDebug => "debug",
                    MessageTypeCapture => "debug-capture",
                    MessageTypeRecCapture => "recorder-capture",
                    MessageTypeAgent => "agent",
                    _ => "event type " + type!.Value.ToString(CultureInfo.InvariantCulture),
                };
        }
        if (skip is not null)
        {
            lock (stats)
                Skip(skip);
            return;
        }
        long utc = Ns(f.Time ?? responseTime);
        var extra = UnknownFields.ToJson(unknown);
        var tuple = Tuple.Of(f);
        if (type == MessageTypeTraceSock && f.SocketCookie != 0)
            RememberPreXlate(f, tuple);
        sink.Row(table!, node, w =>
        {
            Common(w, f, utc, tuple, extra);
            switch (table)
            {
                case "drop":
                    uint reason = f.DropReasonDesc != Api.DropReason.Unknown ? (uint)f.DropReasonDesc
                        : type == MessageTypeDrop && f.EventType!.SubType > 0 ? (uint)f.EventType.SubType : f.DropReason;
                    w.U16("reason", reason);
                    w.Str("reason_name", DropReasons.NameOf((int)reason));
                    w.Str("ct_state", CtState(f));
                    w.Opt("denied_by", Policies(f.IngressDeniedBy, f.EgressDeniedBy));
                    break;
                case "policy":
                    w.U32("remote_identity", f.TrafficDirection == TrafficDirection.Egress ? f.Destination?.Identity ?? 0 : f.Source?.Identity ?? 0);
                    w.Str("action", f.Verdict switch
                    {
                        Verdict.Forwarded or Verdict.Redirected => "allow",
                        Verdict.Audit => "audit",
                        Verdict.Dropped or Verdict.Error => "deny",
                        _ => EnumName(f.Verdict).ToLowerInvariant(),
                    });
                    w.Str("match", MatchName(f.PolicyMatchType));
                    w.Opt("allowed_by", Policies(f.IngressAllowedBy, f.EgressAllowedBy));
                    w.Opt("denied_by", Policies(f.IngressDeniedBy, f.EgressDeniedBy));
                    break;
                case "trace":
                    w.Str("ct_state", CtState(f));
                    w.Opt("orig_ip", null);
                    break;
                case "nat":
                    Nat(w, f, tuple);
                    break;
            }
        });
        int rows = 1;
        if (table != "nat" && !string.IsNullOrEmpty(f.IP?.SourceXlated))
        {
            sink.Row("nat", node, w =>
            {
                Common(w, f, utc, tuple, extra);
                w.Str("nat_kind", "snat");
                w.Str("orig_src_ip", tuple.Src);
                w.U16("orig_src_port", tuple.SrcPort);
                w.Str("orig_dst_ip", tuple.Dst);
                w.U16("orig_dst_port", tuple.DstPort);
                w.Str("xlated_src_ip", f.IP.SourceXlated);
                w.U16("xlated_src_port", 0); // Hubble gives the translated address only
                w.Str("xlated_dst_ip", tuple.Dst);
                w.U16("xlated_dst_port", tuple.DstPort);
            });
            rows++;
        }
        lock (stats)
        {
            foreach (var u in unknown) // counted where kept: in a stored row's extra column
                stats.UnknownFields[u.Key] = stats.UnknownFields.GetValueOrDefault(u.Key) + 1;
            stats.Stored++;
            stats.RowsWritten[table!] = stats.RowsWritten.GetValueOrDefault(table!) + 1;
            if (rows > 1)
                stats.RowsWritten["nat"] = stats.RowsWritten.GetValueOrDefault("nat") + 1;
        }
    }

    private void RememberPreXlate(Flow f, Tuple t)
    {
        if (f.SockXlatePoint is SocketTranslationPoint.SockXlatePointPreDirectionFwd or SocketTranslationPoint.SockXlatePointPreDirectionRev)
        {
            if (!preXlate.ContainsKey(f.SocketCookie))
            {
                preXlateOrder.Enqueue(f.SocketCookie);
                if (preXlateOrder.Count > 65536)
                    preXlate.Remove(preXlateOrder.Dequeue());
            }
            preXlate[f.SocketCookie] = f.SockXlatePoint == SocketTranslationPoint.SockXlatePointPreDirectionFwd ? (t.Dst, t.DstPort) : (t.Src, t.SrcPort);
        }
    }

    /// <summary>A socket-LB translation (trace-sock, post-xlate): the service address comes from the pre-xlate event of the same socket.</summary>
    private void Nat(RowWriter w, Flow f, Tuple t)
    {
        bool rev = f.SockXlatePoint == SocketTranslationPoint.SockXlatePointPostDirectionRev;
        preXlate.TryGetValue(f.SocketCookie, out var pre);
        w.Str("nat_kind", rev ? "rev-dnat" : "dnat");
        w.Str("orig_src_ip", rev ? pre.Ip ?? "" : t.Src);
        w.U16("orig_src_port", rev ? pre.Port : t.SrcPort);
        w.Str("orig_dst_ip", rev ? t.Dst : pre.Ip ?? "");
        w.U16("orig_dst_port", rev ? t.DstPort : pre.Port);
        w.Str("xlated_src_ip", t.Src);
        w.U16("xlated_src_port", t.SrcPort);
        w.Str("xlated_dst_ip", t.Dst);
        w.U16("xlated_dst_port", t.DstPort);
        w.Opt("service", Service(rev ? f.SourceService : f.DestinationService));
    }

    private static void Common(RowWriter w, Flow f, long utc, Tuple t, string? extra)
    {
        w.Time("time", utc);
        w.U8("ip_version", f.IP?.IpVersion switch { IPVersion.Ipv4 => 4, IPVersion.Ipv6 => 6, _ => t.Src.Contains(':', StringComparison.Ordinal) ? (byte)6 : t.Src.Length > 0 ? (byte)4 : (byte)0 });
        w.Str("src_ip", t.Src);
        w.U16("src_port", t.SrcPort);
        w.Str("dst_ip", t.Dst);
        w.U16("dst_port", t.DstPort);
        w.Str("protocol", t.Protocol);
        w.Str("tcp_flags", t.Flags);
        w.U32("src_identity", f.Source?.Identity ?? 0);
        w.U32("dst_identity", f.Destination?.Identity ?? 0);
        uint ep = f.TrafficDirection == TrafficDirection.Ingress ? f.Destination?.ID ?? 0 : f.Source?.ID ?? 0;
        if (ep == 0)
            ep = (f.Source?.ID ?? 0) != 0 ? f.Source!.ID : f.Destination?.ID ?? 0;
        w.U16("endpoint_id", ep);
        w.U32("ifindex", f.Interface?.Index ?? 0);
        w.Str("obs_point", ObsPoint(f));
        w.Str("direction", f.TrafficDirection switch { TrafficDirection.Ingress => "ingress", TrafficDirection.Egress => "egress", TrafficDirection.Unknown => "", var dir => ((int)dir).ToString(CultureInfo.InvariantCulture) });
        w.Str("source", "hubble");
        w.Opt("verdict", f.Verdict == Verdict.Unknown ? null : EnumName(f.Verdict));
        w.Opt("src_namespace", f.Source?.Namespace);
        w.Opt("src_pod", f.Source?.PodName);
        w.Opt("src_labels", f.Source is { Labels.Count: > 0 } s ? string.Join(',', s.Labels) : null);
        w.Opt("dst_namespace", f.Destination?.Namespace);
        w.Opt("dst_pod", f.Destination?.PodName);
        w.Opt("dst_labels", f.Destination is { Labels.Count: > 0 } d ? string.Join(',', d.Labels) : null);
        w.Opt("src_service", Service(f.SourceService));
        w.Opt("dst_service", Service(f.DestinationService));
        w.Opt("src_names", f.SourceNames.Count > 0 ? string.Join(',', f.SourceNames) : null);
        w.Opt("dst_names", f.DestinationNames.Count > 0 ? string.Join(',', f.DestinationNames) : null);
        w.Bool("is_reply", f.IsReply);
        w.Opt("interface", f.Interface?.Name);
        w.I32("event_type", f.EventType?.Type);
        w.I32("event_sub_type", f.EventType?.SubType);
        w.Opt("summary", f.Summary);
        w.Opt("uuid", f.Uuid);
        w.Str("extra", extra);
    }

    private static string? Service(Service? s) =>
        s is null || (s.Name.Length == 0 && s.Namespace.Length == 0) ? null : s.Namespace.Length > 0 ? s.Namespace + "/" + s.Name : s.Name;

    private static string? Policies(IEnumerable<Policy> ingress, IEnumerable<Policy> egress)
    {
        var all = ingress.Concat(egress).Select(p => p.Namespace.Length > 0 ? p.Namespace + "/" + p.Name : p.Name).Where(n => n.Length > 0).ToList();
        return all.Count == 0 ? null : string.Join(',', all);
    }

    private static string CtState(Flow f) => f.TraceReason switch
    {
        TraceReason.New => "new",
        TraceReason.Established => "established",
        TraceReason.Reply => "reply",
        TraceReason.Related => "related",
        TraceReason.Unknown => "",
        var r => EnumName(r).ToLowerInvariant(),
    };

    /// <summary>The observation point as cilium monitor names it (pkg/monitor/api TraceObservationPoints); socket translations by their point.</summary>
    internal static string ObsPoint(Flow f)
    {
        if (f.EventType?.Type == MessageTypeTraceSock)
            return f.SockXlatePoint switch
            {
                SocketTranslationPoint.SockXlatePointPreDirectionFwd => "pre-xlate-fwd",
                SocketTranslationPoint.SockXlatePointPostDirectionFwd => "post-xlate-fwd",
                SocketTranslationPoint.SockXlatePointPreDirectionRev => "pre-xlate-rev",
                SocketTranslationPoint.SockXlatePointPostDirectionRev => "post-xlate-rev",
                var p => EnumName(p),
            };
        return f.TraceObservationPoint switch
        {
            TraceObservationPoint.UnknownPoint => "",
            TraceObservationPoint.ToProxy => "to-proxy",
            TraceObservationPoint.ToHost => "to-host",
            TraceObservationPoint.ToStack => "to-stack",
            TraceObservationPoint.ToOverlay => "to-overlay",
            TraceObservationPoint.ToEndpoint => "to-endpoint",
            TraceObservationPoint.FromEndpoint => "from-endpoint",
            TraceObservationPoint.FromProxy => "from-proxy",
            TraceObservationPoint.FromHost => "from-host",
            TraceObservationPoint.FromStack => "from-stack",
            TraceObservationPoint.FromOverlay => "from-overlay",
            TraceObservationPoint.FromNetwork => "from-network",
            TraceObservationPoint.ToNetwork => "to-network",
            var p => ((int)p).ToString(CultureInfo.InvariantCulture),
        };
    }

    /// <summary>Cilium's PolicyMatchType names (pkg/monitor/api/types.go).</summary>
    public static string MatchName(uint m) => m switch
    {
        0 => "none",
        1 => "L3-Only",
        2 => "L3-L4",
        3 => "L4-Only",
        4 => "all",
        5 => "L3-Proto",
        6 => "Proto-Only",
        _ => "unknown",
    };

    /// <summary>The published name of an enum value; a value this build does not know stays its number.</summary>
    public static string EnumName<TEnum>(TEnum value) where TEnum : struct, System.Enum
    {
        var field = typeof(TEnum).GetField(value.ToString());
        var attr = field is null ? null : (Google.Protobuf.Reflection.OriginalNameAttribute?)Attribute.GetCustomAttribute(field, typeof(Google.Protobuf.Reflection.OriginalNameAttribute));
        return attr?.Name ?? Convert.ToInt64(value, CultureInfo.InvariantCulture).ToString(CultureInfo.InvariantCulture);
    }

    private static string Iso(Timestamp? t) => t is null ? "" : t.ToDateTime().ToString("O", CultureInfo.InvariantCulture);

    internal static long Ns(Timestamp? t) => t is null ? 0 : t.Seconds * 1_000_000_000L + t.Nanos;

    /// <summary>The flow's addresses, ports and protocol as the tables store them.</summary>
    internal readonly record struct Tuple(string Src, uint SrcPort, string Dst, uint DstPort, string Protocol, string Flags)
    {
        public static Tuple Of(Flow f)
        {
            string src = f.IP?.Source ?? "", dst = f.IP?.Destination ?? "";
            var l4 = f.L4;
            return l4?.ProtocolCase switch
            {
                Layer4.ProtocolOneofCase.TCP => new(src, l4.TCP.SourcePort, dst, l4.TCP.DestinationPort, "tcp", TcpFlags(l4.TCP.Flags)),
                Layer4.ProtocolOneofCase.UDP => new(src, l4.UDP.SourcePort, dst, l4.UDP.DestinationPort, "udp", ""),
                Layer4.ProtocolOneofCase.SCTP => new(src, l4.SCTP.SourcePort, dst, l4.SCTP.DestinationPort, "sctp", ""),
                Layer4.ProtocolOneofCase.ICMPv4 => new(src, 0, dst, 0, "icmp", ""),
                Layer4.ProtocolOneofCase.ICMPv6 => new(src, 0, dst, 0, "icmpv6", ""),
                _ => new(src, 0, dst, 0, "", ""),
            };
        }

        /// <summary>TCP flags as cilium monitor prints them (the order of Recorder's Names.TcpFlags).</summary>
        private static string TcpFlags(TCPFlags? f)
        {
            if (f is null)
                return "";
            var parts = new List<string>(3);
            if (f.SYN) parts.Add("SYN");
            if (f.ACK) parts.Add("ACK");
            if (f.FIN) parts.Add("FIN");
            if (f.RST) parts.Add("RST");
            if (f.PSH) parts.Add("PSH");
            if (f.URG) parts.Add("URG");
            if (f.ECE) parts.Add("ECE");
            if (f.CWR) parts.Add("CWR");
            if (f.NS) parts.Add("NS");
            return string.Join(", ", parts);
        }
    }
}
