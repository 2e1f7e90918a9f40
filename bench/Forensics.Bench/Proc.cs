using System.Globalization;

namespace Forensics.Bench;

/// <summary>CPU time per thread (from /proc/self/task) and the peak resident set (VmHWM, resettable).</summary>
internal static class Proc
{
    private static readonly double TickSeconds = 1.0 / 100; // USER_HZ

    /// <summary>CPU seconds (user + system) by thread name, summed over threads of the same name.</summary>
    public static Dictionary<string, double> ThreadCpu()
    {
        var result = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var task in Directory.EnumerateDirectories("/proc/self/task"))
        {
            try
            {
                var stat = File.ReadAllText(Path.Combine(task, "stat"));
                int open = stat.IndexOf('('), close = stat.LastIndexOf(')');
                var name = stat[(open + 1)..close];
                var f = stat[(close + 2)..].Split(' ');
                double cpu = (long.Parse(f[11], CultureInfo.InvariantCulture) + long.Parse(f[12], CultureInfo.InvariantCulture)) * TickSeconds;
                if (name.StartsWith(".NET TP Worker", StringComparison.Ordinal) || name.StartsWith(".NET ThreadPool", StringComparison.Ordinal))
                    name = ".NET threadpool";
                result[name] = result.GetValueOrDefault(name) + cpu;
            }
            catch (IOException)
            {
                // the thread ended
            }
        }
        return result;
    }

    public static double ThisThreadCpu()
    {
        var stat = File.ReadAllText("/proc/thread-self/stat");
        var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return (long.Parse(f[11], CultureInfo.InvariantCulture) + long.Parse(f[12], CultureInfo.InvariantCulture)) * TickSeconds;
    }

    /// <summary>Resident memory now, by kind: anonymous (heaps), file-backed (code, libraries), shared (the ring buffer's pages).</summary>
    public static (long Anon, long File, long Shmem) RssParts()
    {
        long anon = 0, file = 0, shmem = 0;
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            long Kb() => long.Parse(line.Split(':')[1].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
            if (line.StartsWith("RssAnon:", StringComparison.Ordinal))
                anon = Kb();
            else if (line.StartsWith("RssFile:", StringComparison.Ordinal))
                file = Kb();
            else if (line.StartsWith("RssShmem:", StringComparison.Ordinal))
                shmem = Kb();
        }
        return (anon, file, shmem);
    }

    public static long PeakRssBytes()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return long.Parse(line[6..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
        return 0;
    }

    public static long RssBytes()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                return long.Parse(line[6..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
        return 0;
    }

    /// <summary>Resets VmHWM to the current RSS (clear_refs 5).</summary>
    public static void ResetPeak() => File.WriteAllText("/proc/self/clear_refs", "5");
}
