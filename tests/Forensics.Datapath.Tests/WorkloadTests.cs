using Forensics.Datapath.Control;
using Forensics.Tests;

namespace Forensics.Datapath.Tests;

/// <summary>Workloads, namespaces and service accounts as Kubernetes makes pods of them, and the labels Cilium derives.</summary>
public class WorkloadTests
{
    private static ClusterSpec Load(params string[] docs) => ClusterLoader.Load(string.Join("\n---\n", docs.Prepend(CiliumFiles.Lab)), "w.yaml");

    private static string Error(params string[] docs)
    {
        var e = Assert.Throws<ClusterSpecException>(() => Load(docs));
        Assert.DoesNotContain('\n', e.Message);
        return e.Message;
    }

    private const string Deployment = """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: deathstar, labels: {app.kubernetes.io/name: deathstar}}
        spec:
          replicas: 2
          selector:
            matchLabels: {org: empire, class: deathstar}
          template:
            metadata:
              labels: {org: empire, class: deathstar, app.kubernetes.io/name: deathstar}
            spec:
              containers:
              - name: deathstar
                image: quay.io/cilium/starwars:v2.1
        """;

    [Fact]
    public void Load_Deployment_ReplicasNamedAndLabelledAsKubernetesDoes()
    {
        var c = Load(Deployment);

        Assert.Equal(2, c.Pods.Count);
        var hash = c.Pods[0].Labels["pod-template-hash"];
        Assert.Matches("^[bcdfghjklmnpqrstvwxz2456789]{1,10}$", hash);
        Assert.All(c.Pods, p =>
        {
            Assert.Matches($"^deathstar-{hash}-[bcdfghjklmnpqrstvwxz2456789]{{5}}$", p.Name);
            Assert.Equal("empire", p.Labels["org"]);
            Assert.Equal(hash, p.Labels["pod-template-hash"]);
            Assert.Equal("Deployment default/deathstar", p.Owner);
        });
        Assert.NotEqual(c.Pods[0].Name, c.Pods[1].Name);
        // the same file makes the same names; another template another hash
        Assert.Equal(c.Pods.Select(p => p.Name), Load(Deployment).Pods.Select(p => p.Name));
        Assert.NotEqual(hash, Load(Deployment.Replace("v2.1", "v2.2", StringComparison.Ordinal)).Pods[0].Labels["pod-template-hash"]);
    }

    [Fact]
    public void IdentityLabels_DeploymentPods_OneIdentityWithoutPodTemplateHash()
    {
        var c = Load(Deployment);
        var ids = new IdentityAllocator();
        ids.Preallocate(c);

        Assert.Equal(ids.ForPod(c.Pods[0]), ids.ForPod(c.Pods[1]));
        var labels = IdentityAllocator.PodLabels(c.Pods[0]);
        Assert.DoesNotContain(labels, l => l.Contains("pod-template-hash", StringComparison.Ordinal));
        Assert.Contains("k8s:app.kubernetes.io/name=deathstar", labels);
        Assert.Contains("k8s:io.cilium.k8s.policy.serviceaccount=default", labels);
        Assert.Contains("k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default", labels);
        Assert.Contains("k8s:io.cilium.k8s.policy.cluster=default", labels);
    }

    [Fact]
    public void Load_StatefulSetDaemonSetJobReplicaSet_PodsAsTheirControllersName()
    {
        static string Workload(string api, string kind, string name, string extra) => $$"""
            apiVersion: {{api}}
            kind: {{kind}}
            metadata:
              name: {{name}}
            spec:
              {{extra}}
              template:
                metadata:
                  labels:
                    app: {{name}}
                spec:
                  containers: [{name: c, image: busybox}]
            """;
        var c = Load(
            Workload("apps/v1", "StatefulSet", "web", "replicas: 3\n  serviceName: web\n  selector: {matchLabels: {app: web}}"),
            Workload("apps/v1", "DaemonSet", "agent", "selector: {matchLabels: {app: agent}}"),
            Workload("batch/v1", "Job", "pi", "parallelism: 2\n  completions: 5"),
            Workload("apps/v1", "ReplicaSet", "rs", "replicas: 1\n  selector: {matchExpressions: [{key: app, operator: In, values: [rs]}]}"));

        Assert.Equal(["web-0", "web-1", "web-2"], c.Pods.Where(p => p.Labels["app"] == "web").Select(p => p.Name));
        Assert.Equal("web-1", c.Pods.Single(p => p.Name == "web-1").Labels["statefulset.kubernetes.io/pod-name"]);
        Assert.Equal("2", c.Pods.Single(p => p.Name == "web-2").Labels["apps.kubernetes.io/pod-index"]);
        var agent = Assert.Single(c.Pods, p => p.Labels["app"] == "agent");
        Assert.Matches("^agent-[bcdfghjklmnpqrstvwxz2456789]{5}$", agent.Name);
        var jobs = c.Pods.Where(p => p.Labels["app"] == "pi").ToList();
        Assert.Equal(2, jobs.Count);
        Assert.All(jobs, p => Assert.Equal("pi", p.Labels["job-name"]));
        Assert.Equal(jobs[0].Labels["controller-uid"], jobs[1].Labels["batch.kubernetes.io/controller-uid"]);
        Assert.Matches("^rs-[bcdfghjklmnpqrstvwxz2456789]{5}$", Assert.Single(c.Pods, p => p.Labels["app"] == "rs").Name);
    }

    [Fact]
    public void Load_WorkloadSelectorNotMatchingTemplate_RefusedAsKubernetesRefusesIt()
    {
        var m = Error(Deployment.Replace("matchLabels: {org: empire, class: deathstar}", "matchLabels: {org: rebels}", StringComparison.Ordinal));

        Assert.Contains("document 2 (Deployment default/deathstar): spec.selector: selector does not match template labels", m, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_NamespaceAndServiceAccount_CarriedIntoIdentityLabels()
    {
        var c = Load("""
            apiVersion: v1
            kind: Namespace
            metadata: {name: shop, labels: {team: payments}}
            """, """
            apiVersion: v1
            kind: ServiceAccount
            metadata: {name: api, namespace: shop}
            """, """
            apiVersion: v1
            kind: Pod
            metadata: {name: p, namespace: shop, labels: {app: api}}
            spec: {serviceAccountName: api, containers: [{name: c, image: busybox}]}
            """);

        var labels = IdentityAllocator.PodLabels(Assert.Single(c.Pods));
        Assert.Contains("k8s:io.cilium.k8s.policy.serviceaccount=api", labels);
        Assert.Contains("k8s:io.cilium.k8s.namespace.labels.team=payments", labels);
        Assert.Contains("k8s:io.kubernetes.pod.namespace=shop", labels);
    }

    [Fact]
    public void Load_ServiceAccountNotDeclared_RefusedAsAdmissionWould()
    {
        var m = Error("""
            apiVersion: v1
            kind: Pod
            metadata: {name: p}
            spec: {serviceAccountName: ghost, containers: [{name: c, image: busybox}]}
            """);

        Assert.Contains("spec.serviceAccountName: no ServiceAccount 'ghost' in namespace default", m, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_KindsTheLabDoesNotModel_SkippedWithOneLineEach()
    {
        var c = Load("""
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: cfg}
            data: {a: b}
            """, """
            apiVersion: networking.k8s.io/v1
            kind: Ingress
            metadata: {name: web, namespace: shop}
            spec: {}
            """, CiliumFiles.Pod("a", ("app", "a")));

        Assert.Single(c.Pods);
        Assert.Equal(
            ["w.yaml: document 2 (ConfigMap default/cfg): skipped: the lab does not model ConfigMap (v1)",
             "w.yaml: document 3 (Ingress shop/web): skipped: the lab does not model Ingress (networking.k8s.io/v1)"],
            c.Notices);
    }

    [Theory]
    [InlineData("app", true)]
    [InlineData("app.kubernetes.io/name", true)]
    [InlineData("pod-template-hash", false)]
    [InlineData("controller-revision-hash", false)]
    [InlineData("statefulset.kubernetes.io/pod-name", false)]
    [InlineData("kubernetes.io/hostname", false)]
    [InlineData("io.kubernetes.pod.namespace", true)]
    [InlineData("io.kubernetes.container.name", false)]
    [InlineData("beta.kubernetes.io/arch", false)]
    [InlineData("k8s.io/foo", false)]
    [InlineData("job-name", true)]
    [InlineData("batch.kubernetes.io/job-name", true)] // no default pattern matches it at the start
    [InlineData("annotation.x", false)]
    public void IdentityLabelFilter_CiliumDefaults_KeepOrIgnore(string key, bool kept) =>
        Assert.Equal(kept, IdentityLabelFilter.Keep(key));
}
