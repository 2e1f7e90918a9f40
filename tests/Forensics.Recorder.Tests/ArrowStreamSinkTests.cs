using Forensics.Format;
using Forensics.Recorder.Batches;
using Forensics.Recorder.Sessions;
using Forensics.Tests;

namespace Forensics.Recorder.Tests;

/// <summary>monitor -f arrow's stream, read back by apache-arrow (Node): no kernel needed.</summary>
public class ArrowStreamSinkTests
{
    private const long T0 = 1_764_000_000_123_456_789; // ns: the last digits show nothing was rounded

    private static TableBatch Batch(string table, int rows, Action<TableBatch, int> fill)
    {
        var b = TableBatch.ForSchema(SchemaCatalog.Current(table), 64);
        for (var i = 0; i < rows; i++)
            fill(b, b.NextRow());
        return b;
    }

    [ArrowReaderFact]
    public void ArrowStreamSink_ExecKdropAndLoss_OneStreamWithExactTypesAndValues()
    {
        var file = Path.Combine(Scratch.Dir("fx-arrow-"), "monitor.arrows");
        using (var output = File.Create(file))
        {
            using var sink = new ArrowStreamSink(output, ["exec", "kdrop"]);
            sink.OnBatch(Batch("exec", 2, (b, i) =>
            {
                b.Set(i, "time", T0 + i);
                b.Set(i, "exec_id", ulong.MaxValue - (ulong)i);
                b.Set(i, "binary", "/bin/sh");
                b.Set(i, "arguments", i == 0 ? "-c \"exit 3\"" : "");
                b.Set(i, "pod", null);
            }));
            sink.OnBatch(Batch("kdrop", 1, (b, i) =>
            {
                b.Set(i, "time", T0 + 1000);
                b.Set(i, "reason", 70_000u); // a uint32 reason: wider than drop's uint16 column
                b.Set(i, "function", "tcp_v4_rcv");
            }));
            sink.OnBatch(Batch("loss", 1, (b, i) =>
            {
                b.Set(i, "time", T0 - T0 % 1_000_000_000);
                b.Set(i, "kind", "exec");
                b.Set(i, "emitted", 10ul);
                b.Set(i, "failed", 3ul);
                b.Set(i, "userspace_dropped", 0ul);
            }));
            sink.OnEnd();
            Assert.Equal(2, sink.Rows["exec"]);
        }
        var read = ArrowReader.ReadFile(file);
        Assert.Equal("stream", read.Format);
        Assert.Equal(3, read.Batches.Count);
        Assert.Equal(new ArrowField("table", "utf8", false), read.Schema[0]);
        Assert.Equal("timestamp[ns,UTC]", read.Schema[read.Column("time")].Type);
        Assert.Equal("uint64", read.Schema[read.Column("exec_id")].Type);
        Assert.Equal("uint32", read.Schema[read.Column("reason")].Type);
        Assert.Equal("uint64", read.Schema[read.Column("failed")].Type);
        Assert.Equal("exec,kdrop,loss", read.Metadata["forensics.tables"]);
        var rows = read.Rows.ToList();
        string? At(int row, string col) => ArrowRead.Text(rows[row][read.Column(col)]);
        Assert.Equal(["exec", "exec", "kdrop", "loss"], rows.Select(r => ArrowRead.Text(r[0])));
        Assert.Equal((T0 + 1).ToString(System.Globalization.CultureInfo.InvariantCulture), At(1, "time"));
        Assert.Equal("18446744073709551615", At(0, "exec_id"));
        Assert.Equal("-c \"exit 3\"", At(0, "arguments"));
        Assert.Null(At(0, "pod"));
        Assert.Null(At(0, "reason")); // exec has no reason: null in its rows
        Assert.Equal("70000", At(2, "reason"));
        Assert.Equal("tcp_v4_rcv", At(2, "function"));
        Assert.Null(At(2, "exec_id"));
        Assert.Equal("exec", At(3, "kind"));
        Assert.Equal("3", At(3, "failed"));
    }

    [Fact]
    public void ArrowStreamSink_DropAndKdropReason_WidenedToUInt32()
    {
        var schema = ArrowStreamSink.UnionSchema(["drop", "kdrop"]);
        Assert.Equal(Apache.Arrow.Types.ArrowTypeId.UInt32, schema.GetFieldByName("reason").DataType.TypeId);
    }

    [Fact]
    public void ArrowStreamSink_ClosedOutput_StopsAndSaysWhy()
    {
        IOException? seen = null;
        using var sink = new ArrowStreamSink(new FailingStream(), ["exec"], e => seen = e);
        sink.OnBatch(Batch("exec", 1, (b, i) => b.Set(i, "time", T0)));
        Assert.NotNull(seen);
        Assert.Same(seen, sink.Failure);
        sink.OnBatch(Batch("exec", 1, (b, i) => b.Set(i, "time", T0))); // no second throw
        Assert.False(sink.Rows.ContainsKey("exec"));
    }

    private sealed class FailingStream : MemoryStream
    {
        private int writes;

        public override void Write(byte[] buffer, int offset, int count)
        {
            if (++writes > 1) throw new IOException("Broken pipe");
            base.Write(buffer, offset, count);
        }

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            if (++writes > 1) throw new IOException("Broken pipe");
            base.Write(buffer);
        }
    }
}
