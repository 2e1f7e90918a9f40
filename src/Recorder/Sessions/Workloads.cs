using Forensics.Datapath;
using Forensics.Format;
using Forensics.Recorder.Batches;
using Forensics.Recorder.Tables;
using Forensics.Runtime;

namespace Forensics.Recorder.Sessions;

/// <summary>
/// Attribution for record and monitor: the container runtime over CRI (--runtime-endpoint,
/// else a well-known socket that exists), or a pods file (--pods-file). A source that cannot be
/// read is one warning line on stderr and in the manifest ("attribution source: none"); the
/// recording goes on.
/// </summary>
internal sealed class Workloads : IDisposable
{
    private readonly string sourceKind;
    private readonly string? lab;

    private Workloads(WorkloadWatcher watcher, string sourceKind, string? lab)
    {
        Watcher = watcher;
        this.sourceKind = sourceKind;
        this.lab = lab;
    }

    public WorkloadWatcher Watcher { get; }

    public static Workloads Open(string? runtimeEndpoint, string? podsFile, string? lab = null, bool quiet = false)
    {
        var catalog = new WorkloadCatalog(FileSystem.Inode);
        IWorkloadSource? source = null;
        string? problem = null;
        string kind = "cri";
        try
        {
            if (podsFile is not null)
            {
                kind = "pods-file";
                source = PodsFileSource.Load(podsFile);
            }
            else if (runtimeEndpoint is not null || CriClient.Detect() is not null)
            {
                source = CriWorkloadSource.Connect(runtimeEndpoint);
            }
            else
            {
                problem = $"no container runtime socket ({string.Join(", ", CriClient.WellKnownEndpoints)}): pods are attributed only by the lab and named network namespaces; give --runtime-endpoint or --pods-file";
            }
        }
        catch (RuntimeException e)
        {
            problem = e.Message;
            if (!quiet)
                Console.Error.WriteLine($"warning: pod attribution: {e.Message}; recording without it");
        }
        return new Workloads(new WorkloadWatcher(source, catalog, unavailable: problem), kind, lab);
    }

    /// <summary>The pods and containers rows that changed since the last call.</summary>
    public IEnumerable<TableBatch> TakeBatches() => WorkloadTables.From(Watcher.Catalog.TakeChanges(), sourceKind, Watcher.Catalog);

    public ManifestAttribution ManifestEntry()
    {
        var source = Watcher.Source;
        if (source == "none" && lab is not null)
            source = $"lab {lab} (network namespaces)";
        return new ManifestAttribution
        {
            Source = source,
            Warnings = [.. Watcher.Warnings],
            Pods = Watcher.Catalog.PodCount,
            Containers = Watcher.Catalog.ContainerCount,
            Refreshes = Watcher.Refreshes,
            Failures = Watcher.Failures,
        };
    }

    public void Dispose() => Watcher.Dispose();
}
