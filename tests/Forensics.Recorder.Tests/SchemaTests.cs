using Forensics.Datapath.Abi;
using Forensics.Query.Schema;
using Forensics.Recorder.Batches;
using Forensics.Recorder.Storage;
using Forensics.Recorder.Tables;
using Forensics.Tests;

namespace Forensics.Recorder.Tests;

/// <summary>The writers produce exactly the schemas under schemas/: in code, and in the Parquet files DuckDB reads.</summary>
public class SchemaTests
{
    public static TheoryData<string> Tables() => [.. AllRows().Select(r => r.Batch.Table)];

    private static IEnumerable<Rows> AllRows()
    {
        for (var k = EventKind.Drop; k < EventKind.Max; k++)
            yield return Rows.For(k, 4)!;
        yield return new LossRows(4);
    }

    private static TableBatch BatchOf(string table) => AllRows().Single(r => r.Batch.Table == table).Batch;

    [Fact]
    public void EveryEventKind_HasATableWithASchema()
    {
        var tables = SchemaCatalog.Tables.ToHashSet();
        foreach (var r in AllRows())
            Assert.Contains(r.Batch.Table, tables);
    }

    [Theory]
    [MemberData(nameof(Tables))]
    public void Writer_DeclaredColumns_MatchSchemaFile(string table)
    {
        var schema = SchemaCatalog.Current(table);
        var batch = BatchOf(table);
        Assert.Equal(schema.Columns.Select(c => c.Name), batch.Columns.Select(c => c.Name));
        foreach (var (want, got) in schema.Columns.Zip(batch.Columns))
        {
            Assert.True(want.Type == Column.TypeName(got.Type), $"{table}.{want.Name}: schema {want.Type}, writer {Column.TypeName(got.Type)}");
            Assert.True(want.Nullable == got.Nullable, $"{table}.{want.Name}: schema nullable={want.Nullable}, writer {got.Nullable}");
            Assert.False(string.IsNullOrWhiteSpace(want.Doc), $"{table}.{want.Name} has no doc string");
        }
        var arrow = batch.ArrowSchema();
        Assert.Equal(schema.Columns.Select(c => c.Name), arrow.FieldsList.Select(f => f.Name));
    }

    private static readonly Dictionary<string, string> DuckTypes = new()
    {
        ["timestamp[ns,UTC]"] = "TIMESTAMP WITH TIME ZONE",
        ["uint8"] = "UTINYINT",
        ["uint16"] = "USMALLINT",
        ["uint32"] = "UINTEGER",
        ["uint64"] = "UBIGINT",
        ["int32"] = "INTEGER",
        ["int64"] = "BIGINT",
        ["bool"] = "BOOLEAN",
        ["utf8"] = "VARCHAR",
        ["binary"] = "BLOB",
    };

    [Theory]
    [MemberData(nameof(Tables))]
    public async Task SegmentWriter_WrittenFile_DuckDbSeesSchemaTypesAndMetadata(string table)
    {
        var dir = Directory.CreateTempSubdirectory("fx-schema-").FullName;
        try
        {
            var batch = BatchOf(table);
            FillOneRow(batch);
            var sealedFiles = new List<ManifestFile>();
            await using (var w = new SegmentWriter(dir, "n1", batch, "rec-1", sealedFiles.Add, TimeSpan.FromSeconds(1)))
            {
                await w.WriteAsync(batch);
                await w.SealAsync();
            }
            var file = Assert.Single(sealedFiles);
            Assert.Equal($"{table}/node=n1/seg-000001.parquet", file.Path);
            var path = Path.Combine(dir, file.Path);
            Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(path))), file.Sha256);

            var described = Duck.Query($"DESCRIBE SELECT * FROM read_parquet('{path}', hive_partitioning=false)");
            var schema = SchemaCatalog.Current(table);
            Assert.Equal(schema.Columns.Select(c => c.Name), described.Select(r => (string)r["column_name"]!));
            foreach (var (c, d) in schema.Columns.Zip(described))
                Assert.True(DuckTypes[c.Type] == (string)d["column_type"]!, $"{table}.{c.Name}: DuckDB sees {d["column_type"]}, schema says {c.Type}");
            var meta = Duck.Query($"SELECT decode(key) AS k, decode(value) AS v FROM parquet_kv_metadata('{path}')")
                .ToDictionary(r => (string)r["k"]!, r => (string)r["v"]!);
            Assert.Equal(table, meta["forensics.table"]);
            Assert.Equal(schema.Version.ToString(System.Globalization.CultureInfo.InvariantCulture), meta["forensics.schema_version"]);
            Assert.Equal(schema.Columns[0].Doc, meta["forensics.doc." + schema.Columns[0].Name]);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    private static void FillOneRow(TableBatch b)
    {
        int i = b.NextRow();
        foreach (var c in b.Columns)
        {
            switch (c)
            {
                case StringColumn s: s.Values[i] = "x"; break;
                case BinaryColumn bin: bin.Values[i] = [1, 2]; break;
                case Column<ulong> u when u.Valid is not null: u.Set(i, 1); break;
                case Column<int> n when n.Valid is not null: n.Set(i, 1); break;
            }
        }
    }
}

public class SnapshotSchemaTests
{
    public static TheoryData<string> Tables() => [.. SnapshotTables.Names];

    [Theory]
    [MemberData(nameof(Tables))]
    public void SnapshotWriter_DeclaredColumns_MatchSchemaFile(string table)
    {
        var empty = new Datapath.Control.DatapathSnapshot(DateTimeOffset.UtcNow, [], [], [], [], [], [], [], []);
        var batch = SnapshotTables.From(empty, "start").Single(b => b.Table == table);
        var schema = SchemaCatalog.Current(table);
        Assert.Equal(schema.Columns.Select(c => c.Name), batch.Columns.Select(c => c.Name));
        foreach (var (want, got) in schema.Columns.Zip(batch.Columns))
        {
            Assert.True(want.Type == Column.TypeName(got.Type), $"{table}.{want.Name}: schema {want.Type}, writer {Column.TypeName(got.Type)}");
            Assert.True(want.Nullable == got.Nullable, $"{table}.{want.Name}: schema nullable={want.Nullable}, writer {got.Nullable}");
        }
    }
}
