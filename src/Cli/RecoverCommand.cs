using System.CommandLine;
using Forensics.Format;
using Forensics.Query.Recording;
using Forensics.Recorder.Storage;

namespace Forensics.Cli;

/// <summary><c>forensics recover DIR</c>: makes a recording whose recorder died readable again.</summary>
public static class RecoverCommand
{
    public static Command Build()
    {
        var dir = new Argument<string>("recording") { Description = "The recording folder" };
        var cmd = new Command("recover", "Make a recording whose recorder was killed readable: add sealed segments the manifest missed, count unsealed ones, mark it recovered") { dir };
        cmd.SetAction(async (parse, token) =>
        {
            var path = parse.GetValue(dir)!;
            if (!Directory.Exists(path) || !File.Exists(Path.Combine(path, Manifest.FileName)))
                throw new RecordingException($"{path} is not a recording (no {Manifest.FileName})");
            // A recorder holds its folder (flock) while it writes: a live recording is not "recovered" under it.
            OutputFolder held;
            try
            {
                held = OutputFolder.Lock(path);
            }
            catch (OutputFolderException e)
            {
                return ForensicsCommand.Fail(ExitCode.Failure, e.Message);
            }
            using var _ = held;
            var r = await Recovery.RecoverAsync(path);
            Console.WriteLine(r.WasComplete
                ? $"{path}: complete, nothing to recover"
                : $"{path}: recovered; {r.FilesAdded} sealed segments added ({r.RowsAdded} rows); {r.UnsealedFiles} unsealed segments ({r.UnsealedBytes} bytes) could not be read"
                  + (r.EstimatedLost == 0 ? ""
                      : r.Exact ? string.Create(System.Globalization.CultureInfo.InvariantCulture, $"; {r.EstimatedLost} events of the last {r.GapSeconds:0.0} s were lost (the kernel's counters, counted in events_lost)")
                      : string.Create(System.Globalization.CultureInfo.InvariantCulture, $"; about {r.EstimatedLost} events of the last {r.GapSeconds:0.0} s were lost (estimated, counted in events_lost)")));
            return (int)ExitCode.Ok;
        });
        return cmd;
    }
}
