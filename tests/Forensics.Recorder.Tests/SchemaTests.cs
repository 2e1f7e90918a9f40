using System.Globalization;
using Forensics.Datapath.Abi;
using Forensics.Format;
using Forensics.Recorder.Batches;
using Forensics.Recorder.Storage;
using Forensics.Recorder.Tables;
using Forensics.Tests;

namespace Forensics.Recorder.Tests;

/// <summary>The writers produce exactly the schemas under schemas/: in code, and in the Parquet files DuckDB reads.</summary>
public class SchemaTests
{
    public static TheoryData<string> Tables() => [.. AllRows().Select(r => r.Batch.Table)];

    private static IEnumerable<Rows> AllRows(int capacity = 4)
    {
        for (var k = EventKind.Drop; k < EventKind.Max; k++)
            yield return Rows.For(k, capacity)!;
        yield return new LossRows(capacity);
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

    [Theory]
    [MemberData(nameof(Tables))]
    public async Task SegmentWriter_EveryValue_ReadsBackThroughDuckDb(string table)
    {
        // three row groups of varied values, extremes included (delta-encoded 64-bit columns, dictionary
        // strings with nulls, nanosecond timestamps), the third with every nullable string and binary
        // null (the Hubble-shaped columns of our own events): what DuckDB reads is what the batches held
        var dir = Directory.CreateTempSubdirectory("fx-values-").FullName;
        try
        {
            var expected = new List<string[]>();
            var rnd = new Random(table.Length);
            var sealedFiles = new List<ManifestFile>();
            var template = AllRows().Single(r => r.Batch.Table == table).Batch;
            await using (var w = new SegmentWriter(dir, "n1", template, "rec-1", sealedFiles.Add, TimeSpan.FromSeconds(1)))
            {
                for (int g = 0; g < 3; g++)
                {
                    var batch = AllRows(3000).Single(r => r.Batch.Table == table).Batch;
                    for (int i = 0; i < 3000; i++)
                        expected.Add(FillRow(batch, rnd, expected.Count, allNull: g == 2));
                    await w.WriteAsync(batch);
                }
                await w.SealAsync();
            }
            var path = Path.Combine(dir, Assert.Single(sealedFiles).Path);
            var cols = template.Columns.Select(c => c.Type switch
            {
                ColumnType.TimestampNsUtc => $"epoch_us(\"{c.Name}\")::VARCHAR", // DuckDB reads timestamp[ns,UTC] as TIMESTAMPTZ, in µs
                ColumnType.Binary => $"hex(\"{c.Name}\")",
                ColumnType.Bool => $"\"{c.Name}\"::INT::VARCHAR",
                _ => $"\"{c.Name}\"::VARCHAR",
            });
            var got = Duck.Query($"SELECT {string.Join(", ", cols)} FROM read_parquet('{path}', hive_partitioning=false)");
            Assert.Equal(expected.Count, got.Count);
            for (int r = 0; r < got.Count; r++)
            {
                var row = got[r].Values.ToArray();
                for (int c = 0; c < row.Length; c++)
                    Assert.True(expected[r][c] == (string?)row[c], $"{table} row {r} column {template.Columns[c].Name}: wrote {expected[r][c] ?? "null"}, read {row[c] ?? "null"}");
            }
            // filters DuckDB prunes row groups for by their statistics (null counts, min and max) find every row
            for (int c = 0; c < template.Columns.Count; c++)
            {
                if (template.Columns[c] is not StringColumn { Nullable: true } sc)
                    continue;
                var nulls = expected.Count(e => e[c] is null);
                var some = expected.Select(e => e[c]).FirstOrDefault(v => v is not null);
                var got2 = Duck.Query($"SELECT count(*) FILTER (WHERE \"{sc.Name}\" IS NULL)::VARCHAR AS n, " +
                    $"count(*) FILTER (WHERE \"{sc.Name}\" = {(some is null ? "NULL" : "'" + some.Replace("'", "''") + "'")})::VARCHAR AS v " +
                    $"FROM read_parquet('{path}', hive_partitioning=false) WHERE \"{sc.Name}\" IS NULL OR \"{sc.Name}\" = {(some is null ? "NULL" : "'" + some.Replace("'", "''") + "'")}");
                Assert.Equal(nulls.ToString(CultureInfo.InvariantCulture), (string?)got2[0]["n"]);
                Assert.Equal(expected.Count(e => e[c] == some && some is not null).ToString(CultureInfo.InvariantCulture), (string?)got2[0]["v"]);
            }
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    private static string[] FillRow(TableBatch b, Random rnd, int n, bool allNull = false)
    {
        int i = b.NextRow();
        var text = new string[b.Columns.Count];
        string[] words = ["10.0.0.1", "egress", "", "Policy denied", "fd00::1", "ünïcode"];
        for (int c = 0; c < b.Columns.Count; c++)
        {
            bool edge = n % 97 == 0;
            switch (b.Columns[c])
            {
                case Column<long> ts when ts.Type == ColumnType.TimestampNsUtc:
                    ts.Set(i, 1_764_000_000_000_000_000L + n * 1_237L + rnd.Next(1000)); // ns, not a multiple of 100
                    text[c] = (ts.Values[i] / 1000).ToString(System.Globalization.CultureInfo.InvariantCulture);
                    break;
                case Column<ulong> u when u.Valid is not null && rnd.Next(5) == 0:
                    u.SetNull(i);
                    text[c] = null!;
                    break;
                case Column<ulong> u:
                    u.Set(i, edge ? ulong.MaxValue - (ulong)rnd.Next(3) : n % 3 == 0 ? (ulong)rnd.NextInt64() * 2 : (ulong)(1_000_000 + n * 10));
                    text[c] = u.Values[i].ToString(System.Globalization.CultureInfo.InvariantCulture);
                    break;
                case Column<long> l:
                    l.Set(i, edge ? long.MinValue + rnd.Next(3) : rnd.NextInt64(long.MinValue, long.MaxValue));
                    text[c] = l.Values[i].ToString(System.Globalization.CultureInfo.InvariantCulture);
                    break;
                case Column<int> v when v.Valid is not null && rnd.Next(5) == 0:
                    v.SetNull(i);
                    text[c] = null!;
                    break;
                case Column<int> v:
                    v.Set(i, edge ? int.MinValue : rnd.Next(-5, 300));
                    text[c] = v.Values[i].ToString(System.Globalization.CultureInfo.InvariantCulture);
                    break;
                case Column<uint> v when v.Valid is not null && rnd.Next(5) == 0:
                    v.SetNull(i);
                    text[c] = null!;
                    break;
                case Column<uint> v:
                    v.Set(i, edge ? uint.MaxValue : (uint)rnd.Next(0, 70000));
                    text[c] = v.Values[i].ToString(System.Globalization.CultureInfo.InvariantCulture);
                    break;
                case Column<ushort> v:
                    v.Set(i, edge ? ushort.MaxValue : (ushort)rnd.Next(0, 65535));
                    text[c] = v.Values[i].ToString(System.Globalization.CultureInfo.InvariantCulture);
                    break;
                case Column<byte> v:
                    v.Set(i, (byte)rnd.Next(0, 256));
                    text[c] = v.Values[i].ToString(System.Globalization.CultureInfo.InvariantCulture);
                    break;
                case BoolColumn v when v.Valid is not null && rnd.Next(4) == 0:
                    v.SetNull(i);
                    text[c] = null!;
                    break;
                case BoolColumn v:
                    v.Set(i, rnd.Next(2) == 0);
                    text[c] = v.Values[i] ? "1" : "0";
                    break;
                case StringColumn s:
                    s.Values[i] = s.Nullable && (allNull || rnd.Next(4) == 0) ? null : rnd.Next(3) == 0 ? $"v{rnd.Next(5000)}" : words[rnd.Next(words.Length)];
                    text[c] = s.Values[i]!;
                    break;
                case BinaryColumn bin:
                    bin.Values[i] = bin.Nullable && (allNull || rnd.Next(4) == 0) ? null : [.. Enumerable.Range(0, rnd.Next(0, 40)).Select(_ => (byte)rnd.Next(256))];
                    text[c] = bin.Values[i] is { } bytes ? Convert.ToHexString(bytes) : null!;
                    break;
                default:
                    throw new InvalidOperationException($"{b.Table}.{b.Columns[c].Name}: no generator for {b.Columns[c].GetType().Name}");
            }
        }
        return text;
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
    public static TheoryData<string> Tables() => [.. Format.Tables.Snapshots];

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

public class EventContextTests
{
    [Fact]
    public void TextCache_SameBytes_OneDecodeAndTheSameString_KindsKeptApart()
    {
        var cache = new TextCache(8);
        int decodes = 0;
        string Decode(ReadOnlySpan<byte> b)
        {
            decodes++;
            return System.Text.Encoding.UTF8.GetString(b);
        }
        var a1 = cache.Get("/usr/bin/curl"u8, 1, Decode);
        var a2 = cache.Get("/usr/bin/curl"u8, 1, Decode);
        var other = cache.Get("/usr/bin/curl"u8, 3, Decode);
        Assert.Equal("/usr/bin/curl", a1);
        Assert.Same(a1, a2);
        Assert.Equal(2, decodes); // kind 3 is another text, decoded on its own
        for (int i = 0; i < 100; i++) // evictions: every text still comes back right
            Assert.Equal($"/bin/p{i % 20}", cache.Get(System.Text.Encoding.UTF8.GetBytes($"/bin/p{i % 20}"), 1, Decode));
        Assert.Equal("", cache.Get([], 1, Decode));
    }

    [Fact]
    public void Binaries_AreForgottenOnlyAfterTwoGenerationsOfNewerExecs()
    {
        var ctx = new EventContext(0) { BinaryGeneration = 100 };
        ctx.RegisterBinary(1, "/usr/sbin/sshd");
        for (ulong id = 2; id <= 150; id++)
            ctx.RegisterBinary(id, "/bin/true");
        Assert.Equal("/usr/sbin/sshd", ctx.Binary(1)); // one generation later: still known
        for (ulong id = 151; id <= 250; id++)
            ctx.RegisterBinary(id, "/bin/true");
        Assert.Null(ctx.Binary(1));
        Assert.Equal("/bin/true", ctx.Binary(250));
        Assert.True(ctx.KnownBinaries <= 200, $"{ctx.KnownBinaries} binaries kept");
    }
}

public class AttributionRowsTests
{
    private static byte[] Record<T>(EventKind kind, (string Field, Action<Span<byte>> Write)[] fields) where T : struct
    {
        var rec = new byte[System.Runtime.InteropServices.Marshal.SizeOf<T>()];
        rec[0] = (byte)kind;
        rec[1] = Limits.AbiVersion;
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(rec.AsSpan(2), (ushort)rec.Length);
        foreach (var (field, write) in fields)
            write(rec.AsSpan((int)System.Runtime.InteropServices.Marshal.OffsetOf<T>(field)));
        return rec;
    }

    private static Action<Span<byte>> U32(uint v) => s => System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(s, v);
    private static Action<Span<byte>> U64(ulong v) => s => System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(s, v);

    [Fact]
    public void Exit_ImageExecutedOutsideThePod_NotThePodsProcess()
    {
        // `ip -n POD-NETNS link set lo up`: executed in the host's namespace, it enters the pod's and exits there.
        const uint host = 4026531840, pod = 4026532502;
        var ctx = new EventContext(0);
        ctx.Attribution.Register(pod, "default", "xwing");
        var exec = Forensics.Recorder.Tables.Rows.For(EventKind.Exec, 8)!;
        var exit = Forensics.Recorder.Tables.Rows.For(EventKind.Exit, 8)!;
        exec.Append(Record<ExecEvent>(EventKind.Exec, [(nameof(ExecEvent.ExecId), U64(41)), (nameof(ExecEvent.NetnsIno), U32(host))]), ctx);
        exit.Append(Record<ExitEvent>(EventKind.Exit, [(nameof(ExitEvent.ExecId), U64(41)), (nameof(ExitEvent.NetnsIno), U32(pod))]), ctx);
        // a process executed in the pod is the pod's, from exec to exit
        exec.Append(Record<ExecEvent>(EventKind.Exec, [(nameof(ExecEvent.ExecId), U64(42)), (nameof(ExecEvent.NetnsIno), U32(pod))]), ctx);
        exit.Append(Record<ExitEvent>(EventKind.Exit, [(nameof(ExitEvent.ExecId), U64(42)), (nameof(ExitEvent.NetnsIno), U32(pod))]), ctx);
        // an image whose exec was not seen (started before the recording): the namespace it exits in is all there is
        exit.Append(Record<ExitEvent>(EventKind.Exit, [(nameof(ExitEvent.ExecId), U64(43)), (nameof(ExitEvent.NetnsIno), U32(pod))]), ctx);

        var rows = Forensics.Recorder.Batches.BatchRows.Rows(exit.Batch).ToList();
        Assert.Equal("(none), xwing, xwing", string.Join(", ", rows.Select(r => (string?)r["pod"] ?? "(none)")));
        Assert.Equal([pod, pod, pod], rows.Select(r => (uint)r["netns_ino"]!).ToArray()); // where it exited stays recorded
    }
}
