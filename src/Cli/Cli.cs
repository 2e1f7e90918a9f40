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
}

/// <summary>The one user-facing command, <c>forensics</c>, and its verbs.</summary>
public static class Cli
{
    public static RootCommand Build()
    {
        var root = new RootCommand("forensics: record what the eBPF datapath and tracing probes see, query it later");
        root.Subcommands.Add(DoctorCommand.Build());
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
