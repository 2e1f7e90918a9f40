using System.Runtime.InteropServices;
using System.Text.Json;
using DuckDB.NET.Data;
using DuckDB.NET.Native;

namespace Forensics.Query;

/// <summary>
/// Lets only queries run on a recording. DuckDB's allowed_paths, which let the
/// views read the recording's files after external access is switched off,
/// also let a COPY write them (USE_TMP_FILE false); so before a statement
/// runs, each one is parsed and prepared, and anything but a query (SELECT,
/// FROM, WITH, VALUES, DESCRIBE, SHOW, SUMMARIZE) is refused: COPY, EXPORT,
/// ATTACH, INSTALL/LOAD, SET, CREATE, INSERT, CALL, EXPLAIN (ANALYZE runs its
/// statement), PRAGMA that are not queries.
///
/// A query can still call a table function, and some of those act rather than read
/// (<c>FROM enable_logging(storage := 'file', ...)</c> aborted the process,
/// <c>checkpoint()</c>, <c>enable_profiling()</c>, <c>query('...')</c> runs any SQL). So
/// every table function a statement names (found in DuckDB's own parse tree,
/// <c>json_serialize_sql</c>) must be on a list of functions that only read: series,
/// unnest, the catalog functions, Parquet metadata, JSON, and the session's own table
/// macros. A new DuckDB function is refused until it is put on the list.
/// </summary>
internal static class SqlGuard
{
    // duckdb.h: DUCKDB_STATEMENT_TYPE_SELECT
    private const int StatementTypeSelect = 1;

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
        // Parsed first, bound second: binding a table function already runs its code.
        var names = TableFunctions(conn, sql, out var unparsed);
        foreach (var name in names)
        {
            if (!allowedTableFunctions.Contains(name))
                throw new QueryException($"table function {name}() is not allowed: a recording is opened read-only, and only table functions that read are ({string.Join(", ", ReadOnlyTableFunctions.Order(StringComparer.Ordinal))}, and the views' macros)");
        }
        var count = NativeMethods.ExtractStatements.DuckDBExtractStatements(conn.NativeConnection, sql, out var extracted);
        using (extracted)
        {
            if (count <= 0)
                throw new QueryException(QuerySession.OneLine(NativeMethods.ExtractStatements.DuckDBExtractStatementsError(extracted) ?? "no statement"));
            for (var i = 0; i < count; i++)
            {
                var state = NativeMethods.ExtractStatements.DuckDBPrepareExtractedStatement(conn.NativeConnection, extracted, i, out var prepared);
                using (prepared)
                {
                    if (state != DuckDBState.Success)
                        throw new QueryException(QuerySession.OneLine(NativeMethods.PreparedStatements.DuckDBPrepareError(prepared) ?? "cannot prepare the statement"));
                    var type = DuckDbNative.duckdb_prepared_statement_type(prepared.DangerousGetHandle());
                    if (type != StatementTypeSelect)
                        throw new QueryException($"statement {i + 1} is not a query: a recording is opened read-only, only SELECT, FROM, WITH, VALUES, DESCRIBE, SHOW and SUMMARIZE run");
                }
            }
        }
        if (unparsed is not null)
            throw new QueryException("cannot check the statement's table functions: " + unparsed);
        return (int)count;
    }

    /// <summary>
    /// Every table function the SQL names, lower case, from DuckDB's parse tree; when DuckDB cannot
    /// serialize the tree (a statement that is not a SELECT, a syntax error), none and the reason.
    /// </summary>
    internal static IReadOnlyList<string> TableFunctions(DuckDBConnection conn, string sql, out string? unparsed)
    {
        unparsed = null;
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
            unparsed = QuerySession.OneLine(message ?? "it does not parse");
            return [];
        }
        var names = new List<string>();
        Walk(doc.RootElement, names);
        return names;
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

    private static class DuckDbNative
    {
        [DllImport("duckdb", CallingConvention = CallingConvention.Cdecl)]
        [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
        public static extern int duckdb_prepared_statement_type(IntPtr statement);
    }
}
