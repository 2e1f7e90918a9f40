using System.Runtime.InteropServices;
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
/// </summary>
internal static class SqlGuard
{
    // duckdb.h: DUCKDB_STATEMENT_TYPE_SELECT
    private const int StatementTypeSelect = 1;

    /// <summary>Refuses anything but queries; returns the number of statements.</summary>
    public static int Check(DuckDBConnection conn, string sql)
    {
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
            return (int)count;
        }
    }

    private static class DuckDbNative
    {
        [DllImport("duckdb", CallingConvention = CallingConvention.Cdecl)]
        [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
        public static extern int duckdb_prepared_statement_type(IntPtr statement);
    }
}
