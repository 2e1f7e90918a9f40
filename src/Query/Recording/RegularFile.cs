using Forensics.Query.Output;
using Microsoft.Win32.SafeHandles;

namespace Forensics.Query.Recording;

/// <summary>
/// Opens only regular files, with managed calls alone (native code lives in src/Datapath only). A FIFO,
/// a device or a socket given as a recording, a manifest or a bundle would block open(2) forever (a FIFO
/// without a writer) or stream without end (/dev/zero). .NET reports every one of them as a "Normal" file,
/// but Linux gives each a size of 0, and an empty file is never a manifest, a bundle, a segment or a key:
/// so a file is read only when it is not a link, not a folder and not empty.
/// <list type="number">
/// <item>Before it is opened, the path itself (lstat, not following a final link): a link, a folder or
/// an empty or special file is refused without being opened.</item>
/// <item>After it is opened, the handle actually opened: /proc/self/fd names the file it holds, which
/// must be the path checked (a link swapped in after step 1 would name its target: refused), and fstat
/// on the handle must still show a non-empty file that is not a folder.</item>
/// </list>
/// What managed code cannot do is open without waiting (O_NONBLOCK): a FIFO renamed over the path between
/// the two steps, by someone who may write its folder, would make the open wait for a writer. So the command
/// line sets <see cref="NoWaitOpen"/> (src/Datapath's Files.OpenRegularNoFollow: O_NONBLOCK | O_NOFOLLOW, then
/// fstat of the descriptor), and step 2 is done on a descriptor that could not wait; without it (a library user),
/// the managed open, where Ctrl-C ends such a wait. A recording's folders are 0700, and the kernel refuses to
/// follow another user's link in a sticky folder such as /tmp (fs.protected_symlinks).
/// </summary>
public static class RegularFile
{
    /// <summary>
    /// Opens a path for reading without following a final link and without waiting, and refuses (IOException,
    /// one line) anything but a regular file, checked on the descriptor opened. Set by the command line.
    /// </summary>
    public static Func<string, SafeFileHandle>? NoWaitOpen { get; set; }

    /// <summary>What <see cref="Kind"/> says of a regular file.</summary>
    public const string Regular = "a regular file";

    /// <summary>What <see cref="Kind"/> says of a file .NET cannot tell from a FIFO, device or socket: one of size 0.</summary>
    public const string EmptyOrSpecial = "empty or not a regular file (a FIFO, a device or a socket)";

    /// <summary>
    /// What a path is, without following a final symbolic link and without opening it: "a symbolic link",
    /// "a directory", <see cref="Regular"/> (a file with bytes) or <see cref="EmptyOrSpecial"/>; null when nothing is there.
    /// </summary>
    public static string? Kind(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var info = new FileInfo(path);
        if (info.LinkTarget is not null)
            return "a symbolic link";
        if (Directory.Exists(path))
            return "a directory";
        if (!info.Exists)
            return null;
        return info.Length > 0 ? Regular : EmptyOrSpecial;
    }

    /// <summary>
    /// Opens a regular file for reading; throws <see cref="RecordingException"/> naming what it is
    /// otherwise (empty or special, a directory, a symbolic link) or why it cannot be opened.
    /// </summary>
    public static FileStream OpenRead(string path, string shownAs)
    {
        ArgumentNullException.ThrowIfNull(path);
        var full = Path.GetFullPath(path);
        switch (Kind(full))
        {
            case null:
                throw new RecordingException($"{shownAs}: no such file");
            case "a symbolic link":
                throw new RecordingException($"{shownAs}: is a symbolic link; refusing to follow it");
            case Regular:
                break;
            case var kind:
                throw new RecordingException($"{shownAs}: is {kind}; refusing to read it");
        }
        SafeFileHandle handle;
        try
        {
            handle = NoWaitOpen is { } open ? open(full) : File.OpenHandle(full, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RecordingException($"{shownAs}: {e.Message}");
        }
        try
        {
            CheckOpened(handle, full, shownAs);
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

    /// <summary>The checks on the handle actually opened: the file checked, still a non-empty file that is not a folder.</summary>
    internal static void CheckOpened(SafeFileHandle handle, string full, string shownAs)
    {
        var opened = new FileInfo($"/proc/self/fd/{handle.DangerousGetHandle()}").LinkTarget
            ?? throw new RecordingException($"{shownAs}: cannot tell which file was opened (/proc/self/fd)");
        var expected = OutputTarget.RealPath(full);
        if (!string.Equals(opened, expected, StringComparison.Ordinal))
            throw new RecordingException($"{shownAs}: changed while it was opened (it now leads to {opened}); refusing to read it");
        if ((File.GetAttributes(handle) & FileAttributes.Directory) != 0)
            throw new RecordingException($"{shownAs}: is a directory; refusing to read it");
        if (RandomAccess.GetLength(handle) <= 0)
            throw new RecordingException($"{shownAs}: is {EmptyOrSpecial}; refusing to read it");
    }
}
