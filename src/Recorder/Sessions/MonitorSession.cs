using Forensics.Datapath;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Bpf;
using Forensics.Datapath.Monitoring;
using Forensics.Datapath.Probes;
using Forensics.Recorder.Batches;
using Forensics.Recorder.Sources;
using Forensics.Recorder.Tables;

namespace Forensics.Recorder.Sessions;

/// <summary>What <c>forensics monitor</c> was asked to do.</summary>
public sealed record MonitorSessionOptions
{
    /// <summary>Event kinds to show; empty: all but capture.</summary>
    public IReadOnlySet<EventKind> Kinds { get; init; } = new HashSet<EventKind>();

    /// <summary>Connect destinations filtered in the kernel (CIDR text).</summary>
    public IReadOnlyList<string> ExcludeCidrs { get; init; } = [];

    public TimeSpan? Duration { get; init; }

    /// <summary>A batch is handed to the consumer after this long even when not full (live output).</summary>
    public TimeSpan BatchAge { get; init; } = TimeSpan.FromMilliseconds(100);

    public int BatchRows { get; init; } = 4096;

    /// <summary>The container runtime's CRI socket for pod and container attribution (null: a well-known socket that exists).</summary>
    public string? RuntimeEndpoint { get; init; }

    /// <summary>Pods and containers from this file (kubectl get pods -A -o json) instead of the runtime.</summary>
    public string? PodsFile { get; init; }

    /// <summary>
    /// Running datapaths to show through their monitor sockets (docs/monitor.md): null none, empty every one running,
    /// else those named. Only the datapath's kinds among <see cref="Kinds"/> are asked for.
    /// </summary>
    public IReadOnlyList<string>? Attach { get; init; }

    /// <summary>A datapath's client fell behind: the lab, the CPU, and how many events it lost there (cilium monitor's "CPU %02d: Lost %d events").</summary>
    public Action<string, int, ulong>? Lost { get; init; }

    /// <summary>Sources besides the probes (docs/sources.md).</summary>
    public IReadOnlyList<Func<EventContext, IRecordSource>> Sources { get; init; } = [];
}

/// <summary>Receives a monitor's batches on the session's consumer thread.</summary>
public interface IMonitorSink
{
    /// <summary>A batch of one table (an event table, or <c>loss</c>: what could not be delivered in the last second).
    /// Valid only during the call: the batch is reused afterwards.</summary>
    void OnBatch(TableBatch batch);

    /// <summary>Called about every 100 ms, batches or not (for output held back to be ordered).</summary>
    void OnTick();

    /// <summary>The session ended: everything was handed over.</summary>
    void OnEnd();
}

/// <summary>What a monitor session saw and lost.</summary>
public sealed record MonitorSummary(ulong Failed, ulong UserspaceDropped);

/// <summary>
/// <c>forensics monitor</c>: the probes (and any other source) through the same pipeline as a recording,
/// batches handed to a consumer instead of the Parquet writers, loss handed on as <c>loss</c> batches every
/// second. The consumer decides how to print (the CLI: lines, JSON, Arrow).
/// </summary>
public sealed class MonitorSession
{
    private readonly MonitorSessionOptions options;

    public MonitorSession(MonitorSessionOptions options) => this.options = options ?? throw new ArgumentNullException(nameof(options));

    /// <summary>Set when every source is live.</summary>
    public ManualResetEventSlim Started { get; } = new();

    /// <summary>The kinds shown: those asked for, or all but capture.</summary>
    public IReadOnlySet<EventKind> Kinds => options.Kinds.Count > 0 ? options.Kinds
        : Enumerable.Range(1, (int)EventKind.Max - 1).Select(k => (EventKind)k).Where(k => k != EventKind.Capture).ToHashSet();

    /// <summary>The running datapaths this session shows (their lab names), once it runs.</summary>
    public IReadOnlyList<string> Attached { get; private set; } = [];

    /// <summary>Runs until the token is cancelled or the duration passes; throws <see cref="RecordingSetupException"/> when it cannot start.</summary>
    public MonitorSummary Run(IMonitorSink sink, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(sink);
        try
        {
            Prerequisites.EnsureKernelAccess();
        }
        catch (PrerequisiteException e)
        {
            throw new RecordingSetupException(e.Message, SetupProblem.Prerequisite, e);
        }
        List<System.Net.IPNetwork> excluded;
        try
        {
            excluded = [.. options.ExcludeCidrs.Select(Cidrs.Parse)];
        }
        catch (FormatException e)
        {
            throw new RecordingSetupException(e.Message, SetupProblem.BadInput, e);
        }
        var kinds = Kinds;
        var context = RecordingSession.NewContext();
        var extra = new List<IRecordSource>();
        try
        {
            var dpKinds = RecordingSession.DatapathKinds(options.Kinds);
            if (options.Attach is not null && dpKinds.Count > 0)
            {
                foreach (var state in DatapathSocketSource.Running(options.Attach))
                {
                    var lab = state.Name;
                    extra.Add(new DatapathSocketSource(lab, state.MonitorSocket!, dpKinds, context, "monitor")
                    {
                        Lost = options.Lost is { } lost ? (cpu, n) => lost(lab, cpu, n) : null,
                    });
                }
            }
        }
        catch (MonitorConnectException e)
        {
            foreach (var x in extra)
                x.Dispose();
            throw new RecordingSetupException(e.Message, SetupProblem.Prerequisite, e);
        }
        Attached = [.. extra.OfType<DatapathSocketSource>().Select(d => d.Lab)];
        TracingProbes? probes = null;
        var probeSet = RecordingSession.ProbesFor(kinds);
        try
        {
            if (probeSet != ProbeSet.None || (extra.Count == 0 && options.Sources.Count == 0))
            {
                probes = TracingProbes.Load(new ProbeOptions
                {
                    Events = new EventOptions { Kinds = kinds, Snaplen = 0, SelfPid = (uint)Environment.ProcessId },
                    Enabled = probeSet,
                    ExcludedCidrs = excluded,
                });
                probes.Attach();
                probes.SeedProcesses();
            }
        }
        catch (BpfException e)
        {
            probes?.Dispose();
            foreach (var x in extra)
                x.Dispose();
            throw new RecordingSetupException(e.Message, SetupProblem.Prerequisite, e);
        }
        using (probes)
        using (var workloads = Workloads.Open(options.RuntimeEndpoint, options.PodsFile))
        {
            context.Workloads = workloads.Watcher;
            workloads.Watcher.Start();
            try
            {
                foreach (var make in options.Sources)
                    extra.Add(make(context));
                IReadOnlyList<IRecordSource> sources = [.. probes is null ? [] : new IRecordSource[] { new KernelSource([probes], context) }, .. extra];
                using var stop = CancellationTokenSource.CreateLinkedTokenSource(token);
                if (options.Duration is { } d)
                    stop.CancelAfter(d);
                using var pipeline = new Pipeline(sources, new PipelineOptions { BatchAge = options.BatchAge, BatchRows = options.BatchRows });
                using var queue = new BatchQueue(options.BatchRows, 3);
                var loss = new LossRows(256);
                var last = new Dictionary<(string, string), (SourceCounts, ulong)>();
                ulong failed = 0, dropped = 0;
                void SampleLoss()
                {
                    long utc = (DateTime.UtcNow.Ticks - DateTime.UnixEpoch.Ticks) * 100;
                    foreach (var s in sources)
                    {
                        var w = pipeline.WriterOf(s);
                        IReadOnlyDictionary<string, SourceCounts> counts;
                        try
                        {
                            counts = s.Counters();
                        }
                        catch (BpfException)
                        {
                            continue;
                        }
                        foreach (var table in counts.Keys.Concat(w.DroppedTables()).Distinct(StringComparer.Ordinal))
                        {
                            var now = counts.GetValueOrDefault(table);
                            var drops = w.Dropped(table);
                            var (before, dropsBefore) = last.GetValueOrDefault((s.Name, table));
                            last[(s.Name, table)] = (now, drops);
                            ulong f = now.Failed - before.Failed, u = drops - dropsBefore + now.Dropped - before.Dropped;
                            failed += f;
                            dropped += u;
                            if (f + u > 0)
                                foreach (var (cpu, ce, cf, cu) in LossSplit.Rows(now.Emitted - before.Emitted, f, u, LossSplit.Since(now, before)))
                                    if (!loss.Batch.IsFull)
                                        loss.Add(utc - utc % 1_000_000_000, table, ce, cf, cu, cpuId: cpu);
                        }
                    }
                    if (loss.Batch.Count > 0)
                    {
                        sink.OnBatch(loss.Batch);
                        loss.Batch.Reset();
                    }
                }
                var consumer = new Thread(() =>
                {
                    long lastLoss = Environment.TickCount64;
                    while (!queue.IsCompleted)
                    {
                        if (queue.TryNext(out var rows, 100))
                        {
                            sink.OnBatch(rows.Batch);
                            queue.Recycle(rows);
                        }
                        if (Environment.TickCount64 - lastLoss >= 1000)
                        {
                            lastLoss = Environment.TickCount64;
                            SampleLoss();
                        }
                        sink.OnTick();
                    }
                    SampleLoss();
                    sink.OnEnd();
                }) { Name = "monitor consumer" };
                var watcher = new Thread(() =>
                {
                    if (WaitHandle.WaitAny([pipeline.Started, stop.Token.WaitHandle]) == 0)
                        Started.Set();
                }) { IsBackground = true };
                watcher.Start();
                consumer.Start();
                pipeline.Run(queue, stop.Token);
                consumer.Join();
                return new MonitorSummary(failed, dropped);
            }
            finally
            {
                foreach (var s in extra)
                    s.Dispose();
            }
        }
    }
}
