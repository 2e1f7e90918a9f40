using System.Diagnostics;
using System.Runtime.InteropServices;
using Forensics.Cilium;
using Forensics.Recorder;
using Forensics.Format;
using Forensics.Recorder.Storage;

namespace Forensics.Cli;

/// <summary>`record --from hubble|tetragon` without this tool's probes: no root, no kernel, a recording of their events only.</summary>
internal static class CiliumRecord
{
    public static int Run(RecordArgs args, IReadOnlyList<LiveEndpoint> endpoints)
    {
        if (endpoints.Count == 0)
            return ForensicsCommand.Fail(ExitCode.Usage, "--from names no source");
        var manifest = new Manifest
        {
            Node = Environment.MachineName,
            Host = Recording.HostInfo(),
            ToolVersion = Recording.ToolVersion(),
            StartedAt = DateTime.UtcNow,
            Config = new ManifestConfig { Kinds = [], DurationSeconds = args.Duration?.TotalSeconds },
        };
        using var cts = new CancellationTokenSource();
        string reason = "duration";
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; reason = "interrupt"; cts.Cancel(); });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; reason = "terminate"; cts.Cancel(); });
        var sw = Stopwatch.StartNew();
        StandaloneTarget target;
        try
        {
            target = new StandaloneTarget(args.Output, manifest);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return ForensicsCommand.Fail(Forensics.Datapath.FileSystem.IsDiskFull(e) ? ExitCode.DiskFull : ExitCode.BadInput, $"cannot write the output folder {args.Output}: {e.Message}");
        }
        var sources = new CiliumSources(endpoints, target, Environment.MachineName);
        try
        {
            foreach (var v in sources.CheckAsync(TimeSpan.FromSeconds(5), cts.Token).GetAwaiter().GetResult())
                Console.Error.WriteLine($"recording from {v}");
        }
        catch (SourceUnavailableException e)
        {
            sources.DisposeAsync().AsTask().GetAwaiter().GetResult();
            target.WithManifest(m => { m.EndedAt = DateTime.UtcNow; m.StopReason = "error"; }, write: true);
            return ForensicsCommand.Fail(ExitCode.Prerequisite, e.Message);
        }
        if (args.Progress)
            Console.Error.WriteLine($"recording to {args.Output}{(args.Duration is { } dd ? $" for {dd}" : "")}; Ctrl-C stops");
        if (args.Duration is { } d)
            cts.CancelAfter(d);
        sources.Start(cts.Token);
        try
        {
            cts.Token.WaitHandle.WaitOne();
            sources.StopAsync(reason).GetAwaiter().GetResult();
        }
        catch (IOException e)
        {
            return ForensicsCommand.Fail(Forensics.Datapath.FileSystem.IsDiskFull(e) ? ExitCode.DiskFull : ExitCode.Failure, $"writing {args.Output}: {e.Message}");
        }
        ulong lost = 0;
        long malformed = 0;
        RecordingSummary? summary = null;
        target.WithManifest(m =>
        {
            lost = m.EventsLost;
            malformed = CiliumSources.Malformed(m);
            summary = new RecordingSummary(args.Output, m.StopReason, sw.Elapsed, m.Tables.ToDictionary(t => t.Key, t => t.Value.Rows),
                new Dictionary<string, ManifestLoss>(m.Loss), m.EventsLost, m.Tables.Values.Sum(t => t.Files.Sum(f => f.Bytes)), null);
        }, write: false);
        RecordCommand.Print(summary!);
        if (lost > 0)
            return ForensicsCommand.Fail(ExitCode.EventsLost, $"{lost} events were lost: {RecordCommand.LossText(summary!.Loss)}");
        if (malformed > 0)
            return ForensicsCommand.Fail(ExitCode.EventsLost, $"{malformed} message(s) from Hubble/Tetragon could not be decoded (counted in the manifest's sources.<name>.malformed)");
        return (int)ExitCode.Ok;
    }
}
