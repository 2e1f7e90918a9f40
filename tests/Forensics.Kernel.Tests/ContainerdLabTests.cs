using System.Diagnostics;
using Forensics.Datapath.Control;
using Forensics.Datapath.Lab;
using Forensics.Runtime;
using Forensics.Tests;

namespace Forensics.Kernel.Tests;

/// <summary>One containerd lab node (examples/starwars-containerd.yaml) shared by a test class: it takes ~10 s to build.</summary>
public sealed class ContainerdLabFixture : IDisposable
{
    private Lab? lab;
    private Exception? failure;

    public ContainerdLabFixture()
    {
        Name = "fxc-" + Guid.NewGuid().ToString("N")[..6];
        Cluster = LabFixture.Load("starwars-containerd.yaml", Name);
    }

    public string Name { get; }
    public ClusterSpec Cluster { get; }

    /// <summary>The lab, built on first use (so that a machine without root fails the tests, not the fixture).</summary>
    public Lab Lab
    {
        get
        {
            if (failure is not null)
                throw new InvalidOperationException("the containerd lab did not come up: " + failure.Message, failure);
            try
            {
                return lab ??= Lab.Up(Cluster);
            }
            catch (Exception e)
            {
                failure = e;
                throw;
            }
        }
    }

    public CriClient Cri() => CriClient.Create(Lab.State.RuntimeEndpoint!);

    public void Dispose()
    {
        lab?.Dispose();
        Lab.Down(Name, Cluster);
    }
}

[Collection("lab")]
public class ContainerdLabTests(ContainerdLabFixture fx) : IClassFixture<ContainerdLabFixture>
{
    [KernelFact]
    public void ContainerdLab_Up_PodsAreCriSandboxesAtTheirAddresses()
    {
        var lab = fx.Lab;
        using var cri = fx.Cri();
        var version = cri.Version();
        Assert.Equal("containerd", version.Name);
        var sandboxes = cri.ListSandboxes();
        Assert.Equal(fx.Cluster.Pods.Count, sandboxes.Count);
        foreach (var pod in fx.Cluster.Pods)
        {
            var sb = Assert.Single(sandboxes, s => s.Name == pod.Name);
            Assert.True(sb.Ready);
            Assert.Equal(pod.Namespace, sb.Namespace);
            Assert.Equal(ContainerdNode.PodUid(fx.Name, pod), sb.Uid);
            Assert.Equal([pod.Ip!.ToString()], sb.Ips);
            Assert.NotEqual(0u, sb.NetnsInode);
            Assert.Equal(Forensics.Runtime.Netns.Inode($"/proc/{sb.Pid}/ns/net"), sb.NetnsInode); // the sandbox's process is in the pod's network namespace
            Assert.All(pod.Labels, l => Assert.Equal(l.Value, sb.Labels[l.Key]));
        }
        var containers = cri.ListContainers();
        Assert.Equal(["api", "deathstar", "web", "xwing"], containers.Select(c => c.Name).Order());
        Assert.All(containers, c => Assert.Equal("running", c.State));
        Assert.Equal("docker.io/library/backend:2", containers.Single(c => c.Name == "api").Image);
        // A container's processes live in the pod's cgroup, /forensics-LAB/pod<uid>/<container id> (cgroupfs layout).
        var api = containers.Single(c => c.Name == "api");
        var ep = lab.State.Endpoints.Single(e => e.Pod == "default/backend-2");
        var server = Lab.ProcessesIn(new HashSet<ulong> { sandboxes.Single(s => s.Name == "backend-2").NetnsInode })
            .Single(pid => File.ReadAllText($"/proc/{pid}/cmdline").Contains("serve", StringComparison.Ordinal));
        var owner = CgroupPaths.OfProcess(server);
        Assert.Equal(api.Id, owner.ContainerId);
        Assert.Equal(ep.PodUid, owner.PodUid);
    }

    [KernelFact]
    public void ContainerdLab_Steps_MeetTheirExpectationsThroughKubeProxyRules()
    {
        var lab = fx.Lab;
        var reports = lab.RunAll();
        Assert.All(reports, r => Assert.True(r.Passed, $"{r.Step.Name}: {string.Join("; ", r.Failures)} ({r.Detail})"));
        // The service answered from its backend: DNAT by the KUBE-SEP chain, in the node.
        var svc = reports.Single(r => r.Step.Name == "frontend-to-backend-service");
        Assert.Equal(200, svc.Connect!.HttpStatus);
        Assert.StartsWith("backend-2 ", svc.Connect.Reply, StringComparison.Ordinal);
        var dark = reports.Single(r => r.Step.Name == "xwing-to-darkside");
        Assert.Equal("timeout", dark.Result); // spec.nodeFirewall dropped it
        Assert.False(dark.DatapathAttached);
    }

    [KernelFact]
    public void ContainerdLab_NodeRules_AreKubeProxysIptablesRules()
    {
        var lab = fx.Lab;
        var save = Commands.Run("ip", ["netns", "exec", lab.State.NodeNetns, "iptables-save"]).Stdout;
        var svcChain = "KUBE-SVC-" + KubeProxyRules.Hash("default/backend-service" + "tcp");
        var sepChain = "KUBE-SEP-" + KubeProxyRules.Hash("default/backend-service" + "tcp" + "10.0.0.2:8080");
        Assert.Contains($"-A KUBE-SERVICES -d 10.0.1.100/32 -p tcp -m comment --comment \"default/backend-service cluster IP\" -m tcp --dport 8080 -j {svcChain}", save, StringComparison.Ordinal);
        Assert.Contains($"-A {sepChain} -p tcp -m comment --comment default/backend-service -m tcp -j DNAT --to-destination 10.0.0.2:8080", save, StringComparison.Ordinal);
        Assert.Contains("-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully", save, StringComparison.Ordinal);
        Assert.Contains("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES", save, StringComparison.Ordinal);
        Assert.Contains("xwing must not reach the darkside", save, StringComparison.Ordinal);
        // Nothing of the lab in the machine's own namespace.
        Assert.DoesNotContain("KUBE-SVC", Commands.Run("iptables-save", []).Stdout, StringComparison.Ordinal);
    }
}

[Collection("lab")]
public class ContainerdLabDownTests
{
    [KernelFact]
    public void ContainerdLabDown_AfterUpWasKilled_RemovesContainerdPodsMountsAndCgroups()
    {
        var name = "fxk-" + Guid.NewGuid().ToString("N")[..6];
        var file = Path.Combine(Path.GetTempPath(), name + ".yaml");
        File.WriteAllText(file, File.ReadAllText(LabFixture.Example("starwars-containerd.yaml")).Replace("name: swcd", "name: " + name, StringComparison.Ordinal));
        using var up = LabFixture.Spawn("lab", "up", file);
        try
        {
            var state = LabFixture.WaitState(name, s => s.Phase == "ready", TimeSpan.FromSeconds(120), up);
            var pids = ContainerdNode.CgroupProcesses(name);
            Assert.NotEmpty(pids);
            up.Kill(); // SIGKILL: nothing of the lab is removed by its owner
            up.WaitForExit();
            Assert.All(pids, p => Assert.True(LabState.ProcessStartTime(p) is not null, $"pod process {p} died with lab up"));
            var (code, output) = LabFixture.RunCli("lab", "down", file);
            Assert.True(code == 0, output);
            Assert.All(pids, p => Assert.Null(LabState.ProcessStartTime(p)));
            Assert.Empty(ContainerdNode.CgroupProcesses(name));
            Assert.False(Directory.Exists(Path.Combine(CgroupPaths.UnifiedMount()!, "forensics-" + name)));
            Assert.DoesNotContain(File.ReadAllText("/proc/self/mountinfo").Split('\n'), l => l.Contains("/run/forensics/lab/" + name + "/", StringComparison.Ordinal));
            Assert.Empty(LabFixture.Leftovers(name, processes: state.Processes));
        }
        finally
        {
            if (!up.HasExited)
                up.Kill();
            Lab.Down(name);
            File.Delete(file);
        }
    }
}
