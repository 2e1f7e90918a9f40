using System.CommandLine;
using System.Text;
using Forensics.Format;
using Forensics.Query;
using Forensics.Query.Output;
using Forensics.Query.Recording;
using Forensics.Query.Export;
using Forensics.Query.Render;

namespace Forensics.Cli;

/// <summary>The verbs that read recordings: query, drops, nat, connects, flow, replay, export, info.</summary>
public static class QueryCommands
{
    /// <summary>The limits on what is read from a recording or a bundle (also on bundle and verify).</summary>
    internal sealed class LimitOptions
    {
        public Option<Vocabulary.ByteSize> MaxManifest { get; } = Vocabulary.Size("--max-manifest-size", "refuse a manifest.json larger than this", (ulong)ReadLimits.Default.MaxManifestBytes, 1024, 1UL << 40);
        public Option<long> MaxFiles { get; } = Vocabulary.Number("--max-files", "refuse a recording that lists more files than this", ReadLimits.Default.MaxFiles, 1, int.MaxValue);
        public Option<Vocabulary.ByteSize> MaxExtract { get; } = Vocabulary.Size("--max-extract-size", "refuse a bundle holding more bytes than this (it must also fit the free space of TMPDIR)", (ulong)ReadLimits.Default.MaxExtractBytes, 1, 1UL << 50);

        public void AddTo(Command c)
        {
            c.Options.Add(MaxManifest);
            c.Options.Add(MaxFiles);
            c.Options.Add(MaxExtract);
        }

        public ReadLimits Limits(ParseResult p) => new()
        {
            MaxManifestBytes = (long)p.GetValue(MaxManifest).Bytes,
            MaxFiles = (int)p.GetValue(MaxFiles),
            MaxExtractBytes = (long)Math.Min(p.GetValue(MaxExtract).Bytes, long.MaxValue),
        };
    }

    /// <summary>What every verb that runs SQL over recordings takes.</summary>
    private sealed class Common
    {
        public Option<Vocabulary.Span> Timeout { get; } = Vocabulary.Duration("--timeout", "time limit of each statement, writing its rows included (e.g. 30s, 5m)", TimeSpan.FromMinutes(5));
        public Option<string> Memory { get; } = MemoryOption();
        public Option<long> MaxRows { get; } = Vocabulary.Number("--max-rows", "refuse a result of more rows than this when it is held in memory (table and parquet output, reconstructions, replay); csv, json and arrow stream", new QueryLimits().MaxRows, 1, long.MaxValue);
        public Option<string[]> ClusterCidr { get; } = Vocabulary.Cidrs("--cluster-cidr", "CIDR to count as inside the cluster, besides the manifest's and the snapshot's addresses (repeatable)");
        public Option<bool> NoVerify { get; } = new("--no-verify") { Description = "do not check each file's SHA-256 against the manifest before reading (a bundle is always checked)" };
        public LimitOptions Limits { get; } = new();

        public void AddTo(Command c)
        {
            c.Options.Add(Timeout);
            c.Options.Add(Memory);
            c.Options.Add(MaxRows);
            c.Options.Add(ClusterCidr);
            c.Options.Add(NoVerify);
            Limits.AddTo(c);
        }

        public QueryOptions Options(ParseResult p)
        {
            var verify = !p.GetValue(NoVerify);
            if (!verify)
                Console.Error.WriteLine("note: --no-verify: the recording's files were not checked against the manifest's SHA-256");
            return new QueryOptions
            {
                Limits = new QueryLimits { Timeout = p.GetValue(Timeout).Value, MemoryLimit = p.GetValue(Memory)!, MaxRows = p.GetValue(MaxRows) },
                ClusterCidrs = p.GetValue(ClusterCidr) ?? [],
                Read = Limits.Limits(p),
                VerifyFiles = verify,
            };
        }

        private static Option<string> MemoryOption()
        {
            var o = new Option<string>("--memory-limit") { Description = "DuckDB's memory limit (e.g. 512MB, 2GB)", DefaultValueFactory = _ => "2GB" };
            o.Validators.Add(r =>
            {
                var v = r.Tokens.Count > 0 ? r.Tokens[0].Value : "2GB";
                if (!System.Text.RegularExpressions.Regex.IsMatch(v, @"^[0-9]{1,12}(\.[0-9]{1,6})?\s?(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", System.Text.RegularExpressions.RegexOptions.IgnoreCase))
                    r.AddError($"--memory-limit: '{v}' is not a size DuckDB takes (e.g. 512MB, 2GB)");
            });
            return o;
        }
    }

    private sealed class OutputOptions
    {
        public Option<string> Format { get; }
        public Option<string?> Output { get; } = Vocabulary.Output("write to this file (created 0600) instead of standard output");

        public OutputOptions(string defaultFormat = "table", string? extra = null)
        {
            string[] names = ["table", "csv", "json", "parquet", "arrow", "arrow-file"];
            if (extra is not null)
                names = [extra, .. names];
            Format = Vocabulary.Format($"{(extra is null ? "" : extra + ", ")}table, csv, json (one object per line), parquet (needs --output), arrow (an Arrow IPC stream) or arrow-file (an Arrow IPC file): docs/arrow.md", defaultFormat, names);
        }

        public void AddTo(Command c)
        {
            c.Options.Add(Format);
            c.Options.Add(Output);
        }

        public OutputFormat Parse(ParseResult p) => p.GetValue(Format) switch
        {
            "csv" => OutputFormat.Csv,
            "json" => OutputFormat.Json,
            "parquet" => OutputFormat.Parquet,
            "arrow" => OutputFormat.Arrow,
            "arrow-file" => OutputFormat.ArrowFile,
            _ => OutputFormat.Table,
        };
    }

    private sealed class FilterOptions
    {
        public Option<string?> Pod { get; } = Vocabulary.Pod("pod name or namespace/pod");
        public Option<string?> Namespace { get; } = Vocabulary.Namespace();
        public Option<DateTimeOffset?> Since { get; } = Vocabulary.Time("--since", "from this time (RFC 3339, UTC unless a zone is given)");
        public Option<DateTimeOffset?> Until { get; } = Vocabulary.Time("--until", "before this time");

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
            Since = p.GetValue(Since),
            Until = p.GetValue(Until),
        };
    }

    private static QuerySession Open(ParseResult p, Argument<string[]> recs, Common common) =>
        QuerySession.Open(p.GetValue(recs)!, common.Options(p));

    /// <summary>
    /// Writes a query's result in the chosen format: Arrow streams from DuckDB batch by batch, CSV and JSON
    /// lines row by row (never the whole result in memory); a table and Parquet hold it, up to --max-rows.
    /// An output file is created 0600 and never inside a recording being read.
    /// </summary>
    private static void Emit(QuerySession session, string sql, OutputFormat format, string? outFile)
    {
        if (format is not (OutputFormat.Arrow or OutputFormat.ArrowFile))
        {
            ResultWriter.Write(session, sql, format, Console.Out, outFile);
            return;
        }
        if (outFile is null && !Console.IsOutputRedirected)
            throw new UsageException($"--format {(format == OutputFormat.Arrow ? "arrow" : "arrow-file")} writes binary: redirect standard output or give --output FILE");
        var meta = new Dictionary<string, string>
        {
            ["forensics.recordings"] = string.Join(",", session.Recordings.Select(r => r.Manifest.RecordingId)),
        };
        using var o = outFile is null ? Console.OpenStandardOutput() : OutputTarget.CreateBinary(outFile, session.ProtectedPaths);
        ArrowResultWriter.Write(session, sql, format == OutputFormat.ArrowFile, o, meta);
    }

    // ---- query ----------------------------------------------------------------------------

    public static Command Query()
    {
        var args = new Argument<string[]>("recordings-and-sql")
        {
            Description = "recording folders or bundle files, then optionally the SQL (without it: an interactive prompt on a terminal, else SQL read from standard input)",
            Arity = ArgumentArity.OneOrMore,
        };
        var common = new Common();
        var output = new OutputOptions();
        var cmd = new Command("query", "SQL over recordings (DuckDB, read-only, locked down): one view per event table (drop, policy, nat, trace, capture, exec, exit, connect, kdrop, loss), the snapshot tables, the reconstructions (drops_by_workload, nat_mappings, external_connects, flow_story, flow_events, flow_volumes) and fx_* macros");
        cmd.Arguments.Add(args);
        common.AddTo(cmd);
        output.AddTo(cmd);
        cmd.SetAction(p =>
        {
            var all = p.GetValue(args) ?? [];
            var paths = all.TakeWhile(a => Directory.Exists(a) || File.Exists(a)).ToList();
            var rest = all.Skip(paths.Count).ToList();
            if (rest.Take(rest.Count - 1).FirstOrDefault(Vocabulary.LooksLikeOption) is { } unknown)
                throw new UsageException($"unknown option '{unknown}' (--help lists the options)");
            if (paths.Count == 0)
                throw new RecordingException($"{all.FirstOrDefault()}: no such recording");
            if (rest.Count > 1)
                throw new RecordingException($"{rest[0]}: no such recording (give the SQL as one argument, last)");
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
                Emit(session, ReadSql(Console.In), format, outFile);
                return (int)ExitCode.Ok;
            }
            return Interactive(session, format);
        });
        return cmd;
    }

    /// <summary>SQL from standard input, at most 16 MiB of it.</summary>
    private static string ReadSql(TextReader input)
    {
        const int Max = 16 << 20;
        var buf = new char[Max + 1];
        var n = input.ReadBlock(buf, 0, buf.Length);
        if (n > Max)
            throw new UsageException($"the SQL on standard input is longer than {Max} characters");
        return new string(buf, 0, n);
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
            if (buffer.Length == 0 && trimmed.StartsWith('.'))
            {
                // A dot command is one line of its own: an unknown one is an error, never the start of a statement.
                if (trimmed is ".quit" or ".exit")
                    break;
                if (trimmed != ".tables")
                {
                    Console.Error.WriteLine($"error: unknown command {trimmed.Split(' ')[0]} (.tables, .quit)");
                    continue;
                }
                trimmed = "SELECT table_name AS name, table_type AS type FROM information_schema.tables ORDER BY 1;";
            }
            buffer.AppendLine(trimmed);
            if (!trimmed.EndsWith(';'))
                continue;
            var sql = buffer.ToString();
            buffer.Clear();
            try
            {
                ResultWriter.Write(session.Execute(sql), format is OutputFormat.Parquet or OutputFormat.Arrow or OutputFormat.ArrowFile ? OutputFormat.Table : format, Console.Out);
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
        var recs = Vocabulary.Recordings();
        var common = new Common();
        var output = new OutputOptions();
        var filter = new FilterOptions();
        var reason = new Option<string?>("--reason") { Description = "reason code (133) or part of its name (\"Policy denied\", NETFILTER_DROP)" };
        reason.Validators.Add(r =>
        {
            var v = r.Tokens[0].Value;
            if (int.TryParse(v, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var code) ? code > 65535 : v.Trim().Length == 0)
                r.AddError($"--reason: '{v}' is no drop reason's code or part of its name (the view drop_reasons lists them)");
        });
        var allReasons = new Option<bool>("--all-reasons") { Description = "also the kernel drops that are not a dropped network packet in the user's sense (socket close, queue purge, multicast noise: docs/drops.md)" };
        var cmd = new Command("drops", "Who was dropped where and why, by our datapath and by the kernel: source and destination workload and identity, port, protocol, reason, which layer dropped it, count, first and last seen (view drops_by_workload)");
        cmd.Arguments.Add(recs);
        common.AddTo(cmd);
        output.AddTo(cmd);
        filter.AddTo(cmd);
        cmd.Options.Add(reason);
        cmd.Options.Add(allReasons);
        cmd.SetAction(p =>
        {
            var f = filter.Parse(p) with { Reason = p.GetValue(reason), AllReasons = p.GetValue(allReasons) };
            using var s = Open(p, recs, common);
            Emit(s, Reconstructions.Drops(f), output.Parse(p), p.GetValue(output.Output));
            return (int)ExitCode.Ok;
        });
        return cmd;
    }

    public static Command Nat()
    {
        var recs = Vocabulary.Recordings();
        var common = new Common();
        var output = new OutputOptions();
        var filter = new FilterOptions();
        var addr = Vocabulary.Address("an address the translation involves (client, original, translated or destination)");
        var cmd = new Command("nat", "Every translation seen: service VIP:port -> backend per flow, pod -> node SNAT to outside destinations, with packets and times (view nat_mappings)");
        cmd.Arguments.Add(recs);
        common.AddTo(cmd);
        output.AddTo(cmd);
        filter.AddTo(cmd);
        cmd.Options.Add(addr);
        cmd.SetAction(p =>
        {
            var f = filter.Parse(p) with { Address = p.GetValue(addr) };
            using var s = Open(p, recs, common);
            Emit(s, Reconstructions.Nat(f), output.Parse(p), p.GetValue(output.Output));
            return (int)ExitCode.Ok;
        });
        return cmd;
    }

    public static Command Connects()
    {
        var recs = Vocabulary.Recordings();
        var common = new Common();
        var output = new OutputOptions();
        var filter = new FilterOptions();
        var external = new Option<bool>("--external") { Description = "only connects leaving the cluster (see the view cluster_cidrs)" };
        var process = ProcessOption("binary (path or base name) or comm");
        var cmd = new Command("connects", "Connects by process: pod, binary, arguments, destination, when, bytes sent and received (the flows table), and the process's exit code (views connects_resolved, external_connects, connect_volumes)");
        cmd.Arguments.Add(recs);
        common.AddTo(cmd);
        output.AddTo(cmd);
        filter.AddTo(cmd);
        cmd.Options.Add(external);
        cmd.Options.Add(process);
        cmd.SetAction(p =>
        {
            var f = filter.Parse(p) with { Process = p.GetValue(process) };
            using var s = Open(p, recs, common);
            Emit(s, Reconstructions.Connects(f, p.GetValue(external)), output.Parse(p), p.GetValue(output.Output));
            return (int)ExitCode.Ok;
        });
        return cmd;
    }

    private static Option<string?> ProcessOption(string description) => new("--process")
    {
        Description = description,
        Validators = { r => { if (string.IsNullOrWhiteSpace(r.Tokens[0].Value)) r.AddError("--process: an empty value"); } },
    };

    public static Command Flow()
    {
        var recs = Vocabulary.Recordings();
        var common = new Common();
        var output = new OutputOptions("story", "story");
        var filter = new FilterOptions();
        var addr = Vocabulary.Address("client, server, backend or SNAT address");
        var port = Vocabulary.OptionalNumber("--port", "client, server or backend port", 1, 65535);
        var proto = new Option<string?>("--protocol") { Description = "tcp, udp, icmp, icmpv6, sctp or an IP protocol number" };
        proto.Validators.Add(r =>
        {
            var v = r.Tokens[0].Value;
            if (v.ToLowerInvariant() is not ("tcp" or "udp" or "icmp" or "icmpv6" or "sctp")
                && !(byte.TryParse(v, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out _)))
                r.AddError($"--protocol: '{v}' is not tcp, udp, icmp, icmpv6, sctp or a number from 0 to 255");
        });
        var process = ProcessOption("binary (path or base name)");
        var cmd = new Command("flow", "The joined story of each flow matching the filter: exec -> connect -> DNAT/SNAT -> policy verdict -> delivered or dropped -> exit, saying which links are missing (views flow_story, flow_events). --format story (default) prints each flow's events");
        cmd.Arguments.Add(recs);
        common.AddTo(cmd);
        output.AddTo(cmd);
        filter.AddTo(cmd);
        cmd.Options.Add(addr);
        cmd.Options.Add(port);
        cmd.Options.Add(proto);
        cmd.Options.Add(process);
        cmd.SetAction(p =>
        {
            var f = filter.Parse(p) with
            {
                Address = p.GetValue(addr),
                Port = p.GetValue(port) is { } pt ? (int)pt : null,
                Protocol = p.GetValue(proto),
                Process = p.GetValue(process),
            };
            using var s = Open(p, recs, common);
            var outFile = p.GetValue(output.Output);
            if (p.GetValue(output.Format) == "story")
            {
                var result = s.Execute(Reconstructions.Flows(f));
                using var file = outFile is null ? null : OutputTarget.CreateText(outFile, s.ProtectedPaths);
                FlowStory.Write(s, result, (TextWriter?)file ?? Console.Out);
            }
            else
                Emit(s, Reconstructions.Flows(f), output.Parse(p), outFile);
            return (int)ExitCode.Ok;
        });
        return cmd;
    }

    // ---- replay, export, info -----------------------------------------------------------------

    public static Command Replay()
    {
        var recs = Vocabulary.Recordings();
        var common = new Common();
        var kinds = Vocabulary.Types("event kinds: drop, policy, trace, nat, capture, exec, exit, connect, kdrop, loss (comma-separated or repeated; default all but capture)",
            Forensics.Query.Replay.KindAliases.Keys);
        var pods = Vocabulary.Pods("pods (name or namespace/pod; repeatable): their process events, and datapath events from or to them");
        var ns = Vocabulary.Namespace();
        var procs = new Option<string[]>("--process") { Description = "process events only of these binaries (path or base name; repeatable)", AllowMultipleArgumentsPerToken = true };
        procs.Validators.Add(r =>
        {
            if (r.Tokens.Any(t => string.IsNullOrWhiteSpace(t.Value)))
                r.AddError("--process: an empty value");
        });
        var since = Vocabulary.Time("--since", "from this time (RFC 3339)");
        var until = Vocabulary.Time("--until", "before this time");
        var format = Vocabulary.Format("text (time, then the line), compact (the live tools' lines exactly) or json (one object per event)", "text", "text", "compact", "json");
        var output = Vocabulary.Output("write to this file (created 0600) instead of standard output");
        var cmd = new Command("replay", "Print a recording in time order as the live tools would have: datapath events like cilium monitor, process events like tetra getevents -o compact");
        cmd.Arguments.Add(recs);
        common.AddTo(cmd);
        foreach (var o in new Option[] { kinds, pods, ns, procs, since, until, format, output })
            cmd.Options.Add(o);
        cmd.SetAction(p =>
        {
            var fmt = p.GetValue(format) switch
            {
                "compact" => RenderFormat.Compact,
                "json" => RenderFormat.Json,
                _ => RenderFormat.Text,
            };
            var filter = new ReplayFilter
            {
                Kinds = p.GetValue(kinds) ?? [],
                Pods = p.GetValue(pods) ?? [],
                Namespace = p.GetValue(ns),
                Processes = SplitList(p.GetValue(procs)),
                Since = p.GetValue(since),
                Until = p.GetValue(until),
            };
            using var s = Open(p, recs, common);
            using var file = p.GetValue(output) is { } o ? OutputTarget.CreateText(o, s.ProtectedPaths) : null;
            var w = (TextWriter?)file ?? Console.Out;
            foreach (var line in Forensics.Query.Replay.Lines(s, filter, fmt))
                w.WriteLine(line);
            w.Flush();
            return (int)ExitCode.Ok;
        });
        return cmd;
    }

    private static List<string> SplitList(string[]? values) =>
        (values ?? []).SelectMany(v => v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToList();

    public static Command Export()
    {
        var recs = Vocabulary.Recordings();
        var common = new Common();
        var output = Vocabulary.Output("the pcapng file to write (created 0600)", required: true);
        var format = Vocabulary.Format("pcapng (the only format)", "pcapng", "pcapng");
        var dropsOnly = new Option<bool>("--drops-only") { Description = "only packets that were dropped" };
        var cmd = new Command("export", "Export captured packets as pcapng, each annotated with kind, observation point, drop reason and identities (Wireshark/tshark: frame comments)");
        cmd.Arguments.Add(recs);
        common.AddTo(cmd);
        cmd.Options.Add(output);
        cmd.Options.Add(format);
        cmd.Options.Add(dropsOnly);
        cmd.SetAction(p =>
        {
            using var s = Open(p, recs, common);
            var file = p.GetValue(output)!;
            var n = PcapExport.Write(s, file, p.GetValue(dropsOnly));
            Console.Error.WriteLine($"{n} packet{(n == 1 ? "" : "s")} written to {file}");
            return (int)ExitCode.Ok;
        });
        return cmd;
    }

    public static Command Info()
    {
        var recs = Vocabulary.Recordings();
        var limits = new LimitOptions();
        var cmd = new Command("info", "What a recording is: host, kernel, time range, stop reason, rows per table, loss, and every file verified against its SHA-256 first (exit code 6 when one is not)");
        cmd.Arguments.Add(recs);
        limits.AddTo(cmd);
        cmd.SetAction(p =>
        {
            var ok = true;
            var first = true;
            foreach (var path in p.GetValue(recs)!)
            {
                if (!first)
                    Console.Out.WriteLine();
                first = false;
                using var rec = RecordingLocator.Open(path, limits.Limits(p));
                ok &= Forensics.Query.Info.Report(rec, Console.Out);
            }
            return ok ? (int)ExitCode.Ok : ForensicsCommand.Fail(ExitCode.VerifyFailed, "files differ from the manifest (tampered or corrupted)");
        });
        return cmd;
    }
}
