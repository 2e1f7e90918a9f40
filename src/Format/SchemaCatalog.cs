using System.Text.Json;
using System.Text.Json.Serialization;

namespace Forensics.Format;

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

    /// <summary>Whether the table has a schema file.</summary>
    public static bool Has(string table) => Schemas.Any(s => s.Table == table);

    /// <summary>The newest version of a table's schema.</summary>
    public static TableSchema Current(string table) =>
        Schemas.Where(s => s.Table == table).MaxBy(s => s.Version)
        ?? throw new KeyNotFoundException($"no schema for table {table}");

    /// <summary>The version a recording of this tool writes.</summary>
    public static int CurrentVersion(string table) => Current(table).Version;

    /// <summary>The version a table's segments are written in; 0 for a table without a schema file.</summary>
    public static int VersionOf(string table) => Has(table) ? CurrentVersion(table) : 0;

    /// <summary>The versions of a table this tool reads.</summary>
    public static IEnumerable<int> Versions(string table) => Schemas.Where(s => s.Table == table).Select(s => s.Version).Order();

    public static IEnumerable<string> Tables => Schemas.Select(s => s.Table).Distinct().Order(StringComparer.Ordinal);

    private static List<TableSchema> Load()
    {
        var asm = typeof(SchemaCatalog).Assembly;
        var list = new List<TableSchema>();
        foreach (var name in asm.GetManifestResourceNames().Where(n => n.StartsWith("schemas/", StringComparison.Ordinal)
            && n.EndsWith(".json", StringComparison.Ordinal) && !n.EndsWith(".schema.json", StringComparison.Ordinal)))
        {
            using var s = asm.GetManifestResourceStream(name)!;
            var schema = JsonSerializer.Deserialize<TableSchema>(s)
                ?? throw new InvalidDataException($"{name}: empty schema");
            if (!string.IsNullOrEmpty(schema.Table) && schema.Columns is not null)
                list.Add(schema);
        }
        return list;
    }

    /// <summary>An embedded file of schemas/ (the manifest's JSON Schemas, drop_reasons.csv).</summary>
    public static string Resource(string name)
    {
        using var s = typeof(SchemaCatalog).Assembly.GetManifestResourceStream("schemas/" + name)
            ?? throw new InvalidOperationException($"schemas/{name} is not embedded");
        using var r = new StreamReader(s);
        return r.ReadToEnd();
    }
}
