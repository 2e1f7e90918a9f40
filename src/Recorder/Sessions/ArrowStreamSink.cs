using Apache.Arrow;
using Apache.Arrow.Ipc;
using Apache.Arrow.Types;
using Forensics.Format;
using Forensics.Recorder.Batches;

namespace Forensics.Recorder.Sessions;

/// <summary>
/// <c>forensics monitor -f arrow</c>: the monitor's batches as one Arrow IPC stream (docs/arrow.md).
/// One stream carries every kind: its first column, <c>table</c>, names the event table a row belongs to
/// (<c>exec</c>, <c>connect</c>, ..., and <c>loss</c> for what could not be delivered in a second), followed
/// by the union of the tables' columns in schema order (schemas/TABLE.vN.json), nullable, so a column a
/// table does not have is null in its rows. Each batch is the recorder's own batch (<see cref="TableBatch.ToArrow"/>),
/// its columns placed by name; the only conversion is a column two tables share with different unsigned
/// widths (drop.reason uint16, kdrop.reason uint32), widened to the wider type, values unchanged.
/// Every batch is written and flushed as it arrives (the session hands them on within 100 ms), so a reader
/// sees events live.
/// </summary>
public sealed class ArrowStreamSink : IMonitorSink, IDisposable
{
    private readonly Stream _out;
    private readonly Schema _schema;
    private readonly Dictionary<string, int> _index = new(StringComparer.Ordinal);
    private readonly ArrowStreamWriter _writer;
    private readonly Action<IOException>? _onBroken;
    private bool _broken;

    /// <summary>Why the output failed (a closed pipe, a full disk); null while it works.</summary>
    public IOException? Failure { get; private set; }
    private bool _ended;

    /// <param name="output">where the stream goes (stdout, a file); left open</param>
    /// <param name="tables">the event tables the stream may carry (<c>loss</c> is always added)</param>
    /// <param name="onBroken">called once when the output fails (a reader closed the pipe): the stream ends there</param>
    public ArrowStreamSink(Stream output, IEnumerable<string> tables, Action<IOException>? onBroken = null)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(tables);
        _out = output;
        _onBroken = onBroken;
        _schema = UnionSchema([.. tables.Where(t => t != "loss").Distinct(StringComparer.Ordinal), "loss"]);
        for (var i = 0; i < _schema.FieldsList.Count; i++)
            _index[_schema.FieldsList[i].Name] = i;
        _writer = new ArrowStreamWriter(_out, _schema, leaveOpen: true);
    }

    /// <summary>The stream's schema: <c>table</c>, then every table's columns.</summary>
    public Schema Schema => _schema;

    /// <summary>Rows written, per table.</summary>
    public IReadOnlyDictionary<string, long> Rows => _rows;

    private readonly Dictionary<string, long> _rows = new(StringComparer.Ordinal);

    /// <summary>The union schema of these tables' current schemas (column order: first table first).</summary>
    public static Schema UnionSchema(IReadOnlyList<string> tables)
    {
        ArgumentNullException.ThrowIfNull(tables);
        var fields = new List<(string Name, IArrowType Type, string Doc)> { ("table", StringType.Default, "the event table of the row") };
        foreach (var table in tables)
        {
            foreach (var c in SchemaCatalog.Current(table).Columns)
            {
                var type = ArrowTypeOf(c.Type);
                var i = fields.FindIndex(f => f.Name == c.Name);
                if (i < 0)
                {
                    fields.Add((c.Name, type, c.Doc));
                    continue;
                }
                if (fields[i].Type.TypeId == type.TypeId)
                    continue;
                if (Width(fields[i].Type) > 0 && Width(type) > 0)
                    fields[i] = fields[i] with { Type = Width(type) > Width(fields[i].Type) ? type : fields[i].Type };
                else
                    throw new InvalidOperationException($"{table}.{c.Name} is {c.Type}, another table's {c.Name} is {fields[i].Type.Name}: they cannot share a stream");
            }
        }
        var b = new Schema.Builder();
        foreach (var (name, type, _) in fields)
            b.Field(f => f.Name(name).DataType(type).Nullable(name != "table"));
        b.Metadata("forensics.tables", string.Join(",", tables));
        b.Metadata("forensics.stream", "monitor");
        return b.Build();
    }

    /// <summary>The Arrow type of a schemas/ type name.</summary>
    public static IArrowType ArrowTypeOf(string type) => type switch
    {
        "timestamp[ns,UTC]" => new TimestampType(TimeUnit.Nanosecond, "UTC"),
        "uint8" => UInt8Type.Default,
        "uint16" => UInt16Type.Default,
        "uint32" => UInt32Type.Default,
        "uint64" => UInt64Type.Default,
        "int32" => Int32Type.Default,
        "int64" => Int64Type.Default,
        "bool" => BooleanType.Default,
        "utf8" => StringType.Default,
        "binary" => BinaryType.Default,
        _ => throw new NotSupportedException($"no Arrow type for {type}"),
    };

    private static int Width(IArrowType t) => t.TypeId switch
    {
        ArrowTypeId.UInt8 => 1,
        ArrowTypeId.UInt16 => 2,
        ArrowTypeId.UInt32 => 4,
        ArrowTypeId.UInt64 => 8,
        _ => 0,
    };

    public void OnBatch(TableBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (_broken || _ended || batch.Count == 0)
            return;
        using var own = batch.ToArrow();
        var n = batch.Count;
        var arrays = new IArrowArray?[_schema.FieldsList.Count];
        var made = new List<IArrowArray>(); // ours to dispose; the batch's own arrays go with `own`
        try
        {
            var table = new StringArray.Builder();
            for (var i = 0; i < n; i++)
                table.Append(batch.Table);
            made.Add(arrays[0] = table.Build());
            for (var c = 0; c < own.ColumnCount; c++)
            {
                var name = own.Schema.FieldsList[c].Name;
                if (!_index.TryGetValue(name, out var at))
                    throw new InvalidOperationException($"{batch.Table}.{name} is not in the stream's schema (tables {_schema.Metadata["forensics.tables"]})");
                var target = _schema.FieldsList[at].DataType;
                var col = own.Column(c);
                if (col.Data.DataType.TypeId == target.TypeId)
                    arrays[at] = col;
                else
                    made.Add(arrays[at] = Widen(col, target));
            }
            for (var i = 0; i < arrays.Length; i++)
                if (arrays[i] is null)
                    made.Add(arrays[i] = Nulls(_schema.FieldsList[i].DataType, n));
            var rb = new RecordBatch(_schema, arrays!, n);
            Write(() =>
            {
                _writer.WriteRecordBatch(rb);
                _out.Flush();
            });
        }
        finally
        {
            foreach (var a in made)
                a.Dispose();
        }
        if (!_broken)
            _rows[batch.Table] = _rows.GetValueOrDefault(batch.Table) + n;
    }

    public void OnTick()
    {
    }

    public void OnEnd()
    {
        if (_ended)
            return;
        _ended = true;
        Write(() =>
        {
            _writer.WriteEnd();
            _out.Flush();
        });
    }

    private void Write(Action write)
    {
        if (_broken)
            return;
        try
        {
            write();
        }
        catch (IOException e)
        {
            _broken = true;
            Failure = e;
            _onBroken?.Invoke(e);
        }
    }

    private static IArrowArray Widen(IArrowArray a, IArrowType target)
    {
        ulong At(int i) => a switch
        {
            UInt8Array x => x.GetValue(i) ?? 0,
            UInt16Array x => x.GetValue(i) ?? 0,
            UInt32Array x => x.GetValue(i) ?? 0,
            _ => throw new InvalidOperationException($"cannot widen {a.Data.DataType.Name}"),
        };
        switch (target.TypeId)
        {
            case ArrowTypeId.UInt16:
            {
                var b = new UInt16Array.Builder();
                for (var i = 0; i < a.Length; i++)
                    if (a.IsNull(i)) b.AppendNull(); else b.Append((ushort)At(i));
                return b.Build();
            }
            case ArrowTypeId.UInt32:
            {
                var b = new UInt32Array.Builder();
                for (var i = 0; i < a.Length; i++)
                    if (a.IsNull(i)) b.AppendNull(); else b.Append((uint)At(i));
                return b.Build();
            }
            default:
            {
                var b = new UInt64Array.Builder();
                for (var i = 0; i < a.Length; i++)
                    if (a.IsNull(i)) b.AppendNull(); else b.Append(At(i));
                return b.Build();
            }
        }
    }

    /// <summary>An all-null array of a type: a zero validity bitmap, zeroed values (offsets for strings and binaries).</summary>
    internal static IArrowArray Nulls(IArrowType type, int length)
    {
        var bitmap = new ArrowBuffer(new byte[(length + 7) / 8]);
        ArrowBuffer[] buffers = type.TypeId switch
        {
            ArrowTypeId.String or ArrowTypeId.Binary => [bitmap, new ArrowBuffer(new byte[(length + 1) * 4]), ArrowBuffer.Empty],
            ArrowTypeId.Boolean => [bitmap, new ArrowBuffer(new byte[(length + 7) / 8])],
            _ => [bitmap, new ArrowBuffer(new byte[length * ((FixedWidthType)type).BitWidth / 8])],
        };
        return ArrowArrayFactory.BuildArray(new ArrayData(type, length, length, 0, buffers));
    }

    public void Dispose() => _writer.Dispose();
}
