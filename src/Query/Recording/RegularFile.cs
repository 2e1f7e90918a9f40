using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Forensics.Query.Recording;

/// <summary>
/// Opens only regular files. A FIFO, a device or a socket given as a recording, a manifest or a
/// bundle would block open(2) forever (a FIFO without a writer) or stream without end (/dev/zero);
/// .NET cannot tell them from files before opening. So the file is opened with O_NONBLOCK (an
/// open that cannot wait for a writer) and O_NOFOLLOW (the final component is not a link), and
/// fstat on the open descriptor must say "regular file" before a byte is read: no window between
/// the check and the use.
/// </summary>
public static class RegularFile
{
    // <fcntl.h>: the same on x86_64 and aarch64 except O_NOFOLLOW (asm-generic vs arm).
    private const int O_RDONLY = 0;
    private const int O_NONBLOCK = 0x800;
    private const int O_CLOEXEC = 0x80000;
    private static int O_NOFOLLOW => RuntimeInformation.ProcessArchitecture is Architecture.Arm64 or Architecture.Arm ? 0x8000 : 0x20000;

    // <linux/stat.h>: struct statx has one layout on every architecture.
    private const int AT_FDCWD = -100;
    private const int AT_SYMLINK_NOFOLLOW = 0x100;
    private const int AT_EMPTY_PATH = 0x1000;
    private const uint STATX_TYPE = 0x1;
    private const uint STATX_SIZE = 0x200;
    private const int StatxModeOffset = 0x1C;
    private const int StatxBytes = 256;
    private const int S_IFMT = 0xF000;
    private const int S_IFREG = 0x8000;

    /// <summary>What a path is, without following a final symbolic link and without opening it.</summary>
    public static string? Kind(string path)
    {
        var buf = new byte[StatxBytes];
        if (Native.statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_TYPE | STATX_SIZE, buf) != 0)
            return null;
        return KindOf(Mode(buf));
    }

    /// <summary>
    /// Opens a regular file for reading; throws <see cref="RecordingException"/> naming what it is
    /// otherwise (a FIFO, a device, a directory, a symbolic link) or why it cannot be opened.
    /// </summary>
    public static FileStream OpenRead(string path, string shownAs)
    {
        ArgumentNullException.ThrowIfNull(path);
        var fd = Native.open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            // ELOOP: the final component is a symbolic link (O_NOFOLLOW).
            throw new RecordingException(errno == 40
                ? $"{shownAs}: is a symbolic link; refusing to follow it"
                : $"{shownAs}: {Marshal.GetPInvokeErrorMessage(errno)}");
        }
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        try
        {
            var buf = new byte[StatxBytes];
            if (Native.statx(fd, "", AT_EMPTY_PATH, STATX_TYPE | STATX_SIZE, buf) != 0)
                throw new RecordingException($"{shownAs}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
            var kind = KindOf(Mode(buf));
            if (kind != "a regular file")
                throw new RecordingException($"{shownAs}: is {kind}, not a regular file; refusing to read it");
            return new FileStream(handle, FileAccess.Read, 1 << 16);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Reads a whole regular file of at most <paramref name="maxBytes"/> bytes.</summary>
    public static byte[] ReadAllBytes(string path, string shownAs, long maxBytes, string raiseWith)
    {
        using var fs = OpenRead(path, shownAs);
        if (fs.Length > maxBytes)
            throw new RecordingException($"{shownAs}: {fs.Length} bytes, more than the limit of {maxBytes} ({raiseWith} raises it)");
        var data = new byte[fs.Length];
        fs.ReadExactly(data);
        return data;
    }

    private static int Mode(byte[] statx) => BitConverter.ToUInt16(statx, StatxModeOffset);

    private static string KindOf(int mode) => (mode & S_IFMT) switch
    {
        S_IFREG => "a regular file",
        0x4000 => "a directory",
        0xA000 => "a symbolic link",
        0x1000 => "a FIFO",
        0x2000 => "a character device",
        0x6000 => "a block device",
        0xC000 => "a socket",
        _ => "of an unknown type",
    };

    private static class Native
    {
        [DllImport("libc", SetLastError = true, CharSet = CharSet.Ansi, BestFitMapping = false, ThrowOnUnmappableChar = true)]
        [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
        public static extern int open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

        [DllImport("libc", SetLastError = true, CharSet = CharSet.Ansi, BestFitMapping = false, ThrowOnUnmappableChar = true)]
        [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
        public static extern int statx(int dirfd, [MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags, uint mask, [Out] byte[] buffer);
    }
}
