using Apache.Arrow;
using Apache.Arrow.Types;

namespace Forensics.Recorder.Batches;

/// <summary>The storage types a column can have (schemas/*.json "type").</summary>
public enum ColumnType
{
    TimestampNsUtc,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Int32,
    Int64,
    Bool,
    Utf8,
    Binary,
}

/// <summary>
/// One column of a <see cref="TableBatch"/>: a reusable typed array (Arrow's
/// columnar layout: values in one contiguous buffer, a validity flag per
/// value for nullable columns). Filled by index, never grown per value.
/// </summary>
public abstract class Column
{
    protected Column(string name, ColumnType type, bool nullable)
    {
        Name = name;
        Type = type;
        Nullable = nullable;
    }

    public string Name { get; }
    public ColumnType Type { get; }
    public bool Nullable { get; }

    public static string TypeName(ColumnType t) => t switch
    {
        ColumnType.TimestampNsUtc => "timestamp[ns,UTC]",
        ColumnType.UInt8 => "uint8",
        ColumnType.UInt16 => "uint16",
        ColumnType.UInt32 => "uint32",
        ColumnType.UInt64 => "uint64",
        ColumnType.Int32 => "int32",
        ColumnType.Int64 => "int64",
        ColumnType.Bool => "bool",
        ColumnType.Utf8 => "utf8",
        ColumnType.Binary => "binary",
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    internal abstract IArrowArray ToArrow(int length);

    internal abstract IArrowType ArrowType { get; }
}

/// <summary>A column of unmanaged values; <see cref="Valid"/> is set only for nullable columns.</summary>
public sealed class Column<T> : Column where T : unmanaged
{
    internal Column(string name, ColumnType type, bool nullable, int capacity) : base(name, type, nullable)
    {
        Values = new T[capacity];
        Valid = nullable ? new bool[capacity] : null;
    }

    public T[] Values { get; }

    /// <summary>Per row: false when the value is null (nullable columns only).</summary>
    public bool[]? Valid { get; }

    public void Set(int row, T value)
    {
        Values[row] = value;
        if (Valid is not null)
            Valid[row] = true;
    }

    public void SetNull(int row)
    {
        Values[row] = default;
        Valid![row] = false;
    }

    internal override IArrowType ArrowType => Type switch
    {
        ColumnType.TimestampNsUtc => new TimestampType(TimeUnit.Nanosecond, "UTC"),
        ColumnType.UInt8 => UInt8Type.Default,
        ColumnType.UInt16 => UInt16Type.Default,
        ColumnType.UInt32 => UInt32Type.Default,
        ColumnType.UInt64 => UInt64Type.Default,
        ColumnType.Int32 => Int32Type.Default,
        ColumnType.Int64 => Int64Type.Default,
        _ => throw new InvalidOperationException(Type.ToString()),
    };

    internal override IArrowArray ToArrow(int length)
    {
        // Copies: the batch buffers are reused as soon as the batch is written.
        var values = new ArrowBuffer(System.Runtime.InteropServices.MemoryMarshal.AsBytes(Values.AsSpan(0, length)).ToArray());
        var (validity, nulls) = Validity(Valid, length);
        var data = new ArrayData(ArrowType, length, nulls, 0, [validity, values]);
        return ArrowArrayFactory.BuildArray(data);
    }

    internal static (ArrowBuffer Buffer, int Nulls) Validity(bool[]? valid, int length)
    {
        if (valid is null)
            return (ArrowBuffer.Empty, 0);
        var b = new ArrowBuffer.BitmapBuilder(length);
        int nulls = 0;
        for (int i = 0; i < length; i++)
        {
            b.Append(valid[i]);
            if (!valid[i])
                nulls++;
        }
        return (b.Build(), nulls);
    }
}

/// <summary>A bool column (Arrow stores bits; we keep bytes and pack on conversion); <see cref="Valid"/> only when nullable.</summary>
public sealed class BoolColumn : Column
{
    internal BoolColumn(string name, int capacity, bool nullable = false) : base(name, ColumnType.Bool, nullable)
    {
        Values = new bool[capacity];
        Valid = nullable ? new bool[capacity] : null;
    }

    public bool[] Values { get; }

    /// <summary>Per row: false when the value is null (nullable columns only).</summary>
    public bool[]? Valid { get; }

    public void Set(int row, bool value)
    {
        Values[row] = value;
        if (Valid is not null)
            Valid[row] = true;
    }

    public void SetNull(int row)
    {
        Values[row] = false;
        Valid![row] = false;
    }

    internal override IArrowType ArrowType => BooleanType.Default;

    internal override IArrowArray ToArrow(int length)
    {
        var b = new BooleanArray.Builder();
        for (int i = 0; i < length; i++)
        {
            if (Valid is not null && !Valid[i])
                b.AppendNull();
            else
                b.Append(Values[i]);
        }
        return b.Build();
    }
}

/// <summary>A string column of (mostly interned) references; null entries are nulls.</summary>
public sealed class StringColumn : Column
{
    internal StringColumn(string name, bool nullable, int capacity) : base(name, ColumnType.Utf8, nullable) => Values = new string?[capacity];

    public string?[] Values { get; }

    internal override IArrowType ArrowType => StringType.Default;

    internal override IArrowArray ToArrow(int length)
    {
        var b = new StringArray.Builder();
        for (int i = 0; i < length; i++)
        {
            if (Values[i] is null)
                b.AppendNull();
            else
                b.Append(Values[i]);
        }
        return b.Build();
    }
}

/// <summary>A binary column.</summary>
public sealed class BinaryColumn : Column
{
    internal BinaryColumn(string name, bool nullable, int capacity) : base(name, ColumnType.Binary, nullable) => Values = new byte[]?[capacity];

    public byte[]?[] Values { get; }

    /// <summary>
    /// Copies the value into the row's cell, reusing the array a previous batch left there when it has
    /// the same length (captures mostly do): no allocation per row, so rows do not outlive gen0 as garbage.
    /// </summary>
    public void Set(int row, ReadOnlySpan<byte> value)
    {
        var cell = Values[row];
        if (cell is null || cell.Length != value.Length)
            Values[row] = cell = new byte[value.Length];
        value.CopyTo(cell);
    }

    internal override IArrowType ArrowType => BinaryType.Default;

    internal override IArrowArray ToArrow(int length)
    {
        var b = new BinaryArray.Builder();
        for (int i = 0; i < length; i++)
        {
            if (Values[i] is null)
                b.AppendNull();
            else
                b.Append(Values[i].AsSpan());
        }
        return b.Build();
    }
}

/// <summary>
/// A batch of rows of one table, column by column, with reusable buffers.
/// Columns are declared once, in schema order, by the table's appender;
/// rows are filled by index and the batch is reset after it is written.
/// </summary>
public sealed class TableBatch
{
    private readonly List<Column> columns = [];

    public TableBatch(string table, int capacity)
    {
        Table = table;
        Capacity = capacity;
    }

    public string Table { get; }
    public int Capacity { get; }
    public int Count { get; private set; }
    public bool IsFull => Count >= Capacity;
    public IReadOnlyList<Column> Columns => columns;

    /// <summary>Kernel time of the first row, for closing batches on time.</summary>
    public long FirstRowTicks { get; private set; }

    public Column<long> Timestamp(string name, bool nullable = false) => Add(new Column<long>(name, ColumnType.TimestampNsUtc, nullable, Capacity));
    public Column<byte> U8(string name, bool nullable = false) => Add(new Column<byte>(name, ColumnType.UInt8, nullable, Capacity));
    public Column<ushort> U16(string name, bool nullable = false) => Add(new Column<ushort>(name, ColumnType.UInt16, nullable, Capacity));
    public Column<uint> U32(string name, bool nullable = false) => Add(new Column<uint>(name, ColumnType.UInt32, nullable, Capacity));
    public Column<ulong> U64(string name, bool nullable = false) => Add(new Column<ulong>(name, ColumnType.UInt64, nullable, Capacity));
    public Column<int> I32(string name, bool nullable = false) => Add(new Column<int>(name, ColumnType.Int32, nullable, Capacity));
    public Column<long> I64(string name) => Add(new Column<long>(name, ColumnType.Int64, false, Capacity));
    public BoolColumn Bool(string name, bool nullable = false) => Add(new BoolColumn(name, Capacity, nullable));
    public StringColumn Str(string name, bool nullable = false) => Add(new StringColumn(name, nullable, Capacity));
    public BinaryColumn Bin(string name, bool nullable = false) => Add(new BinaryColumn(name, nullable, Capacity));

    private T Add<T>(T c) where T : Column
    {
        if (Count != 0)
            throw new InvalidOperationException("columns are declared before rows");
        if (columns.Any(x => x.Name == c.Name))
            throw new InvalidOperationException($"{Table}: duplicate column {c.Name}");
        columns.Add(c);
        return c;
    }

    /// <summary>
    /// A batch with the columns of a table's schema (schemas/TABLE.vN.json), in its order: for sources whose
    /// rows are not our ABI records (netlink, gRPC, imports, tests), filled with <see cref="Set"/> or through
    /// the typed columns (<see cref="Column(string)"/>).
    /// </summary>
    public static TableBatch ForSchema(Format.TableSchema schema, int capacity)
    {
        ArgumentNullException.ThrowIfNull(schema);
        var b = new TableBatch(schema.Table, capacity);
        foreach (var c in schema.Columns)
        {
            _ = c.Type switch
            {
                "timestamp[ns,UTC]" => b.Timestamp(c.Name, c.Nullable),
                "uint8" => b.U8(c.Name, c.Nullable),
                "uint16" => b.U16(c.Name, c.Nullable),
                "uint32" => b.U32(c.Name, c.Nullable),
                "uint64" => b.U64(c.Name, c.Nullable),
                "int32" => b.I32(c.Name, c.Nullable),
                "int64" when !c.Nullable => b.I64(c.Name),
                "bool" => b.Bool(c.Name, c.Nullable),
                "utf8" => b.Str(c.Name, c.Nullable),
                "binary" => (Column)b.Bin(c.Name, c.Nullable),
                _ => throw new NotSupportedException($"{schema.Table}.{c.Name}: no batch column for {(c.Nullable ? "nullable " : "")}{c.Type}"),
            };
        }
        return b;
    }

    /// <summary>The column of this name.</summary>
    public Column Column(string name) =>
        columns.Find(c => c.Name == name) ?? throw new KeyNotFoundException($"{Table} has no column {name}");

    /// <summary>
    /// Sets one value by column name, converting numbers to the column's type (null: a null in a nullable
    /// column; times as DateTimeOffset, DateTime or ns since the epoch). The slow path, per value: sources
    /// at kernel rates fill the typed columns instead.
    /// </summary>
    public void Set(int row, string column, object? value)
    {
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        switch (Column(column))
        {
            case Column<long> c when value is null && c.Nullable: c.SetNull(row); break;
            case Column<byte> c when value is null && c.Nullable: c.SetNull(row); break;
            case Column<ushort> c when value is null && c.Nullable: c.SetNull(row); break;
            case Column<uint> c when value is null && c.Nullable: c.SetNull(row); break;
            case Column<long> t when t.Type == ColumnType.TimestampNsUtc:
                t.Set(row, value switch
                {
                    DateTimeOffset d => (d.UtcTicks - DateTime.UnixEpoch.Ticks) * 100,
                    DateTime d => (d.ToUniversalTime().Ticks - DateTime.UnixEpoch.Ticks) * 100,
                    _ => Convert.ToInt64(value, inv),
                });
                break;
            case Column<byte> c: c.Set(row, Convert.ToByte(value, inv)); break;
            case Column<ushort> c: c.Set(row, Convert.ToUInt16(value, inv)); break;
            case Column<uint> c when value is null && c.Nullable: c.SetNull(row); break;
            case Column<uint> c: c.Set(row, Convert.ToUInt32(value, inv)); break;
            case Column<ulong> c when value is null && c.Nullable: c.SetNull(row); break;
            case Column<ulong> c: c.Set(row, Convert.ToUInt64(value, inv)); break;
            case Column<int> c when value is null && c.Nullable: c.SetNull(row); break;
            case Column<int> c: c.Set(row, Convert.ToInt32(value, inv)); break;
            case Column<long> c: c.Set(row, Convert.ToInt64(value, inv)); break;
            case BoolColumn c when value is null && c.Nullable: c.SetNull(row); break;
            case BoolColumn c: c.Set(row, Convert.ToBoolean(value, inv)); break;
            case StringColumn c when value is null && !c.Nullable: throw new ArgumentNullException(nameof(value), $"{Table}.{column} is not nullable");
            case StringColumn c: c.Values[row] = value is null ? null : Convert.ToString(value, inv); break;
            case BinaryColumn c when value is null: c.Values[row] = c.Nullable ? null : throw new ArgumentNullException(nameof(value), $"{Table}.{column} is not nullable"); break;
            case BinaryColumn c: c.Set(row, (byte[])value); break;
            default: throw new InvalidOperationException($"{Table}.{column}: no setter");
        }
    }

    /// <summary>Starts a row; returns its index.</summary>
    public int NextRow()
    {
        if (Count == 0)
            FirstRowTicks = Environment.TickCount64;
        return Count++;
    }

    public void Reset()
    {
        foreach (var c in columns)
        {
            switch (c)
            {
                case StringColumn s:
                    System.Array.Clear(s.Values, 0, Count);
                    break;
                case BinaryColumn b when b.Nullable: // non-null cells keep their arrays for BinaryColumn.Set to reuse
                    System.Array.Clear(b.Values, 0, Count);
                    break;
                case BoolColumn { Valid: { } v }: // a nullable value a writer does not set is null
                    System.Array.Clear(v, 0, Count);
                    break;
                case Column<int> { Valid: { } v }:
                    System.Array.Clear(v, 0, Count);
                    break;
                case Column<ulong> { Valid: { } v }:
                    System.Array.Clear(v, 0, Count);
                    break;
                case Column<uint> { Valid: { } v }:
                    System.Array.Clear(v, 0, Count);
                    break;
                case Column<ushort> { Valid: { } v }:
                    System.Array.Clear(v, 0, Count);
                    break;
                case Column<byte> { Valid: { } v }:
                    System.Array.Clear(v, 0, Count);
                    break;
                case Column<long> { Valid: { } v }:
                    System.Array.Clear(v, 0, Count);
                    break;
            }
        }
        Count = 0;
    }

    /// <summary>The Arrow schema this batch writes: names, types, nullability, in order.</summary>
    public Schema ArrowSchema()
    {
        var b = new Schema.Builder();
        foreach (var c in columns)
            b.Field(f => f.Name(c.Name).DataType(c.ArrowType).Nullable(c.Nullable));
        b.Metadata("forensics.table", Table);
        return b.Build();
    }

    /// <summary>The rows as an Arrow record batch (copies; for consumers outside the hot path).</summary>
    public RecordBatch ToArrow() => new(ArrowSchema(), columns.Select(c => c.ToArrow(Count)), Count);
}
