using System.Globalization;
using System.Text.Json;
using Forensics.Tests;

namespace Forensics.Query.Tests;

/// <summary>query/drops/nat/connects/flow -f arrow and -f arrow-file, read back by apache-arrow (Node) and compared with -f csv.</summary>
public sealed class ArrowOutputTests : IDisposable
{
    private readonly TestRecording _rec = Lab.Build();
    private readonly string _dir = Directory.CreateTempSubdirectory("fxq-arrow-").FullName;

    public void Dispose()
    {
        _rec.Dispose();
        Directory.Delete(_dir, true);
    }

    private ArrowRead Arrow(string format, params string[] verbAndArgs)
    {
        var file = Path.Combine(_dir, Guid.NewGuid().ToString("N")[..8] + ".arrow");
        var r = CliRunner.Run([.. verbAndArgs, "--format", format, "--output", file]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal("", r.Stderr);
        var read = ArrowReader.ReadFile(file);
        Assert.Equal(format == "arrow-file" ? "file" : "stream", read.Format);
        return read;
    }

    private static List<string[]> Csv(string text)
    {
        // the cells this test compares hold no commas, quotes or newlines
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        return [.. lines.Select(l => l.Split(','))];
    }

    /// <summary>An Arrow cell as -f csv prints the same value.</summary>
    private static string AsCsv(JsonElement cell, ArrowField field)
    {
        var text = ArrowRead.Text(cell);
        if (text is null)
            return "";
        if (field.Type.StartsWith("timestamp[ns", StringComparison.Ordinal))
        {
            var ns = long.Parse(text, CultureInfo.InvariantCulture);
            return DateTimeOffset.UnixEpoch.AddTicks(ns / 100).UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.ffffff", CultureInfo.InvariantCulture) + "Z";
        }
        if (field.Type == "bool")
            return text == "true" ? "True" : "False";
        return text;
    }

    private static void AssertSameAsCsv(ArrowRead arrow, string csvText)
    {
        var csv = Csv(csvText);
        Assert.Equal(csv[0], arrow.Schema.Select(f => f.Name));
        var rows = arrow.Rows.ToList();
        Assert.True(rows.Count > 0);
        Assert.Equal(csv.Count - 1, rows.Count);
        for (var r = 0; r < rows.Count; r++)
            Assert.Equal(csv[r + 1], rows[r].Select((c, i) => AsCsv(c, arrow.Schema[i])));
    }

    [ArrowReaderFact]
    public void QueryArrow_EventView_ExactTypesAndTheValuesCsvPrints()
    {
        const string sql = "SELECT time, time_ns, exec_id, pid, \"binary\", netns_ino, pod, procfs, process_start FROM exec ORDER BY ktime_ns";
        var csv = CliRunner.Run("query", _rec.Root, sql, "--format", "csv");
        Assert.Equal(0, csv.ExitCode);
        foreach (var format in new[] { "arrow", "arrow-file" })
        {
            var arrow = Arrow(format, "query", _rec.Root, sql);
            Assert.Equal("timestamp[ns,UTC]", arrow.Schema[arrow.Column("time")].Type);
            Assert.Equal("uint64", arrow.Schema[arrow.Column("exec_id")].Type);
            Assert.Equal("uint32", arrow.Schema[arrow.Column("pid")].Type);
            Assert.Equal("int64", arrow.Schema[arrow.Column("time_ns")].Type);
            Assert.Equal(_rec.RecordingId, arrow.Metadata["forensics.recordings"]);
            AssertSameAsCsv(arrow, csv.Stdout);
            // the recording's time to the nanosecond (time_ns), where DuckDB's TIMESTAMPTZ keeps microseconds
            foreach (var row in arrow.Rows)
                Assert.Equal(ArrowRead.Text(row[arrow.Column("time_ns")]), ArrowRead.Text(row[arrow.Column("time")]));
        }
    }

    [ArrowReaderFact]
    public void QueryArrow_ArrowFile_StartsWithTheFileMagic()
    {
        var file = Path.Combine(_dir, "q.arrow");
        var r = CliRunner.Run("query", _rec.Root, "SELECT 1 AS n", "-f", "arrow-file", "-o", file);
        Assert.Equal(0, r.ExitCode);
        var bytes = File.ReadAllBytes(file);
        Assert.Equal("ARROW1"u8.ToArray(), bytes[..6]);
        Assert.Equal("ARROW1"u8.ToArray(), bytes[^6..]);
    }

    [ArrowReaderFact]
    public void QueryArrow_ManyRows_StreamedInBoundedBatches()
    {
        var arrow = Arrow("arrow", "query", _rec.Root, "SELECT range AS i, CAST(range AS UBIGINT) AS u FROM range(10000)");
        Assert.Equal(10000, arrow.Rows.Count());
        Assert.True(arrow.Batches.Count >= 4, $"{arrow.Batches.Count} batches");
        Assert.All(arrow.Batches, b => Assert.InRange(b.Rows.Count, 1, 2048));
        Assert.Equal("uint64", arrow.Schema[1].Type);
        Assert.Equal(Enumerable.Range(0, 10000).Select(i => i.ToString(CultureInfo.InvariantCulture)), arrow.Rows.Select(r => ArrowRead.Text(r[1])).Order(StringComparer.Ordinal).OrderBy(s => s!.Length).ThenBy(s => s, StringComparer.Ordinal));
    }

    [ArrowReaderFact]
    public void Reconstructions_Arrow_SameRowsAsCsv()
    {
        foreach (var verb in new[] { "drops", "nat", "connects" })
        {
            var csv = CliRunner.Run(verb, _rec.Root, "--format", "csv");
            Assert.Equal(0, csv.ExitCode);
            var arrow = Arrow("arrow", verb, _rec.Root);
            AssertSameAsCsv(arrow, csv.Stdout);
            Assert.Contains(arrow.Schema, f => f.Type == "timestamp[ns,UTC]");
        }
        var flow = Arrow("arrow-file", "flow", _rec.Root);
        Assert.Contains("first_seen", flow.Schema.Select(f => f.Name));
        Assert.NotEmpty(flow.Rows);
    }

    [Fact]
    public void QueryArrow_TwoStatementsOrTerminal_OneLineErrors()
    {
        var file = Path.Combine(_dir, "x.arrow");
        var two = CliRunner.Run("query", _rec.Root, "SELECT 1; SELECT 2", "-f", "arrow", "-o", file);
        Assert.Equal(1, two.ExitCode);
        Assert.Equal("error: Arrow output is one result: give one statement\n", two.Stderr);
        var bad = CliRunner.Run("query", _rec.Root, "SELECT 1", "-f", "arrows");
        Assert.Equal(2, bad.ExitCode);
        Assert.Equal("error: --format: 'arrows' is not one of table, csv, json, parquet, arrow, arrow-file\n", bad.Stderr);
    }
}
