using System.Text;

namespace Forensics.Query.Output;

/// <summary>
/// Files the reading verbs write (query results, pcapng): created mode 0600 (a result can
/// hold anything a recording holds: arguments, addresses), never through a symbolic link,
/// never a FIFO or device, and never inside a recording being read or over the file being
/// read, so that <c>-o</c> cannot overwrite evidence.
/// </summary>
public static class OutputTarget
{
    public const UnixFileMode Private = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    /// <summary>Throws <see cref="QueryException"/> when <paramref name="output"/> may not be written.</summary>
    public static void EnsureWritable(string output, IEnumerable<string> protectedPaths)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(protectedPaths);
        if (output.Length == 0)
            throw new QueryException("--output: an empty path");
        var full = Path.GetFullPath(output);
        var info = new FileInfo(full);
        if (info.LinkTarget is not null)
            throw new QueryException($"{output}: is a symbolic link; refusing to write through it");
        if (Directory.Exists(full))
            throw new QueryException($"{output}: is a directory");
        // A FIFO, a device or a socket (which .NET cannot tell from an empty file) is never opened:
        // opening a FIFO waits for a reader, and a device would be written.
        if (info.Exists && Recording.RegularFile.Kind(full) is { } kind && kind != Recording.RegularFile.Regular)
            throw new QueryException($"{output}: exists and is {kind}; refusing to write to it (remove it first if it is an empty file)");
        var parent = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(parent))
            throw new QueryException($"{output}: the folder {parent} does not exist");
        var real = Path.Combine(RealPath(parent), Path.GetFileName(full));
        foreach (var p in protectedPaths)
        {
            var prot = RealPath(Path.GetFullPath(p));
            if (real == prot || real.StartsWith(Path.TrimEndingDirectorySeparator(prot) + "/", StringComparison.Ordinal))
                throw new QueryException($"{output}: inside the recording being read ({p}); refusing to overwrite evidence");
        }
    }

    /// <summary>Creates (or truncates) a text file after <see cref="EnsureWritable"/>.</summary>
    public static StreamWriter CreateText(string output, IEnumerable<string> protectedPaths)
    {
        EnsureWritable(output, protectedPaths);
        return new StreamWriter(Create(Path.GetFullPath(output)), new UTF8Encoding(false));
    }

    /// <summary>Creates (or truncates) a binary file after <see cref="EnsureWritable"/>.</summary>
    public static FileStream CreateBinary(string output, IEnumerable<string> protectedPaths)
    {
        EnsureWritable(output, protectedPaths);
        return Create(Path.GetFullPath(output));
    }

    private static FileStream Create(string full)
    {
        var fs = new FileStream(full, PrivateFile(FileMode.Create));
        Restrict(full); // an existing file keeps its mode on truncation
        return fs;
    }

    /// <summary>Options that create a file mode 0600 (the umask cannot widen it).</summary>
    public static FileStreamOptions PrivateFile(FileMode mode)
    {
        var o = new FileStreamOptions { Mode = mode, Access = FileAccess.Write, Share = FileShare.None };
        if (!OperatingSystem.IsWindows())
            o.UnixCreateMode = Private;
        return o;
    }

    /// <summary>Creates a folder mode 0700 (and any missing parents, also 0700).</summary>
    public static DirectoryInfo CreatePrivateDirectory(string path)
    {
        if (OperatingSystem.IsWindows())
            return Directory.CreateDirectory(path);
        var d = Directory.CreateDirectory(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return d;
    }

    /// <summary>An empty private file next to <paramref name="full"/> for a writer that replaces it by rename.</summary>
    public static string TemporaryNextTo(string full)
    {
        var tmp = Path.Combine(Path.GetDirectoryName(full)!, "." + Path.GetFileName(full) + "." + Guid.NewGuid().ToString("N")[..8] + ".tmp");
        using (new FileStream(tmp, PrivateFile(FileMode.CreateNew)))
        {
        }
        return tmp;
    }

    public static void Restrict(string path)
    {
        if (!OperatingSystem.IsWindows())
            File.SetUnixFileMode(path, Private);
    }

    /// <summary>The path with every symbolic link on the way resolved (as far as the path exists).</summary>
    public static string RealPath(string full)
    {
        var parts = Path.GetFullPath(full).Split('/', StringSplitOptions.RemoveEmptyEntries);
        var current = "/";
        for (var i = 0; i < parts.Length; i++)
        {
            var next = Path.Combine(current, parts[i]);
            FileSystemInfo fsi = Directory.Exists(next) ? new DirectoryInfo(next) : new FileInfo(next);
            if (fsi.LinkTarget is not null)
            {
                var target = fsi.ResolveLinkTarget(returnFinalTarget: true);
                next = target?.FullName ?? next;
            }
            else if (!fsi.Exists)
                return Path.Combine([next, .. parts[(i + 1)..]]);
            current = next;
        }
        return current;
    }
}
