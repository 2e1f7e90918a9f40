using Forensics.Datapath.Control;

namespace Forensics.Datapath.Tests;

/// <summary>The YAML loader: what it builds, and the one-line error of every kind of bad input.</summary>
public class ClusterLoaderTests
{
    private const string File = "cluster.yaml";

    private const string LabDoc = """
        apiVersion: forensics.dev/v1
        kind: Lab
        metadata:
          name: lab1
        spec:
          podCIDR: 10.0.0.0/24
          serviceCIDR: 10.0.1.0/24
          nodeIP: 192.0.2.1
          world:
            - name: web
              ip: 198.51.100.10
              tcp: [443]
        """;

    private const string PodA = """
        apiVersion: v1
        kind: Pod
        metadata:
          name: a
          labels: {app: a}
        spec:
          containers:
            - name: c
              ports:
                - containerPort: 8080
                  name: http
        """;

    private const string PodB = """
        apiVersion: v1
        kind: Pod
        metadata:
          name: b
          labels: {app: b}
        status:
          podIP: 10.0.0.7
        """;

    private static ClusterSpec Load(params string[] docs) => ClusterLoader.Load(string.Join("\n---\n", docs), File);

    private static string Error(params string[] docs)
    {
        var e = Assert.Throws<ClusterSpecException>(() => Load(docs));
        Assert.DoesNotContain('\n', e.Message);
        Assert.StartsWith(File + ":", e.Message, StringComparison.Ordinal);
        return e.Message;
    }

    private static void Has(string message, string expected) =>
        Assert.True(message.Contains(expected, StringComparison.Ordinal), $"expected '{expected}' in: {message}");

    private static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        for (int i = 0; i < 10 && dir is not null; i++, dir = dir.Parent)
            if (System.IO.File.Exists(Path.Combine(dir.FullName, "Forensics.sln")))
                return dir.FullName;
        throw new InvalidOperationException("repository root not found above " + AppContext.BaseDirectory);
    }

    [Fact]
    public void Load_PodsWithoutIp_AssignedFromPodCidrSkippingTakenAddresses()
    {
        var c = Load(LabDoc, PodA, PodB, PodA.Replace("name: a\n", "name: c\n", StringComparison.Ordinal));
        Assert.Equal(["10.0.0.1", "10.0.0.7", "10.0.0.2"], c.Pods.Select(p => p.Ip!.ToString()));
        Assert.Equal([new PortProtocol(8080, "TCP")], c.Pods[0].ContainerPorts);
        Assert.Equal("lab1", c.Lab!.Name);
        Assert.Equal("198.51.100.10", c.Lab.Outside.Single().Ip.ToString());
    }

    [Fact]
    public void Load_ServiceWithNamedTargetPort_KeptForEachBackendAndClusterIpAssigned()
    {
        var c = Load(LabDoc, PodA, """
            apiVersion: v1
            kind: Service
            metadata: {name: svc}
            spec:
              selector: {app: a}
              ports:
                - port: 80
                  targetPort: http
            """);
        var s = Assert.Single(c.Services);
        Assert.Equal(new ServicePort(80, 0, "TCP", null, "http"), s.Ports.Single());
        Assert.Equal(new PortProtocol(8080, "TCP"), c.Pods.Single(p => p.Name == "a").NamedPorts["http"]);
        Assert.Equal("10.0.1.1", s.ClusterIp!.ToString());
    }

    [Fact]
    public void Load_Policy_SelectorsScopedToPolicyNamespaceAndRulesKept()
    {
        var c = Load(LabDoc, PodA, PodB, """
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: p}
            spec:
              endpointSelector: {matchLabels: {app: b}}
              ingress:
                - fromEndpoints: [{matchLabels: {"k8s:app": a}}]
                  toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
              egressDeny:
                - toCIDRSet: [{cidr: 203.0.113.0/24, except: [203.0.113.8/29]}]
                - toEntities: [world]
            """);
        var p = Assert.Single(c.Policies);
        Assert.Equal("default", p.Selector.MatchLabels[ClusterLoader.NamespaceLabel]);
        Assert.Equal("b", p.Selector.MatchLabels["app"]);
        var rule = Assert.Single(p.Ingress);
        Assert.Equal("a", rule.Endpoints.Single().MatchLabels["k8s:app"]);
        Assert.Equal(new PortProtocol(8080, "TCP"), rule.Ports.Single());
        Assert.Equal(2, p.EgressDeny.Count);
        var deny = p.EgressDeny[0];
        Assert.Equal(new CidrRule("203.0.113.0/24", ["203.0.113.8/29"]).Cidr, deny.Cidrs.Single().Cidr);
        Assert.Equal(["203.0.113.8/29"], deny.Cidrs.Single().Except);
        Assert.Equal(["world"], p.EgressDeny[1].Entities);
        Assert.Contains("endpointSelector", p.SourceText, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_Steps_TargetsAndTranslationsResolvedToAddresses()
    {
        var c = Load(LabDoc.Replace("      tcp: [443]", """
                  tcp: [443]
              steps:
                - name: s1
                  pod: a
                  http: svc:80/x
                  timeout: 500ms
                  expect:
                    delivered: true
                    translation: dnat svc:80 -> b:8080
                - name: s2
                  pod: default/a
                  tcp: web:443
                  expect: {dropReason: 181}
                - name: s3
                  pod: b
                  exec: echo hi
                  expect: {translation: SNAT b -> node}
            """, StringComparison.Ordinal), PodA, PodB, """
            apiVersion: v1
            kind: Service
            metadata: {name: svc}
            spec:
              clusterIP: 10.0.1.100
              selector: {app: b}
              ports: [{port: 80, targetPort: 8080}]
            """);
        var steps = c.Lab!.Steps;
        Assert.Equal("10.0.1.100:80/x", steps[0].Target);
        Assert.Equal("svc:80/x", steps[0].TargetText);
        Assert.Equal(TimeSpan.FromMilliseconds(500), steps[0].Timeout);
        Assert.Equal(new StepExpectation(true, null, "DNAT 10.0.1.100:80 -> 10.0.0.7:8080"), steps[0].Expect);
        Assert.Equal("default/a", steps[1].Pod);
        Assert.Equal("198.51.100.10:443", steps[1].Target);
        Assert.Equal(new StepExpectation(false, 181, null), steps[1].Expect);
        Assert.Equal(["/bin/sh", "-c", "echo hi"], steps[2].Command);
        Assert.Equal("SNAT 10.0.0.7 -> 192.0.2.1", steps[2].Expect!.Translation);
    }

    [Fact]
    public void Load_ExampleFiles_AllLoadWithStepsAndResolvedTargets()
    {
        var files = Directory.GetFiles(Path.Combine(RepoRoot(), "examples"), "*.yaml")
            .Concat(Directory.GetFiles(Path.Combine(RepoRoot(), "examples"), "lab.yaml", SearchOption.AllDirectories)).ToList();
        Assert.NotEmpty(files);
        foreach (var f in files)
        {
            var c = ClusterLoader.LoadFile(f);
            Assert.NotNull(c.Lab);
            Assert.NotEmpty(c.Lab.Steps);
            Assert.All(c.Pods, p => Assert.True(c.Lab.PodCidr.Contains(p.Ip!)));
            Assert.All(c.Lab.Steps.Where(s => s.Action != "exec"), s => Assert.Matches(@"^\d+\.\d+\.\d+\.\d+:\d+", s.Target!));
        }
    }

    [Fact]
    public void Load_StarwarsExample_SeedScenarioExpectations()
    {
        var c = ClusterLoader.LoadFile(Path.Combine(RepoRoot(), "examples", "starwars.yaml"));
        var steps = c.Lab!.Steps.ToDictionary(s => s.Name);
        var backend = c.Pods.Single(p => p.Name == "backend-2").Ip;
        Assert.Equal(133, steps["frontend-to-backend-port-not-allowed"].Expect!.DropReason);
        Assert.Equal(181, steps["xwing-to-denylisted-host"].Expect!.DropReason);
        Assert.Equal($"DNAT 10.0.1.100:8080 -> {backend}:8080", steps["frontend-to-backend-service"].Expect!.Translation);
        Assert.StartsWith("SNAT ", steps["xwing-to-outside-world"].Expect!.Translation, StringComparison.Ordinal);
        Assert.EndsWith(" -> 192.0.2.1", steps["xwing-to-outside-world"].Expect!.Translation, StringComparison.Ordinal);
    }

    // ---- errors: one line, naming file, document and field ----

    [Fact]
    public void Load_MalformedYaml_NamesLineAndDocument()
    {
        var m = Error(LabDoc, "apiVersion: v1\nkind: Pod\nmetadata: {name: x\n");
        Has(m, "document 2");
        Has(m, "malformed YAML");
    }

    [Fact]
    public void Load_DuplicateYamlKey_Rejected()
    {
        var m = Error("apiVersion: v1\nkind: Pod\nkind: Pod\nmetadata: {name: x}\n");
        Has(m, "document 1");
    }

    [Fact]
    public void Load_UnknownField_NamesFieldPath()
    {
        var m = Error(LabDoc, PodA, """
            apiVersion: v1
            kind: Service
            metadata: {name: svc}
            spec:
              selector: {app: a}
              ports:
                - port: 80
                  prot: TCP
            """);
        Has(m, ":33: document 3 (Service default/svc): spec.ports[0].prot: unknown field");
    }

    [Fact]
    public void Load_UnknownPolicyRuleField_NamesRule()
    {
        var m = Error(LabDoc, PodA, """
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: p}
            spec:
              endpointSelector: {matchLabels: {app: a}}
              egress:
                - toFQDN: [{matchName: example.com}]
            """);
        Has(m, "document 3 (CiliumNetworkPolicy default/p): spec.egress[0].toFQDN: unknown field");
    }

    [Fact]
    public void Load_ServiceSelectorMatchesNoPod_LoadsWithoutBackends()
    {
        // a deployment scaled to zero: valid Kubernetes, and exactly the 158 (no backend) case at runtime
        var c = Load(LabDoc, PodA, """
            apiVersion: v1
            kind: Service
            metadata: {name: svc}
            spec:
              selector: {app: nothing}
              ports: [{port: 80, targetPort: http}]
            """);
        var s = Assert.Single(c.Services);
        Assert.Equal("nothing", s.Selector["app"]);
        Assert.Equal(new ServicePort(80, 0, "TCP", null, "http"), s.Ports.Single());
    }

    [Fact]
    public void Load_PolicySelectorInOtherNamespace_SelectsNothingAndSaysSo()
    {
        // valid for Cilium (it enforces nothing for it); in a lab most often a typo: a note, not an error
        var c = Load(LabDoc, PodA, """
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: p, namespace: other}
            spec:
              endpointSelector: {matchLabels: {app: a}}
            """);
        Has(Assert.Single(c.Notices), "document 3 (CiliumNetworkPolicy other/p): spec.endpointSelector: endpointSelector selects no Pod");
    }

    [Fact]
    public void Load_PeerSelectorMatchesNothing_NamesPeer()
    {
        var c = Load(LabDoc, PodA, """
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: p}
            spec:
              endpointSelector: {matchLabels: {app: a}}
              ingress:
                - fromEndpoints: [{matchLabels: {app: ghost}}]
            """);
        Has(Assert.Single(c.Notices), "spec.ingress[0].fromEndpoints[0]: selector selects no Pod (app=ghost, k8s:io.kubernetes.pod.namespace=default)");
    }

    [Theory]
    [InlineData("ports: [{port: 70000}]", "spec.ports[0].port: 70000 is out of range for a port (1-65535)")]
    [InlineData("ports: [{port: 0}]", "spec.ports[0].port: 0 is out of range for a port")]
    [InlineData("ports: [{port: 80, targetPort: 65536}]", "spec.ports[0].targetPort: 65536 is out of range")]
    [InlineData("ports: [{port: eighty}]", "spec.ports[0].port: 'eighty' is not a port")]
    public void Load_ServicePortOutOfRange_NamesPort(string ports, string expected)
    {
        var m = Error(LabDoc, PodA, $$"""
            apiVersion: v1
            kind: Service
            metadata: {name: svc}
            spec:
              selector: {app: a}
              {{ports}}
            """);
        Has(m, "(Service default/svc): " + expected);
    }

    [Fact]
    public void Load_PolicyPortOutOfRange_NamesPort()
    {
        var m = Error(LabDoc, PodA, """
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: p}
            spec:
              endpointSelector: {matchLabels: {app: a}}
              ingress:
                - toPorts: [{ports: [{port: "99999"}]}]
            """);
        Has(m, "spec.ingress[0].toPorts[0].ports[0].port: 99999 is out of range");
    }

    [Fact]
    public void Load_StepTargetPortOutOfRange_NamesStep()
    {
        var m = Error(LabDoc + "\n  steps:\n    - {name: s, pod: a, tcp: web:0}", PodA);
        Has(m, "document 1 (Lab lab1): spec.steps[0].tcp: '0' is out of range for a port");
    }

    [Fact]
    public void Load_DuplicatePodName_NamesSecondDocument()
    {
        var m = Error(LabDoc, PodA, PodA.Replace("app: a", "app: b", StringComparison.Ordinal));
        Has(m, "document 3 (Pod default/a): metadata.name: duplicate Pod default/a (first in document 2)");
        // the same document twice, word for word, is what kubectl apply applies twice: read once, and said
        Has(Assert.Single(Load(LabDoc, PodA, PodA).Notices), "document 3 (Pod default/a): the same as document 2: read once");
    }

    [Fact]
    public void Load_DuplicateStepName_Rejected()
    {
        var m = Error(LabDoc + "\n  steps:\n    - {name: s, pod: a, tcp: web:443}\n    - {name: s, pod: a, udp: web:53}", PodA);
        Has(m, "spec.steps[1].name: duplicate step name 's'");
    }

    [Fact]
    public void Load_DuplicatePodAddress_Rejected()
    {
        var m = Error(LabDoc, PodB, PodB.Replace("name: b\n", "name: b2\n", StringComparison.Ordinal));
        Has(m, "(Pod default/b2): status.podIP: 10.0.0.7 is already the address of Pod default/b");
    }

    [Fact]
    public void Load_PodIpOutsidePodCidr_Rejected()
    {
        var m = Error(LabDoc, PodB.Replace("10.0.0.7", "10.9.0.7", StringComparison.Ordinal));
        Has(m, "status.podIP: 10.9.0.7 is outside the lab's pod CIDR 10.0.0.0/24");
    }

    [Fact]
    public void Load_MissingName_NamesField()
    {
        var m = Error("apiVersion: v1\nkind: Pod\nmetadata:\n  labels: {a: b}\n");
        Has(m, "document 1 (Pod): metadata: name: required field is missing");
    }

    [Fact]
    public void Load_UnknownKindAndWrongApiVersion_Rejected()
    {
        Has(Error("apiVersion: forensics.dev/v1\nkind: Labb\nmetadata: {name: d}\n"), "kind: kind 'Labb' is not a kind of forensics.dev/v1");
        Has(Error("apiVersion: v1\nkind: Deployment\nmetadata: {name: d}\n"), "apiVersion: 'v1' is not the apiVersion of Deployment (apps/v1)");
        Assert.Contains("apiVersion: 'cilium.io/v1' is not the apiVersion of CiliumNetworkPolicy (cilium.io/v2)",
            Error("apiVersion: cilium.io/v1\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\nspec: {}\n"), StringComparison.Ordinal);
    }

    [Fact]
    public void Load_UnsupportedEntityAndBadCidr_Rejected()
    {
        const string policy = """
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: p}
            spec:
              endpointSelector: {matchLabels: {app: a}}
              egress:
                - RULE
            """;
        Assert.Contains("spec.egress[0].toEntities[0]: unsupported entity: galaxy",
            Error(LabDoc, PodA, policy.Replace("RULE", "toEntities: [galaxy]", StringComparison.Ordinal)), StringComparison.Ordinal);
        Assert.Contains("spec.egress[0].toCIDR[0]: unable to parse CIDR: '10.0.1/8'",
            Error(LabDoc, PodA, policy.Replace("RULE", "toCIDR: [10.0.1/8]", StringComparison.Ordinal)), StringComparison.Ordinal);
        // host bits set are cleared, as Cilium reads a prefix
        Assert.Equal("10.0.0.0/8", Load(LabDoc, PodA, policy.Replace("RULE", "toCIDR: [10.0.0.1/8]", StringComparison.Ordinal)).Policies[0].Egress[0].Cidrs[0].Cidr);
    }

    [Fact]
    public void Load_StepProblems_EachNamed()
    {
        string Steps(string s) => LabDoc + "\n  steps:\n    - " + s;
        Has(Error(Steps("{name: s, pod: ghost, tcp: web:443}"), PodA), "spec.steps[0].pod: no Pod named 'ghost'");
        Assert.Contains("spec.steps[0]: a step does exactly one of tcp, udp, http, exec (found tcp, udp)",
            Error(Steps("{name: s, pod: a, tcp: web:443, udp: web:53}"), PodA), StringComparison.Ordinal);
        Assert.Contains("spec.steps[0].tcp: 'nowhere' is neither an IPv4 address nor a Pod, Service or world host",
            Error(Steps("{name: s, pod: a, tcp: nowhere:443}"), PodA), StringComparison.Ordinal);
        Assert.Contains("spec.steps[0].expect.dropReason: 'Dropped by gremlins' is not a Cilium drop reason",
            Error(Steps("{name: s, pod: a, tcp: web:443, expect: {dropReason: Dropped by gremlins}}"), PodA), StringComparison.Ordinal);
        Has(Error(Steps("{name: s, pod: a, tcp: web:443, expect: {translation: XNAT a -> b}}"), PodA),
            "spec.steps[0].expect.translation: 'XNAT' is not DNAT or SNAT");
        Assert.Contains("spec.steps[0].timeout: 'soon' is not a duration",
            Error(Steps("{name: s, pod: a, tcp: web:443, timeout: soon}"), PodA), StringComparison.Ordinal);
    }

    [Fact]
    public void Load_WorldHostOffTestNet_Rejected()
    {
        var m = Error(LabDoc.Replace("198.51.100.10", "8.8.8.8", StringComparison.Ordinal));
        Has(m, "spec.world[0].ip: 8.8.8.8 is not on a TEST-NET range");
    }

    [Fact]
    public void Load_DropReasonByNameOrNumber_SameCode()
    {
        Assert.True(Forensics.Format.DropReasons.TryParse("Policy denied by denylist", out int a));
        Assert.True(Forensics.Format.DropReasons.TryParse("POLICY_DENY", out int b));
        Assert.True(Forensics.Format.DropReasons.TryParse("181", out int c));
        Assert.Equal([181, 181, 181], new[] { a, b, c });
        Assert.Equal("Service backend not found", Forensics.Format.DropReasons.NameOf(158));
    }

    [Fact]
    public void Load_KubectlList_ItemsLoadedAndErrorsNameTheItem()
    {
        const string list = """
            apiVersion: v1
            kind: List
            items:
              - apiVersion: v1
                kind: Pod
                metadata: {name: x, labels: {app: x}}
                status: {podIP: 10.0.0.9}
              - apiVersion: v1
                kind: Service
                metadata: {name: s}
                spec:
                  clusterIP: 10.0.1.9
                  selector: {app: x}
                  ports: [{port: 80, protocoll: TCP}]
            """;
        Has(Error(LabDoc, list), "document 2 items[1] (Service default/s): spec.ports[0].protocoll: unknown field");
        var c = Load(LabDoc, list.Replace("protocoll", "protocol", StringComparison.Ordinal));
        Assert.Equal("10.0.0.9", c.Pods.Single().Ip!.ToString());
        Assert.Equal("10.0.1.9", c.Services.Single().ClusterIp!.ToString());
    }

    [Fact]
    public void Load_PolicyWithSpecsList_OnePolicyPerRule()
    {
        var c = Load(LabDoc, PodA, PodB, """
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: p}
            specs:
              - endpointSelector: {matchLabels: {app: a}}
                ingress: [{fromEntities: [world]}]
              - endpointSelector: {matchLabels: {app: b}}
                egress: [{toEntities: [cluster]}]
            """);
        Assert.Equal(["p#0", "p#1"], c.Policies.Select(p => p.Name));
        Assert.Equal(["default/p specs[1].egress[0]"], [c.Policies[1].RuleRef("egress", 0).ToString()]);
        Assert.Equal(["world"], c.Policies[0].Ingress.Single().Entities);
        Assert.Equal(["cluster"], c.Policies[1].Egress.Single().Entities);
    }

    [Fact]
    public void Load_TopLevelUnknownFieldAndSecondLab_Rejected()
    {
        Has(Error(LabDoc, PodA.Replace("kind: Pod", "kind: Pod\nspecc: {}", StringComparison.Ordinal)), "document 2 (Pod default/a): specc: unknown field");
        Has(Error(LabDoc, LabDoc.Replace("lab1", "lab2", StringComparison.Ordinal)), "document 2 (Lab lab2): a second Lab document (the first is document 1)");
    }
}
