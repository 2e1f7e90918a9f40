using System.Globalization;

namespace Forensics.Runtime;

/// <summary>Network namespace inodes, read without stat(2): /proc links and nsfs mounts name them "net:[inode]".</summary>
public static class Netns
{
    /// <summary>
    /// The inode of a network namespace file: a /proc/PID/ns/net link, or an nsfs bind
    /// mount (/run/netns/NAME, /var/run/netns/cni-...), opened and its mount's root read from
    /// /proc/self/mountinfo. Null when it does not exist or is not a network namespace.
    /// </summary>
    public static uint? Inode(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        try
        {
            if (path.StartsWith("/proc/", StringComparison.Ordinal))
                return Parse(new FileInfo(path).LinkTarget);
            // A bind mount reads back through /proc/self/fd as its own path, not "net:[inode]": its mount
            // (fdinfo's mnt_id) has the namespace as its root in mountinfo ("47 46 0:4 net:[4026532173] /run/netns/x ...")
            using var h = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
            var fd = h.DangerousGetHandle();
            if (Parse(new FileInfo($"/proc/self/fd/{fd}").LinkTarget) is { } direct)
                return direct;
            var mountId = File.ReadLines($"/proc/self/fdinfo/{fd}")
                .FirstOrDefault(l => l.StartsWith("mnt_id:", StringComparison.Ordinal))?[7..].Trim();
            if (mountId is null)
                return null;
            foreach (var line in File.ReadLines("/proc/self/mountinfo"))
            {
                var f = line.Split(' ', 5);
                if (f.Length == 5 && f[0] == mountId)
                    return Parse(f[3]);
            }
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    internal static uint? Parse(string? link) =>
        link is not null && link.StartsWith("net:[", StringComparison.Ordinal) && link.EndsWith(']')
        && uint.TryParse(link.AsSpan(5, link.Length - 6), NumberStyles.None, CultureInfo.InvariantCulture, out var ino) ? ino : null;
}
