using System.Runtime.CompilerServices;
using Forensics.Datapath.Abi;
using Forensics.Format;
using Forensics.Recorder.Sources;
using Forensics.Recorder.Storage;
using Forensics.Recorder.Tables;
using Forensics.Tests;

namespace Forensics.Recorder.Tests;

/// <summary>Issue 13 item 3: every event a recording does not hold is counted (a stop, a crash), never "0 events lost".</summary>
public class LossAccountingTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    private static byte[] Trace(ulong ktime)
    {
        var r = new byte[Unsafe.SizeOf<TraceEvent>()];
        r[0] = (byte)EventKind.Trace;
        r[1] = Limits.AbiVersion;
        BitConverter.TryWriteBytes(r.AsSpan(2), (ushort)r.Length);
        BitConverter.TryWriteBytes(r.AsSpan(8), ktime);
        return r;
    }

    private static string TempDir() => Path.Combine(Scratch.Dir("fx-loss-"), "rec");

    [Fact]
    public void Recording_ProducerEmittedMoreThanWasTaken_UnreadCountedAsLostWithANote()
    {
        // The producer counted 60 handed over; the recording stopped after taking 50 (the rest still in a ring buffer).
        var dir = TempDir();
        using var feed = new MemorySource("feed", (rec, rows) => KernelSource.DecodeAbi(rec, rows, new EventContext(0)), r => KernelSource.AbiTableOf(r));
        using var rec = new Recording([feed], new RecordOptions { OutputDir = dir, WriterThreads = 1 }, 0);
        RecordingSummary? summary = null;
        var t = new Thread(() => summary = rec.Run(() => "duration", CancellationToken.None));
        t.Start();
        Assert.True(rec.WaitStarted(Wait));
        for (int i = 0; i < 50; i++)
            feed.Add(Trace((ulong)i));
        feed.Counts.Emitted("trace", 60);
        feed.Complete();
        Assert.True(t.Join(Wait));

        var manifest = Manifest.Read(dir);
        Assert.Equal(50L, manifest.Tables["trace"].Rows);
        Assert.Equal(60UL, manifest.Loss["trace"].Emitted);
        Assert.Equal(10UL, manifest.Loss["trace"].UserspaceDropped);
        Assert.Equal(10UL, manifest.EventsLost);
        Assert.Equal(10UL, summary!.EventsLost);
        // rows + counted loss == emitted, and the manifest says why
        Assert.Equal(manifest.Loss["trace"].Emitted, (ulong)manifest.Tables["trace"].Rows + manifest.Loss["trace"].Failed + manifest.Loss["trace"].UserspaceDropped);
        Assert.Contains(manifest.Sources["feed"].NotRecorded, l => l.StartsWith("10 trace events emitted but not read", StringComparison.Ordinal));
        Assert.False(File.Exists(Path.Combine(dir, Recording.ReserveFile)), "the reserve is not part of a recording");
    }

    [Fact]
    public async Task Recover_KilledRecorderWithAGap_EstimatesTheLossAndSaysSo()
    {
        // What kill -9 leaves: a manifest last written 4 s before the recorder's last heartbeat, an unsealed segment.
        var dir = TempDir();
        Directory.CreateDirectory(Path.Combine(dir, "trace", "node=n"));
        var started = DateTimeOffset.UtcNow.AddSeconds(-20);
        var m = new Manifest { Node = "n", StartedAt = started, Config = new ManifestConfig { Kinds = ["trace"] } };
        m.Loss["trace"] = new ManifestLoss { Emitted = 1000 };
        m.Tables["trace"] = new ManifestTable { SchemaVersion = 2, Rows = 950 }; // 50 counted as emitted were not sealed yet
        ManifestStore.Write(m, dir);
        File.SetLastWriteTimeUtc(Path.Combine(dir, Manifest.FileName), started.UtcDateTime.AddSeconds(10)); // 100 events/s counted
        var reserve = Path.Combine(dir, Recording.ReserveFile);
        await File.WriteAllBytesAsync(reserve, new byte[16]);
        File.SetLastWriteTimeUtc(reserve, started.UtcDateTime.AddSeconds(14)); // alive 4 s after the last manifest
        var tmp = Path.Combine(dir, "trace", "node=n", "seg-000001.parquet.tmp");
        await File.WriteAllBytesAsync(tmp, new byte[100]);
        File.SetLastWriteTimeUtc(tmp, started.UtcDateTime.AddSeconds(12));

        var r = await Recovery.RecoverAsync(dir);

        Assert.Equal(450UL, r.EstimatedLost); // 50 in flight + 4 s at 100/s
        var after = Manifest.Read(dir);
        Assert.True(after.Recovered);
        Assert.Equal(450UL, after.EventsLost);
        Assert.Equal(450UL, after.Loss["trace"].UserspaceDropped);
        Assert.Equal("estimate", after.Sources[Recovery.GapSource].Kind);
        Assert.Contains(after.Sources[Recovery.GapSource].NotRecorded, l => l.Contains("about 450 events", StringComparison.Ordinal) && l.Contains("an estimate", StringComparison.Ordinal));
        Assert.Equal(1, after.UnsealedSegments);
        Assert.False(File.Exists(reserve));
    }

    [Fact]
    public async Task Recover_KilledBeforeAnyCount_UnsealedSegmentStillCountsAsLoss()
    {
        // Killed before the first seal: the manifest counts nothing, yet a segment with rows was never sealed.
        var dir = TempDir();
        Directory.CreateDirectory(Path.Combine(dir, "exec", "node=n"));
        ManifestStore.Write(new Manifest { Node = "n", StartedAt = DateTimeOffset.UtcNow.AddSeconds(-3) }, dir);
        await File.WriteAllBytesAsync(Path.Combine(dir, "exec", "node=n", "seg-000001.parquet.tmp"), new byte[100]);

        await Recovery.RecoverAsync(dir);

        var after = Manifest.Read(dir);
        Assert.NotEqual(0UL, after.EventsLost);
        Assert.True(after.Loss["exec"].UserspaceDropped >= 1);
    }

    [Fact]
    public async Task Recover_KilledWithTheLossTablesSegmentUnsealed_NoEventCountedLost()
    {
        // The loss table is the recorder's own accounting, not a source's events: its unsealed segment
        // (a killed recorder always leaves one) is no lost event, while an event table's still is.
        var dir = TempDir();
        Directory.CreateDirectory(Path.Combine(dir, "loss", "node=n"));
        Directory.CreateDirectory(Path.Combine(dir, "exec", "node=n"));
        ManifestStore.Write(new Manifest { Node = "n", StartedAt = DateTimeOffset.UtcNow.AddSeconds(-3) }, dir);
        await File.WriteAllBytesAsync(Path.Combine(dir, "loss", "node=n", "seg-000001.parquet.tmp"), new byte[100]);

        await Recovery.RecoverAsync(dir);

        var after = Manifest.Read(dir);
        Assert.Equal(0UL, after.EventsLost);
        Assert.False(after.Loss.ContainsKey("loss"));
        Assert.Equal(1, after.UnsealedSegments);

        await File.WriteAllBytesAsync(Path.Combine(dir, "exec", "node=n", "seg-000001.parquet.tmp"), new byte[100]);
        ManifestStore.Write(new Manifest { Node = "n", StartedAt = DateTimeOffset.UtcNow.AddSeconds(-3) }, dir);
        await Recovery.RecoverAsync(dir);
        Assert.Equal(1UL, Manifest.Read(dir).EventsLost);
    }

    [Fact]
    public async Task Recover_CompleteRecording_NothingEstimated()
    {
        var dir = TempDir();
        Directory.CreateDirectory(dir);
        var m = new Manifest { Node = "n", StartedAt = DateTimeOffset.UtcNow.AddSeconds(-5), EndedAt = DateTimeOffset.UtcNow, StopReason = "duration" };
        m.Loss["trace"] = new ManifestLoss { Emitted = 1000 };
        ManifestStore.Write(m, dir);

        var r = await Recovery.RecoverAsync(dir);

        Assert.True(r.WasComplete);
        Assert.Equal(0UL, r.EstimatedLost);
        Assert.Equal(0UL, Manifest.Read(dir).EventsLost);
    }
}
