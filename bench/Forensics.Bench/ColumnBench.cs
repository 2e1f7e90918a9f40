using Parquet;
using Parquet.Schema;

namespace Forensics.Bench;

/// <summary>Parquet.Net 6 per column type: CPU and bytes allocated per value, one column per file (an ablation of the writer).</summary>
internal static class ColumnBench
{
    private const int N = 65536;

    private static void Measure(string name, DataField field, Func<ParquetRowGroupWriter, DataField, Task> write, bool dict = false,
        EncodingHint? hint = null, int sample = 0)
    {
        var opts = new ParquetOptions { CompressionMethod = CompressionMethod.Zstd, CompressionLevel = System.IO.Compression.CompressionLevel.Fastest };
        if (dict)
            opts.ColumnEncodingHints[field.Path.ToString()] = EncodingHint.Dictionary;
        if (hint is { } h)
            opts.ColumnEncodingHints[field.Path.ToString()] = h;
        opts.DictionaryEncodingSampleSize = sample;
        name += hint is { } h2 ? $"/{h2}" : "";
        name += sample > 0 ? $"/sample{sample}" : "";
        var schema = new ParquetSchema(field);
        using var ms = new MemoryStream();
        var w = ParquetWriter.CreateAsync(schema, ms, opts).GetAwaiter().GetResult();
        void Batches(int k)
        {
            for (int i = 0; i < k; i++)
            {
                using var rg = w.CreateRowGroup();
                write(rg, field).GetAwaiter().GetResult();
                rg.CompleteValidate();
            }
        }
        Batches(30);
        long a0 = GC.GetAllocatedBytesForCurrentThread();
        double c0 = Proc.ThisThreadCpu();
        long len0 = ms.Length;
        Batches(100);
        double cpu = Proc.ThisThreadCpu() - c0;
        long alloc = GC.GetAllocatedBytesForCurrentThread() - a0;
        w.DisposeAsync().AsTask().GetAwaiter().GetResult();
        Console.WriteLine($"column type={name} ns_per_value={cpu * 1e9 / (100.0 * N):0.0} alloc_bytes_per_value={alloc / (100.0 * N):0.0} bytes_per_value={(ms.Length - len0) / (100.0 * N):0.00}");
    }

    public static void Run()
    {
        var rnd = new Random(1);
        var u64 = Enumerable.Range(0, N).Select(i => (ulong)(1_000_000_000L + i * 500L + rnd.Next(100))).ToArray();
        var i64 = u64.Select(v => (long)v + 1_700_000_000_000_000_000L).ToArray();
        var u32 = Enumerable.Range(0, N).Select(i => (uint)rnd.Next(1000)).ToArray();
        var u16 = Enumerable.Range(0, N).Select(i => (ushort)rnd.Next(30000, 60000)).ToArray();
        var u8 = Enumerable.Range(0, N).Select(i => (byte)4).ToArray();
        var bools = Enumerable.Range(0, N).Select(i => i % 7 == 0).ToArray();
        var dt = i64.Select(v => DateTime.UnixEpoch.AddTicks(v / 100)).ToArray();
        var pool = Enumerable.Range(0, 200).Select(i => $"10.0.{i / 100}.{i % 100}").ToArray();
        var str = Enumerable.Range(0, N).Select(i => pool[rnd.Next(pool.Length)].AsMemory()).ToArray();
        var few = Enumerable.Range(0, N).Select(i => (i % 3 == 0 ? "egress" : "ingress").AsMemory()).ToArray();
        var d = EncodingHint.DeltaBinaryPacked;
        foreach (var h in new EncodingHint?[] { null, d })
        {
            Measure("uint64", new DataField<ulong>("v"), (rg, f) => rg.WriteAsync<ulong>(f, u64), hint: h);
            Measure("int64", new DataField<long>("v"), (rg, f) => rg.WriteAsync<long>(f, i64), hint: h);
            Measure("uint32", new DataField<uint>("v"), (rg, f) => rg.WriteAsync<uint>(f, u32), hint: h);
            Measure("uint16", new DataField<ushort>("v"), (rg, f) => rg.WriteAsync<ushort>(f, u16), hint: h);
            Measure("uint8", new DataField<byte>("v"), (rg, f) => rg.WriteAsync<byte>(f, u8), hint: h);
            Measure("bool", new DataField<bool>("v"), (rg, f) => rg.WriteAsync<bool>(f, bools), hint: h);
            Measure("timestamp-ns(DateTime)", new DateTimeDataField("v", DateTimeFormat.Timestamp, isAdjustedToUTC: true, unit: DateTimeTimeUnit.Nanos, isNullable: false),
                (rg, f) => rg.WriteAsync<DateTime>(f, dt), hint: h);
        }
        Measure("utf8-200-distinct-dict", new DataField<string>("v", nullable: false), (rg, f) => rg.WriteAsync<ReadOnlyMemory<char>>(f, str), dict: true);
        Measure("utf8-200-distinct-plain", new DataField<string>("v", nullable: false), (rg, f) => rg.WriteAsync<ReadOnlyMemory<char>>(f, str));
        Measure("utf8-2-distinct-dict", new DataField<string>("v", nullable: false), (rg, f) => rg.WriteAsync<ReadOnlyMemory<char>>(f, few), dict: true);
    }
}
