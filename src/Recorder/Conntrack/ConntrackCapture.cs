using System.Buffers.Binary;
using Forensics.Datapath.Conntrack;

namespace Forensics.Recorder.Conntrack;

/// <summary>A network namespace to listen in: its path (null: the recorder's own) and the name the recording gives it.</summary>
public sealed record ConntrackTarget(string? Path, string Name);

/// <summary>What the conntrack capture listens to.</summary>
public sealed record ConntrackCaptureOptions
{
    /// <summary>The namespaces whose conntrack tables are recorded (the recorder's own, a node's).</summary>
    public IReadOnlyList<ConntrackTarget> Targets { get; init; } = [new ConntrackTarget(null, "host")];

    /// <summary>Receive buffer per event socket (the kernel doubles it).</summary>
    public int ReceiveBufferBytes { get; init; } = 16 << 20;

    /// <summary>Also record update events (state changes between new and destroy).</summary>
    public bool Updates { get; init; } = true;

    /// <summary>Opens a listener (tests: one that asks a subsystem the kernel does not have, see <see cref="ConntrackOptions"/>).</summary>
    internal Func<ConntrackOptions, ConntrackListener> OpenListener { get; init; } = o => ConntrackListener.Open(o);
}

/// <summary>
/// A conntrack record as the capture hands it to the pipeline: a 24-byte header (what it is, which
/// namespace, when) and the ctnetlink message as the kernel sent it. Decoded on the pipeline's
/// decode thread (<see cref="ConntrackRecord.TryRead"/>).
/// </summary>
public static class ConntrackRecord
{
    public const int HeaderBytes = 24;

    /// <summary>The record's first byte: an event, or a row of a table dump.</summary>
    public const byte KindEvent = 0xC1, KindDump = 0xC2;

    /// <summary>Dump phases.</summary>
    public const byte PhaseNone = 0, PhaseStart = 1, PhaseEnd = 2;

    /// <summary>Writes the header into <paramref name="dst"/>: kind, namespace index, phase, UTC ns and monotonic ns (for a dump row: when the dump began).</summary>
    public static void WriteHeader(Span<byte> dst, byte kind, byte netns, byte phase, long utcNs, ulong monotonicNs)
    {
        dst[..HeaderBytes].Clear();
        dst[0] = kind;
        dst[1] = netns;
        dst[2] = phase;
        BinaryPrimitives.WriteInt64LittleEndian(dst[8..], utcNs);
        BinaryPrimitives.WriteUInt64LittleEndian(dst[16..], monotonicNs);
    }

    public readonly ref struct Header
    {
        public Header(ReadOnlySpan<byte> r)
        {
            Kind = r[0];
            Netns = r[1];
            Phase = r[2];
            UtcNs = BinaryPrimitives.ReadInt64LittleEndian(r[8..]);
            MonotonicNs = BinaryPrimitives.ReadUInt64LittleEndian(r[16..]);
            Message = r[HeaderBytes..];
        }

        public byte Kind { get; }
        public byte Netns { get; }
        public byte Phase { get; }
        public long UtcNs { get; }
        public ulong MonotonicNs { get; }
        public ReadOnlySpan<byte> Message { get; }
    }

    /// <summary>Reads a record: false when it is not one of ours or its message is not a conntrack entry.</summary>
    public static bool TryRead(ReadOnlySpan<byte> record, out byte kind, out byte netns, out byte phase, out long utcNs, out ulong monotonicNs, out ConntrackEntry entry)
    {
        kind = netns = phase = 0;
        utcNs = 0;
        monotonicNs = 0;
        entry = default;
        if (record.Length < HeaderBytes + CtNetlink.NlmsgHdrLen || (record[0] != KindEvent && record[0] != KindDump))
            return false;
        var h = new Header(record);
        (kind, netns, phase, utcNs, monotonicNs) = (h.Kind, h.Netns, h.Phase, h.UtcNs, h.MonotonicNs);
        if (!CtNetlink.TryParseEntry(h.Message, out entry))
            return false;
        if (kind == KindDump)
            entry.Type = CtEventType.Dump;
        return true;
    }
}

/// <summary>
/// The kernel's conntrack in one or more network namespaces, for a recording: a <see cref="ConntrackListener"/>
/// per namespace that could be opened (one that could not is a line of <see cref="NotRecorded"/>, and the
/// recording goes on), table dumps at start and end, and events in between, each handed on as a
/// <see cref="ConntrackRecord"/>. Counts per namespace and event type what the kernel could not deliver.
/// Poll from one thread.
/// </summary>
public sealed class ConntrackCapture : IDisposable
{
    private readonly List<(ConntrackTarget Target, ConntrackNetns Netns, ConntrackListener Listener)> open = [];
    private readonly List<string> notRecorded = [];
    private readonly byte[] buffer = new byte[ConntrackRecord.HeaderBytes + 64 * 1024];
    private readonly HashSet<int> dead = [];

    private ConntrackCapture()
    {
    }

    /// <summary>One line per namespace (or part) that is not recorded, and why.</summary>
    public IReadOnlyList<string> NotRecorded => notRecorded;

    /// <summary>The namespaces listened to, in the order of their index in the records.</summary>
    public IReadOnlyList<ConntrackNetns> Namespaces => [.. open.Select(o => o.Netns)];

    /// <summary>Opens a listener per target; a target that cannot be opened is a line of <see cref="NotRecorded"/>.</summary>
    public static ConntrackCapture Open(ConntrackCaptureOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var c = new ConntrackCapture();
        foreach (var t in options.Targets.Take(255))
        {
            try
            {
                var l = options.OpenListener(new ConntrackOptions { NetnsPath = t.Path, ReceiveBufferBytes = options.ReceiveBufferBytes, Updates = options.Updates });
                c.open.Add((t, new ConntrackNetns((uint)(l.NetnsInode ?? 0), t.Name, t.Path), l));
                if (l.Sysctls.Events == 0)
                    c.notRecorded.Add($"NAT events in {Where(t)} not recorded: net.netfilter.nf_conntrack_events is 0 there (the kernel sends no conntrack events), so only the table at start and end is (set it to 1: sysctl -w net.netfilter.nf_conntrack_events=1)");
            }
            catch (ConntrackException e)
            {
                c.notRecorded.Add($"NAT in {Where(t)} not recorded: {e.Message}");
            }
        }
        return c;
    }

    private static string Where(ConntrackTarget t) => t.Path is null ? "the recorder's network namespace" : $"network namespace {t.Name}";

    /// <summary>Dumps every namespace's table; each entry becomes a dump record (<paramref name="phase"/>: start or end).</summary>
    public int Dump(byte phase, Action<ReadOnlySpan<byte>> write, Func<(long Utc, ulong Monotonic)> clock)
    {
        ArgumentNullException.ThrowIfNull(write);
        ArgumentNullException.ThrowIfNull(clock);
        int total = 0;
        for (int i = 0; i < open.Count; i++)
        {
            if (dead.Contains(i))
                continue;
            var (t, _, l) = open[i];
            var (utc, mono) = clock();
            try
            {
                total += l.DumpRaw(message =>
                {
                    ConntrackRecord.WriteHeader(buffer, ConntrackRecord.KindDump, (byte)i, phase, utc, mono);
                    message.CopyTo(buffer.AsSpan(ConntrackRecord.HeaderBytes));
                    write(buffer.AsSpan(0, ConntrackRecord.HeaderBytes + message.Length));
                });
            }
            catch (ConntrackException e) when (phase == ConntrackRecord.PhaseStart && e.Errno is 22 or 95 or 93 or 2)
            {
                // the kernel has no ctnetlink: the subscription succeeded (nfnetlink takes any group) but nothing will come
                notRecorded.Add($"NAT in {Where(t)} not recorded: {e.Message}");
                dead.Add(i);
            }
            catch (ConntrackException e)
            {
                notRecorded.Add($"the conntrack table of {Where(t)} at the {(phase == ConntrackRecord.PhaseStart ? "start" : "end")} not recorded: {e.Message}");
            }
        }
        return total;
    }

    /// <summary>Waits up to <paramref name="timeoutMs"/> and hands on every queued event of every namespace.</summary>
    public int Poll(int timeoutMs, Action<ReadOnlySpan<byte>> write, Func<(long Utc, ulong Monotonic)> clock)
    {
        ArgumentNullException.ThrowIfNull(write);
        ArgumentNullException.ThrowIfNull(clock);
        if (open.Count == 0)
        {
            Thread.Sleep(timeoutMs);
            return 0;
        }
        int n = 0;
        int each = open.Count == 1 ? timeoutMs : Math.Max(1, timeoutMs / open.Count);
        for (int i = 0; i < open.Count; i++)
        {
            if (dead.Contains(i))
                continue;
            int index = i;
            n += open[i].Listener.PollRaw(each, message =>
            {
                var (utc, mono) = clock();
                ConntrackRecord.WriteHeader(buffer, ConntrackRecord.KindEvent, (byte)index, ConntrackRecord.PhaseNone, utc, mono);
                message.CopyTo(buffer.AsSpan(ConntrackRecord.HeaderBytes));
                write(buffer.AsSpan(0, ConntrackRecord.HeaderBytes + message.Length));
            });
        }
        return n;
    }

    /// <summary>Per namespace and event type: what arrived and what the kernel could not deliver (cumulative).</summary>
    public IEnumerable<(ConntrackNetns Netns, CtEventType Type, ConntrackCounts Counts)> Counts()
    {
        for (int i = 0; i < open.Count; i++)
            if (!dead.Contains(i))
                foreach (var t in new[] { CtEventType.New, CtEventType.Update, CtEventType.Destroy })
                    yield return (open[i].Netns, t, open[i].Listener.Counts(t));
    }

    public void Dispose()
    {
        foreach (var (_, _, l) in open)
            l.Dispose();
    }
}
