using System.CommandLine;
using System.Runtime.InteropServices;
using Forensics.Datapath;
using Forensics.Datapath.Bpf;
using Forensics.Datapath.Probes;
using Forensics.Query.Render;
using Forensics.Recorder;
using Forensics.Recorder.Batches;
using Forensics.Recorder.Tables;

namespace Forensics.Cli;

/// <summary>
/// <c>forensics monitor</c>: the same events as <c>record</c>, printed live with
/// the renderers <c>replay</c> uses (cilium monitor lines for the datapath,
/// tetra compact lines for processes, JSON lines with -f json).
/// </summary>
public static class MonitorCommand
{
    public static Command Build()
    {
        var types = Vocabulary.Types($"Event kinds to show, comma-separated or repeated: {string.Join(", ", RecordCommand.KindNames)} (default: all but capture)", RecordCommand.KindNames);
        var format = Vocabulary.Format("text (time first), compact (as the live tools print) or json", "compact", "text", "compact", "json");
        var exclude = Vocabulary.Cidrs("--exclude-cidr", "Never report connects to this CIDR (repeatable); filtered in the kernel");
        var duration = Vocabulary.Duration("--duration", "-d", "Stop after this long (e.g. 30s); without it, until Ctrl-C");
        var cmd = new Command("monitor", "Print the probes' events live, as cilium monitor and tetra getevents -o compact would") { types, format, exclude, duration };
        cmd.SetAction(parse =>
        {
            var renderFormat = parse.GetValue(format) switch
            {
                "text" => RenderFormat.Text,
                "json" => RenderFormat.Json,
                _ => RenderFormat.Compact,
            };
            var kinds = RecordCommand.ParseKinds(parse.GetValue(types) ?? []);
            if (kinds.Count == 0)
                kinds = [.. Enumerable.Range(1, (int)Datapath.Abi.EventKind.Max - 1).Select(k => (Datapath.Abi.EventKind)k).Where(k => k != Datapath.Abi.EventKind.Capture)];
            List<System.Net.IPNetwork> excluded = [.. (parse.GetValue(exclude) ?? []).Select(Cidrs.Parse)];
            return Run(kinds, renderFormat, excluded, parse.GetValue(duration));
        });
        return cmd;
    }

    private static int Run(HashSet<Datapath.Abi.EventKind> kinds, RenderFormat format, List<System.Net.IPNetwork> excluded, TimeSpan? duration)
    {
        try
        {
            Prerequisites.EnsureKernelAccess();
        }
        catch (PrerequisiteException e)
        {
            return Cli.Fail(ExitCode.Prerequisite, e.Message);
        }
        var (mono, boot) = Recording.ClockOffsets();
        var context = new EventContext(mono)
        {
            BoottimeToUtcOffsetNs = boot,
            KernelDropReason = KernelDropReasons.FromRunningKernel().Name,
            KernelSymbol = KernelSymbols.Load().Resolve,
        };
        Probes probes;
        try
        {
            probes = Probes.Load(new ProbeOptions
            {
                Events = new EventOptions { Kinds = kinds, Snaplen = 0, SelfPid = (uint)Environment.ProcessId },
                Enabled = RecordCommand.ProbesFor(kinds),
                ExcludedCidrs = excluded,
            });
            probes.Attach();
            probes.SeedProcesses();
        }
        catch (BpfException e)
        {
            return Cli.Fail(ExitCode.Prerequisite, e.Message);
        }

        using (probes)
        using (var cts = new CancellationTokenSource())
        using (PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; cts.Cancel(); }))
        using (PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; cts.Cancel(); }))
        using (var pipeline = new Pipeline([probes], context, new PipelineOptions { BatchAge = TimeSpan.FromMilliseconds(100), BatchRows = 4096 }))
        using (var queue = new BatchQueue(4096, 3))
        {
            if (duration is { } d)
                cts.CancelAfter(d);
            Console.Error.WriteLine($"Listening for events on {Environment.ProcessorCount} CPUs ({string.Join(", ", kinds.Order().Select(Rows.TableOf))}); Ctrl-C quits");
            var args = new Dictionary<ulong, string>();
            var renderer = new LineRenderer(format) { ArgumentsOf = id => args.GetValueOrDefault(id) };
            // Batches of different kinds reach the printer in any order: hold rows for a moment and print
            // them in kernel-time order, so an exec is printed (and its arguments known) before its exit.
            var pending = new List<(ulong Ktime, long Seq, long Received, string Table, Dictionary<string, object?> Row)>();
            long seq = 0;
            void Flush(bool all)
            {
                long cutoff = Environment.TickCount64 - 300;
                var ready = pending.Where(p => all || p.Received <= cutoff).OrderBy(p => p.Ktime).ThenBy(p => p.Seq).ToList();
                if (ready.Count == 0)
                    return;
                pending.RemoveAll(p => all || p.Received <= cutoff);
                foreach (var (_, _, _, table, row) in ready)
                {
                    if (table == "exec" && row["exec_id"] is ulong id)
                        args[id] = (string?)row["arguments"] ?? "";
                    var line = renderer.Render(table, row);
                    if (line is not null)
                        Console.Out.WriteLine(line);
                }
            }
            var printer = new Thread(() =>
            {
                while (!queue.IsCompleted)
                {
                    if (queue.TryNext(out var rows, 100))
                    {
                        long now = Environment.TickCount64;
                        foreach (var row in BatchRows.Rows(rows.Batch))
                            pending.Add((row["ktime_ns"] is ulong k ? k : 0, seq++, now, rows.Batch.Table, row));
                        queue.Recycle(rows);
                    }
                    Flush(all: false);
                }
                Flush(all: true);
            }) { Name = "monitor printer" };
            printer.Start();
            pipeline.Run(queue, cts.Token);
            printer.Join();
            var lost = EventChannel.ReadCounters(probes.EmitStatsMap).Values.Aggregate(0UL, (a, c) => a + c.Failed);
            if (lost > 0)
                Console.Error.WriteLine($"lost {lost} events (ring buffer full)");
        }
        return (int)ExitCode.Ok;
    }
}
