using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Forensics.Datapath.Lab;
using Forensics.Tests;

namespace Forensics.Kernel.Tests;

/// <summary>
/// One real recording of the star wars lab (`forensics record --lab`, made on first use), shared by
/// the record-lab test and the what-if tests: one lab run in CI instead of one per class.
/// </summary>
public sealed class StarWarsRecording : IDisposable
{
    public const string Collection = "star wars recording";

    private readonly Lazy<(string Dir, string Output)> rec = new(() => RecordLabTests.RecordExample("starwars.yaml", "fxr-sw"));

    public string Dir => rec.Value.Dir;

    public string Output => rec.Value.Output;

    public void Dispose()
    {
        if (rec.IsValueCreated)
            Directory.Delete(Path.GetDirectoryName(rec.Value.Dir)!, true);
    }
}

[CollectionDefinition(StarWarsRecording.Collection)]
public sealed class StarWarsRecordingGroup : ICollectionFixture<StarWarsRecording>;

/// <summary>
/// `forensics whatif` on a real recording of the star wars lab: the recorded flows replayed
/// through the real datapath programs under changed policies (issue 20's "done when").
/// </summary>
[Collection(StarWarsRecording.Collection)]
public partial class WhatIfTests(StarWarsRecording rec)
{
    internal const string XwingNoWorld = """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata:
          name: xwing-no-world
        spec:
          endpointSelector:
            matchLabels:
              class: xwing
          egressDeny:
            - toEntities:
                - world
        """;

    internal const string BackendOpen9090 = """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata:
          name: backend-from-frontend-8080
        spec:
          endpointSelector:
            matchLabels:
              app: backend
          ingress:
            - fromEndpoints:
                - matchLabels:
                    app: frontend
              toPorts:
                - ports:
                    - port: "8080"
                      protocol: TCP
                    - port: "9090"
                      protocol: TCP
        """;

    internal sealed record Row(string Source, string Destination, int Port, string Protocol, long Flows,
        string Recorded, string RecordedReason, string New, string NewReason, string DecidedAt, string Rule, bool Changed, string Packet)
    {
        public string Group => $"{Source} -> {Destination}:{Port}/{Protocol}";
    }

    internal static (int Code, List<Row> Rows, string Stderr) WhatIf(params string[] args)
    {
        var r = Commands.Run(LabFixture.Cli, ["whatif", .. args, "-f", "json"], TimeSpan.FromSeconds(120));
        var rows = r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => JsonDocument.Parse(l).RootElement)
            .Select(e => new Row(
                e.GetProperty("source").GetString()!, e.GetProperty("destination").GetString()!, e.GetProperty("port").GetInt32(),
                e.GetProperty("protocol").GetString()!, e.GetProperty("flows").GetInt64(),
                e.GetProperty("recorded").GetString()!, e.GetProperty("recorded_reason").GetString()!,
                e.GetProperty("new").GetString()!, e.GetProperty("new_reason").GetString()!,
                e.GetProperty("decided_at").GetString()!, e.GetProperty("rule").GetString()!,
                e.GetProperty("changed").GetBoolean(), e.GetProperty("packet").GetString()!))
            .ToList();
        return (r.ExitCode, rows, r.Stderr);
    }

    internal static string PolicyFile(string yaml)
    {
        var path = Path.Combine(Scratch.Dir("fx-whatif-"), "policy.yaml");
        File.WriteAllText(path, yaml + "\n");
        return path;
    }

    [KernelFact]
    public void WhatIf_PoliciesUnchanged_NoFlowChangesAndEveryStepReplayed()
    {
        var (code, rows, err) = WhatIf(rec.Dir);

        Assert.True(code == 0, $"exit {code}: {err}");
        Assert.DoesNotContain(rows, r => r.Changed);
        Assert.All(rows, r => Assert.Equal("captured", r.Packet)); // the lab records captures: headers come from them
        // every step of the scenario is a flow group, with the recorded outcome reproduced
        var darkside = Assert.Single(rows, r => r.Destination == "203.0.113.66");
        Assert.Equal(("dropped", "181 Policy denied by denylist"), (darkside.New, darkside.NewReason));
        Assert.Equal("default/xwing-denylist spec.egressDeny[0] (L3-Only)", darkside.Rule); // the rule, by the rule id of the verdict
        var admin = Assert.Single(rows, r => r.Destination == "default/backend-2" && r.Port == 9090);
        Assert.Equal(("dropped", "133 Policy denied"), (admin.New, admin.NewReason));
        Assert.Equal("ingress default/backend-2", admin.DecidedAt);
        Assert.Contains(rows, r => r.Destination == "service default/backend-service" && r.Port == 8080 && r.New == "delivered");
        Assert.Contains(rows, r => r.Destination == "service default/deathstar" && r.Port == 80 && r.New == "delivered");
        Assert.Contains(rows, r => r.Destination == "198.51.100.10" && r.Protocol == "tcp" && r.New == "delivered");
        Assert.Contains(rows, r => r.Destination == "198.51.100.53" && r.Protocol == "udp" && r.New == "delivered");
        Assert.Contains("0 changed", err, StringComparison.Ordinal);
    }

    [KernelFact]
    public void WhatIf_DenylistRemoved_DarksideFlowDeliveredAndNothingElseChanges()
    {
        var (code, rows, err) = WhatIf(rec.Dir, "--remove-policy", "xwing-denylist");

        Assert.True(code == 0, $"exit {code}: {err}");
        var changed = Assert.Single(rows, r => r.Changed);
        Assert.Equal(("default/xwing", "203.0.113.66", 443, "tcp"), (changed.Source, changed.Destination, changed.Port, changed.Protocol));
        Assert.Equal(("dropped", "181 Policy denied by denylist"), (changed.Recorded, changed.RecordedReason));
        Assert.Equal(("delivered", ""), (changed.New, changed.NewReason));
        var (_, only, _) = WhatIf(rec.Dir, "--remove-policy", "default/xwing-denylist", "--changed-only");
        Assert.Equal([changed.Group], only.Select(r => r.Group));
    }

    [KernelFact]
    public void WhatIf_XwingEgressToWorldDenied_ExactlyTheOutsideFlowsDroppedAndExitCodeSaysSo()
    {
        var (code, rows, err) = WhatIf(rec.Dir, "--policy", PolicyFile(XwingNoWorld), "--changed-only");

        Assert.True(code == 8, $"exit {code}: {err}");
        Assert.Equal(["default/xwing -> 198.51.100.10:443/tcp", "default/xwing -> 198.51.100.53:53/udp"], rows.Select(r => r.Group).Order(StringComparer.Ordinal));
        Assert.All(rows, r =>
        {
            Assert.Equal(("delivered", "dropped", "181 Policy denied by denylist"), (r.Recorded, r.New, r.NewReason));
            Assert.Equal("egress default/xwing", r.DecidedAt);
            Assert.Equal("default/xwing-no-world spec.egressDeny[0] (L3-Only)", r.Rule);
        });
        Assert.Contains("2 delivered -> dropped", err, StringComparison.Ordinal);
    }

    [KernelFact]
    public void WhatIf_BackendIngressOpenedTo9090_The9090DropBecomesDelivered()
    {
        var (code, rows, err) = WhatIf(rec.Dir, "--policy", PolicyFile(BackendOpen9090));

        Assert.True(code == 0, $"exit {code}: {err}");
        var changed = Assert.Single(rows, r => r.Changed);
        Assert.Equal(("default/frontend-1", "default/backend-2", 9090), (changed.Source, changed.Destination, changed.Port));
        Assert.Equal(("dropped", "133 Policy denied", "delivered"), (changed.Recorded, changed.RecordedReason, changed.New));
        Assert.Equal("default/backend-from-frontend-8080 spec.ingress[0] (L3-L4)", changed.Rule);
    }

    [KernelFact]
    public void WhatIf_PortRangeOpenedWithEndPort_TheRuleThatAllowsIsNamedByItsRuleId()
    {
        // a port range is blocks of keys in the policy map's LPM trie: the verdict's rule id names the rule, not the port
        var range = BackendOpen9090.Replace("""
                    - port: "9090"
                      protocol: TCP
        """, """
                    - port: "9000"
                      endPort: 9999
                      protocol: TCP
        """, StringComparison.Ordinal);
        Assert.Contains("endPort: 9999", range, StringComparison.Ordinal);
        var (code, rows, err) = WhatIf(rec.Dir, "--policy", PolicyFile(range));

        Assert.True(code == 0, $"exit {code}: {err}");
        var changed = Assert.Single(rows, r => r.Changed);
        Assert.Equal(("default/backend-2", 9090, "delivered"), (changed.Destination, changed.Port, changed.New));
        Assert.Equal("default/backend-from-frontend-8080 spec.ingress[0] (L3-L4)", changed.Rule);
    }

    /// <summary>kubectl get svc,endpointslices -A -o json with backend-service's 8080 served by backend-2's 9090.</summary>
    internal static string ServicesFile(string backendIp) =>
        $$$$"""
        {"apiVersion":"v1","kind":"List","items":[
          {"apiVersion":"v1","kind":"Service","metadata":{"name":"backend-service","namespace":"default"},
           "spec":{"type":"ClusterIP","clusterIP":"10.0.1.100","clusterIPs":["10.0.1.100"],"ports":[{"name":"http","port":8080,"protocol":"TCP","targetPort":9090}],"selector":{"app":"backend"}}},
          {"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"backend-service-x1","namespace":"default","labels":{"kubernetes.io/service-name":"backend-service"}},
           "addressType":"IPv4","ports":[{"name":"http","port":9090,"protocol":"TCP"}],
           "endpoints":[{"addresses":["{{{{backendIp}}}}"],"conditions":{"ready":true},"targetRef":{"kind":"Pod","name":"backend-2","namespace":"default"}}]}
        ]}
        """;

    [KernelFact]
    public void WhatIf_ServicesFile_BackendServiceMovedTo9090_TheServiceFlowBecomesDroppedAtTheBackendsIngress()
    {
        var ip = Commands.Run(LabFixture.Cli, ["query", rec.Dir, "SELECT DISTINCT ip FROM endpoints WHERE pod = 'backend-2'", "-f", "csv"], TimeSpan.FromSeconds(60));
        var backendIp = ip.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Skip(1).Single();
        var file = Path.Combine(Scratch.Dir("fx-whatif-svc-"), "services.json");
        File.WriteAllText(file, ServicesFile(backendIp));

        var (code, rows, err) = WhatIf(rec.Dir, "--services-file", file, "--changed-only");

        // the frontend's connects to backend-service:8080 are now translated to 9090, which backend-2's ingress does not allow
        Assert.True(code == 8, $"exit {code}: {err}");
        var changed = Assert.Single(rows);
        Assert.Equal(("default/frontend-1", "service default/backend-service", 8080), (changed.Source, changed.Destination, changed.Port));
        Assert.Equal(("delivered", "dropped", "133 Policy denied"), (changed.Recorded, changed.New, changed.NewReason));
        Assert.Equal("ingress default/backend-2", changed.DecidedAt);
        Assert.Contains($"the services are the 1 service ports of {file}", err, StringComparison.Ordinal);
        // deathstar is not in the file: its flows have no service now and are replayed to its address as sent
        var all = WhatIf(rec.Dir, "--services-file", file).Rows;
        Assert.DoesNotContain(all, r => r.Destination == "service default/deathstar");

        var bad = Path.Combine(Path.GetDirectoryName(file)!, "bad.json");
        File.WriteAllText(bad, "[1, 2");
        var r = Commands.Run(LabFixture.Cli, ["whatif", rec.Dir, "--services-file", bad], TimeSpan.FromSeconds(120));
        Assert.Equal(7, r.ExitCode);
        var line = Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith($"error: {bad}: not the JSON of 'kubectl get svc,endpointslices -A -o json'", line, StringComparison.Ordinal);
        Directory.Delete(Path.GetDirectoryName(file)!, true);
    }

    [KernelFact]
    public void WhatIf_PolicyDoesNotParse_OneLineErrorExit7()
    {
        var bad = PolicyFile("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: x\nspec:\n  endpointSelector: [\n");
        var r = Commands.Run(LabFixture.Cli, ["whatif", rec.Dir, "--policy", bad], TimeSpan.FromSeconds(120));

        Assert.Equal(7, r.ExitCode);
        Assert.Equal("", r.Stdout);
        var line = Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith($"error: {bad}:", line, StringComparison.Ordinal);
        Assert.Contains("malformed YAML", line, StringComparison.Ordinal);
        var unknown = Commands.Run(LabFixture.Cli, ["whatif", rec.Dir, "--remove-policy", "no-such-policy"], TimeSpan.FromSeconds(120));
        Assert.Equal(7, unknown.ExitCode);
        Assert.StartsWith("error: --remove-policy no-such-policy: the recording has no policy default/no-such-policy", unknown.Stderr, StringComparison.Ordinal);
    }

    /// <summary>
    /// The star wars scenario with the changed policies, its expectations taken out (they are the
    /// unchanged policy's) and every step bounded to 1 s, so that denied steps end quickly.
    /// </summary>
    internal static string ChangedScenario()
    {
        var yaml = File.ReadAllText(Repo.Path("examples", "starwars.yaml"));
        var lines = yaml.Split('\n').ToList();
        var kept = new List<string>();
        for (int i = 0; i < lines.Count; i++)
        {
            var m = ExpectLine().Match(lines[i]);
            if (m.Success)
            {
                var indent = m.Groups[1].Value.Length;
                while (i + 1 < lines.Count && lines[i + 1].Length - lines[i + 1].TrimStart().Length > indent && lines[i + 1].Trim().Length > 0)
                    i++;
                continue;
            }
            if (TimeoutLine().IsMatch(lines[i]))
                continue;
            kept.Add(lines[i]);
            if (StepPodLine().Match(lines[i]) is { Success: true } pod)
                kept.Add(pod.Groups[1].Value + "timeout: 1s");
        }
        yaml = string.Join('\n', kept);
        var policy = yaml.IndexOf("name: backend-from-frontend-8080", StringComparison.Ordinal);
        var start = yaml.LastIndexOf("---", policy, StringComparison.Ordinal);
        var end = yaml.IndexOf("---", policy, StringComparison.Ordinal);
        return yaml[..start] + "---\n" + BackendOpen9090 + "\n" + yaml[end..] + "\n---\n" + XwingNoWorld + "\n";
    }

    [GeneratedRegex(@"^(\s*)expect:\s*$")]
    private static partial Regex ExpectLine();

    [GeneratedRegex(@"^\s+timeout:\s")]
    private static partial Regex TimeoutLine();

    [GeneratedRegex(@"^(\s+)pod:\s")]
    private static partial Regex StepPodLine();

    [KernelFact]
    public void WhatIf_ChangedPolicies_SameVerdictsAsTheLabRunningThem()
    {
        // what whatif says the changed policies do to the recorded flows ...
        var (code, predicted, err) = WhatIf(rec.Dir, "--policy", PolicyFile(BackendOpen9090), "--policy", PolicyFile(XwingNoWorld));
        Assert.True(code == 8, $"exit {code}: {err}");
        Assert.Contains(predicted, r => r.Changed);

        // ... and what the lab's real traffic meets when the changed policies are in force
        var (dir, output) = RecordLabTests.RecordYaml(ChangedScenario(), "starwars-changed.yaml", "fxw-swc");
        try
        {
            var (code2, observed, err2) = WhatIf(dir);
            Assert.True(code2 == 0, $"exit {code2}: {err2} {output}");
            var want = predicted.ToDictionary(r => r.Group, r => (r.New, r.NewReason));
            var got = observed.ToDictionary(r => r.Group, r => (r.Recorded, r.RecordedReason));
            Assert.Equal(want.Keys.Order(StringComparer.Ordinal), got.Keys.Order(StringComparer.Ordinal));
            foreach (var (group, verdict) in want)
                Assert.True(verdict == got[group], $"{group}: whatif says {verdict}, the lab recorded {got[group]}");
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(dir)!, true);
        }
    }
}

/// <summary>
/// Issue 20 item 3: `whatif` on a recording imported from Hubble: the pods and their identities come from the
/// labels Hubble's flows name, and the flows are replayed through the real datapath against the policies given.
/// </summary>
public class WhatIfHubbleTests
{
    private static string Flow(string time, string verdict, string src, string dst, string proto, int sport, int dport,
        string srcEnd, string dstEnd, int type, int subType, string point) =>
        $$$"""{"flow":{"time":"{{{time}}}","verdict":"{{{verdict}}}","IP":{"source":"{{{src}}}","destination":"{{{dst}}}","ipVersion":"IPv4"},"l4":{"{{{proto}}}":{"source_port":{{{sport}}},"destination_port":{{{dport}}}}},"source":{{{srcEnd}}},"destination":{{{dstEnd}}},"Type":"L3_L4","node_name":"node-1","event_type":{"type":{{{type}}},"sub_type":{{{subType}}}},"traffic_direction":"EGRESS","trace_observation_point":"{{{point}}}","is_reply":false}}""";

    private static string Pod(int id, int identity, string name, string labels) =>
        $$$"""{"ID":{{{id}}},"identity":{{{identity}}},"namespace":"default","pod_name":"{{{name}}}","labels":[{{{string.Join(",", labels.Split(',').Select(l => $"\"k8s:{l}\""))}}},"k8s:io.kubernetes.pod.namespace=default"]}""";

    private const string World = """{"identity":2,"labels":["reserved:world"]}""";

    [KernelFact]
    public void WhatIf_HubbleImport_XwingNoWorld_ExactlyItsOutsideFlowsBecomeDroppedByTheRule()
    {
        var work = Scratch.Dir("fx-whatif-hubble-");
        try
        {
            string xwing = Pod(11, 4001, "xwing", "class=xwing,org=alliance"), frontend = Pod(12, 4002, "frontend-1", "app=frontend"), backend = Pod(13, 4003, "backend-2", "app=backend");
            var export = Path.Combine(work, "flows.jsonl");
            File.WriteAllLines(export,
            [
                Flow("2026-12-04T10:00:00.000000001Z", "FORWARDED", "10.0.0.1", "10.0.0.2", "TCP", 40001, 8080, frontend, backend, 4, 0, "TO_ENDPOINT"),
                Flow("2026-12-04T10:00:01.000000001Z", "FORWARDED", "10.0.0.3", "198.51.100.10", "TCP", 40002, 443, xwing, World, 4, 0, "TO_STACK"),
                Flow("2026-12-04T10:00:02.000000001Z", "FORWARDED", "10.0.0.3", "198.51.100.53", "UDP", 40003, 53, xwing, World, 4, 0, "TO_STACK"),
                Flow("2026-12-04T10:00:03.000000001Z", "DROPPED", "10.0.0.3", "203.0.113.66", "TCP", 40004, 443, xwing, World, 1, 181, "TO_STACK"),
            ]);
            var rec = Path.Combine(work, "rec");
            var import = Commands.Run(LabFixture.Cli, ["import", "hubble", export, "-o", rec], TimeSpan.FromSeconds(60));
            Assert.True(import.ExitCode == 0, import.Stderr);

            var (same, rows0, err0) = WhatIfTests.WhatIf(rec);
            Assert.True(same == 0, $"exit {same}: {err0}");
            Assert.Contains("replayed against the --policy files given (0)", err0, StringComparison.Ordinal);
            // no policy given: every flow Hubble forwarded stays delivered; the denylist's drop is not in force now
            Assert.Equal(["default/xwing -> 203.0.113.66:443/tcp"], rows0.Where(r => r.Changed).Select(r => r.Group));

            var (code, rows, err) = WhatIfTests.WhatIf(rec, "--policy", WhatIfTests.PolicyFile(WhatIfTests.XwingNoWorld));
            Assert.True(code == 8, $"exit {code}: {err}");
            var changed = rows.Where(r => r.Changed).ToList();
            Assert.Equal(["default/xwing -> 198.51.100.10:443/tcp", "default/xwing -> 198.51.100.53:53/udp"], changed.Select(r => r.Group).Order(StringComparer.Ordinal));
            Assert.All(changed, r =>
            {
                Assert.Equal(("delivered", "dropped", "181 Policy denied by denylist"), (r.Recorded, r.New, r.NewReason));
                Assert.Equal("default/xwing-no-world spec.egressDeny[0] (L3-Only)", r.Rule);
                Assert.Equal("5-tuple", r.Packet); // Hubble exports no packet bytes
            });
            var inside = Assert.Single(rows, r => r.Source == "default/frontend-1");
            Assert.Equal(("default/backend-2", 8080, "delivered", "delivered", false), (inside.Destination, inside.Port, inside.Recorded, inside.New, inside.Changed));
            var darkside = Assert.Single(rows, r => r.Destination == "203.0.113.66");
            Assert.Equal(("dropped", "181 Policy denied by denylist", "dropped", false), (darkside.Recorded, darkside.RecordedReason, darkside.New, darkside.Changed));
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }
}
