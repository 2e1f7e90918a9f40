using Forensics.Datapath;
using Microsoft.Win32.SafeHandles;

namespace Forensics.Recorder.Storage;

/// <summary>Why a recording's folder cannot be had.</summary>
public enum OutputFolderProblem
{
    /// <summary>It holds files already (a recording is never written over another).</summary>
    NotEmpty,

    /// <summary>Another process records to it, or recovers it, right now.</summary>
    Busy,

    /// <summary>It cannot be created or written (not a folder, no permission, read-only).</summary>
    NotWritable,

    /// <summary>Its disk is full.</summary>
    DiskFull,
}

/// <summary>The recording folder cannot be had; the message is one line naming the holder when one holds it.</summary>
public sealed class OutputFolderException : IOException
{
    public OutputFolderException(string message, OutputFolderProblem problem, Exception? inner = null) : base(message, inner) => Problem = problem;
    public OutputFolderException() { }
    public OutputFolderException(string message) : base(message) { }
    public OutputFolderException(string message, Exception inner) : base(message, inner) { }

    public OutputFolderProblem Problem { get; }
}

/// <summary>
/// A recording's folder, held by one process: created atomically mode 0700 (or taken when it exists
/// and is empty), with an exclusive flock on the folder itself for as long as the recorder (or
/// <c>recover</c>) works in it. Two <c>record</c>s on one folder: one gets it, the other is told who
/// has it. A recording that never started leaves no empty folder behind (<see cref="Abandon"/>).
/// </summary>
public sealed class OutputFolder : IDisposable
{
    private SafeFileHandle? handle;

    private OutputFolder(string path, SafeFileHandle handle, bool created)
    {
        Path = path;
        this.handle = handle;
        Created = created;
    }

    public string Path { get; }

    /// <summary>This process created the folder (it did not exist).</summary>
    public bool Created { get; }

    /// <summary>Takes a new or empty folder for a new recording; throws <see cref="OutputFolderException"/>.</summary>
    public static OutputFolder Claim(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        bool created;
        SafeFileHandle? h;
        try
        {
            created = Files.CreatePrivateDirectory(path);
            h = Files.TryLock(path, directory: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new OutputFolderException($"cannot write the output folder {path}: {e.Message}",
                FileSystem.IsDiskFull(e) ? OutputFolderProblem.DiskFull : OutputFolderProblem.NotWritable, e);
        }
        if (h is null)
            throw Busy(path);
        var folder = new OutputFolder(path, h, created);
        try
        {
            // Checked under the lock: a recorder that held it a moment ago has left files (or none).
            if (Directory.EnumerateFileSystemEntries(path).Any())
                throw new OutputFolderException($"output folder {path} exists and is not empty", OutputFolderProblem.NotEmpty);
            if (!OperatingSystem.IsWindows())
                File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            var probe = System.IO.Path.Combine(path, ".write-test");
            File.WriteAllText(probe, "");
            File.Delete(probe);
            return folder;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            folder.Abandon();
            throw e as OutputFolderException ?? new OutputFolderException($"cannot write the output folder {path}: {e.Message}",
                FileSystem.IsDiskFull(e) ? OutputFolderProblem.DiskFull : OutputFolderProblem.NotWritable, e);
        }
    }

    /// <summary>Takes an existing recording's folder (for <c>recover</c>); throws when a recorder still holds it.</summary>
    public static OutputFolder Lock(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var h = Files.TryLock(path, directory: true) ?? throw Busy(path);
        return new OutputFolder(path, h, created: false);
    }

    private static OutputFolderException Busy(string path) =>
        new($"{path} is in use by another process{(Files.LockHolder(path) is { } pid ? $" (pid {pid})" : "")}: a recorder is writing it, or recover is", OutputFolderProblem.Busy);

    /// <summary>The recording did not start: removes the folder if this process created it and it is still empty.</summary>
    public void Abandon()
    {
        try
        {
            if (Created && Directory.Exists(Path) && !Directory.EnumerateFileSystemEntries(Path).Any())
                Directory.Delete(Path);
        }
        catch (IOException)
        {
        }
        Dispose();
    }

    public void Dispose()
    {
        handle?.Dispose();
        handle = null;
    }
}
