using System.Globalization;
using System.Net;
using System.Text;
using System.Text.RegularExpressions;

namespace Forensics.Datapath.Cluster;

/// <summary>
/// Reads kube-proxy's rules back into service ports: iptables mode from <c>iptables-save</c>
/// text (KUBE-SERVICES rules commented "ns/svc:port cluster IP", KUBE-SVC-* chains jumping to
/// KUBE-SEP-* chains that DNAT to the endpoints), nftables mode from <c>nft list ruleset</c>
/// text (the service-ips map's "IP . proto . port : goto service-HASH-ns/svc/proto/port"
/// elements and the endpoint-HASH-ns/svc/proto/port__IP/PORT chains' "dnat to"). A plain DNAT
/// rule with a "ns/svc:port" comment counts as a service port too. Also the pod CIDR kube-proxy
/// was given (--cluster-cidr: the "! -s CIDR ... KUBE-MARK-MASQ" / "ip saddr != CIDR jump
/// mark-for-masquerade" rules). Pure text parsing.
/// </summary>
public static partial class KubeProxyRuleReader
{
    /// <summary>Service ports in <c>iptables-save</c> output (every table; only nat matters).</summary>
    public static ClusterServices ParseIptablesSave(string text, string source = "iptables")
    {
        ArgumentNullException.ThrowIfNull(text);
        var rules = new List<IptablesRule>();
        string table = "";
        foreach (var raw in text.Split('\n'))
        {
            var line = raw.Trim();
            if (line.StartsWith('*'))
                table = line[1..];
            else if (table == "nat" && line.StartsWith("-A ", StringComparison.Ordinal))
                rules.Add(IptablesRule.Parse(line));
        }
        var byChain = rules.GroupBy(r => r.Chain).ToDictionary(g => g.Key, g => g.ToList(), StringComparer.Ordinal);
        List<ServiceEndpoint> EndpointsOf(string chain, int depth = 0)
        {
            var eps = new List<ServiceEndpoint>();
            if (depth > 4 || !byChain.TryGetValue(chain, out var list))
                return eps;
            foreach (var r in list)
            {
                if (r.Target == "DNAT" && r.ToDestination is { } to && ParseHostPort(to) is { } ep)
                    eps.Add(ep);
                else if (r.Target is { } t && (t.StartsWith("KUBE-SEP-", StringComparison.Ordinal) || t.StartsWith("KUBE-SVC-", StringComparison.Ordinal)))
                    eps.AddRange(EndpointsOf(t, depth + 1));
            }
            return eps;
        }

        var services = new List<ServiceFrontend>();
        var podCidrs = new List<IPNetwork>();
        foreach (var r in rules)
        {
            if (r.Target == "KUBE-MARK-MASQ" && r.NotSource is { } ns && TryCidr(ns, out var podCidr) && !podCidrs.Contains(podCidr))
                podCidrs.Add(podCidr);
            if (r.Comment is null || r.Destination is null || r.DestinationPort is null || r.Target is null)
                continue;
            if (ServicePortComment().Match(r.Comment) is not { Success: true } m)
                continue;
            bool kubeProxy = r.Target.StartsWith("KUBE-SVC-", StringComparison.Ordinal) || r.Target.StartsWith("KUBE-EXT-", StringComparison.Ordinal)
                || r.Target.StartsWith("KUBE-FW-", StringComparison.Ordinal);
            if (!kubeProxy && r.Target != "DNAT")
                continue;
            if (!TryCidr(r.Destination, out var dst) || dst.PrefixLength != (dst.BaseAddress.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128))
                continue;
            var eps = r.Target == "DNAT" ? (r.ToDestination is { } to && ParseHostPort(to) is { } e ? [e] : []) : EndpointsOf(r.Target);
            var kind = m.Groups["kind"].Success && m.Groups["kind"].Value.Length > 0 ? m.Groups["kind"].Value : "cluster IP";
            services.Add(new ServiceFrontend(m.Groups["ns"].Value, m.Groups["svc"].Value, m.Groups["port"].Success ? m.Groups["port"].Value : "",
                dst.BaseAddress, r.DestinationPort.Value, (r.Protocol ?? "tcp").ToLowerInvariant(), eps, source, kind));
        }
        return new ClusterServices(Dedup(services), podCidrs);
    }

    /// <summary>Service ports in <c>nft list ruleset</c> output (kube-proxy's nftables mode, or rules with "ns/svc:port" comments).</summary>
    public static ClusterServices ParseNftRuleset(string text, string source = "nftables")
    {
        ArgumentNullException.ThrowIfNull(text);
        // endpoint chains: endpoint-HASH-ns/svc/proto/port__IP/PORT, each with a "dnat to IP:PORT"
        var endpoints = new Dictionary<string, List<ServiceEndpoint>>(StringComparer.Ordinal);
        foreach (Match m in NftEndpointChain().Matches(text))
        {
            var key = m.Groups["spn"].Value;
            if (!endpoints.TryGetValue(key, out var list))
                endpoints[key] = list = [];
            if (IPAddress.TryParse(m.Groups["ip"].Value, out var ip) && int.TryParse(m.Groups["port"].Value, CultureInfo.InvariantCulture, out var port)
                && !list.Any(e => e.Ip.Equals(ip) && e.Port == port))
                list.Add(new ServiceEndpoint(ip, port));
        }
        var services = new List<ServiceFrontend>();
        foreach (Match m in NftServiceElement().Matches(text))
        {
            if (!IPAddress.TryParse(m.Groups["ip"].Value, out var ip) || !int.TryParse(m.Groups["port"].Value, CultureInfo.InvariantCulture, out var port))
                continue;
            var spn = m.Groups["spn"].Value; // ns/svc/proto/portname
            var parts = spn.Split('/');
            if (parts.Length != 4)
                continue;
            var kind = m.Groups["chain"].Value == "external" ? "external IP" : "cluster IP";
            services.Add(new ServiceFrontend(parts[0], parts[1], parts[3], ip, port, m.Groups["proto"].Value, endpoints.GetValueOrDefault(spn) ?? [], source, kind));
        }
        // plain rules: ... daddr VIP tcp dport P ... dnat to IP:PORT ... comment "ns/svc:port"
        foreach (Match m in NftCommentedDnat().Matches(text))
        {
            if (ServicePortComment().Match(m.Groups["comment"].Value) is not { Success: true } c)
                continue;
            if (!IPAddress.TryParse(m.Groups["vip"].Value, out var vip) || !int.TryParse(m.Groups["dport"].Value, CultureInfo.InvariantCulture, out var dport))
                continue;
            var ep = ParseHostPort(m.Groups["to"].Value);
            services.Add(new ServiceFrontend(c.Groups["ns"].Value, c.Groups["svc"].Value, c.Groups["port"].Success ? c.Groups["port"].Value : "",
                vip, dport, m.Groups["proto"].Value, ep is null ? [] : [ep], source));
        }
        var podCidrs = new List<IPNetwork>();
        foreach (Match m in NftMasqueradeCidr().Matches(text))
            if (TryCidr(m.Groups["cidr"].Value, out var cidr) && !podCidrs.Contains(cidr))
                podCidrs.Add(cidr);
        return new ClusterServices(Dedup(services), podCidrs);
    }

    private static List<ServiceFrontend> Dedup(List<ServiceFrontend> services) =>
        services.GroupBy(s => (s.Ip, s.Port, s.Protocol, s.Kind))
            .Select(g => g.First() with { Endpoints = g.SelectMany(s => s.Endpoints).DistinctBy(e => (e.Ip, e.Port)).ToList() })
            .ToList();

    /// <summary>"10.0.0.1:80", "[fd00::1]:80", "fd00::1.80" (nft's IPv6 form) or "10.0.0.1" (port 0).</summary>
    internal static ServiceEndpoint? ParseHostPort(string text)
    {
        text = text.Trim().TrimEnd(',');
        if (text.StartsWith('['))
        {
            int close = text.IndexOf(']', StringComparison.Ordinal);
            if (close > 0 && IPAddress.TryParse(text[1..close], out var ip6))
                return new ServiceEndpoint(ip6, close + 2 < text.Length && int.TryParse(text[(close + 2)..], CultureInfo.InvariantCulture, out var p6) ? p6 : 0);
            return null;
        }
        int colon = text.LastIndexOf(':');
        if (colon > 0 && text.IndexOf(':', StringComparison.Ordinal) == colon && IPAddress.TryParse(text[..colon], out var ip4)
            && int.TryParse(text[(colon + 1)..].Split('-')[0], CultureInfo.InvariantCulture, out var port))
            return new ServiceEndpoint(ip4, port);
        return IPAddress.TryParse(text, out var bare) ? new ServiceEndpoint(bare, 0) : null;
    }

    private static bool TryCidr(string text, out IPNetwork cidr)
    {
        if (!text.Contains('/', StringComparison.Ordinal) && IPAddress.TryParse(text, out var a))
        {
            cidr = new IPNetwork(a, a.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128);
            return true;
        }
        return IPNetwork.TryParse(text, out cidr);
    }

    // "ns/svc:port cluster IP", "ns/svc cluster IP", "default/web:http" (a DNS-1123 namespace and name)
    [GeneratedRegex(@"^(?<ns>[a-z0-9]([-a-z0-9.]*[a-z0-9])?)/(?<svc>[a-z0-9]([-a-z0-9.]*[a-z0-9])?)(:(?<port>[^\s:]+))?(\s+(?<kind>cluster IP|external IP|loadbalancer IP|nodePort|health check node port))?(\s.*)?$")]
    private static partial Regex ServicePortComment();

    // elements of the service-ips map: "172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80"
    [GeneratedRegex(@"(?<ip>[0-9a-fA-F.:]+) \. (?<proto>tcp|udp|sctp) \. (?<port>\d+) : goto (?<chain>service|external)-[A-Z0-9]+-(?<spn>[^\s,}/]+/[^\s,}/]+/[^\s,}/]+/[^\s,}/]*)")]
    private static partial Regex NftServiceElement();

    // chain endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 { ... dnat to 10.180.0.1:80 }
    [GeneratedRegex(@"chain endpoint-[A-Z0-9]+-(?<spn>[^\s/]+/[^\s/]+/[^\s/]+/[^\s/_]*)__[^\s]+\s*\{[^}]*?dnat (ip |ip6 )?to (\[(?<ip>[0-9a-fA-F:]+)\]|(?<ip>\d+\.\d+\.\d+\.\d+)):(?<port>\d+)", RegexOptions.Singleline)]
    private static partial Regex NftEndpointChain();

    // ip daddr 10.96.0.10 tcp dport 80 dnat to 10.244.2.2:8080 comment "default/web:http"
    [GeneratedRegex(@"(ip|ip6) daddr (?<vip>[0-9a-fA-F.:]+) (?<proto>tcp|udp|sctp) dport (?<dport>\d+)[^\n]*? dnat (ip |ip6 )?to (?<to>\S+)[^\n]*? comment ""(?<comment>[^""]+)""")]
    private static partial Regex NftCommentedDnat();

    // ip saddr != 10.0.0.0/8 jump mark-for-masquerade
    [GeneratedRegex(@"(ip|ip6) saddr != (?<cidr>[0-9a-fA-F.:]+/\d+) jump mark-for-masquerade")]
    private static partial Regex NftMasqueradeCidr();

    /// <summary>One "-A CHAIN ..." line of iptables-save, the options that matter here.</summary>
    private sealed record IptablesRule(string Chain, string? Destination, string? NotSource, string? Protocol, int? DestinationPort, string? Comment, string? Target, string? ToDestination)
    {
        public static IptablesRule Parse(string line)
        {
            var t = Tokens(line);
            string chain = t.Count > 1 ? t[1] : "";
            string? dst = null, notSrc = null, proto = null, comment = null, target = null, to = null;
            int? dport = null;
            for (int i = 2; i < t.Count; i++)
            {
                bool negated = t[i] == "!" && i + 1 < t.Count;
                if (negated)
                    i++;
                string opt = t[i];
                string? arg = i + 1 < t.Count ? t[i + 1] : null;
                switch (opt)
                {
                    case "-d" or "--destination" when !negated: dst = arg; i++; break;
                    case "-s" or "--source" when negated: notSrc = arg; i++; break;
                    case "-p" or "--protocol" when !negated: proto = arg; i++; break;
                    case "--dport" or "--destination-port" when !negated:
                        if (int.TryParse(arg, CultureInfo.InvariantCulture, out var p))
                            dport = p;
                        i++;
                        break;
                    case "--comment": comment = arg; i++; break;
                    case "-j" or "--jump": target = arg; i++; break;
                    case "--to-destination": to = arg; i++; break;
                }
            }
            return new IptablesRule(chain, dst, notSrc, proto, dport, comment, target, to);
        }

        private static List<string> Tokens(string line)
        {
            var list = new List<string>();
            var sb = new StringBuilder();
            bool quoted = false, any = false;
            for (int i = 0; i < line.Length; i++)
            {
                char c = line[i];
                if (quoted)
                {
                    if (c == '\\' && i + 1 < line.Length) { sb.Append(line[++i]); continue; }
                    if (c == '"') { quoted = false; continue; }
                    sb.Append(c);
                }
                else if (c == '"') { quoted = true; any = true; }
                else if (c is ' ' or '\t')
                {
                    if (sb.Length > 0 || any)
                        list.Add(sb.ToString());
                    sb.Clear();
                    any = false;
                }
                else
                    sb.Append(c);
            }
            if (sb.Length > 0 || any)
                list.Add(sb.ToString());
            return list;
        }
    }
}
