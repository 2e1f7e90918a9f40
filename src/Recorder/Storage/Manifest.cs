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

/// <summary>One input file of an import, as it was read.</summary>
public sealed class ManifestInputFile
{
    [JsonPropertyName("path")] public string Path { get; set; } = "";
    [JsonPropertyName("bytes")] public long Bytes { get; set; }
    [JsonPropertyName("sha256")] public string Sha256 { get; set; } = "";
    [JsonPropertyName("gzip")] public bool Gzip { get; set; }
    [JsonPropertyName("lines")] public long Lines { get; set; }
}

/// <summary>A line of an import that could not be read, or a stream message that could not be decoded.</summary>
public sealed class ManifestMalformed
{
    [JsonPropertyName("file")] public string? File { get; set; }
    [JsonPropertyName("line")] public long Line { get; set; }
    [JsonPropertyName("error")] public string Error { get; set; } = "";
}

/// <summary>
/// A source that is not this tool's kernel side (Hubble, Tetragon; a gRPC stream or an imported export):
/// what it delivered and what became of each event. received = stored + skipped + malformed; rows_written
/// also counts rows derived from a stored event (a SNATed flow is a trace row and a nat row).
/// </summary>
public sealed class ManifestSource
{
    [JsonPropertyName("name")] public string Name { get; set; } = "";
    [JsonPropertyName("kind")] public string Kind { get; set; } = "";
    [JsonPropertyName("address")] public string? Address { get; set; }
    [JsonPropertyName("files")] public List<ManifestInputFile> Files { get; set; } = [];
    [JsonPropertyName("received")] public long Received { get; set; }
    [JsonPropertyName("stored")] public long Stored { get; set; }
    [JsonPropertyName("rows_written")] public SortedDictionary<string, long> RowsWritten { get; set; } = new(StringComparer.Ordinal);
    [JsonPropertyName("skipped")] public SortedDictionary<string, long> Skipped { get; set; } = new(StringComparer.Ordinal);
    [JsonPropertyName("malformed")] public long Malformed { get; set; }
    [JsonPropertyName("malformed_examples")] public List<ManifestMalformed> MalformedExamples { get; set; } = [];
    [JsonPropertyName("lost")] public SortedDictionary<string, ulong> Lost { get; set; } = new(StringComparer.Ordinal);
    [JsonPropertyName("unknown_fields")] public SortedDictionary<string, long> UnknownFields { get; set; } = new(StringComparer.Ordinal);
    [JsonPropertyName("connects")] public long Connects { get; set; }
    [JsonPropertyName("disconnects")] public List<string> Disconnects { get; set; } = [];
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

    /// <summary>Sources other than this tool's kernel side (Hubble, Tetragon), live or imported.</summary>
    [JsonPropertyName("sources")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public List<ManifestSource>? Sources { get; set; }

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
        // A source entry (Hubble, Tetragon) is counted into under its own lock by its decoder: hold each
        // while serializing, so the file never holds a half-updated entry.
        var sources = Sources?.ToList() ?? [];
        int taken = 0;
        try
        {
            foreach (var s in sources)
            {
                System.Threading.Monitor.Enter(s);
                taken++;
            }
            using var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None);
            JsonSerializer.Serialize(fs, this, Json);
            fs.Flush(flushToDisk: true);
        }
        finally
        {
            for (int i = 0; i < taken; i++)
                System.Threading.Monitor.Exit(sources[i]);
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
