using Apache.Arrow;
using Apache.Arrow.Ipc;
using Apache.Arrow.Types;
using ArrowSchema = Apache.Arrow.Schema;

namespace Forensics.Query.Output;

/// <summary>
/// <c>-f arrow</c> / <c>-f arrow-file</c>: a query's result as an Arrow IPC stream or file (docs/arrow.md),
/// batch by batch as DuckDB produces them (its own Arrow conversion of each 2048-row chunk), so a result
/// of any size passes through bounded memory. Types are DuckDB's Arrow types (unsigned integers stay
/// unsigned, VARCHAR utf8, BLOB binary, HUGEINT decimal128(38,0)) with one change: every timestamp is
/// written in nanoseconds, keeping its zone (UTC for TIMESTAMPTZ). DuckDB keeps microseconds, so a
/// timestamp column is exact to the nanosecond when the result also has its companion <c>NAME_ns</c>
/// (the event views' <c>time</c> has <c>time_ns</c>, derived from the kernel's stamp): its value is taken
/// from there. Each timestamp field says which it is in its metadata (<c>forensics.time</c>).
/// </summary>
public static class ArrowResultWriter
{
    /// <summary>Runs the query and writes its result; returns the rows written.</summary>
    public static long Write(QuerySession session, string sql, bool file, Stream output, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(output);
        ArrowStreamWriter? writer = null;
        Plan? plan = null;
        long rows = 0;
        try
        {
            session.StreamArrow(sql, schema =>
            {
                plan = Plan.Of(schema, metadata);
                writer = file ? new ArrowFileWriter(output, plan.Schema, leaveOpen: true) : new ArrowStreamWriter(output, plan.Schema, leaveOpen: true);
            }, batch =>
            {
                var made = new List<IArrowArray>();
                try
                {
                    var arrays = plan!.Convert(batch, made);
                    writer!.WriteRecordBatch(new RecordBatch(plan.Schema, arrays, batch.Length));
                    rows += batch.Length;
                }
                finally
                {
                    foreach (var a in made)
                        a.Dispose();
                }
            });
            writer!.WriteEnd();
            output.Flush();
            return rows;
        }
        finally
        {
            writer?.Dispose();
        }
    }

    /// <summary>How each of DuckDB's columns becomes a column of the output.</summary>
    private sealed class Plan
    {
        private Plan(ArrowSchema schema, (int Source, int? ExactNs, long Factor)[] columns)
        {
            Schema = schema;
            Columns = columns;
        }

        public ArrowSchema Schema { get; }

        /// <summary>Per column: for a timestamp, the factor to nanoseconds and the index of its NAME_ns companion.</summary>
        private (int Source, int? ExactNs, long Factor)[] Columns { get; }

        public static Plan Of(ArrowSchema duck, IReadOnlyDictionary<string, string>? metadata)
        {
            var fields = duck.FieldsList;
            var columns = new (int, int?, long)[fields.Count];
            var b = new ArrowSchema.Builder();
            for (var i = 0; i < fields.Count; i++)
            {
                var f = fields[i];
                columns[i] = (i, null, 1);
                if (f.DataType is TimestampType ts)
                {
                    var companion = Enumerable.Range(0, fields.Count).Cast<int?>()
                        .FirstOrDefault(j => fields[j!.Value].Name == f.Name + "_ns" && fields[j.Value].DataType.TypeId == ArrowTypeId.Int64);
                    var factor = ts.Unit switch
                    {
                        TimeUnit.Second => 1_000_000_000L,
                        TimeUnit.Millisecond => 1_000_000L,
                        TimeUnit.Microsecond => 1_000L,
                        _ => 1L,
                    };
                    columns[i] = (i, companion, factor);
                    var precision = companion is not null ? $"exact: nanoseconds from {f.Name}_ns"
                        : factor == 1 ? "nanoseconds" : $"{(ts.Unit == TimeUnit.Microsecond ? "microseconds" : ts.Unit.ToString().ToLowerInvariant() + "s")} (as DuckDB holds it) in nanosecond units";
                    b.Field(new Field(f.Name, new TimestampType(TimeUnit.Nanosecond, ts.Timezone), f.IsNullable,
                        [new KeyValuePair<string, string>("forensics.time", precision)]));
                }
                else
                    b.Field(f);
            }
            foreach (var (k, v) in metadata ?? new Dictionary<string, string>())
                b.Metadata(k, v);
            return new Plan(b.Build(), columns);
        }

        public IArrowArray[] Convert(RecordBatch batch, List<IArrowArray> made)
        {
            var arrays = new IArrowArray[Columns.Length];
            for (var i = 0; i < Columns.Length; i++)
            {
                var (source, exact, factor) = Columns[i];
                var col = batch.Column(source);
                if (col is not TimestampArray ts || (factor == 1 && exact is null))
                {
                    arrays[i] = col;
                    continue;
                }
                var ns = exact is { } e ? (Int64Array)batch.Column(e) : null;
                var values = new long[ts.Length];
                var src = ts.Values;
                for (var r = 0; r < values.Length; r++)
                {
                    if (ns is not null && ns.GetValue(r) is { } exactValue)
                        values[r] = exactValue;
                    else if (ts.IsValid(r))
                        values[r] = checked(src[r] * factor); // years past 2262 do not fit nanoseconds: an error, not a wrong value
                }
                var validity = ts.NullCount == 0 ? ArrowBuffer.Empty : ts.Offset == 0 ? ts.NullBitmapBuffer : Bitmap(ts);
                var type = (TimestampType)Schema.FieldsList[i].DataType;
                var data = new ArrayData(type, ts.Length, ts.NullCount, 0,
                    [validity, new ArrowBuffer(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray())]);
                var array = ArrowArrayFactory.BuildArray(data);
                made.Add(array);
                arrays[i] = array;
            }
            return arrays;
        }

        private static ArrowBuffer Bitmap(TimestampArray a)
        {
            var b = new ArrowBuffer.BitmapBuilder(a.Length);
            for (var r = 0; r < a.Length; r++)
                b.Append(a.IsValid(r));
            return b.Build();
        }
    }
}
