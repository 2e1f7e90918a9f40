using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using Forensics.Datapath.Control;

namespace Forensics.Datapath.Lab;

/// <summary>
/// A cluster's Services rendered as kube-proxy's iptables mode renders them
/// (pkg/proxy/iptables/proxier.go): the jump rules from the built-in chains,
/// KUBE-SERVICES matching each cluster IP and port ("ns/svc:port cluster IP"),
/// one KUBE-SVC-* chain per service port that marks traffic from outside the pod
/// CIDR for masquerade and picks an endpoint with <c>-m statistic --mode random
/// --probability 1/n</c>, one KUBE-SEP-* chain per endpoint that DNATs to it,
/// KUBE-POSTROUTING masquerading marked traffic, and, for a service port without
/// endpoints, a REJECT in the filter table's KUBE-SERVICES ("... has no endpoints").
/// Chain names are kube-proxy's: the first 16 base32 characters of the SHA-256 of
/// the service port name and protocol (and endpoint). Text for <c>iptables-restore --noflush</c>.
/// </summary>
public static class KubeProxyRules
{
    public const string MasqueradeMark = "0x4000";

    /// <summary>One service port's endpoints as kube-proxy would see them (ready pods matching the selector).</summary>
    public sealed record ServicePortRules(string PortName, string Protocol, IPAddress ClusterIp, int Port, IReadOnlyList<string> Endpoints)
    {
        public string SvcChain => "KUBE-SVC-" + Hash(PortName + Protocol);

        public string SepChain(string endpoint) => "KUBE-SEP-" + Hash(PortName + Protocol + endpoint);
    }

    /// <summary>The service ports of a cluster with their endpoints ("ip:port"), in document order.</summary>
    public static IReadOnlyList<ServicePortRules> ServicePorts(ClusterSpec cluster, Func<PodSpec, IPAddress?> podIp)
    {
        ArgumentNullException.ThrowIfNull(cluster);
        ArgumentNullException.ThrowIfNull(podIp);
        var list = new List<ServicePortRules>();
        // kube-proxy makes no rules for a headless or an ExternalName service (no cluster IP)
        foreach (var svc in cluster.Services.Where(s => s.ClusterIp is not null))
        {
            var backends = svc.Selector.Count == 0 ? [] : cluster.Pods
                .Where(p => p.Namespace == svc.Namespace && svc.Selector.All(kv => p.Labels.TryGetValue(kv.Key, out var v) && v == kv.Value))
                .Where(p => podIp(p) is not null).ToList();
            foreach (var port in svc.Ports)
            {
                var name = $"{svc.Namespace}/{svc.Name}" + (string.IsNullOrEmpty(port.Name) ? "" : ":" + port.Name);
                // A named targetPort resolves per backend (a backend without that port is no endpoint), as Kubernetes' endpoints do.
                var eps = backends
                    .Select(p => (Ip: podIp(p)!, Port: port.TargetName is { } tn ? (p.NamedPorts.TryGetValue(tn, out var pp) ? pp.Port : 0) : port.TargetPort))
                    .Where(e => e.Port > 0)
                    .Select(e => $"{e.Ip}:{e.Port.ToString(CultureInfo.InvariantCulture)}")
                    // a service without a selector: the addresses and port of its Endpoints document
                    .Concat(svc.Selector.Count > 0 || !svc.EndpointPorts.TryGetValue(port.Name ?? "", out var epPort) ? []
                        : svc.Endpoints.Select(ip => $"{ip}:{epPort.ToString(CultureInfo.InvariantCulture)}"))
                    .Order(StringComparer.Ordinal).ToList();
                list.Add(new ServicePortRules(name, port.Protocol.ToLowerInvariant(), svc.ClusterIp!, port.Port, eps));
            }
        }
        return list;
    }

    /// <summary>The iptables-restore text (filter and nat tables) for these service ports; <paramref name="clusterCidr"/> is kube-proxy's --cluster-cidr.</summary>
    public static string Render(IReadOnlyList<ServicePortRules> ports, IPNetwork clusterCidr)
    {
        ArgumentNullException.ThrowIfNull(ports);
        var inv = CultureInfo.InvariantCulture;
        var f = new StringBuilder();
        f.Append("*filter\n");
        foreach (var c in new[] { "KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL" })
            f.Append(inv, $":{c} - [0:0]\n");
        // The jumps kube-proxy ensures in the built-in chains (prepended).
        f.Append("-I INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n");
        f.Append("-I INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS\n");
        f.Append("-I INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n");
        f.Append("-I FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n");
        f.Append("-I FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
        f.Append("-I FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n");
        f.Append("-I FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n");
        f.Append("-I OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
        f.Append("-I OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n");
        foreach (var p in ports.Where(p => p.Endpoints.Count == 0))
            f.Append(inv, $"-A KUBE-SERVICES -m comment --comment \"{p.PortName} has no endpoints\" -m {p.Protocol} -p {p.Protocol} -d {p.ClusterIp} --dport {p.Port} -j REJECT\n");
        f.Append("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n");
        f.Append(inv, $"-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MasqueradeMark}/{MasqueradeMark} -j ACCEPT\n");
        f.Append("-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n");
        f.Append("COMMIT\n");

        f.Append("*nat\n");
        foreach (var c in new[] { "KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ" })
            f.Append(inv, $":{c} - [0:0]\n");
        foreach (var p in ports.Where(p => p.Endpoints.Count > 0))
        {
            f.Append(inv, $":{p.SvcChain} - [0:0]\n");
            foreach (var ep in p.Endpoints)
                f.Append(inv, $":{p.SepChain(ep)} - [0:0]\n");
        }
        f.Append("-I PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
        f.Append("-I OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
        f.Append("-I POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n");
        f.Append(inv, $"-A KUBE-POSTROUTING -m mark ! --mark {MasqueradeMark}/{MasqueradeMark} -j RETURN\n");
        f.Append(inv, $"-A KUBE-POSTROUTING -j MARK --xor-mark {MasqueradeMark}\n");
        f.Append("-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n");
        f.Append(inv, $"-A KUBE-MARK-MASQ -j MARK --or-mark {MasqueradeMark}\n");
        foreach (var p in ports.Where(p => p.Endpoints.Count > 0))
        {
            var match = $"-m {p.Protocol} -p {p.Protocol} -d {p.ClusterIp} --dport {p.Port.ToString(inv)}";
            f.Append(inv, $"-A KUBE-SERVICES -m comment --comment \"{p.PortName} cluster IP\" {match} -j {p.SvcChain}\n");
            f.Append(inv, $"-A {p.SvcChain} -m comment --comment \"{p.PortName} cluster IP\" {match} ! -s {clusterCidr} -j KUBE-MARK-MASQ\n");
            for (int i = 0; i < p.Endpoints.Count; i++)
            {
                var ep = p.Endpoints[i];
                var stat = i < p.Endpoints.Count - 1
                    ? $" -m statistic --mode random --probability {Probability(p.Endpoints.Count - i)}"
                    : "";
                f.Append(inv, $"-A {p.SvcChain} -m comment --comment \"{p.PortName} -> {ep}\"{stat} -j {p.SepChain(ep)}\n");
            }
            foreach (var ep in p.Endpoints)
            {
                var sep = p.SepChain(ep);
                f.Append(inv, $"-A {sep} -m comment --comment {p.PortName} -s {ep[..ep.LastIndexOf(':')]} -j KUBE-MARK-MASQ\n");
                f.Append(inv, $"-A {sep} -m comment --comment {p.PortName} -m {p.Protocol} -p {p.Protocol} -j DNAT --to-destination {ep}\n");
            }
        }
        f.Append("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n");
        f.Append("COMMIT\n");
        return f.ToString();
    }

    /// <summary>kube-proxy's probability of picking the first of n remaining endpoints: 1/n with ten decimals.</summary>
    public static string Probability(int n) => (1.0 / n).ToString("F10", CultureInfo.InvariantCulture);

    /// <summary>kube-proxy's chain hash: base32 (RFC 4648, padded alphabet) of SHA-256, first 16 characters.</summary>
    public static string Hash(string text)
    {
        const string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes(text));
        var sb = new StringBuilder(16);
        int buffer = 0, bits = 0;
        foreach (var b in hash)
        {
            buffer = (buffer << 8) | b;
            bits += 8;
            while (bits >= 5 && sb.Length < 16)
            {
                sb.Append(alphabet[(buffer >> (bits - 5)) & 31]);
                bits -= 5;
            }
            if (sb.Length == 16)
                break;
        }
        return sb.ToString();
    }
}
