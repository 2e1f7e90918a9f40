using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Forensics.Datapath;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Probes;
using Forensics.Format;
using Forensics.Tests;

namespace Forensics.Kernel.Tests;

/// <summary>
/// TracingPolicy selectors applied by the connect probe in the kernel (issue 17),
/// on real connects from a network namespace: Tetragon's own files, and every kind
/// of condition (DAddr, NotDPort, SAddr, Family, NotSPort, DPortPriv, a sockaddr's
/// SAddr/SPort, Protocol, matchBinaries In and NotIn, udp_sendmsg, tcp_close and
/// tcp_sendmsg), selectors ORed and conditions ANDed as Tetragon evaluates them,
/// what no selector selects counted; and the workloads of TracingPolicyNamespaced and
/// podSelector, applied to a lab's pods after attribution.
/// </summary>
public class TetragonFilterTests
{
    private static string Tetragon(string upstream) => Path.Combine(AppContext.BaseDirectory, "testdata", "tetragon", upstream);

    private static TracingProbes Load(TracingPolicySet policy)
    {
        Prerequisites.EnsureKernelAccess();
        var probes = TracingProbes.Load(new ProbeOptions
        {
            Events = new EventOptions { RingBytes = 8u << 20, WakeupBytes = 4096 },
            Enabled = ProbeSet.Exec | ProbeSet.Connect,
            ConnectFilters = policy.Filters,
        });
        probes.Attach();
        return probes;
    }

    private sealed class Listeners : IDisposable
    {
        private readonly List<Socket> sockets = [];

        public Listeners(int count)
        {
            for (int i = 0; i < count; i++)
            {
                var v4 = new TcpListener(IPAddress.Any, 0);
                v4.Start();
                int port = ((IPEndPoint)v4.LocalEndpoint).Port;
                var v6 = new TcpListener(IPAddress.IPv6Any, port);
                v6.Server.DualMode = false;
                v6.Start();
                sockets.AddRange([v4.Server, v6.Server]);
                Ports.Add(port);
            }
        }

        public List<int> Ports { get; } = [];

        public void Dispose()
        {
            foreach (var s in sockets)
                s.Dispose();
        }
    }

    [KernelFact]
    public void TetragonFiles_ConnectSelectors_ReportWhatTheySelectAndCountTheRest()
    {
        using var ns = ProbeNetns.Create();
        using var ports = new Listeners(1);
        int port = ports.Ports[0];

        // tcp-connect-with-selectors.yaml: DAddr 127.0.0.1/8, 192.168.0.0/16 on tcp_connect, and the same on tcp_close and
        // tcp_sendmsg, which stand for the connect of their socket: one selector in the kernel
        var withSelectors = TracingPolicyReader.ReadFile(Tetragon("examples/tracingpolicy/tcp-connect-with-selectors.yaml"));
        Assert.Contains(withSelectors.Notices, n => n.StartsWith("kprobe tcp_sendmsg: recorded as the TCP connect of its socket", StringComparison.Ordinal));
        Assert.Single(Assert.Single(withSelectors.Filters).Selectors);
        using (var probes = Load(withSelectors))
        using (var log = new EventLog(probes))
        {
            ulong unselected = probes.UnselectedConnects;
            var outside = ns.RunClient("tcp", ns.HostV4, port);
            var loopback = HostClient("127.0.0.9", port);
            Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Connect, loopback.Pid)), "the connect to 127.0.0.9 (DAddr 127.0.0.1/8) was not reported");
            log.Settle();
            Assert.Empty(log.Connects(outside.Pid));
            Assert.True(probes.UnselectedConnects > unselected);
        }

        // tcp-connect.yaml: a kprobe without selectors reports every TCP connect
        using (var probes = Load(TracingPolicyReader.ReadFile(Tetragon("examples/tracingpolicy/tcp-connect.yaml"))))
        using (var log = new EventLog(probes))
        {
            var any = ns.RunClient("tcp", ns.HostV4, port);
            Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Connect, any.Pid)));
            Assert.Equal(0xff, log.Connects(any.Pid).First().Selected); // no selector: every connect of the class
        }

        // security-socket-connect.yaml: Family AF_INET or AF_INET6, on TCP and UDP connects
        using (var probes = Load(TracingPolicyReader.ReadFile(Tetragon("examples/tracingpolicy/security-socket-connect.yaml"))))
        using (var log = new EventLog(probes))
        {
            var v6 = ns.RunClient("tcp", ns.HostV6, port);
            var udp = ns.RunClient("udp-connect", ns.HostV4, port);
            Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Connect, v6.Pid)));
            Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Connect, udp.Pid)));
        }
    }

    [KernelFact]
    public void ConnectSelectors_EveryConditionKind_SelectorsOredConditionsAnded()
    {
        using var ns = ProbeNetns.Create();
        using var ports = new Listeners(2);
        int pA = ports.Ports[0], pB = ports.Ports[1];
        var policy = TracingPolicyReader.Parse($$"""
            apiVersion: cilium.io/v1alpha1
            kind: TracingPolicy
            metadata: {name: every-condition}
            spec:
              kprobes:
              - call: tcp_connect
                args: [{index: 0, type: sock}]
                selectors:
                - matchArgs:
                  - {index: 0, operator: DAddr, values: ["{{ns.ExcludedHostV4}}"]}
                  - {index: 0, operator: DPort, values: ["{{pA}}"]}
                - matchArgs:
                  - {index: 0, operator: Family, values: [AF_INET6]}
                  - {index: 0, operator: NotDPort, values: ["{{pA}}"]}
                  - {index: 0, operator: SAddr, values: ["{{ns.NsV6}}/128"]}
                - matchArgs:
                  - {index: 0, operator: DAddr, values: ["{{ns.HostV4}}/32"]}
                  - {index: 0, operator: NotSPort, values: ["0:1023"]}
                  matchBinaries: [{operator: In, values: [{{ProbeNetns.Python}}]}]
                - matchArgs: [{index: 0, operator: DAddr, values: ["{{ns.ExcludedHostV6}}"]}]
                  matchBinaries: [{operator: NotIn, values: [{{ProbeNetns.Python}}]}]
              - call: udp_sendmsg
                args: [{index: 0, type: sock}]
                selectors:
                - matchArgs: [{index: 0, operator: DAddr, values: ["{{ns.HostV4}}"]}]
            """);
        using var probes = Load(policy);
        using var log = new EventLog(probes);
        ulong unselected = probes.UnselectedConnects;

        var reported = new[]
        {
            ns.RunClient("tcp", ns.ExcludedHostV4, pA),  // DAddr and DPort
            ns.RunClient("tcp", ns.HostV6, pB),          // Family IPv6, NotDPort, SAddr
            ns.RunClient("tcp", ns.HostV4, pB),          // DAddr, NotSPort (an ephemeral port), the binary
            ns.RunClient("sendto", ns.HostV4, pB),       // udp_sendmsg DAddr
        };
        var filtered = new[]
        {
            ns.RunClient("tcp", ns.ExcludedHostV4, pB),  // the first selector's port does not match, nor any other
            ns.RunClient("tcp", ns.HostV6, pA),          // NotDPort
            ns.RunClient("tcp", ns.ExcludedHostV6, pA),  // the binary is python: NotIn fails (and pA keeps the second selector out)
            ns.RunClient("sendto", ns.ExcludedHostV4, pB), // not the UDP selector's address
        };
        foreach (var (pid, _) in reported)
            Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Connect, pid)), $"connect of {pid} not reported");
        log.Settle();
        // the event says which selectors of its class selected it (what user space applies workload scopes with)
        Assert.Equal([1 << 0, 1 << 1, 1 << 2, 1 << 0], reported.Select(r => (int)log.Connects(r.Pid).First().Selected));
        foreach (var (i, (pid, _)) in filtered.Index())
        {
            Assert.NotEmpty(log.Execs(pid));
            var c = log.Connects(pid).Select(e => $"{EventReader.Source(e.Tuple)}:{e.Tuple.Sport} -> {EventReader.Destination(e.Tuple)}:{e.Tuple.Dport} proto {e.Tuple.Proto}").ToList();
            Assert.True(c.Count == 0, $"filtered client {i} reported: {string.Join("; ", c)}");
        }
        // the three TCP connects, and the UDP client's two sends to one destination once (a socket's sends are taken once per
        // destination, lib/connect.h fx_udp_seen, before the selectors are asked); the counter is host-wide, so other
        // processes' unselected connects may add to it
        Assert.True(probes.UnselectedConnects - unselected >= 4, $"{probes.UnselectedConnects - unselected} counted");
    }

    [KernelFact]
    public void TetragonFiles_SocketLifeHooksAndUnselectedHooks_ReportWhatTheySelectAndCountTheRest()
    {
        using var ns = ProbeNetns.Create();
        using var ports = new Listeners(1);
        int port = ports.Ports[0];

        // tcp-accept.yaml: tcp_close DAddr 127.0.0.1/32 stands for the connects of the sockets it would report
        // (its sk_alloc, __sk_free, tcp_set_state and tcp_create_openreq_child are said, not recorded)
        var accept = TracingPolicyReader.ReadFile(Tetragon("examples/tracingpolicy/tcp-accept.yaml"));
        Assert.Contains(accept.Notices, n => n.StartsWith("kprobe tcp_close: recorded as the TCP connect of its socket", StringComparison.Ordinal));
        using (var probes = Load(accept))
        using (var log = new EventLog(probes))
        {
            ulong unselected = probes.UnselectedConnects;
            var outside = ns.RunClient("tcp", ns.HostV4, port);
            var otherLoopback = HostClient("127.0.0.9", port);
            var loopback = HostClient("127.0.0.1", port);
            Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Connect, loopback.Pid)), "the connect to 127.0.0.1 (DAddr 127.0.0.1/32) was not reported");
            log.Settle();
            Assert.Empty(log.Connects(outside.Pid));
            Assert.Empty(log.Connects(otherLoopback.Pid));
            Assert.True(probes.UnselectedConnects - unselected >= 2, $"{probes.UnselectedConnects - unselected} counted");
        }

        // socket-connect-address.yaml (the hooks page): security_socket_connect without selectors, every TCP and UDP connect;
        // sshd.yaml: tcp_close without selectors, every TCP connect, UDP untouched
        foreach (var file in new[] { "docs/content/en/docs/concepts/tracing-policy/hooks/socket-connect-address.yaml", "examples/policylibrary/sshd.yaml" })
        {
            using var probes = Load(TracingPolicyReader.ReadFile(Tetragon(file)));
            using var log = new EventLog(probes);
            var tcp = ns.RunClient("tcp", ns.HostV6, port);
            var udp = ns.RunClient("udp-connect", ns.HostV4, port);
            Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Connect, tcp.Pid)), $"{file}: the TCP connect was not reported");
            Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Connect, udp.Pid)), $"{file}: the UDP connect was not reported");
        }

        // dev_hard_start_xmit.yaml: no hook this recorder filters connects on, so none is filtered
        var xmit = TracingPolicyReader.ReadFile(Tetragon("examples/tracingpolicy/dev_hard_start_xmit.yaml"));
        Assert.Empty(xmit.Filters);
        using (var probes = Load(xmit))
        using (var log = new EventLog(probes))
        {
            var any = ns.RunClient("tcp", ns.HostV4, port);
            Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Connect, any.Pid)));
        }
    }

    [KernelFact]
    public void SockaddrSelectors_SAddrAndSPortAreTheDestination_PrivilegedPortsAndNothingSelected()
    {
        using var ns = ProbeNetns.Create();
        using var ports = new Listeners(2);
        int pA = ports.Ports[0], pB = ports.Ports[1];
        // security-socket-connect-block-others.yaml's observing selector (its Override selector left out): on a sockaddr,
        // SAddr and SPort are the address connected to; tcp_sendmsg with DPortPriv; the only UDP-capable selector wants TCP
        var policy = TracingPolicyReader.Parse($$"""
            apiVersion: cilium.io/v1alpha1
            kind: TracingPolicy
            metadata: {name: sockaddr}
            spec:
              kprobes:
              - call: security_socket_connect
                args: [{index: 0, type: socket}, {index: 1, type: sockaddr}, {index: 2, type: int}]
                selectors:
                - matchArgs:
                  - {index: 0, operator: Protocol, values: [IPPROTO_TCP]}
                  - {index: 1, operator: Family, values: [AF_INET, AF_INET6]}
                  - {index: 1, operator: SAddr, values: ["{{ns.HostV4}}"]}
                  - {index: 1, operator: SPort, values: ["{{pA}}"]}
                  matchBinaries: [{operator: In, values: [{{ProbeNetns.Python}}]}]
                  matchActions: [{action: Post}]
              - call: tcp_sendmsg
                args: [{index: 0, type: sock}]
                selectors:
                - matchArgs: [{index: 0, operator: DPortPriv}]
            """);
        Assert.Same(ConnectSelector.Nothing, Assert.Single(policy.Filters.Single(f => f.Class == ConnectClass.Udp).Selectors));
        using var probes = Load(policy);
        using var log = new EventLog(probes);
        ulong unselected = probes.UnselectedConnects;

        var reported = new[]
        {
            ns.RunClient("tcp", ns.HostV4, pA),   // the sockaddr's address and port
            ns.RunClient("tcp", ns.HostV6, 999),  // a privileged port (refused: nothing listens; still a connect)
        };
        var filtered = new[]
        {
            ns.RunClient("tcp", ns.HostV4, pB),          // another port, not privileged
            ns.RunClient("tcp", ns.ExcludedHostV4, pA),  // another address
            ns.RunClient("udp-connect", ns.HostV4, pA),  // UDP: the selector wants IPPROTO_TCP
        };
        foreach (var (pid, _) in reported)
            Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Connect, pid)), $"connect of {pid} not reported");
        log.Settle();
        foreach (var (i, (pid, _)) in filtered.Index())
        {
            Assert.NotEmpty(log.Execs(pid));
            Assert.True(!log.Connects(pid).Any(), $"filtered client {i} reported");
        }
        Assert.True(probes.UnselectedConnects - unselected >= 3, $"{probes.UnselectedConnects - unselected} counted");
    }

    [KernelFact]
    public void HostSelectorAndPodSelector_HostProcessesConnects_OnlyTheHostSelectorsSelectionIsKept()
    {
        using var ns = ProbeNetns.Create();
        using var ports = new Listeners(2);
        int pA = ports.Ports[0], pB = ports.Ports[1];
        string Policy(string name, string selector, int port) => $$"""
            apiVersion: cilium.io/v1alpha1
            kind: TracingPolicy
            metadata: {name: {{name}}}
            spec:
              {{selector}}
              kprobes:
              - call: tcp_connect
                args: [{index: 0, type: sock}]
                selectors:
                - matchArgs: [{index: 0, operator: DPort, values: ["{{port}}"]}]
            """;
        // a process in a named network namespace (not a pod's) is a host process
        var policy = TracingPolicyReader.Parse(Policy("hosts", "hostSelector: {}", pA) + "\n---\n" + Policy("pods", "podSelector: {}", pB));
        Assert.True(policy.Scoped);
        var scopes = new Forensics.Recorder.Tables.ConnectScopes(policy.Filters);
        var ctx = Forensics.Recorder.Sessions.RecordingSession.NewContext();
        using var probes = Load(policy);
        using var log = new EventLog(probes);

        var host = ns.RunClient("tcp", ns.HostV4, pA);
        var notPod = ns.RunClient("tcp", ns.HostV4, pB);
        foreach (var (pid, _) in new[] { host, notPod })
            Assert.True(log.WaitFor(e => EventLog.Is(e, EventKind.Connect, pid)), $"connect of {pid} not reported by the kernel");
        // the kernel selected both (each by its policy's selector); the recorder keeps the one whose policy applies to host processes
        bool Keeps(ConnectEvent ev) => scopes.Keeps(ev, ctx.Owner(ev.NetnsIno, ev.CgroupId), ctx);
        Assert.True(Keeps(log.Connects(host.Pid).First()));
        Assert.False(Keeps(log.Connects(notPod.Pid).First()));
        Assert.Equal(1UL, scopes.OutOfScope);
    }

    /// <summary>
    /// TracingPolicyNamespaced and podSelector on a lab's pods (issue 17 item 3): the quickstart's enforcing policy with
    /// its Sigkill made a Post (TracingPolicyNamespaced in team-a, NotDAddr of the cluster) and a podSelector, beside a
    /// TracingPolicy whose podSelector names namespace team-b by Tetragon's namespace label, each selecting outside
    /// connects on its port; steps from pods of both namespaces. A connect is a row when a selector that selected it
    /// applies to its pod; the others are counted in filtered_connects.
    /// </summary>
    [KernelFact]
    public void Record_NamespacedAndPodSelectorPolicies_ConnectsOfOtherPodsCountedNotRecorded()
    {
        var work = Directory.CreateTempSubdirectory("fx-tpscope-");
        string? recording = null;
        try
        {
            var policy = Path.Combine(work.FullName, "policy.yaml");
            var enforce = File.ReadAllText(Tetragon("examples/quickstart/network_egress_cluster_enforce.yaml"))
                .Replace("${PODCIDR}", "10.231.0.0/24", StringComparison.Ordinal).Replace("${SERVICECIDR}", "10.231.1.0/24", StringComparison.Ordinal)
                .Replace("action: Sigkill", "action: Post", StringComparison.Ordinal)
                .Replace("metadata:", "metadata:\n  namespace: team-a", StringComparison.Ordinal)
                .Replace("spec:", "spec:\n  podSelector: {matchLabels: {app: probe}}", StringComparison.Ordinal);
            Assert.Contains("  namespace: team-a", enforce, StringComparison.Ordinal);
            File.WriteAllText(policy, enforce + """
                ---
                apiVersion: cilium.io/v1alpha1
                kind: TracingPolicy
                metadata:
                  name: team-b-8443
                spec:
                  podSelector:
                    matchExpressions:
                    - {key: "k8s:io.kubernetes.pod.namespace", operator: In, values: [team-b]}
                  kprobes:
                  - call: tcp_connect
                    syscall: false
                    args: [{index: 0, type: sock}]
                    selectors:
                    - matchArgs: [{index: 0, operator: DPort, values: ["8443"]}]
                """);
            string Step(string name, string pod, int port) => $"""
                    - name: {name}
                      pod: {pod}
                      tcp: api:{port}
                      expect:
                        delivered: true

                """;
            string Pod(string ns, string name, string app) => $"""
                ---
                apiVersion: v1
                kind: Pod
                metadata:
                  name: {name}
                  namespace: {ns}
                  labels:
                    app: {app}

                """;
            var lab = """
                apiVersion: forensics.dev/v1
                kind: Lab
                metadata:
                  name: tpscope
                spec:
                  podCIDR: 10.231.0.0/24
                  serviceCIDR: 10.231.1.0/24
                  nodeIP: 192.0.2.1
                  world:
                    - name: api
                      ip: 198.51.100.10
                      tcp: [443, 8443]
                  steps:

                """
                + Step("a-probe-443", "team-a/a-probe", 443)    // row: team-a, app=probe, outside
                + Step("a-other-443", "team-a/a-other", 443)    // counted: not app=probe
                + Step("b-probe-443", "team-b/b-probe", 443)    // counted: not team-a, and not port 8443
                + Step("b-probe-8443", "team-b/b-probe", 8443)  // row: the second policy's namespace label
                + Step("a-other-8443", "team-a/a-other", 8443)  // counted: neither policy's workloads
                + Pod("team-a", "a-probe", "probe") + Pod("team-a", "a-other", "other") + Pod("team-b", "b-probe", "probe");
            var (dir, _) = RecordLabTests.RecordYaml(lab, "tpscope.yaml", LabFixture.UniqueName(), ["--tetragon-policy", policy]);
            recording = Path.GetDirectoryName(dir);

            var rows = Duck.Table(dir, "connect", "dst_ip = '198.51.100.10'")
                .Select(r => $"{r["namespace"]}/{r["pod"]}:{r["dst_port"]}").Order(StringComparer.Ordinal).ToList();
            Assert.Equal(["team-a/a-probe:443", "team-b/b-probe:8443"], rows.Distinct());
            var m = Manifest.Read(dir);
            Assert.True(m.FilteredConnects >= 3, $"{m.FilteredConnects} filtered connects");
        }
        finally
        {
            work.Delete(true);
            if (recording is not null)
                Directory.Delete(recording, true);
        }
    }

    private static (int Pid, int Port) HostClient(string host, int port) => ProbeNetns.RunClientProcess(Process.Start(new ProcessStartInfo(ProbeNetns.Python,
        ["-c", ProbeNetns.Client, "tcp", host, port.ToString(CultureInfo.InvariantCulture)]) { RedirectStandardOutput = true })!);
}
