using System.CommandLine;

namespace Forensics.Cli;

/// <summary>Stable exit codes of the forensics command.</summary>
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

    /// <summary>whatif: a flow the recording saw delivered would be dropped under the changed policies.</summary>
    PolicyWouldDrop = 8,
}

/// <summary>The one user-facing command, <c>forensics</c>, and its verbs.</summary>
public static class Cli
{
    public static RootCommand Build()
    {
        // Every verb that reads a recording takes a bundle as it takes a folder: verified, extracted privately.
        Forensics.Query.Recording.RecordingLocator.BundleOpener ??= p =>
        {
            var lease = Forensics.Query.Bundles.BundleReader.OpenRecording(p, out var dir);
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
        root.Subcommands.Add(VerifyCommand.Build());
        return root;
    }

    public static async Task<int> RunAsync(string[] args)
    {
        var parse = Build().Parse(args);
        return await parse.InvokeAsync().ConfigureAwait(false);
    }

    /// <summary>Writes the one-line error and returns its exit code.</summary>
    public static int Fail(ExitCode code, string message)
    {
        Console.Error.WriteLine("error: " + message.ReplaceLineEndings(" "));
        return (int)code;
    }
}
