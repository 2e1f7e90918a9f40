using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using System.Text.Json;
using Forensics.Datapath.Lab;

namespace Forensics.Datapath.Cluster;

/// <summary>An address range and where it was learned ("cni:/etc/cni/net.d/10-bridge.conflist", "netns:/run/netns/x", ...).</summary>
public sealed record LearnedRange(IPNetwork Cidr, string Source);

/// <summary>
/// The cluster's address ranges as a node's own configuration shows them: pod CIDRs from CNI
/// configuration (host-local IPAM "subnet" / "ranges", flannel's subnet.env), and the node's
/// addresses (every interface of a network namespace).
/// </summary>
public static class NodeRanges
{
    public const string DefaultCniDir = "/etc/cni/net.d";
    public const string FlannelSubnetEnv = "/run/flannel/subnet.env";

    /// <summary>Pod CIDRs of every CNI configuration file in <paramref name="dir"/> (*.conf, *.conflist, *.json); files that do not parse are skipped.</summary>
    public static List<LearnedRange> CniPodCidrs(string dir = DefaultCniDir, string flannelEnv = FlannelSubnetEnv)
    {
        var result = new List<LearnedRange>();
        if (Directory.Exists(dir))
        {
            foreach (var file in Directory.EnumerateFiles(dir).Order(StringComparer.Ordinal))
            {
                if (!(file.EndsWith(".conf", StringComparison.Ordinal) || file.EndsWith(".conflist", StringComparison.Ordinal) || file.EndsWith(".json", StringComparison.Ordinal)))
                    continue;
                try
                {
                    foreach (var cidr in CniConfigCidrs(File.ReadAllBytes(file)))
                        if (!result.Any(r => r.Cidr.Equals(cidr)))
                            result.Add(new LearnedRange(cidr, "cni:" + file));
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException)
                {
                    // not a CNI file we can read: it names no range
                }
            }
        }
        try
        {
            if (File.Exists(flannelEnv))
                foreach (var line in File.ReadLines(flannelEnv))
                    if (line.StartsWith("FLANNEL_NETWORK=", StringComparison.Ordinal) && IPNetwork.TryParse(line["FLANNEL_NETWORK=".Length..].Trim(), out var net)
                        && !result.Any(r => r.Cidr.Equals(net)))
                        result.Add(new LearnedRange(net, "flannel:" + flannelEnv));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // unreadable: no range from it
        }
        return result;
    }

    /// <summary>The subnets a CNI network configuration (or list) gives its IPAM: host-local's "subnet" and "ranges".</summary>
    public static List<IPNetwork> CniConfigCidrs(ReadOnlySpan<byte> json)
    {
        using var doc = JsonDocument.Parse(json.ToArray(), new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        var found = new List<IPNetwork>();
        void Ipam(JsonElement plugin)
        {
            if (plugin.ValueKind != JsonValueKind.Object)
                return;
            if (plugin.TryGetProperty("delegate", out var del))
                Ipam(del);
            if (!plugin.TryGetProperty("ipam", out var ipam) || ipam.ValueKind != JsonValueKind.Object)
                return;
            if (ipam.TryGetProperty("subnet", out var s) && s.ValueKind == JsonValueKind.String && IPNetwork.TryParse(s.GetString(), out var one))
                found.Add(one);
            if (ipam.TryGetProperty("ranges", out var ranges) && ranges.ValueKind == JsonValueKind.Array)
                foreach (var set in ranges.EnumerateArray())
                    foreach (var r in set.ValueKind == JsonValueKind.Array ? set.EnumerateArray() : Enumerable.Repeat(set, 1))
                        if (r.ValueKind == JsonValueKind.Object && r.TryGetProperty("subnet", out var rs) && rs.ValueKind == JsonValueKind.String
                            && IPNetwork.TryParse(rs.GetString(), out var net))
                            found.Add(net);
        }
        var root = doc.RootElement;
        if (root.TryGetProperty("plugins", out var plugins) && plugins.ValueKind == JsonValueKind.Array)
            foreach (var p in plugins.EnumerateArray())
                Ipam(p);
        else
            Ipam(root);
        return found.Distinct().ToList();
    }

    /// <summary>
    /// The addresses of every interface of a network namespace (null: this process's), loopback
    /// left out, each as a host route (/32, /128); IPv6 link-local addresses are left out.
    /// </summary>
    public static List<IPAddress> Addresses(string? netnsPath = null)
    {
        static List<IPAddress> Here() =>
            [.. NetworkInterface.GetAllNetworkInterfaces()
                .Where(i => i.NetworkInterfaceType != NetworkInterfaceType.Loopback)
                .SelectMany(i => i.GetIPProperties().UnicastAddresses.Select(u => u.Address))
                .Where(a => !IPAddress.IsLoopback(a) && !(a.AddressFamily == AddressFamily.InterNetworkV6 && a.IsIPv6LinkLocal))
                .Select(a => a.AddressFamily == AddressFamily.InterNetworkV6 ? new IPAddress(a.GetAddressBytes()) : a)
                .Distinct()];
        return netnsPath is null ? Here() : NetNamespace.RunAt(netnsPath, Here);
    }
}
