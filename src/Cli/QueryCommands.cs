using System.CommandLine;
using System.Globalization;
using System.Text;
using Forensics.Query;
using Forensics.Query.Export;
using Forensics.Query.Output;
using Forensics.Query.Recording;
using Forensics.Query.Render;

namespace Forensics.Cli;

/// <summary>The verbs that read recordings: query, drops, nat, connects, flow, replay, export, info.</summary>
public static class QueryCommands
{
    private static Argument<string[]> Recordings(string description = "recording directories (several: queried together, told apart by the recording and node columns)") =>
        new("recordings") { Description = description, Arity = ArgumentArity.OneOrMore };

    private sealed class Common
    {
        public Option<double> Timeout { get; } = new("--timeout") { Description = "time limit per statement in seconds", DefaultValueFactory = _ => 300 };
        public Option<string> Memory { get; } = new("--memory-limit") { Description = "DuckDB memory limit", DefaultValueFactory = _ => "2GB" };
        public Option<string[]> ClusterCidr { get; } = new("--cluster-cidr") { Description = "CIDR to count as inside the cluster, besides the manifest's and the snapshot's addresses (repeatable)", AllowMultipleArgumentsPerToken = false };

        public void AddTo(Command c)
        {
            c.Options.Add(Timeout);
            c.Options.Add(Memory);
            c.Options.Add(ClusterCidr);
        }

        public QueryOptions Options(ParseResult p) => new()
        {
            Limits = new QueryLimits { Timeout = TimeSpan.FromSeconds(Math.Max(0.001, p.GetValue(Timeout))), MemoryLimit = p.GetValue(Memory) ?? "2GB" },
            ClusterCidrs = p.GetValue(ClusterCidr) ?? [],
        };
    }

    private sealed class OutputOptions
    {
        public Option<string> Format { get; }
        public Option<string?> Output { get; } = new("--output", "-O") { Description = "write to this file instead of standard output" };

        public OutputOptions(string defaultFormat = "table") =>
            Format = new Option<string>("--format", "-f") { Description = "table, csv, json (one object per line), parquet (needs --output), arrow (an Arrow IPC stream) or arrow-file (an Arrow IPC file): docs/arrow.md", DefaultValueFactory = _ => defaultFormat };

        public void AddTo(Command c)
        {
            c.Options.Add(Format);
            c.Options.Add(Output);
        }

        public OutputFormat Parse(ParseResult p) => (p.GetValue(Format) ?? "table").ToLowerInvariant() switch
        {
            "table" => OutputFormat.Table,
            "csv" => OutputFormat.Csv,
            "json" => OutputFormat.Json,
            "parquet" => OutputFormat.Parquet,
            "arrow" => OutputFormat.Arrow,
            "arrow-file" => OutputFormat.ArrowFile,
            var f => throw new UsageException($"unknown format \"{f}\" (table, csv, json, parquet, arrow, arrow-file)"),
        };
    }

    private sealed class FilterOptions
    {
        public Option<string?> Pod { get; } = new("--pod") { Description = "pod name or namespace/pod" };
        public Option<string?> Namespace { get; } = new("--namespace", "-n") { Description = "namespace" };
        public Option<string?> Since { get; } = new("--since") { Description = "from this time (RFC 3339, UTC unless a zone is given)" };
        public Option<string?> Until { get; } = new("--until") { Description = "before this time" };

        public void AddTo(Command c)
        {
            c.Options.Add(Pod);
            c.Options.Add(Namespace);
            c.Options.Add(Since);
            c.Options.Add(Until);
        }

        public Filter Parse(ParseResult p) => new()
        {
            Pod = p.GetValue(Pod),
            Namespace = p.GetValue(Namespace),
            Since = Time(p.GetValue(Since), "--since"),
            Until = Time(p.GetValue(Until), "--until"),
        };
    }

    private sealed class UsageException(string message) : Exception(message);

    internal static DateTimeOffset? Time(string? s, string option)
    {
        if (s is null)
            return null;
        if (DateTimeOffset.TryParse(s, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var t))
            return t;
        throw new UsageException($"{option}: \"{s}\" is not a time (use RFC 3339, e.g. 2026-11-23T10:00:00Z)");
    }

    /// <summary>Runs a verb's body with the one-line error mapping every verb shares.</summary>
    private static int Guard(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (UsageException e)
        {
            return Cli.Fail(ExitCode.Usage, e.Message);
        }
        catch (RecordingException e)
        {
            return Cli.Fail(ExitCode.BadInput, e.Message);
        }
        catch (QueryException e)
        {
            return Cli.Fail(ExitCode.Failure, e.Message);
        }
        catch (IOException e)
        {
            return Cli.Fail(ExitCode.Failure, e.Message);
        }
        catch (UnauthorizedAccessException e)
        {
            return Cli.Fail(ExitCode.Failure, e.Message);
        }
        catch (DuckDB.NET.Data.DuckDBException e)
        {
            return Cli.Fail(ExitCode.Failure, QuerySession.OneLine(e.Message));
        }
    }

    /// <summary>
    /// Writes a query's result in the chosen format: Arrow streams from DuckDB batch by batch (never the
    /// whole result in memory), the others print the materialized result.
    /// </summary>
    private static void Emit(QuerySession session, string sql, OutputFormat format, string? outFile)
    {
        if (format is not (OutputFormat.Arrow or OutputFormat.ArrowFile))
        {
            ResultWriter.Write(session.Execute(sql), format, Console.Out, outFile);
            return;
        }
        if (outFile is null && !Console.IsOutputRedirected)
            throw new UsageException($"--format {(format == OutputFormat.Arrow ? "arrow" : "arrow-file")} writes binary: redirect standard output or give --output FILE");
        var meta = new Dictionary<string, string>
        {
            ["forensics.recordings"] = string.Join(",", session.Recordings.Select(r => r.Manifest.RecordingId)),
        };
        using var o = outFile is null ? Console.OpenStandardOutput() : new FileStream(outFile, FileMode.Create, FileAccess.Write);
        ArrowResultWriter.Write(session, sql, format == OutputFormat.ArrowFile, o, meta);
    }

    // ---- query ----------------------------------------------------------------------------

    public static Command Query()
    {
        var args = new Argument<string[]>("recordings-and-sql")
        {
            Description = "recording directories, then optionally the SQL (without it: an interactive prompt on a terminal, else SQL read from standard input)",
            Arity = ArgumentArity.OneOrMore,
        };
        var common = new Common();
        var output = new OutputOptions();
        var cmd = new Command("query", "SQL over recordings (DuckDB, read-only, locked down): one view per event table (drop, policy, nat, trace, capture, exec, exit, connect, kdrop, loss), the snapshot tables, the reconstructions (drops_by_workload, nat_mappings, external_connects, flow_story, flow_events) and fx_* macros");
        cmd.Arguments.Add(args);
        common.AddTo(cmd);
        output.AddTo(cmd);
        cmd.SetAction(p => Guard(() =>
        {
            var all = p.GetValue(args) ?? [];
            var paths = all.TakeWhile(a => Directory.Exists(a) || File.Exists(a)).ToList();
            var rest = all.Skip(paths.Count).ToList();
            if (paths.Count == 0)
                throw new RecordingException($"{all.FirstOrDefault()}: no such recording");
            if (rest.Count > 1)
                throw new UsageException($"{rest[0]}: no such recording (give the SQL as one argument, last)");
            var format = output.Parse(p);
            var outFile = p.GetValue(output.Output);
            using var session = QuerySession.Open(paths, common.Options(p));
            if (rest.Count == 1)
            {
                Emit(session, rest[0], format, outFile);
                return (int)ExitCode.Ok;
            }
            if (Console.IsInputRedirected)
            {
                Emit(session, Console.In.ReadToEnd(), format, outFile);
                return (int)ExitCode.Ok;
            }
            return Interactive(session, format);
        }));
        return cmd;
    }

    private static int Interactive(QuerySession session, OutputFormat format)
    {
        Console.WriteLine($"forensics query: {session.Recordings.Count} recording(s). End statements with ';'. .tables lists the views, .quit leaves.");
        var buffer = new StringBuilder();
        for (var n = 0; n < 1_000_000; n++)
        {
            Console.Write(buffer.Length == 0 ? "forensics> " : "      ...> ");
            var line = Console.ReadLine();
            if (line is null)
                break;
            var trimmed = line.Trim();
            if (buffer.Length == 0 && trimmed is ".quit" or ".exit")
                break;
            if (buffer.Length == 0 && trimmed == ".tables")
                trimmed = "SELECT table_name AS name, table_type AS type FROM information_schema.tables ORDER BY 1;";
            buffer.AppendLine(trimmed);
            if (!trimmed.EndsWith(';'))
                continue;
            var sql = buffer.ToString();
            buffer.Clear();
            try
            {
                ResultWriter.Write(session.Execute(sql), format is OutputFormat.Parquet or OutputFormat.Arrow or OutputFormat.ArrowFile ? OutputFormat.Table : format, Console.Out, null);
            }
            catch (QueryException e)
            {
                Console.Error.WriteLine("error: " + e.Message);
            }
        }
        return (int)ExitCode.Ok;
    }

    // ---- reconstructions --------------------------------------------------------------------

    public static Command Drops()
    {
        var recs = Recordings();
        var common = new Common();
        var output = new OutputOptions();
        var filter = new FilterOptions();
        var reason = new Option<string?>("--reason") { Description = "reason code (133) or part of its name (\"Policy denied\", NETFILTER_DROP)" };
        var allReasons = new Option<bool>("--all-reasons") { Description = "also the kernel drops that are not a dropped network packet in the user's sense (socket close, queue purge, multicast noise: docs/drops.md)" };
        var cmd = new Command("drops", "Who was dropped where and why, by our datapath and by the kernel: source and destination workload and identity, port, protocol, reason, which layer dropped it, count, first and last seen (view drops_by_workload)");
        cmd.Arguments.Add(recs);
        common.AddTo(cmd);
        output.AddTo(cmd);
        filter.AddTo(cmd);
        cmd.Options.Add(reason);
        cmd.Options.Add(allReasons);
        cmd.SetAction(p => Guard(() =>
        {
            var f = filter.Parse(p) with { Reason = p.GetValue(reason), AllReasons = p.GetValue(allReasons) };
            using var s = QuerySession.Open(p.GetValue(recs)!, common.Options(p));
            Emit(s, Reconstructions.Drops(f), output.Parse(p), p.GetValue(output.Output));
            return (int)ExitCode.Ok;
        }));
        return cmd;
    }

    public static Command Nat()
    {
        var recs = Recordings();
        var common = new Common();
        var output = new OutputOptions();
        var filter = new FilterOptions();
        var addr = new Option<string?>("--address") { Description = "an address the translation involves (client, original, translated or destination)" };
        var cmd = new Command("nat", "Every translation seen: service VIP:port -> backend per flow, pod -> node SNAT to outside destinations, with packets and times (view nat_mappings)");
        cmd.Arguments.Add(recs);
        common.AddTo(cmd);
        output.AddTo(cmd);
        filter.AddTo(cmd);
        cmd.Options.Add(addr);
        cmd.SetAction(p => Guard(() =>
        {
            var f = filter.Parse(p) with { Address = p.GetValue(addr) };
            using var s = QuerySession.Open(p.GetValue(recs)!, common.Options(p));
            Emit(s, Reconstructions.Nat(f), output.Parse(p), p.GetValue(output.Output));
            return (int)ExitCode.Ok;
        }));
        return cmd;
    }

    public static Command Connects()
    {
        var recs = Recordings();
        var common = new Common();
        var output = new OutputOptions();
        var filter = new FilterOptions();
        var external = new Option<bool>("--external") { Description = "only connects leaving the cluster (see the view cluster_cidrs)" };
        var process = new Option<string?>("--process") { Description = "binary (path or base name) or comm" };
        var cmd = new Command("connects", "Connects by process: pod, binary, arguments, destination, when, and the process's exit code (views connects_resolved, external_connects)");
        cmd.Arguments.Add(recs);
        common.AddTo(cmd);
        output.AddTo(cmd);
        filter.AddTo(cmd);
        cmd.Options.Add(external);
        cmd.Options.Add(process);
        cmd.SetAction(p => Guard(() =>
        {
            var f = filter.Parse(p) with { Process = p.GetValue(process) };
            using var s = QuerySession.Open(p.GetValue(recs)!, common.Options(p));
            Emit(s, Reconstructions.Connects(f, p.GetValue(external)), output.Parse(p), p.GetValue(output.Output));
            return (int)ExitCode.Ok;
        }));
        return cmd;
    }

    public static Command Flow()
    {
        var recs = Recordings();
        var common = new Common();
        var output = new OutputOptions("story");
        var filter = new FilterOptions();
        var addr = new Option<string?>("--address") { Description = "client, server, backend or SNAT address" };
        var port = new Option<int?>("--port") { Description = "client, server or backend port" };
        var proto = new Option<string?>("--protocol") { Description = "tcp, udp, ..." };
        var process = new Option<string?>("--process") { Description = "binary (path or base name)" };
        var cmd = new Command("flow", "The joined story of each flow matching the filter: exec -> connect -> DNAT/SNAT -> policy verdict -> delivered or dropped -> exit, saying which links are missing (views flow_story, flow_events). --format story (default) prints each flow's events");
        cmd.Arguments.Add(recs);
        common.AddTo(cmd);
        output.AddTo(cmd);
        filter.AddTo(cmd);
        cmd.Options.Add(addr);
        cmd.Options.Add(port);
        cmd.Options.Add(proto);
        cmd.Options.Add(process);
        cmd.SetAction(p => Guard(() =>
        {
            var f = filter.Parse(p) with { Address = p.GetValue(addr), Port = p.GetValue(port), Protocol = p.GetValue(proto), Process = p.GetValue(process) };
            using var s = QuerySession.Open(p.GetValue(recs)!, common.Options(p));
            if ((p.GetValue(output.Format) ?? "story") == "story")
            {
                var result = s.Execute(Reconstructions.Flows(f));
                using var file = p.GetValue(output.Output) is { } o ? new StreamWriter(o) : null;
                FlowStory.Write(s, result, (TextWriter?)file ?? Console.Out);
            }
            else
                Emit(s, Reconstructions.Flows(f), output.Parse(p), p.GetValue(output.Output));
            return (int)ExitCode.Ok;
        }));
        return cmd;
    }

    // ---- replay, export, info -----------------------------------------------------------------

    public static Command Replay()
    {
        var recs = Recordings();
        var common = new Common();
        var kinds = new Option<string[]>("--type", "-t") { Description = "event kinds: drop, policy-verdict, trace, nat, capture, exec, exit, connect, kdrop, loss (repeatable; default all but capture)", AllowMultipleArgumentsPerToken = true };
        var pods = new Option<string[]>("--pods") { Description = "pods (name or namespace/pod)", AllowMultipleArgumentsPerToken = true };
        var ns = new Option<string?>("--namespace") { Description = "namespace" };
        var procs = new Option<string[]>("--processes") { Description = "process events only of these binaries (path or base name)", AllowMultipleArgumentsPerToken = true };
        var since = new Option<string?>("--since") { Description = "from this time (RFC 3339)" };
        var until = new Option<string?>("--until") { Description = "before this time" };
        var format = new Option<string>("--output", "-o") { Description = "text (time, then the line), compact (the live tools' lines exactly) or json (one object per event)", DefaultValueFactory = _ => "text" };
        var cmd = new Command("replay", "Print a recording in time order as the live tools would have: datapath events like cilium monitor, process events like tetra getevents -o compact");
        cmd.Arguments.Add(recs);
        common.AddTo(cmd);
        foreach (var o in new Option[] { kinds, pods, ns, procs, since, until, format })
            cmd.Options.Add(o);
        cmd.SetAction(p => Guard(() =>
        {
            var fmt = (p.GetValue(format) ?? "text") switch
            {
                "text" => RenderFormat.Text,
                "compact" => RenderFormat.Compact,
                "json" => RenderFormat.Json,
                var f => throw new UsageException($"unknown output \"{f}\" (text, compact, json)"),
            };
            var filter = new ReplayFilter
            {
                Kinds = SplitList(p.GetValue(kinds)),
                Pods = SplitList(p.GetValue(pods)),
                Namespace = p.GetValue(ns),
                Processes = SplitList(p.GetValue(procs)),
                Since = Time(p.GetValue(since), "--since"),
                Until = Time(p.GetValue(until), "--until"),
            };
            using var s = QuerySession.Open(p.GetValue(recs)!, common.Options(p));
            foreach (var line in Forensics.Query.Replay.Lines(s, filter, fmt))
                Console.Out.WriteLine(line);
            return (int)ExitCode.Ok;
        }));
        return cmd;
    }

    private static List<string> SplitList(string[]? values) =>
        (values ?? []).SelectMany(v => v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToList();

    public static Command Export()
    {
        var recs = Recordings();
        var common = new Common();
        var pcap = new Option<string>("--pcap") { Description = "write the captured packets to this pcapng file", Required = true };
        var dropsOnly = new Option<bool>("--drops-only") { Description = "only packets that were dropped" };
        var cmd = new Command("export", "Export captured packets as pcapng, each annotated with kind, observation point, drop reason and identities (Wireshark/tshark: frame comments)");
        cmd.Arguments.Add(recs);
        common.AddTo(cmd);
        cmd.Options.Add(pcap);
        cmd.Options.Add(dropsOnly);
        cmd.SetAction(p => Guard(() =>
        {
            using var s = QuerySession.Open(p.GetValue(recs)!, common.Options(p));
            var n = PcapExport.Write(s, p.GetValue(pcap)!, p.GetValue(dropsOnly));
            Console.Error.WriteLine($"{n} packet{(n == 1 ? "" : "s")} written to {p.GetValue(pcap)}");
            return (int)ExitCode.Ok;
        }));
        return cmd;
    }

    public static Command Info()
    {
        var recs = Recordings();
        var cmd = new Command("info", "What a recording is: host, kernel, time range, stop reason, rows per table, loss, and every file verified against its SHA-256 (exit code 6 when one is not)");
        cmd.Arguments.Add(recs);
        cmd.SetAction(p => Guard(() =>
        {
            var ok = true;
            var first = true;
            foreach (var path in p.GetValue(recs)!)
            {
                if (!first)
                    Console.Out.WriteLine();
                first = false;
                using var rec = RecordingLocator.Open(path);
                ok &= Forensics.Query.Info.Report(rec, Console.Out);
            }
            return ok ? (int)ExitCode.Ok : Cli.Fail(ExitCode.VerifyFailed, "files differ from the manifest (tampered or corrupted)");
        }));
        return cmd;
    }
}
