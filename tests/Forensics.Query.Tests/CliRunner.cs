using System.Diagnostics;

namespace Forensics.Query.Tests;

/// <summary>Runs the real `forensics` command (built next to the tests) as a process.</summary>
internal static class CliRunner
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr);

    public static Result Run(params string[] args) => RunWithInput(null, args);

    public static string Forensics => Path.Combine(AppContext.BaseDirectory, "forensics");

    public static Result RunWithInput(string? stdin, params string[] args) => RunProgram(Forensics, stdin, args);

    public static Result RunProgram(string program, string? stdin, params string[] args)
    {
        var psi = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (stdin is not null)
            p.StandardInput.Write(stdin);
        p.StandardInput.Close();
        if (!p.WaitForExit(120_000))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} {string.Join(' ', args)} did not finish in 120 s");
        }
        return new Result(p.ExitCode, stdout.Result, stderr.Result);
    }
}
