using System.Net;
using Forensics.Datapath.Cluster;

namespace Forensics.Datapath.Tests;

/// <summary>Service names and cluster ranges from kube-proxy's rules and a kubectl services file (testdata/kube-proxy/README.md).</summary>
public sealed class ClusterInputTests
{
    private static string Text(string file) => File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "testdata", "kube-proxy", file));

    private static ServiceFrontend One(ClusterServices c, string ip, int port, string proto) =>
        Assert.Single(c.Services, s => s.Ip.Equals(IPAddress.Parse(ip)) && s.Port == port && s.Protocol == proto);

    private static string[] Eps(ServiceFrontend s) => [.. s.Endpoints.Select(e => $"{e.Ip}:{e.Port}").Order(StringComparer.Ordinal)];

    [Fact]
    public void IptablesSave_KubeProxyRules_ServicePortsWithEndpointsAndClusterCidr()
    {
        var c = KubeProxyRuleReader.ParseIptablesSave(Text("iptables-save.txt"));
        Assert.Equal(3, c.Services.Count);
        var api = One(c, "10.96.0.1", 443, "tcp");
        Assert.Equal(("default", "kubernetes", "https", "default/kubernetes:https"), (api.Namespace, api.Name, api.PortName, api.ServicePortName));
        Assert.Equal(["172.18.0.2:6443"], Eps(api));
        Assert.Equal("iptables", api.Source);
        var dns = One(c, "10.96.0.10", 53, "udp");
        Assert.Equal("kube-system/kube-dns:dns", dns.ServicePortName);
        Assert.Equal(["10.244.0.2:53", "10.244.0.3:53"], Eps(dns));
        Assert.Equal(["10.244.0.2:53"], Eps(One(c, "10.96.0.10", 53, "tcp")));
        Assert.Equal([IPNetwork.Parse("10.244.0.0/16")], c.PodCidrs);
        // the REJECT of a service without endpoints is in the filter table: not a translation
        Assert.DoesNotContain(c.Services, s => s.Ip.Equals(IPAddress.Parse("10.96.0.20")));
    }

    [Fact]
    public void IptablesSave_PlainDnatWithServiceComment_IsAServicePort()
    {
        const string text = """
            *nat
            :PREROUTING ACCEPT [0:0]
            -A PREROUTING -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -m comment --comment "default/web:http" -j DNAT --to-destination 10.244.2.2:8080
            -A PREROUTING -d 10.96.0.11/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.244.2.3:8080
            -A POSTROUTING -o eth0 -j MASQUERADE
            COMMIT
            """;
        var c = KubeProxyRuleReader.ParseIptablesSave(text);
        var web = Assert.Single(c.Services);
        Assert.Equal(("default/web:http", "10.96.0.10", 80), (web.ServicePortName, web.Ip.ToString(), web.Port));
        Assert.Equal(["10.244.2.2:8080"], Eps(web));
    }

    [Fact]
    public void NftListRuleset_KubeProxyNftablesMode_ServicePortsWithEndpointsAndClusterCidr()
    {
        var c = KubeProxyRuleReader.ParseNftRuleset(Text("nft-list-ruleset.txt"));
        Assert.Equal(2, c.Services.Count);
        var api = One(c, "10.96.0.1", 443, "tcp");
        Assert.Equal("default/kubernetes:https", api.ServicePortName);
        Assert.Equal(["172.18.0.2:6443"], Eps(api));
        Assert.Equal("nftables", api.Source);
        var dns = One(c, "10.96.0.10", 53, "udp");
        Assert.Equal("kube-system/kube-dns:dns", dns.ServicePortName);
        Assert.Equal(["10.244.0.2:53", "10.244.0.3:53"], Eps(dns));
        Assert.Equal([IPNetwork.Parse("10.244.0.0/16")], c.PodCidrs);
    }

    [Fact]
    public void NftListRuleset_CommentedDnatRule_IsAServicePort()
    {
        const string text = """
            table ip fxct {
            	chain pre {
            		type nat hook prerouting priority dstnat; policy accept;
            		ip daddr 10.96.0.10 tcp dport 80 dnat to 10.244.2.2:8080 comment "default/web:http"
            	}
            }
            """;
        var web = Assert.Single(KubeProxyRuleReader.ParseNftRuleset(text).Services);
        Assert.Equal(("default/web:http", "10.96.0.10", 80, "tcp"), (web.ServicePortName, web.Ip.ToString(), web.Port, web.Protocol));
        Assert.Equal(["10.244.2.2:8080"], Eps(web));
    }

    [Fact]
    public void ServicesFile_KubectlList_PortsBackendsAndPods()
    {
        var c = ServicesFile.Read(Path.Combine(AppContext.BaseDirectory, "testdata", "kube-proxy", "services.json"));
        Assert.Equal(4, c.Services.Count); // kube-dns x3, deathstar; the headless service has no address
        var dns = One(c, "10.96.0.10", 53, "udp");
        Assert.Equal(("kube-system/kube-dns:dns", "services-file"), (dns.ServicePortName, dns.Source));
        Assert.Equal(["10.244.0.2:53", "10.244.0.3:53"], Eps(dns)); // not the terminating one
        Assert.Contains(dns.Endpoints, e => e.Pod == "coredns-7db6d8ff4d-8xk2p" && e.PodNamespace == "kube-system");
        Assert.Equal(["10.244.0.2:9153", "10.244.0.3:9153"], Eps(One(c, "10.96.0.10", 9153, "tcp")));
        var ds = One(c, "10.96.0.50", 80, "tcp");
        Assert.Equal("default/deathstar", ds.ServicePortName);
        Assert.Equal("deathstar-6fb5694d48-5hmds", Assert.Single(ds.Endpoints).Pod);
    }

    [Theory]
    [InlineData("not json")]
    [InlineData("[1, 2]")]
    [InlineData("{\"items\": [{\"kind\": \"Service\", \"spec\": {\"clusterIP\": \"10.0.0.1\", \"ports\": [{\"port\": 1}]}}]}")]
    public void ServicesFile_Malformed_OneLineError(string content)
    {
        var path = Path.GetTempFileName();
        try
        {
            File.WriteAllText(path, content);
            var e = Assert.Throws<ClusterInputException>(() => ServicesFile.Read(path));
            Assert.DoesNotContain('\n', e.Message);
            Assert.Contains(path, e.Message, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(path);
        }
    }
}

public sealed class CniConfigTests
{
    [Fact]
    public void CniConfigCidrs_BridgeConflistWithRanges_GivesEverySubnet()
    {
        var json = """
            {
              "cniVersion": "1.0.0",
              "name": "containerd-net",
              "plugins": [
                { "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
                  "ipam": { "type": "host-local", "ranges": [ [ { "subnet": "10.88.0.0/16" } ], [ { "subnet": "2001:db8:4860::/64" } ] ],
                            "routes": [ { "dst": "0.0.0.0/0" } ] } },
                { "type": "portmap", "capabilities": { "portMappings": true } }
              ]
            }
            """u8;
        Assert.Equal([IPNetwork.Parse("10.88.0.0/16"), IPNetwork.Parse("2001:db8:4860::/64")], Cluster.NodeRanges.CniConfigCidrs(json));
    }

    [Fact]
    public void CniConfigCidrs_SingleConfWithSubnetAndFlannelDelegate()
    {
        Assert.Equal([IPNetwork.Parse("10.244.1.0/24")],
            Cluster.NodeRanges.CniConfigCidrs("""{ "type": "bridge", "ipam": { "type": "host-local", "subnet": "10.244.1.0/24" } }"""u8));
        Assert.Equal([IPNetwork.Parse("10.244.2.0/24")],
            Cluster.NodeRanges.CniConfigCidrs("""{ "type": "flannel", "delegate": { "ipam": { "subnet": "10.244.2.0/24" } } }"""u8));
        Assert.Empty(Cluster.NodeRanges.CniConfigCidrs("""{ "plugins": [ { "type": "calico", "ipam": { "type": "calico-ipam" } } ] }"""u8));
    }

    [Fact]
    public void CniPodCidrs_Directory_NamesTheFileEachCameFromAndSkipsBadOnes()
    {
        var dir = Directory.CreateTempSubdirectory("fx-cni-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, "10-bridge.conflist"), """{ "plugins": [ { "type": "bridge", "ipam": { "subnet": "10.244.0.0/24" } } ] }""");
            File.WriteAllText(Path.Combine(dir, "20-broken.conf"), "{ not json");
            File.WriteAllText(Path.Combine(dir, "README"), "10.0.0.0/8");
            var env = Path.Combine(dir, "subnet.env");
            File.WriteAllText(env, "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.0.1/24\n");
            var ranges = Cluster.NodeRanges.CniPodCidrs(dir, env);
            Assert.Equal(2, ranges.Count);
            Assert.Equal(("10.244.0.0/24", "cni:" + Path.Combine(dir, "10-bridge.conflist")), (ranges[0].Cidr.ToString(), ranges[0].Source));
            Assert.Equal(("10.244.0.0/16", "flannel:" + env), (ranges[1].Cidr.ToString(), ranges[1].Source));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
