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
            if (LabState.ProcessStartTime(p.Pid) is { } t && t == p.StartTime)
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
        using (var lab = Lab.Up(cluster))
        {
            processes = [.. lab.State.Processes];
            Assert.Equal(LabNames.Namespaces(cluster).Order(), NetNamespace.List().Where(n => n.StartsWith(name + "-", StringComparison.Ordinal)).Order());
            Assert.All(processes, p => Assert.NotNull(LabState.ProcessStartTime(p.Pid)));
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
        Assert.Empty(Lab.Down(name, cluster)); // idempotent: nothing more to remove
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
        using var lab = Lab.Up(c);
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
    public void LabDown_WhileUpRunsInForeground_StopsItAndRemovesEverything()
    {
        var name = LabFixture.UniqueName();
        var file = LabFixture.Example("starwars.yaml");
        using var up = LabFixture.Spawn("lab", "up", file, "--name", name);
        var state = LabFixture.WaitState(name, s => s.Phase == "ready", TimeSpan.FromSeconds(120), up);
        var status = LabFixture.RunCli("lab", "status", file, "--name", name);
        Assert.Contains("ready, up process", status.Out, StringComparison.Ordinal);
        Assert.Contains("fx_from_endpoi", status.Out, StringComparison.Ordinal);

        var (code, output) = LabFixture.RunCli("lab", "down", file, "--name", name);

        Assert.True(code == 0, output);
        Assert.True(up.WaitForExit(15_000));
        Assert.Equal(0, up.ExitCode); // it got SIGTERM and tore down itself
        Assert.Empty(LabFixture.Leftovers(name, state.ProgramIds, state.Processes));
        Assert.Contains(": down", LabFixture.RunCli("lab", "status", file, "--name", name).Out, StringComparison.Ordinal);
    }
}
