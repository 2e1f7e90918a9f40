using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Forensics.Datapath;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Bpf;
using Forensics.Datapath.Lab;
using Forensics.Format;
using Forensics.Recorder.Storage;
using Forensics.Tests;
using Xunit.Abstractions;

namespace Forensics.Kernel.Tests;

/// <summary>
/// Issue 13's fault injection: `record` into a tmpfs that fills, SIGKILLed at random points, with two `record`s
/// racing for the folder. The count to check against is the kernel's own: the recorder's fx_emit_stats, which it
/// pins in bpffs while it records (<see cref="KernelCounterPins"/>). The test holds that map open itself, so it
/// reads the programs' final counts after the recorder is gone (its programs detach when it stops or dies), with no
/// help from the recorder or `recover`.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class FaultInjectionTests(ITestOutputHelper output)
{
    private const int Runs = 10;

    /// <summary>FX_FAULT_SEED=N reruns the same kill and fill points.</summary>
    [KernelFact]
    public void Record_KilledAtRandomIntoAFillingTmpfs_RowsPlusLostEqualKernelEmitted()
    {
        Prerequisites.EnsureKernelAccess();
        int seed = int.TryParse(Environment.GetEnvironmentVariable("FX_FAULT_SEED"), NumberStyles.Integer, CultureInfo.InvariantCulture, out var s)
            ? s : Random.Shared.Next();
        output.WriteLine($"seed {seed} (FX_FAULT_SEED={seed} repeats this run)");
        var rng = new Random(seed);
        int killed = 0, filled = 0;
        for (int run = 0; run < Runs; run++)
        {
            // the fill and the kill at random points after the recorder is live: some kills before the disk is full,
            // some after (the recorder stopping by itself on the full disk, or killed while it does)
            // (segments are sealed every 2 s: a kill after the first seal leaves rows, a fill is met at the next seal)
            int fillAtMs = rng.Next(0, 5000), killAtMs = rng.Next(200, 6000);
            var r = OneRun($"seed {seed} run {run} (fill at {fillAtMs} ms, kill at {killAtMs} ms)", fillAtMs, killAtMs, race: run % 5 == 0);
            killed += r.Killed ? 1 : 0;
            filled += r.Filled ? 1 : 0;
        }
        output.WriteLine($"{killed} of {Runs} runs killed, {filled} filled the disk");
    }

    private sealed record RunResult(bool Killed, bool Filled);

    private RunResult OneRun(string what, int fillAtMs, int killAtMs, bool race)
    {
        var mnt = Directory.CreateTempSubdirectory("fx-fault-").FullName;
        Sh("mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", mnt);
        var dir = Path.Combine(mnt, "rec");
        Process? a = null, b = null;
        string? pins = null;
        using var stopSpawning = new CancellationTokenSource();
        Thread? spawner = null;
        try
        {
            a = Start("record", "-d", "120s", "-t", "exit", "-o", dir);
            if (race)
                b = Start("record", "-d", "120s", "-t", "exit", "-o", dir);
            var sw = Stopwatch.StartNew();
            // live: the manifest names the recording, and its counters are pinned (the recorder reads its ring buffer)
            string? pin = null;
            while (sw.Elapsed < TimeSpan.FromSeconds(90) && pin is null && !(a.HasExited && (b?.HasExited ?? true)))
            {
                pins ??= TryRecordingId(dir) is { } id ? KernelCounterPins.DirOf(id) : null;
                pin = pins is not null && Directory.Exists(pins) ? Directory.GetFiles(pins).FirstOrDefault() : null;
                Thread.Sleep(20);
            }
            if (pin is null)
                Assert.Fail($"{what}: no recorder went live within {sw.Elapsed}: {Stderr(a)} {Stderr(b)}");
            using var counters = BpfMap.OpenPinned(pin!); // held: the kernel's count outlives the recorder

            var winner = a;
            if (b is not null)
            {
                // two records on one folder: exactly one records, the other exits with one line
                while (sw.Elapsed < TimeSpan.FromSeconds(120) && !a.HasExited && !b.HasExited)
                    Thread.Sleep(20);
                var loser = a.HasExited ? a : b;
                winner = loser == a ? b : a;
                Assert.True(loser.HasExited, $"{what}: both records still run on one folder");
                var err = loser.StandardError.ReadToEnd();
                Assert.True(loser.ExitCode == 1, $"{what}: the second record exited {loser.ExitCode}: {err}");
                Assert.Matches($@"^error: ({Regex.Escape(dir)} is in use by another process \(pid {winner.Id}\): a recorder is writing it, or recover is|output folder {Regex.Escape(dir)} exists and is not empty)\n$", err);
            }

            // events: processes that exit (a shell's loop, faster than starting them from here), until the kill; bounded
            // in count, and ended with the run
            using var exits = Process.Start(new ProcessStartInfo("/bin/sh", ["-c", "i=0; while [ $i -lt 20000 ]; do /bin/true; i=$((i+1)); done"]))!;
            spawner = new Thread(() =>
            {
                stopSpawning.Token.WaitHandle.WaitOne();
                if (!exits.HasExited)
                    exits.Kill();
                exits.WaitForExit();
            }) { IsBackground = true };
            spawner.Start();
            var since = Stopwatch.StartNew();
            bool filled = false;
            while (since.ElapsedMilliseconds < killAtMs && !winner.HasExited)
            {
                if (!filled && since.ElapsedMilliseconds >= fillAtMs)
                    filled = Fill(mnt);
                Thread.Sleep(5);
            }
            bool killed = !winner.HasExited;
            if (killed)
                winner.Kill(); // SIGKILL
            Assert.True(winner.WaitForExit(TimeSpan.FromSeconds(60)), $"{what}: the recorder did not end within 60 s of the kill or its own stop");
            stopSpawning.Cancel();
            spawner.Join();
            var recorderErr = Stderr(winner);
            Assert.True(killed || winner.ExitCode is 0 or 4 or 5, $"{what}: the recorder exited {winner.ExitCode}: {recorderErr}");

            // the kernel's count: the programs are gone with the recorder, so the counters stand still
            var (emitted, failed) = Settled(counters, what);
            var last = Manifest.Read(dir);
            if (killed)
            {
                var recover = Commands.Run(LabFixture.Cli, ["recover", dir], TimeSpan.FromSeconds(60));
                Assert.True(recover.ExitCode == 0, $"{what}: recover exited {recover.ExitCode}: {recover.Stderr}");
            }
            var m = Manifest.Read(dir);
            // a kill that came after the final manifest (the recorder was ending on the full disk) leaves it as it was
            Assert.Equal(killed && last.StopReason == "recording" ? "recovered" : killed ? last.StopReason : winner.ExitCode == 5 ? "disk-full" : "duration", m.StopReason);
            Assert.NotEqual("recording", m.StopReason);

            // rows + counted lost == emitted: every exit the kernel's programs saw is a sealed row or counted lost
            long rows = m.Tables.TryGetValue("exit", out var t) ? t.Files.Sum(f => Duck.Scalar($"SELECT count(*) FROM read_parquet('{Path.Combine(dir, f.Path)}')")) : 0;
            Assert.Equal(m.Tables.GetValueOrDefault("exit")?.Rows ?? 0, rows);
            var loss = m.Loss.GetValueOrDefault("exit") ?? new ManifestLoss();
            output.WriteLine($"{what}: {(killed ? "killed" : $"stopped itself ({m.StopReason}, exit {winner.ExitCode})")}, {(filled ? "disk filled" : "disk not filled")}, kernel emitted {emitted} failed {failed}; rows {rows}, lost {loss.Failed}+{loss.UserspaceDropped}; last manifest said {last.EventsLost} lost");
            Assert.True(emitted + failed == (ulong)rows + loss.Failed + loss.UserspaceDropped,
                $"{what}: the kernel's programs emitted {emitted} exits and failed {failed}; the recording has {rows} rows and counts {loss.Failed} + {loss.UserspaceDropped} lost ({(killed ? "killed" : m.StopReason)}; recorder: {recorderErr})");
            Assert.Equal(emitted, loss.Emitted);
            Assert.Equal(failed, loss.Failed);
            Assert.Equal(m.Loss.Values.Aggregate(0UL, (x, l) => x + l.Failed + l.UserspaceDropped), m.EventsLost);

            if (killed)
            {
                // info after recover states the gap: the loss recover counted beyond the killed recorder's last manifest
                var info = Commands.Run(LabFixture.Cli, ["info", dir], TimeSpan.FromSeconds(60));
                Assert.True(info.ExitCode == 0, $"{what}: info exited {info.ExitCode}: {info.Stderr}");
                var says = new List<string> { $"loss        {m.EventsLost} event{(m.EventsLost == 1 ? "" : "s")} lost" };
                var lastExit = last.Loss.GetValueOrDefault("exit") ?? new ManifestLoss();
                ulong gap = loss.Failed + loss.UserspaceDropped - lastExit.Failed - lastExit.UserspaceDropped;
                if (gap > 0)
                {
                    says.Add("source      recover (kernel-counters");
                    says.Add($"not recorded: the recorder was killed: {gap} more events were lost than its last manifest");
                }
                foreach (var line in says)
                    Assert.True(info.Stdout.Contains(line, StringComparison.Ordinal), $"{what}: info does not say \"{line}\":\n{info.Stdout}");
                Assert.False(Directory.Exists(pins), $"{what}: recover left the kernel's counters pinned");
            }
            else
            {
                Assert.False(Directory.Exists(pins), $"{what}: the recorder left its counters pinned after it stopped");
            }
            return new RunResult(killed, filled);
        }
        finally
        {
            stopSpawning.Cancel();
            spawner?.Join();
            foreach (var p in new[] { a, b })
            {
                if (p is { HasExited: false })
                {
                    p.Kill();
                    p.WaitForExit(10000);
                }
                p?.Dispose();
            }
            KernelCounterPins.Remove(pins);
            Sh("umount", "-l", mnt);
            Directory.Delete(mnt);
        }
    }

    /// <summary>Fills the tmpfs to the last byte (as another writer would), leaving the recorder no room.</summary>
    private static bool Fill(string mnt)
    {
        try
        {
            using var fs = new FileStream(Path.Combine(mnt, "filler"), FileMode.Append, FileAccess.Write);
            var chunk = new byte[64 << 10];
            for (int i = 0; i < 1024; i++)
            {
                fs.Write(chunk);
                fs.Flush();
            }
        }
        catch (IOException)
        {
            // ENOSPC: full (to a 64 KiB chunk: a last smaller write fills the rest)
        }
        try
        {
            using var fs = new FileStream(Path.Combine(mnt, "filler"), FileMode.Append, FileAccess.Write, FileShare.None, 1);
            for (int i = 0; i < 64 << 10; i += 512)
            {
                fs.Write(new byte[512]);
            }
        }
        catch (IOException)
        {
        }
        return true;
    }

    /// <summary>The exit events' emitted and failed counts once two reads 100 ms apart agree (bounded).</summary>
    private static (ulong Emitted, ulong Failed) Settled(BpfMap counters, string what)
    {
        var sw = Stopwatch.StartNew();
        var last = EventChannel.ReadCounters(counters)[EventKind.Exit];
        while (sw.Elapsed < TimeSpan.FromSeconds(10))
        {
            Thread.Sleep(100);
            var now = EventChannel.ReadCounters(counters)[EventKind.Exit];
            if (now.Emitted == last.Emitted && now.Failed == last.Failed)
                return (now.Emitted, now.Failed);
            last = now;
        }
        throw new Xunit.Sdk.XunitException($"{what}: the kernel's counters still moved 10 s after the recorder ended: its programs did not detach");
    }

    private static string? TryRecordingId(string dir)
    {
        try
        {
            return File.Exists(Path.Combine(dir, Manifest.FileName)) ? Manifest.Read(dir).RecordingId : null;
        }
        catch (Exception e) when (e is IOException or ManifestException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static Process Start(params string[] args)
    {
        var psi = new ProcessStartInfo(LabFixture.Cli) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var x in args)
            psi.ArgumentList.Add(x);
        var p = Process.Start(psi)!;
        p.StandardOutput.BaseStream.CopyToAsync(Stream.Null); // never blocks on a full pipe
        return p;
    }

    private static string Stderr(Process? p) =>
        p is { HasExited: true } ? p.StandardError.ReadToEnd() : "";

    private static void Sh(string file, params string[] args)
    {
        using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardError = true })!;
        p.WaitForExit();
        if (p.ExitCode != 0)
            throw new InvalidOperationException($"{file} {string.Join(' ', args)}: {p.StandardError.ReadToEnd()}");
    }
}
