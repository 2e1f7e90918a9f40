using System.CommandLine;
using System.Globalization;
using Forensics.Cilium;
using Forensics.Datapath;
using Forensics.Recorder.Sessions;
using Forensics.Recorder.Storage;

namespace Forensics.Cli;

/// <summary>What <c>forensics import</c> was asked to do, after parsing.</summary>
public sealed record ImportArgs(ExportKind Kind, IReadOnlyList<string> Files, string Output);

/// <summary><c>forensics import hubble|tetragon FILE...</c>: an export into a recording.</summary>
public static class ImportCommand
{
    public static Command Build()
    {
        var cmd = new Command("import", "Make a recording from an export of Cilium's Hubble or of Tetragon (JSON lines; gzip and rotated files too)");
        cmd.Subcommands.Add(Sub(ExportKind.Hubble, "hubble", "Hubble flows as `hubble observe -o jsonpb` (or -o json) and Hubble's flow exporter write them: drops, policy verdicts, traces and translations, with identities, labels, namespaces and pods"));
        cmd.Subcommands.Add(Sub(ExportKind.Tetragon, "tetragon", "Tetragon events as its JSON export (tetragon.log) and `tetra getevents -o json` write them: process exec and exit, connects from kprobes with a sock argument"));
        return cmd;
    }

    private static Command Sub(ExportKind kind, string name, string description)
    {
        var files = new Argument<string[]>("files") { Description = "export files, in order (a rotated file's older parts first); .gz or plain", Arity = ArgumentArity.OneOrMore };
        var output = Vocabulary.Output("Recording folder, created mode 0700 (default: ./import-YYYYMMDD-HHMMSS)");
        var cmd = new Command(name, description) { files, output };
        cmd.SetAction(parse => Run(new ImportArgs(kind, parse.GetValue(files) ?? [],
            parse.GetValue(output) ?? $"import-{DateTime.Now:yyyyMMdd-HHmmss}")));
        return cmd;
    }

    public static int Run(ImportArgs args)
    {
        ArgumentNullException.ThrowIfNull(args);
        foreach (var f in args.Files)
        {
            if (Directory.Exists(f))
                return ForensicsCommand.Fail(ExitCode.BadInput, $"{f} is a directory: give the export files");
            if (!File.Exists(f))
                return ForensicsCommand.Fail(ExitCode.BadInput, $"{f}: no such file");
        }
        // One writer per folder (flock), created 0700, removed again if nothing was written (as record's).
        OutputFolder folder;
        try
        {
            folder = RecordingSession.PrepareOutput(args.Output);
        }
        catch (RecordingSetupException e)
        {
            return ForensicsCommand.Fail(e.Problem switch
            {
                SetupProblem.DiskFull => ExitCode.DiskFull,
                SetupProblem.Failure => ExitCode.Failure,
                _ => ExitCode.BadInput,
            }, e.Message);
        }
        ImportSummary s;
        try
        {
            s = Importer.Import(args.Kind, args.Files, args.Output);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return ForensicsCommand.Fail(FileSystem.IsDiskFull(e) ? ExitCode.DiskFull : ExitCode.BadInput, e.Message);
        }
        finally
        {
            folder.Abandon(); // unlocks; removes the folder only if it made it and nothing was written
        }
        var inv = CultureInfo.InvariantCulture;
        var src = s.Source;
        Console.WriteLine($"imported {src.Received.ToString("N0", inv)} {(args.Kind == ExportKind.Hubble ? "Hubble" : "Tetragon")} events from {src.Inputs.Count} file(s) to {s.Directory}");
        foreach (var (table, rows) in s.Rows.OrderBy(r => r.Key, StringComparer.Ordinal))
            Console.WriteLine($"  {table,-16} {rows.ToString("N0", inv),12} rows");
        if (src.Skipped.Count > 0)
            Console.WriteLine($"  not stored: {string.Join(", ", src.Skipped.Select(kv => $"{kv.Key} {kv.Value.ToString(inv)}"))}");
        if (src.UnknownFields.Count > 0)
            Console.WriteLine($"  unknown fields (kept in the extra column): {string.Join(", ", src.UnknownFields.Select(kv => $"{kv.Key} {kv.Value.ToString(inv)}"))}");
        if (src.Lost.Count > 0)
            Console.WriteLine($"  the source reported lost: {string.Join(", ", src.Lost.Select(kv => $"{kv.Key} {kv.Value.ToString(inv)}"))}");
        Console.WriteLine($"  {s.Bytes.ToString("N0", inv)} bytes sealed from {src.Inputs.Sum(f => f.Bytes).ToString("N0", inv)} bytes of input");
        if (src.Malformed > 0)
        {
            var where = string.Join(", ", src.MalformedExamples.Take(5).Select(m => $"{Path.GetFileName(m.File)}:{m.Line.ToString(inv)}"));
            var first = src.MalformedExamples.FirstOrDefault();
            return ForensicsCommand.Fail(ExitCode.EventsLost, $"{src.Malformed.ToString(inv)} malformed line(s) not imported ({where}{(src.Malformed > 5 ? ", ..." : "")}){(first is null ? "" : $"; first: {first.Error}")}; every other line is in the recording (manifest: sources.{(args.Kind == ExportKind.Tetragon ? "tetragon" : "hubble")}.malformed_examples)");
        }
        return (int)ExitCode.Ok;
    }
}
