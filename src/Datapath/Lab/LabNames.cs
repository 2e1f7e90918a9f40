using System.Globalization;
using System.Text;
using Forensics.Datapath.Control;

namespace Forensics.Datapath.Lab;

/// <summary>
/// What the lab names things. Network namespaces: &lt;lab&gt;-node (the node, with
/// the routes and the datapath), &lt;lab&gt;-world (the outside hosts), and
/// &lt;lab&gt;-&lt;pod&gt; (&lt;lab&gt;-&lt;namespace&gt;-&lt;pod&gt; outside "default").
/// Links live inside the node namespace: &lt;lab&gt;-&lt;pod&gt; shortened to 15
/// characters (IFNAMSIZ) with a hash when it does not fit; the pod side is eth0.
/// </summary>
public static class LabNames
{
    public const int IfNameMax = 15;
    public const string StateDir = "/run/forensics/lab";
    public const string BpffsDir = "/sys/fs/bpf/forensics";

    public static string NodeNs(string lab) => $"{lab}-node";

    public static string WorldNs(string lab) => $"{lab}-world";

    public static string PodNs(string lab, PodSpec pod)
    {
        ArgumentNullException.ThrowIfNull(pod);
        return pod.Namespace == "default" ? $"{lab}-{pod.Name}" : $"{lab}-{pod.Namespace}-{pod.Name}";
    }

    /// <summary>The host-side veth of a pod, in the node namespace.</summary>
    public static string PodLink(string lab, PodSpec pod) => Fit($"{lab}-{pod?.Name}", pod!.FullName);

    /// <summary>The node's device towards the outside world, in the node namespace.</summary>
    public static string WorldLink(string lab) => Fit($"{lab}-world", "world");

    public static string StateFile(string lab) => Path.Combine(StateDir, lab + ".json");

    public static string LogDir(string lab) => Path.Combine(StateDir, lab);

    public static string PinDir(string lab) => Path.Combine(BpffsDir, lab);

    /// <summary>The running datapath's monitor socket (root only): its events for `monitor` and `record` (docs/monitor.md).</summary>
    public static string MonitorSocket(string lab) => Path.Combine(LogDir(lab), "monitor.sock");

    /// <summary>The running datapath's control plane state (endpoints, identities, policies, services) beside its pinned maps.</summary>
    public static string ControlFile(string lab) => Path.Combine(LogDir(lab), "control.json");

    /// <summary>Every namespace a lab of this spec makes, node first.</summary>
    public static IReadOnlyList<string> Namespaces(ClusterSpec cluster)
    {
        ArgumentNullException.ThrowIfNull(cluster);
        var lab = cluster.Lab?.Name ?? throw new LabException($"{cluster.SourceFile}: no Lab document: a lab needs one (kind: Lab)");
        return [NodeNs(lab), WorldNs(lab), .. cluster.Pods.Select(p => PodNs(lab, p))];
    }

    /// <summary>A name of at most 15 characters: as is if it fits, else a prefix and 4 hex digits of a hash of the key.</summary>
    public static string Fit(string name, string key)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (name.Length <= IfNameMax)
            return name;
        return name[..(IfNameMax - 5)] + "-" + Hash(name + "/" + key).ToString("x4", CultureInfo.InvariantCulture)[..4];
    }

    /// <summary>A locally administered unicast MAC address derived from a key, so that both ends know it in advance.</summary>
    public static string Mac(string key)
    {
        uint h = Hash(key);
        uint h2 = Hash(key + "#");
        return string.Create(CultureInfo.InvariantCulture, $"02:{(byte)(h >> 24):x2}:{(byte)(h >> 16):x2}:{(byte)(h >> 8):x2}:{(byte)h:x2}:{(byte)h2:x2}");
    }

    private static uint Hash(string s)
    {
        uint h = 2166136261;
        foreach (var b in Encoding.UTF8.GetBytes(s))
        {
            h ^= b;
            h *= 16777619;
        }
        return h;
    }
}
