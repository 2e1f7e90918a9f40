using System.Diagnostics;
using Forensics.Datapath.Control;
using Forensics.Format;
using Forensics.Runtime.Cri;
using Forensics.Datapath.Lab;
using Forensics.Runtime;
using Forensics.Tests;

namespace Forensics.Kernel.Tests;

/// <summary>One containerd lab node (examples/starwars-containerd.yaml) shared by a test class: it takes ~10 s to build.</summary>
public sealed class ContainerdLabFixture : IDisposable
{
    private NetnsLab? lab;
    private Exception? failure;

    public ContainerdLabFixture()
    {
        Name = "fxc-" + Guid.NewGuid().ToString("N")[..6];
        Cluster = LabFixture.Load("starwars-containerd.yaml", Name);
    }

    public string Name { get; }
    public ClusterSpec Cluster { get; }

    /// <summary>The lab, built on first use (so that a machine without root fails the tests, not the fixture).</summary>
    public NetnsLab Lab
    {
        get
        {
            if (failure is not null)
                throw new InvalidOperationException("the containerd lab did not come up: " + failure.Message, failure);
            try
            {
                return lab ??= NetnsLab.Up(Cluster);
            }
            catch (Exception e)
            {
                failure = e;
                throw;
            }
        }
    }

    public CriClient Cri() => CriClient.Create(Lab.State.RuntimeEndpoint!);

    /// <summary>
    /// Starts `forensics record` host-wide (no --lab) against the lab's containerd; returns the process and the recording
    /// folder. It records until <see cref="Finish"/> interrupts it (the duration only bounds a test that hangs): the
    /// steps take as long as the machine needs, and a fixed duration would cut them off on a loaded one.
    /// </summary>
    public static (Process Recorder, string Dir) StartRecording(params string[] extra)
    {
        var duration = TimeSpan.FromMinutes(5);
        var dir = Path.Combine(Scratch.Dir("fx-crirec-"), "rec");
        var cli = Path.Combine(AppContext.BaseDirectory, "forensics.dll");
        var psi = new ProcessStartInfo("dotnet", [cli, "record", "--duration", $"{duration.TotalSeconds}s", "-o", dir, "--snaplen", "0", .. extra])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        var p = Process.Start(psi)!;
        p.OutputDataReceived += (_, _) => { };
        p.BeginOutputReadLine();
        var ready = new ManualResetEventSlim();
        var err = new System.Text.StringBuilder();
        p.ErrorDataReceived += (_, e) =>
        {
            lock (err)
                err.AppendLine(e.Data);
            if (e.Data?.StartsWith("recording to", StringComparison.Ordinal) == true)
                ready.Set();
        };
        p.BeginErrorReadLine();
        // Recording has begun once the manifest exists (the probes are attached before it is written).
        var sw = Stopwatch.StartNew();
        while (!File.Exists(Path.Combine(dir, "manifest.json")) && sw.Elapsed < TimeSpan.FromSeconds(60) && !p.HasExited)
            Thread.Sleep(50);
        Assert.True(File.Exists(Path.Combine(dir, "manifest.json")), "record did not start: " + err);
        return (p, dir);
    }

    /// <summary>
    /// Stops the recording as a service manager does (SIGTERM, handled as Ctrl-C is) and waits for it to finish writing.
    /// Not SIGINT: a test host started as a background job has SIGINT ignored, its children too, and .NET keeps it so.
    /// </summary>
    public static void Finish(Process recorder)
    {
        Assert.Equal(0, Commands.Run("kill", ["-TERM", recorder.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]).ExitCode);
        Assert.True(recorder.WaitForExit(TimeSpan.FromSeconds(90)), "record did not stop");
        recorder.WaitForExit();
        Assert.Equal(0, recorder.ExitCode);
        recorder.Dispose();
    }

    /// <summary>A pod of our own in the lab's containerd (cgroups under the lab's root, so lab down removes it too).</summary>
    public (string Sandbox, string Container, string Uid) RunExtraPod(CriClient cri, string name)
    {
        var uid = Guid.NewGuid().ToString();
        var cfg = new PodSandboxConfig
        {
            Metadata = new PodSandboxMetadata { Name = name, Namespace = "extra", Uid = uid },
            Hostname = name,
            LogDirectory = Path.Combine(ContainerdNode.Dir(Name), "pods", $"extra_{name}_{uid}"),
            Linux = new LinuxPodSandboxConfig { CgroupParent = $"{ContainerdNode.CgroupRoot(Name)}/pod{uid}" },
        };
        Directory.CreateDirectory(Path.Combine(cfg.LogDirectory, "main"));
        var sandbox = cri.RunPodSandbox(cfg);
        var cc = new ContainerConfig
        {
            Metadata = new ContainerMetadata { Name = "main" },
            Image = new ImageSpec { Image = ContainerdNode.DefaultImage },
            LogPath = "main/0.log",
        };
        cc.Command.AddRange(["/bin/sleep", "2147483647"]);
        foreach (var host in ContainerdNode.HostMounts(SelfCommand.Detect(), "/usr/share/dotnet"))
            cc.Mounts.Add(new Mount { ContainerPath = host, HostPath = host, Readonly = true });
        var id = cri.CreateContainer(sandbox, cc, cfg);
        cri.StartContainer(id);
        return (sandbox, id, uid);
    }

    public void Dispose()
    {
        lab?.Dispose();
        NetnsLab.Down(Name, Cluster);
    }
}

[Collection("lab")]
public partial class ContainerdLabTests(ContainerdLabFixture fx) : IClassFixture<ContainerdLabFixture>
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
        var server = NetnsLab.ProcessesIn(new HashSet<ulong> { sandboxes.Single(s => s.Name == "backend-2").NetnsInode })
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

    /// <summary>CiliumNetworkPolicies are not enforced on this node: a step expecting a policy drop is not applicable, not a failure.</summary>
    [KernelFact]
    public void ContainerdLab_StepExpectingAPolicyDrop_NotApplicableNotAFailure()
    {
        var lab = fx.Lab;
        var step = lab.Cluster.Lab!.Steps.Single(s => s.Name == "frontend-to-backend-admin-port");
        var r = lab.RunStep(step with { Expect = new StepExpectation(false, 133, null) });
        Assert.True(r.Delivered); // nothing on the node drops it
        Assert.StartsWith("expects a datapath drop (133 ", r.NotApplicable, StringComparison.Ordinal);
        Assert.Empty(r.Failures);
        Assert.True(r.Passed);
    }

    [KernelFact]
    public void ContainerdLab_NodeRules_AreKubeProxysIptablesRules()
    {
        var lab = fx.Lab;
        var save = Commands.Run("ip", ["netns", "exec", lab.State.NodeNetns, "iptables-save"]).Stdout;
        var svcChain = "KUBE-SVC-" + KubeProxyRules.Hash("default/backend-service" + "tcp");
        var sepChain = "KUBE-SEP-" + KubeProxyRules.Hash("default/backend-service" + "tcp" + "10.0.0.2:8080");
        var lines = save.Split('\n');
        bool Has(string chain, params string[] parts) =>
            lines.Any(l => l.StartsWith($"-A {chain} ", StringComparison.Ordinal) && parts.All(p => l.Contains(p, StringComparison.Ordinal)));
        Assert.True(Has("KUBE-SERVICES", "10.0.1.100", "\"default/backend-service cluster IP\"", "--dport 8080", "-j " + svcChain), save);
        Assert.True(Has(svcChain, "! -s 10.0.0.0/24", "-j KUBE-MARK-MASQ"), save);
        Assert.True(Has(svcChain, "\"default/backend-service -> 10.0.0.2:8080\"", "-j " + sepChain), save);
        Assert.True(Has(sepChain, "default/backend-service", "-j DNAT --to-destination 10.0.0.2:8080"), save);
        Assert.Contains("-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully", save, StringComparison.Ordinal);
        Assert.Contains("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES", save, StringComparison.Ordinal);
        Assert.Contains("xwing must not reach the darkside", save, StringComparison.Ordinal);
        // Nothing of the lab in the machine's own namespace.
        Assert.DoesNotContain("KUBE-SVC", Commands.Run("iptables-save", []).Stdout, StringComparison.Ordinal);
    }
}

public partial class ContainerdLabTests
{
    private static string Str(Dictionary<string, object?> row, string col) => row[col] as string ?? "";

    [KernelFact]
    public void RecordCri_PodsCreatedAndDeletedMidRecording_EveryEventCarriesItsPod()
    {
        var lab = fx.Lab;
        using var cri = fx.Cri();
        var early = fx.RunExtraPod(cri, "early-1");
        var (recorder, dir) = ContainerdLabFixture.StartRecording("--runtime-endpoint", lab.State.RuntimeEndpoint!);
        var sw = Stopwatch.StartNew();
        // Before: a process in the early pod, then the pod is deleted.
        var e1 = cri.ExecSync(early.Container, ["/bin/sh", "-c", "echo early-marker-1"], TimeSpan.FromSeconds(10));
        Assert.Equal(0, e1.ExitCode);
        cri.StopPodSandbox(early.Sandbox);
        cri.RemovePodSandbox(early.Sandbox);
        // A pod created 5 s into the recording; its processes connect to backend-2 (a real pod) through the service.
        while (sw.Elapsed < TimeSpan.FromSeconds(5))
            Thread.Sleep(50);
        var late = fx.RunExtraPod(cri, "late-1");
        try
        {
            var self = SelfCommand.Detect();
            var c = cri.ExecSync(late.Container, [.. self, "lab", "connect", "tcp", "10.0.1.100:8080", "--timeout", "2"], TimeSpan.FromSeconds(30));
            Assert.Contains("\"connected\"", c.Stdout, StringComparison.Ordinal);
            // A process outside any pod.
            Assert.Equal(0, Commands.Run("/bin/sh", ["-c", "echo host-marker-1"]).ExitCode);
            // A kernel drop in a pod: the node firewall drops what the xwing sends to the darkside.
            var dark = lab.RunStep(lab.Cluster.Lab!.Steps.Single(s => s.Name == "xwing-to-darkside"));
            Assert.Equal("timeout", dark.Result);
            ContainerdLabFixture.Finish(recorder);
        }
        finally
        {
            // even when the test fails: the lab's other tests count its pods
            try
            {
                cri.StopPodSandbox(late.Sandbox);
                cri.RemovePodSandbox(late.Sandbox);
            }
            catch (Forensics.Runtime.RuntimeException)
            {
                // the fixture's lab down removes it anyway
            }
        }

        var m = Manifest.Read(dir);
        Assert.StartsWith("cri unix://", m.Attribution!.Source, StringComparison.Ordinal);
        Assert.Contains("containerd", m.Attribution.Source, StringComparison.Ordinal);

        var earlyExec = Duck.Table(dir, "exec", "arguments LIKE '%early-marker-1%'");
        Assert.NotEmpty(earlyExec);
        Assert.All(earlyExec, r =>
        {
            Assert.Equal("extra", Str(r, "namespace"));
            Assert.Equal("early-1", Str(r, "pod"));
            Assert.Equal(early.Uid, Str(r, "pod_uid"));
            Assert.Equal(early.Container, Str(r, "container_id"));
            Assert.Equal("main", Str(r, "container"));
        });
        var earlyExit = Duck.Table(dir, "exit", $"container_id = '{early.Container}'");
        Assert.NotEmpty(earlyExit); // the exec's process (and the pod's) exited; still attributed after the pod is gone
        Assert.All(earlyExit, r => Assert.Equal(("extra", "early-1", early.Uid, "main"), (Str(r, "namespace"), Str(r, "pod"), Str(r, "pod_uid"), Str(r, "container"))));

        // this run's connect: the probes are host-wide, and other labs on the machine may use the same service address
        var lateConnect = Assert.Single(Duck.Table(dir, "connect", $"dst_ip = '10.0.1.100' AND dst_port = 8080 AND \"binary\" LIKE '{AppContext.BaseDirectory}%'"));
        Assert.Equal("extra", Str(lateConnect, "namespace"));
        Assert.Equal("late-1", Str(lateConnect, "pod"));
        Assert.Equal(late.Uid, Str(lateConnect, "pod_uid"));
        Assert.Equal(late.Container, Str(lateConnect, "container_id"));
        Assert.Equal("main", Str(lateConnect, "container"));
        var lateExec = Duck.Table(dir, "exec", $"pod = 'late-1'");
        Assert.Contains(lateExec, r => Str(r, "arguments").Contains("lab connect", StringComparison.Ordinal));

        var host = Duck.Table(dir, "exec", "arguments LIKE '%host-marker-1%'");
        Assert.NotEmpty(host);
        Assert.All(host, r =>
        {
            Assert.Null(r["pod"]);
            Assert.Null(r["namespace"]);
            Assert.Null(r["pod_uid"]);
            Assert.Null(r["container_id"]);
        });

        var xwing = lab.State.Endpoints.Single(e => e.Pod == "default/xwing");
        // this lab's drops: in its node's namespace (the probes are host-wide, and another lab's datapath may drop its own xwing's packets to the same address)
        var nodeIno = NetNamespace.Inode(lab.State.NodeNetns) ?? throw new InvalidOperationException("no node namespace " + lab.State.NodeNetns);
        var kdrop = Duck.Table(dir, "kdrop", $"dst_ip = '203.0.113.66' AND netns_ino = {nodeIno}");
        Assert.NotEmpty(kdrop);
        Assert.All(kdrop, r =>
        {
            Assert.Equal("default", Str(r, "namespace"));
            Assert.Equal("xwing", Str(r, "pod"));
            Assert.Equal(xwing.PodUid, Str(r, "pod_uid"));
            Assert.Equal(xwing.Containers[0].Id, Str(r, "container_id"));
            Assert.Equal("xwing", Str(r, "container"));
        });

        // The pods table: the early pod at start and removed, the late one added, both with their uid.
        var pods = Duck.Table(dir, "pods");
        Assert.Contains(pods, r => Str(r, "pod") == "early-1" && Str(r, "phase") == "start" && Str(r, "uid") == early.Uid);
        Assert.Contains(pods, r => Str(r, "pod") == "early-1" && Str(r, "phase") == "removed");
        Assert.Contains(pods, r => Str(r, "pod") == "late-1" && Str(r, "phase") == "added" && Str(r, "source") == "cri");
        Assert.Contains(pods, r => Str(r, "pod") == "xwing" && Str(r, "phase") == "end" && Str(r, "ips") == "10.0.0.3");
        Assert.Contains(Duck.Table(dir, "containers"), r => Str(r, "container_id") == late.Container && Str(r, "pod") == "late-1");
        var info = LabFixture.RunCli("info", dir);
        Assert.Contains("attribution source: cri unix://", info.Out, StringComparison.Ordinal);
    }

    [KernelFact]
    public void RecordCri_LabRunFromAnotherProcess_EveryStepsConnectAttributedToItsPod()
    {
        var lab = fx.Lab;
        var (recorder, dir) = ContainerdLabFixture.StartRecording("--runtime-endpoint", lab.State.RuntimeEndpoint!);
        var run = LabFixture.RunCli("lab", "run", LabFixture.Example("starwars-containerd.yaml"), "--name", fx.Name);
        Assert.True(run.Code == 0, run.Out);
        Assert.Contains("7 of 7 steps met their expectation", run.Out, StringComparison.Ordinal);
        // said once: what this node does not do
        Assert.Single(run.Out.Split('\n'), l => l.Contains("CiliumNetworkPolicies are not enforced", StringComparison.Ordinal));
        ContainerdLabFixture.Finish(recorder);

        foreach (var step in lab.Cluster.Lab!.Steps.Where(s => s.Action is "tcp" or "udp" or "http"))
        {
            var target = step.Target!.Split('/')[0];
            var (ip, port) = (target[..target.LastIndexOf(':')], target[(target.LastIndexOf(':') + 1)..]);
            var ep = lab.State.Endpoints.Single(e => e.Pod == step.Pod);
            // this run's connects: the probes are host-wide, and other labs on the machine may use the same addresses
            var rows = Duck.Table(dir, "connect", $"dst_ip = '{ip}' AND dst_port = {port} AND \"binary\" LIKE '{AppContext.BaseDirectory}%'");
            Assert.True(rows.Count > 0, $"step {step.Name}: no connect to {target}");
            Assert.All(rows, r =>
            {
                Assert.Equal(step.Pod, Str(r, "namespace") + "/" + Str(r, "pod"));
                Assert.Equal(ep.PodUid, Str(r, "pod_uid"));
                Assert.Equal(ep.Containers[0].Id, Str(r, "container_id"));
                Assert.Equal(ep.Containers[0].Name, Str(r, "container"));
                var labels = Str(r, "pod_labels").Split(',');
                Assert.All(lab.Cluster.Pods.Single(p => $"{p.Namespace}/{p.Name}" == step.Pod).Labels, l => Assert.Contains($"{l.Key}={l.Value}", labels));
            });
        }
    }
    /// <summary>
    /// The offline fallback: `--pods-file` with what `kubectl get pods -A -o json` says of the lab's pods (written here
    /// from the runtime's own listing), no runtime socket: a step's connect carries its pod and container.
    /// </summary>
    [KernelFact]
    public void RecordPodsFile_KubectlJsonOfTheLabsPods_StepsConnectCarriesItsPodWithoutTheRuntime()
    {
        var lab = fx.Lab;
        using var cri = fx.Cri();
        var sandboxes = cri.ListSandboxes();
        var containers = cri.ListContainers();
        var items = new System.Text.Json.Nodes.JsonArray();
        foreach (var sb in sandboxes)
        {
            var statuses = new System.Text.Json.Nodes.JsonArray();
            foreach (var c in containers.Where(c => c.SandboxId == sb.Id))
                statuses.Add(new System.Text.Json.Nodes.JsonObject { ["name"] = c.Name, ["image"] = c.Image, ["containerID"] = "containerd://" + c.Id, ["state"] = new System.Text.Json.Nodes.JsonObject { ["running"] = new System.Text.Json.Nodes.JsonObject() } });
            var labels = new System.Text.Json.Nodes.JsonObject();
            foreach (var (k, v) in sb.Labels)
                labels[k] = v;
            items.Add(new System.Text.Json.Nodes.JsonObject
            {
                ["apiVersion"] = "v1",
                ["kind"] = "Pod",
                ["metadata"] = new System.Text.Json.Nodes.JsonObject { ["name"] = sb.Name, ["namespace"] = sb.Namespace, ["uid"] = sb.Uid, ["labels"] = labels },
                ["status"] = new System.Text.Json.Nodes.JsonObject { ["phase"] = "Running", ["podIP"] = sb.Ips[0], ["containerStatuses"] = statuses },
            });
        }
        var podsFile = Path.Combine(Scratch.Dir("fx-podsfile-"), "pods.json");
        File.WriteAllText(podsFile, new System.Text.Json.Nodes.JsonObject { ["apiVersion"] = "v1", ["kind"] = "List", ["items"] = items }.ToJsonString());

        var (recorder, dir) = ContainerdLabFixture.StartRecording("--pods-file", podsFile, "-t", "exec,exit,connect");
        var report = lab.RunStep(lab.Cluster.Lab!.Steps.Single(s => s.Name == "frontend-to-backend"));
        Assert.True(report.Passed, string.Join("; ", report.Failures));
        ContainerdLabFixture.Finish(recorder);

        var m = Manifest.Read(dir);
        Assert.Equal($"pods file {podsFile}", m.Attribution!.Source);
        var ep = lab.State.Endpoints.Single(e => e.Pod == "default/frontend-1");
        var rows = Duck.Table(dir, "connect", $"dst_ip = '{lab.State.Endpoints.Single(e => e.Pod == "default/backend-2").Ip}' AND dst_port = 8080 AND \"binary\" LIKE '{AppContext.BaseDirectory}%'");
        Assert.NotEmpty(rows);
        Assert.All(rows, r =>
        {
            Assert.Equal(("default", "frontend-1", ep.PodUid, ep.Containers[0].Id, "web"),
                (Str(r, "namespace"), Str(r, "pod"), Str(r, "pod_uid"), Str(r, "container_id"), Str(r, "container")));
        });
        Assert.Contains(Duck.Table(dir, "pods"), r => Str(r, "pod") == "frontend-1" && Str(r, "source") == "pods-file");
    }

    /// <summary>
    /// Issue 16 item 4: the node's own conntrack (--netns, the lab node's namespace) answers nat, drops and
    /// connects --external as our datapath's lab does: the service VIP:port -> backend, the masquerade to the
    /// node address for the outside world, the firewall's kernel drop with its pod, and exactly the outside
    /// world's connects as external (no VIP, pod, node or reply).
    /// </summary>
    [KernelFact]
    public void RecordCri_NodeNamespace_NatDropsAndExternalAsOnTheDatapathLab()
    {
        var lab = fx.Lab;
        var (recorder, dir) = ContainerdLabFixture.StartRecording("--runtime-endpoint", lab.State.RuntimeEndpoint!, "--netns", lab.State.NodeNetns);
        var run = LabFixture.RunCli("lab", "run", LabFixture.Example("starwars-containerd.yaml"), "--name", fx.Name);
        Assert.True(run.Code == 0, run.Out);
        ContainerdLabFixture.Finish(recorder);
        string Ip(string pod) => lab.State.Endpoints.Single(e => e.Pod == pod).Ip;
        var podIps = lab.State.Endpoints.Select(e => e.Ip).ToHashSet();

        using var q = Forensics.Query.QuerySession.Open([dir]);
        var nat = q.Rows(Forensics.Query.Reconstructions.Nat(new Forensics.Query.Filter())).Where(r => podIps.Contains(Str(r, "client").Split(':')[0])).ToList();
        Assert.All(nat, r => Assert.Equal("conntrack", Str(r, "source")));
        foreach (var (client, vip, service, port) in new[]
        {
            ("default/frontend-1", "10.0.1.100:8080", "default/backend-service", 8080),
            ("default/xwing", "10.0.1.80:80", "default/deathstar", 80),
        })
        {
            var rows = nat.Where(r => Str(r, "mapping") == "service" && Str(r, "original") == vip && Str(r, "client").StartsWith(Ip(client) + ":", StringComparison.Ordinal)).ToList();
            Assert.True(rows.Count > 0, $"no service mapping of {client} to {vip}: " + string.Join("; ", nat.Select(r => string.Join(",", r.Values))));
            Assert.All(rows, r =>
            {
                Assert.StartsWith(service, Str(r, "service"), StringComparison.Ordinal);
                var backend = Str(r, "translated");
                Assert.EndsWith(":" + port.ToString(System.Globalization.CultureInfo.InvariantCulture), backend, StringComparison.Ordinal);
                Assert.Equal(lab.State.Endpoints.Single(e => e.Ip == backend.Split(':')[0]).Pod, Str(r, "backend_pod"));
            });
        }
        foreach (var world in new[] { "198.51.100.10:443", "198.51.100.53:53" })
        {
            // one connection per step, or more when a loaded machine makes the step retry: each one masqueraded
            var snats = nat.Where(r => Str(r, "mapping") == "snat" && Str(r, "destination") == world).ToList();
            Assert.NotEmpty(snats);
            Assert.All(snats, snat =>
            {
                Assert.StartsWith(Ip("default/xwing") + ":", Str(snat, "client"), StringComparison.Ordinal);
                Assert.Equal(lab.Cluster.Lab!.NodeIp.ToString(), Str(snat, "translated").Split(':')[0]);
            });
        }

        var drops = q.Rows(Forensics.Query.Reconstructions.Drops(new Forensics.Query.Filter())).ToList();
        // the firewall's drop of xwing's connect; a loaded machine can make the step's client retransmit or retry
        // within its timeout, and every such drop must be the firewall's. The kernel's drops are traced host-wide:
        // another lab's datapath dropping its own pods' packets to the same TEST-NET address is not this lab's.
        var fw = drops.Where(r => Str(r, "destination").Contains("203.0.113.66", StringComparison.Ordinal) && podIps.Any(ip => Str(r, "source").Contains(ip, StringComparison.Ordinal) || Str(r, "source").Contains("xwing", StringComparison.Ordinal))).ToList();
        Assert.True(fw.Count > 0, "no drop to 203.0.113.66: " + string.Join("; ", drops.Select(r => string.Join(",", r.Values))));
        Assert.All(fw, r =>
        {
            Assert.Contains("NETFILTER_DROP", Str(r, "kernel_reason"), StringComparison.Ordinal);
            Assert.Contains("xwing", Str(r, "source"), StringComparison.Ordinal);
        });

        var external = q.Rows(Forensics.Query.Reconstructions.Connects(new Forensics.Query.Filter(), externalOnly: true))
            .Where(r => lab.State.Endpoints.Any(e => e.Pod == Str(r, "pod")))
            .Select(r => Str(r, "destination")).ToHashSet();
        Assert.Equal(new HashSet<string> { "198.51.100.10:443", "198.51.100.53:53", "203.0.113.66:443" }, external);
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
            Assert.All(pids, p => Assert.True(LabState.Running(p, 0), $"pod process {p} died with lab up"));
            var (code, output) = LabFixture.RunCli("lab", "down", file);
            Assert.True(code == 0, output);
            Assert.All(pids, p => Assert.False(LabState.Running(p, 0), $"pod process {p} survived lab down"));
            Assert.Empty(ContainerdNode.CgroupProcesses(name));
            Assert.False(Directory.Exists(Path.Combine(CgroupPaths.UnifiedMount()!, "forensics-" + name)));
            Assert.DoesNotContain(File.ReadAllText("/proc/self/mountinfo").Split('\n'), l => l.Contains("/run/forensics/lab/" + name + "/", StringComparison.Ordinal));
            Assert.Empty(LabFixture.Leftovers(name, processes: state.Processes));
        }
        finally
        {
            if (!up.HasExited)
                up.Kill();
            NetnsLab.Down(name);
            File.Delete(file);
        }
    }
}

/// <summary>Attribution sources that cannot be read: a warning, "attribution source: none", and the recording goes on.</summary>
public class RecordAttributionInputTests
{
    private static (int Code, string Stderr, string Dir) Record(params string[] extra)
    {
        var dir = Path.Combine(Scratch.Dir("fx-attrin-"), "rec");
        var cli = Path.Combine(AppContext.BaseDirectory, "forensics.dll");
        var r = Commands.Run("dotnet", [cli, "record", "--duration", "1s", "-t", "exec,exit", "-o", dir, .. extra], TimeSpan.FromSeconds(90));
        return (r.ExitCode, r.Stderr, dir);
    }

    [Fact]
    public void Record_NetnsThatDoesNotExist_UsageErrorNamingIt()
    {
        var (code, stderr, dir) = Record("--netns", "fx-no-such-netns");
        Assert.Equal(2, code);
        Assert.Equal("error: --netns fx-no-such-netns: no such network namespace (/run/netns/fx-no-such-netns)", stderr.Trim());
        Assert.False(Directory.Exists(dir));
    }

    [KernelFact]
    public void Record_ServicesFileNotKubectlJson_BadInputNamingTheFileAndNothingRecorded()
    {
        var file = Path.GetTempFileName();
        File.WriteAllText(file, "NAME TYPE CLUSTER-IP\n");
        try
        {
            var (code, stderr, dir) = Record("--services-file", file);
            Assert.Equal(7, code);
            var line = Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            Assert.StartsWith($"error: {file}: not the JSON of 'kubectl get svc,endpointslices -A -o json'", line, StringComparison.Ordinal);
            Assert.False(Directory.Exists(dir));
        }
        finally
        {
            File.Delete(file);
        }
    }

    /// <summary>A unix socket that answers every connection with a line that is neither HTTP/2 nor gRPC, until disposed.</summary>
    private sealed class GarbageRuntime : IDisposable
    {
        private readonly System.Net.Sockets.Socket listener = new(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
        private readonly CancellationTokenSource stop = new();
        private readonly Task server;

        public GarbageRuntime()
        {
            Path = System.IO.Path.Combine(Scratch.Dir("fx-garbage-"), "runtime.sock");
            listener.Bind(new System.Net.Sockets.UnixDomainSocketEndPoint(Path));
            listener.Listen(16);
            server = Task.Run(async () =>
            {
                while (!stop.IsCancellationRequested)
                {
                    using var s = await listener.AcceptAsync(stop.Token);
                    await s.SendAsync("this is not HTTP/2, nor gRPC\r\n\r\n"u8.ToArray(), stop.Token);
                    s.Shutdown(System.Net.Sockets.SocketShutdown.Both);
                }
            });
        }

        public string Path { get; }

        public void Dispose()
        {
            stop.Cancel();
            listener.Dispose();
            try
            {
                server.Wait(TimeSpan.FromSeconds(10));
            }
            catch (AggregateException)
            {
                // cancelled, or the listener closed under the accept
            }
            stop.Dispose();
        }
    }

    [KernelFact]
    public void Record_RuntimeSocketAbsentAnswersGarbageOrPodsFileNotJson_WarnsAndRecords()
    {
        var notJson = Path.GetTempFileName();
        File.WriteAllText(notJson, "NAME READY STATUS\n");
        using var garbage = new GarbageRuntime();
        try
        {
            foreach (var (args, why) in new[]
            {
                (new[] { "--runtime-endpoint", "unix:///run/forensics-test-absent/containerd.sock" }, "no such socket"),
                (new[] { "--runtime-endpoint", "unix://" + garbage.Path }, "unix://" + garbage.Path + ": Version: the answer is not gRPC"),
                (new[] { "--pods-file", notJson }, "not JSON"),
            })
            {
                var (code, stderr, dir) = Record(args);
                Assert.True(code == 0, stderr);
                var warning = Assert.Single(stderr.Split('\n'), l => l.StartsWith("warning: pod attribution: ", StringComparison.Ordinal));
                Assert.Contains(why, warning, StringComparison.Ordinal);
                Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal); // no stack trace
                var m = Manifest.Read(dir);
                Assert.Equal("none", m.Attribution!.Source);
                Assert.Contains(m.Attribution.Warnings, w => w.Contains(why, StringComparison.Ordinal));
                Assert.True(m.Tables["exec"].Rows > 0); // recorded all the same
                var info = LabFixture.RunCli("info", dir);
                Assert.Contains("attribution source: none", info.Out, StringComparison.Ordinal);
            }
        }
        finally
        {
            File.Delete(notJson);
        }
    }
}
