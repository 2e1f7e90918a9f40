using System.Diagnostics;
using Forensics.Datapath;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Bpf;
using Forensics.Recorder;
using Forensics.Recorder.Storage;
using Forensics.Recorder.Tables;
using Forensics.Tests;

namespace Forensics.Bench;

/// <summary>
/// The Parquet writer alone, on one thread: real trace records (made by the datapath program through
/// BPF_PROG_TEST_RUN, varied in address and port) decoded into full batches once, then written again and
/// again through <see cref="SegmentWriter"/>. Prints CPU per row, bytes allocated per row and collections.
/// </summary>
internal static class WriterBench
{
    public static void Run(string root, int batches)
    {
        var records = new List<byte[]>();
        using (var source = new ObjectSource(EmbeddedObjects.Datapath, new EventOptions { Snaplen = 0, Kinds = new HashSet<EventKind> { EventKind.Trace } }))
        {
            var prog = source.Object.Program("fx_from_endpoint");
            using var reader = new RingBufferReader(source.EventsMap, r => records.Add(r.ToArray()));
            var rnd = new Random(7);
            for (int i = 0; i < 65536; i++)
            {
                // a realistic spread: 200 sources, 50 destinations, random ports
                var pkt = Packets.Udp($"10.0.{rnd.Next(2)}.{rnd.Next(1, 101)}", (ushort)rnd.Next(32768, 60999), $"10.1.0.{rnd.Next(1, 51)}", 53);
                prog.TestRun(pkt, 1);
                if (i % 1024 == 1023)
                    reader.Consume();
            }
            reader.Consume();
        }
        var (mono, boot) = Recording.ClockOffsets();
        var ctx = new EventContext(mono) { BoottimeToUtcOffsetNs = boot };
        var rows = Rows.For(EventKind.Trace, records.Count)!;
        foreach (var r in records)
            rows.Append(r, ctx);
        var dir = Path.Combine(root, "writer");
        if (Directory.Exists(dir))
            Directory.Delete(dir, true);
        long sealedBytes = 0;
        var w = new SegmentWriter(dir, "bench", rows.Batch, "bench", f => sealedBytes += f.Bytes, TimeSpan.FromSeconds(2));
        void Write(int n)
        {
            for (int i = 0; i < n; i++)
                w.WriteAsync(rows.Batch).GetAwaiter().GetResult();
        }
        Write(20); // warm-up: tier-1 code
        Thread.Sleep(500);
        Write(20);
        w.SealAsync().GetAwaiter().GetResult();
        int[] gc0 = [GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2)];
        var pause0 = GC.GetTotalPauseDuration();
        long alloc0 = GC.GetAllocatedBytesForCurrentThread();
        double cpu0 = Proc.ThisThreadCpu();
        var sw = Stopwatch.StartNew();
        Write(batches);
        double cpu = Proc.ThisThreadCpu() - cpu0;
        var wall = sw.Elapsed.TotalSeconds;
        long alloc = GC.GetAllocatedBytesForCurrentThread() - alloc0;
        var pause = GC.GetTotalPauseDuration() - pause0;
        long n = (long)batches * rows.Batch.Count;
        w.SealAsync().GetAwaiter().GetResult();
        Console.WriteLine($"writer rows={n} batch_rows={rows.Batch.Count} wall_us_per_row={wall * 1e6 / n:0.000} cpu_us_per_row={cpu * 1e6 / n:0.000} " +
            $"rows_per_s_one_core={n / cpu / 1e6:0.00}M alloc_bytes_per_row={(double)alloc / n:0.0} gc0/1/2={GC.CollectionCount(0) - gc0[0]}/{GC.CollectionCount(1) - gc0[1]}/{GC.CollectionCount(2) - gc0[2]} " +
            $"gc_pause={pause.TotalMilliseconds:0}ms bytes_per_row={(double)sealedBytes / (n + 40L * rows.Batch.Count):0.0}");
        w.DisposeAsync().AsTask().GetAwaiter().GetResult();
        Directory.Delete(dir, true);
    }
}
