using System.Net;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Bpf;
using Forensics.Datapath.Control;
using Forensics.Datapath.Monitoring;

namespace Forensics.Datapath.Lab;

/// <summary>One datapath event as the lab reports it (copied out of the ring buffer).</summary>
public sealed record ObservedEvent(
    string Kind,
    ulong Ktime,
    string Source,
    int SourcePort,
    string Destination,
    int DestinationPort,
    int Protocol,
    uint SourceIdentity,
    uint DestinationIdentity,
    uint Ifindex,
    string ObsPoint,
    string Direction,
    string Text)
{
    /// <summary>drop: Cilium's reason code.</summary>
    public int Reason { get; init; }
    /// <summary>nat: DNAT, rev-DNAT, SNAT, rev-SNAT.</summary>
    public string? NatKind { get; init; }
    public string? XlatedSource { get; init; }
    public int XlatedSourcePort { get; init; }
    public string? XlatedDestination { get; init; }
    public int XlatedDestinationPort { get; init; }
    /// <summary>policy: allowed, denied, audit.</summary>
    public string? Verdict { get; init; }
    /// <summary>policy: none, L3-Only, L3-L4, L4-Only, all.</summary>
    public string? Match { get; init; }
    public uint RemoteIdentity { get; init; }
    /// <summary>policy, drop: the id of the rules that decided (the datapath snapshot's Rules); 0 for none (default deny).</summary>
    public uint RuleId { get; init; }
    /// <summary>trace: conntrack state.</summary>
    public string? CtState { get; init; }
    public byte[] Raw { get; init; } = [];

    public bool Involves(IReadOnlySet<string> addresses)
    {
        ArgumentNullException.ThrowIfNull(addresses);
        return addresses.Contains(Source) || addresses.Contains(Destination)
            || (XlatedSource is not null && addresses.Contains(XlatedSource))
            || (XlatedDestination is not null && addresses.Contains(XlatedDestination));
    }

    /// <summary>Whether this NAT event is the translation "DNAT a[:p] -> b[:q]" or "SNAT a[:p] -> b[:q]" (as the loader normalizes it).</summary>
    public bool MatchesTranslation(string translation)
    {
        ArgumentNullException.ThrowIfNull(translation);
        if (Kind != "nat" || NatKind is null)
            return false;
        var parts = translation.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length != 4 || parts[2] != "->" || !string.Equals(parts[0], NatKind, StringComparison.OrdinalIgnoreCase))
            return false;
        static bool Same(string want, string ip, int port)
        {
            int colon = want.IndexOf(':', StringComparison.Ordinal);
            return colon < 0 ? want == ip : want[..colon] == ip && want[(colon + 1)..] == port.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        return NatKind == "DNAT"
            ? Same(parts[1], Destination, DestinationPort) && Same(parts[3], XlatedDestination!, XlatedDestinationPort)
            : Same(parts[1], Source, SourcePort) && Same(parts[3], XlatedSource!, XlatedSourcePort);
    }

    private static string Proto(int p) => p switch { 6 => "TCP", 17 => "UDP", 1 => "ICMP", _ => p.ToString(System.Globalization.CultureInfo.InvariantCulture) };

    private static string Flow(string s, int sp, string d, int dp, int proto) =>
        proto is 6 or 17 ? $"{s}:{sp} -> {d}:{dp} {Proto(proto)}" : $"{s} -> {d} {Proto(proto)}";

    /// <summary>Decodes a datapath record (drop, policy verdict, NAT, trace); null for other kinds.</summary>
    public static ObservedEvent? Decode(ReadOnlySpan<byte> record)
    {
        if (record.Length < 16)
            return null;
        var hdr = EventReader.Header(record);
        if (!EventReader.IsKnown(hdr))
            return null;
        var raw = record.ToArray();
        switch (hdr.Kind)
        {
            case EventKind.Drop:
            {
                var e = EventReader.Read<DropEvent>(record);
                var b = Base("drop", hdr, e.Tuple, e.Meta, raw);
                return b with
                {
                    Reason = e.Reason,
                    RuleId = e.RuleId,
                    Text = $"drop ({Format.DropReasons.NameOf(e.Reason)}) {Flow(b.Source, b.SourcePort, b.Destination, b.DestinationPort, b.Protocol)}, identity {e.Meta.SrcIdentity}->{e.Meta.DstIdentity}, ifindex {e.Meta.Ifindex}, file {SrcFiles.MonitorName(e.File)}:{e.Line}",
                };
            }
            case EventKind.Policy:
            {
                var e = EventReader.Read<PolicyEvent>(record);
                var b = Base("policy", hdr, e.Tuple, e.Meta, raw);
                var verdict = Format.Names.Verdict((byte)e.Action);
                var match = Format.Names.Match((byte)e.Match);
                return b with
                {
                    Verdict = verdict,
                    Match = match,
                    RemoteIdentity = e.RemoteIdentity,
                    RuleId = e.RuleId,
                    Text = $"policy-verdict:{match} {b.Direction.ToUpperInvariant()} {verdict.ToUpperInvariant()} {Flow(b.Source, b.SourcePort, b.Destination, b.DestinationPort, b.Protocol)}, remote identity {e.RemoteIdentity}",
                };
            }
            case EventKind.Nat:
            {
                var e = EventReader.Read<NatEvent>(record);
                var b = Base("nat", hdr, e.Orig, e.Meta, raw);
                var kind = Format.Names.NatLabel((byte)e.NatKind);
                var xs = EventReader.Source(e.Xlated).ToString();
                var xd = EventReader.Destination(e.Xlated).ToString();
                return b with
                {
                    NatKind = kind,
                    XlatedSource = xs,
                    XlatedSourcePort = e.Xlated.Sport,
                    XlatedDestination = xd,
                    XlatedDestinationPort = e.Xlated.Dport,
                    Text = $"{kind} {Flow(b.Source, b.SourcePort, b.Destination, b.DestinationPort, b.Protocol)} => {Flow(xs, e.Xlated.Sport, xd, e.Xlated.Dport, e.Xlated.Proto)}",
                };
            }
            case EventKind.Trace:
            {
                var e = EventReader.Read<TraceEvent>(record);
                var b = Base("trace", hdr, e.Tuple, e.Meta, raw);
                return b with
                {
                    CtState = Format.Names.CtState((byte)e.CtState),
                    Text = $"trace {b.ObsPoint} {Flow(b.Source, b.SourcePort, b.Destination, b.DestinationPort, b.Protocol)} ct {Format.Names.CtState((byte)e.CtState)}",
                };
            }
            default:
                return null;
        }
    }

    private static ObservedEvent Base(string kind, Hdr hdr, Abi.Tuple t, DpMeta m, byte[] raw) => new(
        kind, hdr.Ktime, EventReader.Source(t).ToString(), t.SourcePort, EventReader.Destination(t).ToString(), t.DestinationPort, t.Proto,
        m.SrcIdentity, m.DstIdentity, m.Ifindex,
        Format.Names.ObsPoint((byte)m.ObsPoint), Format.Names.Direction((byte)m.Direction), "")
    { Raw = raw };
}

/// <summary>
/// The one reader of the datapath's ring buffer, on its own thread: hands every record to the monitor server
/// (which copies it to each client's queue) and, when asked, keeps the decoded events (the last 100,000) for
/// the lab's own checks.
/// </summary>
public sealed class EventCollector : IDisposable
{
    private const int Max = 100_000;
    private readonly RingBufferReader reader;
    private readonly Thread thread;
    private readonly CancellationTokenSource stop = new();
    private readonly List<ObservedEvent> events = [];
    private readonly Lock gate = new();
    private readonly MonitorServer? server;
    private readonly bool keep;
    private long passes;

    public EventCollector(IEventSource source, MonitorServer? server = null, bool keep = true)
    {
        ArgumentNullException.ThrowIfNull(source);
        this.server = server;
        this.keep = keep;
        reader = new RingBufferReader(source.EventsMap, OnRecord);
        thread = new Thread(Loop) { IsBackground = true, Name = "lab events" };
        thread.Start();
    }

    private void OnRecord(ReadOnlySpan<byte> record)
    {
        server?.Publish(record);
        if (!keep)
            return;
        var e = ObservedEvent.Decode(record);
        if (e is null)
            return;
        lock (gate)
        {
            if (events.Count >= Max)
                events.RemoveRange(0, Max / 10);
            events.Add(e);
        }
    }

    private void Loop()
    {
        while (!stop.IsCancellationRequested)
        {
            try
            {
                reader.Poll(20);
                server?.Flush();
            }
            catch (BpfException)
            {
                Thread.Sleep(20);
            }
            Interlocked.Increment(ref passes);
        }
    }

    /// <summary>Records read from the ring buffer so far.</summary>
    public long Records => reader.Records;

    /// <summary>Waits until the reader has made two more passes over the ring buffer (at most a second).</summary>
    public void Drain()
    {
        long target = Interlocked.Read(ref passes) + 2;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (Interlocked.Read(ref passes) < target && sw.ElapsedMilliseconds < 1000 && thread.IsAlive)
            Thread.Sleep(5);
    }

    /// <summary>Events with a kernel timestamp at or after <paramref name="ktimeNs"/> (CLOCK_MONOTONIC).</summary>
    public IReadOnlyList<ObservedEvent> Since(ulong ktimeNs)
    {
        lock (gate)
            return events.Where(e => e.Ktime >= ktimeNs).ToList();
    }

    public IReadOnlyList<ObservedEvent> All()
    {
        lock (gate)
            return events.ToList();
    }

    public void Dispose()
    {
        stop.Cancel();
        thread.Join(2000);
        reader.Dispose();
        stop.Dispose();
    }
}
