using Forensics.Recorder.Storage;

namespace Forensics.Recorder.Tests;

/// <summary>A recording's folder belongs to one process: created atomically, 0700, locked, left clean when nothing was recorded.</summary>
public sealed class OutputFolderTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("fx-outfolder-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Claim_NewFolder_Created0700AndHeld()
    {
        var path = Path.Combine(_dir, "rec");
        using var folder = OutputFolder.Claim(path);
        Assert.True(folder.Created);
        if (!OperatingSystem.IsWindows())
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(path));
        var e = Assert.Throws<OutputFolderException>(() => OutputFolder.Claim(path));
        Assert.Equal(OutputFolderProblem.Busy, e.Problem);
        Assert.Equal($"{path} is in use by another process (pid {Environment.ProcessId}): a recorder is writing it, or recover is", e.Message);
    }

    [Fact]
    public void Claim_EightAtOnce_ExactlyOneGetsIt()
    {
        var path = Path.Combine(_dir, "race");
        using var start = new Barrier(8);
        var results = new OutputFolder?[8];
        var errors = new OutputFolderException?[8];
        var threads = Enumerable.Range(0, 8).Select(i => new Thread(() =>
        {
            start.SignalAndWait();
            try
            {
                results[i] = OutputFolder.Claim(path);
            }
            catch (OutputFolderException e)
            {
                errors[i] = e;
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        Assert.Single(results, r => r is not null);
        Assert.Equal(7, errors.Count(e => e?.Problem is OutputFolderProblem.Busy or OutputFolderProblem.NotEmpty));
        foreach (var r in results)
            r?.Dispose();
    }

    [Fact]
    public void Claim_FolderWithFiles_RefusedAndUntouched()
    {
        var path = Path.Combine(_dir, "full");
        Directory.CreateDirectory(path);
        File.WriteAllText(Path.Combine(path, "evidence"), "x");
        var e = Assert.Throws<OutputFolderException>(() => OutputFolder.Claim(path));
        Assert.Equal(OutputFolderProblem.NotEmpty, e.Problem);
        Assert.Equal($"output folder {path} exists and is not empty", e.Message);
        Assert.Equal("x", File.ReadAllText(Path.Combine(path, "evidence")));
    }

    [Fact]
    public void Claim_AFileOrAnUnwritablePlace_NotWritable()
    {
        var file = Path.Combine(_dir, "afile");
        File.WriteAllText(file, "");
        Assert.Equal(OutputFolderProblem.NotWritable, Assert.Throws<OutputFolderException>(() => OutputFolder.Claim(file)).Problem);
        Assert.Equal(OutputFolderProblem.NotWritable, Assert.Throws<OutputFolderException>(() => OutputFolder.Claim("/proc/forensics-cannot-write")).Problem);
    }

    [Fact]
    public void Abandon_CreatedAndEmpty_RemovedButAnExistingFolderStays()
    {
        var created = Path.Combine(_dir, "new");
        OutputFolder.Claim(created).Abandon();
        Assert.False(Directory.Exists(created));
        var existing = Path.Combine(_dir, "existing");
        Directory.CreateDirectory(existing);
        OutputFolder.Claim(existing).Abandon();
        Assert.True(Directory.Exists(existing));
        // Released: it can be had again.
        OutputFolder.Claim(existing).Dispose();
    }

    [Fact]
    public void Lock_WhileARecorderHoldsIt_Busy()
    {
        var path = Path.Combine(_dir, "live");
        using (OutputFolder.Claim(path))
            Assert.Equal(OutputFolderProblem.Busy, Assert.Throws<OutputFolderException>(() => OutputFolder.Lock(path)).Problem);
        OutputFolder.Lock(path).Dispose();
    }
}
