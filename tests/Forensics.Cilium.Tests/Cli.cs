using System.Diagnostics;

namespace Forensics.Cilium.Tests;

/// <summary>The real `forensics` command (built next to the tests), as a process.</summary>
internal sealed class Cli : IDisposable
{
    private readonly Process p;
    private readonly Task<string> stdout, stderr;

    private Cli(string[] args)
    {
        var psi = new ProcessStartInfo(Program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        p = Process.Start(psi)!;
        p.StandardInput.Close();
        stdout = p.StandardOutput.ReadToEndAsync();
        stderr = p.StandardError.ReadToEndAsync();
    }

    public sealed record Result(int ExitCode, string Stdout, string Stderr);

    /// <summary>
    /// The command as its own project built it (src/Cli/bin/CONFIG/TFM/forensics): this test project runs
    /// on the ASP.NET Core framework (for the test servers), so its copy would miss the command's own packages.
    /// </summary>
    public static string Program
    {
        get
        {
            var here = AppContext.BaseDirectory;
            var tests = Path.Combine("tests", "Forensics.Cilium.Tests") + Path.DirectorySeparatorChar;
            int i = here.LastIndexOf(tests, StringComparison.Ordinal);
            return i < 0 ? Path.Combine(here, "forensics") : Path.Combine(here[..i] + Path.Combine("src", "Cli") + Path.DirectorySeparatorChar + here[(i + tests.Length)..], "forensics");
        }
    }

    public static Cli Start(params string[] args) => new(args);

    public static Result Run(params string[] args)
    {
        using var c = new Cli(args);
        return c.Wait();
    }

    /// <summary>SIGTERM, as an operator's stop (the recording flushes and seals).</summary>
    public void Terminate()
    {
        using var kill = Process.Start("kill", ["-TERM", p.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        kill.WaitForExit();
    }

    public bool HasExited => p.HasExited;

    public Result Wait(int timeoutMs = 120_000)
    {
        if (!p.WaitForExit(timeoutMs))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"forensics did not finish in {timeoutMs / 1000} s");
        }
        return new Result(p.ExitCode, stdout.Result, stderr.Result);
    }

    public void Dispose()
    {
        if (!p.HasExited)
            p.Kill(entireProcessTree: true);
        p.Dispose();
    }

    /// <summary>Waits for a condition, bounded; false when it did not come true in time.</summary>
    public static bool Until(Func<bool> condition, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < timeout)
        {
            if (condition())
                return true;
            Thread.Sleep(50);
        }
        return condition();
    }
}
