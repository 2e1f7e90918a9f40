using System.Net;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Conntrack;
using Forensics.Recorder.Batches;

namespace Forensics.Recorder.Conntrack;

/// <summary>A network namespace whose conntrack table is recorded: its inode and the name the recording gives it.</summary>
public sealed record ConntrackNetns(uint Inode, string Name, string? Path);

/// <summary>Text forms of a conntrack entry's fields, shared by the snapshot and the nat rows.</summary>
internal static class CtText
{
    public static string Ip(in Bytes16 a, byte family) =>
        new IPAddress(family == 10 ? ((ReadOnlySpan<byte>)a)[..16] : ((ReadOnlySpan<byte>)a)[..4]).ToString();

    /// <summary>dnat, snat, dnat+snat, or empty.</summary>
    public static string Nat(in ConntrackEntry e) => (e.IsDnat, e.IsSnat) switch
    {
        (true, true) => "dnat+snat",
        (true, false) => "dnat",
        (false, true) => "snat",
        _ => "",
    };

    public static string Event(CtEventType t) => t switch
    {
        CtEventType.New => "new",
        CtEventType.Update => "update",
        CtEventType.Destroy => "destroy",
        _ => "dump",
    };
}

/// <summary>The kernel_conntrack snapshot table (schemas/kernel_conntrack.v1.json): every entry of a dump.</summary>
public static class KernelConntrackSnapshot
{
    public const string Table = "kernel_conntrack";

    public static TableBatch Build(string phase, DateTimeOffset taken, IReadOnlyList<(ConntrackNetns Netns, ConntrackEntry Entry)> entries)
    {
        ArgumentNullException.ThrowIfNull(entries);
        var b = new TableBatch(Table, Math.Max(1, entries.Count));
        var (ph, tk, ino, ns, id, ver, proto) = (b.Str("phase"), b.Timestamp("taken"), b.U32("netns_ino"), b.Str("netns"), b.U32("ct_id"), b.U8("ip_version"), b.Str("protocol"));
        var (os, osp, od, odp) = (b.Str("orig_src_ip"), b.U16("orig_src_port"), b.Str("orig_dst_ip"), b.U16("orig_dst_port"));
        var (rs, rsp, rd, rdp) = (b.Str("reply_src_ip"), b.U16("reply_src_port"), b.Str("reply_dst_ip"), b.U16("reply_dst_port"));
        var (nat, status, tcp, timeout, mark, zone) = (b.Str("nat"), b.Str("status"), b.Str("tcp_state", nullable: true), b.U32("timeout_s", nullable: true), b.U32("mark", nullable: true), b.U16("zone", nullable: true));
        var (po, bo, pr, br) = (b.U64("packets_orig", nullable: true), b.U64("bytes_orig", nullable: true), b.U64("packets_reply", nullable: true), b.U64("bytes_reply", nullable: true));
        var started = b.Timestamp("started", nullable: true);
        long takenNs = (taken.UtcTicks - DateTime.UnixEpoch.Ticks) * 100;
        foreach (var (n, e) in entries)
        {
            int i = b.NextRow();
            ph.Values[i] = phase;
            tk.Values[i] = takenNs;
            ino.Values[i] = n.Inode;
            ns.Values[i] = n.Name;
            id.Values[i] = e.Id;
            ver.Values[i] = e.Family == 10 ? (byte)6 : (byte)4;
            proto.Values[i] = Format.Names.Protocol(e.Orig.Proto);
            var (o, r) = (e.Orig, e.Reply);
            os.Values[i] = CtText.Ip(o.Src, e.Family);
            osp.Values[i] = o.Ports.Src;
            od.Values[i] = CtText.Ip(o.Dst, e.Family);
            odp.Values[i] = o.Ports.Dst;
            rs.Values[i] = CtText.Ip(r.Src, e.Family);
            rsp.Values[i] = r.Ports.Src;
            rd.Values[i] = CtText.Ip(r.Dst, e.Family);
            rdp.Values[i] = r.Ports.Dst;
            nat.Values[i] = CtText.Nat(e);
            status.Values[i] = CtNetlink.StatusText(e.Status);
            tcp.Values[i] = e.Has(CtFields.TcpState) ? CtNetlink.TcpStateName(e.TcpState) : null;
            SetOrNull(timeout, i, e.Has(CtFields.Timeout), e.Timeout);
            SetOrNull(mark, i, e.Has(CtFields.Mark), e.Mark);
            SetOrNull(zone, i, e.Has(CtFields.Zone), e.Zone);
            bool acct = e.Has(CtFields.Counters);
            SetOrNull(po, i, acct, e.PacketsOrig);
            SetOrNull(bo, i, acct, e.BytesOrig);
            SetOrNull(pr, i, acct, e.PacketsReply);
            SetOrNull(br, i, acct, e.BytesReply);
            SetOrNull(started, i, e.Has(CtFields.Timestamp) && e.StartNs != 0, (long)e.StartNs);
        }
        return b;
    }

    internal static void SetOrNull<T>(Column<T> c, int row, bool has, T value) where T : unmanaged
    {
        if (has)
            c.Set(row, value);
        else
            c.SetNull(row);
    }
}
