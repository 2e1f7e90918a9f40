using System.Diagnostics;
using Forensics.Query.Recording;

namespace Forensics.Query.Tests;

/// <summary>
/// RegularFile opens only regular files with bytes in them, with managed calls alone: what it says of each kind
/// of path, that it never waits on a FIFO, and that the handle it opened is checked against the path checked.
/// </summary>
public sealed class RegularFileTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("fx-regular-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Write(string name, string text)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    [Fact]
    public void Kind_EachKindOfPath_NamedWithoutOpeningIt()
    {
        var regular = Write("m.json", "{}");
        var empty = Write("empty.json", "");
        var fifo = Path.Combine(_dir, "fifo");
        HostileInputTests.Mkfifo(fifo);
        var link = Path.Combine(_dir, "link");
        File.CreateSymbolicLink(link, regular);

        Assert.Equal(RegularFile.Regular, RegularFile.Kind(regular));
        Assert.Equal(RegularFile.EmptyOrSpecial, RegularFile.Kind(empty));
        Assert.Equal(RegularFile.EmptyOrSpecial, RegularFile.Kind(fifo));
        Assert.Equal(RegularFile.EmptyOrSpecial, RegularFile.Kind("/dev/null"));
        Assert.Equal(RegularFile.EmptyOrSpecial, RegularFile.Kind("/dev/zero"));
        Assert.Equal("a symbolic link", RegularFile.Kind(link));
        Assert.Equal("a directory", RegularFile.Kind(_dir));
        Assert.Null(RegularFile.Kind(Path.Combine(_dir, "absent")));
    }

    [Fact]
    public void OpenRead_FifoDeviceLinkOrEmpty_RefusedAtOnceWithOneLine()
    {
        var fifo = Path.Combine(_dir, "fifo");
        HostileInputTests.Mkfifo(fifo);
        var link = Path.Combine(_dir, "to-zero");
        File.CreateSymbolicLink(link, "/dev/zero");
        var empty = Write("empty", "");
        var sw = Stopwatch.StartNew();
        foreach (var (path, says) in new[]
        {
            (fifo, "not a regular file"), ("/dev/zero", "not a regular file"), ("/dev/null", "not a regular file"),
            (empty, "empty"), (link, "is a symbolic link"), (_dir, "is a directory"), (Path.Combine(_dir, "absent"), "no such file"),
        })
        {
            var e = Assert.Throws<RecordingException>(() => RegularFile.OpenRead(path, "shown"));
            Assert.StartsWith("shown: ", e.Message, StringComparison.Ordinal);
            Assert.Contains(says, e.Message, StringComparison.Ordinal);
            Assert.DoesNotContain('\n', e.Message);
        }
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), $"took {sw.Elapsed}"); // a FIFO opened would wait for ever
    }

    [Fact]
    public void OpenRead_RegularFile_ReadsItsBytes()
    {
        var path = Write("m.json", "{\"a\":1}");
        using (var fs = RegularFile.OpenRead(path, path))
            Assert.Equal("{\"a\":1}", new StreamReader(fs).ReadToEnd());
        Assert.Equal(7, RegularFile.ReadAllBytes(path, path, 7, "--x").Length);
        var e = Assert.Throws<RecordingException>(() => RegularFile.ReadAllBytes(path, path, 6, "--x"));
        Assert.Contains("more than the limit of 6 (--x raises it)", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void CheckOpened_HandleOfAnotherFile_Refused()
    {
        // What a link swapped in between the check of the path and the open would give: a handle on another file.
        var checkedPath = Write("manifest.json", "{}");
        var other = Write("elsewhere.json", "{\"x\":1}");
        using var handle = File.OpenHandle(other, FileMode.Open, FileAccess.Read);
        var e = Assert.Throws<RecordingException>(() => RegularFile.CheckOpened(handle, checkedPath, "shown"));
        Assert.Equal($"shown: changed while it was opened (it now leads to {Forensics.Query.Output.OutputTarget.RealPath(other)}); refusing to read it", e.Message);
        using var same = File.OpenHandle(checkedPath, FileMode.Open, FileAccess.Read);
        RegularFile.CheckOpened(same, checkedPath, "shown"); // the file checked: accepted
    }

    [Fact]
    public void CheckOpened_HandleOfAFileEmptiedMeanwhile_Refused()
    {
        var path = Write("m.json", "{}");
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
        File.WriteAllText(path, "");
        var e = Assert.Throws<RecordingException>(() => RegularFile.CheckOpened(handle, path, "shown"));
        Assert.Contains(RegularFile.EmptyOrSpecial, e.Message, StringComparison.Ordinal);
    }
}
