using System.Runtime.InteropServices;
using Forensics.Datapath.Interop;

namespace Forensics.Datapath;

/// <summary>Something the machine lacks; the message is one line saying what and how to fix it.</summary>
public sealed class PrerequisiteException : Exception
{
    public PrerequisiteException(string message) : base(message) { }
    public PrerequisiteException() { }
    public PrerequisiteException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>Checks (and where it can, fixes) what loading BPF programs needs.</summary>
public static class Prerequisites
{
    private const int CAP_NET_ADMIN = 12;
    private const int CAP_SYS_ADMIN = 21;
    private const int CAP_PERFMON = 38;
    private const int CAP_BPF = 39;

    /// <summary>
    /// Throws a <see cref="PrerequisiteException"/> naming the first missing piece:
    /// libbpf.so.1, privileges, kernel BTF. Mounts tracefs and bpffs when they are not.
    /// </summary>
    public static void EnsureKernelAccess(bool needNetAdmin = true)
    {
        EnsureLibBpf();
        EnsureCapabilities(needNetAdmin);
        if (!File.Exists("/sys/kernel/btf/vmlinux"))
            throw new PrerequisiteException("the kernel has no BTF (/sys/kernel/btf/vmlinux is missing): a kernel built with CONFIG_DEBUG_INFO_BTF=y is needed");
        EnsureMounted("/sys/kernel/tracing", "tracefs", "tracefs", "/sys/kernel/tracing/events");
        EnsureMounted("/sys/fs/bpf", "bpf", "bpf", null);
        EnsureTracefsReadable();
    }

    /// <summary>
    /// libbpf attaches a tracepoint program by the id it reads from tracefs, which the kernel mounts
    /// root-only (mode 0700): a user that is not root needs CAP_DAC_READ_SEARCH besides CAP_BPF,
    /// CAP_PERFMON and CAP_NET_ADMIN, or every attach fails.
    /// </summary>
    public static void EnsureTracefsReadable()
    {
        const string probe = "/sys/kernel/tracing/events/sched/sched_process_exec/id";
        try
        {
            _ = File.ReadAllText(probe);
        }
        catch (UnauthorizedAccessException)
        {
            throw new PrerequisiteException($"tracefs is not readable ({probe}: permission denied; the kernel mounts it mode 0700 for root): run as root, or grant CAP_DAC_READ_SEARCH besides CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN");
        }
        catch (IOException)
        {
            // no such tracepoint (a kernel built without it): the attach names what is missing
        }
    }

    public static void EnsureLibBpf()
    {
        if (!NativeLibrary.TryLoad(LibBpf.Lib, out var h))
            throw new PrerequisiteException("libbpf.so.1 not found: install the Debian package libbpf1 (apt-get install libbpf1)");
        NativeLibrary.Free(h);
    }

    /// <summary>The effective capability set of this process, from /proc/self/status.</summary>
    public static ulong EffectiveCapabilities()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("CapEff:", StringComparison.Ordinal))
                return Convert.ToUInt64(line["CapEff:".Length..].Trim(), 16);
        return 0;
    }

    public static void EnsureCapabilities(bool needNetAdmin)
    {
        ulong caps = EffectiveCapabilities();
        bool Has(int cap) => (caps & (1UL << cap)) != 0;
        var missing = new List<string>();
        if (!Has(CAP_BPF) && !Has(CAP_SYS_ADMIN))
            missing.Add("CAP_BPF");
        if (!Has(CAP_PERFMON) && !Has(CAP_SYS_ADMIN))
            missing.Add("CAP_PERFMON");
        if (needNetAdmin && !Has(CAP_NET_ADMIN))
            missing.Add("CAP_NET_ADMIN");
        if (missing.Count > 0)
        {
            var who = LibC.geteuid() == 0 ? "root without" : "not root and without";
            throw new PrerequisiteException($"insufficient privileges: running as {who} {string.Join(", ", missing)}; run with sudo, or grant CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN{(LibC.geteuid() == 0 ? "" : " and CAP_DAC_READ_SEARCH (tracefs is root-only)")}");
        }
    }

    private static void EnsureMounted(string path, string fstype, string source, string? probe)
    {
        if (IsMounted(path, fstype))
            return;
        Directory.CreateDirectory(path);
        if (LibC.mount(source, path, fstype, 0, 0) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new PrerequisiteException($"{fstype} is not mounted at {path} and mounting it failed ({Marshal.GetPInvokeErrorMessage(errno)}): run 'mount -t {fstype} {source} {path}' as root");
        }
        if (probe is not null && !Directory.Exists(probe))
            throw new PrerequisiteException($"{fstype} at {path} has no {probe}: the kernel lacks tracepoint support");
    }

    private static bool IsMounted(string path, string fstype)
    {
        foreach (var line in File.ReadLines("/proc/self/mounts"))
        {
            var f = line.Split(' ');
            if (f.Length > 2 && f[1] == path && f[2] == fstype)
                return true;
        }
        return false;
    }
}
