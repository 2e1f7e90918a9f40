using System.Buffers.Binary;
using System.Text;
using Forensics.Format;

namespace Forensics.Query.Export;

/// <summary>
/// A minimal pcapng writer (https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-02.html):
/// one Section Header Block, an Interface Description Block per interface
/// (Ethernet, nanosecond timestamps), and Enhanced Packet Blocks carrying the
/// original length and an opt_comment.
/// </summary>
public sealed class PcapNgWriter : IDisposable
{
    private const uint ShbType = 0x0A0D0D0A;
    private const uint IdbType = 0x00000001;
    private const uint EpbType = 0x00000006;
    private const ushort LinkTypeEthernet = 1;
    private const ushort OptEnd = 0, OptComment = 1, IfName = 2, IfTsResol = 9;

    private readonly Stream _out;
    private readonly Dictionary<string, uint> _interfaces = new(StringComparer.Ordinal);

    public PcapNgWriter(Stream output, string application)
    {
        _out = output ?? throw new ArgumentNullException(nameof(output));
        var opts = new MemoryStream();
        Option(opts, 4 /* shb_userappl */, Encoding.UTF8.GetBytes(application));
        Option(opts, OptEnd, []);
        var body = new MemoryStream();
        WriteU32(body, 0x1A2B3C4D);
        WriteU16(body, 1);
        WriteU16(body, 0);
        WriteU64(body, ulong.MaxValue); // section length unknown
        opts.WriteTo(body);
        Block(ShbType, body.ToArray());
    }

    /// <summary>The interface id for a name, writing its IDB the first time.</summary>
    public uint Interface(string name, uint snaplen)
    {
        if (_interfaces.TryGetValue(name, out var id))
            return id;
        id = (uint)_interfaces.Count;
        _interfaces[name] = id;
        var body = new MemoryStream();
        WriteU16(body, LinkTypeEthernet);
        WriteU16(body, 0);
        WriteU32(body, snaplen);
        Option(body, IfName, Encoding.UTF8.GetBytes(name));
        Option(body, IfTsResol, [9]);
        Option(body, OptEnd, []);
        Block(IdbType, body.ToArray());
        return id;
    }

    /// <summary>One packet: captured bytes, original length, time in ns since the epoch, a comment.</summary>
    public void Packet(uint interfaceId, long unixNs, ReadOnlySpan<byte> data, uint originalLength, string? comment)
    {
        var body = new MemoryStream();
        WriteU32(body, interfaceId);
        var ts = (ulong)unixNs;
        WriteU32(body, (uint)(ts >> 32));
        WriteU32(body, (uint)ts);
        WriteU32(body, (uint)data.Length);
        WriteU32(body, Math.Max(originalLength, (uint)data.Length));
        body.Write(data);
        Pad(body, data.Length);
        if (!string.IsNullOrEmpty(comment))
            Option(body, OptComment, Encoding.UTF8.GetBytes(comment));
        Option(body, OptEnd, []);
        Block(EpbType, body.ToArray());
    }

    private void Block(uint type, byte[] body)
    {
        var total = (uint)(12 + body.Length);
        Span<byte> head = stackalloc byte[8];
        BinaryPrimitives.WriteUInt32LittleEndian(head, type);
        BinaryPrimitives.WriteUInt32LittleEndian(head[4..], total);
        _out.Write(head);
        _out.Write(body);
        _out.Write(head[4..]);
    }

    private static void Option(MemoryStream s, ushort code, ReadOnlySpan<byte> value)
    {
        WriteU16(s, code);
        WriteU16(s, (ushort)value.Length);
        s.Write(value);
        Pad(s, value.Length);
    }

    private static void Pad(MemoryStream s, int length)
    {
        var pad = (4 - length % 4) % 4;
        for (var i = 0; i < pad; i++)
            s.WriteByte(0);
    }

    private static void WriteU16(Stream s, ushort v) { Span<byte> b = stackalloc byte[2]; BinaryPrimitives.WriteUInt16LittleEndian(b, v); s.Write(b); }
    private static void WriteU32(Stream s, uint v) { Span<byte> b = stackalloc byte[4]; BinaryPrimitives.WriteUInt32LittleEndian(b, v); s.Write(b); }
    private static void WriteU64(Stream s, ulong v) { Span<byte> b = stackalloc byte[8]; BinaryPrimitives.WriteUInt64LittleEndian(b, v); s.Write(b); }

    public void Dispose() => _out.Flush();
}

/// <summary>`forensics export --pcap`: the capture table as pcapng, each packet annotated.</summary>
public static class PcapExport
{
    /// <summary>Writes the captures (only dropped packets when dropsOnly) and returns how many packets were written.</summary>
    public static int Write(QuerySession session, string file, bool dropsOnly)
    {
        ArgumentNullException.ThrowIfNull(session);
        var where = dropsOnly ? " WHERE drop_reason <> 0" : "";
        // time_ns: the recorded nanoseconds (the view derives them from ktime_ns; see QuerySession)
        var rows = session.Rows($"SELECT * FROM capture{where} ORDER BY time_ns, node, ktime_ns").ToList();
        using var fs = Output.OutputTarget.CreateBinary(file, session.ProtectedPaths);
        using var w = new PcapNgWriter(fs, "forensics export");
        var multi = session.Recordings.Count > 1;
        foreach (var r in rows)
        {
            var ifindex = Convert.ToUInt32(r["ifindex"], System.Globalization.CultureInfo.InvariantCulture);
            var node = (string?)r["node"] ?? "";
            var id = w.Interface(multi ? $"{node} ifindex {ifindex}" : $"ifindex {ifindex}", 65535);
            var data = (byte[]?)r["data"] ?? [];
            var reason = Convert.ToInt32(r["drop_reason"], System.Globalization.CultureInfo.InvariantCulture);
            var kind = reason != 0 ? "drop" : "capture";
            var comment = $"forensics: {kind}, obs-point {r["obs_point"]}, {r["direction"]}" +
                          (reason != 0 ? $", drop reason {reason} ({DropReasons.NameOf(reason)})" : "") +
                          $", identity {r["src_identity"]}->{r["dst_identity"]}, endpoint {r["endpoint_id"]}, flow 0x{Convert.ToUInt32(r["flow_id"], System.Globalization.CultureInfo.InvariantCulture):x}, state {r["ct_state"]}" +
                          (multi ? $", node {node}" : "");
            w.Packet(id, Convert.ToInt64(r["time_ns"], System.Globalization.CultureInfo.InvariantCulture), data,
                Convert.ToUInt32(r["pkt_len"], System.Globalization.CultureInfo.InvariantCulture), comment);
        }
        return rows.Count;
    }
}
