using System.Globalization;
using System.Runtime.InteropServices;
using Forensics.Datapath.Interop;
using Microsoft.Win32.SafeHandles;

namespace Forensics.Datapath;

/// <summary>
/// Files the tool takes from users or shares between its processes: read only when regular, locked
/// with flock(2) so that two processes never write the same recording or lab, folders created
/// atomically. .NET offers none of these.
/// </summary>
public static class Files
{
    /// <summary>
    /// Reads a text file the user named (a cluster YAML, a TracingPolicy), refusing anything but a
    /// regular file of at most <paramref name="maxBytes"/>: opened with O_NONBLOCK so that a FIFO
    /// cannot block, then fstat'ed. Throws <see cref="IOException"/> with a one-line message.
    /// </summary>
    public static unsafe string ReadRegularText(string path, long maxBytes)
    {
        ArgumentNullException.ThrowIfNull(path);
        int fd = LibC.open(path, LibC.O_RDONLY | LibC.O_NONBLOCK | LibC.O_CLOEXEC);
        if (fd < 0)
            throw new IOException($"{path}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        using var handle = new SafeFileHandle(fd, ownsHandle: true);
        var kind = KindOf(fd, path);
        if (kind != "a regular file")
            throw new IOException($"{path}: is {kind}, not a regular file");
        using var fs = new FileStream(handle, FileAccess.Read);
        if (fs.Length > maxBytes)
            throw new IOException($"{path}: {fs.Length} bytes, more than the {maxBytes} a file of this kind may have");
        using var reader = new StreamReader(fs);
        return reader.ReadToEnd();
    }

    /// <summary>
    /// Opens a file the user named for reading (an export to import), refusing anything but a regular file:
    /// opened with O_NONBLOCK so that a FIFO cannot block, then fstat'ed. Throws <see cref="IOException"/>
    /// with a one-line message.
    /// </summary>
    public static FileStream OpenRegular(string path, int bufferSize = 1 << 16)
    {
        ArgumentNullException.ThrowIfNull(path);
        int fd = LibC.open(path, LibC.O_RDONLY | LibC.O_NONBLOCK | LibC.O_CLOEXEC);
        if (fd < 0)
            throw new IOException($"{path}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        try
        {
            var kind = KindOf(fd, path);
            if (kind != "a regular file")
                throw new IOException($"{path}: is {kind}, not a regular file");
            return new FileStream(handle, FileAccess.Read, bufferSize);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Opens a file of a recording or bundle for reading, refusing anything but a regular file with no race
    /// between the check and the open: opened with O_NOFOLLOW (a final symbolic link fails) and O_NONBLOCK (a FIFO
    /// renamed over the path cannot make the open wait for a writer), then the descriptor itself is fstat'ed.
    /// Throws <see cref="IOException"/> with a one-line message ("is a FIFO, not a regular file").
    /// </summary>
    public static SafeFileHandle OpenRegularNoFollow(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        int fd = LibC.open(path, LibC.O_RDONLY | LibC.O_NONBLOCK | LibC.O_NOFOLLOW | LibC.O_CLOEXEC);
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new IOException(errno == LibC.ELOOP ? $"{path}: is a symbolic link, not a regular file" : $"{path}: {Marshal.GetPInvokeErrorMessage(errno)}");
        }
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        try
        {
            var kind = KindOf(fd, path);
            if (kind != "a regular file")
                throw new IOException($"{path}: is {kind}, not a regular file");
            return handle;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Creates a folder mode 0700 if it does not exist; true when this call created it (mkdir(2) is
    /// atomic: of two processes creating the same folder, exactly one is told it did).
    /// </summary>
    public static bool CreatePrivateDirectory(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var full = Path.GetFullPath(path);
        var parent = Path.GetDirectoryName(full);
        if (parent is not null && !Directory.Exists(parent) && !OperatingSystem.IsWindows())
            Directory.CreateDirectory(parent, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        if (LibC.mkdir(full, 0x1C0) == 0)
            return true;
        var errno = Marshal.GetLastPInvokeError();
        if (errno == LibC.EEXIST && Directory.Exists(full))
            return false;
        throw new IOException($"{path}: {Marshal.GetPInvokeErrorMessage(errno)}", errno);
    }

    /// <summary>
    /// Takes an exclusive flock on a folder, or on a lock file (created 0600), without waiting: the
    /// handle holds it until disposed or the process ends (also by kill -9). Null when another
    /// process holds it.
    /// </summary>
    public static SafeFileHandle? TryLock(string path, bool directory)
    {
        ArgumentNullException.ThrowIfNull(path);
        int fd = directory
            ? LibC.open(path, LibC.O_RDONLY | LibC.O_DIRECTORY | LibC.O_CLOEXEC)
            : LibC.open(path, LibC.O_RDWR | LibC.O_CREAT | LibC.O_CLOEXEC, 0x180);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new IOException($"{path}: {Marshal.GetPInvokeErrorMessage(errno)}", errno);
        }
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        if (LibC.flock(fd, LibC.LOCK_EX | LibC.LOCK_NB) == 0)
            return handle;
        var e = Marshal.GetLastPInvokeError();
        handle.Dispose();
        if (e == LibC.EWOULDBLOCK)
            return null;
        throw new IOException($"flock {path}: {Marshal.GetPInvokeErrorMessage(e)}", e);
    }

    /// <summary>Whether the open file still is the one at <paramref name="path"/> (not unlinked or replaced meanwhile).</summary>
    public static unsafe bool IsAt(SafeFileHandle handle, string path)
    {
        ArgumentNullException.ThrowIfNull(handle);
        byte* a = stackalloc byte[256];
        byte* b = stackalloc byte[256];
        if (LibC.statx((int)handle.DangerousGetHandle(), "", LibC.AT_EMPTY_PATH, LibC.STATX_INO, a) != 0)
            return false;
        if (LibC.statx(-100, path, 0, LibC.STATX_INO, b) != 0)
            return false;
        // stx_ino at 0x20, stx_dev_major/minor at 0x88/0x8C
        return *(ulong*)(a + 0x20) == *(ulong*)(b + 0x20) && *(ulong*)(a + 0x88) == *(ulong*)(b + 0x88);
    }

    /// <summary>The process holding a flock on <paramref name="path"/>, from /proc/locks; null when none is found.</summary>
    public static unsafe int? LockHolder(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        byte* b = stackalloc byte[256];
        if (LibC.statx(-100, path, 0, LibC.STATX_INO, b) != 0)
            return null;
        var ino = *(ulong*)(b + 0x20);
        var major = *(uint*)(b + 0x88);
        var minor = *(uint*)(b + 0x8C);
        // "1: FLOCK  ADVISORY  WRITE 1234 00:1f:5678 0 EOF"
        var want = string.Create(CultureInfo.InvariantCulture, $"{major:x2}:{minor:x2}:{ino}");
        try
        {
            foreach (var line in File.ReadLines("/proc/locks"))
            {
                var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (f.Length >= 6 && f[1] == "FLOCK" && f[5] == want && int.TryParse(f[4], NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
                    return pid;
            }
        }
        catch (IOException)
        {
        }
        return null;
    }

    /// <summary>What an open file is ("a regular file", "a FIFO", ...), from statx on the descriptor.</summary>
    private static unsafe string KindOf(int fd, string path)
    {
        byte* buf = stackalloc byte[256];
        if (LibC.statx(fd, "", LibC.AT_EMPTY_PATH, LibC.STATX_TYPE, buf) != 0)
            throw new IOException($"{path}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        return (*(ushort*)(buf + 0x1C) & 0xF000) switch
        {
            0x8000 => "a regular file",
            0x4000 => "a directory",
            0x1000 => "a FIFO",
            0x2000 => "a character device",
            0x6000 => "a block device",
            0xC000 => "a socket",
            _ => "not a file",
        };
    }
}
