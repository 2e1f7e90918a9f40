using System.Text.Json;
using DuckDB.NET.Data;

namespace Forensics.Query;

/// <summary>
/// Lets only queries run on a recording. DuckDB's allowed_paths, which let the
/// views read the recording's files after external access is switched off,
/// also let a COPY write them (USE_TMP_FILE false); so before anything runs, the
/// SQL is parsed by DuckDB's own parser (<c>json_serialize_sql</c>, which serializes
/// SELECT statements only) and anything but a query (SELECT, FROM, WITH, VALUES,
/// DESCRIBE, SHOW, SUMMARIZE: all parse to a SELECT) is refused: COPY, EXPORT, ATTACH,
/// INSTALL/LOAD, SET, CREATE, INSERT, CALL, EXPLAIN (ANALYZE runs its statement), PRAGMA.
///
/// A query can still call a table function, and some of those act rather than read
/// (<c>FROM enable_logging(storage := 'file', ...)</c> aborted the process,
/// <c>checkpoint()</c>, <c>enable_profiling()</c>, <c>query('...')</c> runs any SQL). So
/// every table function a statement names (found in the same parse tree) must be on a
/// list of functions that only read: series, unnest, the catalog functions, Parquet
/// metadata, JSON, and the session's own table macros. A new DuckDB function is refused
/// until it is put on the list. Nothing is bound before the check: binding a table
/// function already runs its code.
/// </summary>
internal static class SqlGuard
{
    /// <summary>Table functions that only compute or read what the session may already read.</summary>
    public static readonly IReadOnlySet<string> ReadOnlyTableFunctions = new HashSet<string>(StringComparer.Ordinal)
    {
        "range", "generate_series", "unnest",
        "duckdb_columns", "duckdb_constraints", "duckdb_databases", "duckdb_dependencies", "duckdb_functions",
        "duckdb_indexes", "duckdb_keywords", "duckdb_schemas", "duckdb_sequences", "duckdb_tables", "duckdb_types",
        "duckdb_views", "pragma_table_info", "pragma_show", "pragma_storage_info",
        // Reading the recording's own files (allowed_paths admits nothing else).
        "read_parquet", "parquet_scan", "parquet_metadata", "parquet_schema", "parquet_file_metadata", "parquet_kv_metadata",
        "json_each", "json_tree",
    };

    /// <summary>The read-only list plus the table macros the session itself defined (views.sql).</summary>
    public static IReadOnlySet<string> AllowedTableFunctions(DuckDBConnection conn)
    {
        ArgumentNullException.ThrowIfNull(conn);
        var allowed = new HashSet<string>(ReadOnlyTableFunctions, StringComparer.Ordinal);
        using var cmd = conn.CreateCommand();
        cmd.CommandText = "SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type = 'table_macro' AND NOT internal";
        using var reader = cmd.ExecuteReader();
        while (reader.Read())
            allowed.Add(reader.GetString(0).ToLowerInvariant());
        return allowed;
    }

    /// <summary>Refuses anything but queries and any table function not on the list; returns the number of statements.</summary>
    public static int Check(DuckDBConnection conn, string sql, IReadOnlySet<string> allowedTableFunctions)
    {
        ArgumentNullException.ThrowIfNull(conn);
        ArgumentNullException.ThrowIfNull(allowedTableFunctions);
        var parsed = Parse(conn, sql);
        if (parsed.NotAQuery)
            throw new QueryException("a statement is not a query: a recording is opened read-only, only SELECT, FROM, WITH, VALUES, DESCRIBE, SHOW and SUMMARIZE run");
        if (parsed.Error is not null)
            throw new QueryException(parsed.Error);
        if (parsed.Statements == 0)
            throw new QueryException("no statement");
        foreach (var name in parsed.TableFunctions)
        {
            if (!allowedTableFunctions.Contains(name))
                throw new QueryException($"table function {name}() is not allowed: a recording is opened read-only, and only table functions that read are ({string.Join(", ", ReadOnlyTableFunctions.Order(StringComparer.Ordinal))}, and the views' macros)");
        }
        return parsed.Statements;
    }

    /// <summary>What DuckDB's parser makes of some SQL: its statements, the table functions they name, or why it refuses it.</summary>
    internal sealed record Parsed(int Statements, IReadOnlyList<string> TableFunctions, bool NotAQuery, string? Error);

    /// <summary>
    /// Every table function the SQL names, lower case, from DuckDB's parse tree (<c>json_serialize_sql</c>);
    /// it serializes only SELECT statements, so any other statement makes it refuse the whole text.
    /// </summary>
    internal static Parsed Parse(DuckDBConnection conn, string sql)
    {
        string json;
        using (var cmd = conn.CreateCommand())
        {
            cmd.CommandText = "SELECT json_serialize_sql(CAST($1 AS VARCHAR))";
            cmd.Parameters.Add(new DuckDBParameter { Value = sql });
            json = cmd.ExecuteScalar() as string ?? throw new QueryException("cannot parse the statement");
        }
        using var doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 4096 });
        if (doc.RootElement.TryGetProperty("error", out var err) && err.ValueKind == JsonValueKind.True)
        {
            var message = doc.RootElement.TryGetProperty("error_message", out var m) ? m.GetString() : null;
            var type = doc.RootElement.TryGetProperty("error_type", out var t) ? t.GetString() : null;
            // DuckDB: "Only SELECT statements can be serialized to json!" (error_type "not implemented").
            var notAQuery = type == "not implemented" && message is not null && message.Contains("Only SELECT", StringComparison.Ordinal);
            // As DuckDB words its exceptions: "Parser Error: syntax error at or near ...".
            var shown = type is { Length: > 0 } ? $"{char.ToUpperInvariant(type[0])}{type[1..]} Error: {message}" : message;
            return new Parsed(0, [], notAQuery, QuerySession.OneLine(shown ?? "the statement does not parse"));
        }
        var statements = doc.RootElement.TryGetProperty("statements", out var st) && st.ValueKind == JsonValueKind.Array ? st.GetArrayLength() : 0;
        var names = new List<string>();
        Walk(doc.RootElement, names);
        return new Parsed(statements, names, false, null);
    }

    private static void Walk(JsonElement e, List<string> names)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
                if (e.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String && t.GetString() == "TABLE_FUNCTION")
                {
                    var name = e.TryGetProperty("function", out var f) && f.ValueKind == JsonValueKind.Object
                        && f.TryGetProperty("function_name", out var n) && n.ValueKind == JsonValueKind.String
                        ? n.GetString()! : "(unnamed)";
                    names.Add(name.ToLowerInvariant());
                }
                foreach (var p in e.EnumerateObject())
                    Walk(p.Value, names);
                break;
            case JsonValueKind.Array:
                foreach (var x in e.EnumerateArray())
                    Walk(x, names);
                break;
        }
    }
}
