using System.CommandLine;
using System.CommandLine.Invocation;
using System.CommandLine.Parsing;
using System.Runtime.InteropServices;
using Forensics.Datapath;
using Forensics.Datapath.Bpf;
using Forensics.Datapath.Control;
using Forensics.Datapath.Lab;
using Forensics.Datapath.Probes;
using Forensics.Query;
using Forensics.Query.Bundles;
using Forensics.Query.Recording;

namespace Forensics.Cli;

/// <summary>Stable exit codes of the forensics command (docs/cli.md; verify's 10..23 are <see cref="BundleError"/>).</summary>
public enum ExitCode
{
    Ok = 0,
    Failure = 1,
    Usage = 2,
    Prerequisite = 3,
    EventsLost = 4,
    DiskFull = 5,
    VerifyFailed = 6,
    BadInput = 7,
    Interrupted = 130,

    /// <summary>whatif: a flow the recording saw delivered would be dropped under the changed policies.</summary>
    PolicyWouldDrop = 8,
}

/// <summary>A command line that asks for something impossible: one line, exit code 2.</summary>
public sealed class UsageException : Exception
{
    public UsageException(string message) : base(message) { }
    public UsageException() { }
    public UsageException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>The one user-facing command, <c>forensics</c>, and its verbs.</summary>
public static class ForensicsCommand
{
    public static RootCommand Build()
    {
        // Every verb that reads a recording takes a bundle as it takes a folder: verified, extracted privately.
        RecordingLocator.IsBundle ??= BundleReader.IsBundle;
        // recordings' and bundles' files are opened without following a final link and without waiting (a FIFO)
        RegularFile.NoWaitOpen ??= Forensics.Datapath.Files.OpenRegularNoFollow;
        RecordingLocator.BundleOpener ??= (p, limits) =>
        {
            var lease = BundleReader.OpenVerified(p, out var dir, limits);
            return (dir, lease);
        };
        var root = new RootCommand("forensics: record what the eBPF datapath and tracing probes see, query it later");
        root.Subcommands.Add(DoctorCommand.Build());
        root.Subcommands.Add(RecordCommand.Build());
        root.Subcommands.Add(MonitorCommand.Build());
        root.Subcommands.Add(RecoverCommand.Build());
        root.Subcommands.Add(ImportCommand.Build());
        root.Subcommands.Add(LabCommand.Build());
        root.Subcommands.Add(QueryCommands.Query());
        root.Subcommands.Add(QueryCommands.Drops());
        root.Subcommands.Add(QueryCommands.Nat());
        root.Subcommands.Add(QueryCommands.Connects());
        root.Subcommands.Add(QueryCommands.Flow());
        root.Subcommands.Add(QueryCommands.Replay());
        root.Subcommands.Add(QueryCommands.Export());
        root.Subcommands.Add(QueryCommands.Info());
        root.Subcommands.Add(WhatIfCommand.Build());
        root.Subcommands.Add(BundleCommand.Build());
        var verify = VerifyCommand.Build();
        root.Subcommands.Add(verify);
        AddEpilogs(root, new Dictionary<Command, string>
        {
            [root] = ExitCodesText,
            [verify] = VerifyCommand.ExitCodes,
        });
        return root;
    }

    /// <summary>The exit codes every verb shares, as `forensics --help` ends (docs/cli.md has the table).</summary>
    internal const string ExitCodesText = """
        Exit codes: 0 ok; 1 failure; 2 usage (a bad option or value); 3 missing prerequisite (privileges,
        libbpf, BTF); 4 events were lost (the recording says how many, of which kind); 5 disk full;
        6 a recording's file differs from its manifest (size or SHA-256); 7 bad input (not a recording,
        a malformed or over-limit manifest, a bad YAML or policy file); 8 whatif: a delivered flow would be dropped; 10-23 a damaged bundle (verify --help);
        130 interrupted. Errors are one line on stderr: error: ...
        """;

    /// <summary>Help ends with a command's epilog (exit codes) after the options.</summary>
    private static void AddEpilogs(RootCommand root, Dictionary<Command, string> epilogs)
    {
        if (root.Options.OfType<System.CommandLine.Help.HelpOption>().FirstOrDefault() is { Action: SynchronousCommandLineAction help } option)
            option.Action = new EpilogHelp(help, epilogs);
    }

    private sealed class EpilogHelp(SynchronousCommandLineAction help, Dictionary<Command, string> epilogs) : SynchronousCommandLineAction
    {
        public override bool ClearsParseErrors => true;

        public override int Invoke(ParseResult parseResult)
        {
            var rc = help.Invoke(parseResult);
            if (epilogs.TryGetValue(parseResult.CommandResult.Command, out var text))
                parseResult.InvocationConfiguration.Output.WriteLine(text);
            return rc;
        }
    }

    /// <summary>
    /// Parses and runs a command line. Every way it can fail ends here as one <c>error:</c> line on
    /// stderr and a documented exit code: a parse error (System.CommandLine's or a value check's)
    /// is exit 2; an exception from a verb is mapped by <see cref="Classify"/>. No stack trace
    /// reaches the user (FORENSICS_DEBUG=1 prints it after the line, for developers).
    /// </summary>
    public static async Task<int> RunAsync(string[] args)
    {
        // A signal must not leave a bundle's extraction behind; the verbs' own handlers (record's
        // clean stop) run too, and decide whether the process ends.
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, _ => ExtractionFolders.OnSignal());
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, _ => ExtractionFolders.OnSignal());
        using var sighup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, _ => ExtractionFolders.OnSignal());
        try
        {
            var parse = Build().Parse(args);
            if (UsageError(parse, args) is { } usage)
                return Fail(ExitCode.Usage, usage);
            var config = new InvocationConfiguration { EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null };
            return await parse.InvokeAsync(config).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            var (code, message) = Classify(e);
            Fail(code, message);
            if (Environment.GetEnvironmentVariable("FORENSICS_DEBUG") == "1")
                Console.Error.WriteLine(e.ToString());
            return (int)code;
        }
        finally
        {
            ExtractionFolders.DeleteAll();
        }
    }

    /// <summary>The one line a command line's parse errors make, or null when it parsed (or asks for help).</summary>
    internal static string? UsageError(ParseResult parse, IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(parse);
        ArgumentNullException.ThrowIfNull(args);
        // A flag takes no value: "--external=maybe" would otherwise pass "maybe" on as a recording.
        var command = parse.CommandResult.Command;
        foreach (var word in args.TakeWhile(w => w != "--"))
        {
            var eq = word.IndexOf('=', StringComparison.Ordinal);
            if (!word.StartsWith("--", StringComparison.Ordinal) || eq < 0)
                continue;
            var name = word[..eq];
            var value = word[(eq + 1)..];
            if (command.Options.FirstOrDefault(o => o.Name == name || o.Aliases.Contains(name)) is Option<bool>
                && value.ToLowerInvariant() is not ("true" or "false"))
                return $"{name}: a flag takes no value (got '{value}')";
        }
        if (parse.Errors.Count > 0 && parse.Action is ParseErrorAction)
            return Vocabulary.OneLine(MostTelling(parse.Errors));
        return null;
    }

    private static ParseError MostTelling(IReadOnlyList<ParseError> errors) =>
        errors.FirstOrDefault(e => e.Message.StartsWith("Unrecognized", StringComparison.Ordinal))
        ?? errors.FirstOrDefault(e => !e.Message.StartsWith("Required command", StringComparison.Ordinal))
        ?? errors[0];

    /// <summary>
    /// The one table from exception to exit code (docs/cli.md): what the user asked wrongly (2),
    /// what the machine lacks (3), a full disk (5), a recording that differs from its hashes (6),
    /// input that is not what it claims (7), a damaged bundle (10..23), an interruption (130),
    /// anything else (1, "internal error" when it is not one of ours).
    /// </summary>
    public static (ExitCode Code, string Message) Classify(Exception e)
    {
        ArgumentNullException.ThrowIfNull(e);
        while (e is AggregateException { InnerExceptions.Count: 1 } a)
            e = a.InnerExceptions[0];
        if (e is System.Reflection.TargetInvocationException { InnerException: { } inner })
            e = inner;
        var m = e.Message;
        return e switch
        {
            UsageException => (ExitCode.Usage, m),
            BundleException b => ((ExitCode)(int)b.Error, m),
            RecordingTamperedException => (ExitCode.VerifyFailed, m),
            RecordingException or Forensics.Format.ManifestException => (ExitCode.BadInput, m),
            ClusterSpecException or TracingPolicyException => (ExitCode.BadInput, m),
            PrerequisiteException => (ExitCode.Prerequisite, m),
            BpfException { Errno: 1 or 13 } => (ExitCode.Prerequisite, m),
            BpfException or LabException => (ExitCode.Failure, m),
            QueryException => (ExitCode.Failure, m),
            DuckDB.NET.Data.DuckDBException => (ExitCode.Failure, QuerySession.OneLine(m)),
            IOException when FileSystem.IsDiskFull(e) => (ExitCode.DiskFull, m),
            FileNotFoundException or DirectoryNotFoundException => (ExitCode.BadInput, m),
            IOException or UnauthorizedAccessException => (ExitCode.Failure, m),
            ArgumentNullException => (ExitCode.Failure, $"internal error ({e.GetType().Name}): {m}"),
            ArgumentException or InvalidDataException or FormatException => (ExitCode.BadInput, m),
            OperationCanceledException => (ExitCode.Interrupted, "interrupted"),
            _ => (ExitCode.Failure, $"internal error ({e.GetType().Name}): {m}"),
        };
    }

    /// <summary>Writes the one-line error and returns its exit code.</summary>
    public static int Fail(ExitCode code, string message)
    {
        ArgumentNullException.ThrowIfNull(message);
        Console.Error.WriteLine("error: " + message.ReplaceLineEndings(" "));
        return (int)code;
    }
}
