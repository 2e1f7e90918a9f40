using DuckDB.NET.Data;

namespace Forensics.Tests;

/// <summary>Reads Parquet files with DuckDB in tests: what any user of a recording would do.</summary>
public static class Duck
{
    public static List<Dictionary<string, object?>> Query(string sql)
    {
        using var con = new DuckDBConnection("DataSource=:memory:");
        con.Open();
        using var cmd = con.CreateCommand();
        cmd.CommandText = sql;
        using var r = cmd.ExecuteReader();
        var rows = new List<Dictionary<string, object?>>();
        while (r.Read())
        {
            var row = new Dictionary<string, object?>();
            for (int i = 0; i < r.FieldCount; i++)
                row[r.GetName(i)] = r.IsDBNull(i) ? null : r.GetValue(i);
            rows.Add(row);
        }
        return rows;
    }

    /// <summary>Every row of a table of a recording (all its segments).</summary>
    public static List<Dictionary<string, object?>> Table(string recording, string table, string where = "true") =>
        Directory.Exists(Path.Combine(recording, table))
            ? Query($"SELECT * FROM read_parquet('{recording}/{table}/*/*.parquet', hive_partitioning=true) WHERE {where}")
            : [];

    public static long Scalar(string sql) => Convert.ToInt64(Query(sql)[0].Values.First(), System.Globalization.CultureInfo.InvariantCulture);
}
