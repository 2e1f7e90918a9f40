using System.IO.Compression;
using System.Security.Cryptography;
using Forensics.Datapath;
using Forensics.Format;
using Forensics.Recorder.Batches;
using Parquet;
using Parquet.Schema;

namespace Forensics.Recorder.Storage;

/// <summary>
/// Writes one table's batches as row groups of Parquet segment files, and
/// seals a segment every few seconds or megabytes: footer, fsync, rename
/// from .tmp, fsync of the folder, SHA-256. A sealed segment always opens;
/// an unsealed one is what a crash can lose.
/// </summary>
public sealed class SegmentWriter : IAsyncDisposable
{
    private readonly string recordingDir;
    private readonly string relativeDir;
    private readonly ParquetSchema schema;
    private readonly DataField[] fields;
    private readonly ParquetOptions options;
    private readonly Dictionary<string, string> metadata;
    private readonly Action<ManifestFile> onSealed;
    private readonly TimeSpan sealInterval;
    private readonly long sealBytes;
    private readonly object?[] scratch;
    private readonly int[]?[] definitions;
    private readonly Func<int> nextSegment;
    private int segment;
    private FileStream? stream;
    private ParquetWriter? writer;
    private string? tmpPath;
    private long rows;
    private long openedAt;

    public SegmentWriter(string recordingDir, string node, TableBatch template, string recordingId,
        Action<ManifestFile> onSealed, TimeSpan sealInterval, long sealBytes = 64 << 20, Func<int>? nextSegment = null, bool compress = true)
    {
        ArgumentNullException.ThrowIfNull(template);
        this.recordingDir = recordingDir;
        Table = template.Table;
        relativeDir = $"{Table}/node={node}";
        CreatePrivateDirectories(recordingDir, relativeDir);
        this.onSealed = onSealed;
        this.sealInterval = sealInterval;
        this.sealBytes = sealBytes;
        this.nextSegment = nextSegment ?? (() => segment + 1);
        fields = template.Columns.Select(ToField).ToArray();
        schema = new ParquetSchema(fields);
        scratch = new object?[fields.Length];
        definitions = new int[]?[fields.Length];
        // (uncompressed only for tests that look for a value in a file's bytes)
        options = new ParquetOptions { CompressionMethod = compress ? CompressionMethod.Zstd : CompressionMethod.None, CompressionLevel = CompressionLevel.Fastest };
        foreach (var (c, f) in template.Columns.Zip(fields))
        {
            // Strings repeat (addresses, names, reasons): dictionary. 64-bit integers are mostly kernel times,
            // ids and counters: delta encoding is 3x cheaper than Parquet.Net's plain encoding, which puts all
            // 8 bytes of every value through zstd, and half the size (bench/RESULTS.md, section 1.2).
            if (c.Type == ColumnType.Utf8)
                options.ColumnEncodingHints[f.Path.ToString()] = EncodingHint.Dictionary;
            else if (c.Type is ColumnType.UInt64 or ColumnType.Int64)
                options.ColumnEncodingHints[f.Path.ToString()] = EncodingHint.DeltaBinaryPacked;
        }
        var version = SchemaCatalog.VersionOf(Table);
        SchemaVersion = version;
        metadata = new Dictionary<string, string>
        {
            ["forensics.table"] = Table,
            ["forensics.schema_version"] = version.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["forensics.recording_id"] = recordingId,
        };
        if (version > 0)
            foreach (var col in SchemaCatalog.Current(Table).Columns)
                metadata["forensics.doc." + col.Name] = col.Doc;
    }

    public string Table { get; }
    public int SchemaVersion { get; }

    /// <summary>Bytes of sealed segments so far.</summary>
    public long BytesSealed { get; private set; }

    private static DataField ToField(Column c) => c.Type switch
    {
        ColumnType.TimestampNsUtc => new DateTimeDataField(c.Name, DateTimeFormat.Timestamp, isAdjustedToUTC: true, unit: DateTimeTimeUnit.Nanos, isNullable: c.Nullable),
        ColumnType.UInt8 => c.Nullable ? new DataField<byte?>(c.Name) : new DataField<byte>(c.Name),
        ColumnType.UInt16 => c.Nullable ? new DataField<ushort?>(c.Name) : new DataField<ushort>(c.Name),
        ColumnType.UInt32 => c.Nullable ? new DataField<uint?>(c.Name) : new DataField<uint>(c.Name),
        ColumnType.UInt64 => c.Nullable ? new DataField<ulong?>(c.Name) : new DataField<ulong>(c.Name),
        ColumnType.Int32 => c.Nullable ? new DataField<int?>(c.Name) : new DataField<int>(c.Name),
        ColumnType.Int64 => new DataField<long>(c.Name),
        ColumnType.Bool => c.Nullable ? new DataField<bool?>(c.Name) : new DataField<bool>(c.Name),
        ColumnType.Utf8 => new DataField<string>(c.Name, nullable: c.Nullable),
        ColumnType.Binary => new DataField<byte[]>(c.Name, nullable: c.Nullable),
        _ => throw new ArgumentOutOfRangeException(nameof(c)),
    };

    /// <summary>Writes the batch as one row group of the open segment (opening one if needed).</summary>
    public async Task WriteAsync(TableBatch batch, CancellationToken token = default)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (batch.Count == 0)
            return;
        int n = batch.Count;
        try
        {
            if (writer is null)
                await OpenAsync(token);
            using var rg = writer!.CreateRowGroup();
            for (int c = 0; c < fields.Length; c++)
                await WriteColumnAsync(rg, c, batch.Columns[c], n, token);
            rg.CompleteValidate();
        }
        catch (IOException)
        {
            await AbandonAsync(); // a half-written row group: the segment cannot be sealed
            throw;
        }
        rows += n;
        if (stream!.Length >= sealBytes)
            await SealAsync();
    }

    private async Task WriteColumnAsync(ParquetRowGroupWriter rg, int index, Column column, int n, CancellationToken token)
    {
        var f = fields[index];
        switch (column)
        {
            case Column<long> ts when column.Type == ColumnType.TimestampNsUtc && ts.Valid is null:
                var dates = Scratch<DateTime>(index, n);
                for (int i = 0; i < n; i++)
                    dates[i] = DateTime.UnixEpoch.AddTicks(ts.Values[i] / 100);
                await rg.WriteAsync<DateTime>(f, dates.AsMemory(0, n), cancellationToken: token);
                break;
            case Column<long> tsn when column.Type == ColumnType.TimestampNsUtc:
                var ndates = Scratch<DateTime?>(index, n);
                for (int i = 0; i < n; i++)
                    ndates[i] = tsn.Valid![i] ? DateTime.UnixEpoch.AddTicks(tsn.Values[i] / 100) : null;
                await rg.WriteAsync<DateTime>(f, ndates.AsMemory(0, n), cancellationToken: token);
                break;
            case Column<byte> b when b.Valid is null:
                await rg.WriteAsync<byte>(f, b.Values.AsMemory(0, n), cancellationToken: token);
                break;
            case Column<byte> bn:
                await rg.WriteAsync<byte>(f, Nullable(index, bn, n), cancellationToken: token);
                break;
            case Column<ushort> u16 when u16.Valid is null:
                await rg.WriteAsync<ushort>(f, u16.Values.AsMemory(0, n), cancellationToken: token);
                break;
            case Column<ushort> u16n:
                await rg.WriteAsync<ushort>(f, Nullable(index, u16n, n), cancellationToken: token);
                break;
            case Column<uint> u32 when u32.Valid is null:
                await rg.WriteAsync<uint>(f, u32.Values.AsMemory(0, n), cancellationToken: token);
                break;
            case Column<uint> u32n:
                await rg.WriteAsync<uint>(f, Nullable(index, u32n, n), cancellationToken: token);
                break;
            case Column<ulong> u64 when u64.Valid is null:
                await rg.WriteAsync<ulong>(f, u64.Values.AsMemory(0, n), cancellationToken: token);
                break;
            case Column<ulong> u64n:
                await rg.WriteAsync<ulong>(f, Nullable(index, u64n, n), cancellationToken: token);
                break;
            case Column<int> i32 when i32.Valid is null:
                await rg.WriteAsync<int>(f, i32.Values.AsMemory(0, n), cancellationToken: token);
                break;
            case Column<int> i32n:
                await rg.WriteAsync<int>(f, Nullable(index, i32n, n), cancellationToken: token);
                break;
            case Column<long> i64:
                await rg.WriteAsync<long>(f, i64.Values.AsMemory(0, n), cancellationToken: token);
                break;
            case BoolColumn { Valid: null } bo:
                await rg.WriteAsync<bool>(f, bo.Values.AsMemory(0, n), cancellationToken: token);
                break;
            case BoolColumn bon:
                var bools = Scratch<bool?>(index, n);
                for (int i = 0; i < n; i++)
                    bools[i] = bon.Valid![i] ? bon.Values[i] : null;
                await rg.WriteAsync<bool>(f, bools.AsMemory(0, n), cancellationToken: token);
                break;
            case StringColumn s when s.Nullable:
                // The present values and a definition level per row (0 null, 1 present), written as they are:
                // Parquet.Net 6.1 writes a null ReadOnlyMemory<char>? as "", and its string overload walks an
                // IEnumerable per value (the Hubble-shaped tables' mostly-null columns doubled a trace row's cost)
                var (present, defs) = Present(index, s.Values!, n, v => v.AsMemory());
                await rg.WriteAllPartsAsync(f, present, defs, null, token);
                break;
            case StringColumn s:
                // Parquet.Net's string overload copies into a new array per call (a large-object-heap
                // allocation per column and batch); this buffer is reused
                var strings = Scratch<ReadOnlyMemory<char>>(index, n);
                for (int i = 0; i < n; i++)
                    strings[i] = s.Values[i].AsMemory();
                await rg.WriteAsync<ReadOnlyMemory<char>>(f, strings.AsMemory(0, n), cancellationToken: token);
                break;
            case BinaryColumn bin when !bin.Nullable:
                var blobs = Scratch<ReadOnlyMemory<byte>>(index, n); // as for strings: no copy of the column per batch
                for (int i = 0; i < n; i++)
                    blobs[i] = bin.Values[i];
                await rg.WriteAsync<ReadOnlyMemory<byte>>(f, blobs.AsMemory(0, n), cancellationToken: token);
                break;
            case BinaryColumn bin:
                var (presentBlobs, blobDefs) = Present(index, bin.Values, n, v => (ReadOnlyMemory<byte>)v); // as for nullable strings
                await rg.WriteAllPartsAsync(f, presentBlobs, blobDefs, null, token);
                break;
            default:
                throw new InvalidOperationException($"{Table}.{column.Name}: no writer for {column.GetType().Name}");
        }
    }

    /// <summary>
    /// A nullable column of references as Parquet stores it: the present values, converted, and a definition
    /// level per row (0 null, 1 present), in buffers reused per column.
    /// </summary>
    private (ReadOnlyMemory<T> Present, ReadOnlyMemory<int> Definitions) Present<TIn, T>(int index, TIn?[] values, int n, Func<TIn, T> convert)
        where TIn : class
    {
        var present = Scratch<T>(index, n);
        if (definitions[index] is not { } defs || defs.Length < n)
            definitions[index] = defs = new int[Math.Max(n, 1024)];
        var k = 0;
        for (int i = 0; i < n; i++)
        {
            var v = values[i];
            defs[i] = v is null ? 0 : 1;
            if (v is not null)
                present[k++] = convert(v);
        }
        return (present.AsMemory(0, k), defs.AsMemory(0, n));
    }

    private T[] Scratch<T>(int index, int n)
    {
        if (scratch[index] is T[] a && a.Length >= n)
            return a;
        var fresh = new T[Math.Max(n, 1024)];
        scratch[index] = fresh;
        return fresh;
    }

    private ReadOnlyMemory<T?> Nullable<T>(int index, Column<T> c, int n) where T : unmanaged
    {
        var buf = Scratch<T?>(index, n);
        for (int i = 0; i < n; i++)
            buf[i] = c.Valid![i] ? c.Values[i] : null;
        return buf.AsMemory(0, n);
    }

    private async Task OpenAsync(CancellationToken token)
    {
        segment = nextSegment();
        var name = $"seg-{segment:D6}.parquet";
        tmpPath = Path.Combine(recordingDir, relativeDir, name + ".tmp");
        stream = new FileStream(tmpPath, PrivateFile);
        writer = await ParquetWriter.CreateAsync(schema, stream, options, cancellationToken: token);
        writer.CustomMetadata = metadata;
        rows = 0;
        openedAt = Environment.TickCount64;
    }

    /// <summary>Seals the open segment when it is older than the seal interval.</summary>
    public async Task SealIfDueAsync()
    {
        if (writer is not null && Environment.TickCount64 - openedAt >= (long)sealInterval.TotalMilliseconds)
            await SealAsync();
    }

    /// <summary>Closes the open segment: footer, fsync, rename, folder fsync, hash; reports it.</summary>
    public async Task SealAsync()
    {
        if (writer is null)
            return;
        try
        {
            await SealOpenAsync();
        }
        catch (IOException)
        {
            await AbandonAsync();
            throw;
        }
    }

    /// <summary>Rows of segments that could not be sealed (disk full, I/O error): lost, and counted.</summary>
    public long AbandonedRows { get; private set; }

    /// <summary>Drops the open segment without sealing it (freeing its space); its rows count as lost.</summary>
    public async Task AbandonAsync()
    {
        if (writer is null && stream is null)
            return;
        AbandonedRows += rows;
        rows = 0;
        try
        {
            if (writer is not null)
                await writer.DisposeAsync();
        }
        catch (IOException)
        {
        }
        writer = null;
        try
        {
            if (stream is not null)
                await stream.DisposeAsync();
        }
        catch (IOException)
        {
        }
        stream = null;
        if (tmpPath is not null)
            File.Delete(tmpPath);
        tmpPath = null;
    }

    private async Task SealOpenAsync()
    {
        await writer!.DisposeAsync();
        writer = null;
        await stream!.FlushAsync();
        stream.Flush(flushToDisk: true);
        stream.Position = 0;
        var hash = Convert.ToHexStringLower(await SHA256.HashDataAsync(stream));
        long bytes = stream.Length;
        await stream.DisposeAsync();
        stream = null;
        var final = tmpPath![..^".tmp".Length];
        File.Move(tmpPath, final, overwrite: false);
        var dir = Path.GetDirectoryName(final)!;
        FileSystem.FsyncDirectory(dir);
        BytesSealed += bytes;
        onSealed(new ManifestFile
        {
            Path = $"{relativeDir}/{Path.GetFileName(final)}",
            Rows = rows,
            Bytes = bytes,
            Sha256 = hash,
        });
        tmpPath = null;
    }

    private static readonly FileStreamOptions PrivateFile = OperatingSystem.IsWindows()
        ? new() { Mode = FileMode.Create, Access = FileAccess.ReadWrite, Share = FileShare.Read, BufferSize = 1 << 20 }
        : new() { Mode = FileMode.Create, Access = FileAccess.ReadWrite, Share = FileShare.Read, BufferSize = 1 << 20, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite };

    /// <summary>A recording holds every user's process arguments: its folders are 0700 and its files 0600, whatever the umask.</summary>
    private static void CreatePrivateDirectories(string root, string relative)
    {
        var path = root;
        foreach (var part in relative.Split('/'))
        {
            path = Path.Combine(path, part);
            if (Directory.Exists(path))
                continue;
            if (OperatingSystem.IsWindows())
                Directory.CreateDirectory(path);
            else
                Directory.CreateDirectory(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
    }

    /// <summary>Abandons an open segment: call <see cref="SealAsync"/> first to keep it.</summary>
    public async ValueTask DisposeAsync() => await AbandonAsync();
}
