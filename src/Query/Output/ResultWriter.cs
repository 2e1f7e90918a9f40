using System.Collections;
using System.Globalization;
using System.Text;
using System.Text.Json;
using DuckDB.NET.Data;
using Forensics.Query.Render;

namespace Forensics.Query.Output;

public enum OutputFormat { Table, Csv, Json, Parquet, Arrow, ArrowFile }

/// <summary>Writes a query result as an aligned table, CSV, JSON lines or Parquet.</summary>
public static class ResultWriter
{
    /// <summary>
    /// Runs <paramref name="sql"/> and writes its result: CSV and JSON lines are streamed row by
    /// row as DuckDB produces them; a table (aligned on the widest cell) and Parquet are held in
    /// memory, up to <see cref="QueryLimits.MaxRows"/> rows. <paramref name="outputFile"/> is
    /// created by <see cref="OutputTarget.CreateText"/> (mode 0600, never a link, never inside a recording).
    /// </summary>
    public static void Write(QuerySession session, string sql, OutputFormat format, TextWriter? console, string? outputFile)
    {
        ArgumentNullException.ThrowIfNull(session);
        if (format == OutputFormat.Parquet)
        {
            if (outputFile is null)
                throw new QueryException("--format parquet needs --output FILE");
            var result = session.Execute(sql);
            OutputTarget.EnsureWritable(outputFile, session.ProtectedPaths);
            WriteParquet(result, outputFile);
            return;
        }
        if (outputFile is not null)
            OutputTarget.EnsureWritable(outputFile, session.ProtectedPaths);
        if (format == OutputFormat.Table)
        {
            var result = session.Execute(sql);
            using var tableFile = outputFile is null ? null : OutputTarget.CreateText(outputFile, session.ProtectedPaths);
            var tw = (TextWriter?)tableFile ?? console ?? throw new ArgumentNullException(nameof(console));
            WriteTable(result, tw);
            tw.Flush();
            return;
        }
        using var file = outputFile is null ? null : OutputTarget.CreateText(outputFile, session.ProtectedPaths);
        var w = (TextWriter?)file ?? console ?? throw new ArgumentNullException(nameof(console));
        IReadOnlyList<string> columns = [];
        session.Stream(sql, (cols, _) =>
        {
            columns = cols;
            if (format == OutputFormat.Csv)
                w.WriteLine(string.Join(",", cols.Select(CsvQuote)));
        }, row =>
        {
            if (format == OutputFormat.Csv)
                w.WriteLine(string.Join(",", row.Select(v => CsvQuote(Cell(v)))));
            else
                w.WriteLine(JsonLine(columns, row));
        });
        w.Flush();
    }

    /// <summary>Writes an already materialized result to <paramref name="outputFile"/> (created 0600, never a link) or the console.</summary>
    public static void Write(QueryResult result, OutputFormat format, TextWriter? console, string? outputFile, IEnumerable<string> protectedPaths)
    {
        ArgumentNullException.ThrowIfNull(result);
        if (format is OutputFormat.Arrow or OutputFormat.ArrowFile)
            throw new QueryException("Arrow output streams from the query: use ArrowResultWriter");
        if (format == OutputFormat.Parquet)
        {
            if (outputFile is null)
                throw new QueryException("--format parquet needs --output FILE");
            OutputTarget.EnsureWritable(outputFile, protectedPaths);
            WriteParquet(result, outputFile);
            return;
        }
        using var file = outputFile is null ? null : OutputTarget.CreateText(outputFile, protectedPaths);
        Write(result, format, (TextWriter?)file ?? console ?? throw new ArgumentNullException(nameof(console)));
    }

    /// <summary>Writes an already materialized result (the interactive prompt, tests).</summary>
    public static void Write(QueryResult result, OutputFormat format, TextWriter w)
    {
        ArgumentNullException.ThrowIfNull(result);
        ArgumentNullException.ThrowIfNull(w);
        switch (format)
        {
            case OutputFormat.Csv: WriteCsv(result, w); break;
            case OutputFormat.Json: WriteJson(result, w); break;
            default: WriteTable(result, w); break;
        }
        w.Flush();
    }

    public static string Cell(object? v) => v switch
    {
        null => "",
        byte[] b => Convert.ToHexStringLower(b),
        DateTime or DateTimeOffset => LineRenderer.FormatTime(v),
        string s => s,
        IEnumerable e => string.Join("; ", e.Cast<object?>().Select(Cell)),
        _ => Convert.ToString(v, CultureInfo.InvariantCulture) ?? "",
    };

    public static void WriteTable(QueryResult r, TextWriter w)
    {
        ArgumentNullException.ThrowIfNull(r);
        ArgumentNullException.ThrowIfNull(w);
        var cells = r.Rows.Select(row => row.Select(v => Cell(v).ReplaceLineEndings(" ")).ToArray()).ToList();
        var widths = r.Columns.Select((c, i) => Math.Max(c.Length, cells.Count == 0 ? 0 : cells.Max(row => row[i].Length))).ToArray();
        var numeric = r.Types.Select(t => t.Contains("Int", StringComparison.Ordinal) || t is "Double" or "Float" or "Decimal").ToArray();
        string Line(IReadOnlyList<string> values) => string.Join("  ", values.Select((v, i) => numeric[i] ? v.PadLeft(widths[i]) : v.PadRight(widths[i]))).TrimEnd();
        w.WriteLine(Line(r.Columns));
        w.WriteLine(string.Join("  ", widths.Select(x => new string('-', x))));
        foreach (var row in cells)
            w.WriteLine(Line(row));
        w.WriteLine($"({r.Rows.Count} row{(r.Rows.Count == 1 ? "" : "s")})");
    }

    public static void WriteCsv(QueryResult r, TextWriter w)
    {
        ArgumentNullException.ThrowIfNull(r);
        ArgumentNullException.ThrowIfNull(w);
        w.WriteLine(string.Join(",", r.Columns.Select(CsvQuote)));
        foreach (var row in r.Rows)
            w.WriteLine(string.Join(",", row.Select(v => CsvQuote(Cell(v)))));
    }

    private static string CsvQuote(string s) => s.IndexOfAny([',', '"', '\n', '\r']) >= 0 ? "\"" + s.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"" : s;

    /// <summary>JSON lines: one object per row.</summary>
    public static void WriteJson(QueryResult r, TextWriter w)
    {
        ArgumentNullException.ThrowIfNull(r);
        ArgumentNullException.ThrowIfNull(w);
        foreach (var row in r.Rows)
            w.WriteLine(JsonLine(r.Columns, row));
    }

    private static string JsonLine(IReadOnlyList<string> columns, object?[] row)
    {
        using var ms = new MemoryStream();
        using (var jw = new Utf8JsonWriter(ms, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            jw.WriteStartObject();
            for (var i = 0; i < columns.Count; i++)
            {
                jw.WritePropertyName(columns[i]);
                LineRenderer.JsonValue(jw, row[i]);
            }
            jw.WriteEndObject();
        }
        return Encoding.UTF8.GetString(ms.ToArray());
    }

    /// <summary>
    /// Parquet through a second, empty in-memory DuckDB: the locked session cannot
    /// write files, so the rows are handed over as parameters and copied out from there.
    /// </summary>
    public static void WriteParquet(QueryResult r, string file)
    {
        ArgumentNullException.ThrowIfNull(r);
        var types = r.Types.Select(SqlTypeOf).ToArray();
        using var conn = new DuckDBConnection("DataSource=:memory:");
        conn.Open();
        using (var create = conn.CreateCommand())
        {
            create.CommandText = $"CREATE TABLE result ({string.Join(", ", r.Columns.Select((c, i) => $"{Schema.SqlTypes.Ident(c)} {types[i]}"))})";
            create.ExecuteNonQuery();
        }
        using (var insert = conn.CreateCommand())
        {
            insert.CommandText = $"INSERT INTO result VALUES ({string.Join(", ", r.Columns.Select((_, i) => $"CAST(${i + 1} AS {types[i]})"))})";
            foreach (var row in r.Rows)
            {
                insert.Parameters.Clear();
                for (var i = 0; i < row.Length; i++)
                    insert.Parameters.Add(new DuckDBParameter { Value = ParamValue(row[i], types[i]) ?? DBNull.Value });
                insert.ExecuteNonQuery();
            }
        }
        // DuckDB writes a new file next to the target (mode 0600 by OutputTarget), then it replaces the target.
        var full = Path.GetFullPath(file);
        var tmp = OutputTarget.TemporaryNextTo(full);
        try
        {
            using (var copy = conn.CreateCommand())
            {
                copy.CommandText = $"COPY result TO {Schema.SqlTypes.Literal(tmp)} (FORMAT parquet, USE_TMP_FILE false)";
                copy.ExecuteNonQuery();
            }
            OutputTarget.Restrict(tmp);
            File.Move(tmp, full, overwrite: true);
        }
        finally
        {
            File.Delete(tmp);
        }
    }

    private static object? ParamValue(object? v, string type) => v switch
    {
        null => null,
        byte[] => v,
        DateTime d => DateTime.SpecifyKind(d, DateTimeKind.Utc),
        _ when type == "VARCHAR" => Cell(v),
        System.Numerics.BigInteger bi => bi.ToString(CultureInfo.InvariantCulture),
        _ => v,
    };

    private static string SqlTypeOf(string duckType) => duckType switch
    {
        "Boolean" => "BOOLEAN",
        "TinyInt" => "TINYINT",
        "SmallInt" => "SMALLINT",
        "Integer" => "INTEGER",
        "BigInt" => "BIGINT",
        "UnsignedTinyInt" => "UTINYINT",
        "UnsignedSmallInt" => "USMALLINT",
        "UnsignedInteger" => "UINTEGER",
        "UnsignedBigInt" => "UBIGINT",
        "Float" => "FLOAT",
        "Double" => "DOUBLE",
        "Timestamp" or "TimestampNs" or "TimestampMs" or "TimestampS" => "TIMESTAMP",
        "TimestampTz" => "TIMESTAMPTZ",
        "Blob" => "BLOB",
        _ => "VARCHAR",
    };
}
