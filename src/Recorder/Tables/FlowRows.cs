using Forensics.Recorder.Batches;

namespace Forensics.Recorder.Tables;

/// <summary>One row of the flows table (schemas/flows.v1.json), as either source fills it.</summary>
internal sealed class FlowRow
{
    public long TimeNs;
    public string Report = "interval";
    public string? EndReason;
    public string Source = "datapath";
    public string? Datapath;
    public long? FirstSeenNs;
    public long? LastSeenNs;
    public byte IpVersion = 4;
    public string SrcIp = "";
    public ushort SrcPort;
    public string DstIp = "";
    public ushort DstPort;
    public string Protocol = "";
    public string? OrigDstIp;
    public ushort? OrigDstPort;
    public string? XlatedSrcIp;
    public ushort? XlatedSrcPort;
    public string? Direction;
    public ushort? EndpointId;
    public uint? SrcIdentity;
    public uint? DstIdentity;
    public uint? ServiceId;
    public string? Service;
    public ulong? PacketsOrig;
    public ulong? BytesOrig;
    public ulong? PacketsReply;
    public ulong? BytesReply;
    public string? TcpFlagsOrig;
    public string? TcpFlagsReply;
    public string? TcpState;
    public uint? CtId;
    public uint? NetnsIno;
}

/// <summary>Writes flows rows into the open flows batch (by column name: a few thousand rows a second at most).</summary>
internal static class FlowRows
{
    public const string Table = "flows";

    public static void Append(RowSink rows, FlowRow r)
    {
        var b = rows.Batch(Table);
        int i = b.NextRow();
        b.Set(i, "time", r.TimeNs);
        b.Set(i, "report", r.Report);
        b.Set(i, "end_reason", r.EndReason);
        b.Set(i, "source", r.Source);
        b.Set(i, "datapath", r.Datapath);
        b.Set(i, "first_seen", r.FirstSeenNs);
        b.Set(i, "last_seen", r.LastSeenNs);
        b.Set(i, "ip_version", r.IpVersion);
        b.Set(i, "src_ip", r.SrcIp);
        b.Set(i, "src_port", r.SrcPort);
        b.Set(i, "dst_ip", r.DstIp);
        b.Set(i, "dst_port", r.DstPort);
        b.Set(i, "protocol", r.Protocol);
        b.Set(i, "orig_dst_ip", r.OrigDstIp);
        b.Set(i, "orig_dst_port", r.OrigDstPort);
        b.Set(i, "xlated_src_ip", r.XlatedSrcIp);
        b.Set(i, "xlated_src_port", r.XlatedSrcPort);
        b.Set(i, "direction", r.Direction);
        b.Set(i, "endpoint_id", r.EndpointId);
        b.Set(i, "src_identity", r.SrcIdentity);
        b.Set(i, "dst_identity", r.DstIdentity);
        b.Set(i, "service_id", r.ServiceId);
        b.Set(i, "service", r.Service);
        b.Set(i, "packets_orig", r.PacketsOrig);
        b.Set(i, "bytes_orig", r.BytesOrig);
        b.Set(i, "packets_reply", r.PacketsReply);
        b.Set(i, "bytes_reply", r.BytesReply);
        b.Set(i, "tcp_flags_orig", r.TcpFlagsOrig);
        b.Set(i, "tcp_flags_reply", r.TcpFlagsReply);
        b.Set(i, "tcp_state", r.TcpState);
        b.Set(i, "ct_id", r.CtId);
        b.Set(i, "netns_ino", r.NetnsIno);
    }
}
