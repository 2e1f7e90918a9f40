using System.Runtime.InteropServices;

namespace Forensics.Datapath.Bpf;

/// <summary>A failed libbpf or kernel call: the call's name, the errno, and what libbpf logged.</summary>
public sealed class BpfException : Exception
{
    public BpfException(string call, int errno, string? detail = null)
        : base(Format(call, errno, detail))
    {
        Call = call;
        Errno = errno;
    }

    public BpfException() : this("unknown", 0) { }

    public BpfException(string message) : base(message) { Call = "unknown"; }

    public BpfException(string message, Exception inner) : base(message, inner) { Call = "unknown"; }

    public string Call { get; } = "unknown";

    /// <summary>Positive errno (EPERM = 1, ENOENT = 2, ...).</summary>
    public int Errno { get; }

    /// <summary>Throws for a libbpf int result (&lt; 0 is -errno).</summary>
    internal static int Check(int rc, string call)
    {
        if (rc < 0)
            throw new BpfException(call, -rc, Interop.LibBpfLog.TakeRecent());
        return rc;
    }

    /// <summary>Throws for a NULL libbpf pointer result (errno set by libbpf 1.x).</summary>
    internal static nint Check(nint ptr, string call)
    {
        if (ptr == 0)
            throw new BpfException(call, Marshal.GetLastPInvokeError(), Interop.LibBpfLog.TakeRecent());
        return ptr;
    }

    private static string Format(string call, int errno, string? detail)
    {
        var text = $"{call}: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})";
        if (errno == 1)
            text += "; needs root or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN";
        if (!string.IsNullOrWhiteSpace(detail))
            text += "; libbpf: " + detail;
        return text;
    }
}
