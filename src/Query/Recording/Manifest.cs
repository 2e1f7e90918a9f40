using System.Text.Json;
using System.Text.Json.Serialization;

namespace Forensics.Query.Recording;

/// <summary>A recording's manifest.json (schemas/manifest.v1.schema.json), as far as readers need it.</summary>
public sealed record Manifest
{
    [JsonPropertyName("format")] public string Format { get; init; } = "";
    [JsonPropertyName("manifest_version")] public int ManifestVersion { get; init; }
    [JsonPropertyName("recording_id")] public string RecordingId { get; init; } = "";
    [JsonPropertyName("node")] public string Node { get; init; } = "";
    [JsonPropertyName("host")] public ManifestHost Host { get; init; } = new();
    [JsonPropertyName("tool_version")] public string ToolVersion { get; init; } = "";
    [JsonPropertyName("started_at")] public DateTimeOffset StartedAt { get; init; }
    [JsonPropertyName("ended_at")] public DateTimeOffset? EndedAt { get; init; }
    [JsonPropertyName("stop_reason")] public string StopReason { get; init; } = "";
    [JsonPropertyName("recovered")] public bool Recovered { get; init; }
    [JsonPropertyName("monotonic_to_utc_offset_ns")] public long? MonotonicToUtcOffsetNs { get; init; }
    [JsonPropertyName("config")] public ManifestConfig Config { get; init; } = new();
    [JsonPropertyName("tables")] public Dictionary<string, ManifestTable> Tables { get; init; } = [];
    [JsonPropertyName("loss")] public Dictionary<string, ManifestLoss> Loss { get; init; } = [];
    [JsonPropertyName("events_lost")] public long EventsLost { get; init; }
    [JsonPropertyName("redaction")] public JsonElement? Redaction { get; init; }

    /// <summary>Hubble and Tetragon, live or imported (schemas/manifest.v1.schema.json "sources").</summary>
    [JsonPropertyName("sources")] public IReadOnlyList<ManifestSourceInfo>? Sources { get; init; }

    public const string FormatName = "forensics-recording";

    private static readonly JsonSerializerOptions Options = new() { WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull };

    /// <summary>Parses and checks the fields every reader relies on; throws <see cref="RecordingException"/>.</summary>
    public static Manifest Parse(string json, string where)
    {
        Manifest? m;
        try
        {
            m = JsonSerializer.Deserialize<Manifest>(json);
        }
        catch (JsonException e)
        {
            throw new RecordingException($"{where}: not a valid manifest: {e.Message}");
        }
        if (m is null || m.Format != FormatName)
            throw new RecordingException($"{where}: not a forensics recording manifest (format is not \"{FormatName}\")");
        if (m.ManifestVersion != 1)
            throw new RecordingException($"{where}: manifest version {m.ManifestVersion} is not supported (this tool reads version 1)");
        if (string.IsNullOrEmpty(m.RecordingId))
            throw new RecordingException($"{where}: manifest has no recording_id");
        return m;
    }

    public string ToJson() => JsonSerializer.Serialize(this, Options);
}

/// <summary>A source that is not the kernel, as far as `info` reports it.</summary>
public sealed record ManifestSourceInfo
{
    [JsonPropertyName("name")] public string Name { get; init; } = "";
    [JsonPropertyName("kind")] public string Kind { get; init; } = "";
    [JsonPropertyName("address")] public string? Address { get; init; }
    [JsonPropertyName("files")] public IReadOnlyList<ManifestInputFileInfo> Files { get; init; } = [];
    [JsonPropertyName("received")] public long Received { get; init; }
    [JsonPropertyName("stored")] public long Stored { get; init; }
    [JsonPropertyName("skipped")] public Dictionary<string, long> Skipped { get; init; } = [];
    [JsonPropertyName("malformed")] public long Malformed { get; init; }
    [JsonPropertyName("lost")] public Dictionary<string, ulong> Lost { get; init; } = [];
    [JsonPropertyName("unknown_fields")] public Dictionary<string, long> UnknownFields { get; init; } = [];
    [JsonPropertyName("disconnects")] public IReadOnlyList<string> Disconnects { get; init; } = [];
}

public sealed record ManifestInputFileInfo
{
    [JsonPropertyName("path")] public string Path { get; init; } = "";
    [JsonPropertyName("bytes")] public long Bytes { get; init; }
    [JsonPropertyName("sha256")] public string Sha256 { get; init; } = "";
    [JsonPropertyName("lines")] public long Lines { get; init; }
}

public sealed record ManifestHost
{
    [JsonPropertyName("hostname")] public string Hostname { get; init; } = "";
    [JsonPropertyName("kernel")] public string Kernel { get; init; } = "";
    [JsonPropertyName("machine")] public string? Machine { get; init; }
    [JsonPropertyName("boot_id")] public string? BootId { get; init; }
}

public sealed record ManifestConfig
{
    [JsonPropertyName("kinds")] public List<string>? Kinds { get; init; }
    [JsonPropertyName("exclude_cidrs")] public List<string>? ExcludeCidrs { get; init; }
    [JsonPropertyName("snaplen")] public int? Snaplen { get; init; }
    [JsonPropertyName("ring_bytes")] public long? RingBytes { get; init; }
    [JsonPropertyName("monitor_aggregation")] public string? MonitorAggregation { get; init; }
    [JsonPropertyName("interfaces")] public List<string>? Interfaces { get; init; }
    [JsonPropertyName("lab")] public string? Lab { get; init; }
    [JsonPropertyName("policies_sha256")] public string? PoliciesSha256 { get; init; }
    [JsonPropertyName("duration_seconds")] public double? DurationSeconds { get; init; }
}

public sealed record ManifestTable
{
    [JsonPropertyName("schema_version")] public int SchemaVersion { get; init; }
    [JsonPropertyName("rows")] public long Rows { get; init; }
    [JsonPropertyName("files")] public List<ManifestFile> Files { get; init; } = [];
}

public sealed record ManifestFile
{
    [JsonPropertyName("path")] public string Path { get; init; } = "";
    [JsonPropertyName("rows")] public long Rows { get; init; }
    [JsonPropertyName("bytes")] public long Bytes { get; init; }
    [JsonPropertyName("sha256")] public string Sha256 { get; init; } = "";
}

public sealed record ManifestLoss
{
    [JsonPropertyName("emitted")] public long Emitted { get; init; }
    [JsonPropertyName("failed")] public long Failed { get; init; }
    [JsonPropertyName("userspace_dropped")] public long UserspaceDropped { get; init; }
}

/// <summary>A recording that cannot be opened or read as asked; the message is one line for the user.</summary>
public sealed class RecordingException : Exception
{
    public RecordingException(string message) : base(message) { }
    public RecordingException() { }
    public RecordingException(string message, Exception inner) : base(message, inner) { }
}
