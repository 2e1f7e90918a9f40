using System.Net;
using Forensics.Datapath.Control;
using Forensics.Datapath.Lab;
using Forensics.Runtime;

namespace Forensics.Datapath.Tests;

public class CgroupPathTests
{
    private const string Id = "3d458f022b445a9543b17c3d6dde45a4153f1d6178747948c6cc4a62a7ca9eb0";

    [Theory]
    [InlineData("/k8s.io/" + Id, Id, null)]
    [InlineData("/kubepods/burstable/pod0d6b0a4e-7a66-4a4a-9d1b-6c1f3b1e2a10/" + Id, Id, "0d6b0a4e-7a66-4a4a-9d1b-6c1f3b1e2a10")]
    [InlineData("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0d6b0a4e_7a66_4a4a_9d1b_6c1f3b1e2a10.slice/cri-containerd-" + Id + ".scope", Id, "0d6b0a4e-7a66-4a4a-9d1b-6c1f3b1e2a10")]
    [InlineData("/kubepods.slice/kubepods-pod0d6b0a4e_7a66_4a4a_9d1b_6c1f3b1e2a10.slice/crio-" + Id + ".scope", Id, "0d6b0a4e-7a66-4a4a-9d1b-6c1f3b1e2a10")]
    [InlineData("/system.slice/docker-" + Id + ".scope", Id, null)]
    [InlineData("/kubepods.slice/kubepods-pod0d6b0a4e_7a66_4a4a_9d1b_6c1f3b1e2a10.slice/crio-conmon-" + Id + ".scope", null, "0d6b0a4e-7a66-4a4a-9d1b-6c1f3b1e2a10")]
    [InlineData("/user.slice/user-0.slice/session-1.scope", null, null)]
    [InlineData("/", null, null)]
    public void CgroupPaths_Layouts_ContainerIdAndPodUid(string path, string? id, string? uid)
    {
        var o = CgroupPaths.Parse(path);
        Assert.Equal(id, o.ContainerId);
        Assert.Equal(uid, o.PodUid);
    }

    [Fact]
    public void CriClient_VerboseInfo_NetnsPathAndPid()
    {
        var info = new Dictionary<string, string>
        {
            ["info"] = """{"pid":4242,"runtimeSpec":{"linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/var/run/netns/cni-1234"}]}}}""",
        };
        Assert.Equal(("/var/run/netns/cni-1234", 4242), CriClient.NetnsOf(info));
        Assert.Equal((null, 0), CriClient.NetnsOf(new Dictionary<string, string> { ["info"] = "not json" }));
        Assert.Equal((null, 0), CriClient.NetnsOf(new Dictionary<string, string>()));
    }

    [Theory]
    [InlineData("unix:///run/containerd/containerd.sock", "/run/containerd/containerd.sock")]
    [InlineData("/var/run/crio/crio.sock", "/var/run/crio/crio.sock")]
    public void CriClient_Endpoint_SocketPath(string endpoint, string path) => Assert.Equal(path, CriClient.SocketPathOf(endpoint));

    [Fact]
    public void CriClient_TcpEndpoint_OneLineError()
    {
        var e = Assert.Throws<RuntimeException>(() => CriClient.SocketPathOf("tcp://10.0.0.1:1234"));
        Assert.Contains("only unix sockets", e.Message, StringComparison.Ordinal);
    }
}

public class KubeProxyRulesTests
{
    [Fact]
    public void KubeProxyRules_ChainNames_AreKubeProxysHashes()
    {
        // kube-proxy's own test data (pkg/proxy/iptables/proxier_test.go): ns1/svc1:p80 over tcp, endpoint 10.180.0.1:80.
        var p = new KubeProxyRules.ServicePortRules("ns1/svc1:p80", "tcp", IPAddress.Parse("172.30.0.41"), 80, ["10.180.0.1:80"]);
        Assert.Equal("KUBE-SVC-XPGD46QRK7WJZT7O", p.SvcChain);
        Assert.Equal("KUBE-SEP-SXIVWICOYRO3J4NJ", p.SepChain("10.180.0.1:80"));
    }

    [Fact]
    public void KubeProxyRules_ThreeEndpointsAndOneWithout_StatisticRandomAndReject()
    {
        var ports = new[]
        {
            new KubeProxyRules.ServicePortRules("shop/cart:http", "tcp", IPAddress.Parse("10.0.1.10"), 80, ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]),
            new KubeProxyRules.ServicePortRules("shop/empty", "udp", IPAddress.Parse("10.0.1.11"), 53, []),
        };
        var text = KubeProxyRules.Render(ports, IPNetwork.Parse("10.0.0.0/24"));
        var svc = ports[0].SvcChain;
        Assert.Contains($"-A KUBE-SERVICES -m comment --comment \"shop/cart:http cluster IP\" -m tcp -p tcp -d 10.0.1.10 --dport 80 -j {svc}\n", text, StringComparison.Ordinal);
        Assert.Contains($"-A {svc} -m comment --comment \"shop/cart:http cluster IP\" -m tcp -p tcp -d 10.0.1.10 --dport 80 ! -s 10.0.0.0/24 -j KUBE-MARK-MASQ\n", text, StringComparison.Ordinal);
        Assert.Contains($"-A {svc} -m comment --comment \"shop/cart:http -> 10.0.0.1:8080\" -m statistic --mode random --probability 0.3333333333 -j {ports[0].SepChain("10.0.0.1:8080")}\n", text, StringComparison.Ordinal);
        Assert.Contains($"-A {svc} -m comment --comment \"shop/cart:http -> 10.0.0.2:8080\" -m statistic --mode random --probability 0.5000000000 -j {ports[0].SepChain("10.0.0.2:8080")}\n", text, StringComparison.Ordinal);
        Assert.Contains($"-A {svc} -m comment --comment \"shop/cart:http -> 10.0.0.3:8080\" -j {ports[0].SepChain("10.0.0.3:8080")}\n", text, StringComparison.Ordinal);
        Assert.Contains($"-A {ports[0].SepChain("10.0.0.2:8080")} -m comment --comment shop/cart:http -m tcp -p tcp -j DNAT --to-destination 10.0.0.2:8080\n", text, StringComparison.Ordinal);
        Assert.Contains("-A KUBE-SERVICES -m comment --comment \"shop/empty has no endpoints\" -m udp -p udp -d 10.0.1.11 --dport 53 -j REJECT\n", text, StringComparison.Ordinal);
        Assert.DoesNotContain(ports[1].SvcChain, text, StringComparison.Ordinal);
        Assert.Contains("-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n", text, StringComparison.Ordinal);
    }

    [Fact]
    public void KubeProxyRules_ServicePorts_EndpointsFromSelectorInNamespace()
    {
        var file = Path.Combine(Path.GetTempPath(), $"kp-{Guid.NewGuid():N}.yaml");
        File.WriteAllText(file, """
            apiVersion: v1
            kind: Pod
            metadata: {name: a, namespace: shop, labels: {app: cart}}
            status: {podIP: 10.0.0.5}
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: b, labels: {app: cart}}
            status: {podIP: 10.0.0.6}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: cart, namespace: shop}
            spec:
              clusterIP: 10.0.1.10
              selector: {app: cart}
              ports: [{port: 80, targetPort: 8080, name: http}]
            """);
        try
        {
            var c = ClusterLoader.LoadFile(file);
            var p = Assert.Single(KubeProxyRules.ServicePorts(c, x => x.Ip));
            Assert.Equal("shop/cart:http", p.PortName);
            Assert.Equal(["10.0.0.5:8080"], p.Endpoints); // b is in another namespace
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public void ContainerdNode_Gateway_IsTheLastUsableAddress() =>
        Assert.Equal(IPAddress.Parse("10.0.0.254"), ContainerdNode.Gateway(IPNetwork.Parse("10.0.0.0/24")));

    [Theory]
    [InlineData("frontend:1", "docker.io/library/frontend:1")]
    [InlineData("docker.io/cilium/starwars", "docker.io/cilium/starwars:latest")]
    [InlineData("cilium/starwars:v2", "docker.io/cilium/starwars:v2")]
    [InlineData("quay.io/x/y:1", "quay.io/x/y:1")]
    [InlineData("localhost:5000/x", "localhost:5000/x:latest")]
    public void ContainerdNode_ImageNames_NormalizedAsCri(string image, string expected) => Assert.Equal(expected, ContainerdNode.Normalize(image));
}
