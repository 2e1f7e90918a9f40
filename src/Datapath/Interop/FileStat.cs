using System.Runtime.InteropServices;

namespace Forensics.Datapath.Interop;

/// <summary>stat(2) from libc, for the one field .NET does not expose: the inode number.</summary>
internal static unsafe partial class FileStat
{
    // struct stat on x86_64 and aarch64 glibc: st_dev (8 bytes) then st_ino (8 bytes); 144 bytes or less in all.
    private const int StatBufferSize = 256;

    [LibraryImport("libc", EntryPoint = "stat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int stat(string path, byte* buf);

    /// <summary>The inode number of a path (following symlinks); null when it cannot be stat'ed.</summary>
    public static ulong? Inode(string path)
    {
        byte* buf = stackalloc byte[StatBufferSize];
        if (stat(path, buf) != 0)
            return null;
        return *(ulong*)(buf + 8);
    }
}
