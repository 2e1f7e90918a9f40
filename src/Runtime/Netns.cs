using System.Globalization;

namespace Forensics.Runtime;

/// <summary>Network namespace inodes, read without stat(2): /proc links name them "net:[inode]".</summary>
public static class Netns
{
    /// <summary>
    /// The inode of a network namespace file: a /proc/PID/ns/net link, or an nsfs bind
    /// mount (/run/netns/NAME, /var/run/netns/cni-...), opened and read back through
    /// /proc/self/fd. Null when it does not exist or is not a network namespace.
    /// </summary>
    public static uint? Inode(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        try
        {
            if (path.StartsWith("/proc/", StringComparison.Ordinal))
                return Parse(new FileInfo(path).LinkTarget);
            using var h = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
            return Parse(new FileInfo($"/proc/self/fd/{h.DangerousGetHandle()}").LinkTarget);
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
