using System.Buffers.Binary;
using System.Text.Json;
using System.Text.Json.Serialization;
using Forensics.Datapath.Abi;

namespace Forensics.Datapath.Monitoring;

/// <summary>The kinds of frame on a monitor socket (docs/monitor.md).</summary>
public enum FrameType : ushort
{
    /// <summary>Client to server, first and only: which event kinds it wants (JSON).</summary>
    Subscribe = 1,

    /// <summary>Server to client, first: who serves, its clocks, ABI, where its maps are pinned (JSON).</summary>
    Hello = 2,

    /// <summary>One ring buffer record, byte for byte as the BPF program wrote it (fx_hdr first).</summary>
    Event = 3,

    /// <summary>Cumulative counters per CPU and event kind: the kernel's emitted and failed, this client's drops.</summary>
    Stats = 4,

    /// <summary>Server to client, last: why the stream ends (JSON).</summary>
    Bye = 5,
}

/// <summary>
/// The framing of a monitor socket: every frame is an 8-byte header (payload length u32, frame type
/// u16, flags u16, little-endian) and its payload. Control frames carry JSON, events the raw record.
/// </summary>
public static class MonitorWire
{
    /// <summary>The version of this framing; a client and a server of different versions do not talk.</summary>
    public const int Version = 1;

    public const int HeaderBytes = 8;

    /// <summary>Largest control frame payload accepted (JSON).</summary>
    public const int MaxControlPayload = 1 << 20;

    /// <summary>Largest event payload accepted (the largest record, exec, is 1640 bytes).</summary>
    public const int MaxEventPayload = 64 << 10;

    /// <summary>Bytes of one stats entry.</summary>
    public const int StatsEntryBytes = 32;

    internal static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public static void WriteHeader(Span<byte> dest, FrameType type, int payloadLength)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(dest, (uint)payloadLength);
        BinaryPrimitives.WriteUInt16LittleEndian(dest[4..], (ushort)type);
        BinaryPrimitives.WriteUInt16LittleEndian(dest[6..], 0);
    }

    /// <summary>Reads a frame header; throws <see cref="InvalidDataException"/> for a type or length no peer of this version sends.</summary>
    public static (FrameType Type, int Length) ReadHeader(ReadOnlySpan<byte> src)
    {
        uint len = BinaryPrimitives.ReadUInt32LittleEndian(src);
        var type = (FrameType)BinaryPrimitives.ReadUInt16LittleEndian(src[4..]);
        int max = type switch
        {
            FrameType.Event => MaxEventPayload,
            FrameType.Subscribe or FrameType.Hello or FrameType.Bye or FrameType.Stats => MaxControlPayload,
            _ => throw new InvalidDataException($"monitor socket: unknown frame type {(ushort)type}"),
        };
        if (len > (uint)max)
            throw new InvalidDataException($"monitor socket: {type} frame of {len} bytes (at most {max})");
        return (type, (int)len);
    }

    /// <summary>A whole control frame (header and JSON payload).</summary>
    public static byte[] ControlFrame<T>(FrameType type, T value)
    {
        var json = JsonSerializer.SerializeToUtf8Bytes(value, Json);
        var frame = new byte[HeaderBytes + json.Length];
        WriteHeader(frame, type, json.Length);
        json.CopyTo(frame.AsSpan(HeaderBytes));
        return frame;
    }

    public static T ReadControl<T>(ReadOnlySpan<byte> payload, FrameType type)
    {
        try
        {
            return JsonSerializer.Deserialize<T>(payload, Json) ?? throw new InvalidDataException($"monitor socket: empty {type} frame");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"monitor socket: malformed {type} frame: {e.Message}", e);
        }
    }

    /// <summary>A whole stats frame: a u32 count, a u32 reserved, then per entry u16 cpu, u8 kind, 5 reserved bytes, u64 emitted, u64 failed, u64 dropped.</summary>
    public static byte[] StatsFrame(IReadOnlyList<StatsEntry> entries)
    {
        ArgumentNullException.ThrowIfNull(entries);
        int len = 8 + entries.Count * StatsEntryBytes;
        var frame = new byte[HeaderBytes + len];
        WriteHeader(frame, FrameType.Stats, len);
        var p = frame.AsSpan(HeaderBytes);
        BinaryPrimitives.WriteUInt32LittleEndian(p, (uint)entries.Count);
        int off = 8;
        foreach (var e in entries)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(p[off..], e.Cpu);
            p[off + 2] = (byte)e.Kind;
            BinaryPrimitives.WriteUInt64LittleEndian(p[(off + 8)..], e.Emitted);
            BinaryPrimitives.WriteUInt64LittleEndian(p[(off + 16)..], e.Failed);
            BinaryPrimitives.WriteUInt64LittleEndian(p[(off + 24)..], e.Dropped);
            off += StatsEntryBytes;
        }
        return frame;
    }

    public static List<StatsEntry> ReadStats(ReadOnlySpan<byte> payload)
    {
        if (payload.Length < 8)
            throw new InvalidDataException("monitor socket: short stats frame");
        uint n = BinaryPrimitives.ReadUInt32LittleEndian(payload);
        if (payload.Length != 8 + (long)n * StatsEntryBytes)
            throw new InvalidDataException($"monitor socket: stats frame of {payload.Length} bytes for {n} entries");
        var list = new List<StatsEntry>((int)n);
        for (int i = 0, off = 8; i < n; i++, off += StatsEntryBytes)
        {
            var kind = (EventKind)payload[off + 2];
            if (kind is EventKind.None or >= EventKind.Max)
                throw new InvalidDataException($"monitor socket: stats for unknown event kind {(byte)kind}");
            list.Add(new StatsEntry(
                BinaryPrimitives.ReadUInt16LittleEndian(payload[off..]),
                kind,
                BinaryPrimitives.ReadUInt64LittleEndian(payload[(off + 8)..]),
                BinaryPrimitives.ReadUInt64LittleEndian(payload[(off + 16)..]),
                BinaryPrimitives.ReadUInt64LittleEndian(payload[(off + 24)..])));
        }
        return list;
    }
}

/// <summary>
/// One CPU's cumulative counts for one event kind: what the BPF programs handed to the ring buffer
/// (<see cref="Emitted"/>) and could not (<see cref="Failed"/>: the ring was full), both since the datapath
/// was loaded, and what the server dropped for this client since it joined (<see cref="Dropped"/>: its queue
/// was full). The record's own header says which CPU emitted it, so a drop is counted on that CPU.
/// </summary>
public readonly record struct StatsEntry(ushort Cpu, EventKind Kind, ulong Emitted, ulong Failed, ulong Dropped);

/// <summary>What a client asks for.</summary>
public sealed record MonitorSubscribe
{
    public int Version { get; init; } = MonitorWire.Version;

    /// <summary>Table names of the event kinds wanted (drop, policy, nat, trace, capture); empty: every kind.</summary>
    public IReadOnlyList<string> Kinds { get; init; } = [];

    /// <summary>Who asks (monitor, record), for the server's own log.</summary>
    public string Client { get; init; } = "";
}

/// <summary>What the server says first: enough to decode, time and attribute its records.</summary>
public sealed record MonitorHello
{
    public int Version { get; init; } = MonitorWire.Version;

    /// <summary>FX_ABI_VERSION of the records that follow.</summary>
    public int AbiVersion { get; init; } = Limits.AbiVersion;

    /// <summary>The lab (datapath) name.</summary>
    public string Lab { get; init; } = "";

    public string Node { get; init; } = "";

    /// <summary>The process that owns the datapath and serves this socket.</summary>
    public int Pid { get; init; }

    /// <summary>/proc/sys/kernel/random/boot_id: records' kernel times mean something only on the same boot.</summary>
    public string BootId { get; init; } = "";

    /// <summary>UTC minus CLOCK_MONOTONIC (the records' ktime), in ns, as the server measured it.</summary>
    public long MonotonicToUtcOffsetNs { get; init; }

    /// <summary>Possible CPUs (the range of a record's cpu).</summary>
    public int Cpus { get; init; }

    /// <summary>Event kinds the datapath emits (table names).</summary>
    public IReadOnlyList<string> Kinds { get; init; } = [];

    public uint RingBytes { get; init; }
    public uint Snaplen { get; init; }
    public string MonitorAggregation { get; init; } = "none";

    /// <summary>Bytes of this client's queue in the server: beyond it, events are dropped and counted.</summary>
    public int QueueBytes { get; init; }

    /// <summary>bpffs folder with the datapath's state maps pinned (fx_ipcache, fx_policy, fx_ct, ...).</summary>
    public string PinDir { get; init; } = "";

    /// <summary>The control plane's state as JSON (endpoints, identities, policies, services): what the maps do not hold.</summary>
    public string ControlFile { get; init; } = "";

    /// <summary>The network namespace whose interfaces the records' ifindex values name.</summary>
    public string Netns { get; init; } = "";

    public DateTime StartedUtc { get; init; }

    /// <summary>The cluster's pod and service CIDRs (what is inside the cluster: a recording's manifest says them).</summary>
    public IReadOnlyList<string> PodCidrs { get; init; } = [];
    public IReadOnlyList<string> ServiceCidrs { get; init; } = [];
}

/// <summary>The server's last word.</summary>
public sealed record MonitorBye
{
    public string Reason { get; init; } = "";
}
