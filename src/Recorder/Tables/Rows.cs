using Forensics.Datapath.Abi;
using Forensics.Format;
using Forensics.Recorder.Batches;

namespace Forensics.Recorder.Tables;

/// <summary>
/// Decodes one event kind into the rows of its table. Each subclass declares
/// its columns, in schema order, on a fresh <see cref="TableBatch"/> and keeps
/// the column references; <see cref="Append"/> fills one row per record.
/// A test checks the declared columns against schemas/TABLE.vN.json.
/// </summary>
public abstract class Rows
{
    protected Rows(string table, int capacity) => Batch = new TableBatch(table, capacity);

    protected Rows(TableBatch batch) => Batch = batch;

    public TableBatch Batch { get; }

    /// <summary>Appends the record (the span is valid only during the call).</summary>
    public abstract void Append(ReadOnlySpan<byte> record, EventContext ctx);

    /// <summary>The decoders of every event table, by event kind.</summary>
    public static Rows? For(EventKind kind, int capacity) => kind switch
    {
        EventKind.Drop => new DropRows(capacity),
        EventKind.Policy => new PolicyRows(capacity),
        EventKind.Nat => new NatRows(capacity),
        EventKind.Trace => new TraceRows(capacity),
        EventKind.Capture => new CaptureRows(capacity),
        EventKind.Exec => new ExecRows(capacity),
        EventKind.Exit => new ExitRows(capacity),
        EventKind.Connect => new ConnectRows(capacity),
        EventKind.Kdrop => new KdropRows(capacity),
        _ => null,
    };

    public static string TableOf(EventKind kind) => Format.Tables.Events[(int)kind - 1];

    private static readonly Dictionary<string, EventKind> Kinds =
        Enumerable.Range(1, (int)EventKind.Max - 1).ToDictionary(k => Format.Tables.Events[k - 1], k => (EventKind)k, StringComparer.Ordinal);

    /// <summary>The event kind whose table this is; None for other tables.</summary>
    public static EventKind KindOf(string table) => Kinds.GetValueOrDefault(table);
}

/// <summary>
/// A batch with the columns of a table's schema, for rows that are not our ABI records (a source that is
/// not the kernel fills it through <see cref="RowSink.Batch"/>).
/// </summary>
public sealed class SchemaRows : Rows
{
    public SchemaRows(string table, int capacity) : base(TableBatch.ForSchema(SchemaCatalog.Current(table), capacity))
    {
    }

    public override void Append(ReadOnlySpan<byte> record, EventContext ctx) =>
        throw new NotSupportedException($"{Batch.Table}: rows of this batch are set by column, not decoded from ABI records");
}

/// <summary>time, ktime_ns, cpu.</summary>
internal readonly struct HeaderCols
{
    private readonly Column<long> time;
    private readonly Column<ulong> ktime;
    private readonly Column<uint> cpu;

    public HeaderCols(TableBatch b)
    {
        time = b.Timestamp("time");
        ktime = b.U64("ktime_ns");
        cpu = b.U32("cpu");
    }

    public void Set(int i, in Hdr h, EventContext ctx)
    {
        time.Values[i] = ctx.Utc(h.Ktime);
        ktime.Values[i] = h.Ktime;
        cpu.Values[i] = h.Cpu;
    }

    /// <summary>A row of a source without a CPU (cpu 0).</summary>
    public void SetOther(int i, long utcNs, ulong monotonicNs)
    {
        time.Values[i] = utcNs;
        ktime.Values[i] = monotonicNs;
        cpu.Values[i] = 0;
    }
}

/// <summary>ip_version, src_ip, src_port, dst_ip, dst_port, protocol[, tcp_flags].</summary>
internal readonly struct TupleCols
{
    private readonly Column<byte> version;
    private readonly StringColumn src, dst, proto;
    private readonly Column<ushort> sport, dport;
    private readonly StringColumn? flags;

    public TupleCols(TableBatch b, bool withFlags)
    {
        version = b.U8("ip_version");
        src = b.Str("src_ip");
        sport = b.U16("src_port");
        dst = b.Str("dst_ip");
        dport = b.U16("dst_port");
        proto = b.Str("protocol");
        flags = withFlags ? b.Str("tcp_flags") : null;
    }

    public void Set(int i, in Datapath.Abi.Tuple t, EventContext ctx)
    {
        version.Values[i] = t.Family == 10 ? (byte)6 : (byte)4;
        src.Values[i] = ctx.Ip(t.Saddr, t.Family);
        sport.Values[i] = t.SourcePort; // 0 for ICMP: its type and code go to the summary
        dst.Values[i] = ctx.Ip(t.Daddr, t.Family);
        dport.Values[i] = t.DestinationPort;
        proto.Values[i] = Names.Protocol(t.Proto);
        if (flags is not null)
            flags.Values[i] = Names.TcpFlags(t.Proto, t.TcpFlags);
    }
}

/// <summary>src_identity ... direction (fx_dp_meta).</summary>
internal readonly struct MetaCols
{
    private readonly Column<uint> srcId, dstId, ifindex, flow, len;
    private readonly Column<ushort> ep;
    private readonly StringColumn obs, dir;

    public MetaCols(TableBatch b)
    {
        srcId = b.U32("src_identity");
        dstId = b.U32("dst_identity");
        ep = b.U16("endpoint_id");
        ifindex = b.U32("ifindex");
        flow = b.U32("flow_id");
        len = b.U32("pkt_len");
        obs = b.Str("obs_point");
        dir = b.Str("direction");
    }

    public void Set(int i, in DpMeta m)
    {
        srcId.Values[i] = m.SrcIdentity;
        dstId.Values[i] = m.DstIdentity;
        ep.Values[i] = m.EndpointId;
        ifindex.Values[i] = m.Ifindex;
        flow.Values[i] = m.FlowId;
        len.Values[i] = m.PktLen;
        obs.Values[i] = Names.ObsPoint((byte)m.ObsPoint);
        dir.Values[i] = Names.Direction((byte)m.Direction);
    }

    /// <summary>A row of a source without datapath metadata: 0 and empty.</summary>
    public void SetNone(int i)
    {
        srcId.Values[i] = 0;
        dstId.Values[i] = 0;
        ep.Values[i] = 0;
        ifindex.Values[i] = 0;
        flow.Values[i] = 0;
        len.Values[i] = 0;
        obs.Values[i] = "";
        dir.Values[i] = "";
    }
}

/// <summary>netns_ino, cgroup_id, namespace, pod, pod_uid, container_id, container.</summary>
internal readonly struct ProcAttrCols
{
    private readonly Column<uint> netns;
    private readonly Column<ulong> cgroup;
    private readonly StringColumn ns, pod, uid, cid, cname;

    public ProcAttrCols(TableBatch b)
    {
        netns = b.U32("netns_ino");
        cgroup = b.U64("cgroup_id");
        ns = b.Str("namespace", nullable: true);
        pod = b.Str("pod", nullable: true);
        uid = b.Str("pod_uid", nullable: true);
        cid = b.Str("container_id", nullable: true);
        cname = b.Str("container", nullable: true);
    }

    /// <param name="podNetnsIno">the namespace that decides the pod, when not the event's own (an exit: where its image was executed)</param>
    /// <returns>the owner, whose labels go in the pod_labels column of <see cref="ProcSourceCols"/></returns>
    public EventOwner Set(int i, uint netnsIno, ulong cgroupId, EventContext ctx, uint? podNetnsIno = null) =>
        Set(i, netnsIno, cgroupId, ctx.Owner(podNetnsIno ?? netnsIno, cgroupId));

    /// <summary>The same with the owner already looked up (<see cref="EventContext.Owner(uint, ulong)"/>).</summary>
    public EventOwner Set(int i, uint netnsIno, ulong cgroupId, EventOwner owner)
    {
        netns.Values[i] = netnsIno;
        cgroup.Values[i] = cgroupId;
        ns.Values[i] = owner.Namespace;
        pod.Values[i] = owner.Pod;
        uid.Values[i] = owner.PodUid;
        cid.Values[i] = owner.ContainerId;
        cname.Values[i] = owner.Container;
        return owner;
    }
}

/// <summary>
/// The provenance and workload columns every flow table ends with (schema v2): source, verdict,
/// namespace/pod/labels of both ends, services, DNS names, reply flag, interface, Cilium event type,
/// summary, uuid. This tool's datapath fills source, interface and (ICMP) summary; Hubble fills them all (Forensics.Cilium).
/// </summary>
internal readonly struct FlowSourceCols
{
    public static readonly string[] Names =
    [
        "source", "verdict", "src_namespace", "src_pod", "src_labels", "dst_namespace", "dst_pod", "dst_labels",
        "src_service", "dst_service", "src_names", "dst_names", "is_reply", "interface", "event_type", "event_sub_type",
        "summary", "uuid",
    ];

    private readonly StringColumn source;
    private readonly StringColumn iface;
    private readonly StringColumn summary;

    public FlowSourceCols(TableBatch b)
    {
        source = b.Str("source");
        StringColumn? ifc = null, sum = null;
        foreach (var n in Names.AsSpan(1))
        {
            if (n == "is_reply")
                b.Bool(n, nullable: true);
            else if (n is "event_type" or "event_sub_type")
                b.I32(n, nullable: true);
            else if (n == "interface")
                ifc = b.Str(n, nullable: true);
            else if (n == "summary")
                sum = b.Str(n, nullable: true);
            else
                b.Str(n, nullable: true);
        }
        iface = ifc!;
        summary = sum!;
    }

    /// <summary>
    /// A datapath row: the interface its ifindex names in the datapath's namespace (as Hubble's interface and
    /// cilium monitor's "ifindex lxc..." name it), when the recording knows it; for an ICMP message whose type
    /// and code the datapath read, the summary as Hubble writes it ("ICMPv4 EchoRequest"); the rest stay null.
    /// </summary>
    public void SetDatapath(int i, in DpMeta m, in Datapath.Abi.Tuple t, EventContext ctx)
    {
        source.Values[i] = "datapath";
        iface.Values[i] = m.Ifindex == 0 ? null : ctx.InterfaceName(m.Ifindex);
        summary.Values[i] = t.CarriesIcmp && t.Proto is 1 or 58 ? IcmpSummaries.Get(t.Proto == 58, t.Sport, t.Dport) : null;
    }

    /// <summary>A row of another source that fills none of the rest.</summary>
    public void Set(int i, string name) => source.Values[i] = name;
}

/// <summary>The provenance columns every process table continues with (schema v2).</summary>
internal readonly struct ProcSourceCols
{
    private readonly StringColumn source, labels;

    public ProcSourceCols(TableBatch b)
    {
        source = b.Str("source");
        labels = b.Str("pod_labels", nullable: true);
        b.Str("exec_key", nullable: true);
    }

    /// <summary>A probes row: the pod's labels as the container runtime gave them.</summary>
    public void SetProbes(int i, in EventOwner owner)
    {
        source.Values[i] = "probes";
        labels.Values[i] = owner.Labels;
    }
}

internal sealed class DropRows : Rows
{
    private readonly HeaderCols hdr;
    private readonly TupleCols tuple;
    private readonly MetaCols meta;
    private readonly Column<ushort> reason, line;
    private readonly StringColumn reasonName, file, ct, deniedBy, rules;
    private readonly Column<uint> ruleId;
    private readonly FlowSourceCols src;
    private readonly PolicyRuleNames names = new();

    public DropRows(int capacity) : base("drop", capacity)
    {
        hdr = new HeaderCols(Batch);
        tuple = new TupleCols(Batch, true);
        meta = new MetaCols(Batch);
        reason = Batch.U16("reason");
        reasonName = Batch.Str("reason_name");
        file = Batch.Str("file");
        line = Batch.U16("line");
        ct = Batch.Str("ct_state");
        src = new FlowSourceCols(Batch);
        deniedBy = Batch.Str("denied_by", nullable: true);
        ruleId = Batch.U32("rule_id", nullable: true);
        rules = Batch.Str("rules", nullable: true);
        Batch.Str("extra", nullable: true);
    }

    public override void Append(ReadOnlySpan<byte> record, EventContext ctx)
    {
        var ev = EventReader.Read<DropEvent>(record);
        int i = Batch.NextRow();
        hdr.Set(i, ev.Hdr, ctx);
        tuple.Set(i, ev.Tuple, ctx);
        meta.Set(i, ev.Meta);
        reason.Values[i] = ev.Reason;
        reasonName.Values[i] = ReasonNames.Get(ev.Reason);
        file.Values[i] = Names.SourceFile((byte)ev.File);
        line.Values[i] = ev.Line;
        ct.Values[i] = Names.CtState((byte)ev.CtState);
        src.SetDatapath(i, ev.Meta, ev.Tuple, ctx);
        if (ev.Reason is DropReasons.PolicyDenied or DropReasons.PolicyDeniedByDenylist)
        {
            ruleId.Set(i, ev.RuleId);
            (deniedBy.Values[i], rules.Values[i]) = names.Of(ev.RuleId, ctx);
        }
    }
}

/// <summary>Hubble-form ICMP summaries ("ICMPv4 EchoRequest") as shared string instances, made on first use.</summary>
internal static class IcmpSummaries
{
    private static readonly string?[] Cache = new string?[2 * 65536];

    public static string Get(bool v6, ushort type, ushort code)
    {
        int k = (v6 ? 65536 : 0) | ((type & 0xff) << 8) | (code & 0xff);
        return Cache[k] ??= IcmpNames.HubbleSummary(v6, (byte)type, (byte)code);
    }
}

/// <summary>Cilium reason names as shared string instances.</summary>
internal static class ReasonNames
{
    private static readonly string[] Cache = Enumerable.Range(0, 256).Select(DropReasons.NameOf).ToArray();

    public static string Get(int code) => code is >= 0 and < 256 ? Cache[code] : DropReasons.NameOf(code);
}

internal sealed class PolicyRows : Rows
{
    private readonly HeaderCols hdr;
    private readonly TupleCols tuple;
    private readonly MetaCols meta;
    private readonly Column<uint> remote;
    private readonly StringColumn action, match, allowedBy, deniedBy, rules;
    private readonly Column<uint> ruleId;
    private readonly FlowSourceCols src;
    private readonly PolicyRuleNames names = new();

    public PolicyRows(int capacity) : base("policy", capacity)
    {
        hdr = new HeaderCols(Batch);
        tuple = new TupleCols(Batch, true);
        meta = new MetaCols(Batch);
        remote = Batch.U32("remote_identity");
        action = Batch.Str("action");
        match = Batch.Str("match");
        src = new FlowSourceCols(Batch);
        allowedBy = Batch.Str("allowed_by", nullable: true);
        deniedBy = Batch.Str("denied_by", nullable: true);
        ruleId = Batch.U32("rule_id", nullable: true);
        rules = Batch.Str("rules", nullable: true);
        Batch.Str("extra", nullable: true);
    }

    public override void Append(ReadOnlySpan<byte> record, EventContext ctx)
    {
        var ev = EventReader.Read<PolicyEvent>(record);
        int i = Batch.NextRow();
        hdr.Set(i, ev.Hdr, ctx);
        tuple.Set(i, ev.Tuple, ctx);
        meta.Set(i, ev.Meta);
        remote.Values[i] = ev.RemoteIdentity;
        action.Values[i] = Names.Action((byte)ev.Action);
        match.Values[i] = Names.Match((byte)ev.Match);
        src.SetDatapath(i, ev.Meta, ev.Tuple, ctx);
        ruleId.Set(i, ev.RuleId);
        var (policies, text) = names.Of(ev.RuleId, ctx);
        // an allow names what allowed it; a deny (or an audit: a deny not enforced) what denied it
        if (action.Values[i] == "allow")
            allowedBy.Values[i] = policies;
        else
            deniedBy.Values[i] = policies;
        rules.Values[i] = text;
    }
}

internal sealed class NatRows : Rows
{
    private readonly HeaderCols hdr;
    private readonly StringColumn kind, proto, osrc, odst, xsrc, xdst;
    private readonly Column<byte> version;
    private readonly Column<ushort> osport, odport, xsport, xdport;
    private readonly Column<uint> service;
    private readonly MetaCols meta;
    private readonly FlowSourceCols src;
    private readonly StringColumn serviceName;

    /// <summary>The columns schema v3 appends for conntrack rows (null in other rows), in order.</summary>
    internal NatConntrackCols Conntrack { get; }

    public NatRows(int capacity) : base("nat", capacity)
    {
        hdr = new HeaderCols(Batch);
        kind = Batch.Str("nat_kind");
        version = Batch.U8("ip_version");
        proto = Batch.Str("protocol");
        osrc = Batch.Str("orig_src_ip");
        osport = Batch.U16("orig_src_port");
        odst = Batch.Str("orig_dst_ip");
        odport = Batch.U16("orig_dst_port");
        xsrc = Batch.Str("xlated_src_ip");
        xsport = Batch.U16("xlated_src_port");
        xdst = Batch.Str("xlated_dst_ip");
        xdport = Batch.U16("xlated_dst_port");
        service = Batch.U32("service_id");
        meta = new MetaCols(Batch);
        src = new FlowSourceCols(Batch);
        serviceName = Batch.Str("service", nullable: true);
        Batch.Str("extra", nullable: true);
        Conntrack = new NatConntrackCols(Batch);
    }

    public override void Append(ReadOnlySpan<byte> record, EventContext ctx)
    {
        var ev = EventReader.Read<NatEvent>(record);
        int i = Batch.NextRow();
        hdr.Set(i, ev.Hdr, ctx);
        kind.Values[i] = Names.Nat((byte)ev.NatKind);
        version.Values[i] = ev.Orig.Family == 10 ? (byte)6 : (byte)4;
        proto.Values[i] = Names.Protocol(ev.Orig.Proto);
        osrc.Values[i] = ctx.Ip(ev.Orig.Saddr, ev.Orig.Family);
        osport.Values[i] = ev.Orig.Sport;
        odst.Values[i] = ctx.Ip(ev.Orig.Daddr, ev.Orig.Family);
        odport.Values[i] = ev.Orig.Dport;
        xsrc.Values[i] = ctx.Ip(ev.Xlated.Saddr, ev.Xlated.Family);
        xsport.Values[i] = ev.Xlated.Sport;
        xdst.Values[i] = ctx.Ip(ev.Xlated.Daddr, ev.Xlated.Family);
        xdport.Values[i] = ev.Xlated.Dport;
        service.Values[i] = ev.ServiceId;
        meta.Set(i, ev.Meta);
        src.SetDatapath(i, ev.Meta, ev.Xlated, ctx);
        Conntrack.SetNull(i);
    }

    /// <summary>
    /// Appends a conntrack row (source conntrack): the entry's original tuple, its reply tuple reversed as the
    /// translation, and the conntrack columns; the datapath's numbers are 0 and its texts empty (schema v3).
    /// </summary>
    internal void AppendConntrack(in Datapath.Conntrack.ConntrackEntry e, string ctEvent, long utcNs, ulong monotonicNs, uint netnsIno, string? svc)
    {
        int i = Batch.NextRow();
        hdr.SetOther(i, utcNs, monotonicNs);
        kind.Values[i] = Recorder.Conntrack.CtText.Nat(e);
        version.Values[i] = e.Family == 10 ? (byte)6 : (byte)4;
        proto.Values[i] = Names.Protocol(e.Orig.Proto);
        var (o, x) = (e.Orig, e.Translated);
        osrc.Values[i] = Conntrack.Ip(o.Src, e.Family);
        osport.Values[i] = o.Ports.Src;
        odst.Values[i] = Conntrack.Ip(o.Dst, e.Family);
        odport.Values[i] = o.Ports.Dst;
        xsrc.Values[i] = Conntrack.Ip(x.Src, e.Family);
        xsport.Values[i] = x.SrcPort;
        xdst.Values[i] = Conntrack.Ip(x.Dst, e.Family);
        xdport.Values[i] = x.DstPort;
        service.Values[i] = 0;
        meta.SetNone(i);
        src.Set(i, "conntrack");
        serviceName.Values[i] = svc;
        Conntrack.Set(i, e, ctEvent, netnsIno);
    }
}

/// <summary>The conntrack columns nat schema v3 appends (ct_event ... netns_ino).</summary>
internal sealed class NatConntrackCols
{
    private readonly StringColumn ev, status, tcp, rsrc, rdst;
    private readonly Column<uint> id, mark, netns;
    private readonly Column<ushort> zone, rsport, rdport;
    private readonly Column<ulong> po, bo, pr, br;
    private readonly Column<long> first, last;
    private readonly Dictionary<uint, string> v4 = [];
    private readonly Dictionary<(ulong, ulong), string> v6 = [];
    private readonly Dictionary<Datapath.Conntrack.CtStatus, string> statusText = [];

    public NatConntrackCols(TableBatch b)
    {
        ev = b.Str("ct_event", nullable: true);
        id = b.U32("ct_id", nullable: true);
        zone = b.U16("ct_zone", nullable: true);
        mark = b.U32("ct_mark", nullable: true);
        status = b.Str("ct_status", nullable: true);
        tcp = b.Str("tcp_state", nullable: true);
        rsrc = b.Str("reply_src_ip", nullable: true);
        rsport = b.U16("reply_src_port", nullable: true);
        rdst = b.Str("reply_dst_ip", nullable: true);
        rdport = b.U16("reply_dst_port", nullable: true);
        po = b.U64("packets_orig", nullable: true);
        bo = b.U64("bytes_orig", nullable: true);
        pr = b.U64("packets_reply", nullable: true);
        br = b.U64("bytes_reply", nullable: true);
        first = b.Timestamp("first_seen", nullable: true);
        last = b.Timestamp("last_seen", nullable: true);
        netns = b.U32("netns_ino", nullable: true);
    }

    public void SetNull(int i)
    {
        ev.Values[i] = null; status.Values[i] = null; tcp.Values[i] = null; rsrc.Values[i] = null; rdst.Values[i] = null;
        id.SetNull(i); zone.SetNull(i); mark.SetNull(i); rsport.SetNull(i); rdport.SetNull(i);
        po.SetNull(i); bo.SetNull(i); pr.SetNull(i); br.SetNull(i); first.SetNull(i); last.SetNull(i); netns.SetNull(i);
    }

    public void Set(int i, in Datapath.Conntrack.ConntrackEntry e, string ctEvent, uint netnsIno)
    {
        ev.Values[i] = ctEvent;
        id.Set(i, e.Id);
        if (e.Has(Datapath.Conntrack.CtFields.Zone)) zone.Set(i, e.Zone); else zone.SetNull(i);
        if (e.Has(Datapath.Conntrack.CtFields.Mark)) mark.Set(i, e.Mark); else mark.SetNull(i);
        status.Values[i] = Status(e.Status);
        tcp.Values[i] = e.Has(Datapath.Conntrack.CtFields.TcpState) ? Datapath.Conntrack.CtNetlink.TcpStateName(e.TcpState) : null;
        rsrc.Values[i] = Ip(e.Reply.Src, e.Family);
        rsport.Set(i, e.Reply.Ports.Src);
        rdst.Values[i] = Ip(e.Reply.Dst, e.Family);
        rdport.Set(i, e.Reply.Ports.Dst);
        if (e.Has(Datapath.Conntrack.CtFields.Counters))
        {
            po.Set(i, e.PacketsOrig); bo.Set(i, e.BytesOrig); pr.Set(i, e.PacketsReply); br.Set(i, e.BytesReply);
        }
        else
        {
            po.SetNull(i); bo.SetNull(i); pr.SetNull(i); br.SetNull(i);
        }
        if (e.StartNs != 0) first.Set(i, (long)e.StartNs); else first.SetNull(i);
        if (e.StopNs != 0) last.Set(i, (long)e.StopNs); else last.SetNull(i);
        netns.Set(i, netnsIno);
    }

    private string Status(Datapath.Conntrack.CtStatus s)
    {
        if (!statusText.TryGetValue(s, out var t))
            statusText[s] = t = Datapath.Conntrack.CtNetlink.StatusText(s);
        return t;
    }

    /// <summary>The address as text, cached (few addresses, many events).</summary>
    public string Ip(in Bytes16 a, byte family)
    {
        ReadOnlySpan<byte> b = a;
        if (family == 10)
        {
            var key = (BitConverter.ToUInt64(b), BitConverter.ToUInt64(b[8..]));
            if (!v6.TryGetValue(key, out var s6))
            {
                if (v6.Count > 1 << 16)
                    v6.Clear();
                v6[key] = s6 = new System.Net.IPAddress(b[..16]).ToString();
            }
            return s6;
        }
        uint k = BitConverter.ToUInt32(b);
        if (!v4.TryGetValue(k, out var s))
        {
            if (v4.Count > 1 << 16)
                v4.Clear();
            v4[k] = s = new System.Net.IPAddress(b[..4]).ToString();
        }
        return s;
    }
}

internal sealed class TraceRows : Rows
{
    private readonly HeaderCols hdr;
    private readonly TupleCols tuple;
    private readonly MetaCols meta;
    private readonly StringColumn ct, origIp;
    private readonly FlowSourceCols src;

    public TraceRows(int capacity) : base("trace", capacity)
    {
        hdr = new HeaderCols(Batch);
        tuple = new TupleCols(Batch, true);
        meta = new MetaCols(Batch);
        ct = Batch.Str("ct_state");
        origIp = Batch.Str("orig_ip", nullable: true);
        src = new FlowSourceCols(Batch);
        Batch.Str("extra", nullable: true);
    }

    public override void Append(ReadOnlySpan<byte> record, EventContext ctx)
    {
        var ev = EventReader.Read<TraceEvent>(record);
        int i = Batch.NextRow();
        hdr.Set(i, ev.Hdr, ctx);
        tuple.Set(i, ev.Tuple, ctx);
        meta.Set(i, ev.Meta);
        ct.Values[i] = Names.CtState((byte)ev.CtState);
        ReadOnlySpan<byte> orig = ev.OrigAddr;
        origIp.Values[i] = orig.IndexOfAnyExcept((byte)0) < 0 ? null : ctx.Ip(ev.OrigAddr, ev.Tuple.Family);
        src.SetDatapath(i, ev.Meta, ev.Tuple, ctx);
    }
}

internal sealed class CaptureRows : Rows
{
    private readonly HeaderCols hdr;
    private readonly TupleCols tuple;
    private readonly MetaCols meta;
    private readonly Column<ushort> capLen, dropReason;
    private readonly StringColumn ct;
    private readonly BinaryColumn data;

    public CaptureRows(int capacity) : base("capture", capacity)
    {
        hdr = new HeaderCols(Batch);
        tuple = new TupleCols(Batch, true);
        meta = new MetaCols(Batch);
        capLen = Batch.U16("cap_len");
        dropReason = Batch.U16("drop_reason");
        ct = Batch.Str("ct_state");
        data = Batch.Bin("data");
    }

    public override void Append(ReadOnlySpan<byte> record, EventContext ctx)
    {
        var ev = EventReader.Read<CaptureEvent>(record);
        int i = Batch.NextRow();
        hdr.Set(i, ev.Hdr, ctx);
        tuple.Set(i, ev.Tuple, ctx);
        meta.Set(i, ev.Meta);
        int n = Math.Min((int)ev.CapLen, Limits.CaptureMax);
        capLen.Values[i] = (ushort)n;
        dropReason.Values[i] = ev.DropReason;
        ct.Values[i] = Names.CtState((byte)ev.CtState);
        data.Set(i, ((ReadOnlySpan<byte>)ev.Data)[..n]);
    }
}

internal sealed class ExecRows : Rows
{
    private readonly HeaderCols hdr;
    private readonly Column<uint> pid, tid, ppid, uid, gid;
    private readonly Column<ulong> execId, parentExecId;
    private readonly Column<long> processStart;
    private readonly StringColumn binary, arguments, cwd, comm;
    private readonly BoolColumn truncated, procfs;
    private readonly ProcAttrCols attr;
    private readonly ProcSourceCols src;

    public ExecRows(int capacity) : base("exec", capacity)
    {
        hdr = new HeaderCols(Batch);
        pid = Batch.U32("pid");
        tid = Batch.U32("tid");
        ppid = Batch.U32("ppid");
        uid = Batch.U32("uid");
        gid = Batch.U32("gid");
        execId = Batch.U64("exec_id");
        parentExecId = Batch.U64("parent_exec_id", nullable: true);
        processStart = Batch.Timestamp("process_start");
        binary = Batch.Str("binary");
        arguments = Batch.Str("arguments");
        truncated = Batch.Bool("args_truncated");
        cwd = Batch.Str("cwd");
        comm = Batch.Str("comm");
        procfs = Batch.Bool("procfs");
        attr = new ProcAttrCols(Batch);
        src = new ProcSourceCols(Batch);
        Batch.Str("parent_exec_key", nullable: true);
        Batch.Str("flags", nullable: true);
        Batch.Str("extra", nullable: true);
    }

    public override void Append(ReadOnlySpan<byte> record, EventContext ctx)
    {
        var ev = EventReader.Read<ExecEvent>(record);
        int i = Batch.NextRow();
        hdr.Set(i, ev.Hdr, ctx);
        pid.Values[i] = ev.Pid;
        tid.Values[i] = ev.Tid;
        ppid.Values[i] = ev.Ppid;
        uid.Values[i] = ev.Uid;
        gid.Values[i] = ev.Gid;
        execId.Values[i] = ev.ExecId;
        if (ev.ParentExecId != 0)
            parentExecId.Set(i, ev.ParentExecId);
        else
            parentExecId.SetNull(i);
        processStart.Values[i] = (long)ev.StartTime + ctx.BoottimeToUtcOffsetNs;
        var bin = ctx.Texts.Get(EventReader.Head(ev.Filename, ev.FilenameLen), 1, Text);
        binary.Values[i] = bin;
        ctx.RegisterBinary(ev.ExecId, bin, ev.NetnsIno);
        arguments.Values[i] = ctx.Texts.Get(EventReader.Head(ev.Args, ev.ArgsLen), 2, a => JoinArguments(EventReader.Argv(a)));
        truncated.Values[i] = (ev.Flags & ExecFlags.ArgsTruncated) != 0;
        cwd.Values[i] = ctx.Texts.Get(EventReader.Head(ev.Cwd, ev.CwdLen), 3, Text);
        comm.Values[i] = ctx.Texts.Get(ev.Comm, 4, Text);
        procfs.Values[i] = (ev.Flags & ExecFlags.Procfs) != 0;
        var owner = attr.Set(i, ev.NetnsIno, ev.CgroupId, ctx);
        src.SetProbes(i, owner);
    }

    private static string Text(ReadOnlySpan<byte> bytes) => EventReader.CString(bytes);

    /// <summary>argv[1..] joined by spaces, as Tetragon's "arguments" (an argument with spaces is quoted).</summary>
    public static string JoinArguments(string[] argv) =>
        string.Join(' ', argv.Skip(1).Select(a => a.Length == 0 || a.Contains(' ', StringComparison.Ordinal) ? "\"" + a.Replace("\"", "\\\"", StringComparison.Ordinal) + "\"" : a));
}

internal sealed class ExitRows : Rows
{
    private readonly HeaderCols hdr;
    private readonly Column<uint> pid, ppid, status;
    private readonly Column<ulong> execId;
    private readonly StringColumn binary, signal, comm;
    private readonly Column<int> exitCode;
    private readonly ProcAttrCols attr;
    private readonly ProcSourceCols src;

    public ExitRows(int capacity) : base("exit", capacity)
    {
        hdr = new HeaderCols(Batch);
        pid = Batch.U32("pid");
        ppid = Batch.U32("ppid");
        execId = Batch.U64("exec_id");
        binary = Batch.Str("binary", nullable: true);
        exitCode = Batch.I32("exit_code", nullable: true);
        signal = Batch.Str("signal", nullable: true);
        status = Batch.U32("status");
        comm = Batch.Str("comm");
        attr = new ProcAttrCols(Batch);
        src = new ProcSourceCols(Batch);
        Batch.U64("parent_exec_id", nullable: true);
        Batch.Str("parent_exec_key", nullable: true);
        Batch.Str("arguments", nullable: true);
        Batch.Str("extra", nullable: true);
    }

    public override void Append(ReadOnlySpan<byte> record, EventContext ctx)
    {
        var ev = EventReader.Read<ExitEvent>(record);
        int i = Batch.NextRow();
        hdr.Set(i, ev.Hdr, ctx);
        pid.Values[i] = ev.Pid;
        ppid.Values[i] = ev.Ppid;
        execId.Values[i] = ev.ExecId;
        binary.Values[i] = ctx.Binary(ev.ExecId);
        int sig = (int)(ev.ExitCode & 0x7f);
        if (sig == 0)
        {
            exitCode.Set(i, (int)((ev.ExitCode >> 8) & 0xff));
            signal.Values[i] = null;
        }
        else
        {
            exitCode.SetNull(i);
            signal.Values[i] = Names.Signal(sig);
        }
        status.Values[i] = ev.ExitCode;
        comm.Values[i] = EventReader.CString(ev.Comm);
        var owner = attr.Set(i, ev.NetnsIno, ev.CgroupId, ctx, ctx.ExecNetns(ev.ExecId));
        src.SetProbes(i, owner);
    }
}

internal sealed class ConnectRows : Rows
{
    private readonly HeaderCols hdr;
    private readonly Column<uint> pid, tid, uid;
    private readonly Column<ulong> execId;
    private readonly StringColumn binary, comm, kind;
    private readonly TupleCols tuple;
    private readonly ProcAttrCols attr;
    private readonly ProcSourceCols src;

    public ConnectRows(int capacity) : base("connect", capacity)
    {
        hdr = new HeaderCols(Batch);
        pid = Batch.U32("pid");
        tid = Batch.U32("tid");
        uid = Batch.U32("uid");
        execId = Batch.U64("exec_id", nullable: true);
        binary = Batch.Str("binary", nullable: true);
        comm = Batch.Str("comm");
        kind = Batch.Str("connect_kind");
        tuple = new TupleCols(Batch, false);
        attr = new ProcAttrCols(Batch);
        src = new ProcSourceCols(Batch);
        Batch.Str("function", nullable: true);
        Batch.Str("policy_name", nullable: true);
        Batch.U64("sock_cookie", nullable: true);
        Batch.Str("extra", nullable: true);
    }

    public override void Append(ReadOnlySpan<byte> record, EventContext ctx)
    {
        var ev = EventReader.Read<ConnectEvent>(record);
        var owner = ctx.Owner(ev.NetnsIno, ev.CgroupId);
        if (ctx.ConnectScopes is { } scopes && !scopes.Keeps(ev, owner, ctx))
            return; // a TracingPolicy selected it for other workloads only: counted
        int i = Batch.NextRow();
        hdr.Set(i, ev.Hdr, ctx);
        pid.Values[i] = ev.Pid;
        tid.Values[i] = ev.Tid;
        uid.Values[i] = ev.Uid;
        if (ev.ExecId != 0)
            execId.Set(i, ev.ExecId);
        else
            execId.SetNull(i);
        binary.Values[i] = ctx.Binary(ev.ExecId);
        comm.Values[i] = EventReader.CString(ev.Comm);
        kind.Values[i] = Names.Connect((byte)ev.ConnectKind);
        tuple.Set(i, ev.Tuple, ctx);
        attr.Set(i, ev.NetnsIno, ev.CgroupId, owner);
        ctx.RememberConnect(ev.Tuple, ev.NetnsIno, ev.CgroupId);
        src.SetProbes(i, owner);
    }
}

internal sealed class KdropRows : Rows
{
    private readonly HeaderCols hdr;
    private readonly Column<uint> reason, netns, ifindex, len;
    private readonly StringColumn reasonName, function, ns, pod, uid, cid, cname;
    private readonly Column<ulong> location;
    private readonly Column<ushort> l3;
    private readonly TupleCols tuple;

    public KdropRows(int capacity) : base("kdrop", capacity)
    {
        hdr = new HeaderCols(Batch);
        reason = Batch.U32("reason");
        reasonName = Batch.Str("reason_name");
        location = Batch.U64("location");
        function = Batch.Str("function");
        l3 = Batch.U16("l3_proto");
        tuple = new TupleCols(Batch, false);
        netns = Batch.U32("netns_ino");
        ifindex = Batch.U32("ifindex");
        len = Batch.U32("pkt_len");
        ns = Batch.Str("namespace", nullable: true);
        pod = Batch.Str("pod", nullable: true);
        uid = Batch.Str("pod_uid", nullable: true);
        cid = Batch.Str("container_id", nullable: true);
        cname = Batch.Str("container", nullable: true);
    }

    public override void Append(ReadOnlySpan<byte> record, EventContext ctx)
    {
        var ev = EventReader.Read<KdropEvent>(record);
        int i = Batch.NextRow();
        hdr.Set(i, ev.Hdr, ctx);
        reason.Values[i] = ev.Reason;
        reasonName.Values[i] = ctx.KernelDropReason(ev.Reason);
        location.Values[i] = ev.Location;
        function.Values[i] = ctx.KernelSymbol(ev.Location);
        l3.Values[i] = ev.L3Proto;
        tuple.Set(i, ev.Tuple, ctx);
        netns.Values[i] = ev.NetnsIno;
        ifindex.Values[i] = ev.Ifindex;
        len.Values[i] = ev.PktLen;
        var owner = ctx.DropOwner(ev.NetnsIno, ev.Tuple);
        ns.Values[i] = owner.Namespace;
        pod.Values[i] = owner.Pod;
        uid.Values[i] = owner.PodUid;
        cid.Values[i] = owner.ContainerId;
        cname.Values[i] = owner.Container;
    }
}

/// <summary>The loss table: one row per second and kind, and for the kernel's ring buffers one per CPU that lost events.</summary>
public sealed class LossRows : Rows
{
    private readonly Column<long> time;
    private readonly StringColumn kind;
    private readonly Column<ulong> emitted, failed, dropped;
    private readonly StringColumn source, detail;
    private readonly Column<uint> cpu;

    public LossRows(int capacity) : base("loss", capacity)
    {
        time = Batch.Timestamp("time");
        kind = Batch.Str("kind");
        emitted = Batch.U64("emitted");
        failed = Batch.U64("failed");
        dropped = Batch.U64("userspace_dropped");
        source = Batch.Str("source", nullable: true);
        detail = Batch.Str("detail", nullable: true);
        cpu = Batch.U32("cpu", nullable: true);
    }

    public override void Append(ReadOnlySpan<byte> record, EventContext ctx) =>
        throw new NotSupportedException("loss rows are added with Add");

    /// <param name="cpuId">the CPU whose ring buffer counters the row holds; null for a row not of one CPU</param>
    public void Add(long utcNs, string kindName, ulong emittedCount, ulong failedCount, ulong droppedCount, string? sourceName = null, string? detailText = null, uint? cpuId = null)
    {
        int i = Batch.NextRow();
        time.Values[i] = utcNs;
        kind.Values[i] = kindName;
        emitted.Values[i] = emittedCount;
        failed.Values[i] = failedCount;
        dropped.Values[i] = droppedCount;
        source.Values[i] = sourceName;
        detail.Values[i] = detailText;
        if (cpuId is { } c)
            cpu.Set(i, c);
        else
            cpu.SetNull(i);
    }
}
