using System.Diagnostics;
using Forensics.Datapath.Lab;
using Forensics.Tests;

namespace Forensics.Kernel.Tests;

/// <summary>
/// Two processes on one recording folder or one lab (issue 13): exactly one gets it, the other
/// says who has it in one line; recover never works under a live recorder.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class ConcurrencyTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("fx-race-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static Process Start(params string[] args)
    {
        var psi = new ProcessStartInfo(LabFixture.Cli) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        return Process.Start(psi)!;
    }

    private static (int Code, string Stdout, string Stderr) Finish(Process p, TimeSpan limit)
    {
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(limit))
        {
            p.Kill(entireProcessTree: true);
            throw new Xunit.Sdk.XunitException($"{string.Join(' ', p.StartInfo.ArgumentList)} did not end within {limit}");
        }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    [KernelFact]
    public void Record_TwoAtOnceOnOneFolder_ExactlyOneRecords()
    {
        var output = Path.Combine(_dir, "rec");
        using var a = Start("record", "-d", "3s", "-t", "exec", "-o", output);
        using var b = Start("record", "-d", "3s", "-t", "exec", "-o", output);
        var ra = Finish(a, TimeSpan.FromSeconds(90));
        var rb = Finish(b, TimeSpan.FromSeconds(90));
        var (won, lost) = ra.Code is 0 or 4 ? (ra, rb) : (rb, ra);
        Assert.True(won.Code is 0 or 4, $"neither recorded: {ra.Code} {ra.Stderr} / {rb.Code} {rb.Stderr}");
        Assert.Equal(1, lost.Code);
        Assert.Matches($@"^error: ({System.Text.RegularExpressions.Regex.Escape(output)} is in use by another process \(pid \d+\): a recorder is writing it, or recover is|output folder {System.Text.RegularExpressions.Regex.Escape(output)} exists and is not empty)\n$", lost.Stderr);
        // the winner's recording is whole
        var info = Finish(Start("info", output), TimeSpan.FromSeconds(60));
        Assert.True(info.Code == 0, info.Stderr);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(output));
    }

    [KernelFact]
    public void Recover_OnALiveRecording_RefusedNamingTheRecorder()
    {
        var output = Path.Combine(_dir, "live");
        // a long duration, stopped by SIGTERM once recover has been refused: a short one could end before a loaded
        // machine has even started the recover process, and recover would then (rightly) find no live recorder
        using var rec = Start("record", "-d", "300s", "-t", "exec", "-o", output);
        var sw = Stopwatch.StartNew();
        while (!File.Exists(Path.Combine(output, "manifest.json")))
        {
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60) && !rec.HasExited, "the recording did not start");
            Thread.Sleep(20);
        }
        var recover = Finish(Start("recover", output), TimeSpan.FromSeconds(60));
        Assert.Equal(1, recover.Code);
        Assert.Equal($"error: {output} is in use by another process (pid {rec.Id}): a recorder is writing it, or recover is\n", recover.Stderr);
        Assert.False(rec.HasExited, "the recorder ended before recover was refused");
        using (var term = Process.Start("kill", ["-TERM", rec.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])!)
            term.WaitForExit();
        var done = Finish(rec, TimeSpan.FromSeconds(90));
        Assert.True(done.Code is 0 or 4, done.Stderr);
        Assert.Equal(0, Finish(Start("info", output), TimeSpan.FromSeconds(60)).Code);
    }

    [KernelFact]
    public void LabUp_TwoAtOnce_OneBuildsTheOtherIsRefused()
    {
        var name = LabFixture.UniqueName();
        var file = Path.Combine(_dir, "lab.yaml");
        File.WriteAllText(file, $$$"""
            apiVersion: forensics.dev/v1
            kind: Lab
            metadata: {name: {{{name}}}}
            spec: {podCIDR: 10.0.0.0/24, serviceCIDR: 10.0.1.0/24, nodeIP: 192.0.2.1}
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: a, labels: {app: a}}
            """);
        using var a = Start("lab", "up", file, "--no-datapath");
        using var b = Start("lab", "up", file, "--no-datapath");
        try
        {
            // one of them is refused at once; the other stays up
            var sw = Stopwatch.StartNew();
            while (!a.HasExited && !b.HasExited)
            {
                Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60), "neither lab up was refused");
                Thread.Sleep(20);
            }
            var (refused, up) = a.HasExited ? (a, b) : (b, a);
            var r = Finish(refused, TimeSpan.FromSeconds(5));
            Assert.Equal(1, r.Code);
            Assert.Matches($@"^error: lab {name} is being built, is up or is being removed by another process \(pid {up.Id}\): wait for it, or `forensics lab down` it\n$", r.Stderr);
            Assert.False(up.HasExited, "the lab that got the lock should still be up");
        }
        finally
        {
            var down = Finish(Start("lab", "down", "--name", name), TimeSpan.FromSeconds(90));
            Assert.True(down.Code == 0, down.Stderr);
            foreach (var p in new[] { a, b })
                p.WaitForExit(TimeSpan.FromSeconds(30));
            Assert.Empty(LabFixture.Leftovers(name));
            Assert.False(File.Exists(LabLock.PathOf(name)), "the lab's lock file outlived it");
        }
    }
}
