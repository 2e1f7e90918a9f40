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
            while (!token.IsCancellationRequested)
            {
                c.Poll(options.PollMs, writer.Write, Clock);
                writer.FlushIfOlderThan(20);
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
