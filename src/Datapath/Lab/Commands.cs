using System.Diagnostics;

namespace Forensics.Datapath.Lab;

/// <summary>The result of one external command.</summary>
public sealed record CommandResult(int ExitCode, string Stdout, string Stderr, bool TimedOut, TimeSpan Elapsed)
{
    public string FirstErrorLine =>
        (Stderr.Split('\n').Select(l => l.Trim()).FirstOrDefault(l => l.Length > 0)
         ?? Stdout.Split('\n').Select(l => l.Trim()).FirstOrDefault(l => l.Length > 0) ?? "").Trim();
}

/// <summary>Runs external commands (iproute2, commands inside namespaces) bounded in time.</summary>
public static class Commands
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(15);

    public static CommandResult Run(string file, IEnumerable<string> args, TimeSpan? timeout = null, string? stdin = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        var sw = Stopwatch.StartNew();
        using var p = Process.Start(psi) ?? throw new LabException($"cannot start {file}");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        try
        {
            if (stdin is not null)
                p.StandardInput.Write(stdin);
            p.StandardInput.Close();
        }
        catch (IOException)
        {
            // the command exited without reading its input
        }
        bool exited = p.WaitForExit(timeout ?? DefaultTimeout);
        if (!exited)
        {
            try
            {
                p.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
                // exited meanwhile
            }
            p.WaitForExit(5000);
        }
        else
        {
            p.WaitForExit(); // drains the redirected streams
        }
        string Get(Task<string> t) => t.Wait(2000) ? t.Result : "";
        return new CommandResult(exited ? p.ExitCode : -1, Get(stdout), Get(stderr), !exited, sw.Elapsed);
    }

    /// <summary>Runs iproute2's <c>ip</c>; throws a one-line <see cref="LabException"/> when it fails.</summary>
    public static string Ip(params string[] args)
    {
        var r = Run("ip", args);
        if (r.TimedOut)
            throw new LabException($"ip {string.Join(' ', args)}: timed out");
        if (r.ExitCode != 0)
            throw new LabException($"ip {string.Join(' ', args)}: {r.FirstErrorLine}");
        return r.Stdout;
    }

    /// <summary>
    /// Writes sysctls inside a network namespace: /proc/sys/net resolves to the
    /// namespace of the thread that opens it, so a thread that entered it writes there.
    /// </summary>
    public static void Sysctl(string netns, params (string Key, string Value)[] settings)
    {
        NetNamespace.Run(netns, () =>
        {
            foreach (var (key, value) in settings)
            {
                var path = "/proc/sys/" + key.Replace('.', '/');
                try
                {
                    File.WriteAllText(path, value);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    throw new LabException($"sysctl {key}={value} in {netns}: {e.Message}");
                }
            }
        });
    }

    /// <summary>Quotes one argument for /bin/sh.</summary>
    public static string ShellQuote(string s) => "'" + s.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
}
