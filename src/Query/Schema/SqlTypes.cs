namespace Forensics.Query.Schema;

/// <summary>How the schemas' Arrow types appear in DuckDB.</summary>
public static class SqlTypes
{
    public static string Of(string arrowType) => arrowType switch
    {
        "uint8" => "UTINYINT",
        "uint16" => "USMALLINT",
        "uint32" => "UINTEGER",
        "uint64" => "UBIGINT",
        "int8" => "TINYINT",
        "int16" => "SMALLINT",
        "int32" => "INTEGER",
        "int64" => "BIGINT",
        "bool" => "BOOLEAN",
        "utf8" => "VARCHAR",
        "binary" => "BLOB",
        "double" => "DOUBLE",
        "float" => "FLOAT",
        _ when arrowType.StartsWith("timestamp", StringComparison.Ordinal) => "TIMESTAMPTZ",
        _ => throw new NotSupportedException($"schema type {arrowType}"),
    };

    /// <summary>A SQL string literal.</summary>
    public static string Literal(string? s) => s is null ? "NULL" : "'" + s.Replace("'", "''", StringComparison.Ordinal) + "'";

    /// <summary>A quoted SQL identifier.</summary>
    public static string Ident(string s) => "\"" + s.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";
}
