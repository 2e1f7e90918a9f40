using Forensics.Datapath.Abi;
using Forensics.Datapath.Bpf;
using Forensics.Datapath.Control;
using Forensics.Tests;
using static Forensics.Kernel.Tests.DatapathHarness;

namespace Forensics.Kernel.Tests;

/// <summary>
/// Services beyond ClusterIP (issue 17), loaded from YAML and translated by the
/// real programs through BPF_PROG_TEST_RUN: a NodePort from a pod and from
/// outside (translated on the node's device, the reply translated back on its
/// way out), a load balancer address, ClientIP session affinity, and a service
/// without a selector whose Endpoints are outside the cluster. One datapath.
/// </summary>
public class ServiceDatapathTests
{
    private const string Yaml = """
        apiVersion: forensics.dev/v1
        kind: Lab
        metadata: {name: svcdp}
        spec:
          podCIDR: 10.0.0.0/24
          serviceCIDR: 10.0.1.0/24
          nodeIP: 192.0.2.1
          loadBalancerPool: 203.0.113.128/28
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: client, labels: {app: client}}
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec:
          replicas: 2
          selector: {matchLabels: {app: web}}
          template:
            metadata: {labels: {app: web}}
            spec:
              containers: [{name: web, image: busybox, ports: [{containerPort: 8080, name: http}]}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web-np}
        spec:
          type: NodePort
          selector: {app: web}
          ports: [{port: 80, targetPort: http, nodePort: 30080}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web-lb}
        spec:
          type: LoadBalancer
          selector: {app: web}
          ports: [{port: 443, targetPort: 8080}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web-sticky}
        spec:
          selector: {app: web}
          sessionAffinity: ClientIP
          ports: [{port: 80, targetPort: 8080}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web-spread}
        spec:
          selector: {app: web}
          ports: [{port: 80, targetPort: 8080}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: outside}
        spec:
          ports: [{name: https, port: 443}]
        ---
        apiVersion: v1
        kind: Endpoints
        metadata: {name: outside}
        subsets: [{addresses: [{ip: 198.51.100.10}], ports: [{name: https, port: 8443}]}]
        """;

    private static string Dst(TestRunResult r) => Pkt.Dst4(r.DataOut);

    [KernelFact]
    public void Services_NodePortLoadBalancerAffinityAndEndpoints_TranslatedAsKubeProxyReplacementDoes()
    {
        var c = ClusterLoader.Load(Yaml, "services.yaml");
        using var h = new DatapathHarness(c);
        var client = c.Pods.Single(p => p.Name == "client");
        var cip = client.Ip!.ToString();
        var backends = c.Pods.Where(p => p.Labels.TryGetValue("app", out var a) && a == "web").Select(p => $"{p.Ip}:8080").ToHashSet();
        var svc = (string name) => c.Services.Single(s => s.Name == name);

        // a pod to the node's address at the node port
        var np = h.From(client, Packets.Tcp(cip, 40000, "192.0.2.1", 30080));
        Assert.Equal(TcActOk, np.ReturnValue);
        Assert.Contains(Dst(np), backends);
        Assert.Equal(NatKind.Dnat, Assert.Single(h.Take().Nats).NatKind);

        // from outside, in through the node's device, and the backend's answer back out with the node port as its source
        var inbound = h.FromNetwork(Packets.Tcp("203.0.113.9", 50000, "192.0.2.1", 30080));
        Assert.Equal(TcActOk, inbound.ReturnValue);
        var backend = Dst(inbound);
        Assert.Contains(backend, backends);
        var dnat = Assert.Single(h.Take().Nats);
        Assert.Equal((NatKind.Dnat, ObsPoint.FromNetwork), (dnat.NatKind, dnat.Meta.ObsPoint));
        var ip = backend[..backend.IndexOf(':', StringComparison.Ordinal)];
        var reply = h.ToNetwork(Packets.Tcp(ip, 8080, "203.0.113.9", 50000, Packets.TcpSyn | Packets.TcpAck));
        Assert.Equal(("192.0.2.1:30080", "203.0.113.9:50000"), (Pkt.Src4(reply.DataOut), Dst(reply)));
        Assert.Equal(NatKind.RevDnat, Assert.Single(h.Take().Nats).NatKind);

        // the load balancer's address, from outside
        var lbIp = Assert.Single(svc("web-lb").LoadBalancerIps).ToString();
        var lb = h.FromNetwork(Packets.Tcp("203.0.113.9", 50001, lbIp, 443));
        Assert.Contains(Dst(lb), backends);
        h.Take();

        // ClientIP affinity: every connection of the client to one backend; without it, both are used
        var sticky = new HashSet<string>();
        var spread = new HashSet<string>();
        for (ushort i = 0; i < 16; i++)
        {
            sticky.Add(Dst(h.From(client, Packets.Tcp(cip, (ushort)(41000 + i), svc("web-sticky").ClusterIp!.ToString(), 80))));
            spread.Add(Dst(h.From(client, Packets.Tcp(cip, (ushort)(42000 + i), svc("web-spread").ClusterIp!.ToString(), 80))));
            h.Take();
        }
        Assert.Single(sticky);
        Assert.Equal(backends, spread);

        // a service without a selector goes to its Endpoints' address and port
        var outside = h.From(client, Packets.Tcp(cip, 43000, svc("outside").ClusterIp!.ToString(), 443));
        Assert.Equal("198.51.100.10:8443", Dst(outside));
    }
}
