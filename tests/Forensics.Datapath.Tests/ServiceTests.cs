using Forensics.Datapath.Control;
using Forensics.Tests;

namespace Forensics.Datapath.Tests;

/// <summary>Services as Kubernetes defines them: types, addresses, node ports, affinity, endpoints of services without a selector.</summary>
public class ServiceTests
{
    private const string Lab = """
        apiVersion: forensics.dev/v1
        kind: Lab
        metadata: {name: svc}
        spec:
          podCIDR: 10.0.0.0/24
          serviceCIDR: 10.0.1.0/24
          nodeIP: 192.0.2.1
          loadBalancerPool: 203.0.113.128/28
        """;

    private static ClusterSpec Load(params string[] docs) => ClusterLoader.Load(string.Join("\n---\n", docs.Prepend(Lab)), "s.yaml");

    private static string Error(params string[] docs)
    {
        var e = Assert.Throws<ClusterSpecException>(() => Load(docs));
        Assert.DoesNotContain('\n', e.Message);
        return e.Message;
    }

    private static string Svc(string name, string spec) => $"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n{spec}";

    [Fact]
    public void Load_NodePortAndLoadBalancer_NodePortsAllocatedAndPoolAddressTaken()
    {
        var c = Load(
            Svc("np", "  type: NodePort\n  selector: {app: a}\n  ports: [{port: 80, nodePort: 30000}, {port: 81, name: b}]\n".Replace("{port: 80,", "{name: a, port: 80,", StringComparison.Ordinal)),
            Svc("lb", "  type: LoadBalancer\n  selector: {app: a}\n  ports: [{port: 443}]\n"),
            Svc("lb-given", "  type: LoadBalancer\n  selector: {app: a}\n  ports: [{port: 443}]\nstatus: {loadBalancer: {ingress: [{ip: 198.51.100.77}]}}\n"));

        var np = c.Services.Single(s => s.Name == "np");
        Assert.Equal([30000, 30001], np.Ports.Select(p => p.NodePort));
        Assert.NotNull(np.ClusterIp);
        var lb = c.Services.Single(s => s.Name == "lb");
        Assert.Equal("203.0.113.129", Assert.Single(lb.LoadBalancerIps).ToString());
        Assert.Equal(30002, lb.Ports.Single().NodePort);
        Assert.Equal("198.51.100.77", Assert.Single(c.Services.Single(s => s.Name == "lb-given").LoadBalancerIps).ToString());
    }

    [Fact]
    public void Load_HeadlessExternalNameAffinityExternalIps_KeptAsKubernetesDefinesThem()
    {
        var c = Load(
            Svc("headless", "  clusterIP: None\n  selector: {app: a}\n  ports: [{port: 80}]\n"),
            Svc("ext", "  type: ExternalName\n  externalName: db.example.com\n"),
            Svc("sticky", "  selector: {app: a}\n  sessionAffinity: ClientIP\n  externalIPs: [198.51.100.5]\n  ports: [{port: 80}]\n"),
            Svc("sticky-short", "  selector: {app: a}\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n  ports: [{port: 80}]\n"));

        Assert.Null(c.Services.Single(s => s.Name == "headless").ClusterIp);
        var ext = c.Services.Single(s => s.Name == "ext");
        Assert.Equal(("ExternalName", "db.example.com", (System.Net.IPAddress?)null), (ext.Type, ext.ExternalName, ext.ClusterIp));
        var sticky = c.Services.Single(s => s.Name == "sticky");
        Assert.Equal(10800, sticky.AffinityTimeoutSeconds);
        Assert.Equal("198.51.100.5", Assert.Single(sticky.ExternalIps).ToString());
        Assert.Equal(60, c.Services.Single(s => s.Name == "sticky-short").AffinityTimeoutSeconds);
    }

    [Fact]
    public void Load_ServiceWithoutSelectorAndEndpoints_BackendsAreTheEndpointAddresses()
    {
        var c = Load(
            Svc("outside", "  ports: [{name: https, port: 443}]\n"),
            "apiVersion: v1\nkind: Endpoints\nmetadata: {name: outside}\nsubsets: [{addresses: [{ip: 198.51.100.10}], ports: [{name: https, port: 8443}]}]\n",
            Svc("sliced", "  ports: [{port: 53, protocol: UDP}]\n"),
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: sliced-x1, labels: {kubernetes.io/service-name: sliced}}\naddressType: IPv4\nendpoints: [{addresses: [198.51.100.53]}]\nports: [{port: 53, protocol: UDP}]\n");

        var outside = c.Services.Single(s => s.Name == "outside");
        Assert.Equal("198.51.100.10", Assert.Single(outside.Endpoints).ToString());
        Assert.Equal(8443, outside.EndpointPorts["https"]);
        Assert.Equal("198.51.100.53", Assert.Single(c.Services.Single(s => s.Name == "sliced").Endpoints).ToString());
    }

    [Theory]
    [InlineData("  type: NodePort\n  selector: {app: a}\n  ports: [{port: 80, nodePort: 80}]\n", "nodePort: 80 is out of range for a node port (30000-32767)")]
    [InlineData("  clusterIP: fd00::10\n  ports: [{port: 80}]\n", "not supported: an IPv6 clusterIP")]
    [InlineData("  ipFamilies: [IPv6]\n  ports: [{port: 80}]\n", "not supported: ipFamilies IPv6")]
    [InlineData("  ipFamilyPolicy: RequireDualStack\n  ports: [{port: 80}]\n", "this cluster is not configured for dual-stack services")]
    [InlineData("  ports: [{port: 80, protocol: SCTP}]\n", "not supported: protocol SCTP")]
    [InlineData("  type: Magic\n  ports: [{port: 80}]\n", "Unsupported value: \"Magic\"")]
    [InlineData("  ports: [{port: 80}, {port: 81, name: b}]\n", "ports[0]: name: Required value")]
    [InlineData("  type: NodePort\n  clusterIP: None\n  ports: [{port: 80}]\n", "cannot be headless")]
    [InlineData("  sessionAffinity: Cookie\n  ports: [{port: 80}]\n", "Unsupported value: \"Cookie\"")]
    public void Load_ServiceKubernetesRefusesOrNotModelled_OneLineError(string spec, string expected) =>
        Assert.Contains(expected, Error(Svc("s", spec)), StringComparison.Ordinal);

    [Fact]
    public void Load_LoadBalancerWithoutPool_PendingAndSaidOnce()
    {
        var c = ClusterLoader.Load(CiliumFiles.Lab + "\n---\n" + Svc("lb", "  type: LoadBalancer\n  ports: [{port: 80}]\n"), "s.yaml");

        Assert.Empty(c.Services.Single().LoadBalancerIps);
        Assert.Contains("pending, as in a cluster without a load balancer controller", Assert.Single(c.Notices), StringComparison.Ordinal);
    }
}
