using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Forensics.Format;

/// <summary>
/// manifest.json: the one model of a recording's manifest, written by the recorder and read by every
/// reader. Version 2 (schemas/manifest.v2.schema.json) is written; versions 1 and 2 are read (version 1
/// lacks sources, filtered_connects, the cluster ranges and the recovery counts). A test validates a
/// manifest with every field set against the JSON Schema, which allows no other field.
/// </summary>
public sealed class Manifest
{
    public const string FileName = "manifest.json";
    public const string FormatName = "forensics-recording";

    /// <summary>The version this tool writes.</summary>
    public const int CurrentVersion = 2;

    /// <summary>The versions this tool reads.</summary>
    public static IReadOnlyList<int> ReadableVersions { get; } = [1, 2];

    [JsonPropertyName("format")] public string Format { get; set; } = FormatName;
    [JsonPropertyName("manifest_version")] public int ManifestVersion { get; set; } = CurrentVersion;
    [JsonPropertyName("recording_id")] public string RecordingId { get; set; } = Guid.NewGuid().ToString();
    [JsonPropertyName("node")] public string Node { get; set; } = "";
    [JsonPropertyName("host")] public ManifestHost Host { get; set; } = new();
    [JsonPropertyName("tool_version")] public string ToolVersion { get; set; } = "";
    [JsonPropertyName("started_at")] public DateTimeOffset StartedAt { get; set; }
    [JsonPropertyName("ended_at")] public DateTimeOffset? EndedAt { get; set; }
    [JsonPropertyName("stop_reason")] public string StopReason { get; set; } = "recording";
    [JsonPropertyName("recovered")] public bool Recovered { get; set; }
    [JsonPropertyName("monotonic_to_utc_offset_ns")] public long? MonotonicToUtcOffsetNs { get; set; }
    [JsonPropertyName("config")] public ManifestConfig Config { get; set; } = new();
    [JsonPropertyName("sources")] public SortedDictionary<string, ManifestSource> Sources { get; set; } = new(StringComparer.Ordinal);
    [JsonPropertyName("tables")] public SortedDictionary<string, ManifestTable> Tables { get; set; } = new(StringComparer.Ordinal);
    [JsonPropertyName("loss")] public SortedDictionary<string, ManifestLoss> Loss { get; set; } = new(StringComparer.Ordinal);
    [JsonPropertyName("events_lost")] public ulong EventsLost { get; set; }

    /// <summary>Connects the in-kernel destination filter excluded (counted, never emitted).</summary>
    [JsonPropertyName("filtered_connects")] public ulong FilteredConnects { get; set; }

    /// <summary>After recovery: segments that were never sealed (a crash lost their rows).</summary>
    [JsonPropertyName("unsealed_segments")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public int UnsealedSegments { get; set; }

    [JsonPropertyName("unsealed_bytes")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public long UnsealedBytes { get; set; }

    /// <summary>Set by bundling: what was redacted and how.</summary>
    [JsonPropertyName("redaction")] public JsonObject? Redaction { get; set; }

    /// <summary>Where the pod and container columns came from (the container runtime, a pods file, a lab, none); null when not recorded by the probes.</summary>
    [JsonPropertyName("attribution")] public ManifestAttribution? Attribution { get; set; }

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>Parses and checks the fields every reader relies on; throws <see cref="ManifestException"/>.</summary>
    public static Manifest Parse(ReadOnlySpan<byte> json, string where)
    {
        Manifest? m;
        try
        {
            m = JsonSerializer.Deserialize<Manifest>(json, Json);
        }
        catch (JsonException e)
        {
            throw new ManifestException($"{where}: not a valid manifest: {e.Message}");
        }
        if (m is null || m.Format != FormatName)
            throw new ManifestException($"{where}: not a forensics recording manifest (format is not \"{FormatName}\")");
        if (!ReadableVersions.Contains(m.ManifestVersion))
            throw new ManifestException($"{where}: manifest version {m.ManifestVersion} is not supported (this tool reads versions {string.Join(", ", ReadableVersions)})");
        if (string.IsNullOrEmpty(m.RecordingId))
            throw new ManifestException($"{where}: manifest has no recording_id");
        if (m.Tables is null || m.Loss is null || m.Config is null || m.Host is null || m.Sources is null
            || m.Tables.Values.Any(t => t is null || t.Files is null || t.Files.Any(f => f is null)))
            throw new ManifestException($"{where}: manifest has a null where an object or a list belongs");
        return m;
    }

    /// <summary>Reads DIR/manifest.json.</summary>
    public static Manifest Read(string dir)
    {
        var path = Path.Combine(dir, FileName);
        return Parse(File.ReadAllBytes(path), path);
    }

    /// <summary>The manifest as UTF-8 JSON, indented.</summary>
    public byte[] ToJson() => JsonSerializer.SerializeToUtf8Bytes(this, Json);

    public void AddFile(string table, int schemaVersion, ManifestFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        if (!Tables.TryGetValue(table, out var t))
            Tables[table] = t = new ManifestTable { SchemaVersion = schemaVersion };
        t.Files.Add(file);
        t.Rows += file.Rows;
    }
}

/// <summary>Where the pod and container columns came from, and what went wrong with the source.</summary>
public sealed class ManifestAttribution
{
    /// <summary>"cri ENDPOINT (runtime version)", "pods file PATH", "lab NAME (network namespaces)" or "none".</summary>
    [JsonPropertyName("source")] public string Source { get; set; } = "none";
    [JsonPropertyName("warnings")] public List<string> Warnings { get; set; } = [];
    [JsonPropertyName("pods")] public int Pods { get; set; }
    [JsonPropertyName("containers")] public int Containers { get; set; }
    [JsonPropertyName("refreshes")] public long Refreshes { get; set; }
    [JsonPropertyName("failures")] public long Failures { get; set; }
}

public sealed class ManifestHost
{
    [JsonPropertyName("hostname")] public string Hostname { get; set; } = "";
    [JsonPropertyName("kernel")] public string Kernel { get; set; } = "";
    [JsonPropertyName("machine")] public string? Machine { get; set; }
    [JsonPropertyName("boot_id")] public string? BootId { get; set; }
}

public sealed class ManifestConfig
{
    [JsonPropertyName("kinds")] public List<string> Kinds { get; set; } = [];
    [JsonPropertyName("exclude_cidrs")] public List<string> ExcludeCidrs { get; set; } = [];
    [JsonPropertyName("snaplen")] public uint Snaplen { get; set; }
    [JsonPropertyName("ring_bytes")] public uint RingBytes { get; set; }

    /// <summary>"none": a trace event per packet; "medium": trace events aggregated per connection.</summary>
    [JsonPropertyName("monitor_aggregation")] public string MonitorAggregation { get; set; } = "none";
    [JsonPropertyName("lab")] public string? Lab { get; set; }
    [JsonPropertyName("policies_sha256")] public string? PoliciesSha256 { get; set; }
    [JsonPropertyName("duration_seconds")] public double? DurationSeconds { get; set; }

    /// <summary>The cluster's pod address ranges as the node knows them (inside the cluster).</summary>
    [JsonPropertyName("pod_cidrs")] public List<string> PodCidrs { get; set; } = [];

    /// <summary>The cluster's service address ranges (inside the cluster).</summary>
    [JsonPropertyName("service_cidrs")] public List<string> ServiceCidrs { get; set; } = [];

    /// <summary>The node's own addresses (inside the cluster).</summary>
    [JsonPropertyName("node_addresses")] public List<string> NodeAddresses { get; set; } = [];
}

/// <summary>
/// One source that fed the recording (docs/sources.md): the kernel's ring buffers, a netlink socket,
/// a gRPC stream, an imported file. What it delivered, what it lost, and what it could not record.
/// </summary>
public sealed class ManifestSource
{
    /// <summary>bpf, netlink, grpc, file, memory.</summary>
    [JsonPropertyName("kind")] public string Kind { get; set; } = "";

    /// <summary>Where it read from (ring buffers, a socket address, files).</summary>
    [JsonPropertyName("detail")] public string Detail { get; set; } = "";

    /// <summary>Records the source handed to the recorder (rows follow from them).</summary>
    [JsonPropertyName("records")] public ulong Records { get; set; }

    /// <summary>Per table: what the source's producer emitted and what could not be delivered.</summary>
    [JsonPropertyName("loss")] public SortedDictionary<string, ManifestLoss> Loss { get; set; } = new(StringComparer.Ordinal);

    /// <summary>One line each: what this source did not record, and why ("NAT not recorded because ...").</summary>
    [JsonPropertyName("not_recorded")] public List<string> NotRecorded { get; set; } = [];

    /// <summary>Input files of an import, with their size and SHA-256.</summary>
    [JsonPropertyName("inputs")] public List<ManifestInput> Inputs { get; set; } = [];

    // A source that delivers whole messages (Hubble, Tetragon: a gRPC stream or an imported export) accounts for
    // each one: received = stored + the sum of skipped + malformed. rows_written also counts rows derived from a
    // stored event (a SNATed flow is a trace row and a nat row).

    /// <summary>Messages (stream) or non-empty lines (import) received.</summary>
    [JsonPropertyName("received")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public long Received { get; set; }

    /// <summary>Of them, events written as rows.</summary>
    [JsonPropertyName("stored")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public long Stored { get; set; }

    /// <summary>Rows per table, derived rows included.</summary>
    [JsonPropertyName("rows_written")] public SortedDictionary<string, long> RowsWritten { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Messages not stored, by kind (l7, debug-event, a lost-events report, a kprobe not recorded, ...).</summary>
    [JsonPropertyName("skipped")] public SortedDictionary<string, long> Skipped { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Lines or messages that were no event: counted, never stopping the rest.</summary>
    [JsonPropertyName("malformed")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public long Malformed { get; set; }

    /// <summary>The first 100 malformed lines or messages: file, line (or message) number, error.</summary>
    [JsonPropertyName("malformed_examples")] public List<ManifestMalformed> MalformedExamples { get; set; } = [];

    /// <summary>What the source itself reported lost (Hubble's lost events by source, Tetragon's rate limit), and
    /// counts of throttle periods and reconnect gaps whose events are not known.</summary>
    [JsonPropertyName("lost")] public SortedDictionary<string, ulong> Lost { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Fields the project's .proto subset does not declare, by path, and how many stored rows kept them.</summary>
    [JsonPropertyName("unknown_fields")] public SortedDictionary<string, long> UnknownFields { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Streams opened (a reconnect opens another).</summary>
    [JsonPropertyName("connects")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public long Connects { get; set; }

    /// <summary>When and why a stream ended.</summary>
    [JsonPropertyName("disconnects")] public List<string> Disconnects { get; set; } = [];
}

public sealed class ManifestInput
{
    [JsonPropertyName("path")] public string Path { get; set; } = "";
    [JsonPropertyName("bytes")] public long Bytes { get; set; }

    /// <summary>Of the file as stored (compressed, for gzip).</summary>
    [JsonPropertyName("sha256")] public string Sha256 { get; set; } = "";

    [JsonPropertyName("gzip")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public bool Gzip { get; set; }

    [JsonPropertyName("lines")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public long Lines { get; set; }
}

/// <summary>A line of an import that could not be read, or a stream message that could not be decoded.</summary>
public sealed class ManifestMalformed
{
    [JsonPropertyName("file")] public string? File { get; set; }
    [JsonPropertyName("line")] public long Line { get; set; }
    [JsonPropertyName("error")] public string Error { get; set; } = "";
}

public sealed class ManifestTable
{
    [JsonPropertyName("schema_version")] public int SchemaVersion { get; set; }
    [JsonPropertyName("rows")] public long Rows { get; set; }
    [JsonPropertyName("files")] public List<ManifestFile> Files { get; set; } = [];
}

public sealed class ManifestFile
{
    [JsonPropertyName("path")] public string Path { get; set; } = "";
    [JsonPropertyName("rows")] public long Rows { get; set; }
    [JsonPropertyName("bytes")] public long Bytes { get; set; }
    [JsonPropertyName("sha256")] public string Sha256 { get; set; } = "";
}

public sealed class ManifestLoss
{
    /// <summary>Events the producer made (the kernel's successful and failed emissions; a source's own count).</summary>
    [JsonPropertyName("emitted")] public ulong Emitted { get; set; }

    /// <summary>Events the producer could not hand over (ring buffer full, ENOBUFS, a stream's lost-events notice).</summary>
    [JsonPropertyName("failed")] public ulong Failed { get; set; }

    /// <summary>Events the recorder received and could not write (no buffer, a write error).</summary>
    [JsonPropertyName("userspace_dropped")] public ulong UserspaceDropped { get; set; }
}

/// <summary>A manifest that cannot be read; the message is one line for the user.</summary>
public sealed class ManifestException : Exception
{
    public ManifestException(string message) : base(message) { }
    public ManifestException() { }
    public ManifestException(string message, Exception inner) : base(message, inner) { }
}
