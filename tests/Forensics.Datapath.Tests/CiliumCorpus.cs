using System.Text;
using System.Text.RegularExpressions;
using Forensics.Datapath.Control;
using YamlDotNet.RepresentationModel;

namespace Forensics.Tests;

/// <summary>
/// Cilium's own CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy files
/// (testdata/cilium: examples/, cilium-cli connectivity manifests, test/k8s
/// manifests; unmodified copies, see NOTICE.md), each wrapped in a lab with
/// pods that its selectors select, as a user trying them would.
/// </summary>
public static partial class CiliumCorpus
{
    /// <summary>Every file of the corpus with a CNP or CCNP, as its upstream path.</summary>
    public static IReadOnlyList<string> PolicyFiles()
    {
        var root = CiliumFiles.PathOf("");
        return Directory.EnumerateFiles(root, "*.yaml", SearchOption.AllDirectories)
            .Where(f => PolicyKind().IsMatch(File.ReadAllText(f)))
            .Select(f => Path.GetRelativePath(root, f).Replace('\\', '/'))
            .Order(StringComparer.Ordinal)
            .ToList();
    }

    [GeneratedRegex(@"(?m)^kind:\s*""?Cilium(Clusterwide)?NetworkPolicy""?\s*$")]
    private static partial Regex PolicyKind();

    /// <summary>
    /// The cilium-cli connectivity manifests are Go templates (one test manifest a Helm
    /// template, a few a placeholder the e2e suite replaces): rendered as cilium-cli,
    /// helm and the suite render them, with the lab's values (TEST-NET addresses for
    /// the outside world, the lab's node address for a node).
    /// </summary>
    public static string Render(string text) => text
        .Replace("{{.ExternalIP}}", "198.51.100.10", StringComparison.Ordinal)
        .Replace("{{.ExternalOtherIP}}", "198.51.100.11", StringComparison.Ordinal)
        .Replace("{{.ExternalCIDR}}", "198.51.100.0/24", StringComparison.Ordinal)
        .Replace("{{trimSuffix .ExternalTarget \".\"}}", "one.one.one.one", StringComparison.Ordinal)
        .Replace("{{.ExternalTarget}}", "one.one.one.one.", StringComparison.Ordinal)
        .Replace("{{.ExternalTargetCANamespace}}", "kube-system", StringComparison.Ordinal)
        .Replace("{{.ExternalTargetCAName}}", "cabundle", StringComparison.Ordinal)
        .Replace("{{.TestNamespace}}", "cilium-test", StringComparison.Ordinal)
        .Replace("{{.ExternalDeploymentPort}}", "8080", StringComparison.Ordinal)
        .Replace("{{ .K8sCIDR }}", "192.0.2.0/24", StringComparison.Ordinal)
        .Replace("{{ .Values.Namespace }}", "second", StringComparison.Ordinal)
        .Replace("{{ range $i := .NodesWithoutCiliumIPs }}\n    - {{$i.IP}}/{{$i.Mask}}\n{{ end }}", "    - 192.0.2.1/32", StringComparison.Ordinal)
        // test/k8s/manifests: Cilium's e2e suite substitutes a node address here before applying
        .Replace("NODE_WITHOUT_CILIUM_IP", "192.0.2.1", StringComparison.Ordinal);

    /// <summary>
    /// Pods (with their Namespaces and ServiceAccounts) that every endpoint selector of
    /// the file's policies selects: matchLabels as labels, the namespace label as the
    /// pod's namespace, the service account and namespace labels Cilium derives as
    /// a ServiceAccount and a Namespace, an In requirement's first value, Exists as "x".
    /// </summary>
    public static IReadOnlyList<string> PodsFor(string text)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(text));
        var pods = new List<(string Ns, Dictionary<string, string> Labels, string? Sa)>();
        var nsLabels = new Dictionary<string, Dictionary<string, string>>(StringComparer.Ordinal);
        foreach (var doc in stream.Documents)
        {
            if (doc.RootNode is not YamlMappingNode root || Str(root, "kind") is not ("CiliumNetworkPolicy" or "CiliumClusterwideNetworkPolicy") || Child(root, "metadata") is not YamlMappingNode meta)
                continue;
            var ns = Str(root, "kind") == "CiliumNetworkPolicy" ? Str(meta, "namespace") ?? "default" : "default";
            var specs = new List<YamlMappingNode>();
            if (Child(root, "spec") is YamlMappingNode one)
                specs.Add(one);
            if (Child(root, "specs") is YamlSequenceNode many)
                specs.AddRange(many.Children.OfType<YamlMappingNode>());
            foreach (var spec in specs)
            {
                var selectors = new List<YamlMappingNode>();
                if (Child(spec, "endpointSelector") is YamlMappingNode subject)
                    selectors.Add(subject);
                foreach (var section in (string[])["ingress", "egress", "ingressDeny", "egressDeny"])
                    if (Child(spec, section) is YamlSequenceNode rules)
                        foreach (var rule in rules.Children.OfType<YamlMappingNode>())
                            foreach (var field in (string[])["fromEndpoints", "toEndpoints", "fromRequires", "toRequires"])
                                if (Child(rule, field) is YamlSequenceNode sels)
                                    selectors.AddRange(sels.Children.OfType<YamlMappingNode>());
                foreach (var sel in selectors)
                {
                    var labels = new Dictionary<string, string>(StringComparer.Ordinal);
                    string podNs = ns;
                    string? sa = null;
                    var nsl = new Dictionary<string, string>(StringComparer.Ordinal);
                    bool reserved = false;
                    void Want(string rawKey, string value)
                    {
                        var (source, key) = PolicyCompiler.SplitKey(rawKey);
                        if (source == "reserved")
                            reserved = true;
                        else if (key == IdentityAllocator.NamespaceLabel)
                            podNs = value;
                        else if (key == IdentityAllocator.ServiceAccountLabel)
                            sa = value;
                        else if (key.StartsWith(IdentityAllocator.NamespaceLabelsPrefix, StringComparison.Ordinal))
                            nsl[key[IdentityAllocator.NamespaceLabelsPrefix.Length..]] = value;
                        else if (key != IdentityAllocator.ClusterLabel)
                            labels[key] = value;
                    }
                    if (Child(sel, "matchLabels") is YamlMappingNode ml)
                        foreach (var (k, v) in ml.Children)
                            Want(((YamlScalarNode)k).Value!, (v as YamlScalarNode)?.Value ?? "");
                    if (Child(sel, "matchExpressions") is YamlSequenceNode me)
                        foreach (var e in me.Children.OfType<YamlMappingNode>())
                        {
                            var op = Str(e, "operator");
                            var values = (Child(e, "values") as YamlSequenceNode)?.Children.OfType<YamlScalarNode>().Select(v => v.Value ?? "").ToList() ?? [];
                            if (op == "In" && values.Count > 0)
                                Want(Str(e, "key")!, values[0]);
                            else if (op == "Exists")
                                Want(Str(e, "key")!, "x");
                        }
                    if (reserved)
                        continue;
                    pods.Add((podNs, labels, sa));
                    if (!nsLabels.TryGetValue(podNs, out var known))
                        nsLabels[podNs] = known = new(StringComparer.Ordinal);
                    foreach (var (k, v) in nsl)
                        known[k] = v;
                }
            }
        }
        var docs = new List<string>();
        foreach (var (ns, labels) in nsLabels.Where(n => n.Key != "default" || n.Value.Count > 0))
            docs.Add($"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {Map(labels)}\n");
        foreach (var (ns, sa) in pods.Where(p => p.Sa is not null && p.Sa != "default").Select(p => (p.Ns, p.Sa!)).Distinct())
            docs.Add($"apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {sa}, namespace: {ns}}}\n");
        for (int i = 0; i < pods.Count; i++)
        {
            var (ns, labels, sa) = pods[i];
            var spec = sa is null ? "" : $"spec:\n  serviceAccountName: {sa}\n  containers: [{{name: c, image: busybox}}]\n";
            docs.Add($"apiVersion: v1\nkind: Pod\nmetadata:\n  name: corpus-{i}\n  namespace: {ns}\n  labels: {Map(labels)}\n{spec}");
        }
        return docs;
    }

    /// <summary>
    /// The labels a user would give the lab's node to try the file's host policies: every nodeSelector's
    /// matchLabels (and an In requirement's first value), as one labels a node (kubectl label node) for them.
    /// </summary>
    public static IReadOnlyDictionary<string, string> NodeLabelsFor(string text)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(text));
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var doc in stream.Documents)
        {
            if (doc.RootNode is not YamlMappingNode root || Str(root, "kind") != "CiliumClusterwideNetworkPolicy")
                continue;
            var specs = new List<YamlMappingNode>();
            if (Child(root, "spec") is YamlMappingNode one)
                specs.Add(one);
            if (Child(root, "specs") is YamlSequenceNode many)
                specs.AddRange(many.Children.OfType<YamlMappingNode>());
            foreach (var sel in specs.Select(s => Child(s, "nodeSelector")).OfType<YamlMappingNode>())
            {
                if (Child(sel, "matchLabels") is YamlMappingNode ml)
                    foreach (var (k, v) in ml.Children)
                        labels[PolicyCompiler.SplitKey(((YamlScalarNode)k).Value!).Key] = (v as YamlScalarNode)?.Value ?? "";
                if (Child(sel, "matchExpressions") is YamlSequenceNode me)
                    foreach (var e in me.Children.OfType<YamlMappingNode>())
                        if (Str(e, "operator") == "In" && (Child(e, "values") as YamlSequenceNode)?.Children.OfType<YamlScalarNode>().FirstOrDefault()?.Value is { } v)
                            labels[PolicyCompiler.SplitKey(Str(e, "key")!).Key] = v;
            }
        }
        return labels;
    }

    /// <summary>The file, rendered, in a lab with the pods its selectors select (and a node its host policies select).</summary>
    public static ClusterSpec Load(string upstreamPath)
    {
        var text = Render(File.ReadAllText(CiliumFiles.PathOf(upstreamPath)));
        var docs = PodsFor(text);
        var nodeLabels = NodeLabelsFor(text);
        var lab = nodeLabels.Count == 0 ? CiliumFiles.Lab
            : CiliumFiles.Lab.Replace("nodeIP: 192.0.2.1}", $"nodeIP: 192.0.2.1, nodeLabels: {Map(nodeLabels.ToDictionary())}}}", StringComparison.Ordinal);
        return ClusterLoader.Load(text.TrimEnd() + "\n---\n" + string.Join("\n---\n", docs.Prepend(lab)), upstreamPath);
    }

    private static string Map(Dictionary<string, string> labels)
    {
        var sb = new StringBuilder("{");
        sb.AppendJoin(", ", labels.Select(kv => $"\"{kv.Key}\": \"{kv.Value}\""));
        return sb.Append('}').ToString();
    }

    private static YamlNode? Child(YamlMappingNode node, string key) =>
        node.Children.TryGetValue(new YamlScalarNode(key), out var v) ? v : null;

    private static string? Str(YamlMappingNode node, string key) => (Child(node, key) as YamlScalarNode)?.Value;
}
