namespace Forensics.Datapath.Lab;

/// <summary>How to run the forensics binary itself (its lab serve / lab connect verbs) inside a namespace.</summary>
public static class SelfCommand
{
    /// <summary>
    /// The running forensics executable; else a forensics apphost or forensics.dll
    /// next to this assembly (tests), run with the same dotnet host.
    /// </summary>
    public static IReadOnlyList<string> Detect()
    {
        var env = Environment.GetEnvironmentVariable("FORENSICS_SELF");
        if (!string.IsNullOrEmpty(env))
            return env.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var process = Environment.ProcessPath;
        if (process is not null && Path.GetFileName(process) == "forensics")
            return [process];
        var dir = AppContext.BaseDirectory;
        var apphost = Path.Combine(dir, "forensics");
        if (File.Exists(apphost))
            return [apphost];
        var dll = Path.Combine(dir, "forensics.dll");
        if (File.Exists(dll))
        {
            var host = process is not null && Path.GetFileNameWithoutExtension(process) == "dotnet" ? process : "dotnet";
            return [host, dll];
        }
        throw new LabException($"cannot find the forensics binary (looked for {apphost} and {dll}); set FORENSICS_SELF");
    }
}
