using System.Diagnostics;
using System.Globalization;
using Forensics.Datapath;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Bpf;
using Forensics.Recorder;
using Forensics.Recorder.Sessions;
using Forensics.Recorder.Sources;

namespace Forensics.Bench;

/// <summary>
/// Issue 22's benchmarks: `query -f arrow` against `-f csv` and `-f json` over the same rows (wall time,
/// bytes, peak memory of the command), and the monitor's Arrow stream at a fixed event rate against the
/// recorder's own ingest (Parquet) at the same rate, in one run.
/// </summary>
internal static class ArrowBench
{
    /// <summary>
    /// The monitor session (the same pipeline and consumer thread as `forensics monitor`) fed by the datapath
    /// program's trace events at a fixed rate (BPF_PROG_TEST_RUN, as the ingest benchmark), its batches written
    /// by the Arrow sink to a file: rows streamed, loss, CPU.
    /// </summary>
    public static void Monitor(double rate, double seconds, string root)
    {
        CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
        Directory.CreateDirectory(root);
        var file = Path.Combine(root, "monitor.arrows");
        var options = new EventOptions { Snaplen = 0, Kinds = new HashSet<EventKind> { EventKind.Trace } };
        using var src = new ObjectSource(EmbeddedObjects.Datapath, options);
        var prog = src.Object.Program("fx_from_endpoint");
        var session = new MonitorSession(new MonitorSessionOptions
        {
            Kinds = new HashSet<EventKind> { EventKind.Trace },
            Sources = [ctx => new KernelSource([src], ctx)],
        });
        MonitorSummary? summary = null;
        long rows;
        long bytes;
        double cpu;
        double produceSeconds = 0;
        long produced = 0;
        using (var output = new FileStream(file, FileMode.Create, FileAccess.Write, FileShare.Read, 1 << 16))
        using (var sink = new ArrowStreamSink(output, ["trace"]))
        {
            using var cts = new CancellationTokenSource();
            GC.Collect();
            Proc.ResetPeak();
            var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
            var monitor = new Thread(() => summary = session.Run(sink, cts.Token)) { Name = "fxb-monitor" };
            monitor.Start();
            if (!session.Started.Wait(TimeSpan.FromSeconds(30)))
                throw new InvalidOperationException("the monitor did not start");
            double producerCpu = 0;
            var producer = new Thread(() =>
            {
                double c0 = Proc.ThisThreadCpu();
                int minRuns = (int)Math.Clamp(rate / 1000, 1, 200_000);
                var sw = Stopwatch.StartNew();
                while (sw.Elapsed.TotalSeconds < seconds)
                {
                    long due = (long)(rate * sw.Elapsed.TotalSeconds);
                    int n = (int)Math.Min(due - produced, 200_000);
                    if (n >= minRuns)
                    {
                        prog.TestRun(Ingest.Packet, n);
                        produced += n;
                    }
                    else
                        Thread.Sleep(1);
                }
                produceSeconds = sw.Elapsed.TotalSeconds;
                producerCpu = Proc.ThisThreadCpu() - c0;
            }) { Name = "fxb-producer" };
            producer.Start();
            producer.Join();
            Thread.Sleep(1500); // the last batches and a loss sample
            cts.Cancel();
            monitor.Join(TimeSpan.FromSeconds(60));
            cpu = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds - producerCpu;
            rows = sink.Rows.GetValueOrDefault("trace");
            output.Flush();
            bytes = output.Length;
        }
        var s = summary ?? throw new InvalidOperationException("the monitor did not finish");
        var lost = s.Failed + s.UserspaceDropped;
        Console.WriteLine(
            $"arrow-monitor target={rate / 1e6:0.00}M/s produced={produced} achieved={produced / produceSeconds / 1e6:0.000}M/s rows_streamed={rows} failed={s.Failed} userspace_dropped={s.UserspaceDropped} " +
            $"zero_loss={lost == 0 && rows == produced} monitor_cpu={cpu:0.00}s ({cpu / (produceSeconds + 1.5) * 100:0}% of a core) peak_rss={Proc.PeakRssBytes() / 1048576.0:0}MB " +
            $"stream_bytes={bytes} bytes_per_event={(rows > 0 ? (double)bytes / rows : 0):0.0}");
        File.Delete(file);
    }

    /// <summary>
    /// A recording of N trace events (the ingest benchmark's producer and recorder, kept), then the same query
    /// through the `forensics` command in each format, to a file: wall seconds and peak RSS of the command
    /// (/usr/bin/time), bytes written.
    /// </summary>
    public static void Query(long n, string root, string cli, IReadOnlyList<string>? formats = null)
    {
        CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
        // recordings of the ingest benchmark (trace events of the datapath program, 2M/s offered, at most 10 s each)
        // until they hold N rows: a loaded machine produces fewer per trial; `query` reads them together
        var recs = new List<string>();
        long total = 0;
        for (var i = 0; total < n && i < 100; i++)
        {
            var dir = Path.Combine(root, $"rec{i}");
            Directory.CreateDirectory(dir);
            var trial = Ingest.Run(2e6, Math.Clamp((n - total) / 2e6, 0.5, 10), dir, keep: true);
            Console.WriteLine("arrow-query-recording " + Ingest.Line(trial));
            recs.Add(Path.Combine(dir, "ingest-2000000"));
            total += trial.Rows;
        }
        const string sql = "SELECT time, time_ns, ktime_ns, src_ip, src_port, dst_ip, dst_port, protocol, ifindex, pkt_len FROM trace";
        try
        {
            foreach (var format in formats ?? ["arrow", "arrow-file", "csv", "json"])
            {
                var output = Path.Combine(root, "out." + format);
                var psi = new ProcessStartInfo("/usr/bin/time", ["-f", "%e %M", "dotnet", cli, "query", .. recs, sql, "-f", format, "-o", output, "--timeout", "3600", "--memory-limit", "4GB"])
                {
                    RedirectStandardError = true,
                    RedirectStandardOutput = true,
                };
                using var p = Process.Start(psi)!;
                var err = p.StandardError.ReadToEndAsync();
                p.StandardOutput.ReadToEnd();
                p.WaitForExit();
                var last = err.Result.Trim().Split('\n')[^1].Split(' ');
                var bytes = File.Exists(output) ? new FileInfo(output).Length : 0;
                Console.WriteLine(
                    $"arrow-query format={format} rows={total} exit={p.ExitCode} wall={last[0]}s peak_rss={(long.TryParse(last.ElementAtOrDefault(1), out var kb) ? kb / 1024 : 0)}MB bytes={bytes} bytes_per_row={(total > 0 ? (double)bytes / total : 0):0.0}"
                    + (p.ExitCode != 0 ? " error=" + err.Result.Trim().Split('\n')[0] : ""));
                if (File.Exists(output))
                    File.Delete(output);
            }
        }
        finally
        {
            foreach (var r in recs)
                Directory.Delete(r, true);
        }
    }
}
