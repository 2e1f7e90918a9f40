using System.Diagnostics;
using Forensics.Datapath;
using Forensics.Datapath.Bpf;
using Forensics.Datapath.Control;
using Forensics.Datapath.Lab;
using Forensics.Tests;

namespace Forensics.Kernel.Tests;

/// <summary>Labs are heavy (namespaces, processes): their tests run one at a time.</summary>
[CollectionDefinition("lab", DisableParallelization = true)]
public sealed class LabCollection;

internal static class LabFixture
{
    public static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        for (int i = 0; i < 10 && dir is not null; i++, dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Forensics.sln")))
                return dir.FullName;
        throw new InvalidOperationException("repository root not found above " + AppContext.BaseDirectory);
    }

    public static string Example(string file) => Path.Combine(RepoRoot(), "examples", file);

    /// <summary>A lab name unique to this test run: fxl-&lt;6 hex&gt;.</summary>
    public static string UniqueName() => "fxl-" + Guid.NewGuid().ToString("N")[..6];

    public static ClusterSpec Load(string example, string name)
    {
        var c = ClusterLoader.LoadFile(Example(example));
        return c with { Lab = c.Lab! with { Name = name } };
    }

    public static string Cli => Path.Combine(AppContext.BaseDirectory, "forensics");

    /// <summary>What of a lab is still on the machine: namespaces, links in the root namespace, state, the given programs and processes.</summary>
    public static List<string> Leftovers(string name, IEnumerable<uint>? programs = null, IEnumerable<LabProcess>? processes = null)
    {
        var left = new List<string>();
        left.AddRange(NetNamespace.List().Where(n => n.StartsWith(name + "-", StringComparison.Ordinal)).Select(n => "netns " + n));
        var links = Commands.Run("ip", ["-o", "link", "show"]).Stdout.Split('\n');
        left.AddRange(links.Where(l => l.Contains(name, StringComparison.Ordinal)).Select(l => "link " + l.Trim()));
        if (File.Exists(LabNames.StateFile(name)))
            left.Add("state " + LabNames.StateFile(name));
        if (Directory.Exists(LabNames.LogDir(name)))
            left.Add("logs " + LabNames.LogDir(name));
        if (Directory.Exists(LabNames.PinDir(name)))
            left.Add("pins " + LabNames.PinDir(name));
        foreach (var id in programs ?? [])
            if (BpfPrograms.Exists(id))
                left.Add($"bpf program {id} {BpfPrograms.Name(id)}");
        foreach (var p in processes ?? [])
            if (LabState.Running(p.Pid, p.StartTime))
                left.Add($"process {p.Pid} ({p.What})");
        return left;
    }

    public static Process Spawn(params string[] args)
    {
        var psi = new ProcessStartInfo(Cli) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        var p = Process.Start(psi)!;
        p.OutputDataReceived += (_, _) => { };
        p.ErrorDataReceived += (_, _) => { };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return p;
    }

    public static (int Code, string Out) RunCli(params string[] args)
    {
        var r = Commands.Run(Cli, args, TimeSpan.FromSeconds(120));
        return (r.ExitCode, r.Stdout + r.Stderr);
    }

    /// <summary>Waits (bounded) for the lab's state file to satisfy a condition.</summary>
    public static LabState WaitState(string name, Func<LabState, bool> until, TimeSpan limit, Process? owner = null)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < limit)
        {
            LabState? s = null;
            try
            {
                s = LabState.Read(name);
            }
            catch (LabException)
            {
                // caught mid-rename; read again
            }
            if (s is not null && until(s))
                return s;
            if (owner is not null && owner.HasExited)
                throw new InvalidOperationException($"lab up exited with {owner.ExitCode} before the state was reached");
            Thread.Sleep(20);
        }
        throw new TimeoutException($"lab {name}: state not reached within {limit}");
    }

    public static LabOptions WithDatapath() => new() { Datapath = LabDatapath.Factory(new EventOptions { Snaplen = 0, RingBytes = 4u << 20 }) };
}

[Collection("lab")]
public class LabTests
{
    [KernelFact]
    public void LabUpDown_WithoutDatapath_PodsTalkAndNothingIsLeft()
    {
        var name = LabFixture.UniqueName();
        var cluster = LabFixture.Load("starwars.yaml", name);
        IReadOnlyList<LabProcess> processes;
        using (var lab = NetnsLab.Up(cluster))
        {
            processes = [.. lab.State.Processes];
            Assert.Equal(LabNames.Namespaces(cluster).Order(), NetNamespace.List().Where(n => n.StartsWith(name + "-", StringComparison.Ordinal)).Order());
            Assert.All(processes, p => Assert.True(LabState.Running(p.Pid, p.StartTime)));
            // Everything lives in the lab's namespaces: no link of ours in the machine's own namespace.
            Assert.DoesNotContain(Commands.Run("ip", ["-o", "link", "show"]).Stdout.Split('\n'), l => l.Contains(name, StringComparison.Ordinal));
            Assert.Equal("1", NetNamespace.Run(lab.State.NodeNetns, () => File.ReadAllText("/proc/sys/net/ipv4/ip_forward").Trim()));
            Assert.Equal(lab.State.Endpoints.Count, cluster.Pods.Count);
            var step = cluster.Lab!.Steps.Single(s => s.Name == "frontend-to-backend-allowed");
            var r = lab.RunStep(step);
            Assert.Equal("connected", r.Result);
            Assert.True(r.Delivered);
            Assert.Equal(lab.PodIp("frontend-1").ToString(), r.Connect!.Local!.Split(':')[0]);
            Assert.StartsWith("backend-2 ", r.Connect.Reply, StringComparison.Ordinal); // the backend's listener answered
            Assert.False(r.DatapathAttached);
            // Without the datapath nothing translates: the service address is unroutable on the node.
            var svc = lab.RunStep(cluster.Lab.Steps.Single(s => s.Name == "frontend-to-backend-service"));
            Assert.False(svc.Delivered);
        }
        Assert.Empty(LabFixture.Leftovers(name, processes: processes));
        Assert.Empty(NetnsLab.Down(name, cluster)); // idempotent: nothing more to remove
    }

    [KernelFact]
    public void LabUp_PodNamesLongerThanIfnamsiz_LinksShortenedAndUnique()
    {
        var name = LabFixture.UniqueName();
        var c = ClusterLoader.Load($$$"""
            apiVersion: forensics.dev/v1
            kind: Lab
            metadata: {name: {{{name}}}}
            spec: {podCIDR: 10.0.0.0/24, serviceCIDR: 10.0.1.0/24, nodeIP: 192.0.2.1}
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: a-very-long-pod-name-1, labels: {app: x}}
            spec: {containers: [{name: c, ports: [{containerPort: 7000, protocol: UDP}]}]}
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: a-very-long-pod-name-2, labels: {app: x}}
            """, "long.yaml");
        using var lab = NetnsLab.Up(c);
        var links = lab.State.Endpoints.Select(e => e.HostLink).ToList();
        Assert.All(links, l => Assert.True(l.Length <= 15, l));
        Assert.Equal(2, links.Distinct().Count());
        var udp = new ScenarioStep("u", "default/a-very-long-pod-name-2", "udp", $"{lab.PodIp("a-very-long-pod-name-1")}:7000", [], null);
        var r = lab.RunStep(udp);
        Assert.Equal("replied", r.Result);
        Assert.StartsWith("a-very-long-pod-name-1 ", r.Connect!.Reply, StringComparison.Ordinal);
    }

    [KernelFact]
    public void LabUp_KilledMidway_DownRemovesEverything()
    {
        var name = LabFixture.UniqueName();
        var file = LabFixture.Example("starwars.yaml");
        using var up = LabFixture.Spawn("lab", "up", file, "--name", name);
        // Kill it while it is still making pods: the node and world exist, some pods do.
        var state = LabFixture.WaitState(name, s => s.Namespaces.Count >= 4, TimeSpan.FromSeconds(60), up);
        up.Kill(entireProcessTree: false); // SIGKILL: no cleanup of its own
        up.WaitForExit(10_000);
        state = LabState.Read(name)!;
        Assert.NotEqual("ready", state.Phase);
        Assert.NotEmpty(LabFixture.Leftovers(name));

        var (code, output) = LabFixture.RunCli("lab", "down", file, "--name", name);

        Assert.True(code == 0, output);
        Assert.Contains($"namespace {name}-node", output, StringComparison.Ordinal);
        Assert.Empty(LabFixture.Leftovers(name, state.ProgramIds, state.Processes));
        Assert.Equal(0, LabFixture.RunCli("lab", "down", file, "--name", name).Code);
    }

    [KernelFact]
    public void LabUp_KilledWhenReady_DownRemovesNamespacesListenersAndPrograms()
    {
        var name = LabFixture.UniqueName();
        var file = LabFixture.Example("starwars.yaml");
        using var up = LabFixture.Spawn("lab", "up", file, "--name", name);
        var state = LabFixture.WaitState(name, s => s.Phase == "ready", TimeSpan.FromSeconds(120), up);
        Assert.True(state.DatapathAttached);
        // Every pod's host veth and the world device carry two programs (ingress and egress).
        Assert.NotEmpty(state.ProgramIds);
        Assert.All(state.ProgramIds, id => Assert.StartsWith("fx_", BpfPrograms.Name(id), StringComparison.Ordinal));
        Assert.NotEmpty(state.Processes);

        up.Kill(entireProcessTree: false);
        up.WaitForExit(10_000);
        var (code, output) = LabFixture.RunCli("lab", "down", file, "--name", name);

        Assert.True(code == 0, output);
        Assert.Empty(LabFixture.Leftovers(name, state.ProgramIds, state.Processes));
    }

    [KernelFact]
    public void LabDown_StateFileLost_RemovesByTheNamesInTheFile()
    {
        var name = LabFixture.UniqueName();
        var file = LabFixture.Example("starwars.yaml");
        using var up = LabFixture.Spawn("lab", "up", file, "--name", name, "--no-datapath");
        var state = LabFixture.WaitState(name, s => s.Phase == "ready", TimeSpan.FromSeconds(120), up);
        up.Kill(entireProcessTree: false);
        up.WaitForExit(10_000);
        File.Delete(LabNames.StateFile(name));

        var (code, output) = LabFixture.RunCli("lab", "down", file, "--name", name);

        Assert.True(code == 0, output);
        // The listeners were found through their network namespace, the namespaces through the file.
        Assert.Empty(LabFixture.Leftovers(name, processes: state.Processes));
    }

    [KernelFact]
    public void LabDown_WhileUpRunsInForeground_StopsItAndRemovesEverything()
    {
        var name = LabFixture.UniqueName();
        var file = LabFixture.Example("starwars.yaml");
        using var up = LabFixture.Spawn("lab", "up", file, "--name", name);
        var state = LabFixture.WaitState(name, s => s.Phase == "ready", TimeSpan.FromSeconds(120), up);
        var status = LabFixture.RunCli("lab", "status", file, "--name", name);
        Assert.Contains("ready, up process", status.Out, StringComparison.Ordinal);
        Assert.Contains("fx_from_endpoi", status.Out, StringComparison.Ordinal);

        // A second process runs steps in the lab that is up (delivery checked, not reasons).
        var run = LabFixture.RunCli("lab", "run", file, "--name", name, "--step", "frontend-to-backend-allowed", "--step", "xwing-to-denylisted-host");
        Assert.True(run.Code == 0, run.Out);
        Assert.Contains($"lab {name} is up (pid {up.Id})", run.Out, StringComparison.Ordinal);
        Assert.Contains("2 of 2 steps met their expectation", run.Out, StringComparison.Ordinal);

        var (code, output) = LabFixture.RunCli("lab", "down", file, "--name", name);

        Assert.True(code == 0, output);
        Assert.True(up.WaitForExit(15_000));
        Assert.Equal(0, up.ExitCode); // it got SIGTERM and tore down itself
        Assert.Empty(LabFixture.Leftovers(name, state.ProgramIds, state.Processes));
        Assert.Contains(": down", LabFixture.RunCli("lab", "status", file, "--name", name).Out, StringComparison.Ordinal);
    }
}

/// <summary>The example scenarios in a lab with the real datapath and real traffic, checked against the datapath's events.</summary>
[Collection("lab")]
public class LabScenarioTests
{
    private static Dictionary<string, StepReport> RunAll(NetnsLab lab) => lab.RunAll().ToDictionary(r => r.Step.Name);

    [KernelFact]
    public void StarwarsScenario_EveryStep_MeetsItsExpectation()
    {
        var name = LabFixture.UniqueName();
        using var lab = NetnsLab.Up(LabFixture.Load("starwars.yaml", name), LabFixture.WithDatapath());
        var reports = lab.RunAll();
        Assert.Equal(7, reports.Count);
        Assert.All(reports, r => Assert.True(r.Passed, $"{r.Step.Name}: {r.Detail}: {string.Join("; ", r.Failures)}"));
        Assert.All(reports, r => Assert.True(r.DatapathAttached));
    }

    [KernelFact]
    public void StarwarsDemo_CiliumFilesUnmodified_TiefighterLandsXwingDeniedByRule1()
    {
        // examples/starwars-demo: Cilium's http-sw-app.yaml (a Deployment of 2 deathstars) and
        // sw_l3_l4_policy.yaml, as they are, in a lab
        var name = LabFixture.UniqueName();
        var cluster = LabFixture.Load("starwars-demo/lab.yaml", name);
        Assert.Equal(2, cluster.Pods.Count(p => p.Owner == "Deployment default/deathstar"));
        using var lab = NetnsLab.Up(cluster, LabFixture.WithDatapath());
        var dp = ((LabDatapath)lab.Datapath!).Datapath;
        var r = RunAll(lab);

        Assert.All(r.Values, s => Assert.True(s.Passed, $"{s.Step.Name}: {s.Detail}: {string.Join("; ", s.Failures)}"));
        var landed = r["tiefighter-lands"];
        Assert.Equal(200, landed.Connect!.HttpStatus);
        var dnat = Assert.Single(landed.Events, e => e.NatKind == "DNAT");
        Assert.StartsWith("deathstar-", cluster.Pods.Single(p => p.Ip!.ToString() == dnat.XlatedDestination).Name, StringComparison.Ordinal);
        var denied = r["xwing-denied"];
        var verdict = denied.Events.First(e => e.Kind == "policy");
        Assert.Equal(("denied", "ingress"), (verdict.Verdict, verdict.Direction));
        var drop = denied.Events.First(e => e.Kind == "drop");
        Assert.Equal(133, drop.Reason);
        // the verdict that let the tiefighter in names the policy and rule
        var allowed = landed.Events.First(e => e.Kind == "policy");
        var rule = dp.Snapshot().Rules.Single(x => x.Id == allowed.RuleId);
        Assert.Equal("default/rule1 spec.ingress[0]", Assert.Single(rule.Rules).ToString());
    }

    [KernelFact]
    public void StarwarsScenario_StepsMeetTheRightVerdictsDropsAndTranslations()
    {
        var name = LabFixture.UniqueName();
        var cluster = LabFixture.Load("starwars.yaml", name);
        using var lab = NetnsLab.Up(cluster, LabFixture.WithDatapath());
        var dp = ((LabDatapath)lab.Datapath!).Datapath;
        uint Identity(string pod) => dp.IdentityOf(cluster.Pods.Single(p => p.Name == pod)).Id;
        var frontend = lab.PodIp("frontend-1").ToString();
        var backend = lab.PodIp("backend-2").ToString();
        var xwing = lab.PodIp("xwing").ToString();
        var deathstar = lab.PodIp("deathstar-1").ToString();
        var r = RunAll(lab);

        // frontend-1 -> backend-2:8080: allowed by the L4 policy at the backend's ingress, no drop.
        var allowed = r["frontend-to-backend-allowed"];
        Assert.Equal("connected", allowed.Result);
        var verdict = Assert.Single(allowed.Events, e => e.Kind == "policy");
        Assert.Equal(("allowed", "L3-L4", "ingress"), (verdict.Verdict, verdict.Match, verdict.Direction));
        Assert.Equal((frontend, backend, 8080), (verdict.Source, verdict.Destination, verdict.DestinationPort));
        Assert.Equal(Identity("frontend-1"), verdict.RemoteIdentity);
        Assert.DoesNotContain(allowed.Events, e => e.Kind == "drop");

        // The same pair on 9090: denied at the backend's ingress, dropped with 133 (Policy denied).
        var denied = r["frontend-to-backend-port-not-allowed"];
        Assert.Equal("timeout", denied.Result);
        var drop = denied.Events.First(e => e.Kind == "drop");
        Assert.Equal(133, drop.Reason);
        Assert.Equal((frontend, backend, 9090), (drop.Source, drop.Destination, drop.DestinationPort));
        Assert.Equal((Identity("frontend-1"), Identity("backend-2")), (drop.SourceIdentity, drop.DestinationIdentity));
        Assert.Equal(lab.State.Endpoints.Single(e => e.Pod == "default/backend-2").Ifindex, (int)drop.Ifindex);
        Assert.All(denied.Events.Where(e => e.Kind == "drop"), e => Assert.Equal(133, e.Reason)); // retransmitted SYNs, same reason
        Assert.Contains(denied.Events, e => e.Kind == "policy" && e.Verdict == "denied" && e.Direction == "ingress");

        // backend-service 10.0.1.100:8080 -> backend-2:8080 and back.
        var svc = r["frontend-to-backend-service"];
        Assert.Equal(200, svc.Connect!.HttpStatus);
        Assert.StartsWith("backend-2 ", svc.Connect.Reply, StringComparison.Ordinal);
        var dnat = Assert.Single(svc.Events, e => e.NatKind == "DNAT");
        Assert.Equal(("10.0.1.100", 8080, backend, 8080), (dnat.Destination, dnat.DestinationPort, dnat.XlatedDestination, dnat.XlatedDestinationPort));
        var rev = svc.Events.First(e => e.NatKind == "rev-DNAT");
        Assert.Equal((backend, 8080, "10.0.1.100", 8080), (rev.Source, rev.SourcePort, rev.XlatedSource, rev.XlatedSourcePort));
        Assert.Equal(frontend, rev.XlatedDestination);

        // xwing -> the outside world through SNAT to the node address, and the reply translated back.
        foreach (var (step, proto) in new[] { ("xwing-to-outside-world", 6), ("xwing-udp-to-outside-world", 17) })
        {
            var world = r[step];
            Assert.True(world.Delivered, world.Detail);
            var snat = world.Events.First(e => e.NatKind == "SNAT");
            Assert.Equal((xwing, "192.0.2.1", proto), (snat.Source, snat.XlatedSource, snat.Protocol));
            var revSnat = world.Events.First(e => e.NatKind == "rev-SNAT");
            Assert.Equal(("192.0.2.1", xwing, snat.XlatedSourcePort), (revSnat.Destination, revSnat.XlatedDestination, revSnat.DestinationPort));
            Assert.Contains(world.Events, e => e.Kind == "policy" && e.Verdict == "allowed" && e.Direction == "egress" && e.RemoteIdentity == 2); // world
            // The world saw the node address, never the pod's.
            Assert.EndsWith(world.Step.Target!, world.Connect!.Remote, StringComparison.Ordinal);
        }

        // xwing -> deathstar service inside the cluster: DNAT to the one backend, no SNAT.
        var ds = r["xwing-to-deathstar-service"];
        Assert.StartsWith("deathstar-1 ", ds.Connect!.Reply, StringComparison.Ordinal);
        Assert.Contains(ds.Events, e => e.NatKind == "DNAT" && e.Destination == "10.0.1.80" && e.XlatedDestination == deathstar && e.XlatedDestinationPort == 80);
        Assert.DoesNotContain(ds.Events, e => e.NatKind == "SNAT");

        // The egressDeny rule: dropped at the xwing's egress with 181 (Policy denied by denylist), nothing translated.
        var deny = r["xwing-to-denylisted-host"];
        Assert.False(deny.Delivered);
        var d181 = deny.Events.First(e => e.Kind == "drop");
        Assert.Equal((181, xwing, "203.0.113.66", 443), (d181.Reason, d181.Source, d181.Destination, d181.DestinationPort));
        Assert.Equal(lab.State.Endpoints.Single(e => e.Pod == "default/xwing").Ifindex, (int)d181.Ifindex);
        Assert.Contains(deny.Events, e => e.Kind == "policy" && e.Verdict == "denied" && e.Direction == "egress");
        Assert.DoesNotContain(deny.Events, e => e.NatKind == "SNAT");
    }

    [KernelFact]
    public void TwoLabs_SameAddresses_RunSideBySideEachSeeingOnlyItsOwnTraffic()
    {
        var a = LabFixture.UniqueName();
        var b = LabFixture.UniqueName();
        using var labA = NetnsLab.Up(LabFixture.Load("starwars.yaml", a), LabFixture.WithDatapath());
        using var labB = NetnsLab.Up(LabFixture.Load("starwars.yaml", b), LabFixture.WithDatapath());
        Assert.Equal(labA.PodIp("backend-2"), labB.PodIp("backend-2"));
        Assert.Empty(labA.State.ProgramIds.Intersect(labB.State.ProgramIds));

        var denied = labA.RunStep(labA.Cluster.Lab!.Steps.Single(s => s.Name == "frontend-to-backend-port-not-allowed"));
        var allowed = labB.RunStep(labB.Cluster.Lab!.Steps.Single(s => s.Name == "frontend-to-backend-allowed"));

        Assert.True(denied.Passed, string.Join("; ", denied.Failures));
        Assert.True(allowed.Passed, string.Join("; ", allowed.Failures));
        // Lab B's datapath never saw lab A's dropped connection.
        Assert.DoesNotContain(labB.Events!.All(), e => e.Kind == "drop");
        Assert.Contains(labA.Events!.All(), e => e.Kind == "drop" && e.Reason == 133);
    }

    [KernelFact]
    public void RunStep_WrongExpectation_ReportsWhatWasSeenInstead()
    {
        var name = LabFixture.UniqueName();
        var cluster = LabFixture.Load("starwars.yaml", name);
        using var lab = NetnsLab.Up(cluster, LabFixture.WithDatapath());
        var step = cluster.Lab!.Steps.Single(s => s.Name == "frontend-to-backend-port-not-allowed");
        // Claim the wrong reason (181 instead of 133) and a translation that does not happen.
        var wrong = step with { Expect = new StepExpectation(false, 181, $"DNAT 10.0.1.100:8080 -> {lab.PodIp("backend-2")}:9090") };

        var r = lab.RunStep(wrong);

        Assert.False(r.Passed);
        Assert.Contains(r.Failures, f => f.Contains("expected a drop with reason 181", StringComparison.Ordinal) && f.Contains("saw 133 (Policy denied)", StringComparison.Ordinal));
        Assert.Contains(r.Failures, f => f.Contains("saw no translation", StringComparison.Ordinal));
    }
}

[Collection("lab")]
public class LabShopScenarioTests
{
    [KernelFact]
    public void FqdnScenario_EveryStep_MeetsItsExpectation()
    {
        // examples/fqdn.yaml: the world's resolver (dns:) answers the client's real lookups; toFQDNs allows
        // api.example.com's address only after the lookup, and never www.other.example's
        var name = LabFixture.UniqueName();
        using var lab = NetnsLab.Up(LabFixture.Load("fqdn.yaml", name), LabFixture.WithDatapath());
        var reports = lab.RunAll().ToDictionary(r => r.Step.Name);
        Assert.All(reports.Values, r => Assert.True(r.Passed, $"{r.Step.Name}: {r.Detail}: {string.Join("; ", r.Failures)}"));
        Assert.Equal(5, reports.Count);
        var dp = ((LabDatapath)lab.Datapath!).Datapath;
        Assert.Equal(["203.0.113.10"], dp.LearntNames["api.example.com."].Select(a => a.ToString()));
        Assert.Equal(["203.0.113.20"], dp.LearntNames["www.other.example."].Select(a => a.ToString()));
        Assert.Contains(reports["after-the-lookup-allowed"].Events, e => e is { Kind: "policy", Verdict: "allowed", Destination: "203.0.113.10" });
    }

    [KernelFact]
    public void ShopScenario_EveryStep_MeetsItsExpectation()
    {
        var name = LabFixture.UniqueName();
        using var lab = NetnsLab.Up(LabFixture.Load("shop.yaml", name), LabFixture.WithDatapath());
        var reports = lab.RunAll().ToDictionary(r => r.Step.Name);
        Assert.All(reports.Values, r => Assert.True(r.Passed, $"{r.Step.Name}: {r.Detail}: {string.Join("; ", r.Failures)}"));
        // A service without backends: dropped with 158 before any policy, towards the service address.
        var nb = reports["web-to-payments-no-backend"].Events.First(e => e.Kind == "drop");
        Assert.Equal((158, "10.0.1.20", 443), (nb.Reason, nb.Destination, nb.DestinationPort));
        // Deny wins: the web tier's egress allows the db, the db's ingress allows its namespace, the deny rule drops.
        var dw = reports["web-to-db-deny-wins"].Events;
        Assert.Contains(dw, e => e.Kind == "policy" && e.Direction == "egress" && e.Verdict == "allowed");
        Assert.Contains(dw, e => e.Kind == "drop" && e.Reason == 181 && e.Direction == "ingress");
        Assert.Equal("exited", reports["monitor-runs-a-command"].Result);
    }

    [KernelFact]
    public void ServiceWithTwoBackends_ManyConnections_BothBackendsAnswerAndEachFlowIsTranslatedBack()
    {
        var name = LabFixture.UniqueName();
        var cluster = LabFixture.Load("shop.yaml", name);
        using var lab = NetnsLab.Up(cluster, LabFixture.WithDatapath());
        var step = cluster.Lab!.Steps.Single(s => s.Name == "web-to-api-service");
        var answered = new List<string>();
        for (int i = 0; i < 12 && answered.Distinct().Count() < 2; i++)
        {
            var r = lab.RunStep(step);
            Assert.True(r.Delivered, r.Detail);
            var dnat = r.Events.Single(e => e.NatKind == "DNAT");
            Assert.Contains(r.Events, e => e.NatKind == "rev-DNAT" && e.Source == dnat.XlatedDestination && e.XlatedSource == "10.0.1.10");
            // The backend that answered is the one the DNAT event named.
            Assert.EndsWith($" {dnat.XlatedDestination}:8080", r.Connect!.Reply, StringComparison.Ordinal);
            answered.Add(r.Connect.Reply!.Split(' ')[0]);
        }
        Assert.Equal(["api-1", "api-2"], answered.Distinct().Order());
    }
}

[Collection("lab")]
public class LabCliTests
{
    [KernelFact]
    public void LabRunCli_Starwars_PrintsEveryStepOkAndLeavesNothing()
    {
        var name = LabFixture.UniqueName();
        var (code, output) = LabFixture.RunCli("lab", "run", LabFixture.Example("starwars.yaml"), "--name", name);
        Assert.True(code == 0, output);
        Assert.Contains("7 of 7 steps met their expectation", output, StringComparison.Ordinal);
        Assert.Contains("drop (Policy denied by denylist)", output, StringComparison.Ordinal);
        Assert.Contains("DNAT 10.0.0.", output, StringComparison.Ordinal);
        Assert.Empty(LabFixture.Leftovers(name));
    }

    [KernelFact]
    public void LabRunCli_StepMissesExpectation_ExitsOneAndSaysWhy()
    {
        var name = LabFixture.UniqueName();
        var file = Path.Combine(Path.GetTempPath(), name + ".yaml");
        // The allowed step now claims it is dropped.
        var text = File.ReadAllText(LabFixture.Example("starwars.yaml")).Replace(
            "      tcp: backend-2:8080\n      expect:\n        delivered: true", "      tcp: backend-2:8080\n      expect:\n        delivered: false", StringComparison.Ordinal);
        File.WriteAllText(file, text);
        try
        {
            var (code, output) = LabFixture.RunCli("lab", "run", file, "--name", name, "--step", "frontend-to-backend-allowed");
            Assert.Equal(1, code);
            Assert.Contains("FAIL frontend-to-backend-allowed", output, StringComparison.Ordinal);
            Assert.Contains("expectation: expected dropped, but it was delivered (connected)", output, StringComparison.Ordinal);
            Assert.Contains("0 of 1 steps met their expectation", output, StringComparison.Ordinal);
            Assert.Empty(LabFixture.Leftovers(name));
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public void LabCli_Help_MatchesGoldenFile()
    {
        // A change in what users read is a visible diff: regenerate with `forensics lab --help > tests/Forensics.Kernel.Tests/golden/lab-help.txt`.
        var golden = File.ReadAllText(Path.Combine(LabFixture.RepoRoot(), "tests", "Forensics.Kernel.Tests", "golden", "lab-help.txt"));
        var r = Commands.Run(LabFixture.Cli, ["lab", "--help"]);
        Assert.Equal(0, r.ExitCode);
        Assert.Equal(golden, r.Stdout);
    }

    [Fact]
    public void LabCli_BadYaml_OneLineErrorWithExitCode7()
    {
        var file = Path.Combine(Path.GetTempPath(), LabFixture.UniqueName() + ".yaml");
        File.WriteAllText(file, "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containerz: []}\n");
        try
        {
            var (code, output) = LabFixture.RunCli("lab", "up", file);
            Assert.Equal(7, code);
            Assert.Equal($"error: {file}:4: document 1 (Pod default/a): spec.containerz: unknown field", output.Trim().Split(" (expected")[0]);
        }
        finally
        {
            File.Delete(file);
        }
    }
}
