using System.Globalization;
using System.Reflection;
using Forensics.Format;
using Forensics.Query.Recording;
using Forensics.Recorder.Batches;
using Forensics.Recorder.Storage;

namespace Forensics.Query.Tests;

/// <summary>
/// Builds a recording with the recorder's own writers: a <see cref="TableBatch"/> with the columns of the
/// table's schema, written and sealed by <see cref="SegmentWriter"/> (TABLE/node=NODE/seg-NNNNNN.parquet,
/// zstd, the schema version and docs in the key/value metadata), and the manifest written by
/// <see cref="ManifestStore"/>. Rows are anonymous objects or dictionaries keyed by column name;
/// columns left out get NULL when nullable, else a zero value; `time` defaults to the start plus ktime_ns.
/// </summary>
internal sealed class TestRecording : IDisposable
{
    public static readonly DateTimeOffset Start = new(2026, 11, 23, 10, 0, 0, TimeSpan.Zero);

    private readonly Dictionary<string, List<List<IReadOnlyDictionary<string, object?>>>> _segments = [];
    public string Root { get; }
    public string Node { get; }
    public string RecordingId { get; } = Guid.NewGuid().ToString();
    public List<string> ExcludeCidrs { get; } = ["10.0.0.0/16", "10.96.0.0/16", "127.0.0.1"];
    public SortedDictionary<string, ManifestLoss> Loss { get; } = new(StringComparer.Ordinal);
    public string StopReason { get; set; } = "duration";

    public TestRecording(string node = "node-a", string? root = null)
    {
        Node = node;
        Root = root ?? Path.Combine(Path.GetTempPath(), "fxq-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(Root);
    }

    /// <summary>Adds rows to the table's current segment.</summary>
    public TestRecording Add(string table, params object[] rows)
    {
        if (!_segments.TryGetValue(table, out var segs))
            _segments[table] = segs = [[]];
        segs[^1].AddRange(rows.Select(ToDict));
        return this;
    }

    private readonly List<(string Table, string RelativePath, long Rows)> _files = [];

    /// <summary>Lists a Parquet file already under the recording's folder as a segment (the query benchmark's millions of rows).</summary>
    public TestRecording AddFile(string table, string relativePath, long rows)
    {
        _files.Add((table, relativePath, rows));
        return this;
    }

    /// <summary>Starts a new segment file for the table.</summary>
    public TestRecording NewSegment(string table)
    {
        if (!_segments.TryGetValue(table, out var segs))
            _segments[table] = segs = [];
        segs.Add([]);
        return this;
    }

    /// <summary>Writes the Parquet files and the manifest; returns the recording directory.</summary>
    public string Build()
    {
        var manifest = new Manifest
        {
            RecordingId = RecordingId,
            Node = Node,
            Host = new ManifestHost { Hostname = Node, Kernel = "6.18.0-test", Machine = "x86_64", BootId = "boot-1" },
            ToolVersion = "test",
            StartedAt = Start,
            EndedAt = Start.AddMinutes(1),
            StopReason = StopReason,
            MonotonicToUtcOffsetNs = Start.ToUnixTimeMilliseconds() * 1_000_000L,
            Config = new ManifestConfig { Kinds = [.. _segments.Keys], ExcludeCidrs = ExcludeCidrs, Snaplen = 128, Lab = "test" },
            Loss = Loss,
            EventsLost = Loss.Values.Aggregate(0UL, (a, l) => a + l.Failed + l.UserspaceDropped),
        };
        foreach (var (table, segs) in _segments)
        {
            var schema = SchemaCatalog.Current(table);
            var n = 0;
            foreach (var rows in segs.Where(s => s.Count > 0))
            {
                var batch = TableBatch.ForSchema(schema, rows.Count);
                foreach (var row in rows)
                {
                    var unknown = row.Keys.Where(k => schema.Columns.All(c => c.Name != k)).ToList();
                    if (unknown.Count > 0)
                        throw new ArgumentException($"{table} has no column {string.Join(", ", unknown)} (schemas/{table}.v{schema.Version}.json)");
                    var i = batch.NextRow();
                    foreach (var c in schema.Columns)
                        batch.Set(i, c.Name, ValueFor(row, c));
                }
                n++;
                var segment = n;
                var writer = new SegmentWriter(Root, Node, batch, RecordingId, f => manifest.AddFile(table, schema.Version, f),
                    TimeSpan.FromHours(1), nextSegment: () => segment);
                writer.WriteAsync(batch).GetAwaiter().GetResult();
                writer.SealAsync().GetAwaiter().GetResult();
                writer.DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
        }
        foreach (var (table, rel, rows) in _files)
        {
            var full = Path.Combine(Root, rel);
            manifest.AddFile(table, SchemaCatalog.CurrentVersion(table),
                new ManifestFile { Path = rel, Rows = rows, Bytes = new FileInfo(full).Length, Sha256 = RecordingLocator.Sha256Of(full) });
        }
        ManifestStore.Write(manifest, Root);
        return Root;
    }

    private static object? ValueFor(IReadOnlyDictionary<string, object?> row, ColumnSchema c)
    {
        if (row.TryGetValue(c.Name, out var v))
            return v;
        if (c.Name == "time" && row.TryGetValue("ktime_ns", out var k) && k is not null)
            return Start.AddTicks(Convert.ToInt64(k, CultureInfo.InvariantCulture) / 100);
        if (c.Nullable)
            return null;
        return c.Type switch
        {
            "utf8" => "",
            "bool" => false,
            "binary" => Array.Empty<byte>(),
            _ when c.Type.StartsWith("timestamp", StringComparison.Ordinal) => Start,
            _ => 0,
        };
    }

    private static IReadOnlyDictionary<string, object?> ToDict(object row)
    {
        if (row is IReadOnlyDictionary<string, object?> d)
            return d;
        return row.GetType().GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .ToDictionary(p => p.Name, p => p.GetValue(row), StringComparer.Ordinal);
    }

    /// <summary>SHA-256 of every file under the recording, for before/after comparisons.</summary>
    public Dictionary<string, string> HashAll()
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var f in Directory.EnumerateFiles(Root, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = FileAttributes.ReparsePoint }).Order(StringComparer.Ordinal))
            result[Path.GetRelativePath(Root, f)] = RecordingLocator.Sha256Of(f);
        return result;
    }

    public void Dispose()
    {
        if (Environment.GetEnvironmentVariable("FORENSICS_KEEP_TEST_RECORDINGS") == "1")
            return; // for looking at the commands' output by hand
        try { Directory.Delete(Root, recursive: true); }
        catch (IOException) { }
    }
}
