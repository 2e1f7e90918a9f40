using System.Diagnostics;
using Forensics.Tests;

namespace Forensics.Kernel.Tests;

public class MonitorTests
{
    [KernelFact]
    public void MonitorCli_ProcessRuns_TetraCompactLinesForExecAndExit()
    {
        var cli = Path.Combine(AppContext.BaseDirectory, "forensics.dll");
        var token = "fxmon" + Guid.NewGuid().ToString("N")[..8];
        using var mon = Process.Start(new ProcessStartInfo("dotnet", [cli, "monitor", "-d", "8s", "-t", "exec,exit"]) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        var output = mon.StandardOutput.ReadToEndAsync();
        var sw = Stopwatch.StartNew();
        string? seen = null;
        // the monitor says when it listens (attached, /proc seeded), as cilium monitor does
        while (mon.StandardError.ReadLine() is { } l && !l.StartsWith("Listening for events", StringComparison.Ordinal) && sw.Elapsed < TimeSpan.FromSeconds(60))
        {
        }
        using (var p = Process.Start(new ProcessStartInfo("/bin/sh", ["-c", "exit 3", token]))!)
            p.WaitForExit();
        Assert.True(mon.WaitForExit(TimeSpan.FromSeconds(30)), "monitor did not stop after --duration");
        seen = output.Result;
        var lines = seen.Split('\n');
        // a process outside any pod: tetra prints the node's name where a pod would be
        var node = Environment.MachineName;
        Assert.Contains(lines, l => l == $"🚀 process {node} /bin/sh -c \"exit 3\" {token}");
        Assert.Contains(lines, l => l == $"💥 exit    {node} /bin/sh -c \"exit 3\" {token} 3");
        Assert.Equal(0, mon.ExitCode);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(40));
    }
}
