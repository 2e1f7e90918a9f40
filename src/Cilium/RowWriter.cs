using Forensics.Recorder.Batches;

namespace Forensics.Cilium;

/// <summary>
/// Fills one row of a table's batch by column name. The batch comes from the table's own writer
/// (<see cref="Forensics.Recorder.Tables.Rows.For"/>), so it has every column of the current schema in
/// order; a name this source has no value for stays null (or zero, for a non-null number), and a
/// column this source knows but the schema lacks is ignored. Column lookups are resolved once per batch.
/// </summary>
public sealed class RowWriter
{
    private readonly Dictionary<string, Column> byName;
    private int row = -1;

    public RowWriter(TableBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        Batch = batch;
        byName = batch.Columns.ToDictionary(c => c.Name, StringComparer.Ordinal);
    }

    public TableBatch Batch { get; }

    public bool Has(string name) => byName.ContainsKey(name);

    /// <summary>Starts a row with every column at null, or zero/empty when not nullable.</summary>
    public void Begin()
    {
        row = Batch.NextRow();
        foreach (var c in Batch.Columns)
        {
            switch (c)
            {
                case StringColumn s: s.Values[row] = c.Nullable ? null : ""; break;
                case BoolColumn b: if (b.Valid is null) b.Values[row] = false; else b.SetNull(row); break;
                case Column<long> l: l.Values[row] = 0; break;
                case Column<byte> u8: u8.Values[row] = 0; break;
                case Column<ushort> u16: u16.Values[row] = 0; break;
                case Column<uint> u32: if (u32.Valid is null) u32.Values[row] = 0; else u32.SetNull(row); break;
                case Column<ulong> u64: if (u64.Valid is null) u64.Values[row] = 0; else u64.SetNull(row); break;
                case Column<int> i32: if (i32.Valid is null) i32.Values[row] = 0; else i32.SetNull(row); break;
                case BinaryColumn bin: bin.Set(row, []); break;
            }
        }
    }

    public void Str(string name, string? value)
    {
        if (byName.TryGetValue(name, out var c) && c is StringColumn s)
            s.Values[row] = value ?? (c.Nullable ? null : "");
    }

    /// <summary>A text that is null when empty (nullable columns: the source did not say).</summary>
    public void Opt(string name, string? value) => Str(name, string.IsNullOrEmpty(value) ? null : value);

    public void Time(string name, long utcNs)
    {
        if (byName.TryGetValue(name, out var c) && c is Column<long> t)
            t.Values[row] = utcNs;
    }

    public void U8(string name, byte v)
    {
        if (byName.TryGetValue(name, out var c) && c is Column<byte> x)
            x.Values[row] = v;
    }

    public void U16(string name, uint v)
    {
        if (byName.TryGetValue(name, out var c) && c is Column<ushort> x)
            x.Values[row] = (ushort)Math.Min(v, ushort.MaxValue);
    }

    public void U32(string name, uint v)
    {
        if (byName.TryGetValue(name, out var c) && c is Column<uint> x)
            x.Set(row, v); // (a nullable column: the value, not null)
    }

    public void U64(string name, ulong? v)
    {
        if (!byName.TryGetValue(name, out var c) || c is not Column<ulong> x)
            return;
        if (v is { } value)
            x.Set(row, value);
        else if (x.Valid is not null)
            x.SetNull(row);
    }

    public void I32(string name, int? v)
    {
        if (!byName.TryGetValue(name, out var c) || c is not Column<int> x)
            return;
        if (v is { } value)
            x.Set(row, value);
        else if (x.Valid is not null)
            x.SetNull(row);
    }

    public void Bool(string name, bool? v)
    {
        if (!byName.TryGetValue(name, out var c) || c is not BoolColumn x)
            return;
        if (v is { } value)
            x.Set(row, value);
        else if (x.Valid is not null)
            x.SetNull(row);
    }
}
