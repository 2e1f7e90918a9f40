using Forensics.Datapath.Probes;

namespace Forensics.Datapath.Tests;

/// <summary>
/// Tetragon's own network TracingPolicies (testdata/tetragon, unmodified; see
/// NOTICE.md), as users pass them to --tetragon-policy: each is read (what it
/// selects on connects becomes a kernel filter, hooks this recorder does not
/// trace are said), or refused in one line for what a recorder cannot do.
/// </summary>
public class TetragonCorpusTests
{
    private static string PathOf(string upstream) => Path.Combine(AppContext.BaseDirectory, "testdata", "tetragon", upstream);

    private static readonly Func<string, string?> Cluster = n => n switch { "PODCIDR" => "10.44.0.0/14", "SERVICECIDR" => "10.48.0.0/20", _ => null };

    public static TheoryData<string, string> Files() => new()
    {
        // read: file, what its connect filter is ("" for none: recorded unfiltered; "nothing": its hooks select no connect of the class)
        { "examples/policylibrary/egress.yaml", "tcp: NotDAddr" },
        { "examples/quickstart/network_egress_cluster.yaml", "tcp: NotDAddr" },
        // tcp_connect without selectors; tcp_close and tcp_sendmsg (without selectors) stand for the same connects
        { "examples/tracingpolicy/tcp-connect.yaml", "tcp: all" },
        // the same DAddr selector on tcp_connect, tcp_close and tcp_sendmsg: held once
        { "examples/tracingpolicy/tcp-connect-with-selectors.yaml", "tcp: DAddr" },
        { "examples/tracingpolicy/security-socket-connect.yaml", "tcp: Family; udp: Family" },
        // tcp_close without selectors (sk_alloc, __sk_free, tcp_set_state, tcp_create_openreq_child: not recorded)
        { "examples/policylibrary/sshd.yaml", "tcp: all" },
        // tcp_close DAddr 127.0.0.1/32 (the rest as sshd.yaml)
        { "examples/tracingpolicy/tcp-accept.yaml", "tcp: DAddr" },
        // sk_alloc, __sk_free, inet_csk_listen_start; skb hooks; packet functions: not recorded, connects unfiltered
        { "examples/tracingpolicy/tcp-listen.yaml", "" },
        { "examples/tracingpolicy/datagram.yaml", "" },
        { "examples/tracingpolicy/datagram-with-selectors.yaml", "" },
        { "examples/tracingpolicy/datagram-with-sock-tracking.yaml", "" },
        { "examples/tracingpolicy/datagram_518.yaml", "" },
        { "examples/tracingpolicy/dev_queue_xmit.yaml", "" },
        { "examples/tracingpolicy/dev_hard_start_xmit.yaml", "" },
        { "examples/tracingpolicy/stack_traces.yaml", "" },
        // security_socket_connect without selectors (args resolved through btfType: reported, not filtered on)
        { "docs/content/en/docs/concepts/tracing-policy/hooks/socket-connect-address.yaml", "tcp: all; udp: all" },
        // security_socket_bind of AF_ALG sockets: not recorded
        { "docs/content/en/docs/concepts/tracing-policy/hooks/af-alg-bind.yaml", "" },
        // refused: what the message says
        // a TracingPolicyNamespaced (read: its namespace is its selectors' scope) whose selector kills
        { "examples/quickstart/network_egress_cluster_enforce.yaml", "enforcement actions are not supported: this is a recorder" },
        { "examples/tracingpolicy/tcp-connect-only-local-addrs.yaml", "enforcement actions are not supported: this is a recorder" },
        { "examples/tracingpolicy/tcp-connect-only-private-addrs.yaml", "enforcement actions are not supported: this is a recorder" },
        { "examples/tracingpolicy/security-socket-connect-block-others.yaml", "enforcement actions are not supported: this is a recorder" },
        { "examples/tracingpolicy/dns-only-specified-servers.yaml", "enforcement actions are not supported: this is a recorder" },
        // the documentation's copy is not valid YAML (matchArgs indented under matchPIDs' sibling): Tetragon cannot read it either
        { "docs/security-observability-with-ebpf/04_chapter/01_cilium_tracing_policy/04_deny_c2_connection.yaml", "the TracingPolicy is not valid YAML" },
        // the book's CiliumRuntimeSecurityPolicy version of it: tabs as indentation, not YAML
        { "docs/security-observability-with-ebpf/04_chapter/00_cilium_runtime_security_policy/04_deny_c2_connection.yaml", "the TracingPolicy is not valid YAML" },
    };

    [Theory]
    [MemberData(nameof(Files))]
    public void TetragonNetworkPolicy_ReadOrRefusedInOneLine(string file, string expected)
    {
        if (expected.Contains("not supported", StringComparison.Ordinal) || expected.Contains("not valid YAML", StringComparison.Ordinal))
        {
            var e = Assert.Throws<TracingPolicyException>(() => TracingPolicyReader.ReadFile(PathOf(file), Cluster));
            Assert.DoesNotContain('\n', e.Message);
            Assert.Contains(expected, e.Message, StringComparison.Ordinal);
            return;
        }
        var set = TracingPolicyReader.ReadFile(PathOf(file), Cluster);
        static string Describe(ConnectSelector s) => ReferenceEquals(s, ConnectSelector.Nothing) ? "nothing" : string.Join('+', new[]
        {
            s.DAddrIn is null ? null : "DAddr", s.DAddrNotIn is null ? null : "NotDAddr", s.SAddrIn is null ? null : "SAddr",
            s.SAddrNotIn is null ? null : "NotSAddr", s.DPort is null ? null : "DPort", s.SPort is null ? null : "SPort",
            s.Families == 0 ? null : "Family", s.Binaries is null ? null : "Binaries",
        }.Where(x => x is not null));
        var got = string.Join("; ", set.Filters.Select(f =>
            $"{(f.Class == ConnectClass.Tcp ? "tcp" : "udp")}: {(f.Selectors.Count == 0 ? "all" : string.Join(" | ", f.Selectors.Select(Describe)))}"));
        Assert.Equal(expected, got);
        if (set.Filters.Count == 0)
            Assert.Contains(set.Notices, n => n.Contains("connects are recorded unfiltered", StringComparison.Ordinal));
    }

    [Fact]
    public void TetragonNetworkPolicies_EveryFileOfTheCorpusHasAnExpectation()
    {
        var root = PathOf("");
        var files = Directory.EnumerateFiles(root, "*.yaml", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(root, f)).Order(StringComparer.Ordinal);
        Assert.Equal(files, Files().Select(d => (string)d[0]).Order(StringComparer.Ordinal));
    }
}
