using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Forensics.Datapath.Bpf;
using Forensics.Datapath.Control;
using Forensics.Format;
using Forensics.Recorder.Tables;

namespace Forensics.Recorder.Sources;

/// <summary>How the datapath's conntrack maps are turned into flows rows.</summary>
public sealed record FlowOptions
{
    /// <summary>An active connection gets a row this often (and one at its end).</summary>
    public TimeSpan Interval { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// How often the maps are read: ends are seen within this, and a connection must stay in the map this long to be
    /// seen at all (the datapath's map is an LRU: a full one evicts its oldest entries). bench/RESULTS.md: a walk of a
    /// full map (65536 entries) costs a few ms.
    /// </summary>
    public TimeSpan Walk { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>A closed connection (FIN both ways, or RST) is ended once it has been quiet this long (its last ACKs).</summary>
    public TimeSpan CloseGrace { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>A connection without TCP ends after this long without packets (Cilium's CT lifetime for non-TCP).</summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>A TCP connection that never closed ends after this long without packets (Cilium's established TCP lifetime).</summary>
    public TimeSpan TcpIdleTimeout { get; init; } = TimeSpan.FromHours(6);
}

/// <summary>
/// One datapath whose conntrack map is walked: its name and its maps (fx_ct; fx_ct_stats, fx_endpoints and fx_ct_closed
/// when it has them).
/// </summary>
public sealed record FlowMaps(string Datapath, BpfMap Conntrack, BpfMap? Stats, BpfMap? Endpoints, BpfMap? Closed = null)
{
    /// <summary>The maps of a datapath this process loaded.</summary>
    public static FlowMaps Of(string name, Datapath.Control.LoadedDatapath dp)
    {
        ArgumentNullException.ThrowIfNull(dp);
        return new FlowMaps(name, dp.StateMap("fx_ct"), dp.StateMap("fx_ct_stats"), dp.StateMap("fx_endpoints"), dp.StateMap("fx_ct_closed"));
    }
}

/// <summary>
/// Per-connection volumes from the datapath (docs/flows.md): its conntrack map (fx_ct, an LRU hash of 88-byte
/// entries with packets, IP bytes and TCP flags per direction) read in batches every <see cref="FlowOptions.Walk"/>;
/// each connection active during the recording gets a flows row every <see cref="FlowOptions.Interval"/> in which it
/// had packets and one at its end (FIN both ways or RST and quiet, idle past its timeout, gone from the map, or the
/// recording's end). Connections the datapath tracked (fx_ct_stats) that no walk saw (created and evicted between
/// two walks) are counted as failed flows rows: lost, in the manifest and the loss table.
/// </summary>
public sealed class DatapathFlowSource : IRecordSource
{
    internal const byte Tag = 0xF1;
    internal const int HeaderBytes = 16;
    private static readonly int KeyBytes = Marshal.SizeOf<CtKey>();
    private static readonly int EntryBytes = Marshal.SizeOf<CtEntry>();
    internal static readonly string[] Reasons = ["", "fin", "rst", "timeout", "evicted", "recording-end"];

    private readonly IReadOnlyList<FlowMaps> datapaths;
    private readonly FlowOptions options;
    private readonly long monotonicToUtcNs;
    private readonly bool ownsMaps;
    private long rows;
    private volatile List<Walker> running = [];

    /// <param name="datapaths">The maps to walk.</param>
    /// <param name="options">Interval, walk period, timeouts.</param>
    /// <param name="monotonicToUtcNs">UTC minus CLOCK_MONOTONIC (the entries' times).</param>
    /// <param name="ownsMaps">Dispose the maps with the source (pinned maps it opened).</param>
    public DatapathFlowSource(IReadOnlyList<FlowMaps> datapaths, FlowOptions options, long monotonicToUtcNs, bool ownsMaps = false)
    {
        this.datapaths = datapaths ?? throw new ArgumentNullException(nameof(datapaths));
        this.options = options ?? throw new ArgumentNullException(nameof(options));
        this.monotonicToUtcNs = monotonicToUtcNs;
        this.ownsMaps = ownsMaps;
    }

    /// <summary>Opens the maps a running datapath (<c>lab up</c>) pinned in <paramref name="pinDir"/>.</summary>
    public static FlowMaps OpenPinned(string datapath, string pinDir)
    {
        var ct = BpfMap.OpenPinned(Path.Combine(pinDir, "fx_ct"));
        BpfMap? Optional(string name) => File.Exists(Path.Combine(pinDir, name)) ? BpfMap.OpenPinned(Path.Combine(pinDir, name)) : null;
        return new FlowMaps(datapath, ct, Optional("fx_ct_stats"), Optional("fx_endpoints"), Optional("fx_ct_closed"));
    }

    public string Name => "flows";
    public string Kind => "bpf";
    public string Detail => $"conntrack map of {string.Join(", ", datapaths.Select(d => d.Datapath))}, read every {options.Walk.TotalSeconds:0.###} s; a row per active connection every {options.Interval.TotalSeconds:0.###} s and at its end";

    private sealed class Flow
    {
        public ulong Created;
        public CtEntry Last;
        public ulong RowPackets;
        public ulong LastRowNs;
        public bool Ended;
        public int Generation;
    }

    /// <summary>
    /// Conntrack keys compared and hashed by their 40 bytes: the default equality of a struct with inline arrays (the
    /// addresses) does not look at every byte, and a map of 65,536 connections from one client would collide.
    /// </summary>
    private sealed class KeyComparer : IEqualityComparer<CtKey>
    {
        public static readonly KeyComparer Instance = new();

        private static ReadOnlySpan<byte> Bytes(in CtKey k) => MemoryMarshal.AsBytes(new ReadOnlySpan<CtKey>(in k));

        public bool Equals(CtKey x, CtKey y) => Bytes(x).SequenceEqual(Bytes(y));

        public int GetHashCode(CtKey obj)
        {
            var h = new HashCode();
            h.AddBytes(Bytes(obj));
            return h.ToHashCode();
        }
    }

    private sealed class Walker(FlowMaps maps, int index)
    {
        public readonly FlowMaps Maps = maps;
        public readonly int Index = index;
        public readonly Dictionary<CtKey, Flow> Flows = new(KeyComparer.Instance);
        public readonly Dictionary<ushort, uint> Identities = [];
        public CtKey[] Keys = [];
        public CtEntry[] Values = [];
        public CtClosedKey[] ClosedKeys = [];
        public CtEntry[] ClosedValues = [];
        public ulong CreatedAtStart;
        public ulong SeenNew;
        public int Generation;
        public bool HasStats;
        public long Missed;
    }

    public void Run(RecordWriter writer, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(writer);
        var walkers = datapaths.Select((d, i) => new Walker(d, i)).ToList();
        running = walkers;
        ulong start = Datapath.Probes.KernelClock.MonotonicNs();
        foreach (var w in walkers)
        {
            int size = (int)w.Maps.Conntrack.MaxEntries;
            w.Keys = new CtKey[size];
            w.Values = new CtEntry[size];
            w.HasStats = w.Maps.Stats is not null;
            if (w.Maps.Closed is { } closed)
            {
                w.ClosedKeys = new CtClosedKey[closed.MaxEntries];
                w.ClosedValues = new CtEntry[closed.MaxEntries];
            }
            w.CreatedAtStart = Created(w);
            if (!w.HasStats)
                writer.NotRecorded($"flows of the datapath {w.Maps.Datapath}: connections opened and evicted from its conntrack map between two reads are not counted (the datapath has no fx_ct_stats map: an older build)");
        }
        var buffer = new byte[HeaderBytes + KeyBytes + EntryBytes];
        writer.Started();
        while (true)
        {
            bool final = token.WaitHandle.WaitOne(options.Walk);
            foreach (var w in walkers)
                Walk(w, start, final, writer, buffer);
            writer.Flush();
            if (final)
                return;
        }
    }

    private static ulong Created(Walker w)
    {
        if (w.Maps.Stats is not { } stats)
            return 0;
        return stats.LookupPerCpu<uint, CtStats>(0).Aggregate(0UL, (a, s) => a + s.Created);
    }

    private void Walk(Walker w, ulong start, bool final, RecordWriter writer, byte[] buffer)
    {
        ulong created = Created(w);
        ulong now = Datapath.Probes.KernelClock.MonotonicNs();
        if (w.Maps.Endpoints is { } eps)
        {
            w.Identities.Clear();
            foreach (var (_, ep) in eps.Entries<int, Endpoint>())
                w.Identities[ep.Id] = ep.Identity;
        }
        TakeClosed(w, start, writer, buffer, now);
        int n = w.Maps.Conntrack.ReadBatched(w.Keys, w.Values);
        int gen = ++w.Generation;
        for (int i = 0; i < n; i++)
        {
            ref readonly var k = ref w.Keys[i];
            ref readonly var v = ref w.Values[i];
            if (!w.Flows.TryGetValue(k, out var f))
            {
                if (v.LastNs < start)
                    continue; // quiet since before the recording: not part of it
                w.Flows[k] = f = New(w, v, start);
            }
            else if (f.Generation == gen)
            {
                continue; // read twice (the map changed during the read)
            }
            else if (f.Created != v.CreatedNs)
            {
                // the tuple was opened again (a reused port): the connection before it ended
                if (!f.Ended)
                    Emit(writer, buffer, w, k, f.Last, 1, ClosedReason(f.Last) ?? 4, now);
                w.Flows[k] = f = New(w, v, start);
            }
            else if (f.Ended && v.Packets + v.RevPackets != f.Last.Packets + f.Last.RevPackets)
            {
                f.Ended = false; // packets after its end (retransmissions, a timeout that was not one)
            }
            f.Generation = gen;
            f.Last = v;
            if (f.Ended)
                continue;
            byte? closed = ClosedReason(v);
            ulong quiet = now > v.LastNs ? now - v.LastNs : 0;
            ulong total = v.Packets + v.RevPackets;
            if (final)
            {
                Emit(writer, buffer, w, k, v, 1, closed ?? 5, now);
                f.Ended = true;
            }
            else if (closed is { } c && quiet >= (ulong)options.CloseGrace.Ticks * 100)
            {
                Emit(writer, buffer, w, k, v, 1, c, now);
                f.Ended = true;
            }
            else if (quiet >= (ulong)(k.Proto == 6 ? options.TcpIdleTimeout : options.IdleTimeout).Ticks * 100)
            {
                Emit(writer, buffer, w, k, v, 1, 3, now);
                f.Ended = true;
            }
            else if (total != f.RowPackets && now - f.LastRowNs >= (ulong)options.Interval.Ticks * 100)
            {
                Emit(writer, buffer, w, k, v, 0, 0, now);
                f.RowPackets = total;
                f.LastRowNs = now;
            }
        }
        // connections no longer in the map: evicted (LRU) or the datapath's map was emptied
        List<CtKey>? gone = null; // (a list: removing while enumerating is not allowed)
        foreach (var (k, f) in w.Flows)
        {
            if (f.Generation == gen)
                continue;
            if (!f.Ended)
                Emit(writer, buffer, w, k, f.Last, 1, ClosedReason(f.Last) ?? 4, now);
            (gone ??= []).Add(k);
        }
        foreach (var k in gone ?? [])
            w.Flows.Remove(k);
        if (w.HasStats)
        {
            // the connections the datapath opened since the start (read before the map) that no read saw
            ulong opened = created - w.CreatedAtStart;
            Volatile.Write(ref w.Missed, opened > w.SeenNew ? (long)(opened - w.SeenNew) : 0);
        }
    }

    /// <summary>
    /// Connections whose tuple was opened again since the last read (fx_ct_closed, taken out of the map): the end row
    /// of one a read saw (with its final counters), or the only row of one no read saw.
    /// </summary>
    private void TakeClosed(Walker w, ulong start, RecordWriter writer, byte[] buffer, ulong now)
    {
        if (w.Maps.Closed is not { } closed)
            return;
        int c = closed.TakeBatched(w.ClosedKeys, w.ClosedValues);
        for (int i = 0; i < c; i++)
        {
            ref readonly var ck = ref w.ClosedKeys[i];
            ref readonly var v = ref w.ClosedValues[i];
            if (w.Flows.TryGetValue(ck.Key, out var f) && f.Created == ck.CreatedNs)
            {
                bool moved = v.Packets + v.RevPackets != f.Last.Packets + f.Last.RevPackets;
                f.Last = v;
                if (f.Ended && !moved)
                    continue;
                Emit(writer, buffer, w, ck.Key, v, 1, ClosedReason(v) ?? 4, now);
                f.Ended = true;
            }
            else if (v.LastNs >= start)
            {
                if (v.CreatedNs >= start)
                    w.SeenNew++;
                Emit(writer, buffer, w, ck.Key, v, 1, ClosedReason(v) ?? 4, now);
            }
        }
    }

    private static Flow New(Walker w, in CtEntry v, ulong start)
    {
        if (v.CreatedNs >= start)
            w.SeenNew++;
        return new Flow { Created = v.CreatedNs, LastRowNs = v.CreatedNs };
    }

    /// <summary>fin (FIN both ways) or rst (RST either way) for a TCP connection that closed; null otherwise.</summary>
    private static byte? ClosedReason(in CtEntry v)
    {
        if (((v.TcpFlags | v.RevTcpFlags) & 0x04) != 0)
            return 2;
        if ((v.TcpFlags & v.RevTcpFlags & 0x01) != 0)
            return 1;
        return null;
    }

    private void Emit(RecordWriter writer, byte[] buffer, Walker w, in CtKey k, in CtEntry v, byte report, byte reason, ulong nowMono)
    {
        var span = buffer.AsSpan();
        span.Clear();
        span[0] = Tag;
        span[1] = report;
        span[2] = reason;
        span[3] = (byte)w.Index;
        BinaryPrimitives.WriteUInt32LittleEndian(span[4..], w.Identities.GetValueOrDefault(v.EndpointId));
        BinaryPrimitives.WriteInt64LittleEndian(span[8..], (long)nowMono + monotonicToUtcNs);
        MemoryMarshal.Write(span[HeaderBytes..], in k);
        MemoryMarshal.Write(span[(HeaderBytes + KeyBytes)..], in v);
        writer.Write(span);
        Interlocked.Increment(ref rows);
    }

    public bool Decode(ReadOnlySpan<byte> record, RowSink rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        if (record.Length != HeaderBytes + KeyBytes + EntryBytes || record[0] != Tag || record[2] >= Reasons.Length || record[3] >= datapaths.Count)
            return false;
        var k = MemoryMarshal.Read<CtKey>(record[HeaderBytes..]);
        var v = MemoryMarshal.Read<CtEntry>(record[(HeaderBytes + KeyBytes)..]);
        uint endpointIdentity = BinaryPrimitives.ReadUInt32LittleEndian(record[4..]);
        bool egress = k.Dir == Datapath.Abi.Dir.Egress;
        var r = new FlowRow
        {
            TimeNs = BinaryPrimitives.ReadInt64LittleEndian(record[8..]),
            Report = record[1] == 1 ? "end" : "interval",
            EndReason = record[1] == 1 ? Reasons[record[2]] : null,
            Source = "datapath",
            Datapath = datapaths[record[3]].Datapath,
            FirstSeenNs = (long)v.CreatedNs + monotonicToUtcNs,
            LastSeenNs = (long)v.LastNs + monotonicToUtcNs,
            IpVersion = k.Family == MapAddress.AfInet6 ? (byte)6 : (byte)4,
            SrcIp = MapAddress.To(k.Saddr, k.Family).ToString(),
            SrcPort = k.Sport,
            DstIp = MapAddress.To(k.Daddr, k.Family).ToString(),
            DstPort = k.Dport,
            Protocol = Names.Protocol(k.Proto),
            Direction = egress ? "egress" : "ingress",
            EndpointId = v.EndpointId,
            SrcIdentity = egress ? endpointIdentity : v.RemoteIdentity,
            DstIdentity = egress ? v.RemoteIdentity : endpointIdentity,
            PacketsOrig = v.Packets,
            BytesOrig = v.Bytes,
            PacketsReply = v.RevPackets,
            BytesReply = v.RevBytes,
            TcpFlagsOrig = k.Proto == 6 ? Names.TcpFlags(6, v.TcpFlags) : null,
            TcpFlagsReply = k.Proto == 6 ? Names.TcpFlags(6, v.RevTcpFlags) : null,
        };
        if (endpointIdentity == 0)
        {
            // the endpoint's identity was not known (a datapath without fx_endpoints, or the endpoint went away)
            r.SrcIdentity = egress ? null : v.RemoteIdentity;
            r.DstIdentity = egress ? v.RemoteIdentity : null;
        }
        if ((v.Flags & CtFlags.RevDnat) != 0)
        {
            r.OrigDstIp = MapAddress.To(v.NatAddr, k.Family).ToString();
            r.OrigDstPort = v.NatPort;
            r.ServiceId = v.ServiceId;
        }
        FlowRows.Append(rows, r);
        return true;
    }

    public string TableOf(ReadOnlySpan<byte> record) => FlowRows.Table;

    /// <summary>flows: rows handed over, and connections the datapath tracked that no read of its map saw (failed).</summary>
    public IReadOnlyDictionary<string, SourceCounts> Counters() => new Dictionary<string, SourceCounts>(StringComparer.Ordinal)
    {
        [FlowRows.Table] = new SourceCounts((ulong)Interlocked.Read(ref rows), (ulong)running.Sum(w => Volatile.Read(ref w.Missed))),
    };

    public void Dispose()
    {
        if (!ownsMaps)
            return;
        foreach (var d in datapaths)
        {
            d.Conntrack.Dispose();
            d.Stats?.Dispose();
            d.Endpoints?.Dispose();
            d.Closed?.Dispose();
        }
    }
}
