using System.Runtime.InteropServices;
using Forensics.Datapath.Interop;

namespace Forensics.Datapath;

/// <summary>File system calls .NET does not offer.</summary>
public static class FileSystem
{
    /// <summary>fsync(2) on a directory, so that a rename in it is durable.</summary>
    public static void FsyncDirectory(string path)
    {
        int fd = LibC.open(path, LibC.O_RDONLY | LibC.O_DIRECTORY);
        if (fd < 0)
            throw new IOException($"open {path}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        try
        {
            if (LibC.fsync(fd) != 0)
                throw new IOException($"fsync {path}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        }
        finally
        {
            LibC.close(fd);
        }
    }

    /// <summary>stat(2)'s inode number of a path (a cgroup folder's is its cgroup id); null when it cannot be stat'ed.</summary>
    public static ulong? Inode(string path) => FileStat.Inode(path);

    /// <summary>True for ENOSPC / EDQUOT: the disk is full.</summary>
    public static bool IsDiskFull(Exception e) =>
        e is IOException io && ((io.HResult & 0xffff) is 28 or 122 || io.Message.Contains("No space left", StringComparison.OrdinalIgnoreCase));
}
