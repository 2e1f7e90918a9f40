using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using Forensics.Datapath;
using Forensics.Datapath.Abi;
using Forensics.Format;
using Forensics.Recorder.Sources;
using Forensics.Recorder.Storage;
using Forensics.Recorder.Tables;

namespace Forensics.Recorder;

public sealed record RecordOptions
{
    public required string OutputDir { get; init; }
    public PipelineOptions Pipeline { get; init; } = new();

    /// <summary>A segment is sealed (and so safe from a crash) at least this often.</summary>
    public TimeSpan SealInterval { get; init; } = TimeSpan.FromSeconds(2);

    public long SealBytes { get; init; } = 64L << 20;

    /// <summary>Show progress on stderr (a terminal).</summary>
    public bool Progress { get; init; }

    public TimeSpan? Duration { get; init; }
    public ManifestConfig Config { get; init; } = new();

    /// <summary>
    /// Threads that write Parquet. The first writes every batch when it keeps up; the others take a batch
    /// only while batches queue up behind it, so a quiet recording still writes one segment per table at a time.
    /// </summary>
    public int WriterThreads { get; init; } = Math.Clamp(Environment.ProcessorCount, 1, 4);
    public string Node { get; init; } = Environment.MachineName;
}

public sealed record RecordingSummary(
    string Directory,
    string StopReason,
    TimeSpan Elapsed,
    IReadOnlyDictionary<string, long> Rows,
    IReadOnlyDictionary<string, ManifestLoss> Loss,
    ulong EventsLost,
    long Bytes,
    string? Error);

/// <summary>
/// One recording: the pipeline's batches written as sealed Parquet segments
/// per table, the manifest kept current after every seal, loss counted per
/// second and per kind. Stops when the token is cancelled; drains, seals
/// every file, writes the final manifest.
/// </summary>
public sealed class Recording : IDisposable
{
    private readonly IReadOnlyList<IRecordSource> sources;
    private readonly RecordOptions options;
    private readonly Manifest manifest;
    private readonly List<Dictionary<string, SegmentWriter>> lanes = [];
    private readonly Dictionary<string, int> segmentNumbers = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ulong> discarded = new(StringComparer.Ordinal);
    private readonly object manifestLock = new();
    private readonly Dictionary<(string Source, string Table), SourceCounts> lastCounters = [];
    private readonly Dictionary<(string Source, string Table), ulong> lastDrops = [];
    private readonly LossRows loss = new(4096);
    private Dictionary<string, SourceCounts> progressCounters = [];
    private long bytesSealed;
    private readonly Pipeline pipeline;
    private readonly KernelSource? kernel;
    private volatile string? error;
    private volatile bool diskFull;

    /// <summary>A recording of our BPF objects' events (one <see cref="KernelSource"/> over them).</summary>
    public Recording(IReadOnlyList<IEventSource> objects, EventContext context, RecordOptions options)
        : this([new KernelSource(objects, context, (options ?? throw new ArgumentNullException(nameof(options))).Pipeline.PollMs)], options, context.MonotonicToUtcOffsetNs)
    {
    }

    /// <summary>A recording of any sources (docs/sources.md); the kernel's clock offset goes into the manifest when known.</summary>
    public Recording(IReadOnlyList<IRecordSource> sources, RecordOptions options, long? monotonicToUtcOffsetNs)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(sources);
        this.sources = sources;
        this.options = options;
        kernel = sources.OfType<KernelSource>().FirstOrDefault();
        manifest = NewManifest(options, monotonicToUtcOffsetNs);
        for (int i = 0; i < Math.Max(1, options.WriterThreads); i++)
            lanes.Add(new Dictionary<string, SegmentWriter>(StringComparer.Ordinal));
        pipeline = new Pipeline(sources, options.Pipeline);
    }

    /// <summary>Records the sources handed over that could not be decoded (an unknown kind or ABI version).</summary>
    public long UnknownRecords => pipeline.UnknownRecords;

    /// <summary>Frees the pipeline's buffers (<see cref="Run"/> does so when it ends).</summary>
    public void Dispose() => pipeline.Dispose();

    /// <summary>Waits until every source is live (attached, subscribed): events from then on are recorded.</summary>
    public bool WaitStarted(TimeSpan timeout) => pipeline.Started.WaitOne(timeout);

    /// <summary>
    /// Waits until the pipeline has taken every event the sources' producers counted as handed over (the
    /// kernel's emission counters against the records read out of the ring buffers): what happened before
    /// this call will be in the recording once it stops. False when that did not happen within the timeout.
    /// </summary>
    public bool WaitCaughtUp(TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            bool caught = true;
            foreach (var s in sources)
            {
                var w = pipeline.WriterOf(s);
                ulong handed = s.Counters().Values.Aggregate(0UL, (a, c) => a + c.Emitted - c.Dropped);
                ulong taken = (ulong)w.Records + w.DroppedTables().Aggregate(0UL, (a, t) => a + w.Dropped(t));
                caught &= taken >= handed;
            }
            if (caught)
                return true;
            if (sw.Elapsed >= timeout)
                return false;
            Thread.Sleep(5);
        }
    }

    public Manifest Manifest => manifest;

    /// <summary>Snapshot tables (endpoints, services, ...) to write at start, as batches.</summary>
    public List<Batches.TableBatch> Snapshots { get; } = [];

    /// <summary>Snapshot tables taken when recording stops (written before the final seal).</summary>
    public Func<IEnumerable<Batches.TableBatch>>? EndSnapshots { get; set; }

    /// <summary>Rows to write now and then (every second, at start and before the end snapshots): e.g. the pods and containers that changed.</summary>
    public Func<IEnumerable<Batches.TableBatch>>? PeriodicBatches { get; set; }

    /// <summary>Called under the manifest lock before each manifest write (e.g. to add counters).</summary>
    public Action<Manifest>? UpdateManifest { get; set; }

    /// <summary>Event records known at start (processes found in /proc), decoded like ring buffer records.</summary>
    public List<byte[]> Preamble => kernel?.Preamble ?? throw new InvalidOperationException("a preamble needs the kernel source");

    public static Manifest NewManifest(RecordOptions options, long? monotonicToUtcOffsetNs)
    {
        ArgumentNullException.ThrowIfNull(options);
        return new Manifest
        {
            Node = options.Node,
            Host = HostInfo(),
            ToolVersion = ToolVersion(),
            StartedAt = DateTimeOffset.UtcNow,
            MonotonicToUtcOffsetNs = monotonicToUtcOffsetNs,
            Config = options.Config,
        };
    }

    public static string ToolVersion() =>
        typeof(Recording).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? "0.0.0";

    public static ManifestHost HostInfo()
    {
        static string Read(string p) => File.Exists(p) ? File.ReadAllText(p).Trim() : "";
        return new ManifestHost
        {
            Hostname = Environment.MachineName,
            Kernel = Read("/proc/sys/kernel/osrelease"),
            Machine = System.Runtime.InteropServices.RuntimeInformation.OSArchitecture.ToString().ToLowerInvariant(),
            BootId = Read("/proc/sys/kernel/random/boot_id"),
        };
    }

    /// <summary>The UTC offset of CLOCK_MONOTONIC and CLOCK_BOOTTIME, measured once (best of several reads).</summary>
    public static (long Monotonic, long Boottime) ClockOffsets() => Datapath.Probes.KernelClock.UtcOffsets();

    /// <summary>Runs until <paramref name="token"/> is cancelled; <paramref name="stopReason"/> says why it was.</summary>
    public RecordingSummary Run(Func<string> stopReason, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(stopReason);
        var sw = Stopwatch.StartNew();
        Directory.CreateDirectory(options.OutputDir);
        lock (manifestLock)
            ManifestStore.Write(manifest, options.OutputDir);
        Reserve();
        if (kernel is not null)
            kernel.PinDir = KernelCounterPins.DirOf(manifest.RecordingId);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(token);
        using var queue = new BatchQueue(options.Pipeline.BatchRows, options.Pipeline.BatchesPerTable + lanes.Count - 1);
        using var pipe = pipeline;

        foreach (var snap in Snapshots)
            WriteBatchSafely(snap);
        foreach (var b in PeriodicBatches?.Invoke() ?? [])
            WriteBatchSafely(b);

        var writerThreads = new List<Thread>();
        for (int i = 0; i < lanes.Count; i++)
        {
            int lane = i;
            var t = new Thread(() => WriterLoop(queue, stop, lane)) { Name = lane == 0 ? "forensics-writer" : $"forensics-wr{lane}", IsBackground = true };
            t.Start();
            writerThreads.Add(t);
        }
        Timer? progress = options.Progress ? new Timer(_ => PrintProgress(sw.Elapsed), null, 1000, 1000) : null;
        try
        {
            pipe.Run(queue, stop.Token);
        }
        catch (InvalidOperationException e)
        {
            Fail(e.Message);
        }
        finally
        {
            foreach (var t in writerThreads)
                t.Join();
            progress?.Dispose();
            if (options.Progress)
                Console.Error.WriteLine();
        }

        SampleLoss(final: true);
        WriteBatchSafely(loss.Batch);
        foreach (var snap in EndSnapshots?.Invoke() ?? [])
            WriteBatchSafely(snap);
        foreach (var snap in sources.OfType<ISnapshotSource>().SelectMany(s => s.Snapshots()))
            WriteBatchSafely(snap);
        foreach (var b in PeriodicBatches?.Invoke() ?? [])
            WriteBatchSafely(b);
        SealAll();

        var reason = diskFull ? "disk-full" : error is not null ? "error" : stopReason();
        Unreserve(); // the room the final manifest needs on a full disk
        lock (manifestLock)
        {
            manifest.EndedAt = DateTimeOffset.UtcNow;
            manifest.StopReason = reason;
            FillLoss();
            UpdateManifest?.Invoke(manifest);
            if (TryWriteManifest() && kernel?.PinDir is { } pins)
                KernelCounterPins.Remove(pins); // the final manifest counts to the end; a killed recorder's are recover's
        }
        return new RecordingSummary(options.OutputDir, reason, sw.Elapsed,
            manifest.Tables.ToDictionary(t => t.Key, t => t.Value.Rows),
            manifest.Loss, manifest.EventsLost, Interlocked.Read(ref bytesSealed), error);
    }

    /// <summary>Space held back while recording (see <see cref="Reserve"/>); never part of a recording.</summary>
    public const string ReserveFile = ".reserve";

    private string ReservePath => Path.Combine(options.OutputDir, ReserveFile);

    /// <summary>
    /// Holds back room for the final manifest: a disk that fills while recording still takes the manifest that
    /// counts what the full disk cost (the last one written before would say nothing of it).
    /// </summary>
    private void Reserve()
    {
        try
        {
            var o = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write };
            if (!OperatingSystem.IsWindows())
                o.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            using var fs = new FileStream(ReservePath, o);
            fs.Write(new byte[ReserveBytes(manifest)]); // (tmpfs and ext4 take the blocks now; no fsync needed for that)
        }
        catch (IOException)
        {
            Unreserve(); // a disk already this full fails on the first segment, and says so
        }
    }

    /// <summary>Room for a manifest listing a few thousand segments (about 200 bytes each).</summary>
    private static int ReserveBytes(Manifest m) => Math.Max(1 << 20, m.ToJson().Length * 2);

    /// <summary>The reserve's time is the recorder's last sign of life: <c>recover</c> measures a crash's gap to it.</summary>
    private void Heartbeat()
    {
        try
        {
            File.SetLastWriteTimeUtc(ReservePath, DateTime.UtcNow);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    private void Unreserve()
    {
        try
        {
            File.Delete(ReservePath);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>
    /// One writer thread. Lane 0 waits for every batch and also samples loss; lane k takes a batch only
    /// while more than k batches wait (the queue grows when lane 0 falls behind), and each lane writes its
    /// own segments, numbered from one counter per table.
    /// </summary>
    private void WriterLoop(BatchQueue queue, CancellationTokenSource stop, int lane)
    {
        long lastSeal = Environment.TickCount64, lastLoss = Environment.TickCount64;
        while (!queue.IsCompleted)
        {
            bool took = lane == 0 ? queue.TryNext(out var rows, 100) : queue.TryNextIfBacklog(lane, out rows, 5);
            if (took)
            {
                WriteBatchSafely(rows.Batch, lane);
                queue.Recycle(rows);
            }
            long now = Environment.TickCount64;
            if (lane == 0 && now - lastLoss >= 1000)
            {
                lastLoss = now;
                SampleLoss(final: false);
                foreach (var b in PeriodicBatches?.Invoke() ?? [])
                    WriteBatchSafely(b);
            }
            if (now - lastSeal >= 250)
            {
                lastSeal = now;
                if (lane == 0)
                    Heartbeat();
                if (lane == 0 && now - loss.Batch.FirstRowTicks >= (long)options.SealInterval.TotalMilliseconds && loss.Batch.Count > 0)
                {
                    WriteBatchSafely(loss.Batch);
                    loss.Batch.Reset();
                }
                foreach (var w in lanes[lane].Values)
                    Guard(() => w.SealIfDueAsync().GetAwaiter().GetResult());
            }
            if (error is not null && !stop.IsCancellationRequested)
                stop.Cancel(); // stop within a second of a write failure
        }
    }

    private void WriteBatchSafely(Batches.TableBatch batch, int lane = 0)
    {
        if (batch.Count == 0)
            return;
        if (error is not null)
        {
            Discard(batch);
            return;
        }
        var writers = lanes[lane];
        if (!writers.TryGetValue(batch.Table, out var w))
        {
            w = new SegmentWriter(options.OutputDir, options.Node, batch, manifest.RecordingId, OnSealed, options.SealInterval,
                options.SealBytes, () => NextSegment(batch.Table));
            lock (lanes)
                writers[batch.Table] = w; // other threads enumerate every lane's writers (loss, final seal)
        }
        if (!Guard(() => w.WriteAsync(batch).GetAwaiter().GetResult()))
            Discard(batch);
    }

    private void Discard(Batches.TableBatch batch)
    {
        lock (discarded)
            discarded[batch.Table] = discarded.GetValueOrDefault(batch.Table) + (ulong)batch.Count;
    }

    /// <summary>The next segment number of a table, for every writer of this recording (its own and other sources').</summary>
    public int NextSegment(string table)
    {
        lock (segmentNumbers)
            return segmentNumbers[table] = segmentNumbers.GetValueOrDefault(table) + 1;
    }

    /// <summary>
    /// Changes the manifest under its lock, and writes it when asked: for sources that are not the kernel
    /// (Hubble, Tetragon) writing into this recording. Their loss entries count in events_lost.
    /// </summary>
    public void WithManifest(Action<Manifest> change, bool write)
    {
        ArgumentNullException.ThrowIfNull(change);
        lock (manifestLock)
        {
            change(manifest);
            if (write)
            {
                Directory.CreateDirectory(options.OutputDir);
                manifest.EventsLost = manifest.Loss.Values.Aggregate(0UL, (a, l) => a + l.Failed + l.UserspaceDropped);
                ManifestStore.Write(manifest, options.OutputDir);
            }
        }
    }

    private List<SegmentWriter> AllWriters()
    {
        lock (lanes)
            return lanes.SelectMany(l => l.Values).ToList();
    }

    private bool Guard(Action action)
    {
        try
        {
            action();
            return true;
        }
        catch (IOException e)
        {
            if (FileSystem.IsDiskFull(e))
                diskFull = true;
            Fail(diskFull ? $"disk full writing {options.OutputDir}: {e.Message}" : $"writing {options.OutputDir}: {e.Message}");
            return false;
        }
        catch (UnauthorizedAccessException e)
        {
            Fail($"cannot write {options.OutputDir}: {e.Message}");
            return false;
        }
    }

    /// <summary>The first error wins (writer threads may fail at the same time).</summary>
    private void Fail(string message) => Interlocked.CompareExchange(ref error, message, null);

    private void OnSealed(ManifestFile file)
    {
        lock (manifestLock)
        {
            var table = file.Path.Split('/')[0];
            var version = SchemaCatalog.VersionOf(table);
            manifest.AddFile(table, version, file);
            Interlocked.Add(ref bytesSealed, file.Bytes);
            FillLoss();
            UpdateManifest?.Invoke(manifest);
            ManifestStore.Write(manifest, options.OutputDir);
        }
    }

    private void SealAll()
    {
        foreach (var w in AllWriters())
        {
            Guard(() => w.SealAsync().GetAwaiter().GetResult());
            w.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
    }

    private bool TryWriteManifest()
    {
        try
        {
            ManifestStore.Write(manifest, options.OutputDir);
            return true;
        }
        catch (IOException e)
        {
            Fail("writing the manifest: " + e.Message); // the last sealed manifest stays valid
            return false;
        }
    }

    /// <summary>Every source's counters, per table (a source whose counters cannot be read is skipped this time).</summary>
    private List<(IRecordSource Source, IReadOnlyDictionary<string, SourceCounts> Counts)> ReadCounters()
    {
        var all = new List<(IRecordSource, IReadOnlyDictionary<string, SourceCounts>)>();
        foreach (var s in sources)
        {
            try
            {
                all.Add((s, s.Counters()));
            }
            catch (Datapath.Bpf.BpfException)
            {
            }
        }
        return all;
    }

    private void SampleLoss(bool final)
    {
        long utc = DateTime.UtcNow.Ticks * 100 - DateTime.UnixEpoch.Ticks * 100;
        var perTable = new SortedDictionary<string, (ulong E, ulong F, ulong D, Dictionary<uint, CpuCounts> Cpus)>(StringComparer.Ordinal);
        var progress = new Dictionary<string, SourceCounts>(StringComparer.Ordinal);
        foreach (var (source, counts) in ReadCounters())
        {
            var w = pipeline.WriterOf(source);
            foreach (var table in counts.Keys.Concat(w.DroppedTables()).Distinct(StringComparer.Ordinal))
            {
                var key = (source.Name, table);
                var now = counts.GetValueOrDefault(table);
                var before = lastCounters.GetValueOrDefault(key);
                ulong drops = w.Dropped(table), dropsBefore = lastDrops.GetValueOrDefault(key);
                if (final && now.Emitted > w.Taken(table) + drops)
                {
                    // handed over by the producer and never taken before the stop (a busy ring buffer): lost, and said so
                    ulong unread = now.Emitted - w.Taken(table) - drops;
                    drops += unread;
                    w.NotRecorded($"{unread} {table} event{(unread == 1 ? "" : "s")} emitted but not read when the recording stopped (counted as lost in user space)");
                }
                var t = perTable.GetValueOrDefault(table);
                var cpus = t.Cpus ?? [];
                LossSplit.Add(cpus, LossSplit.Since(now, before));
                perTable[table] = (t.E + now.Emitted - before.Emitted, t.F + now.Failed - before.Failed, t.D + drops - dropsBefore + now.Dropped - before.Dropped, cpus);
                lastCounters[key] = now;
                lastDrops[key] = drops;
                var p = progress.GetValueOrDefault(table);
                progress[table] = new SourceCounts(p.Emitted + now.Emitted, p.Failed + now.Failed, p.Dropped + now.Dropped);
            }
        }
        foreach (var (table, (e, f, d, cpus)) in perTable)
        {
            // a row per CPU that failed to hand events over, and one without a CPU for the rest (schemas/loss.v3.json)
            foreach (var (cpu, ce, cf, cd) in LossSplit.Rows(e, f, d, cpus))
            {
                if (loss.Batch.IsFull)
                {
                    WriteBatchSafely(loss.Batch);
                    loss.Batch.Reset();
                }
                loss.Add(utc - utc % 1_000_000_000, table, ce, cf, cd, cpuId: cpu);
            }
        }
        progressCounters = progress;
    }

    /// <summary>The manifest's loss per table (summed over sources) and each source's own entry.</summary>
    private void FillLoss()
    {
        ulong lost = 0;
        manifest.Loss.Clear();
        foreach (var s in sources)
        {
            var w = pipeline.WriterOf(s);
            var entry = new ManifestSource { Kind = s.Kind, Detail = s.Detail, Records = (ulong)w.Records, NotRecorded = [.. w.Notes()] };
            foreach (var ((name, table), c) in lastCounters.Where(kv => kv.Key.Source == s.Name))
            {
                ulong d = lastDrops.GetValueOrDefault((name, table)) + c.Dropped;
                if (c.Emitted == 0 && c.Failed == 0 && d == 0)
                    continue;
                entry.Loss[table] = new ManifestLoss { Emitted = c.Emitted, Failed = c.Failed, UserspaceDropped = d };
            }
            manifest.Sources[s.Name] = entry;
        }
        var tables = manifest.Sources.Values.SelectMany(e => e.Loss.Keys).Concat(DiscardedTables()).Distinct(StringComparer.Ordinal);
        foreach (var table in tables)
        {
            ulong discardedRows;
            lock (discarded)
                discardedRows = discarded.GetValueOrDefault(table);
            var sum = new ManifestLoss
            {
                UserspaceDropped = discardedRows + (ulong)AllWriters().Where(w => w.Table == table).Sum(w => w.AbandonedRows),
            };
            foreach (var e in manifest.Sources.Values)
            {
                if (e.Loss.TryGetValue(table, out var l))
                {
                    sum.Emitted += l.Emitted;
                    sum.Failed += l.Failed;
                    sum.UserspaceDropped += l.UserspaceDropped;
                }
            }
            if (sum.Emitted == 0 && sum.Failed == 0 && sum.UserspaceDropped == 0)
                continue;
            manifest.Loss[table] = sum;
            lost += sum.Failed + sum.UserspaceDropped;
        }
        manifest.EventsLost = lost;
    }

    private List<string> DiscardedTables()
    {
        lock (discarded)
            return [.. discarded.Keys];
    }

    private void PrintProgress(TimeSpan elapsed)
    {
        var counters = progressCounters;
        string Rate(KeyValuePair<string, SourceCounts> kv) => $"{kv.Key} {kv.Value.Emitted.ToString("N0", CultureInfo.InvariantCulture)}";
        var kinds = string.Join(", ", counters.Where(kv => kv.Value.Emitted > 0).Select(Rate));
        ulong lost = counters.Values.Aggregate(0UL, (a, c) => a + c.Failed + c.Dropped);
        var remaining = options.Duration is { } d ? $"/{d:hh\\:mm\\:ss}" : "";
        long bytes = Interlocked.Read(ref bytesSealed);
        Console.Error.Write($"\r[{elapsed:hh\\:mm\\:ss}{remaining}] events: {(kinds.Length > 0 ? kinds : "none yet")}; lost {lost}; {bytes / 1024.0 / 1024.0:F1} MiB sealed   ");
    }
}
