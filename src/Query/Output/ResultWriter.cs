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
    public static void Write(QueryResult result, OutputFormat format, TextWriter? console, string? outputFile)
    {
        ArgumentNullException.ThrowIfNull(result);
        if (format is OutputFormat.Arrow or OutputFormat.ArrowFile)
            throw new QueryException("Arrow output streams from the query: use ArrowResultWriter");
        if (format == OutputFormat.Parquet)
        {
            if (outputFile is null)
                throw new QueryException("--format parquet needs --output FILE");
            WriteParquet(result, outputFile);
            return;
        }
        using var file = outputFile is null ? null : new StreamWriter(outputFile, false, new UTF8Encoding(false));
        var w = (TextWriter?)file ?? console ?? throw new ArgumentNullException(nameof(console));
        switch (format)
        {
            case OutputFormat.Table: WriteTable(result, w); break;
            case OutputFormat.Csv: WriteCsv(result, w); break;
            case OutputFormat.Json: WriteJson(result, w); break;
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
        static string Q(string s) => s.IndexOfAny([',', '"', '\n', '\r']) >= 0 ? "\"" + s.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"" : s;
        w.WriteLine(string.Join(",", r.Columns.Select(Q)));
        foreach (var row in r.Rows)
            w.WriteLine(string.Join(",", row.Select(v => Q(Cell(v)))));
    }

    /// <summary>JSON lines: one object per row.</summary>
    public static void WriteJson(QueryResult r, TextWriter w)
    {
        ArgumentNullException.ThrowIfNull(r);
        ArgumentNullException.ThrowIfNull(w);
        foreach (var row in r.Rows)
        {
            using var ms = new MemoryStream();
            using (var jw = new Utf8JsonWriter(ms, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
            {
                jw.WriteStartObject();
                for (var i = 0; i < r.Columns.Count; i++)
                {
                    jw.WritePropertyName(r.Columns[i]);
                    LineRenderer.JsonValue(jw, row[i]);
                }
                jw.WriteEndObject();
            }
            w.WriteLine(Encoding.UTF8.GetString(ms.ToArray()));
        }
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
        using var copy = conn.CreateCommand();
        copy.CommandText = $"COPY result TO {Schema.SqlTypes.Literal(Path.GetFullPath(file))} (FORMAT parquet)";
        copy.ExecuteNonQuery();
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
