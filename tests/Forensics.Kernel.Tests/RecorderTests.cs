using System.Diagnostics;
using System.Security.Cryptography;
using Forensics.Format;
using Forensics.Datapath;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Bpf;
using Forensics.Recorder;
using Forensics.Recorder.Storage;
using Forensics.Recorder.Tables;
using Forensics.Tests;

namespace Forensics.Kernel.Tests;

/// <summary>The recorder end to end: real programs, real events, Parquet read back with DuckDB.</summary>
public class RecorderTests
{
    private static EventContext NewContext()
    {
        var (mono, boot) = Recording.ClockOffsets();
        return new EventContext(mono) { BoottimeToUtcOffsetNs = boot };
    }

    /// <summary>Records while <paramref name="during"/> runs: starts once the ring buffers are read, stops once
    /// every event the programs counted has been taken out of them (no fixed sleeps).</summary>
    private static RecordingSummary RecordWhile(IReadOnlyList<IEventSource> sources, string dir, Action during)
    {
        using var cts = new CancellationTokenSource();
        using var rec = new Recording(sources, NewContext(), new RecordOptions { OutputDir = dir, SealInterval = TimeSpan.FromMilliseconds(500) });
        RecordingSummary? summary = null;
        var t = new Thread(() => summary = rec.Run(() => "duration", cts.Token));
        t.Start();
        try
        {
            Assert.True(rec.WaitStarted(TimeSpan.FromSeconds(30)), "the recording did not start");
            during();
            Assert.True(rec.WaitCaughtUp(TimeSpan.FromSeconds(30)), "the recorder did not take every emitted event");
        }
        finally
        {
            cts.Cancel();
            t.Join(TimeSpan.FromSeconds(30));
        }
        return summary ?? throw new InvalidOperationException("the recording did not finish");
    }

    private static string TempDir() => Path.Combine(Scratch.Dir("fx-rec-"), "rec");

    [KernelFact]
    public void Record_ProcessesRun_ExecAndExitRowsWithFieldsInParquet()
    {
        Prerequisites.EnsureKernelAccess();
        var dir = TempDir();
        var token = "fx-token-" + Guid.NewGuid().ToString("N")[..8];
        int exitPid = 0, killedPid = 0;
        using (var probes = new ObjectSource(EmbeddedObjects.Probes, new EventOptions { SelfPid = (uint)Environment.ProcessId }, ["fx_exec", "fx_exit"]))
        {
            var summary = RecordWhile([probes], dir, () =>
            {
                using var p = Process.Start(new ProcessStartInfo("/bin/sh", ["-c", "exit 5", token]))!;
                p.WaitForExit();
                exitPid = p.Id;
                using var s = Process.Start(new ProcessStartInfo("/bin/sleep", ["30"]))!;
                killedPid = s.Id; // Process.Start returns once the child has exec'd
                s.Kill();
                s.WaitForExit();
            });
            Assert.Equal("duration", summary.StopReason);
            Assert.Equal(0UL, summary.EventsLost);
        }

        var exec = Duck.Table(dir, "exec", $"pid = {exitPid}").Single();
        Assert.Equal("/bin/sh", exec["binary"]);
        Assert.Equal($"-c \"exit 5\" {token}", exec["arguments"]);
        Assert.Equal((uint)Environment.ProcessId, exec["ppid"]);
        Assert.Equal(false, exec["procfs"]);
        var exit = Duck.Table(dir, "exit", $"pid = {exitPid}").Single();
        Assert.Equal(5, exit["exit_code"]);
        Assert.Null(exit["signal"]);
        Assert.Equal(exec["exec_id"], exit["exec_id"]);
        Assert.Equal("/bin/sh", exit["binary"]);
        var killed = Duck.Table(dir, "exit", $"pid = {killedPid}").Single();
        Assert.Equal("SIGKILL", killed["signal"]);
        Assert.Null(killed["exit_code"]);

        // times are UTC and close to now; the manifest lists every file with its hash
        var time = (DateTime)exec["time"]!;
        Assert.InRange(time, DateTime.UtcNow.AddMinutes(-2), DateTime.UtcNow.AddSeconds(5));
        var manifest = Manifest.Read(dir);
        Assert.Equal("duration", manifest.StopReason);
        foreach (var f in manifest.Tables.Values.SelectMany(t => t.Files))
            Assert.Equal(f.Sha256, Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(Path.Combine(dir, f.Path)))));
        Assert.Equal(manifest.Tables["exec"].Rows, Duck.Scalar($"SELECT count(*) FROM read_parquet('{dir}/exec/*/*.parquet')"));
    }

    [KernelFact]
    public void Record_FloodIntoSmallRing_LossCountsEqualMissingEvents()
    {
        Prerequisites.EnsureKernelAccess();
        var dir = TempDir();
        const int rounds = 20, repeat = 5000;
        using var source = new ObjectSource(EmbeddedObjects.Datapath, new EventOptions { Snaplen = 0, RingBytes = 8192, Kinds = new HashSet<EventKind> { EventKind.Trace } });
        var pkt = Packets.Udp("10.0.0.5", 40000, "10.0.0.6", 53);
        var summary = RecordWhile([source], dir, () =>
        {
            var prog = source.Object.Program("fx_from_endpoint");
            for (int i = 0; i < rounds; i++)
                prog.TestRun(pkt, repeat);
        });

        long recorded = Duck.Table(dir, "trace").Count;
        var loss = summary.Loss["trace"];
        ulong attempted = loss.Emitted + loss.Failed;
        Assert.Equal((ulong)(rounds * repeat), attempted);
        Assert.True(loss.Failed > 0, "an 8 KiB ring should overflow under BPF_PROG_TEST_RUN");
        Assert.Equal(attempted, (ulong)recorded + loss.Failed + loss.UserspaceDropped);
        Assert.Equal(loss.Failed + loss.UserspaceDropped, summary.EventsLost);
        // the per-second loss table adds up to the same totals
        var perSecond = Duck.Table(dir, "loss", "kind = 'trace'");
        Assert.Equal(loss.Failed, (ulong)perSecond.Sum(r => (long)(ulong)r["failed"]!));
        Assert.Equal(loss.Emitted, (ulong)perSecond.Sum(r => (long)(ulong)r["emitted"]!));
        // the kernel's failures are counted per CPU (loss v3): the rows of a CPU sum to them, the rows without one hold none
        var ofCpus = perSecond.Where(r => r["cpu"] is not null).ToList();
        Assert.NotEmpty(ofCpus);
        Assert.Equal(loss.Failed, (ulong)ofCpus.Sum(r => (long)(ulong)r["failed"]!));
        Assert.All(ofCpus, r => Assert.InRange((uint)r["cpu"]!, 0u, (uint)Environment.ProcessorCount - 1));
        Assert.All(perSecond.Where(r => r["cpu"] is null), r => Assert.Equal(0UL, (ulong)r["failed"]!));

        // replay prints cilium monitor's line for each CPU's loss, and nothing else for it
        var (code, output) = LabFixture.RunCli("replay", dir, "-f", "compact", "-t", "loss");
        Assert.True(code == 0, output);
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var cpuLines = lines.Select(l => System.Text.RegularExpressions.Regex.Match(l, @"^CPU (\d{2,}): Lost (\d+) events$")).ToList();
        Assert.True(cpuLines.All(m => m.Success), "replay printed a loss line that is not cilium monitor's:\n" + output);
        Assert.Equal(ofCpus.Count(r => (ulong)r["failed"]! > 0), cpuLines.Count);
        Assert.Equal(loss.Failed, cpuLines.Aggregate(0UL, (a, m) => a + ulong.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture)));
    }

    private static bool ListsASealedFile(string dir)
    {
        try
        {
            return Manifest.Read(dir).Tables.Values.Any(t => t.Files.Count > 0);
        }
        catch (Exception e) when (e is IOException or ManifestException)
        {
            return false;
        }
    }

    [KernelFact]
    public void Record_KilledWithSigkill_SealedFilesOpenMatchHashesAndRecoverMarksIt()
    {
        Prerequisites.EnsureKernelAccess();
        var cli = Path.Combine(AppContext.BaseDirectory, "forensics.dll");
        var rng = new Random();
        for (int attempt = 0; attempt < 3; attempt++)
        {
            var dir = TempDir();
            using var rec = Process.Start(new ProcessStartInfo("dotnet", [cli, "record", "-d", "300s", "-o", dir, "-t", "exec,exit"])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            })!;
            // a steady stream of execs while it records, bounded in count and time
            var sw = Stopwatch.StartNew();
            int killAfterMs = 1000 + rng.Next(3000); // after the first seal, at a random point
            var marker = "fx-kill-" + Guid.NewGuid().ToString("N")[..8];
            // bounded waits on conditions (a loaded 2-core machine takes long to load .NET and the probes)
            while (!File.Exists(Path.Combine(dir, "manifest.json")) && sw.ElapsedMilliseconds < 90000)
                Thread.Sleep(50);
            Assert.True(File.Exists(Path.Combine(dir, "manifest.json")), "the recorder did not start within 90 s");
            // a steady stream of execs until the first segment is sealed, and a random while after it
            int spawned = 0;
            long sealedAt = -1;
            while (spawned < 5000 && sw.ElapsedMilliseconds < 150000 && (sealedAt < 0 || sw.ElapsedMilliseconds - sealedAt < killAfterMs))
            {
                using var p = Process.Start(new ProcessStartInfo("/bin/true", [marker]))!;
                p.WaitForExit();
                spawned++;
                Thread.Sleep(5);
                if (sealedAt < 0 && ListsASealedFile(dir))
                    sealedAt = sw.ElapsedMilliseconds;
            }
            var killedAt = DateTime.UtcNow;
            rec.Kill(); // SIGKILL
            rec.WaitForExit();

            var manifest = Manifest.Read(dir);
            Assert.Equal("recording", manifest.StopReason);
            var files = manifest.Tables.Values.SelectMany(t => t.Files).ToList();
            Assert.True(files.Count > 0, $"no sealed file after {killAfterMs} ms and {spawned} processes; left: {string.Join(", ", Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories))}; stderr: {rec.StandardError.ReadToEnd()}");
            foreach (var f in files)
            {
                var path = Path.Combine(dir, f.Path);
                Assert.Equal(f.Sha256, Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(path))));
                Assert.Equal(f.Rows, Duck.Scalar($"SELECT count(*) FROM read_parquet('{path}')"));
            }

            using var recover = Process.Start(new ProcessStartInfo("dotnet", [cli, "recover", dir]) { RedirectStandardOutput = true })!;
            recover.WaitForExit();
            Assert.Equal(0, recover.ExitCode);
            var after = Manifest.Read(dir);
            Assert.True(after.Recovered);
            Assert.Equal("recovered", after.StopReason);
            // the loss is bounded: the newest recorded exec is within seal interval + batch age (+ slack) of the kill
            var newest = (DateTime)Duck.Query($"SELECT max(time) AS t FROM read_parquet('{dir}/exec/*/*.parquet')")[0]["t"]!;
            // promised: batch age (1 s) + seal interval (2 s) + the seal check (0.25 s); slack for a loaded 2-core CI machine
            Assert.True(killedAt - newest < TimeSpan.FromSeconds(8), $"newest sealed exec {newest:O}, killed at {killedAt:O}");
            // never "0 events lost" when events are missing: recover estimates the killed recorder's last seconds
            var recorded = Duck.Scalar($"SELECT count(*) FROM read_parquet('{dir}/exec/*/*.parquet') WHERE arguments LIKE '%{marker}%'");
            if (recorded < spawned)
            {
                Assert.True(after.EventsLost > 0, $"{spawned - recorded} of {spawned} execs are missing, and the recovered manifest says 0 events lost");
                // counted from the kernel's counters the recorder kept pinned (bpffs is mounted here), not estimated
                Assert.Equal("kernel-counters", after.Sources["recover"].Kind);
            }
            Directory.Delete(Path.GetDirectoryName(dir)!, true);
        }
    }
}

public class RecorderDiskTests
{
    [KernelFact]
    public void Record_DiskFills_StopsWithDiskFullAndSealedFilesStayValid()
    {
        Prerequisites.EnsureKernelAccess();
        var mnt = Directory.CreateTempSubdirectory("fx-full-").FullName;
        Run("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt);
        try
        {
            var dir = Path.Combine(mnt, "rec");
            var (mono, boot) = Recording.ClockOffsets();
            using var source = new ObjectSource(EmbeddedObjects.Datapath, new EventOptions { Snaplen = 256, RingBytes = 1 << 22 });
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(150));
            var rec = new Recording([source], new EventContext(mono) { BoottimeToUtcOffsetNs = boot },
                new RecordOptions { OutputDir = dir, SealInterval = TimeSpan.FromMilliseconds(300), Pipeline = new PipelineOptions { BatchAge = TimeSpan.FromMilliseconds(200) } });
            RecordingSummary? summary = null;
            var t = new Thread(() => summary = rec.Run(() => "duration", cts.Token));
            t.Start();
            var prog = source.Object.Program("fx_from_endpoint");
            var sw = Stopwatch.StartNew();
            int port = 1;
            // distinct packets (random-ish ports) so the capture data does not compress away; bounded in time
            while (t.IsAlive && sw.Elapsed < TimeSpan.FromSeconds(120)) // (a loaded machine drains slowly: most floods overflow the ring)
                prog.TestRun(Packets.Udp("10.0.0.5", (ushort)(port++ % 60000 + 1), "10.0.0.6", (ushort)(port * 7 % 60000 + 1), payload: 200), repeat: 200);
            var stoppedAfter = sw.Elapsed;
            t.Join(TimeSpan.FromSeconds(30));

            Assert.NotNull(summary);
            Assert.True(summary!.StopReason == "disk-full", $"stopped: {summary.StopReason} after {stoppedAfter}, {port} packets, {summary.Bytes} bytes sealed, rows {string.Join(", ", summary.Rows.Select(r => $"{r.Key} {r.Value}"))}, error {summary.Error}");
            Assert.Contains("disk full", summary.Error, StringComparison.OrdinalIgnoreCase);
            Assert.True(stoppedAfter < TimeSpan.FromSeconds(120), "the recorder should stop by itself when the disk is full");
            var manifest = Manifest.Read(dir);
            // the final manifest made it to the full disk (room was held back for it), and counts every event:
            // each one handed over by the kernel is a sealed row or counted lost
            Assert.Equal("disk-full", manifest.StopReason);
            Assert.True(manifest.EventsLost > 0, "a full disk lost events, and the manifest says none");
            foreach (var (table, loss) in manifest.Loss.Where(l => l.Value.Emitted > 0))
                Assert.True(loss.Emitted == (ulong)(manifest.Tables.TryGetValue(table, out var tt) ? tt.Rows : 0) + loss.UserspaceDropped,
                    $"{table}: emitted {loss.Emitted} != rows {(manifest.Tables.TryGetValue(table, out var t2) ? t2.Rows : 0)} + lost in user space {loss.UserspaceDropped}");
            Assert.False(File.Exists(Path.Combine(dir, Recording.ReserveFile)));
            var files = manifest.Tables.Values.SelectMany(x => x.Files).ToList();
            Assert.NotEmpty(files);
            foreach (var f in files)
            {
                var path = Path.Combine(dir, f.Path);
                Assert.Equal(f.Sha256, Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(path))));
                Assert.Equal(f.Rows, Duck.Scalar($"SELECT count(*) FROM read_parquet('{path}')"));
            }
        }
        finally
        {
            Run("umount", mnt);
            Directory.Delete(mnt);
        }
    }

    [KernelFact]
    public void RecordCli_UnwritableOutput_OneLineErrorAndExitCode()
    {
        var cli = Path.Combine(AppContext.BaseDirectory, "forensics.dll");
        using var p = Process.Start(new ProcessStartInfo("dotnet", [cli, "record", "-d", "1s", "-o", "/proc/forensics-cannot-write"]) { RedirectStandardError = true, RedirectStandardOutput = true })!;
        var err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.Equal(7, p.ExitCode);
        var line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("error: cannot write the output folder /proc/forensics-cannot-write", line);
    }

    private static void Run(string file, params string[] args)
    {
        using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardError = true })!;
        p.WaitForExit();
        if (p.ExitCode != 0)
            throw new InvalidOperationException($"{file} {string.Join(' ', args)}: {p.StandardError.ReadToEnd()}");
    }
}
