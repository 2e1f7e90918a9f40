using System.Text.Json;
using System.Text.Json.Serialization;

namespace Forensics.Query.Schema;

/// <summary>One column of a table schema (schemas/TABLE.vN.json).</summary>
public sealed record ColumnSchema(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("type")] string Type,
    [property: JsonPropertyName("nullable")] bool Nullable,
    [property: JsonPropertyName("doc")] string Doc);

/// <summary>A versioned table schema: the storage truth for one table.</summary>
public sealed record TableSchema(
    [property: JsonPropertyName("table")] string Table,
    [property: JsonPropertyName("version")] int Version,
    [property: JsonPropertyName("doc")] string Doc,
    [property: JsonPropertyName("columns")] IReadOnlyList<ColumnSchema> Columns);

/// <summary>
/// The schemas under schemas/, embedded in this assembly. A released version
/// never changes; a change makes a new version file, and readers accept every
/// version still listed here.
/// </summary>
public static class SchemaCatalog
{
    private static readonly Lazy<IReadOnlyList<TableSchema>> All = new(Load);

    /// <summary>Every schema of every version.</summary>
    public static IReadOnlyList<TableSchema> Schemas => All.Value;

    /// <summary>The newest version of a table's schema.</summary>
    public static TableSchema Current(string table) =>
        Schemas.Where(s => s.Table == table).MaxBy(s => s.Version)
        ?? throw new KeyNotFoundException($"no schema for table {table}");

    /// <summary>The version a recording of this tool writes.</summary>
    public static int CurrentVersion(string table) => Current(table).Version;

    public static IEnumerable<string> Tables => Schemas.Select(s => s.Table).Distinct().Order(StringComparer.Ordinal);

    private static List<TableSchema> Load()
    {
        var asm = typeof(SchemaCatalog).Assembly;
        var list = new List<TableSchema>();
        foreach (var name in asm.GetManifestResourceNames().Where(n => n.StartsWith("schemas/", StringComparison.Ordinal) && !n.EndsWith(".schema.json", StringComparison.Ordinal)))
        {
            using var s = asm.GetManifestResourceStream(name)!;
            var schema = JsonSerializer.Deserialize<TableSchema>(s)
                ?? throw new InvalidDataException($"{name}: empty schema");
            if (!string.IsNullOrEmpty(schema.Table) && schema.Columns is not null)
                list.Add(schema); // manifest.v1.schema.json is not a table schema
        }
        return list;
    }
}
