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

    /// <summary>CLOCK_MONOTONIC, CLOCK_BOOTTIME and CLOCK_REALTIME read back to back, in ns.</summary>
    public static unsafe (long Monotonic, long Boottime, long Realtime) Clocks()
    {
        Timespec m, b, r;
        LibC.clock_gettime(LibC.CLOCK_MONOTONIC, &m);
        LibC.clock_gettime(LibC.CLOCK_BOOTTIME, &b);
        LibC.clock_gettime(LibC.CLOCK_REALTIME, &r);
        return (m.tv_sec * 1_000_000_000 + m.tv_nsec, b.tv_sec * 1_000_000_000 + b.tv_nsec, r.tv_sec * 1_000_000_000 + r.tv_nsec);
    }

    /// <summary>True for ENOSPC / EDQUOT: the disk is full.</summary>
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
        using var handle = new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true);
        byte* buf = stackalloc byte[256];
        if (LibC.statx(fd, "", LibC.AT_EMPTY_PATH, LibC.STATX_TYPE, buf) != 0)
            throw new IOException($"{path}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        var mode = *(ushort*)(buf + 0x1C) & 0xF000;
        if (mode != 0x8000)
            throw new IOException($"{path}: is {(mode switch { 0x4000 => "a directory", 0x1000 => "a FIFO", 0x2000 => "a character device", 0x6000 => "a block device", 0xC000 => "a socket", _ => "not a file" })}, not a regular file");
        using var fs = new FileStream(handle, FileAccess.Read);
        if (fs.Length > maxBytes)
            throw new IOException($"{path}: {fs.Length} bytes, more than the {maxBytes} a file of this kind may have");
        using var reader = new StreamReader(fs);
        return reader.ReadToEnd();
    }

    public static bool IsDiskFull(Exception e) =>
        e is IOException io && ((io.HResult & 0xffff) is 28 or 122 || io.Message.Contains("No space left", StringComparison.OrdinalIgnoreCase));
}
