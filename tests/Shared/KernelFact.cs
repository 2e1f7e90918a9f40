using Forensics.Datapath;

namespace Forensics.Tests;

/// <summary>
/// A test that needs the real kernel (root, BPF, network namespaces). Locally
/// without privileges it skips with the reason; in CI (CI=true) it never
/// skips: it runs and fails, so a machine that cannot run it is not green.
/// </summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class KernelFactAttribute : FactAttribute
{
    public KernelFactAttribute()
    {
        if (Environment.GetEnvironmentVariable("CI") == "true")
            return;
        var reason = KernelAccess.MissingReason();
        if (reason is not null)
            Skip = "kernel test: " + reason;
    }
}

public static class KernelAccess
{
    /// <summary>Why kernel tests cannot run here; null when they can.</summary>
    public static string? MissingReason()
    {
        try
        {
            Prerequisites.EnsureKernelAccess();
            return null;
        }
        catch (PrerequisiteException e)
        {
            return e.Message;
        }
    }
}
