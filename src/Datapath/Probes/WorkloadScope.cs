namespace Forensics.Datapath.Probes;

/// <summary>
/// A Kubernetes label selector as Tetragon matches pods with it (pkg/labels): every matchLabels entry and
/// every matchExpressions requirement (In, NotIn, Exists, DoesNotExist) must hold; an empty selector ({})
/// selects every pod. A pod's labels include "k8s:io.kubernetes.pod.namespace" (its namespace), as Tetragon adds it.
/// </summary>
public sealed record LabelSelector(IReadOnlyList<LabelRequirement> Requirements)
{
    public const string PodNamespaceLabel = "k8s:io.kubernetes.pod.namespace";

    public bool Matches(IReadOnlyDictionary<string, string> labels)
    {
        ArgumentNullException.ThrowIfNull(labels);
        return Requirements.All(r => r.Matches(labels));
    }

    public override string ToString() => Requirements.Count == 0 ? "{}" : string.Join(", ", Requirements);
}

/// <summary>One requirement of a label selector: Operator is In, NotIn, Exists or DoesNotExist.</summary>
public sealed record LabelRequirement(string Key, string Operator, IReadOnlyList<string> Values)
{
    public bool Matches(IReadOnlyDictionary<string, string> labels)
    {
        ArgumentNullException.ThrowIfNull(labels);
        bool exists = labels.TryGetValue(Key, out var value);
        return Operator switch
        {
            "Exists" => exists,
            "DoesNotExist" => !exists,
            "In" => exists && Values.Contains(value!, StringComparer.Ordinal),
            "NotIn" => !exists || !Values.Contains(value!, StringComparer.Ordinal),
            _ => false,
        };
    }

    public override string ToString() => Operator switch
    {
        "Exists" or "DoesNotExist" => $"{Key} {Operator}",
        _ => $"{Key} {Operator} ({string.Join(",", Values)})",
    };
}

/// <summary>
/// The workloads a TracingPolicy applies to, as Tetragon decides it (k8s-filtering.md, "Filtering semantics"):
/// a TracingPolicyNamespaced applies to the pods of its namespace only; podSelector selects pods by their labels;
/// hostSelector {} selects the host's processes (outside any pod); with neither, a policy applies to every
/// workload. A pod is known by its namespace and labels (null when the process is in no pod).
/// </summary>
public sealed record WorkloadScope(string? Namespace, LabelSelector? Pods, bool Host)
{
    /// <summary>Whether a process of this pod (<paramref name="podNamespace"/> null: a host process) is in scope.</summary>
    public bool Selects(string? podNamespace, IReadOnlyDictionary<string, string>? podLabels)
    {
        if (podNamespace is null)
            return Namespace is null && (Host || Pods is null);
        if (Namespace is not null && podNamespace != Namespace)
            return false;
        if (Pods is null)
            return Namespace is not null || !Host;
        var labels = new Dictionary<string, string>(podLabels ?? new Dictionary<string, string>(), StringComparer.Ordinal)
        {
            [LabelSelector.PodNamespaceLabel] = podNamespace,
        };
        return Pods.Matches(labels);
    }

    public override string ToString()
    {
        var parts = new List<string>();
        if (Namespace is not null)
            parts.Add($"namespace {Namespace}");
        if (Pods is not null)
            parts.Add($"pods {Pods}");
        if (Host)
            parts.Add("host processes");
        return string.Join("; ", parts);
    }
}
