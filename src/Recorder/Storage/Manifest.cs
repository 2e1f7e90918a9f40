using System.Text.Json;
using System.Text.Json.Serialization;
using Forensics.Datapath;

namespace Forensics.Recorder.Storage;

public sealed class ManifestFile
{
    [JsonPropertyName("path")] public string Path { get; set; } = "";
    [JsonPropertyName("rows")] public long Rows { get; set; }
    [JsonPropertyName("bytes")] public long Bytes { get; set; }
    [JsonPropertyName("sha256")] public string Sha256 { get; set; } = "";
}

public sealed class ManifestTable
{
    [JsonPropertyName("schema_version")] public int SchemaVersion { get; set; }
    [JsonPropertyName("rows")] public long Rows { get; set; }
    [JsonPropertyName("files")] public List<ManifestFile> Files { get; set; } = [];
}

public sealed class ManifestLoss
{
    [JsonPropertyName("emitted")] public ulong Emitted { get; set; }
    [JsonPropertyName("failed")] public ulong Failed { get; set; }
    [JsonPropertyName("userspace_dropped")] public ulong UserspaceDropped { get; set; }
}

public sealed class ManifestHost
{
    [JsonPropertyName("hostname")] public string Hostname { get; set; } = "";
    [JsonPropertyName("kernel")] public string Kernel { get; set; } = "";
    [JsonPropertyName("machine")] public string Machine { get; set; } = "";
    [JsonPropertyName("boot_id")] public string BootId { get; set; } = "";
}

public sealed class ManifestConfig
{
    [JsonPropertyName("kinds")] public List<string> Kinds { get; set; } = [];
    [JsonPropertyName("exclude_cidrs")] public List<string> ExcludeCidrs { get; set; } = [];
    [JsonPropertyName("snaplen")] public uint Snaplen { get; set; }
    [JsonPropertyName("ring_bytes")] public uint RingBytes { get; set; }

    /// <summary>"none": a trace event per packet; "medium": trace events aggregated per connection (EventOptions.MonitorAggregation).</summary>
    [JsonPropertyName("monitor_aggregation")] public string MonitorAggregation { get; set; } = "none";
    [JsonPropertyName("interfaces")] public List<string> Interfaces { get; set; } = [];
    [JsonPropertyName("lab")] public string? Lab { get; set; }
    [JsonPropertyName("policies_sha256")] public string? PoliciesSha256 { get; set; }
    [JsonPropertyName("duration_seconds")] public double? DurationSeconds { get; set; }
    [JsonPropertyName("pod_cidrs")] public List<string> PodCidrs { get; set; } = [];
    [JsonPropertyName("service_cidrs")] public List<string> ServiceCidrs { get; set; } = [];
}

/// <summary>manifest.json (schemas/manifest.v1.schema.json).</summary>
public sealed class Manifest
{
    public const string FileName = "manifest.json";

    [JsonPropertyName("format")] public string Format { get; set; } = "forensics-recording";
    [JsonPropertyName("manifest_version")] public int ManifestVersion { get; set; } = 1;
    [JsonPropertyName("recording_id")] public string RecordingId { get; set; } = Guid.NewGuid().ToString();
    [JsonPropertyName("node")] public string Node { get; set; } = "";
    [JsonPropertyName("host")] public ManifestHost Host { get; set; } = new();
    [JsonPropertyName("tool_version")] public string ToolVersion { get; set; } = "";
    [JsonPropertyName("started_at")] public DateTime StartedAt { get; set; }
    [JsonPropertyName("ended_at")] public DateTime? EndedAt { get; set; }
    [JsonPropertyName("stop_reason")] public string StopReason { get; set; } = "recording";
    [JsonPropertyName("recovered")] public bool Recovered { get; set; }
    [JsonPropertyName("monotonic_to_utc_offset_ns")] public long MonotonicToUtcOffsetNs { get; set; }
    [JsonPropertyName("config")] public ManifestConfig Config { get; set; } = new();
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

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    public static Manifest Read(string dir)
    {
        var path = System.IO.Path.Combine(dir, FileName);
        try
        {
            return JsonSerializer.Deserialize<Manifest>(File.ReadAllBytes(path), Json)
                ?? throw new InvalidDataException($"{path}: empty manifest");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not a valid manifest ({e.Message})", e);
        }
    }

    /// <summary>Writes atomically: a temporary file, fsync, rename, fsync of the folder.</summary>
    public void Write(string dir)
    {
        var path = System.IO.Path.Combine(dir, FileName);
        var tmp = path + ".tmp";
        var mode = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write, Share = FileShare.None };
        if (!OperatingSystem.IsWindows())
            mode.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite; // a recording's files are its owner's only
        using (var fs = new FileStream(tmp, mode))
        {
            JsonSerializer.Serialize(fs, this, Json);
            fs.Flush(flushToDisk: true);
        }
        File.Move(tmp, path, overwrite: true);
        FileSystem.FsyncDirectory(dir);
    }

    public void AddFile(string table, int schemaVersion, ManifestFile file)
    {
        if (!Tables.TryGetValue(table, out var t))
            Tables[table] = t = new ManifestTable { SchemaVersion = schemaVersion };
        t.Files.Add(file);
        t.Rows += file.Rows;
    }
}
