using System.Runtime.InteropServices;
using System.Text;

namespace Forensics.Datapath.Interop;

/// <summary>
/// Captures libbpf's log lines (verifier output included) so that a failed call
/// can say why. Installed once; the callback formats the va_list with libc's
/// vsnprintf and keeps the last lines per thread. Never throws into native code.
/// </summary>
internal static unsafe class LibBpfLog
{
    private const int KeepLines = 40;
    private const int TailChars = 600;
    [ThreadStatic] private static byte* buffer;
    [ThreadStatic] private static Queue<string>? recent;
    private static int installed;

    /// <summary>When set, every line also goes to stderr (FORENSICS_LIBBPF_DEBUG=1).</summary>
    private static readonly bool Echo = Environment.GetEnvironmentVariable("FORENSICS_LIBBPF_DEBUG") == "1";

    public static void Install()
    {
        if (Interlocked.Exchange(ref installed, 1) == 0)
            LibBpf.libbpf_set_print(&Print);
    }

    /// <summary>The lines logged on this thread since the last call, joined; null when none.</summary>
    public static string? TakeRecent()
    {
        var q = recent;
        if (q is null || q.Count == 0)
            return null;
        // The interesting part of a verifier log is its end.
        var text = string.Join(" | ", q.Where(l => l.Length > 0).TakeLast(4)).ReplaceLineEndings(" ");
        q.Clear();
        return text;
    }

    public static void Clear() => recent?.Clear();

    [UnmanagedCallersOnly]
    private static int Print(int level, byte* fmt, nint args)
    {
        try
        {
            // A verifier log arrives as one call: the va_list can be read only once, so the buffer is large.
            const int size = 1 << 20;
            if (buffer == null)
                buffer = (byte*)NativeMemory.Alloc(size);
            int n = LibC.vsnprintf(buffer, size, fmt, args);
            if (n <= 0)
                return 0;
            var line = Encoding.UTF8.GetString(buffer, Math.Min(n, size - 1)).TrimEnd('\n');
            if (line.Length > TailChars)
                line = "..." + line[^TailChars..]; // the verifier's reason is at the end
            // level 0 = warn, 1 = info, 2 = debug: keep warnings and infos.
            if (level > 1 && !Echo)
                return 0;
            var q = recent ??= new Queue<string>();
            if (q.Count >= KeepLines)
                q.Dequeue();
            q.Enqueue(line);
            if (Echo)
                Console.Error.WriteLine("libbpf: " + line);
        }
#pragma warning disable CA1031 // never let an exception cross into native code
        catch
        {
        }
#pragma warning restore CA1031
        return 0;
    }
}
