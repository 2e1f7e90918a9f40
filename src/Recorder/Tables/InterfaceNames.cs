using Forensics.Datapath.Lab;

namespace Forensics.Recorder.Tables;

/// <summary>
/// Interface names of a datapath's network namespace by ifindex, for the rows' <c>interface</c> column (as
/// cilium monitor prints "ifindex lxc..." and Hubble fills interface.name). Listed at start and again on an
/// ifindex not seen before, at most once a second (a pod's veth made during the recording is named from its
/// next event on); an ifindex that names nothing stays null and the number is printed.
/// </summary>
public sealed class InterfaceNames
{
    private static readonly TimeSpan MinRefresh = TimeSpan.FromSeconds(1);
    private readonly string netnsPath;
    private readonly Lock gate = new();
    private Dictionary<uint, string> names = [];
    private DateTime listed = DateTime.MinValue;

    public InterfaceNames(string netnsPath)
    {
        this.netnsPath = netnsPath;
        Refresh();
    }

    public string? Name(uint ifindex)
    {
        lock (gate)
        {
            if (names.TryGetValue(ifindex, out var n))
                return n;
            if (DateTime.UtcNow - listed < MinRefresh)
                return null;
            Refresh();
            return names.GetValueOrDefault(ifindex);
        }
    }

    private void Refresh()
    {
        listed = DateTime.UtcNow;
        try
        {
            names = NetNamespace.Interfaces(netnsPath);
        }
        catch (LabException)
        {
            // the namespace is gone (the lab went down): the names known so far stand
        }
    }
}
