using System.Collections.Concurrent;

namespace Forensics.Tests;

/// <summary>
/// Temporary folders of a test process (recordings, policy and services files), removed when the process
/// ends, so that neither a passing test nor one that fails half way leaves them behind in /tmp.
/// </summary>
public static class Scratch
{
    private static readonly ConcurrentBag<string> Dirs = [];

    static Scratch() => AppDomain.CurrentDomain.ProcessExit += (_, _) =>
    {
        foreach (var d in Dirs)
        {
            try
            {
                Directory.Delete(d, recursive: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // already removed by its test, or held by a process the test left: nothing more to do at exit
            }
        }
    };

    /// <summary>A new folder under the temporary directory, named PREFIX and random characters.</summary>
    public static string Dir(string prefix)
    {
        var d = Directory.CreateTempSubdirectory(prefix).FullName;
        Dirs.Add(d);
        return d;
    }
}
