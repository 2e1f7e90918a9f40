using System.Runtime.CompilerServices;

namespace Forensics.Query.Tests;

/// <summary>Golden files under tests/Forensics.Query.Tests/golden; FORENSICS_UPDATE_GOLDEN=1 rewrites them.</summary>
internal static class Golden
{
    private static string Dir([CallerFilePath] string here = "") => Path.Combine(Path.GetDirectoryName(here)!, "golden");

    public static void Assert(string name, string actual)
    {
        var path = Path.Combine(Dir(), name);
        if (Environment.GetEnvironmentVariable("FORENSICS_UPDATE_GOLDEN") == "1")
        {
            File.WriteAllText(path, actual);
            return;
        }
        Xunit.Assert.True(File.Exists(path), $"golden file {path} missing: run with FORENSICS_UPDATE_GOLDEN=1 and review it");
        Xunit.Assert.Equal(File.ReadAllText(path), actual);
    }
}
