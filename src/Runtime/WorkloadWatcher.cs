using System.Diagnostics;

namespace Forensics.Runtime;

/// <summary>
/// Keeps a <see cref="WorkloadCatalog"/> current from a source while a recording runs:
/// read once at start, then every <c>interval</c> (a live source), and at once (at most
/// every 200 ms) when an event names a cgroup the catalog does not know, so a pod created
/// mid-recording is attributed from its first events. A source that fails is reported,
/// never fatal: attribution goes on with what is known, and the recording goes on.
/// </summary>
public sealed class WorkloadWatcher : IDisposable
{
    private static readonly TimeSpan MinGap = TimeSpan.FromMilliseconds(200);
    private readonly IWorkloadSource? source;
    private readonly TimeSpan interval;
    private readonly CancellationTokenSource stop = new();
    private readonly object refreshGate = new();
    private readonly List<string> warnings = [];
    private readonly Stopwatch sinceRefresh = Stopwatch.StartNew();
    private readonly System.Collections.Concurrent.ConcurrentDictionary<ulong, byte> missed = new();
    private Thread? thread;
    private long refreshes, failures;
    private volatile bool lastFailed;

    public WorkloadWatcher(IWorkloadSource? source, WorkloadCatalog catalog, TimeSpan? interval = null, string? unavailable = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        this.source = source;
        Catalog = catalog;
        this.interval = interval ?? TimeSpan.FromMilliseconds(500);
        if (unavailable is not null)
            warnings.Add(unavailable);
    }

    public WorkloadCatalog Catalog { get; }

    /// <summary>Where attribution comes from: the source's description, or "none".</summary>
    public string Source => source is null || (refreshes == 0 && failures > 0) ? "none" : source.Description;

    /// <summary>What went wrong with the source (one line each, the first few and a count).</summary>
    public IReadOnlyList<string> Warnings
    {
        get
        {
            lock (warnings)
                return failures > warnings.Count(w => w.StartsWith("refresh", StringComparison.Ordinal)) + 1
                    ? [.. warnings, $"{Interlocked.Read(ref failures)} refreshes of the source failed in all"]
                    : [.. warnings];
        }
    }

    public long Refreshes => Interlocked.Read(ref refreshes);

    public long Failures => Interlocked.Read(ref failures);

    /// <summary>Reads the source once (start rows) and starts refreshing if it is live.</summary>
    public void Start()
    {
        Refresh(first: true);
        Catalog.LearnNetnsFromProcesses();
        if (source is { Live: true })
        {
            thread = new Thread(Loop) { IsBackground = true, Name = "forensics-workloads" };
            thread.Start();
        }
    }

    private void Loop()
    {
        while (!stop.Token.WaitHandle.WaitOne(interval))
            Refresh(first: false);
    }

    /// <summary>
    /// The owner of an event. A cgroup of no listed container makes the catalog rescan the cgroups
    /// and ask the runtime at once (unless it asked within 200 ms or failed last time); when the
    /// cgroup is a container's folder the runtime has not listed, it is asked even so: a container
    /// started a moment ago is then known from its first events, and its events are never left to
    /// the network namespace (whose inode number a deleted pod may have had). Each cgroup id
    /// triggers this once.
    /// </summary>
    public Owner? Lookup(uint netnsInode, ulong cgroupId)
    {
        var o = Catalog.Lookup(netnsInode, cgroupId);
        if (source is null || o?.ContainerId is not null || cgroupId <= 1)
            return o; // without a source there is no container to find: no cgroup walks on the decode thread
        if (missed.Count > 100_000)
            missed.Clear();
        if (!missed.TryAdd(cgroupId, 0))
            return o;
        RefreshSoon();
        if (Catalog.KnowsCgroup(cgroupId) && Catalog.Lookup(netnsInode, cgroupId)?.ContainerId is null && source is { Live: true })
            Refresh(first: false, force: true);
        return Catalog.Lookup(netnsInode, cgroupId) ?? o;
    }

    /// <summary>Refreshes now unless a refresh ran within the last 200 ms (called when an event names an unknown cgroup).</summary>
    public void RefreshSoon()
    {
        if (source is not { Live: true } || lastFailed || sinceRefresh.Elapsed < MinGap)
        {
            Catalog.RescanCgroups();
            return;
        }
        Refresh(first: false);
    }

    private void Refresh(bool first, bool force = false)
    {
        if (source is null)
            return;
        lock (refreshGate)
        {
            if (!first && !force && sinceRefresh.Elapsed < MinGap / 2)
                return;
            sinceRefresh.Restart();
            try
            {
                Catalog.Apply(source.Read(), DateTime.UtcNow, first);
                Interlocked.Increment(ref refreshes);
                lastFailed = false;
            }
            catch (RuntimeException e)
            {
                lastFailed = true;
                var n = Interlocked.Increment(ref failures);
                lock (warnings)
                    if (n <= 3)
                        warnings.Add((first ? "" : "refresh: ") + e.Message);
            }
        }
    }

    /// <summary>Stops refreshing and writes the "end" rows.</summary>
    public void Stop()
    {
        stop.Cancel();
        thread?.Join(TimeSpan.FromSeconds(5));
        if (source is { Live: true })
            Refresh(first: false);
        Catalog.End(DateTime.UtcNow);
    }

    public void Dispose()
    {
        stop.Cancel();
        thread?.Join(TimeSpan.FromSeconds(5));
        source?.Dispose();
        stop.Dispose();
    }
}
