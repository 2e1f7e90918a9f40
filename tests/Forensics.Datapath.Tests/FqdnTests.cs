using System.Net;
using Forensics.Datapath.Control;
using Forensics.Tests;

namespace Forensics.Datapath.Tests;

/// <summary>
/// toFQDNs as Cilium reads it (pkg/policy/api/fqdn.go, pkg/fqdn/matchpattern) and the DNS
/// answers it learns from (RFC 1035): which names a selector selects, what a response gives.
/// </summary>
public class FqdnTests
{
    [Theory]
    [InlineData("cilium.io", null, "cilium.io", true)]
    [InlineData("cilium.io", null, "CILIUM.IO.", true)]
    [InlineData("cilium.io", null, "www.cilium.io", false)]
    [InlineData("one.one.one.one.", null, "one.one.one.one", true)]
    [InlineData(null, "*.cilium.io", "www.cilium.io", true)]
    [InlineData(null, "*.cilium.io", "cilium.io", false)]
    [InlineData(null, "*.cilium.io", "a.b.cilium.io", false)]
    [InlineData(null, "*cilium.io", "cilium.io", true)]
    [InlineData(null, "*cilium.io", "www.cilium.io", false)]
    [InlineData(null, "*cilium.io", "xcilium.io", true)]
    [InlineData(null, "sub*.cilium.io", "subdomain.cilium.io", true)]
    [InlineData(null, "sub*.cilium.io", "www.cilium.io", false)]
    [InlineData(null, "*", "anything.example", true)]
    [InlineData(null, "**.cilium.io", "a.b.cilium.io", true)]
    [InlineData(null, "**.cilium.io", "cilium.io", false)]
    [InlineData(null, "*.github.com", "api.github.com", true)]
    [InlineData(null, "*.github.com", "github.com", false)]
    [InlineData(null, "", "example.com", false)]
    public void FqdnSelector_Name_MatchesAsCiliumsMatchpattern(string? name, string? pattern, string query, bool expected)
    {
        Assert.Equal(expected, new FqdnSelector(name, pattern).Matches(query));
    }

    [Fact]
    public void DnsMessage_ResponseWithCnameChain_AddressesForTheQuestionAndEachTarget()
    {
        var msg = DnsPackets.Response(7, "www.example.com",
            [("www.example.com", "cname:edge.example.net"), ("edge.example.net", "203.0.113.10"), ("edge.example.net", "2001:db8::10"), ("unrelated.test", "203.0.113.99")]);

        Assert.True(DnsMessage.TryParseResponse(msg, out var question, out var addrs));

        Assert.Equal("www.example.com.", question);
        Assert.Equal(
            [("edge.example.net.", "203.0.113.10"), ("www.example.com.", "203.0.113.10"), ("edge.example.net.", "2001:db8::10"), ("www.example.com.", "2001:db8::10")],
            addrs.Select(a => (a.Name, a.Address.ToString())));
        Assert.All(addrs, a => Assert.Equal(300u, a.Ttl));
    }

    [Fact]
    public void DnsMessage_QueryErrorOrTruncated_NotAResponse()
    {
        var ok = DnsPackets.Response(1, "a.example", [("a.example", "203.0.113.1")]);

        Assert.True(DnsMessage.TryParseResponse(ok, out _, out var addrs));
        Assert.Equal(IPAddress.Parse("203.0.113.1"), Assert.Single(addrs).Address);
        Assert.False(DnsMessage.TryParseResponse(DnsPackets.Query(1, "a.example"), out _, out _));
        Assert.False(DnsMessage.TryParseResponse(DnsPackets.Response(1, "a.example", [], rcode: 3), out _, out _));
        Assert.False(DnsMessage.TryParseResponse(ok.AsSpan(0, ok.Length - 2), out _, out _));
        // a compression pointer to itself
        var loop = (byte[])ok.Clone();
        loop[12] = 0xc0;
        loop[13] = 12;
        Assert.False(DnsMessage.TryParseResponse(loop, out _, out _));
    }

    [Fact]
    public void DnsMessage_AnswerToAQuery_AsAnAuthoritativeServerAnswers()
    {
        var names = new Dictionary<string, IPAddress> { ["api.example.com."] = IPAddress.Parse("203.0.113.10"), ["v6.example."] = IPAddress.Parse("2001:db8::1") };

        var a = DnsMessage.Answer(DnsPackets.Query(9, "API.example.com"), names);
        var aaaa = DnsMessage.Answer(DnsPackets.Query(10, "v6.example", DnsPackets.Aaaa), names);
        var wrongFamily = DnsMessage.Answer(DnsPackets.Query(11, "api.example.com", DnsPackets.Aaaa), names);
        var unknown = DnsMessage.Answer(DnsPackets.Query(12, "nope.example"), names);

        Assert.True(DnsMessage.TryParseResponse(a, out var q, out var addrs));
        Assert.Equal(("api.example.com.", "203.0.113.10", 300u), (q, Assert.Single(addrs).Address.ToString(), addrs[0].Ttl));
        Assert.Equal(9, a![0] << 8 | a[1]);
        Assert.True(DnsMessage.TryParseResponse(aaaa, out _, out var v6));
        Assert.Equal("2001:db8::1", Assert.Single(v6).Address.ToString());
        Assert.True(DnsMessage.TryParseResponse(wrongFamily, out _, out var none));
        Assert.Empty(none);
        Assert.Equal(3, unknown![3] & 0xf); // NXDOMAIN
        Assert.Null(DnsMessage.Answer(a, names)); // a response is not a query
    }

    [Theory]
    [InlineData("dns: {api.example.com: 203.0.113}", "is not an IPv4 or IPv6 address")]
    [InlineData("dns: {'bad name': 203.0.113.10}", "is not a DNS name")]
    [InlineData("dns: [api.example.com]", "expected a mapping of DNS names to addresses")]
    [InlineData("udp: [53]\n      dns: {api.example.com: 203.0.113.10}", "leave 53 out of udp")]
    public void LabWorldHostDns_Malformed_OneLineError(string field, string expected)
    {
        var yaml = $$$"""
            apiVersion: forensics.dev/v1
            kind: Lab
            metadata: {name: w}
            spec:
              podCIDR: 10.0.0.0/24
              serviceCIDR: 10.0.1.0/24
              nodeIP: 192.0.2.1
              world:
                - name: resolver
                  ip: 203.0.113.53
                  {{{field}}}
            """;
        var e = Assert.Throws<ClusterSpecException>(() => ClusterLoader.Load(yaml, "w.yaml"));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    private static ClusterSpec Load(string egress) => ClusterLoader.Load(CiliumFiles.Lab + $$$"""

        ---
        {{{CiliumFiles.Pod("client", ("kind", "client"))}}}
        ---
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: fqdn}
        spec:
          endpointSelector: {matchLabels: {kind: client}}
          egress:
        {{{egress}}}
        """, "fqdn.yaml");

    [Theory]
    [InlineData("    - toFQDNs: [{matchName: a.example, matchPattern: '*.example'}]", "only one of MatchName or MatchPattern is allowed in an FQDNSelector")]
    [InlineData("    - toFQDNs: [{matchName: 'a b.example'}]", "Invalid characters in MatchName: \"a b.example\"")]
    [InlineData("    - toFQDNs: [{matchPattern: 'a?.example'}]", "Invalid characters in MatchPattern: \"a?.example\"")]
    [InlineData("    - toFQDNs: [{matchName: a.example}]\n      toCIDR: [203.0.113.0/24]", "Combining ToCIDR and ToFQDNs is not supported yet (Cilium refuses this rule)")]
    [InlineData("    - toFQDNs: [{name: a.example}]", "unknown field")]
    public void ToFqdns_WhatCiliumRefuses_RefusedWithItsWords(string egress, string expected)
    {
        var e = Assert.Throws<ClusterSpecException>(() => Load(egress));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ToFqdns_NothingLearnt_LoadsSelectsNoAddressAndSaysSoOnce()
    {
        var c = Load("""
                - toFQDNs: [{matchName: a.example}]
                  toPorts: [{ports: [{port: "80", protocol: TCP}]}]
                - toFQDNs: [{matchPattern: "*.example"}]
            """);
        var ids = new IdentityAllocator();
        ids.Preallocate(c);

        var compiled = PolicyCompiler.Compile(c.PodNamed("client"), 1, c.Policies, ids, PolicyContext.Of(c));

        // egress is enforced (default deny) and nothing is allowed: no address was learnt
        Assert.True(compiled.EgressEnforced);
        Assert.Empty(compiled.Entries);
        Assert.Single(c.Notices, n => n.Contains("toFQDNs selects only addresses learnt from DNS answers", StringComparison.Ordinal));
    }

    [Fact]
    public void ToFqdns_NameLearnt_SelectsItsAddressesOnlyForMatchingSelectors()
    {
        var c = Load("""
                - toFQDNs: [{matchName: a.example}]
                  toPorts: [{ports: [{port: "80", protocol: TCP}]}]
            """);
        var ids = new IdentityAllocator();
        ids.Preallocate(c);
        var a = ids.ForCidr(IPNetwork.Parse("203.0.113.10/32"));
        var b = ids.ForCidr(IPNetwork.Parse("203.0.113.20/32"));
        var context = PolicyContext.Of(c) with
        {
            LearntNames = new Dictionary<string, IReadOnlyList<IPAddress>>
            {
                ["a.example."] = [IPAddress.Parse("203.0.113.10")],
                ["b.example."] = [IPAddress.Parse("203.0.113.20")],
            },
        };

        var compiled = PolicyCompiler.Compile(c.PodNamed("client"), 1, c.Policies, ids, context);

        var e = Assert.Single(compiled.Entries);
        Assert.Equal((a.Id, PolicyCompiler.Tcp, (ushort)80, true), (e.Identity, e.Protocol, e.Port, e.Allow));
        Assert.DoesNotContain(compiled.Entries, x => x.Identity == b.Id);
    }

    /// <summary>A name a selector selects: its matchName, or its pattern with each wildcard made one label's worth.</summary>
    private static string NameFor(FqdnSelector f) => f.MatchName ?? (f.MatchPattern!.Trim('.') is "*" or "**" ? "any.example" :
        System.Text.RegularExpressions.Regex.Replace(f.MatchPattern!.Replace("**.", "a.b.", StringComparison.Ordinal), "[*]+", "x"));

    [Fact]
    public void CorpusToFqdnsFiles_BeforeAndAfterALookup_SelectNothingThenTheLearntAddressesOnTheRulesPorts()
    {
        // Cilium's own files with toFQDNs: before any lookup the rules add no policy entry (their selector
        // selects no address); once a name each selector matches was learnt, every pod the policy selects
        // is allowed to that name's address, on the rule's ports (any port when it names none)
        var files = CiliumCorpus.PolicyFiles().Where(f => File.ReadAllText(CiliumFiles.PathOf(f)).Contains("toFQDNs", StringComparison.Ordinal)).ToList();
        int checkedFiles = 0;
        foreach (var f in files)
        {
            var c = CiliumCorpus.Load(f);
            var selectors = c.Policies.SelectMany(p => p.Egress).SelectMany(r => r.Fqdns).Distinct().ToList();
            if (selectors.Count == 0)
                continue; // toFQDNs only in a comment
            checkedFiles++;
            var names = selectors.Select((s, i) => (Selector: s, Name: NameFor(s), Address: IPAddress.Parse($"198.51.100.{100 + i}"))).ToList();
            Assert.All(names, n => Assert.True(n.Selector.Matches(n.Name), $"{f}: {n.Selector} does not select {n.Name}"));
            var ids = new IdentityAllocator();
            ids.Preallocate(c);
            var withoutFqdnRules = c.Policies.Select(p => p with { Egress = [.. p.Egress.Where(r => r.Fqdns.Count == 0)] }).ToList();
            var learnt = PolicyContext.Of(c) with
            {
                LearntNames = names.GroupBy(n => n.Name.TrimEnd('.') + ".").ToDictionary(g => g.Key, g => (IReadOnlyList<IPAddress>)[.. g.Select(n => n.Address)]),
            };
            var addressIds = names.ToDictionary(n => n.Address, n => ids.ForCidr(new IPNetwork(n.Address, 32)).Id);
            foreach (var pod in c.Pods)
            {
                var before = PolicyCompiler.Compile(pod, 1, c.Policies, ids, PolicyContext.Of(c));
                var baseline = PolicyCompiler.Compile(pod, 1, withoutFqdnRules, ids, PolicyContext.Of(c));
                static string Key(PolicyEntry e) => $"{e.Direction} {e.Identity} {e.Protocol} {e.Port}-{e.EndPort} {e.Allow} {e.Deny}";
                Assert.True(before.Entries.Select(Key).SequenceEqual(baseline.Entries.Select(Key)), $"{f}: {pod.FullName}: toFQDNs added entries before any lookup");

                var after = PolicyCompiler.Compile(pod, 1, c.Policies, ids, learnt);
                var labels = IdentityAllocator.PodLabels(pod);
                foreach (var p in c.Policies.Where(p => (p.Clusterwide || p.Namespace == pod.Namespace) && PolicyCompiler.Selects(p.Selector, labels, p.Clusterwide ? null : p.Namespace)))
                {
                    foreach (var rule in p.Egress.Where(r => r.Fqdns.Count > 0))
                    {
                        foreach (var sel in rule.Fqdns)
                        {
                            var id = addressIds[names.First(n => n.Selector == sel).Address];
                            var entries = after.Entries.Where(e => e.Direction == Forensics.Datapath.Abi.Dir.Egress && e.Identity == id && e.Allow).ToList();
                            Assert.True(entries.Count > 0, $"{f}: {pod.FullName}: nothing allowed to the address of {sel} after the lookup");
                            var expected = rule.Ports.Where(pp => pp.Name is null).Select(pp => pp.Port).Distinct().Order().ToList();
                            if (rule.PortsGiven)
                                Assert.True(expected.All(port => entries.Any(e => e.Port == port)), $"{f}: {pod.FullName}: {sel}: ports {string.Join(",", expected)}, allowed {string.Join(",", entries.Select(e => e.Port))}");
                            else
                                Assert.Contains(entries, e => e.Protocol == 0);
                        }
                    }
                }
            }
        }
        Assert.True(checkedFiles >= 20, $"{checkedFiles} files with toFQDNs rules");
    }
}
