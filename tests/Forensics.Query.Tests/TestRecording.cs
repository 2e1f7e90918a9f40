using System.Globalization;
using System.Reflection;
using System.Text;
using DuckDB.NET.Data;
using Forensics.Query.Recording;
using Forensics.Query.Schema;

namespace Forensics.Query.Tests;

/// <summary>
/// Builds a recording the way the recorder lays it out (schemas/README.md): Parquet
/// files written by DuckDB with exactly the schema's columns and types, under
/// TABLE/node=NODE/seg-NNNNNN.parquet, and a manifest with their sizes and SHA-256s.
/// Rows are anonymous objects or dictionaries keyed by column name; columns left out
/// get NULL when nullable, else a zero value; `time` defaults to the start plus ktime_ns.
/// </summary>
internal sealed class TestRecording : IDisposable
{
    public static readonly DateTimeOffset Start = new(2026, 11, 23, 10, 0, 0, TimeSpan.Zero);

    private readonly Dictionary<string, List<List<IReadOnlyDictionary<string, object?>>>> _segments = [];
    public string Root { get; }
    public string Node { get; }
    public string RecordingId { get; } = Guid.NewGuid().ToString();
    public List<string> ExcludeCidrs { get; } = ["10.0.0.0/16", "10.96.0.0/16", "127.0.0.1"];
    public Dictionary<string, ManifestLoss> Loss { get; } = [];
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

    private readonly List<(string Table, string Sql)> _raw = [];

    /// <summary>Adds a segment written from any SELECT (columns as the SELECT makes them), e.g. another writer's layout.</summary>
    public TestRecording AddRaw(string table, string selectSql)
    {
        _raw.Add((table, selectSql));
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

    public static IReadOnlyList<ColumnSchema> ColumnsOf(string table) =>
        SnapshotSchemas.Tables.Contains(table) ? SnapshotSchemas.Columns(table) : SchemaCatalog.Current(table).Columns;

    /// <summary>Writes the Parquet files and the manifest; returns the recording directory.</summary>
    public string Build()
    {
        using var conn = new DuckDBConnection("DataSource=:memory:");
        conn.Open();
        var tables = new Dictionary<string, ManifestTable>();
        foreach (var (table, segs) in _segments)
        {
            var columns = ColumnsOf(table);
            var version = SchemaCatalog.Schemas.Any(s => s.Table == table) ? SchemaCatalog.CurrentVersion(table) : 1;
            var files = new List<ManifestFile>();
            var n = 0;
            foreach (var rows in segs.Where(s => s.Count > 0))
            {
                n++;
                var rel = $"{table}/node={Node}/seg-{n:D6}.parquet";
                var full = Path.Combine(Root, rel);
                Directory.CreateDirectory(Path.GetDirectoryName(full)!);
                var selects = rows.Select(r => "SELECT " + string.Join(", ", columns.Select(c => $"CAST({Literal(ValueFor(r, c))} AS {SqlTypes.Of(c.Type)}) AS \"{c.Name}\"")));
                var sql = $"COPY ({string.Join(" UNION ALL ", selects)}) TO '{full}' (FORMAT parquet, KV_METADATA {{'forensics.table': '{table}', 'forensics.schema_version': '{version}'}})";
                using (var cmd = conn.CreateCommand())
                {
                    cmd.CommandText = sql;
                    cmd.ExecuteNonQuery();
                }
                files.Add(new ManifestFile { Path = rel, Rows = rows.Count, Bytes = new FileInfo(full).Length, Sha256 = RecordingLocator.Sha256Of(full) });
            }
            tables[table] = new ManifestTable { SchemaVersion = version, Rows = files.Sum(f => f.Rows), Files = files };
        }
        foreach (var (table, sql) in _raw)
        {
            var rel = $"{table}/node={Node}/seg-{900000 + _raw.IndexOf((table, sql)):D6}.parquet";
            var full = Path.Combine(Root, rel);
            Directory.CreateDirectory(Path.GetDirectoryName(full)!);
            using (var cmd = conn.CreateCommand())
            {
                cmd.CommandText = $"COPY ({sql}) TO '{full}' (FORMAT parquet)";
                cmd.ExecuteNonQuery();
            }
            long rows;
            using (var cmd = conn.CreateCommand())
            {
                cmd.CommandText = $"SELECT count(*) FROM read_parquet('{full}')";
                rows = Convert.ToInt64(cmd.ExecuteScalar(), CultureInfo.InvariantCulture);
            }
            if (!tables.TryGetValue(table, out var t))
                tables[table] = t = new ManifestTable { SchemaVersion = 1 };
            t.Files.Add(new ManifestFile { Path = rel, Rows = rows, Bytes = new FileInfo(full).Length, Sha256 = RecordingLocator.Sha256Of(full) });
            tables[table] = t with { Rows = t.Rows + rows };
        }
        var manifest = new Manifest
        {
            Format = Manifest.FormatName,
            ManifestVersion = 1,
            RecordingId = RecordingId,
            Node = Node,
            Host = new ManifestHost { Hostname = Node, Kernel = "6.18.0-test", Machine = "x86_64", BootId = "boot-1" },
            ToolVersion = "test",
            StartedAt = Start,
            EndedAt = Start.AddMinutes(1),
            StopReason = StopReason,
            MonotonicToUtcOffsetNs = Start.ToUnixTimeMilliseconds() * 1_000_000L,
            Config = new ManifestConfig { Kinds = [.. _segments.Keys], ExcludeCidrs = ExcludeCidrs, Snaplen = 128, Lab = "test" },
            Tables = tables,
            Loss = Loss,
            EventsLost = Loss.Values.Sum(l => l.Failed + l.UserspaceDropped),
        };
        File.WriteAllText(Path.Combine(Root, "manifest.json"), manifest.ToJson());
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

    private static string Literal(object? v) => v switch
    {
        null => "NULL",
        string s => SqlTypes.Literal(s),
        bool b => b ? "true" : "false",
        byte[] bytes => $"from_hex('{Convert.ToHexString(bytes)}')",
        DateTimeOffset t => $"TIMESTAMPTZ '{t.UtcDateTime:yyyy-MM-dd HH:mm:ss.fffffff}+00'",
        DateTime t => $"TIMESTAMPTZ '{t:yyyy-MM-dd HH:mm:ss.fffffff}+00'",
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => SqlTypes.Literal(v.ToString()),
    };

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
