using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using Forensics.Format;
using Forensics.Datapath;
using Forensics.Datapath.Control;
using Forensics.Datapath.Lab;

namespace Forensics.Cli;

/// <summary>
/// <c>forensics lab up|status|run|down FILE</c>: a single-machine cluster of network
/// namespaces built from the same YAML, with the datapath attached; plus the hidden
/// traffic verbs the lab runs inside its namespaces (serve, connect).
/// </summary>
public static class LabCommand
{
    private const string Description = """
        A lab: a real single-machine cluster built from Kubernetes-shaped YAML (Pod, Service,
        CiliumNetworkPolicy, and a Lab document with the pod and service CIDRs, the node address,
        the outside-world hosts and the scenario's steps). Each pod gets a network namespace
        (<lab>-<pod>) with a veth pair to the node namespace (<lab>-node), which routes and carries
        the datapath; outside hosts live in <lab>-world behind the node's world device (SNAT to the
        node address). Nothing is added to the machine's own namespace. Needs root.

        The datapath's tcx links live as long as the process that attached them, so `lab up` stays
        in the foreground: Ctrl-C (or SIGTERM, or `lab down` from another terminal) detaches it and
        removes the lab. `lab run` builds the lab, runs the steps, checks each against its
        expectation (delivered or dropped, the drop reason, the translation), and removes the lab;
        if the lab is already up, it runs the steps in it and checks delivery only. `lab down`
        removes everything a lab made, also after `up` was killed; it is idempotent.
        State: /run/forensics/lab/<lab>.json.
        """;

    public static Command Build()
    {
        var cmd = new Command("lab", Description);
        cmd.Subcommands.Add(Up());
        cmd.Subcommands.Add(Status());
        cmd.Subcommands.Add(Run());
        cmd.Subcommands.Add(Down());
        cmd.Subcommands.Add(Serve());
        cmd.Subcommands.Add(Connect());
        return cmd;
    }

    private static Argument<FileInfo> FileArgument()
    {
        var a = new Argument<FileInfo>("FILE") { Description = "The cluster YAML (with a Lab document)" };
        a.Validators.Add(r =>
        {
            var f = r.GetValueOrDefault<FileInfo>();
            if (f is not null && Vocabulary.InputFileProblem(f.FullName) is { } problem)
                r.AddError($"{f}: {problem}");
        });
        return a;
    }

    private static Option<bool> NoDatapathOption() => new("--no-datapath") { Description = "Build the lab without the BPF datapath (plain routing, no policy, no NAT)" };

    private static Option<string?> NameOption()
    {
        var o = new Option<string?>("--name") { Description = "Use this lab name instead of the Lab document's (e.g. to run two copies): lowercase letters, digits and '-', at most 24" };
        o.Validators.Add(r =>
        {
            var v = r.Tokens[0].Value;
            if (!System.Text.RegularExpressions.Regex.IsMatch(v, "^[a-z0-9]([-a-z0-9]{0,22}[a-z0-9])?$"))
                r.AddError($"--name: '{v}' is not a valid lab name (lowercase letters, digits and '-', at most 24)");
        });
        return o;
    }

    /// <summary>--l7 allow|deny: what a port with L7 rules gets at L4 (the lab is no L7 proxy).</summary>
    internal static Option<string> L7Option() =>
        Vocabulary.Choice("--l7", "Ports whose policy has L7 rules (http, kafka, dns): allow them at L4 (the L7 rules are not enforced), or deny them", "allow", "allow", "deny");

    /// <summary>Runs a lab verb: the lab makes network namespaces and links, which needs root; errors go to the top-level handler.</summary>
    private static int Guard(Func<int> action)
    {
        var caps = Prerequisites.EffectiveCapabilities();
        const int CapNetAdmin = 12, CapSysAdmin = 21;
        if ((caps & (1UL << CapSysAdmin)) == 0 || (caps & (1UL << CapNetAdmin)) == 0)
            throw new PrerequisiteException("the lab makes network namespaces, links and routes: it needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN); run it with sudo");
        return action();
    }

    /// <summary>--max-pods: a lab makes a network namespace and a veth pair per pod.</summary>
    internal static Option<long> MaxPodsOption() =>
        Vocabulary.Number("--max-pods", "refuse a cluster YAML with more pods than this", ClusterLimits.Default.MaxPods, 1, 65536);

    private static ClusterSpec LoadLab(FileInfo file, string? name, ParseResult parse, Option<long> maxPods)
    {
        var cluster = ClusterLoader.LoadFile(file.FullName, ClusterLimits.Default with { MaxPods = (int)parse.GetValue(maxPods) });
        if (cluster.Lab is null)
            throw new ClusterSpecException($"{file.FullName}: no Lab document: `forensics lab` needs one (kind: Lab, apiVersion: {ClusterLoader.LabApiVersion})");
        if (name is not null)
            cluster = cluster with { Lab = cluster.Lab with { Name = name } };
        foreach (var n in cluster.Notices)
            Console.Error.WriteLine("note: " + n);
        return cluster;
    }

    private static LabOptions Options(bool datapath, bool quiet, bool serve = false, bool collect = true, EventOptions? events = null) => new()
    {
        Datapath = datapath ? LabDatapath.Factory((events ?? new EventOptions()) with { SelfPid = (uint)Environment.ProcessId }) : null,
        Progress = quiet ? null : line => Console.WriteLine("  " + line),
        Serve = serve,
        CollectEvents = collect,
    };

    private static Command Up()
    {
        var file = FileArgument();
        var noDatapath = NoDatapathOption();
        var name = NameOption();
        var maxPods = MaxPodsOption();
        var events = new Option<bool>("--events") { Description = "Print the datapath's drop, policy verdict and NAT events while up" };
        var l7 = L7Option();
        var (aggregation, capture, captureFirst) = RecordCommand.SamplingOptions();
        var cmd = new Command("up", "Build the lab and keep it (and the datapath) up in the foreground until Ctrl-C, SIGTERM or `lab down`") { file, noDatapath, name, events, maxPods, l7, aggregation, capture, captureFirst };
        cmd.SetAction(parse => Guard(() =>
        {
            var cluster = LoadLab(parse.GetValue(file)!, parse.GetValue(name), parse, maxPods) with { L7Deny = parse.GetValue(l7) == "deny" };
            using var stop = new ManualResetEventSlim();
            using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Set(); });
            using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Set(); });
            Console.WriteLine($"lab {cluster.Lab!.Name}: building from {cluster.SourceFile}");
            var sampling = new EventOptions
            {
                MonitorAggregation = parse.GetValue(aggregation) == "none" ? MonitorAggregation.None : MonitorAggregation.Medium,
                CaptureFirst = RecordCommand.CaptureFirstOf(parse.GetValue(capture)!, (uint)parse.GetValue(captureFirst)),
                Snaplen = parse.GetValue(capture) == "none" ? 0 : new EventOptions().Snaplen,
            };
            using var lab = NetnsLab.Up(cluster, Options(!parse.GetValue(noDatapath), quiet: false, serve: true, collect: parse.GetValue(events), events: sampling));
            PrintSummary(lab);
            Console.WriteLine($"lab {lab.Name} is up (pid {Environment.ProcessId}); Ctrl-C or `forensics lab down {parse.GetValue(file)}` removes it");
            int printed = 0;
            while (!stop.Wait(200))
            {
                if (parse.GetValue(events) && lab.Events is { } ev)
                {
                    var all = ev.All().Where(e => e.Kind != "trace").ToList();
                    foreach (var e in all.Skip(printed))
                        Console.WriteLine(e.Text);
                    printed = all.Count;
                }
            }
            Console.WriteLine($"lab {lab.Name}: removing");
            return (int)ExitCode.Ok;
        }));
        return cmd;
    }

    private static void PrintSummary(NetnsLab lab)
    {
        var s = lab.State;
        var spec = lab.Cluster.Lab!;
        Console.WriteLine($"node {s.NodeNetns}: {spec.NodeIp} on {s.WorldLink}, pod CIDR {spec.PodCidr}, service CIDR {spec.ServiceCidr}");
        foreach (var e in s.Endpoints)
            Console.WriteLine($"pod {e.Pod}: {e.Ip} in {e.Netns}, host link {e.HostLink} (ifindex {e.Ifindex})");
        foreach (var h in spec.Outside)
            Console.WriteLine($"world {h.Name}: {h.Ip} in {s.WorldNetns}, tcp [{string.Join(",", h.TcpPorts)}] udp [{string.Join(",", h.UdpPorts)}]");
        foreach (var svc in lab.Cluster.Services)
            Console.WriteLine($"service {svc.Namespace}/{svc.Name}: {svc.ClusterIp?.ToString() ?? svc.ExternalName ?? "None"} ports {string.Join(",", svc.Ports.Select(p => $"{p.Port}->{p.TargetName ?? p.TargetPort.ToString(System.Globalization.CultureInfo.InvariantCulture)}/{p.Protocol}"))}");
        foreach (var e in s.Endpoints.Where(e => e.SandboxId is not null))
            Console.WriteLine($"  sandbox {e.SandboxId![..12]} uid {e.PodUid}; containers {string.Join(", ", e.Containers.Select(c => $"{c.Name} {c.Id[..12]} ({c.Image})"))}");
        if (lab.Notice is { } notice)
            Console.WriteLine($"{notice}; CRI endpoint {s.RuntimeEndpoint}");
        else
            Console.WriteLine(s.DatapathAttached
                ? $"datapath attached: BPF programs {string.Join(",", s.ProgramIds)}"
                : "datapath not attached (--no-datapath)");
        if (s.MonitorSocket is not null)
            Console.WriteLine($"datapath events served on {s.MonitorSocket} (`forensics monitor`, `forensics record -d 10m` attach to it), state maps pinned in {s.PinDir}");
    }

    private static Command Status()
    {
        var file = FileArgument();
        var name = NameOption();
        var maxPods = MaxPodsOption();
        var cmd = new Command("status", "Show whether the lab is up: its process, namespaces, pods and the BPF programs attached") { file, name, maxPods };
        cmd.SetAction(parse => Guard(() =>
        {
            var cluster = LoadLab(parse.GetValue(file)!, parse.GetValue(name), parse, maxPods);
            var labName = cluster.Lab!.Name;
            var state = LabState.Read(labName);
            var existing = LabNames.Namespaces(cluster).Where(NetNamespace.Exists).ToList();
            if (state is null && existing.Count == 0)
            {
                Console.WriteLine($"lab {labName}: down");
                return (int)ExitCode.Ok;
            }
            var alive = state?.UpAlive() == true;
            Console.WriteLine($"lab {labName}: {(state is null ? "leftovers without state" : state.Phase)}, up process {state?.UpPid} {(alive ? "running" : "gone")}");
            foreach (var ns in LabNames.Namespaces(cluster))
                Console.WriteLine($"  namespace {ns}: {(NetNamespace.Exists(ns) ? "present" : "absent")}");
            if (state is not null && state.Node == LabNodeKinds.Containerd)
            {
                Console.WriteLine($"  containerd node: CRI endpoint {state.RuntimeEndpoint}");
                foreach (var e in state.Endpoints)
                    Console.WriteLine($"  pod {e.Pod}: {e.Ip}, sandbox {e.SandboxId}, containers {string.Join(", ", e.Containers.Select(c => $"{c.Name} {c.Id}"))}");
            }
            else if (state is not null && NetNamespace.Exists(state.NodeNetns))
            {
                foreach (var e in state.Endpoints)
                {
                    var progs = NetNamespace.Run(state.NodeNetns, () =>
                        Forensics.Datapath.Bpf.BpfPrograms.AttachedTcx(e.Ifindex, Forensics.Datapath.Bpf.TcDirection.Ingress)
                            .Concat(Forensics.Datapath.Bpf.BpfPrograms.AttachedTcx(e.Ifindex, Forensics.Datapath.Bpf.TcDirection.Egress)).ToList());
                    Console.WriteLine($"  pod {e.Pod}: {e.Ip}, {e.HostLink} ifindex {e.Ifindex}, tcx programs [{string.Join(",", progs.Select(p => $"{p} {Forensics.Datapath.Bpf.BpfPrograms.Name(p)}"))}]");
                }
            }
            if (state is not null && !alive && state.Phase != "down")
                Console.WriteLine($"  the up process is gone: run `forensics lab down {parse.GetValue(file)}` to remove the leftovers");
            return (int)ExitCode.Ok;
        }));
        return cmd;
    }

    private static Command Run()
    {
        var file = FileArgument();
        var noDatapath = NoDatapathOption();
        var name = NameOption();
        var maxPods = MaxPodsOption();
        var steps = new Option<string[]>("--step") { Description = "Run only these steps (by name; repeatable)" };
        var l7 = L7Option();
        steps.Validators.Add(r =>
        {
            foreach (var t in r.Tokens)
                if (string.IsNullOrWhiteSpace(t.Value))
                    r.AddError("--step: an empty step name");
        });
        var cmd = new Command("run", "Run the scenario's steps in the lab and print what each met; exit 1 if a step misses its expectation") { file, noDatapath, name, steps, maxPods, l7 };
        cmd.SetAction(parse => Guard(() =>
        {
            var cluster = LoadLab(parse.GetValue(file)!, parse.GetValue(name), parse, maxPods) with { L7Deny = parse.GetValue(l7) == "deny" };
            var only = parse.GetValue(steps) ?? [];
            var unknown = only.Where(s => cluster.Lab!.Steps.All(x => x.Name != s)).ToList();
            if (unknown.Count > 0)
                throw new UsageException($"no step named {string.Join(", ", unknown)} in {cluster.SourceFile}");
            var selected = cluster.Lab!.Steps.Where(s => only.Length == 0 || only.Contains(s.Name)).ToList();
            var existing = LabState.Read(cluster.Lab.Name);
            if (existing is not null && existing.UpAlive())
            {
                Console.WriteLine($"lab {cluster.Lab.Name} is up (pid {existing.UpPid}): running in it; drop reasons and translations are seen by that process, only delivery is checked here");
                using var attached = NetnsLab.Attach(cluster);
                if (attached.Notice is { } n1)
                    Console.WriteLine(n1);
                return Report(selected.Select(attached.RunStep));
            }
            Console.WriteLine($"lab {cluster.Lab.Name}: building from {cluster.SourceFile}");
            using var lab = NetnsLab.Up(cluster, Options(!parse.GetValue(noDatapath), quiet: true));
            if (lab.Notice is { } n2)
                Console.WriteLine(n2);
            return Report(selected.Select(lab.RunStep));
        }));
        return cmd;
    }

    private static int Report(IEnumerable<StepReport> reports)
    {
        int failed = 0, total = 0, notApplicable = 0;
        foreach (var r in reports)
        {
            total++;
            if (r.NotApplicable is not null)
                notApplicable++;
            Console.WriteLine($"{(r.NotApplicable is not null ? "n/a " : r.Passed ? "ok  " : "FAIL")} {r.Step.Name}: {r.Step.Pod} {r.Step.Action} {r.Step.TargetText ?? string.Join(' ', r.Step.Command)}: {r.Detail}");
            if (r.NotApplicable is { } na)
                Console.WriteLine($"       not applicable: {na}");
            foreach (var e in r.Events.Where(e => e.Kind is "drop" or "nat" or "policy"))
                Console.WriteLine($"       {e.Text}");
            foreach (var f in r.Failures)
                Console.WriteLine($"       expectation: {f}");
            if (!r.Passed)
                failed++;
        }
        Console.WriteLine($"{total - failed} of {total} steps met their expectation" + (notApplicable > 0 ? $" ({notApplicable} not applicable on this node)" : ""));
        return failed == 0 ? (int)ExitCode.Ok : (int)ExitCode.Failure;
    }

    private static Command Down()
    {
        var file = new Argument<FileInfo?>("FILE") { Description = "The cluster YAML (or give --name)", Arity = ArgumentArity.ZeroOrOne };
        var name = NameOption();
        var maxPods = MaxPodsOption();
        var cmd = new Command("down", "Remove everything the lab made (its up process, listeners, namespaces, links, routes, BPF attachments and pins); idempotent") { file, name, maxPods };
        cmd.SetAction(parse => Guard(() =>
        {
            var f = parse.GetValue(file);
            var n = parse.GetValue(name);
            ClusterSpec? cluster = null;
            if (f is not null)
            {
                cluster = LoadLab(f, n, parse, maxPods);
                n = cluster.Lab!.Name;
            }
            if (n is null)
                throw new UsageException("lab down needs FILE or --name");
            var removed = NetnsLab.Down(n, cluster);
            Console.WriteLine(removed.Count == 0 ? $"lab {n}: nothing to remove" : $"lab {n}: removed {string.Join(", ", removed)}");
            return (int)ExitCode.Ok;
        }));
        return cmd;
    }

    private static Command Serve()
    {
        var tcp = new Option<string[]>("--tcp") { Description = "[IP:]PORT to answer TCP on (echo, or HTTP when the client speaks it)" };
        var udp = new Option<string[]>("--udp") { Description = "[IP:]PORT to answer UDP on (echo)" };
        var names = new Option<string[]>("--name") { Description = "NAME to answer with, or IP=NAME per local address" };
        var lifetime = new Option<double>("--lifetime") { Description = "Seconds before exiting", DefaultValueFactory = _ => 43200 };
        var dnsNames = new Option<string[]>("--dns") { Description = "IP=NAME=ADDRESS: answer DNS queries for NAME with ADDRESS on IP's UDP port 53" };
        var cmd = new Command("serve", "Answer TCP, HTTP and UDP on the given ports (run by the lab inside its namespaces)") { tcp, udp, names, lifetime, dnsNames };
        cmd.Hidden = true;
        cmd.SetAction(parse =>
        {
            try
            {
                var byAddr = new Dictionary<string, string>(StringComparer.Ordinal);
                string dflt = Environment.MachineName;
                foreach (var n in parse.GetValue(names) ?? [])
                {
                    int eq = n.IndexOf('=', StringComparison.Ordinal);
                    if (eq < 0)
                        dflt = n;
                    else
                        byAddr[n[..eq]] = n[(eq + 1)..];
                }
                var t = (parse.GetValue(tcp) ?? []).Select(ListenSpec.Parse).ToList();
                var u = (parse.GetValue(udp) ?? []).Select(ListenSpec.Parse).ToList();
                var dns = new Dictionary<System.Net.IPAddress, Dictionary<string, System.Net.IPAddress>>();
                foreach (var d in parse.GetValue(dnsNames) ?? [])
                {
                    var parts = d.Split('=');
                    if (parts.Length != 3)
                        return ForensicsCommand.Fail(ExitCode.Usage, $"lab serve: --dns '{d}' is not IP=NAME=ADDRESS");
                    var at = System.Net.IPAddress.Parse(parts[0]);
                    if (!dns.TryGetValue(at, out var map))
                        dns[at] = map = new Dictionary<string, System.Net.IPAddress>(StringComparer.Ordinal);
                    map[parts[1].TrimEnd('.').ToLowerInvariant() + "."] = System.Net.IPAddress.Parse(parts[2]);
                }
                if (t.Count + u.Count + dns.Count == 0)
                    return ForensicsCommand.Fail(ExitCode.Usage, "lab serve needs --tcp, --udp or --dns");
                using var cts = new CancellationTokenSource();
                using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; cts.Cancel(); });
                using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; cts.Cancel(); });
                Traffic.ServeAsync(t, u, dflt, byAddr, TimeSpan.FromSeconds(parse.GetValue(lifetime)), Console.Out, cts.Token,
                    dns.ToDictionary(kv => kv.Key, kv => (IReadOnlyDictionary<string, System.Net.IPAddress>)kv.Value)).GetAwaiter().GetResult();
                return (int)ExitCode.Ok;
            }
            catch (Exception e) when (e is FormatException or System.Net.Sockets.SocketException)
            {
                return ForensicsCommand.Fail(ExitCode.Failure, "lab serve: " + e.Message);
            }
        });
        return cmd;
    }

    private static Command Connect()
    {
        var proto = new Argument<string>("PROTOCOL") { Description = "tcp, udp or http" };
        var target = new Argument<string>("TARGET") { Description = "IP:PORT (http: IP:PORT/path)" };
        var timeout = new Option<double>("--timeout") { Description = "Seconds to wait for the connection and again for the reply", DefaultValueFactory = _ => 2 };
        var source = new Option<string?>("--source") { Description = "The local address to connect from (a world host's)" };
        var cmd = new Command("connect", "Connect once and print what happened as one JSON line (run by the lab inside pods)") { proto, target, timeout, source };
        cmd.Hidden = true;
        cmd.SetAction(parse =>
        {
            try
            {
                var secs = Math.Clamp(parse.GetValue(timeout), 0.05, 60);
                var from = parse.GetValue(source) is { } src ? System.Net.IPAddress.Parse(src) : null;
                var r = Traffic.ConnectAsync(parse.GetValue(proto)!, parse.GetValue(target)!, TimeSpan.FromSeconds(secs), from).GetAwaiter().GetResult();
                Console.WriteLine(r.ToJson());
                return r.Delivered ? (int)ExitCode.Ok : (int)ExitCode.Failure;
            }
            catch (Exception e) when (e is FormatException or ArgumentException)
            {
                return ForensicsCommand.Fail(ExitCode.Usage, "lab connect: " + e.Message);
            }
        });
        return cmd;
    }
}
