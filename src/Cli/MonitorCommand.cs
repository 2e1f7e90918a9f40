using System.CommandLine;
using System.Runtime.InteropServices;
using Forensics.Format;
using Forensics.Datapath;
using Forensics.Datapath.Bpf;
using Forensics.Datapath.Probes;
using Forensics.Query.Render;
using Forensics.Recorder;
using Forensics.Recorder.Batches;
using Forensics.Recorder.Sessions;
using Forensics.Recorder.Tables;

namespace Forensics.Cli;

/// <summary>
/// <c>forensics monitor</c>: the same events as <c>record</c>, printed live with
/// the renderers <c>replay</c> uses (cilium monitor lines for the datapath,
/// tetra compact lines for processes, JSON lines with -o json).
/// </summary>
public static class MonitorCommand
{
    public static Command Build()
    {
        var types = new Option<string[]>("--types", "-t") { Description = $"Event kinds to show: {string.Join(", ", RecordCommand.KindNames)} (default: all but capture)", AllowMultipleArgumentsPerToken = true };
        var output = new Option<string>("--output", "-o") { Description = "text (time first), compact (as the live tools print), json, or arrow (one Arrow IPC stream, a table column naming each row's table: docs/arrow.md)", DefaultValueFactory = _ => "compact" };
        var file = new Option<string?>("--output-file", "-O") { Description = "write to this file instead of standard output" };
        var exclude = new Option<string[]>("--exclude-cidr") { Description = "Never report connects to this CIDR (repeatable); filtered in the kernel" };
        var duration = new Option<string?>("--duration", "-d") { Description = "Stop after this long (e.g. 30s); without it, until Ctrl-C" };
        var cmd = new Command("monitor", "Print the probes' events live, as cilium monitor and tetra getevents -o compact would") { types, output, file, exclude, duration };
        cmd.SetAction(parse =>
        {
            RenderFormat? format;
            HashSet<Datapath.Abi.EventKind> kinds;
            TimeSpan? d;
            List<string> excluded;
            try
            {
                format = parse.GetValue(output) switch
                {
                    "text" => RenderFormat.Text,
                    "compact" => RenderFormat.Compact,
                    "json" => RenderFormat.Json,
                    "arrow" => null,
                    var o => throw new FormatException($"unknown output '{o}' (text, compact, json, arrow)"),
                };
                kinds = RecordCommand.ParseKinds(parse.GetValue(types) ?? []);
                if (kinds.Count == 0)
                    kinds = [.. Enumerable.Range(1, (int)Datapath.Abi.EventKind.Max - 1).Select(k => (Datapath.Abi.EventKind)k).Where(k => k != Datapath.Abi.EventKind.Capture)];
                d = parse.GetValue(duration) is { } ds ? Args.ParseDuration(ds) : null;
                excluded = [.. parse.GetValue(exclude) ?? []];
                foreach (var c in excluded)
                    Cidrs.Parse(c); // a usage error before anything loads
                if (format is null && parse.GetValue(file) is null && !Console.IsOutputRedirected)
                    throw new FormatException("-o arrow writes binary: redirect standard output or give --output-file");
            }
            catch (FormatException e)
            {
                return Cli.Fail(ExitCode.Usage, e.Message);
            }
            return Run(kinds, format, parse.GetValue(file), excluded, d);
        });
        return cmd;
    }

    private static int Run(HashSet<Datapath.Abi.EventKind> kinds, RenderFormat? format, string? file, List<string> excluded, TimeSpan? duration)
    {
        var session = new MonitorSession(new MonitorSessionOptions { Kinds = kinds, ExcludeCidrs = excluded, Duration = duration });
        using var cts = new CancellationTokenSource();
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; cts.Cancel(); });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; cts.Cancel(); });
        var announce = new Thread(() =>
        {
            if (WaitHandle.WaitAny([session.Started.WaitHandle, cts.Token.WaitHandle]) == 0)
                Console.Error.WriteLine($"Listening for events on {Environment.ProcessorCount} CPUs ({string.Join(", ", session.Kinds.Order().Select(Rows.TableOf))}); Ctrl-C quits");
        }) { IsBackground = true };
        announce.Start();
        MonitorSummary summary;
        Stream? output = null;
        ArrowStreamSink? arrow = null;
        try
        {
            IMonitorSink sink;
            if (format is { } f)
                sink = new LinePrinter(f);
            else
            {
                output = file is null ? Console.OpenStandardOutput() : new FileStream(file, FileMode.Create, FileAccess.Write, FileShare.Read);
                // a reader that closes the pipe ends the monitor, as it ends `cilium monitor | head`
                sink = arrow = new ArrowStreamSink(output, session.Kinds.Order().Select(Rows.TableOf), _ => cts.Cancel());
            }
            summary = session.Run(sink, cts.Token);
        }
        catch (RecordingSetupException e)
        {
            return Cli.Fail(e.Problem == SetupProblem.BadInput ? ExitCode.Usage : ExitCode.Prerequisite, e.Message);
        }
        catch (IOException e)
        {
            return Cli.Fail(ExitCode.Failure, e.Message);
        }
        catch (UnauthorizedAccessException e)
        {
            return Cli.Fail(ExitCode.Failure, e.Message);
        }
        finally
        {
            arrow?.Dispose();
            output?.Dispose();
        }
        // a closed pipe on standard output is the reader leaving; a file that cannot be written is an error
        if (file is not null && arrow?.Failure is { } broken)
            return Cli.Fail(FileSystem.IsDiskFull(broken) ? ExitCode.DiskFull : ExitCode.Failure, $"{file}: {broken.Message}");
        if (summary.Failed + summary.UserspaceDropped > 0)
            Console.Error.WriteLine($"lost {summary.Failed + summary.UserspaceDropped} events (ring buffer full: {summary.Failed}, user space: {summary.UserspaceDropped})");
        return (int)ExitCode.Ok;
    }

    /// <summary>
    /// Prints batches as lines. Batches of different kinds arrive in any order: rows are held for a moment and
    /// printed in kernel-time order, so an exec is printed (and its arguments known) before its exit.
    /// </summary>
    private sealed class LinePrinter : IMonitorSink
    {
        private readonly Dictionary<ulong, string> args = [];
        private readonly LineRenderer renderer;
        private readonly List<(ulong Ktime, long Seq, long Received, string Table, Dictionary<string, object?> Row)> pending = [];
        private long seq;

        public LinePrinter(RenderFormat format) => renderer = new LineRenderer(format) { ArgumentsOf = id => args.GetValueOrDefault(id), Node = Environment.MachineName };

        public void OnBatch(TableBatch batch)
        {
            long now = Environment.TickCount64;
            foreach (var row in BatchRows.Rows(batch))
                pending.Add((row.TryGetValue("ktime_ns", out var k) && k is ulong kt ? kt : 0, seq++, now, batch.Table, row));
        }

        public void OnTick() => Flush(all: false);

        public void OnEnd() => Flush(all: true);

        private void Flush(bool all)
        {
            long now = Environment.TickCount64, cutoff = now - 300, exitCutoff = now - 2000;
            // an exit waits (up to 2 s) for its exec, which may come in a later batch, so that the exec is printed
            // first and the exit carries its arguments
            var execs = pending.Where(p => p.Table == "exec" && p.Row["exec_id"] is ulong && (all || p.Received <= cutoff))
                .Select(p => (ulong)p.Row["exec_id"]!).ToHashSet();
            bool Ready((ulong Ktime, long Seq, long Received, string Table, Dictionary<string, object?> Row) p) =>
                all || (p.Received <= cutoff && (p.Table != "exit" || p.Received <= exitCutoff
                    || p.Row["exec_id"] is not ulong id || args.ContainsKey(id) || execs.Contains(id)));
            var ready = pending.Where(Ready).OrderBy(p => p.Ktime).ThenBy(p => p.Seq).ToList();
            if (ready.Count == 0)
                return;
            pending.RemoveAll(p => Ready(p));
            foreach (var (_, _, _, table, row) in ready)
            {
                if (table == "exec" && row["exec_id"] is ulong id)
                    args[id] = (string?)row["arguments"] ?? "";
                var line = renderer.Render(table, row);
                if (line is not null)
                    Console.Out.WriteLine(line);
            }
        }
    }
}
