using System.Runtime.InteropServices;
using Forensics.Datapath.Interop;

namespace Forensics.Datapath.Lab;

/// <summary>Named network namespaces (/run/netns, as iproute2 keeps them).</summary>
public static class NetNamespace
{
    public const string Dir = "/run/netns";

    public static bool Exists(string name) => File.Exists(Path.Combine(Dir, name));

    /// <summary>Names of every named network namespace on the machine.</summary>
    public static IReadOnlyList<string> List() =>
        Directory.Exists(Dir) ? Directory.GetFiles(Dir).Select(Path.GetFileName).OfType<string>().Order(StringComparer.Ordinal).ToList() : [];

    /// <summary>The namespace's inode (what /proc/PID/ns/net links to as net:[inode]); null when it does not exist.</summary>
    public static ulong? Inode(string name)
    {
        // /run/netns/NAME is a bind mount of nsfs; /proc/self/mountinfo names its root net:[inode].
        var mountPoint = Path.Combine(Dir, name);
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            var f = line.Split(' ');
            if (f.Length > 4 && f[4] == mountPoint && f[3].StartsWith("net:[", StringComparison.Ordinal)
                && ulong.TryParse(f[3].AsSpan(5, f[3].Length - 6), System.Globalization.CultureInfo.InvariantCulture, out var ino))
                return ino;
        }
        return null;
    }

    /// <summary>
    /// Runs <paramref name="action"/> on a fresh thread that has entered the namespace
    /// (setns affects only the calling thread), and returns its result. Sockets and
    /// interface indexes used inside belong to that namespace.
    /// </summary>
    public static T Run<T>(string name, Func<T> action) => RunAt(Path.Combine(Dir, name), action, name);

    /// <summary>
    /// As <see cref="Run{T}(string, Func{T})"/> for a namespace given by a path: a /run/netns bind
    /// mount, /proc/PID/ns/net, or any nsfs file. A socket opened inside stays in that namespace
    /// after the thread is gone.
    /// </summary>
    public static T RunAt<T>(string path, Func<T> action, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(action);
        name ??= path;
        T result = default!;
        Exception? error = null;
        var t = new Thread(() =>
        {
            try
            {
                using var ns = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
                if (LibC.setns((int)ns.DangerousGetHandle(), LibC.CLONE_NEWNET) != 0)
                {
                    int errno = Marshal.GetLastPInvokeError();
                    // EPERM: setns(CLONE_NEWNET) needs CAP_SYS_ADMIN besides the namespace's own CAP_NET_ADMIN
                    throw new LabException($"cannot enter network namespace {name}: {Marshal.GetPInvokeErrorMessage(errno)}{(errno == 1 ? " (entering a network namespace needs CAP_SYS_ADMIN)" : "")}");
                }
                result = action();
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                error = e;
            }
        }) { IsBackground = true, Name = "netns " + name };
        t.Start();
        t.Join();
        if (error is not null)
            throw error is LabException ? error : new LabException($"in network namespace {name}: {error.Message}", error);
        return result;
    }

    /// <summary>The interfaces of the namespace at <paramref name="path"/> (null: the caller's) by ifindex.</summary>
    public static Dictionary<uint, string> Interfaces(string? path)
    {
        static Dictionary<uint, string> List()
        {
            var names = new Dictionary<uint, string>();
            foreach (var nic in System.Net.NetworkInformation.NetworkInterface.GetAllNetworkInterfaces())
            {
                uint index = LibC.if_nametoindex(nic.Name); // in the thread's namespace, as the listing
                if (index != 0)
                    names[index] = nic.Name;
            }
            return names;
        }
        return path is null ? List() : RunAt(path, List);
    }

    public static void Run(string name, Action action) => Run(name, () => { action(); return 0; });

    /// <summary>The net namespace inode of a process, from /proc/PID/ns/net; null if it is gone.</summary>
    public static ulong? InodeOfProcess(int pid)
    {
        try
        {
            var link = new FileInfo($"/proc/{pid}/ns/net").LinkTarget; // net:[4026532xxx]
            if (link is null || !link.StartsWith("net:[", StringComparison.Ordinal))
                return null;
            return ulong.Parse(link.AsSpan(5, link.Length - 6), System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
            return null;
        }
    }
}

/// <summary>A lab failure: one line saying what failed.</summary>
public sealed class LabException : Exception
{
    public LabException(string message) : base(message) { }
    public LabException() { }
    public LabException(string message, Exception inner) : base(message, inner) { }
}
