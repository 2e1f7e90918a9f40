using System.Text;
using Forensics.Format;
using Forensics.Recorder.Batches;
using Forensics.Recorder.Storage;

namespace Forensics.Query.Tests.Bundles;

/// <summary>
/// Builds a recording on disk with the recorder's own writers (<see cref="TableBatch"/> with the columns
/// of schemas/TABLE.vN.json, <see cref="SegmentWriter"/>, <see cref="ManifestStore"/>). Uncompressed
/// Parquet, so that a string in a row is visible in the file's bytes.
/// </summary>
internal sealed class TestRecording : IDisposable
{
    public const string Node = "node-a";

    private readonly Manifest _manifest;
    private readonly Dictionary<string, int> _segments = new(StringComparer.Ordinal);

    public TestRecording(string prefix = "fx-test-rec-")
    {
        Dir = Directory.CreateTempSubdirectory(prefix).FullName;
        RecordingId = Guid.NewGuid().ToString();
        _manifest = new Manifest
        {
            RecordingId = RecordingId,
            Node = Node,
            Host = new ManifestHost { Hostname = Node, Kernel = "6.18.0" },
            ToolVersion = "test",
            StartedAt = new DateTimeOffset(2026, 11, 23, 10, 0, 0, TimeSpan.Zero),
            EndedAt = new DateTimeOffset(2026, 11, 23, 10, 5, 0, TimeSpan.Zero),
            StopReason = "duration",
        };
    }

    public string Dir { get; }

    public string RecordingId { get; }

    public List<string> ExcludeCidrs { get; } = ["10.0.0.0/16"];

    /// <summary>Writes one segment of <paramref name="table"/>: each row gives some columns, the rest get defaults.</summary>
    public TestRecording Segment(string table, params Dictionary<string, object?>[] rows)
    {
        var schema = SchemaCatalog.Current(table);
        var batch = TableBatch.ForSchema(schema, Math.Max(1, rows.Length));
        foreach (var r in rows)
        {
            if (r.Keys.FirstOrDefault(k => schema.Columns.All(c => c.Name != k)) is { } unknown)
                throw new ArgumentException($"{table} has no column {unknown}");
            var i = batch.NextRow();
            foreach (var c in schema.Columns)
                batch.Set(i, c.Name, r.TryGetValue(c.Name, out var v) ? v : c.Nullable ? null : Default(c.Type));
        }
        var n = _segments[table] = _segments.GetValueOrDefault(table) + 1;
        var writer = new SegmentWriter(Dir, Node, batch, RecordingId, f => _manifest.AddFile(table, schema.Version, f),
            TimeSpan.FromHours(1), nextSegment: () => n, compress: false);
        writer.WriteAsync(batch).GetAwaiter().GetResult();
        writer.SealAsync().GetAwaiter().GetResult();
        writer.DisposeAsync().AsTask().GetAwaiter().GetResult();
        return this;
    }

    /// <summary>Writes manifest.json listing every segment with its size and hash.</summary>
    public TestRecording Seal()
    {
        _manifest.Config = new ManifestConfig { Kinds = [.. _segments.Keys], ExcludeCidrs = [.. ExcludeCidrs] };
        ManifestStore.Write(_manifest, Dir);
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
