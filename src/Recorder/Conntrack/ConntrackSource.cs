using Forensics.Datapath.Abi;
using Forensics.Datapath.Cluster;
using Forensics.Datapath.Conntrack;
using Forensics.Datapath.Probes;
using Forensics.Recorder.Batches;
using Forensics.Recorder.Sources;
using Forensics.Recorder.Tables;

namespace Forensics.Recorder.Conntrack;

/// <summary>What a <see cref="ConntrackSource"/> records.</summary>
public sealed record ConntrackSourceOptions
{
    /// <summary>The namespaces, their listeners' buffers, update events (see <see cref="ConntrackCaptureOptions"/>).</summary>
    public ConntrackCaptureOptions Capture { get; init; } = new();

    /// <summary>
    /// Service ports the recording knows (lab, services file, kube-proxy's rules): a DNAT to one of their
    /// virtual IP:port is named "ns/svc:port" in its nat rows.
    /// </summary>
    public IReadOnlyList<ServiceFrontend> Services { get; init; } = [];

    /// <summary>How long one poll of the event sockets waits.</summary>
    public int PollMs { get; init; } = 10;

    /// <summary>
    /// The flows table (per-connection volumes from the kernel's accounting): the table is read this often and each
    /// connection whose counters moved gets a row, and one at its end (its destroy event, or the end of the
    /// recording); null: no flows rows. Needs net.netfilter.nf_conntrack_acct (see <see cref="ConntrackCaptureOptions.Accounting"/>).
    /// </summary>
    public TimeSpan? FlowInterval { get; init; }
}

/// <summary>
/// The kernel's conntrack as a source of a recording (docs/sources.md): in each namespace asked for, the
/// table dumped at start and end (the kernel_conntrack snapshot table, written when the recording stops)
/// and the new / update / destroy events in between. Every translated entry (its original tuple differs
/// from its reversed reply tuple: kube-proxy's DNAT, Docker's published ports, a CNI's masquerade) becomes
/// rows of <c>nat</c> with source <c>conntrack</c>. What the kernel could not deliver (ENOBUFS: the socket's
/// drop counter, exact per message) is counted as failed <c>nat</c> events; a namespace or feature that
/// cannot be recorded is a "not recorded" line of the manifest.
/// </summary>
public sealed class ConntrackSource : IRecordSource, ISnapshotSource
{
    private readonly ConntrackSourceOptions options;
    private readonly Dictionary<(byte Proto, string Ip, ushort Port), string> serviceNames = [];
    private readonly List<(ConntrackNetns Netns, ConntrackEntry Entry)> startRows = [], endRows = [];
    private DateTimeOffset startTaken, endTaken;
    private volatile ConntrackCapture? capture;
    private volatile IReadOnlyList<ConntrackNetns> namespaces = [];
    private long dumped;
    private readonly Lock countersLock = new();
    private readonly Dictionary<(byte Netns, uint Id), ulong> flowPackets = [];
    private readonly HashSet<(byte Netns, uint Id)> atStart = [];
    private readonly Dictionary<(byte Netns, uint Id), long> firstSeen = [];
    private IReadOnlyDictionary<string, SourceCounts> lastCounts = new Dictionary<string, SourceCounts>();

    public ConntrackSource(ConntrackSourceOptions options)
    {
        this.options = options ?? throw new ArgumentNullException(nameof(options));
        foreach (var s in options.Services)
        {
            byte proto = s.Protocol.ToLowerInvariant() switch { "tcp" => 6, "udp" => 17, "sctp" => 132, _ => 0 };
            serviceNames.TryAdd((proto, s.Ip.ToString(), (ushort)s.Port), s.ServicePortName);
        }
    }

    public string Name => "conntrack";
    public string Kind => "netlink";
    public string Detail => "ctnetlink (NETLINK_NETFILTER) in " + string.Join(", ", options.Capture.Targets.Select(t => t.Path ?? "the recorder's network namespace"));

    public void Run(RecordWriter writer, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(writer);
        var c = ConntrackCapture.Open(options.Capture);
        capture = c;
        namespaces = c.Namespaces;
        try
        {
            // the table at the start is a preamble (written before the source is live): not among the events its
            // counters count, as the writer does not count it taken (else each start row would read as lost at the stop)
            c.Dump(ConntrackRecord.PhaseStart, writer.Write, Clock);
            writer.Flush();
            foreach (var line in c.NotRecorded)
                writer.NotRecorded(line);
            int said = c.NotRecorded.Count;
            writer.Started();
            long nextFlows = options.FlowInterval is { } fi ? Environment.TickCount64 + (long)fi.TotalMilliseconds : long.MaxValue;
            while (!token.IsCancellationRequested)
            {
                c.Poll(options.PollMs, writer.Write, Clock);
                writer.FlushIfOlderThan(20);
                if (Environment.TickCount64 >= nextFlows)
                {
                    // the flows table's reads: every entry's counters now (the kernel sends no event when they move)
                    nextFlows = Environment.TickCount64 + (long)options.FlowInterval!.Value.TotalMilliseconds;
                    Interlocked.Add(ref dumped, c.Dump(ConntrackRecord.PhasePeriodic, writer.Write, Clock));
                    writer.Flush();
                }
            }
            // what the kernel queued before the stop, then the table as it is now
            c.Poll(0, writer.Write, Clock);
            Interlocked.Add(ref dumped, c.Dump(ConntrackRecord.PhaseEnd, writer.Write, Clock));
            writer.Flush();
            foreach (var line in c.NotRecorded.Skip(said))
                writer.NotRecorded(line);
        }
        finally
        {
            lock (countersLock)
                lastCounts = Count(c);
        }
    }

    private static (long Utc, ulong Monotonic) Clock() =>
        ((DateTime.UtcNow.Ticks - DateTime.UnixEpoch.Ticks) * 100, KernelClock.MonotonicNs());

    public bool Decode(ReadOnlySpan<byte> record, RowSink rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        if (!ConntrackRecord.TryRead(record, out byte kind, out byte ns, out byte phase, out long utc, out ulong mono, out var e))
            return false;
        var all = namespaces;
        var netns = ns < all.Count ? all[ns] : new ConntrackNetns(0, "?", null);
        if (options.FlowInterval is not null)
            Flow(kind, ns, phase, utc, netns, e, rows);
        if (kind == ConntrackRecord.KindDump && phase == ConntrackRecord.PhasePeriodic)
            return true;
        if (kind == ConntrackRecord.KindDump)
        {
            var taken = DateTimeOffset.FromUnixTimeMilliseconds(utc / 1_000_000).AddTicks(utc / 100 % 10_000);
            if (phase == ConntrackRecord.PhaseStart)
            {
                startTaken = startRows.Count == 0 ? taken : startTaken;
                startRows.Add((netns, e));
            }
            else
            {
                endTaken = endRows.Count == 0 ? taken : endTaken;
                endRows.Add((netns, e));
            }
        }
        if (!e.IsTranslated)
            return true;
        string? service = e.IsDnat && serviceNames.TryGetValue((e.Orig.Proto, CtText.Ip(e.Orig.Dst, e.Family), e.Orig.DstPort), out var n) ? n : null;
        var nat = (NatRows)rows.Rows(EventKind.Nat);
        nat.AppendConntrack(e, kind == ConntrackRecord.KindDump ? "dump" : CtText.Event(e.Type), utc, mono, netns.Inode, service);
        return true;
    }

    /// <summary>
    /// The flows rows of one record: the start dump is the baseline (no rows); a periodic dump's entry whose counters
    /// moved since its last row (or that is new) gets an interval row; a destroy event the entry's end row (its final
    /// counters); the end dump an end row ("recording-end") for each entry that was active during the recording.
    /// </summary>
    private void Flow(byte kind, byte ns, byte phase, long utc, ConntrackNetns netns, in ConntrackEntry e, RowSink rows)
    {
        var key = (ns, e.Id);
        ulong total = e.PacketsOrig + e.PacketsReply;
        if (kind == ConntrackRecord.KindDump && phase == ConntrackRecord.PhaseStart)
        {
            atStart.Add(key);
            flowPackets[key] = total;
            return;
        }
        bool known = flowPackets.TryGetValue(key, out var last);
        if (kind == ConntrackRecord.KindEvent)
        {
            if (e.Type == CtEventType.New)
                firstSeen.TryAdd(key, utc);
            if (e.Type != CtEventType.Destroy)
                return;
            if (!atStart.Contains(key) || activeKeys.Contains(key) || (known && last != total))
                FlowRows.Append(rows, FlowRow(e, utc, netns, key, "end", EndReason(e)));
            Forget(key);
            return;
        }
        firstSeen.TryAdd(key, utc);
        if (phase == ConntrackRecord.PhasePeriodic)
        {
            NextDump(ns, utc).Add(e.Id);
            if (known && last == total)
                return;
            flowPackets[key] = total;
            activeKeys.Add(key);
            FlowRows.Append(rows, FlowRow(e, utc, netns, key, "interval", null));
        }
        else if (phase == ConntrackRecord.PhaseEnd && (!atStart.Contains(key) || activeKeys.Contains(key) || (known && last != total)))
        {
            var reason = EndReason(e);
            FlowRows.Append(rows, FlowRow(e, utc, netns, key, "end", reason is "fin" or "rst" ? reason : "recording-end"));
        }
    }

    private readonly HashSet<(byte Netns, uint Id)> activeKeys = [];
    private readonly Dictionary<byte, (long Utc, HashSet<uint> Ids)> dumps = [];

    private void Forget((byte, uint) key)
    {
        flowPackets.Remove(key);
        atStart.Remove(key);
        firstSeen.Remove(key);
        activeKeys.Remove(key);
    }

    /// <summary>
    /// The ids a namespace's periodic read holds so far. When a new read begins, the entries the last one did not hold
    /// are gone (their destroy event was not received: counted as lost nat events) and their state is dropped, so
    /// that it stays as large as the kernel's table.
    /// </summary>
    private HashSet<uint> NextDump(byte ns, long utc)
    {
        if (dumps.TryGetValue(ns, out var d) && d.Utc == utc)
            return d.Ids;
        if (d.Ids is { } previous)
        {
            foreach (var k in flowPackets.Keys.Where(k => k.Netns == ns && !previous.Contains(k.Id)).ToList())
                Forget(k);
        }
        dumps[ns] = (utc, []);
        return dumps[ns].Ids;
    }

    /// <summary>Why the kernel's entry ended: fin or rst by its TCP state, else timeout (its lifetime ran out, or the table was flushed).</summary>
    private static string EndReason(in ConntrackEntry e)
    {
        if (e.Orig.Proto != 6 || !e.Has(CtFields.TcpState))
            return "timeout";
        return e.TcpState switch
        {
            4 or 5 or 6 or 7 => "fin", // FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT
            8 => "rst",                // CLOSE: a RST
            _ => "timeout",
        };
    }

    private FlowRow FlowRow(in ConntrackEntry e, long utc, ConntrackNetns netns, (byte, uint) key, string report, string? reason)
    {
        var x = e.Translated;
        bool acct = e.Has(CtFields.Counters);
        string? service = e.IsDnat && serviceNames.TryGetValue((e.Orig.Proto, CtText.Ip(e.Orig.Dst, e.Family), e.Orig.DstPort), out var n) ? n : null;
        return new FlowRow
        {
            TimeNs = utc,
            Report = report,
            EndReason = reason,
            Source = "conntrack",
            Datapath = netns.Name,
            FirstSeenNs = e.StartNs != 0 ? (long)e.StartNs : firstSeen.TryGetValue(key, out var f) ? f : null,
            LastSeenNs = e.StopNs != 0 ? (long)e.StopNs : null,
            IpVersion = e.Family == 10 ? (byte)6 : (byte)4,
            SrcIp = CtText.Ip(e.Orig.Src, e.Family),
            SrcPort = e.Orig.Ports.Src,
            DstIp = CtText.Ip(x.Dst, e.Family),
            DstPort = x.DstPort,
            Protocol = Format.Names.Protocol(e.Orig.Proto),
            OrigDstIp = e.IsDnat ? CtText.Ip(e.Orig.Dst, e.Family) : null,
            OrigDstPort = e.IsDnat ? e.Orig.Ports.Dst : null,
            XlatedSrcIp = e.IsSnat ? CtText.Ip(x.Src, e.Family) : null,
            XlatedSrcPort = e.IsSnat ? x.SrcPort : null,
            Service = service,
            PacketsOrig = acct ? e.PacketsOrig : null,
            BytesOrig = acct ? e.BytesOrig : null,
            PacketsReply = acct ? e.PacketsReply : null,
            BytesReply = acct ? e.BytesReply : null,
            TcpState = e.Has(CtFields.TcpState) ? CtNetlink.TcpStateName(e.TcpState) : null,
            CtId = e.Id,
            NetnsIno = netns.Inode,
        };
    }

    public string TableOf(ReadOnlySpan<byte> record) => "nat";

    /// <summary>
    /// nat: events the kernel handed over (every event and dump row, translated or not: a lost event's
    /// translation is unknown) and events it could not (ENOBUFS), over every namespace and event type.
    /// </summary>
    public IReadOnlyDictionary<string, SourceCounts> Counters()
    {
        var c = capture;
        if (c is null)
            return new Dictionary<string, SourceCounts>();
        try
        {
            var now = Count(c);
            lock (countersLock)
                lastCounts = now;
            return now;
        }
        catch (ObjectDisposedException)
        {
            lock (countersLock)
                return lastCounts;
        }
    }

    private Dictionary<string, SourceCounts> Count(ConntrackCapture c)
    {
        ulong received = 0, dropped = 0;
        foreach (var (_, _, counts) in c.Counts())
        {
            received += counts.Received;
            dropped += counts.Dropped;
        }
        return new Dictionary<string, SourceCounts>(StringComparer.Ordinal)
        {
            ["nat"] = new SourceCounts(received + (ulong)Interlocked.Read(ref dumped), dropped),
        };
    }

    /// <summary>The kernel_conntrack snapshot of the start and end dumps (called once the pipeline has stopped).</summary>
    public IEnumerable<TableBatch> Snapshots()
    {
        if (startRows.Count > 0)
            yield return KernelConntrackSnapshot.Build("start", startTaken, startRows);
        if (endRows.Count > 0)
            yield return KernelConntrackSnapshot.Build("end", endTaken, endRows);
    }

    public void Dispose() => capture?.Dispose();
}
