namespace Forensics.Datapath.Probes;

/// <summary>
/// Reads an exit event's status as wait(2) reports it (code &lt;&lt; 8 | signal,
/// 0x80 for a core dump): an exit code, or the signal that ended the process,
/// named as Tetragon's exit lines name it (SIGKILL).
/// </summary>
public static class ExitStatus
{
    // Linux signal numbers (x86, arm64, and the generic ABI alike for 1..31).
    private static readonly string[] Names =
    [
        "", "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE", "SIGKILL", "SIGUSR1",
        "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT", "SIGCHLD", "SIGCONT", "SIGSTOP", "SIGTSTP",
        "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH", "SIGIO", "SIGPWR", "SIGSYS",
    ];

    /// <summary>The exit code; null when a signal ended the process.</summary>
    public static int? Code(uint status) => (status & 0x7f) == 0 ? (int)((status >> 8) & 0xff) : null;

    /// <summary>The signal's name (SIGKILL, SIGRT3 for real-time ones); null when the process exited.</summary>
    public static string? Signal(uint status)
    {
        uint sig = status & 0x7f;
        if (sig == 0)
            return null;
        if (sig < Names.Length)
            return Names[sig];
        return sig >= 34 ? $"SIGRT{sig - 34}" : $"SIG{sig}";
    }

    /// <summary>True when the process dumped core.</summary>
    public static bool CoreDumped(uint status) => (status & 0x7f) != 0 && (status & 0x80) != 0;

    /// <summary>As Tetragon's compact exit line ends: the code, or the signal's name.</summary>
    public static string Describe(uint status) => Signal(status) ?? Code(status)!.Value.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
