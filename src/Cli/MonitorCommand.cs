using System.CommandLine;
using System.Runtime.InteropServices;
using Forensics.Format;
using Forensics.Datapath;
using Forensics.Datapath.Bpf;
using Forensics.Datapath.Probes;
using Forensics.Datapath.Monitoring;
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
        var types = Vocabulary.Types($"Event kinds to show, comma-separated or repeated: {string.Join(", ", RecordCommand.KindNames)} (default: all but capture)", RecordCommand.KindNames);
        var output = Vocabulary.Format("text (time first), compact (as the live tools print), json, or arrow (one Arrow IPC stream, a table column naming each row's table: docs/arrow.md)", "compact", "text", "compact", "json", "arrow");
        var file = Vocabulary.Output("write to this file (created 0600) instead of standard output");
        var exclude = Vocabulary.Cidrs("--exclude-cidr", "Never report connects to this CIDR (repeatable); filtered in the kernel");
        var duration = Vocabulary.Duration("--duration", "-d", "Stop after this long (e.g. 30s); without it, until Ctrl-C");
        var runtime = new Option<string?>("--runtime-endpoint") { Description = "Container runtime CRI socket for pod and container attribution (default: a well-known containerd or CRI-O socket that exists)" };
        var pods = Vocabulary.InputFile("--pods-file", "Attribute pods and containers from this file (kubectl get pods -A -o json) instead of asking the runtime");
        runtime.Validators.Add(r =>
        {
            if (r.Tokens.Count > 0 && string.IsNullOrWhiteSpace(r.Tokens[0].Value))
                r.AddError("--runtime-endpoint: an empty address");
        });
        var labs = new Option<string[]>("--lab") { Description = "Show the datapath of this running lab only (repeatable; default: every running datapath, see `forensics lab up`)" };
        labs.Validators.Add(r =>
        {
            foreach (var v in r.Tokens.Select(t => t.Value))
                if (v.Length == 0 || v.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')))
                    r.AddError($"--lab: '{v}' is not a lab name");
        });
        var from = new Option<string[]>("--from") { Description = "Filter by source endpoint id (repeatable, as cilium monitor --from)", AllowMultipleArgumentsPerToken = true };
        var to = new Option<string[]>("--to") { Description = "Filter by destination endpoint id (repeatable, as cilium monitor --to)", AllowMultipleArgumentsPerToken = true };
        var related = new Option<string[]>("--related-to") { Description = "Filter by either source or destination endpoint id (repeatable, as cilium monitor --related-to)", AllowMultipleArgumentsPerToken = true };
        foreach (var ids in new[] { from, to, related })
            ids.Validators.Add(r =>
            {
                foreach (var v in r.Tokens.Select(t => t.Value))
                    if (!ushort.TryParse(v, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out _))
                        r.AddError($"{r.Option.Name}: '{v}' is not an endpoint id (0-65535)");
            });
        var verbose = new Option<bool>("--verbose", "-v") { Description = "More detail: drops and traces as cilium monitor's verbose lines (CPU, mark, source endpoint, bytes, identities, destination endpoint)" };
        var cmd = new Command("monitor", "Print events live: every running datapath's (drop, policy, nat, trace, capture, from its monitor socket) as cilium monitor prints them, and the probes' as tetra getevents -o compact would")
        {
            types, output, file, exclude, duration, labs, from, to, related, verbose, runtime, pods,
        };
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
                d = parse.GetValue(duration);
                excluded = [.. parse.GetValue(exclude) ?? []];
                foreach (var c in excluded)
                    Cidrs.Parse(c); // a usage error before anything loads
                if (format is null && parse.GetValue(file) is null && !Console.IsOutputRedirected)
                    throw new FormatException("-f arrow writes binary: redirect standard output or give --output");
                if (parse.GetValue(runtime) is not null && parse.GetValue(pods) is not null)
                    throw new FormatException("--runtime-endpoint and --pods-file both say where pods come from: give one");
            }
            catch (FormatException e)
            {
                return ForensicsCommand.Fail(ExitCode.Usage, e.Message);
            }
            EndpointFilter filter;
            try
            {
                filter = new EndpointFilter(Ids(parse.GetValue(from), "--from"), Ids(parse.GetValue(to), "--to"), Ids(parse.GetValue(related), "--related-to"));
            }
            catch (FormatException e)
            {
                return ForensicsCommand.Fail(ExitCode.Usage, e.Message);
            }
            return Run(kinds, format, parse.GetValue(file), excluded, d, parse.GetValue(labs) ?? [], filter, parse.GetValue(verbose), parse.GetValue(runtime), parse.GetValue(pods));
        });
        return cmd;
    }

    private static HashSet<ushort> Ids(string[]? values, string option)
    {
        var ids = new HashSet<ushort>();
        foreach (var v in (values ?? []).SelectMany(x => x.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)))
        {
            if (!ushort.TryParse(v, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var id))
                throw new FormatException($"{option} {v}: not an endpoint id (0-65535)");
            ids.Add(id);
        }
        return ids;
    }

    private static int Run(HashSet<Datapath.Abi.EventKind> kinds, RenderFormat? format, string? file, List<string> excluded, TimeSpan? duration,
        string[] labs, EndpointFilter filter, bool verbose, string? runtimeEndpoint, string? podsFile)
    {
        var datapathKinds = RecordingSession.DatapathKinds(kinds);
        if (labs.Length == 0 && datapathKinds.Count > 0 && RecordingSession.ProbesFor(kinds) == ProbeSet.None
            && Forensics.Datapath.Lab.LabState.Serving().Count == 0)
            return ForensicsCommand.Fail(ExitCode.Prerequisite, $"no running datapath to show {string.Join(",", datapathKinds.Order().Select(Rows.TableOf))} events of: start one with `forensics lab up FILE`");
        var session = new MonitorSession(new MonitorSessionOptions
        {
            Kinds = kinds,
            ExcludeCidrs = excluded,
            Duration = duration,
            Attach = labs,
            RuntimeEndpoint = runtimeEndpoint,
            PodsFile = podsFile,
            // cilium monitor's own line for a perf ring that lost samples (pkg/monitor/format/format.go FormatLostEvent)
            Lost = (_, cpu, n) => Console.Out.WriteLine(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"CPU {cpu:D2}: Lost {n} events")),
        });
        using var cts = new CancellationTokenSource();
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; cts.Cancel(); });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; cts.Cancel(); });
        var announce = new Thread(() =>
        {
            if (WaitHandle.WaitAny([session.Started.WaitHandle, cts.Token.WaitHandle]) == 0)
                Console.Error.WriteLine($"Listening for events on {Environment.ProcessorCount} CPUs ({string.Join(", ", session.Kinds.Order().Select(Rows.TableOf))}); "
                    + (session.Attached.Count > 0 ? $"datapath {string.Join(", ", session.Attached)}; " : datapathKinds.Count > 0 ? "no running datapath; " : "")
                    + "Ctrl-C quits");
        }) { IsBackground = true };
        announce.Start();
        MonitorSummary summary;
        Stream? output = null;
        ArrowStreamSink? arrow = null;
        try
        {
            IMonitorSink sink;
            if (format is { } f)
                sink = new LinePrinter(f, filter, verbose, kinds.Contains(Datapath.Abi.EventKind.Exec) || kinds.Contains(Datapath.Abi.EventKind.Exit));
            else
            {
                output = file is null ? Console.OpenStandardOutput() : Forensics.Query.Output.OutputTarget.CreateBinary(file, []) /* 0600, never through a link */;
                // a reader that closes the pipe ends the monitor, as it ends `cilium monitor | head`
                sink = arrow = new ArrowStreamSink(output, session.Kinds.Order().Select(Rows.TableOf), _ => cts.Cancel());
            }
            summary = session.Run(sink, cts.Token);
        }
        catch (RecordingSetupException e)
        {
            return ForensicsCommand.Fail(e.Problem == SetupProblem.BadInput ? ExitCode.Usage : ExitCode.Prerequisite, e.Message);
        }
        catch (IOException e)
        {
            return ForensicsCommand.Fail(ExitCode.Failure, e.Message);
        }
        catch (UnauthorizedAccessException e)
        {
            return ForensicsCommand.Fail(ExitCode.Failure, e.Message);
        }
        finally
        {
            arrow?.Dispose();
            output?.Dispose();
        }
        // a closed pipe on standard output is the reader leaving; a file that cannot be written is an error
        if (file is not null && arrow?.Failure is { } broken)
            return ForensicsCommand.Fail(FileSystem.IsDiskFull(broken) ? ExitCode.DiskFull : ExitCode.Failure, $"{file}: {broken.Message}");
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

        private readonly EndpointFilter filter;

        private readonly int holdMs;

        /// <summary><paramref name="processes"/>: exec or exit shown, whose lines are held a moment to be put in order (an exec before its exit);
        /// the datapath's alone come in order from its ring buffer and are printed at once.</summary>
        public LinePrinter(RenderFormat format, EndpointFilter filter, bool verbose, bool processes)
        {
            holdMs = processes ? 300 : 0;
            renderer = new LineRenderer(format) { ArgumentsOf = id => args.GetValueOrDefault(id), Node = Environment.MachineName, Verbose = verbose };
            this.filter = filter;
        }

        public void OnBatch(TableBatch batch)
        {
            long now = Environment.TickCount64;
            foreach (var row in BatchRows.Rows(batch))
                // a datapath's loss is printed per CPU as its client learns it ("CPU 01: Lost 3 events"); the probes' here
                if (batch.Table == "loss" ? row.GetValueOrDefault("kind") is not ("drop" or "policy" or "nat" or "trace" or "capture") : filter.Matches(batch.Table, row))
                    pending.Add((row.TryGetValue("ktime_ns", out var k) && k is ulong kt ? kt : 0, seq++, now, batch.Table, row));
        }

        public void OnTick() => Flush(all: false);

        public void OnEnd() => Flush(all: true);

        private void Flush(bool all)
        {
            long now = Environment.TickCount64, cutoff = now - holdMs, exitCutoff = now - 2000;
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

/// <summary>
/// cilium monitor's --from, --to and --related-to: a datapath event's source endpoint is the endpoint whose program
/// emitted it (cilium's notify "source", our endpoint_id); its destination endpoint is that endpoint when the packet
/// goes into it (direction ingress, or observed at to-endpoint), else 0 (cilium's dst_id). Process events carry no
/// endpoint: with a filter they are not shown.
/// </summary>
internal sealed class EndpointFilter(HashSet<ushort> from, HashSet<ushort> to, HashSet<ushort> related)
{
    public bool Any => from.Count + to.Count + related.Count > 0;

    public bool Matches(string table, IReadOnlyDictionary<string, object?> row)
    {
        if (!Any)
            return true;
        if (!row.TryGetValue("endpoint_id", out var e) || e is null)
            return false;
        ulong src = Convert.ToUInt64(e, System.Globalization.CultureInfo.InvariantCulture);
        bool ingress = row.TryGetValue("direction", out var d) && d is "ingress" || row.TryGetValue("obs_point", out var o) && o is "to-endpoint";
        ulong dst = ingress ? src : 0;
        _ = table;
        return (from.Count == 0 || from.Contains((ushort)src))
            && (to.Count == 0 || to.Contains((ushort)dst))
            && (related.Count == 0 || related.Contains((ushort)src) || related.Contains((ushort)dst));
    }
}
