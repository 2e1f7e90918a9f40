using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using DuckDB.NET.Data;
using Forensics.Query.Schema;

namespace Forensics.Query.Tests.Bundles;

/// <summary>
/// Builds a recording on disk as the recorder lays it out (schemas/README.md): Parquet files
/// written by DuckDB with the columns of schemas/TABLE.v1.json, and a manifest with their sizes
/// and SHA-256. Uncompressed Parquet, so that a string in a row is visible in the file's bytes.
/// </summary>
internal sealed class TestRecording : IDisposable
{
    public const string Node = "node-a";

    private readonly Dictionary<string, List<(string Path, int Rows)>> _files = new(StringComparer.Ordinal);

    public TestRecording(string prefix = "fx-test-rec-")
    {
        Dir = Directory.CreateTempSubdirectory(prefix).FullName;
        RecordingId = Guid.NewGuid().ToString();
    }

    public string Dir { get; }

    public string RecordingId { get; }

    public JsonArray ExcludeCidrs { get; } = ["10.0.0.0/16"];

    /// <summary>Writes one segment of <paramref name="table"/>: each row gives some columns, the rest get defaults.</summary>
    public TestRecording Segment(string table, params Dictionary<string, object?>[] rows)
    {
        var schema = SchemaCatalog.Current(table);
        var list = _files.TryGetValue(table, out var l) ? l : _files[table] = [];
        var rel = $"{table}/node={Node}/seg-{list.Count + 1:000000}.parquet";
        var full = Path.Combine(Dir, rel);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        var cols = schema.Columns;
        var values = rows.Select(r => "(" + string.Join(", ", cols.Select(c => Literal(c.Type, r.TryGetValue(c.Name, out var v) ? v : Default(c.Type)))) + ")");
        var sql = $"COPY (SELECT * FROM (VALUES {string.Join(", ", values)}) t({string.Join(", ", cols.Select(c => "\"" + c.Name + "\""))})) " +
                  $"TO '{full}' (FORMAT parquet, COMPRESSION uncompressed, KV_METADATA {{'forensics.table': '{table}', 'forensics.schema_version': '{schema.Version}'}})";
        using var conn = new DuckDBConnection("DataSource=:memory:");
        conn.Open();
        using var cmd = conn.CreateCommand();
        cmd.CommandText = sql;
        cmd.ExecuteNonQuery();
        list.Add((rel, rows.Length));
        return this;
    }

    /// <summary>Writes a segment of a table that has no schema file yet (snapshot tables) from a SELECT.</summary>
    public TestRecording RawSegment(string table, string select, int rows)
    {
        var list = _files.TryGetValue(table, out var l) ? l : _files[table] = [];
        var rel = $"{table}/node={Node}/seg-{list.Count + 1:000000}.parquet";
        var full = Path.Combine(Dir, rel);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        using var conn = new DuckDBConnection("DataSource=:memory:");
        conn.Open();
        using var cmd = conn.CreateCommand();
        cmd.CommandText = $"COPY ({select}) TO '{full}' (FORMAT parquet, COMPRESSION uncompressed)";
        cmd.ExecuteNonQuery();
        list.Add((rel, rows));
        return this;
    }

    /// <summary>Writes manifest.json listing every segment with its size and hash.</summary>
    public TestRecording Seal()
    {
        var tables = new JsonObject();
        foreach (var (table, files) in _files.OrderBy(f => f.Key, StringComparer.Ordinal))
        {
            var arr = new JsonArray();
            foreach (var (rel, rows) in files)
            {
                var full = Path.Combine(Dir, rel);
                arr.Add(new JsonObject
                {
                    ["path"] = rel,
                    ["rows"] = rows,
                    ["bytes"] = new FileInfo(full).Length,
                    ["sha256"] = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(full))),
                });
            }
            tables[table] = new JsonObject { ["schema_version"] = 1, ["rows"] = files.Sum(f => f.Rows), ["files"] = arr };
        }
        var m = new JsonObject
        {
            ["format"] = "forensics-recording",
            ["manifest_version"] = 1,
            ["recording_id"] = RecordingId,
            ["node"] = Node,
            ["host"] = new JsonObject { ["hostname"] = Node, ["kernel"] = "6.18.0" },
            ["tool_version"] = "test",
            ["started_at"] = "2026-11-23T10:00:00Z",
            ["ended_at"] = "2026-11-23T10:05:00Z",
            ["stop_reason"] = "duration",
            ["config"] = new JsonObject { ["kinds"] = new JsonArray(_files.Keys.Select(k => (JsonNode)k).ToArray()), ["exclude_cidrs"] = ExcludeCidrs.DeepClone() },
            ["tables"] = tables,
            ["loss"] = new JsonObject(),
            ["events_lost"] = 0,
        };
        File.WriteAllText(Path.Combine(Dir, "manifest.json"), m.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
        return this;
    }

    /// <summary>A small recording with exec, connect, drop and loss rows.</summary>
    public static TestRecording Standard() => new TestRecording()
        .Segment("exec",
            Row(("pid", 100), ("binary", "/usr/bin/curl"), ("arguments", "-s http://203.0.113.7/"), ("comm", "curl")),
            Row(("pid", 101), ("binary", "/usr/bin/ls"), ("arguments", "-la /tmp"), ("comm", "ls")))
        .Segment("exec",
            Row(("pid", 102), ("binary", "/usr/bin/dig"), ("arguments", "@198.51.100.53 example.org"), ("comm", "dig")))
        .Segment("connect",
            Row(("pid", 100), ("src_ip", "10.0.1.5"), ("src_port", 40000), ("dst_ip", "203.0.113.7"), ("dst_port", 80), ("protocol", "tcp"), ("ip_version", 4)))
        .Segment("drop",
            Row(("src_ip", "10.0.1.5"), ("dst_ip", "10.0.2.9"), ("reason", 133), ("reason_name", "Policy denied"), ("protocol", "tcp"), ("ip_version", 4)),
            Row(("src_ip", "fd00::1:5"), ("dst_ip", "fd00::2:9"), ("reason", 133), ("reason_name", "Policy denied"), ("protocol", "tcp"), ("ip_version", 6)))
        .Segment("loss", Row(("kind", "drop"), ("emitted", 3)))
        .Seal();

    public static Dictionary<string, object?> Row(params (string Column, object? Value)[] values) =>
        values.ToDictionary(v => v.Column, v => v.Value, StringComparer.Ordinal);

    private static object? Default(string type) => type switch
    {
        "utf8" => "",
        "bool" => false,
        "binary" => Array.Empty<byte>(),
        "timestamp[ns,UTC]" => new DateTime(2026, 11, 23, 10, 0, 1, DateTimeKind.Utc),
        _ => 0,
    };

    private static string Literal(string type, object? v)
    {
        var sqlType = type switch
        {
            "timestamp[ns,UTC]" => "TIMESTAMP_NS",
            "uint8" => "UTINYINT",
            "uint16" => "USMALLINT",
            "uint32" => "UINTEGER",
            "uint64" => "UBIGINT",
            "int32" => "INTEGER",
            "int64" => "BIGINT",
            "bool" => "BOOLEAN",
            "utf8" => "VARCHAR",
            "binary" => "BLOB",
            _ => throw new ArgumentException(type),
        };
        var lit = v switch
        {
            null => "NULL",
            string s => "'" + s.Replace("'", "''", StringComparison.Ordinal) + "'",
            bool b => b ? "true" : "false",
            byte[] bytes => "'" + string.Concat(bytes.Select(x => "\\x" + x.ToString("X2", CultureInfo.InvariantCulture))) + "'",
            DateTime t => "'" + t.ToString("yyyy-MM-dd HH:mm:ss.fffffff", CultureInfo.InvariantCulture) + "'",
            IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
            _ => throw new ArgumentException(v.ToString()),
        };
        return $"CAST({lit} AS {sqlType})";
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Dir, true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>A bundle split into its tar entries, and rebuilt (canonically or not) for tamper tests.</summary>
internal sealed record RawEntry(string Name, long HeaderOffset, long DataOffset, byte[] Data);

internal static class RawTar
{
    public static List<RawEntry> Split(byte[] bundle)
    {
        var list = new List<RawEntry>();
        long pos = 0;
        while (pos + 512 <= bundle.Length && bundle.AsSpan((int)pos, 512).ContainsAnyExcept((byte)0))
        {
            var h = bundle.AsSpan((int)pos, 512);
            var name = Encoding.UTF8.GetString(h[..100]).TrimEnd('\0');
            var prefix = Encoding.UTF8.GetString(h.Slice(345, 155)).TrimEnd('\0');
            if (prefix.Length > 0)
            {
                name = prefix + "/" + name;
            }
            var size = Convert.ToInt64(Encoding.ASCII.GetString(h.Slice(124, 11)), 8);
            list.Add(new RawEntry(name, pos, pos + 512, bundle.AsSpan((int)pos + 512, (int)size).ToArray()));
            pos += 512 + size + (512 - size % 512) % 512;
        }
        return list;
    }

    public static long MTime(byte[] bundle) => Convert.ToInt64(Encoding.ASCII.GetString(bundle, 136, 11), 8);

    /// <summary>Writes entries with canonical bundle headers and the end-of-archive marker.</summary>
    public static byte[] Join(IEnumerable<(string Name, byte[] Data)> entries, long mtime)
    {
        var ms = new MemoryStream();
        foreach (var (name, data) in entries)
        {
            ms.Write(Forensics.Query.Bundles.Tar.Header(name, data.Length, mtime));
            ms.Write(data);
            ms.Write(new byte[(512 - data.Length % 512) % 512]);
        }
        ms.Write(new byte[1024]);
        return ms.ToArray();
    }

    /// <summary>A raw ustar header with any type, link and declared size, and a valid checksum.</summary>
    public static byte[] Header(string name, char type, long size, string link = "")
    {
        var h = new byte[512];
        Encoding.UTF8.GetBytes(name).CopyTo(h, 0);
        Encoding.ASCII.GetBytes("0000644").CopyTo(h, 100);
        Encoding.ASCII.GetBytes("0000000").CopyTo(h, 108);
        Encoding.ASCII.GetBytes("0000000").CopyTo(h, 116);
        Encoding.ASCII.GetBytes(Convert.ToString(size, 8).PadLeft(11, '0')).CopyTo(h, 124);
        Encoding.ASCII.GetBytes("00000000000").CopyTo(h, 136);
        h[156] = (byte)type;
        Encoding.UTF8.GetBytes(link).CopyTo(h, 157);
        Encoding.ASCII.GetBytes("ustar\0").CopyTo(h, 257);
        Encoding.ASCII.GetBytes("00").CopyTo(h, 263);
        var sum = 0;
        for (var i = 0; i < 512; i++)
        {
            sum += i is >= 148 and < 156 ? ' ' : h[i];
        }
        Encoding.ASCII.GetBytes(Convert.ToString(sum, 8).PadLeft(6, '0') + "\0 ").CopyTo(h, 148);
        return h;
    }
}
