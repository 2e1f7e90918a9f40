using System.Globalization;
using System.Text;
using YamlDotNet.RepresentationModel;
using static Forensics.Datapath.Control.ObjectFields;

namespace Forensics.Datapath.Control;

/// <summary>
/// Workload documents (Deployment, ReplicaSet, StatefulSet, DaemonSet: apps/v1;
/// Job: batch/v1), expanded into the pods their controllers would make, named
/// and labelled as Kubernetes names and labels them: a Deployment's pods are
/// NAME-HASH-XXXXX with pod-template-hash=HASH, a ReplicaSet's and a
/// DaemonSet's NAME-XXXXX, a StatefulSet's NAME-0..NAME-(n-1) with
/// statefulset.kubernetes.io/pod-name and apps.kubernetes.io/pod-index, a Job's
/// NAME-XXXXX with job-name and controller-uid. Kubernetes hashes the template
/// with Go's object printer and draws the suffix at random; here both come from
/// an FNV-1a hash of the template and the pod's place, in Kubernetes' alphabet, so
/// the same file makes the same names every time. One node: a DaemonSet makes
/// one pod.
/// </summary>
internal static class WorkloadDocument
{
    public static readonly IReadOnlyDictionary<string, string> ApiVersions = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["Deployment"] = "apps/v1",
        ["ReplicaSet"] = "apps/v1",
        ["StatefulSet"] = "apps/v1",
        ["DaemonSet"] = "apps/v1",
        ["Job"] = "batch/v1",
    };

    /// <summary>At most this many pods per workload (each is a network namespace in a lab; the pod CIDR bounds them too).</summary>
    public const int MaxReplicas = 1024;

    private static readonly Dictionary<string, string[]> SpecFields = new(StringComparer.Ordinal)
    {
        ["Deployment"] = ["replicas", "selector", "template", "strategy", "minReadySeconds", "revisionHistoryLimit", "paused", "progressDeadlineSeconds"],
        ["ReplicaSet"] = ["replicas", "selector", "template", "minReadySeconds"],
        ["StatefulSet"] =
        [
            "replicas", "selector", "template", "serviceName", "volumeClaimTemplates", "podManagementPolicy", "updateStrategy",
            "revisionHistoryLimit", "minReadySeconds", "persistentVolumeClaimRetentionPolicy", "ordinals",
        ],
        ["DaemonSet"] = ["selector", "template", "updateStrategy", "minReadySeconds", "revisionHistoryLimit"],
        ["Job"] =
        [
            "parallelism", "completions", "activeDeadlineSeconds", "podFailurePolicy", "backoffLimit", "backoffLimitPerIndex",
            "maxFailedIndexes", "selector", "manualSelector", "template", "ttlSecondsAfterFinished", "completionMode", "suspend",
            "podReplacementPolicy", "successPolicy", "managedBy",
        ],
    };

    // k8s.io/apimachinery/pkg/util/rand: the alphabet of generated names ("no vowels, no 0, 1, 3")
    private const string Alphanums = "bcdfghjklmnpqrstvwxz2456789";

    public static List<RawPod> Read(Node root, string kind)
    {
        var (name, ns, _) = Meta(root);
        var spec = root.Require("spec").Strict(SpecFields[kind]);
        var template = spec.Require("template").Strict("metadata", "spec");
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        if (template.Get("metadata") is { } tm)
        {
            tm.Strict("name", "namespace", "labels", "annotations", "generateName", "finalizers", "ownerReferences", "creationTimestamp");
            if (tm.Get("labels") is { } l)
                foreach (var (k, v) in l.StringMap())
                    labels[k] = v;
        }
        var (ports, named, serviceAccount, containers) = PodDocument.ReadSpec(template.Require("spec"), name);
        var saNode = template.Require("spec").Get("serviceAccountName") ?? template.Require("spec").Get("serviceAccount");
        var hash = SafeEncode(Fnv(TemplateText(template)));
        var owner = $"{kind} {ns}/{name}";

        // the selector must select the template's labels (Kubernetes refuses the workload otherwise)
        bool manualJobSelector = kind == "Job" && spec.Get("manualSelector") is { } ms && ms.YamlBool();
        if (kind != "Job" || manualJobSelector)
        {
            var selNode = spec.Require("selector");
            var selector = LabelSelectors.Read(selNode);
            if (selector.MatchLabels.Count + selector.MatchExpressions.Count == 0)
                throw selNode.Error("an empty selector selects every pod; Kubernetes refuses it for a workload");
            if (!selector.Matches(labels))
                throw selNode.Error("selector does not match template labels");
        }
        else if (spec.Get("selector") is { } js)
        {
            throw js.Error("a Job's selector is generated unless manualSelector is true");
        }

        int Count(string field, int dflt) => spec.Get(field) is { } n ? n.Int(0, MaxReplicas, "a number of pods the lab makes") : dflt;
        var pods = new List<(string Name, Dictionary<string, string> Labels)>();
        switch (kind)
        {
            case "Deployment":
            {
                // the Deployment's ReplicaSet NAME-HASH makes the pods, labelled pod-template-hash=HASH
                var rs = $"{name}-{hash}";
                for (int i = 0; i < Count("replicas", 1); i++)
                    pods.Add(($"{rs}-{Suffix(rs, i)}", With(labels, ("pod-template-hash", hash))));
                break;
            }
            case "ReplicaSet":
                for (int i = 0; i < Count("replicas", 1); i++)
                    pods.Add(($"{name}-{Suffix(name, i)}", With(labels)));
                break;
            case "StatefulSet":
            {
                var revision = $"{name}-{hash}";
                for (int i = 0; i < Count("replicas", 1); i++)
                    pods.Add(($"{name}-{i}", With(labels, ("controller-revision-hash", revision),
                        ("statefulset.kubernetes.io/pod-name", $"{name}-{i}"), ("apps.kubernetes.io/pod-index", i.ToString(CultureInfo.InvariantCulture)))));
                break;
            }
            case "DaemonSet":
                // one node, one pod
                pods.Add(($"{name}-{Suffix(name, 0)}", With(labels, ("controller-revision-hash", hash), ("pod-template-generation", "1"))));
                break;
            default:
            {
                int completions = spec.Get("completions") is { } c ? c.Int(0, int.MaxValue, "a number of completions") : 1;
                int parallelism = Math.Min(Count("parallelism", 1), completions);
                var uid = Uid(owner);
                for (int i = 0; i < parallelism; i++)
                    pods.Add(($"{name}-{Suffix(name, i)}", With(labels, ("batch.kubernetes.io/controller-uid", uid), ("batch.kubernetes.io/job-name", name),
                        ("controller-uid", uid), ("job-name", name))));
                break;
            }
        }
        var result = new List<RawPod>();
        foreach (var (podName, podLabels) in pods)
        {
            if (podName.Length > 253)
                throw root.Require("metadata").Require("name").Error($"the pod name '{podName}' would be longer than 253 characters");
            var pod = new PodSpec(podName, ns, podLabels, null, ports)
            {
                NamedPorts = named, ServiceAccount = serviceAccount, Owner = owner, Containers = containers,
            };
            result.Add(new RawPod(root.Doc, root, pod, null, named, saNode));
        }
        return result;

        static Dictionary<string, string> With(Dictionary<string, string> labels, params (string K, string V)[] extra)
        {
            var d = new Dictionary<string, string>(labels, StringComparer.Ordinal);
            foreach (var (k, v) in extra)
                d[k] = v;
            return d;
        }
    }

    /// <summary>The template as YAML text: what its hash is taken of.</summary>
    private static string TemplateText(Node template)
    {
        var w = new StringWriter(CultureInfo.InvariantCulture);
        new YamlStream(new YamlDocument(template.Yaml)).Save(w, assignAnchors: false);
        return w.ToString();
    }

    private static uint Fnv(string text)
    {
        uint h = 2166136261;
        foreach (var b in Encoding.UTF8.GetBytes(text))
            h = (h ^ b) * 16777619;
        return h;
    }

    /// <summary>k8s rand.SafeEncodeString(fmt.Sprint(hash)): each decimal digit mapped into the alphabet.</summary>
    private static string SafeEncode(uint hash) =>
        string.Concat(hash.ToString(CultureInfo.InvariantCulture).Select(c => Alphanums[c % Alphanums.Length]));

    /// <summary>The five characters Kubernetes' generateName appends, drawn from a hash instead of at random.</summary>
    private static string Suffix(string owner, int index)
    {
        uint h = Fnv($"{owner}#{index}");
        var sb = new StringBuilder(5);
        for (int i = 0; i < 5; i++)
        {
            sb.Append(Alphanums[(int)(h % (uint)Alphanums.Length)]);
            h = h / (uint)Alphanums.Length ^ Fnv($"{owner}#{index}#{i}");
        }
        return sb.ToString();
    }

    /// <summary>A UUID-shaped id derived from the workload (Kubernetes would draw a random one).</summary>
    private static string Uid(string owner)
    {
        var b = System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(owner));
        return new Guid(b.AsSpan(0, 16)).ToString();
    }
}
