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
    public void CriClient_Detect_FirstWellKnownSocketThatExists()
    {
        var root = Directory.CreateTempSubdirectory("fx-cridetect-").FullName;
        try
        {
            Assert.Null(CriClient.Detect(root));
            Directory.CreateDirectory(Path.Combine(root, "var/run/crio"));
            File.WriteAllText(Path.Combine(root, "var/run/crio/crio.sock"), "");
            Assert.Equal("unix:///var/run/crio/crio.sock", CriClient.Detect(root)); // a CRI-O node
            Directory.CreateDirectory(Path.Combine(root, "run/containerd"));
            File.WriteAllText(Path.Combine(root, "run/containerd/containerd.sock"), "");
            Assert.Equal("unix:///run/containerd/containerd.sock", CriClient.Detect(root)); // containerd first
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

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

public class RuntimeSourceTests
{
    [Fact]
    public void CriClient_SocketAbsent_OneLineError()
    {
        using var c = CriClient.Create("unix:///nonexistent/forensics-test.sock", TimeSpan.FromSeconds(2));
        var e = Assert.Throws<RuntimeException>(() => c.Version());
        Assert.Equal("unix:///nonexistent/forensics-test.sock: Version: no such socket (is the runtime running?)", e.Message);
    }

    [Fact]
    public async Task CriClient_RuntimeAnswersGarbage_OneLineError()
    {
        var path = Path.Combine(Path.GetTempPath(), $"fx-garbage-{Guid.NewGuid():N}.sock");
        using var listener = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
        listener.Bind(new System.Net.Sockets.UnixDomainSocketEndPoint(path));
        listener.Listen(4);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var server = Task.Run(async () =>
        {
            while (!cts.IsCancellationRequested)
            {
                using var s = await listener.AcceptAsync(cts.Token);
                await s.SendAsync("this is not HTTP/2, nor gRPC\r\n\r\n"u8.ToArray(), cts.Token);
                s.Shutdown(System.Net.Sockets.SocketShutdown.Both);
            }
        }, cts.Token);
        try
        {
            using var c = CriClient.Create("unix://" + path, TimeSpan.FromSeconds(3));
            var e = Assert.Throws<RuntimeException>(() => c.Version());
            Assert.StartsWith($"unix://{path}: Version: the answer is not gRPC: ", e.Message, StringComparison.Ordinal);
            Assert.DoesNotContain('\n', e.Message);
        }
        finally
        {
            await cts.CancelAsync();
            try
            {
                await server;
            }
            catch (OperationCanceledException)
            {
            }
            File.Delete(path);
        }
    }

    [Fact]
    public void PodsFile_NotJson_OneLineError()
    {
        var path = Path.GetTempFileName();
        File.WriteAllText(path, "NAME READY STATUS\nxwing 1/1 Running\n");
        try
        {
            var e = Assert.Throws<RuntimeException>(() => PodsFileSource.Load(path));
            Assert.StartsWith($"{path}: not JSON (kubectl get pods -A -o json)", e.Message, StringComparison.Ordinal);
            Assert.DoesNotContain('\n', e.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void PodsFile_KubectlList_PodsAndContainers()
    {
        var path = Path.GetTempFileName();
        File.WriteAllText(path, """
            {"apiVersion":"v1","kind":"List","items":[
              {"apiVersion":"v1","kind":"Pod","metadata":{"name":"xwing","namespace":"default","uid":"8a6a3f0e-1111-4c6e-9a39-6d6c2b2f5e01","labels":{"org":"alliance"},"creationTimestamp":"2026-12-04T10:00:00Z"},
               "status":{"phase":"Running","podIP":"10.0.0.3","podIPs":[{"ip":"10.0.0.3"}],
                 "containerStatuses":[{"name":"spaceship","image":"docker.io/tgraf/netperf:latest","containerID":"containerd://3d458f022b445a9543b17c3d6dde45a4153f1d6178747948c6cc4a62a7ca9eb0","state":{"running":{}}}]}}]}
            """);
        try
        {
            using var src = PodsFileSource.Load(path);
            var snap = src.Read();
            var pod = Assert.Single(snap.Pods);
            Assert.Equal(("default", "xwing", "8a6a3f0e-1111-4c6e-9a39-6d6c2b2f5e01"), (pod.Namespace, pod.Name, pod.Uid));
            Assert.Equal(["10.0.0.3"], pod.Ips);
            Assert.Equal("alliance", pod.Labels["org"]);
            var c = Assert.Single(snap.Containers);
            Assert.Equal(("3d458f022b445a9543b17c3d6dde45a4153f1d6178747948c6cc4a62a7ca9eb0", "spaceship", pod.Uid, "running"), (c.Id, c.Name, c.PodUid, c.State));
            Assert.False(src.Live);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void WorkloadCatalog_PodDeleted_KeepsAttributionAndWritesRemovedRow()
    {
        var catalog = new WorkloadCatalog(_ => null, cgroupMount: "/nonexistent");
        var pod = new PodRecord("u1", "default", "xwing", "sb1", ["10.0.0.3"], 4026532001, new Dictionary<string, string>(), DateTime.UnixEpoch, true);
        catalog.Apply(new WorkloadSnapshot([pod], []), DateTime.UtcNow, first: true);
        Assert.Equal("xwing", catalog.Lookup(4026532001, 0)!.Pod);
        catalog.Apply(new WorkloadSnapshot([], []), DateTime.UtcNow);
        Assert.Equal("xwing", catalog.Lookup(4026532001, 0)!.Pod); // events of the deleted pod still decode to it
        Assert.Equal("u1", catalog.LookupIp("10.0.0.3")!.PodUid);
        var other = pod with { Uid = "u2", Name = "tie", CreatedUtc = DateTime.UnixEpoch.AddSeconds(1) };
        catalog.Apply(new WorkloadSnapshot([other], []), DateTime.UtcNow);
        Assert.Equal("tie", catalog.Lookup(4026532001, 0)!.Pod); // a new pod in the same namespace inode wins
        Assert.Equal(["start", "removed", "added"], catalog.TakeChanges().Select(c => c.Phase));
        Assert.Null(catalog.Lookup(1, 0));
    }

    /// <summary>
    /// The kernel gives a new network namespace the inode number of one just freed: a pod deleted and another created
    /// at once share it. The new pod's first events, before the runtime lists its container, must not be the old pod's.
    /// </summary>
    [Fact]
    public void WorkloadCatalog_NamespaceInodeReused_NewContainerIsNobodysUntilListedNeverTheGonePods()
    {
        const string Late = "8c1f0e5d2b4a69788f1e0d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0f9e";
        var root = Forensics.Tests.Scratch.Dir("fx-cgroups-");
        Directory.CreateDirectory(Path.Combine(root, "k8s.io", Late));
        var catalog = new WorkloadCatalog(p => p.EndsWith(Late, StringComparison.Ordinal) ? 777UL : null, cgroupMount: root);
        var early = new PodRecord("u1", "default", "early-1", "sb1", ["10.0.0.3"], 4026532001, new Dictionary<string, string>(), DateTime.UnixEpoch, true);
        catalog.Apply(new WorkloadSnapshot([early], []), DateTime.UtcNow, first: true);
        catalog.Apply(new WorkloadSnapshot([], []), DateTime.UtcNow); // early-1 is deleted
        Assert.True(catalog.RescanCgroups()); // late-1's container has its cgroup folder; the runtime does not list it yet

        Assert.Null(catalog.Lookup(4026532001, 777)); // a process of that container, in the namespace with early-1's number
        Assert.Null(catalog.Lookup(4026532001, 555)); // a host process entering that namespace: not the gone pod's either
        Assert.Equal("early-1", catalog.Lookup(4026532001, 0)!.Pod); // an event of no process: the namespace's last pod

        var late = early with { Uid = "u2", Name = "late-1", SandboxId = "sb2", CreatedUtc = DateTime.UnixEpoch.AddSeconds(1) };
        catalog.Apply(new WorkloadSnapshot([late], [new ContainerRecord(Late, "probe", "busybox", "u2", "sb2", "running", DateTime.UnixEpoch)]), DateTime.UtcNow);
        var o = catalog.Lookup(4026532001, 777)!;
        Assert.Equal(("late-1", Late), (o.Pod, o.ContainerId));
        Assert.Equal("late-1", catalog.Lookup(4026532001, 555)!.Pod); // a live pod's namespace, entered from the host
        Assert.Equal("late-1", catalog.Lookup(4026532001, 0)!.Pod);
    }

    private sealed class ScriptedSource(params WorkloadSnapshot[] reads) : IWorkloadSource
    {
        private int next;
        public string Description => "scripted";
        public bool Live => true;
        public int Reads => next;
        public WorkloadSnapshot Read() => reads[Math.Min(next++, reads.Length - 1)];
        public void Dispose() { }
    }

    /// <summary>
    /// A container started a moment ago, in a namespace whose inode number a deleted pod had: its first event, within
    /// 200 ms of the last refresh, finds its cgroup folder; the runtime is asked at once and the event is the new pod's.
    /// </summary>
    [Fact]
    public void WorkloadWatcher_NewContainersFirstEvent_RuntimeAskedAtOnceAndTheEventIsItsPods()
    {
        const string Late = "8c1f0e5d2b4a69788f1e0d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0f9e";
        var root = Forensics.Tests.Scratch.Dir("fx-cgroups-");
        Directory.CreateDirectory(Path.Combine(root, "k8s.io", Late));
        var early = new PodRecord("u1", "extra", "early-1", "sb1", ["10.0.0.3"], 4026532001, new Dictionary<string, string>(), DateTime.UnixEpoch, true);
        var late = early with { Uid = "u2", Name = "late-1", SandboxId = "sb2", CreatedUtc = DateTime.UnixEpoch.AddSeconds(1) };
        var source = new ScriptedSource(
            new WorkloadSnapshot([early], []),
            new WorkloadSnapshot([late], [new ContainerRecord(Late, "main", "busybox", "u2", "sb2", "running", DateTime.UnixEpoch)]));
        var catalog = new WorkloadCatalog(p => p.EndsWith(Late, StringComparison.Ordinal) ? 777UL : null, cgroupMount: root);
        using var watcher = new WorkloadWatcher(source, catalog, interval: TimeSpan.FromHours(1));
        watcher.Start();
        Assert.Equal(1, source.Reads);

        var o = watcher.Lookup(4026532001, 777);

        Assert.Equal(2, source.Reads);
        Assert.Equal(("late-1", Late, "main"), (o?.Pod, o?.ContainerId, o?.Container));
    }

    [Fact]
    public void WorkloadCatalog_AddressOfPod_SoleRunningContainerAndSortedLabels()
    {
        var catalog = new WorkloadCatalog(_ => null, cgroupMount: "/nonexistent");
        var labels = new Dictionary<string, string> { ["org"] = "alliance", ["class"] = "xwing" };
        var xwing = new PodRecord("u1", "default", "xwing", "sb1", ["10.0.0.3"], 4026532001, labels, DateTime.UnixEpoch, true);
        var tie = new PodRecord("u2", "default", "tie", "sb2", ["10.0.0.4"], 4026532002, new Dictionary<string, string>(), DateTime.UnixEpoch, true);
        ContainerRecord C(string id, string name, string uid, string state) => new(id, name, "busybox", uid, null, state, DateTime.UnixEpoch);
        catalog.Apply(new WorkloadSnapshot([xwing, tie],
            [C("c1", "xwing", "u1", "running"), C("c0", "init", "u1", "exited"), C("c2", "a", "u2", "running"), C("c3", "b", "u2", "running")]), DateTime.UtcNow, first: true);
        var x = catalog.LookupIp("10.0.0.3")!;
        Assert.Equal(("c1", "xwing", "class=xwing,org=alliance"), (x.ContainerId, x.Container, x.Labels)); // the exited one does not count
        var t = catalog.LookupIp("10.0.0.4")!;
        Assert.Equal(("tie", (string?)null, (string?)null, (string?)null), (t.Pod, t.ContainerId, t.Container, t.Labels)); // two containers: the address cannot tell which
        Assert.Equal("class=xwing,org=alliance", catalog.Lookup(4026532001, 0)!.Labels);
    }
}
