using System.CommandLine;
using Forensics.Format;
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
            if (!File.Exists(Path.Combine(path, Manifest.FileName)))
                return Cli.Fail(ExitCode.BadInput, $"{path} is not a recording (no {Manifest.FileName})");
            try
            {
                var r = await Recovery.RecoverAsync(path);
                Console.WriteLine(r.WasComplete
                    ? $"{path}: complete, nothing to recover"
                    : $"{path}: recovered; {r.FilesAdded} sealed segments added ({r.RowsAdded} rows); {r.UnsealedFiles} unsealed segments ({r.UnsealedBytes} bytes) could not be read");
                return (int)ExitCode.Ok;
            }
            catch (Exception e) when (e is InvalidDataException or ManifestException)
            {
                return Cli.Fail(ExitCode.BadInput, e.Message);
            }
        });
        return cmd;
    }
}
