using System.Text.RegularExpressions;

namespace Forensics.Runtime;

/// <summary>A container id and pod uid read from a cgroup path; either may be null.</summary>
public sealed record CgroupOwner(string? ContainerId, string? PodUid);

/// <summary>
/// Which container a cgroup path belongs to, for the layouts runtimes and kubelets make:
/// cgroupfs (<c>/k8s.io/ID</c> from containerd without a kubelet,
/// <c>/kubepods/burstable/podUID/ID</c>), systemd
/// (<c>kubepods-burstable-podUID.slice/cri-containerd-ID.scope</c>, <c>crio-ID.scope</c>,
/// <c>docker-ID.scope</c>). Container ids are 64 lowercase hex digits; a conmon or
/// other helper scope is nobody's container.
/// </summary>
public static partial class CgroupPaths
{
    [GeneratedRegex("^(?:cri-containerd|crio|docker)-([0-9a-f]{64})\\.scope$")]
    private static partial Regex SystemdScope();

    [GeneratedRegex("^[0-9a-f]{64}$")]
    private static partial Regex BareId();

    [GeneratedRegex("^(?:kubepods(?:-[a-z]+)*-)?pod([0-9a-f_-]{36})(?:\\.slice)?$")]
    private static partial Regex PodDir();

    public static CgroupOwner Parse(string? path)
    {
        if (string.IsNullOrEmpty(path))
            return new CgroupOwner(null, null);
        string? id = null, uid = null;
        foreach (var part in path.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            if (SystemdScope().Match(part) is { Success: true } m)
                id = m.Groups[1].Value;
            else if (BareId().IsMatch(part))
                id = part;
            else if (PodDir().Match(part) is { Success: true } p)
                uid = p.Groups[1].Value.Replace('_', '-');
        }
        return new CgroupOwner(id, uid);
    }

    /// <summary>The container id of the cgroup a process is in (the unified hierarchy's line "0::PATH" of /proc/PID/cgroup, else any line naming one).</summary>
    public static CgroupOwner OfProcess(int pid)
    {
        try
        {
            var lines = File.ReadAllLines($"/proc/{pid}/cgroup");
            CgroupOwner? any = null;
            foreach (var line in lines)
            {
                var f = line.Split(':', 3);
                if (f.Length < 3)
                    continue;
                var o = Parse(f[2]);
                if (f[0] == "0" && o.ContainerId is not null)
                    return o;
                if (o.ContainerId is not null)
                    any ??= o;
            }
            return any ?? new CgroupOwner(null, null);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return new CgroupOwner(null, null);
        }
    }

    /// <summary>Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified in the hybrid layout); null without one.</summary>
    public static string? UnifiedMount(string mountinfo = "/proc/self/mountinfo")
    {
        if (!File.Exists(mountinfo))
            return null;
        foreach (var line in File.ReadLines(mountinfo))
        {
            int dash = line.IndexOf(" - ", StringComparison.Ordinal);
            if (dash < 0)
                continue;
            var after = line[(dash + 3)..].Split(' ');
            var before = line[..dash].Split(' ');
            if (after.Length > 0 && after[0] == "cgroup2" && before.Length > 4)
                return before[4].Replace("\\040", " ", StringComparison.Ordinal);
        }
        return null;
    }
}
