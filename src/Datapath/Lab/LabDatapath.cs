using Forensics.Datapath.Control;

namespace Forensics.Datapath.Lab;

/// <summary>The real datapath (<see cref="Control.LoadedDatapath"/>) as the lab drives it.</summary>
public sealed class LabDatapath : ILabDatapath
{
    private LabDatapath(Control.LoadedDatapath datapath, EventOptions options)
    {
        Datapath = datapath;
        Options = options;
    }

    public Control.LoadedDatapath Datapath { get; }

    /// <summary>What its event channel was configured with.</summary>
    public EventOptions Options { get; }

    public IEventSource Events => Datapath;

    /// <summary>Loads the datapath for the cluster with these event options.</summary>
    public static Func<ClusterSpec, ILabDatapath> Factory(EventOptions options) =>
        cluster => new LabDatapath(Control.LoadedDatapath.Load(cluster, options), options);

    public void AttachEndpoint(PodSpec pod, int hostIfindex) => Datapath.AttachEndpoint(pod, hostIfindex);

    public void AttachNetworkDevice(int ifindex) => Datapath.AttachNetworkDevice(ifindex);

    public void Dispose() => Datapath.Dispose();
}
