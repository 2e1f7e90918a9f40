namespace Forensics.Recorder.Batches;

/// <summary>A batch's rows as column-name -> value maps, typed as a reader of the Parquet file would see them.</summary>
public static class BatchRows
{
    public static IEnumerable<Dictionary<string, object?>> Rows(TableBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        for (int i = 0; i < batch.Count; i++)
        {
            var row = new Dictionary<string, object?>(batch.Columns.Count, StringComparer.Ordinal);
            foreach (var c in batch.Columns)
            {
                row[c.Name] = Value(c, i);
                // the event's time to the ns, as the views of a recording carry it (a DateTime holds 100 ns ticks)
                if (c.Name == "time" && c is Column<long> t && c.Type == ColumnType.TimestampNsUtc)
                    row["time_ns"] = t.Values[i];
            }
            yield return row;
        }
    }

    private static object? Value(Column c, int i) => c switch
    {
        Column<long> t when c.Type == ColumnType.TimestampNsUtc => DateTime.UnixEpoch.AddTicks(t.Values[i] / 100),
        Column<byte> b => b.Values[i],
        Column<ushort> u16 => u16.Values[i],
        Column<uint> u32 => u32.Valid is null || u32.Valid[i] ? u32.Values[i] : null,
        Column<ulong> u64 => u64.Valid is null || u64.Valid[i] ? u64.Values[i] : null,
        Column<int> i32 => i32.Valid is null || i32.Valid[i] ? i32.Values[i] : null,
        Column<long> i64 => i64.Values[i],
        BoolColumn bo => bo.Valid is null || bo.Valid[i] ? bo.Values[i] : null,
        StringColumn s => s.Values[i],
        BinaryColumn bin => bin.Values[i]?.ToArray(), // a copy: the batch reuses its cells once recycled
        _ => null,
    };
}
