using System.Net;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Probes;

namespace Forensics.Datapath.Tests;

public class TracingPolicyTests
{
    private static readonly string Reference = Path.Combine(AppContext.BaseDirectory, "testdata", "tetragon_network_egress_cluster.yaml");

    private static Func<string, string?> Env(params (string Name, string Value)[] vars) =>
        name => vars.FirstOrDefault(v => v.Name == name).Value;

    [Fact]
    public void ReferencePolicy_VariablesSet_NotDAddrValuesBecomeExcludedCidrs()
    {
        var filter = TracingPolicyReader.ReadFile(Reference, Env(("PODCIDR", "10.44.0.0/14"), ("SERVICECIDR", "10.48.0.0/20")));

        Assert.Equal(["monitor-network-activity-outside-cluster-cidr-range"], filter.Names);
        var tcp = Assert.Single(filter.Filters);
        Assert.Equal(ConnectClass.Tcp, tcp.Class);
        Assert.Equal(["127.0.0.1/32", "10.44.0.0/14", "10.48.0.0/20"], Assert.Single(tcp.Selectors).DAddrNotIn!.Select(c => c.ToString()));
        Assert.Equal(["127.0.0.1/32", "10.44.0.0/14", "10.48.0.0/20"], filter.ExcludedCidrs.Select(c => c.ToString()));
        // the policy hooks tcp_connect only: UDP sends are recorded as the probe records them, and that is said
        Assert.Contains("no policy hooks UDP sends (udp_sendmsg): they are recorded unfiltered", filter.Notices);
    }

    [Fact]
    public void ReferencePolicy_VariableUnset_ErrorNamesTheVariable()
    {
        var e = Assert.Throws<TracingPolicyException>(() => TracingPolicyReader.ReadFile(Reference, Env(("PODCIDR", "10.44.0.0/14"))));
        Assert.Contains("${SERVICECIDR}", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("PODCIDR", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ReferencePolicy_AlreadyThroughEnvsubst_ReadsWithoutEnvironment()
    {
        var text = File.ReadAllText(Reference).Replace("${PODCIDR}", "10.44.0.0/14", StringComparison.Ordinal)
            .Replace("${SERVICECIDR}", "fd00:10:96::/112", StringComparison.Ordinal);

        var filter = TracingPolicyReader.Parse(text, Env());

        Assert.Equal(["127.0.0.1/32", "10.44.0.0/14", "fd00:10:96::/112"], filter.ExcludedCidrs.Select(c => c.ToString()));
    }

    [Theory]
    [InlineData("Mask", "not supported: operator Mask")]
    [InlineData("Equal", "not supported: operator Equal")]
    public void Policy_OtherOperator_Rejected(string op, string message)
    {
        var text = File.ReadAllText(Reference).Replace("NotDAddr", op, StringComparison.Ordinal);
        var e = Assert.Throws<TracingPolicyException>(() => TracingPolicyReader.Parse(text, Env(("PODCIDR", "10.0.0.0/8"), ("SERVICECIDR", "10.1.0.0/16"))));
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Policy_NoConnectKprobe_ReadAndSaysWhatIsNotRecorded()
    {
        var text = File.ReadAllText(Reference).Replace("\"tcp_connect\"", "\"inet_csk_accept\"", StringComparison.Ordinal);
        var set = TracingPolicyReader.Parse(text, Env(("PODCIDR", "10.0.0.0/8"), ("SERVICECIDR", "10.1.0.0/16")));
        Assert.Empty(set.Filters);
        Assert.Contains(set.Notices, n => n.Contains("kprobe inet_csk_accept: not recorded", StringComparison.Ordinal));
        Assert.Contains(set.Notices, n => n.Contains("connects are recorded unfiltered", StringComparison.Ordinal));
    }

    [Fact]
    public void Policy_BadValue_Rejected()
    {
        var e = Assert.Throws<TracingPolicyException>(() => TracingPolicyReader.ReadFile(Reference, Env(("PODCIDR", "10.44.0.0/99"), ("SERVICECIDR", "10.48.0.0/20"))));
        Assert.Contains("'10.44.0.0/99'", e.Message, StringComparison.Ordinal);
    }

    private static readonly Func<string, string?> Cluster = Env(("PODCIDR", "10.44.0.0/14"), ("SERVICECIDR", "10.48.0.0/20"));

    private static string ErrorOf(string text)
    {
        var e = Assert.Throws<TracingPolicyException>(() => TracingPolicyReader.Parse(text, Cluster));
        Assert.DoesNotContain('\n', e.Message);
        return e.Message;
    }

    [Theory]
    [InlineData(5, null)]
    [InlineData(6, "t: spec.kprobes[0].selectors: no more than 5 selectors supported (6 provided), as Tetragon refuses it")]
    public void Policy_SelectorsOfOneKprobe_AtMostFiveAsTetragon(int count, string? expected)
    {
        var selectors = string.Concat(Enumerable.Range(1, count).Select(i =>
            $"\n    - matchArgs: [{{index: 0, operator: DPort, values: ['{i}']}}]"));
        var text = "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata: {name: t}\nspec:\n  kprobes:\n" +
                   "  - call: tcp_connect\n    args: [{index: 0, type: sock}]\n    selectors:" + selectors + "\n";
        if (expected is null)
            Assert.NotNull(TracingPolicyReader.Parse(text, Cluster));
        else
            Assert.Equal(expected, ErrorOf(text));
    }

    [Theory]
    [InlineData("- NotDAddr", "t: spec.kprobes[0].selectors[0]: a selector is not a mapping")]
    [InlineData("- matchArgs: [0]", "spec.kprobes[0].selectors[0].matchArgs: an entry is not a mapping")]
    [InlineData("- matchArgs: NotDAddr", "spec.kprobes[0].selectors[0].matchArgs is not a list")]
    [InlineData("- matchArgs: [{index: 0, operator: NotDAddr, values: [[127.0.0.1]]}]", "matchArgs NotDAddr: a value is not a single value")]
    [InlineData("- matchArgs: [{index: 0, operator: NotDAddr, values: 127.0.0.1}]", "matchArgs NotDAddr: no values list")]
    [InlineData("- matchActions: [{action: Sigkill}]", "matchActions Sigkill: enforcement actions are not supported: this is a recorder")]
    [InlineData("- matchActions: [{action: Override, argError: -1}]", "enforcement actions are not supported: this is a recorder")]
    [InlineData("- matchPIDs: [{operator: In, values: [1]}]", "not supported: matchPIDs")]
    [InlineData("- matchBinaries: [{operator: Prefix, values: [/usr]}]", "not supported: operator Prefix (In and NotIn)")]
    public void Policy_ScalarWhereAMappingBelongs_OneLineError(string selector, string expected)
    {
        var text = $"""
            apiVersion: cilium.io/v1alpha1
            kind: TracingPolicy
            metadata: {"{"}name: t{"}"}
            spec:
              kprobes:
              - call: tcp_connect
                args: [{"{"}index: 0, type: sock{"}"}]
                selectors:
                {selector}
            """;

        Assert.Contains(expected, ErrorOf(text), StringComparison.Ordinal);
    }

    [Fact]
    public void ReadFile_Directory_OneLineError()
    {
        var dir = Directory.CreateTempSubdirectory("fx-tp-");
        try
        {
            var e = Assert.Throws<TracingPolicyException>(() => TracingPolicyReader.ReadFile(dir.FullName, Cluster));
            Assert.Contains("is a directory", e.Message, StringComparison.Ordinal);
        }
        finally
        {
            dir.Delete();
        }
    }

    [Fact]
    public void ReadFile_Missing_OneLineError()
    {
        var e = Assert.Throws<TracingPolicyException>(() => TracingPolicyReader.ReadFile("/nonexistent/fx-policy.yaml", Cluster));
        Assert.Contains("/nonexistent/fx-policy.yaml: cannot read", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Policy_SecondDocument_ReadAsAnotherPolicy()
    {
        var text = File.ReadAllText(Reference);

        var set = TracingPolicyReader.Parse(text + "\n---\n" + text.Replace("monitor-network", "second", StringComparison.Ordinal)
            .Replace("127.0.0.1", "192.0.2.0/24", StringComparison.Ordinal), Cluster);

        Assert.Equal(2, set.Names.Count);
        // each policy reports what its own selectors select: two selectors, ORed
        Assert.Equal(2, Assert.Single(set.Filters).Selectors.Count);
        // a trailing separator is no second document
        Assert.Single(TracingPolicyReader.Parse(text + "\n---\n", Cluster).Names);
    }

    [Fact]
    public void Policy_SelectorsArgsAndBinaries_KeptForTheKernelFilter()
    {
        var set = TracingPolicyReader.Parse("""
            apiVersion: cilium.io/v1alpha1
            kind: TracingPolicy
            metadata: {name: t}
            spec:
              kprobes:
              - call: security_socket_connect
                args: [{index: 0, type: socket}, {index: 1, type: sockaddr}]
                selectors:
                - matchArgs:
                  - {index: 1, operator: SAddr, values: [198.51.100.0/24]}
                  - {index: 1, operator: NotSPort, values: ["53", "8000:8080"]}
                  - {index: 0, operator: Protocol, values: [IPPROTO_TCP]}
                  matchBinaries: [{operator: In, values: [/usr/bin/curl]}]
                - matchArgs: [{index: 1, operator: Family, values: [AF_INET6]}]
            """, Cluster);

        var tcp = set.Filters.Single(f => f.Class == ConnectClass.Tcp);
        Assert.Equal(2, tcp.Selectors.Count);
        var first = tcp.Selectors[0];
        // a sockaddr's address is what the connect names: SAddr and SPort on it are the destination (as Tetragon reads them)
        Assert.Equal(["198.51.100.0/24"], first.DAddrIn!.Select(c => c.ToString()));
        Assert.Null(first.SAddrIn);
        Assert.Null(first.SPort);
        Assert.True(first.DPort!.Negate);
        Assert.Equal([(53, 53), (8000, 8080)], first.DPort.Ranges);
        Assert.Equal(["/usr/bin/curl"], first.Binaries!.Paths);
        Assert.Equal(2, tcp.Selectors[1].Families);
        // the Protocol condition keeps the first selector off UDP; the second applies to both
        Assert.Single(set.Filters.Single(f => f.Class == ConnectClass.Udp).Selectors);
    }

    private static TracingPolicySet Kprobe(string call, string args, string selectors) => TracingPolicyReader.Parse($"""
        apiVersion: cilium.io/v1alpha1
        kind: TracingPolicy
        metadata: {"{"}name: t{"}"}
        spec:
          kprobes:
          - call: {call}
            args: {args}
            selectors:
        {selectors}
        """, Cluster);

    private static string KprobeError(string call, string args, string selectors)
    {
        var e = Assert.Throws<TracingPolicyException>(() => Kprobe(call, args, selectors));
        Assert.DoesNotContain('\n', e.Message);
        return e.Message;
    }

    [Theory]
    [InlineData("DAddr")]
    [InlineData("NotDPort")]
    [InlineData("Protocol")]
    [InlineData("State")]
    public void Policy_DestinationOperatorOnSockaddr_RefusedAsTetragonRefusesIt(string op)
    {
        var message = KprobeError("security_socket_connect", "[{index: 1, type: sockaddr}]", $"    - matchArgs: [{{index: 1, operator: {op}, values: [\"6\"]}}]");
        Assert.Contains("sockaddr only supports [not]saddr, [not]sport[priv], and family", message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("tcp_sendmsg")]
    [InlineData("tcp_close")]
    public void Policy_SocketLifeHook_SelectsTheConnectOfItsSocketAndSaysSo(string call)
    {
        var set = Kprobe(call, "[{index: 0, type: sock}]", "    - matchArgs: [{index: 0, operator: DAddr, values: [198.51.100.7]}]");
        var tcp = Assert.Single(set.Filters);
        Assert.Equal(ConnectClass.Tcp, tcp.Class);
        Assert.Equal(["198.51.100.7/32"], Assert.Single(tcp.Selectors).DAddrIn!.Select(c => c.ToString()));
        Assert.Single(set.Notices, n => n.StartsWith($"kprobe {call}: recorded as the TCP connect of its socket", StringComparison.Ordinal));
        // the state at a send or close is not the state of the connect the recorder sees
        Assert.Contains("not supported on " + call,
            KprobeError(call, "[{index: 0, type: sock}]", "    - matchArgs: [{index: 0, operator: State, values: [TCP_ESTABLISHED]}]"), StringComparison.Ordinal);
    }

    [Fact]
    public void Policy_NoPost_LastSelectorReadEarlierRefused()
    {
        var set = Kprobe("tcp_connect", "[{index: 0, type: sock}]", """
                - matchArgs: [{index: 0, operator: DPort, values: ["443"]}]
                - matchArgs: [{index: 0, operator: DPort, values: ["80"]}]
                  matchActions: [{action: NoPost}]
            """);
        Assert.Equal([(443, 443)], Assert.Single(Assert.Single(set.Filters).Selectors).DPort!.Ranges);
        Assert.Contains(set.Notices, n => n.Contains("NoPost reports nothing", StringComparison.Ordinal));

        var message = KprobeError("tcp_connect", "[{index: 0, type: sock}]", """
                - matchArgs: [{index: 0, operator: DPort, values: ["80"]}]
                  matchActions: [{action: NoPost}]
                - matchArgs: [{index: 0, operator: DPort, values: ["443"]}]
            """);
        Assert.Contains("not supported: NoPost before a selector that posts", message, StringComparison.Ordinal);
    }

    [Fact]
    public void Policy_PostWithObservingActions_ReadEnforcementRefused()
    {
        var set = Kprobe("tcp_connect", "[{index: 0, type: sock}]", """
                - matchArgs: [{index: 0, operator: DPort, values: ["443"]}]
                  matchActions: [{action: Post, rateLimit: "1m"}, {action: FollowFD, argFd: 0, argName: 1}, {action: TrackSock, argSock: 0}]
            """);
        Assert.Single(Assert.Single(set.Filters).Selectors);
        Assert.Contains(set.Notices, n => n.Contains("rateLimit is not applied", StringComparison.Ordinal));
        Assert.Contains(set.Notices, n => n.Contains("action FollowFD: not performed", StringComparison.Ordinal));
        Assert.Contains(set.Notices, n => n.Contains("action TrackSock: not performed", StringComparison.Ordinal));
        foreach (var enforcing in new[] { "Sigkill", "Signal", "Override", "NotifyEnforcer" })
            Assert.Contains("enforcement actions are not supported: this is a recorder", KprobeError("tcp_connect", "[{index: 0, type: sock}]",
                $"    - matchActions: [{{action: Post}}, {{action: {enforcing}}}]"), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("DPortPriv", false, true)]
    [InlineData("NotDPortPriv", true, true)]
    [InlineData("SPortPriv", false, false)]
    [InlineData("NotSPortPriv", true, false)]
    public void Policy_PrivilegedPortOperators_AreThePorts0To1023(string op, bool negate, bool destination)
    {
        var set = Kprobe("tcp_connect", "[{index: 0, type: sock}]", $"    - matchArgs: [{{index: 0, operator: {op}}}]");
        var sel = Assert.Single(Assert.Single(set.Filters).Selectors);
        var ports = destination ? sel.DPort : sel.SPort;
        Assert.Equal(negate, ports!.Negate);
        Assert.Equal([(0, 1023)], ports.Ranges);
        Assert.Null(destination ? sel.SPort : sel.DPort);
    }

    [Fact]
    public void Policy_StateOnAConnectHookOfBothClasses_SynSentIsTcpOnly()
    {
        // a UDP socket is never in TCP_SYN_SENT: the selector selects TCP connects only, and UDP ones are filtered
        var set = Kprobe("security_socket_connect", "[{index: 0, type: socket}]", "    - matchArgs: [{index: 0, operator: State, values: [TCP_SYN_SENT]}]");
        Assert.Equal(0, Assert.Single(set.Filters.Single(f => f.Class == ConnectClass.Tcp).Selectors).Families);
        Assert.Same(ConnectSelector.Nothing, Assert.Single(set.Filters.Single(f => f.Class == ConnectClass.Udp).Selectors));
        Assert.Contains("not supported on UDP sockets", KprobeError("udp_sendmsg", "[{index: 0, type: sock}]",
            "    - matchArgs: [{index: 0, operator: State, values: [TCP_ESTABLISHED]}]"), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("[{index: 0, operator: Family, values: [AF_UNIX]}]")]
    [InlineData("[{index: 0, operator: Family, values: [AF_INET]}, {index: 0, operator: Family, values: [AF_INET6]}]")]
    [InlineData("[{index: 0, operator: State, values: [TCP_ESTABLISHED]}]")]
    public void Policy_SelectorThatSelectsNoConnect_FiltersTheClassToNothing(string matchArgs)
    {
        // not "no filter": the hook's only selector selects no connect, so none is reported (and each is counted)
        var set = Kprobe("tcp_connect", "[{index: 0, type: sock}]", $"    - matchArgs: {matchArgs}");
        var sel = Assert.Single(Assert.Single(set.Filters).Selectors);
        Assert.Same(ConnectSelector.Nothing, sel);
    }

    [Fact]
    public void Policy_Namespaced_ReadWithItsNamespaceAsEverySelectorsScope()
    {
        var text = File.ReadAllText(Reference).Replace("kind: TracingPolicy", "kind: TracingPolicyNamespaced", StringComparison.Ordinal)
            .Replace("metadata:", "metadata:\n  namespace: team-a", StringComparison.Ordinal);
        var set = TracingPolicyReader.Parse(text, Cluster);

        Assert.True(set.Scoped);
        var sel = Assert.Single(Assert.Single(set.Filters).Selectors);
        Assert.Equal(new WorkloadScope("team-a", null, false), sel.Scope);
        Assert.Contains(set.Notices, n => n.Contains("applies to namespace team-a: applied in user space after attribution", StringComparison.Ordinal));
        // a namespaced policy cannot select host processes (Tetragon refuses it)
        Assert.Contains("a TracingPolicyNamespaced applies to pods of its namespace only",
            ErrorOf(text.Replace("spec:", "spec:\n  hostSelector: {}", StringComparison.Ordinal)), StringComparison.Ordinal);
    }

    [Fact]
    public void Policy_PodSelectorAndHostSelector_ReadAsTheSelectorsScope()
    {
        var text = File.ReadAllText(Reference).Replace("spec:", """
            spec:
              hostSelector: {}
              nodeSelector: {matchLabels: {nodepool: gpu}}
              podSelector:
                matchLabels: {app: probe}
                matchExpressions:
                - {key: "k8s:io.kubernetes.pod.namespace", operator: NotIn, values: [kube-system]}
                - {key: tier, operator: DoesNotExist}
            """, StringComparison.Ordinal);
        var set = TracingPolicyReader.Parse(text, Cluster);

        var scope = Assert.Single(Assert.Single(set.Filters).Selectors).Scope!;
        Assert.True(scope.Host);
        Assert.Null(scope.Namespace);
        Assert.Equal("app In (probe), k8s:io.kubernetes.pod.namespace NotIn (kube-system), tier DoesNotExist", scope.Pods!.ToString());
        Assert.Contains(set.Notices, n => n.Contains("spec.nodeSelector: not applied", StringComparison.Ordinal));
        Assert.Contains("not supported: spec.containerSelector",
            ErrorOf(File.ReadAllText(Reference).Replace("spec:", "spec:\n  containerSelector: {matchLabels: {name: web}}", StringComparison.Ordinal)), StringComparison.Ordinal);
        Assert.Contains("operator 'Gt'", ErrorOf(File.ReadAllText(Reference).Replace("spec:",
            "spec:\n  podSelector: {matchExpressions: [{key: a, operator: Gt, values: ['1']}]}", StringComparison.Ordinal)), StringComparison.Ordinal);
    }

    /// <summary>Tetragon's table (k8s-filtering.md, "Filtering semantics"), and a namespaced policy's namespace.</summary>
    [Theory]
    // hostSelector, podSelector (app=probe), namespace; workload: host or ns/app
    [InlineData(false, false, null, "host", true)]
    [InlineData(false, false, null, "team-a/probe", true)]
    [InlineData(false, true, null, "host", false)]
    [InlineData(false, true, null, "team-b/probe", true)]
    [InlineData(false, true, null, "team-b/other", false)]
    [InlineData(true, false, null, "host", true)]
    [InlineData(true, false, null, "team-a/probe", false)]
    [InlineData(true, true, null, "host", true)]
    [InlineData(true, true, null, "team-a/probe", true)]
    [InlineData(true, true, null, "team-a/other", false)]
    [InlineData(false, false, "team-a", "host", false)]
    [InlineData(false, false, "team-a", "team-a/other", true)]
    [InlineData(false, false, "team-a", "team-b/probe", false)]
    [InlineData(false, true, "team-a", "team-a/probe", true)]
    [InlineData(false, true, "team-a", "team-a/other", false)]
    public void WorkloadScope_HostPodAndNamespaceSelectors_SelectAsTetragonDoes(bool host, bool pods, string? ns, string workload, bool selected)
    {
        var scope = new WorkloadScope(ns, pods ? new LabelSelector([new LabelRequirement("app", "In", ["probe"])]) : null, host);
        var (podNs, labels) = workload == "host" ? (null, null) : (workload.Split('/')[0], new Dictionary<string, string> { ["app"] = workload.Split('/')[1] });
        Assert.Equal(selected, scope.Selects(podNs, labels));
    }

    [Fact]
    public void LabelSelector_NamespaceLabel_IsThePodsNamespace()
    {
        var scope = new WorkloadScope(null, new LabelSelector([new LabelRequirement(LabelSelector.PodNamespaceLabel, "In", ["kube-system"])]), false);
        Assert.True(scope.Selects("kube-system", null));
        Assert.False(scope.Selects("default", null));
        Assert.True(new WorkloadScope(null, new LabelSelector([]), false).Selects("default", null)); // podSelector: {} is every pod
        Assert.False(new WorkloadScope(null, new LabelSelector([]), false).Selects(null, null));     // and no host process
    }

    [Theory]
    [InlineData("10.1")]
    [InlineData("192.168.1/24")]
    [InlineData("010.0.0.1")]
    [InlineData("10.0.0.0/08")]
    public void Policy_ShortOrMalformedAddress_RefusedAsGoRefusesIt(string value)
    {
        var e = Assert.Throws<TracingPolicyException>(() => TracingPolicyReader.ReadFile(Reference, Env(("PODCIDR", value), ("SERVICECIDR", "10.48.0.0/20"))));
        Assert.Contains($"'{value}'", e.Message, StringComparison.Ordinal);
    }
}

public class CidrsTests
{
    [Theory]
    [InlineData("10.0.0.0/8", "10.0.0.0/8")]
    [InlineData("10.1.2.3/8", "10.0.0.0/8")]
    [InlineData("127.0.0.1", "127.0.0.1/32")]
    [InlineData(" 198.51.100.7/24 ", "198.51.100.0/24")]
    [InlineData("fd00::1/64", "fd00::/64")]
    [InlineData("::1", "::1/128")]
    [InlineData("0.0.0.0/0", "0.0.0.0/0")]
    [InlineData("::ffff:10.1.2.3", "::ffff:10.1.2.3/128")]
    [InlineData("2001:db8::/32", "2001:db8::/32")]
    public void Parse_Valid_NormalizedNetwork(string text, string expected) =>
        Assert.Equal(expected, Cidrs.Parse(text).ToString());

    [Theory]
    [InlineData("10.0.0.0/33")]
    [InlineData("fd00::/129")]
    [InlineData("example.com")]
    [InlineData("10.0.0.0/")]
    [InlineData("10.0.0.0/-1")]
    [InlineData("")]
    [InlineData("10.1")]
    [InlineData("10.1.2")]
    [InlineData("192.168.1/24")]
    [InlineData("010.0.0.1")]
    [InlineData("10.0.0.256")]
    [InlineData("10.0.0.0/+8")]
    [InlineData("10.0.0.0/08")]
    [InlineData("0x0a.0.0.1")]
    [InlineData("fe80::1%eth0")]
    [InlineData("[::1]")]
    [InlineData("::ffff:1.2.3")]
    [InlineData("12345::1")]
    public void Parse_Invalid_FormatException(string text)
    {
        Assert.Throws<FormatException>(() => Cidrs.Parse(text));
        Assert.False(Cidrs.TryParse(text, out _));
    }
}

public class KernelSymbolsTests
{
    private const string Sample = """
        0000000000000000 A fixed_percpu_data
        ffffffff81000000 T _stext
        ffffffff81a00000 T __udp4_lib_rcv
        ffffffff81a00800 t udp_queue_rcv_one_skb
        ffffffff81b00000 D some_data
        ffffffffc0001000 t veth_xmit	[veth]
        """;

    [Theory]
    [InlineData(0xffffffff81a00000UL, "__udp4_lib_rcv+0x0")]
    [InlineData(0xffffffff81a0012aUL, "__udp4_lib_rcv+0x12a")]
    [InlineData(0xffffffff81a00810UL, "udp_queue_rcv_one_skb+0x10")]
    [InlineData(0xffffffffc0001004UL, "veth_xmit+0x4")]
    [InlineData(0xffffffff80000000UL, "0xffffffff80000000")]
    public void Resolve_Address_FunctionPlusOffset(ulong address, string expected)
    {
        var syms = KernelSymbols.Parse(new StringReader(Sample));
        Assert.Equal(4, syms.Count); // text symbols only
        Assert.Equal(expected, syms.Resolve(address));
    }

    [Fact]
    public void Parse_AddressesHidden_NothingResolves()
    {
        var syms = KernelSymbols.Parse(new StringReader("0000000000000000 T _stext\n0000000000000000 T tcp_v4_rcv\n"));
        Assert.Equal(0, syms.Count);
        Assert.Equal("0xffffffff81a00000", syms.Resolve(0xffffffff81a00000UL));
    }
}

public class KernelDropReasonsTests
{
    [Fact]
    public void Names_EnumConstants_PrefixesDropped()
    {
        var reasons = new KernelDropReasons(new Dictionary<string, long>
        {
            ["SKB_NOT_DROPPED_YET"] = 0,
            ["SKB_CONSUMED"] = 1,
            ["SKB_DROP_REASON_NOT_SPECIFIED"] = 2,
            ["SKB_DROP_REASON_NO_SOCKET"] = 3,
        });

        Assert.Equal("CONSUMED", reasons.Name(1));
        Assert.Equal("NO_SOCKET", reasons.Name(3));
        Assert.Equal("77", reasons.Name(77));
        Assert.Equal(3u, reasons.Value("NO_SOCKET"));
        Assert.Null(reasons.Value("TCP_CSUM"));
    }

    [Fact]
    public void FromRunningKernel_Btf_NamesTheReasonsTheProbeSkipsAndReports()
    {
        if (!File.Exists("/sys/kernel/btf/vmlinux"))
            return; // no kernel BTF on this machine: the kernel tests say so
        var reasons = KernelDropReasons.FromRunningKernel();
        Assert.True(reasons.Count > 10);
        Assert.Equal(1u, reasons.Value("CONSUMED")); // the probe skips values up to SKB_CONSUMED
        Assert.NotNull(reasons.Value("NO_SOCKET"));
        Assert.Equal("NO_SOCKET", reasons.Name(reasons.Value("NO_SOCKET")!.Value));
    }
}

public class AttributionTests
{
    [Fact]
    public void Lookup_NamedNetnsAndRegisteredPod_OnlyThePodIsAPod()
    {
        var dir = Directory.CreateTempSubdirectory("fxp-netns-");
        try
        {
            // stand-ins for /run/netns bind mounts: files whose inodes name them
            File.WriteAllText(Path.Combine(dir.FullName, "blue"), "");
            File.WriteAllText(Path.Combine(dir.FullName, "red"), "");
            uint blue = Attribution.NetnsInode(Path.Combine(dir.FullName, "blue"))!.Value;
            uint red = Attribution.NetnsInode(Path.Combine(dir.FullName, "red"))!.Value;
            var attribution = new Attribution(dir.FullName);

            attribution.Register(red, "default", "xwing");

            // a named namespace (the lab's node or world) is not a pod: it has a name, no pod
            Assert.Null(attribution.Lookup(blue));
            Assert.Equal("blue", attribution.NetnsName(blue));
            Assert.Equal("default/xwing", attribution.Lookup(red)!.ToString());
            Assert.Null(attribution.Lookup(blue + red));

            File.Delete(Path.Combine(dir.FullName, "blue"));
            attribution.Refresh();
            Assert.Null(attribution.NetnsName(blue));
            Assert.True(attribution.Unregister(red));
            Assert.Null(attribution.Lookup(red));
            Assert.Equal("red", attribution.NetnsName(red));
        }
        finally
        {
            dir.Delete(true);
        }
    }

    [Fact]
    public void CurrentNetnsInode_ProcSelf_MatchesNsLink()
    {
        var link = new FileInfo("/proc/self/ns/net").LinkTarget!; // "net:[4026531840]"
        Assert.Equal(link, $"net:[{Attribution.CurrentNetnsInode()}]");
    }
}

public class ProcfsTests
{
    [Fact]
    public void Scan_ThisProcess_IdentityFromProc()
    {
        var procs = ProcfsScanner.Scan();
        var self = procs.Single(p => p.Pid == (uint)Environment.ProcessId);

        Assert.Equal(Environment.ProcessPath, self.Binary);
        Assert.Equal(Environment.CurrentDirectory, self.Cwd);
        Assert.Equal(Attribution.CurrentNetnsInode(), self.NetnsIno);
        Assert.Equal(self.StartTimeNs + self.Pid, self.ExecId);
        Assert.Equal(File.ReadAllText("/proc/self/comm").TrimEnd('\n'), self.Comm);
        Assert.Equal(Environment.GetCommandLineArgs()[1..], self.Argv.Skip(self.Argv.Count - (Environment.GetCommandLineArgs().Length - 1)));
        var parent = procs.SingleOrDefault(p => p.Pid == self.Ppid);
        Assert.Equal(parent?.ExecId ?? 0, self.ParentExecId);
        Assert.DoesNotContain(procs, p => p.Pid == 2); // kthreadd: kernel threads are left out
        Assert.Equal(procs.Count, procs.Select(p => p.ExecId).Distinct().Count());
    }

    [Fact]
    public void ToExecRecord_Process_DecodesAsProcfsExecEvent()
    {
        var p = new ProcfsProcess(Pid: 4242, Ppid: 1, Uid: 1000, Gid: 100, StartTimeNs: 5_000_000_000, ExecId: 5_000_004_242,
            ParentExecId: 77, Binary: "/usr/bin/curl", Argv: ["curl", "-s", "https://ebpf.io/"], ArgsTruncated: false,
            Cwd: "/home/user", Comm: "curl", NetnsIno: 4026531840, CgroupId: 12345);

        var rec = p.ToExecRecord(ktimeNs: 999);
        var ev = EventReader.Read<ExecEvent>(rec);

        Assert.Equal(EventKind.Exec, ev.Hdr.Kind);
        Assert.Equal(rec.Length, ev.Hdr.Size);
        Assert.Equal(999UL, ev.Hdr.Ktime);
        Assert.Equal(ExecFlags.Procfs, ev.Flags);
        Assert.Equal((4242u, 1u, 1000u, 100u), (ev.Pid, ev.Ppid, ev.Uid, ev.Gid));
        Assert.Equal((5_000_004_242UL, 77UL, 5_000_000_000UL), (ev.ExecId, ev.ParentExecId, ev.StartTime));
        Assert.Equal("/usr/bin/curl", EventReader.CString(ev.Filename, ev.FilenameLen));
        Assert.Equal(["curl", "-s", "https://ebpf.io/"], EventReader.Argv(ev));
        Assert.Equal("/home/user", EventReader.CString(ev.Cwd, ev.CwdLen));
        Assert.Equal("curl", EventReader.CString(ev.Comm));
        Assert.Equal((4026531840u, 12345UL, (ushort)3), (ev.NetnsIno, ev.CgroupId, ev.Argc));
    }

    [Fact]
    public void ToExecRecord_LongArguments_TruncatedAtProbeLimit()
    {
        string[] argv = ["sh", .. Enumerable.Repeat(new string('x', 100), 20)];
        var p = new ProcfsProcess(1, 0, 0, 0, 0, 1, 0, "/bin/sh", argv, false, "/", "sh", 1, 1);

        var ev = EventReader.Read<ExecEvent>(p.ToExecRecord(0));

        Assert.True(ev.Flags.HasFlag(ExecFlags.ArgsTruncated));
        Assert.Equal(Limits.ArgsMax, ev.ArgsLen);
    }
}

public class ExitStatusTests
{
    [Theory]
    [InlineData(0u, 0, null, "0")]
    [InlineData(3u << 8, 3, null, "3")]
    [InlineData(255u << 8, 255, null, "255")]
    [InlineData(9u, null, "SIGKILL", "SIGKILL")]
    [InlineData(15u, null, "SIGTERM", "SIGTERM")]
    [InlineData(0x80u | 11, null, "SIGSEGV", "SIGSEGV")]
    [InlineData(36u, null, "SIGRT2", "SIGRT2")]
    public void Decode_WaitStatus_CodeOrSignal(uint status, int? code, string? signal, string text)
    {
        Assert.Equal(code, ExitStatus.Code(status));
        Assert.Equal(signal, ExitStatus.Signal(status));
        Assert.Equal(text, ExitStatus.Describe(status));
        Assert.Equal(status == (0x80u | 11), ExitStatus.CoreDumped(status));
    }
}

public class ProbeOptionsTests
{
    [Fact]
    public void Load_MoreExcludedCidrsThanTheTrieHolds_RejectedBeforeTouchingTheKernel()
    {
        var many = Enumerable.Range(0, Probes.TracingProbes.ExcludeMax + 1).Select(i => new IPNetwork(new IPAddress([10, (byte)(i >> 8), (byte)i, 0]), 24)).ToList();

        var e = Assert.Throws<ArgumentException>(() => Probes.TracingProbes.Load(new ProbeOptions { ExcludedCidrs = many }));

        Assert.Contains($"{Probes.TracingProbes.ExcludeMax + 1} excluded IPv4 CIDRs", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(ProbeSet.All, new EventKind[0], new[] { EventKind.Exec, EventKind.Exit, EventKind.Connect, EventKind.Kdrop })]
    [InlineData(ProbeSet.Connect, new EventKind[0], new[] { EventKind.Connect })]
    [InlineData(ProbeSet.All, new[] { EventKind.Exit, EventKind.Drop }, new[] { EventKind.Exit })]
    [InlineData(ProbeSet.Kdrop, new[] { EventKind.Exec }, new[] { EventKind.None })]
    public void EffectiveKinds_ProbesAndKinds_KernelEmitsTheirIntersection(ProbeSet enabled, EventKind[] kinds, EventKind[] expected)
    {
        var options = new ProbeOptions { Enabled = enabled, Events = new EventOptions { Kinds = kinds.ToHashSet() } };
        Assert.Equal(expected.Order(), Probes.TracingProbes.EffectiveKinds(options).Order());
    }
}

public class ExclusionNormalizeTests
{
    [Theory]
    [InlineData("::ffff:10.0.0.0/104", "10.0.0.0/8")]
    [InlineData("::ffff:127.0.0.1", "127.0.0.1/32")]
    [InlineData("fd00::/64", "fd00::/64")]
    [InlineData("10.0.0.0/8", "10.0.0.0/8")]
    public void Normalize_Ipv4MappedCidr_BecomesIpv4(string cidr, string expected) =>
        Assert.Equal(expected, Probes.TracingProbes.Normalize(Cidrs.Parse(cidr)).ToString());
}
