using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;

namespace Forensics.Datapath.Control;

/// <summary>What every kind of document shares: object metadata, protocols, addresses and CIDRs, read strictly.</summary>
internal static partial class ObjectFields
{
    private static readonly string[] ObjectMetaFields =
    [
        "name", "namespace", "labels", "annotations", "uid", "resourceVersion", "generation", "creationTimestamp",
        "deletionTimestamp", "deletionGracePeriodSeconds", "finalizers", "generateName", "managedFields",
        "ownerReferences", "selfLink",
    ];

    [GeneratedRegex("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
    internal static partial Regex DnsName();

    internal static (string Name, string Namespace, Dictionary<string, string> Labels) Meta(Node root, bool namespaced = true)
    {
        var meta = root.Require("metadata").Strict(ObjectMetaFields);
        var nameNode = meta.Require("name");
        var name = nameNode.String();
        if (name.Length > 253 || !DnsName().IsMatch(name))
            throw nameNode.Error($"'{name}' is not a valid name (lowercase letters, digits, '-' and '.')");
        var ns = "default";
        if (meta.Get("namespace") is { } nsNode)
        {
            if (!namespaced)
                throw nsNode.Error("a Lab has no namespace");
            ns = nsNode.String();
            if (!DnsName().IsMatch(ns) || ns.Contains('.', StringComparison.Ordinal) || ns.Length > 63)
                throw nsNode.Error($"'{ns}' is not a valid namespace");
        }
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        if (meta.Get("labels") is { } l)
            foreach (var (k, v) in l.StringMap())
            {
                // Kubernetes' own limits (ClusterLimits): a 50 MB label value is refused, not compiled into identities.
                if (k.Length > ClusterLimits.Default.MaxLabelKey)
                    throw l.Error($"label key '{k[..40]}...' is {k.Length} characters, more than Kubernetes allows ({ClusterLimits.Default.MaxLabelKey})");
                if (v.Length > ClusterLimits.Default.MaxLabelValue)
                    throw l.Error($"label {k}: the value is {v.Length} characters, more than Kubernetes allows ({ClusterLimits.Default.MaxLabelValue})");
                labels[k] = v;
            }
        return (name, ns, labels);
    }

    internal static string Protocol(Node? n, string dflt, params string[] allowed)
    {
        if (n is null)
            return dflt;
        var p = n.Value.String().ToUpperInvariant();
        if (Array.IndexOf(allowed, p) < 0)
            throw n.Value.Error($"protocol '{n.Value.Scalar()}' is not supported ({string.Join(", ", allowed)})");
        return p;
    }

    internal static IPAddress Ipv4(Node n)
    {
        var s = n.String();
        if (!IPAddress.TryParse(s, out var ip) || ip.AddressFamily != AddressFamily.InterNetwork || s.Count(c => c == '.') != 3)
            throw n.Error($"'{s}' is not an IPv4 address");
        return ip;
    }

    internal static IPNetwork Cidr(Node n)
    {
        var s = n.String();
        if (!s.Contains('/', StringComparison.Ordinal) || !IPNetwork.TryParse(s, out var net)
            || net.BaseAddress.AddressFamily != AddressFamily.InterNetwork || net.ToString() != s)
            throw n.Error($"'{s}' is not an IPv4 CIDR (address/prefix, host bits zero)");
        return net;
    }
}
