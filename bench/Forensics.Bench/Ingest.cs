using System.Diagnostics;
using Forensics.Datapath;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Bpf;
using Forensics.Recorder;
using Forensics.Recorder.Tables;
using Forensics.Tests;

namespace Forensics.Bench;

/// <summary>One paced recording trial: the datapath program driven by BPF_PROG_TEST_RUN at a target rate, recorded to Parquet.</summary>
internal sealed record Trial(
    double TargetRate, double Seconds, ulong Emitted, ulong Failed, ulong UserspaceDropped, long Rows,
    long TraceBytes, double RecorderCpu, double ProducerCpu, long PeakRss, Dictionary<string, double> Threads)
{
    public double Rate => Emitted / Seconds;
    /// <summary>The kernel's own time per program run (BPF_PROG_TEST_RUN's duration), without the syscall and its wakeups.</summary>
    public double ProgramNsPerRun { get; init; }

    public string Table { get; init; } = "trace";

    public string Memory { get; init; } = "";

    /// <summary>Time the runtime suspended every managed thread for garbage collection, and collections per generation.</summary>
    public TimeSpan GcPause { get; init; }

    public string Gcs { get; init; } = "";

    public bool ZeroLoss => Failed + UserspaceDropped == 0 && Rows == (long)Emitted;
}

internal static class Ingest
{
    public static readonly byte[] Packet = Packets.Udp("10.0.0.5", 40000, "10.0.0.6", 53);

    /// <summary>
    /// The producer: trace events from the real datapath program, or (with <paramref name="execObject"/>, the
    /// compiled bench/bpf/exec_producer.bpf.c) full-size exec events through the same event channel.
    /// </summary>
    public static Trial Run(double rate, double seconds, string root, bool keep = false, string? execObject = null)
    {
        var dir = Path.Combine(root, $"ingest-{rate:0}");
        if (Directory.Exists(dir))
            Directory.Delete(dir, true);
        // FXB_CAPTURE=1: capture events (128 bytes of each packet) from the datapath instead of trace events
        bool capture = execObject is null && Environment.GetEnvironmentVariable("FXB_CAPTURE") == "1";
        var kind = execObject is not null ? EventKind.Exec : capture ? EventKind.Capture : EventKind.Trace;
        var table = Rows.TableOf(kind);
        var options = new EventOptions { Snaplen = capture ? 128u : 0, Kinds = new HashSet<EventKind> { kind } };
        using var source = execObject is null ? new ObjectSource(EmbeddedObjects.Datapath, options) : ObjectSource.FromFile(execObject, options);
        var prog = source.Object.Program(execObject is null ? "fx_from_endpoint" : "fxb_exec");
        var (mono, boot) = Recording.ClockOffsets();
        var context = new EventContext(mono) { BoottimeToUtcOffsetNs = boot };
        // FXB_CHUNKS, FXB_BATCH_ROWS, FXB_WRITERS: pipeline settings other than the recorder's defaults (for ablations)
        int Env(string name, int dflt) => int.TryParse(Environment.GetEnvironmentVariable(name), out var v) ? v : dflt;
        var defaults = new PipelineOptions();
        var pipeline = defaults with { Chunks = Env("FXB_CHUNKS", defaults.Chunks), BatchRows = Env("FXB_BATCH_ROWS", defaults.BatchRows) };
        var recordOptions = new RecordOptions { OutputDir = dir, Pipeline = pipeline };
        recordOptions = recordOptions with { WriterThreads = Env("FXB_WRITERS", recordOptions.WriterThreads) };
        var rec = new Recording([source], context, recordOptions);
        using var cts = new CancellationTokenSource();
        RecordingSummary? summary = null;
        GC.Collect();
        Proc.ResetPeak();
        var before = Proc.ThreadCpu();
        var pause0 = GC.GetTotalPauseDuration();
        int[] gcs0 = [GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2)];
        var cpuStart = Process.GetCurrentProcess().TotalProcessorTime;
        var recorder = new Thread(() => summary = rec.Run(() => "duration", cts.Token)) { Name = "fxb-decode" };
        recorder.Start();
        if (!rec.WaitStarted(TimeSpan.FromSeconds(30)))
            throw new InvalidOperationException("the recording did not start");

        // the producer: catch up to rate * elapsed, in calls of at least 1 ms worth of runs, at most 200k runs per call
        int minRuns = (int)Math.Clamp(rate / 1000, 1, 200_000);
        double producerCpu = 0;
        double produceNs = 0;
        long produced = 0;
        double produceSeconds = 0;
        var producer = new Thread(() =>
        {
            double cpu0 = Proc.ThisThreadCpu();
            var sw = Stopwatch.StartNew();
            while (sw.Elapsed.TotalSeconds < seconds)
            {
                long due = (long)(rate * sw.Elapsed.TotalSeconds);
                int n = (int)Math.Min(due - produced, 200_000);
                if (n >= minRuns) // a syscall costs microseconds: never pay it for a handful of runs
                {
                    var r = prog.TestRun(Packet, n);
                    produced += n;
                    produceNs += (double)r.DurationNs * n;
                }
                else
                {
                    Thread.Sleep(1);
                }
            }
            produceSeconds = sw.Elapsed.TotalSeconds;
            producerCpu = Proc.ThisThreadCpu() - cpu0;
        }) { Name = "fxb-producer" };
        producer.Start();
        producer.Join();
        var gcInfo = GC.GetGCMemoryInfo();
        var rss = Proc.RssParts(); // at the end of the load, before the drain
        Thread.Sleep(1500);
        var gcPause = GC.GetTotalPauseDuration() - pause0;
        var gcs = $"{GC.CollectionCount(0) - gcs0[0]}/{GC.CollectionCount(1) - gcs0[1]}/{GC.CollectionCount(2) - gcs0[2]}";
        var after = Proc.ThreadCpu(); // while the recorder's threads still run (an ended thread leaves /proc)
        cts.Cancel();
        recorder.Join(TimeSpan.FromSeconds(60));
        double processCpu = (Process.GetCurrentProcess().TotalProcessorTime - cpuStart).TotalSeconds;
        long peak = Proc.PeakRssBytes();
        var s = summary ?? throw new InvalidOperationException("the recording did not finish");
        var threads = after.ToDictionary(kv => kv.Key, kv => kv.Value - before.GetValueOrDefault(kv.Key), StringComparer.Ordinal);
        threads.Remove("fxb-producer");
        double recorderCpu = processCpu - producerCpu;
        var loss = s.Loss[table];
        long bytes = Directory.Exists(Path.Combine(dir, table))
            ? Directory.EnumerateFiles(Path.Combine(dir, table), "*.parquet", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length)
            : 0;
        var trial = new Trial(rate, produceSeconds, loss.Emitted, loss.Failed, loss.UserspaceDropped,
            s.Rows.GetValueOrDefault(table), bytes, recorderCpu, producerCpu, peak, threads)
        { Memory = $"rss_at_end[anon={rss.Anon / 1048576.0:0}MB file={rss.File / 1048576.0:0}MB shmem={rss.Shmem / 1048576.0:0}MB] gc_heap={gcInfo.HeapSizeBytes / 1048576.0:0}MB gc_committed={gcInfo.TotalCommittedBytes / 1048576.0:0}MB", Table = table, ProgramNsPerRun = produced > 0 ? produceNs / produced : 0, GcPause = gcPause, Gcs = gcs };
        if (!keep)
            Directory.Delete(dir, true);
        return trial;
    }

    public static string Line(Trial t) =>
        $"table={t.Table} target={t.TargetRate / 1e6:0.00}M/s achieved={t.Rate / 1e6:0.000}M/s emitted={t.Emitted} failed={t.Failed} userspace_dropped={t.UserspaceDropped} rows={t.Rows} " +
        $"zero_loss={t.ZeroLoss} recorder_cpu={t.RecorderCpu:0.00}s ({t.RecorderCpu / (t.Seconds + 1.8) * 100:0}% of a core over the trial) producer_cpu={t.ProducerCpu:0.00}s program_ns_per_run={t.ProgramNsPerRun:0} " +
        $"peak_rss={t.PeakRss / 1048576.0:0}MB gc_pause={t.GcPause.TotalMilliseconds:0}ms  gc0/1/2={t.Gcs} {t.Memory} bytes_per_event={(t.Rows > 0 ? (double)t.TraceBytes / t.Rows : 0):0.0} " +
        $"threads[{string.Join(", ", t.Threads.Where(kv => kv.Value >= 0.01).OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key}={kv.Value:0.00}s"))}]";
}
