using Forensics.Datapath.Control;

namespace Forensics.Tests;

/// <summary>
/// Cilium's own files under testdata/cilium (unmodified copies, see NOTICE.md),
/// loaded as users load them: the file as it is, then a Lab and the pods its
/// selectors select.
/// </summary>
public static class CiliumFiles
{
    public const string Lab = """
        apiVersion: forensics.dev/v1
        kind: Lab
        metadata: {name: cil}
        spec: {podCIDR: 10.0.0.0/24, serviceCIDR: 10.0.1.0/24, nodeIP: 192.0.2.1}
        """;

    public static string PathOf(string upstreamPath) =>
        System.IO.Path.Combine(AppContext.BaseDirectory, "testdata", "cilium", upstreamPath);

    /// <summary>A Pod document with labels (address assigned from the Lab's pod CIDR in document order).</summary>
    public static string Pod(string name, params (string K, string V)[] labels) => $$"""
        apiVersion: v1
        kind: Pod
        metadata:
          name: {{name}}
          labels: { {{string.Join(", ", labels.Select(l => $"\"{l.K}\": \"{l.V}\""))}} }
        """;

    /// <summary>The real file, unchanged, followed by the Lab and the documents given.</summary>
    public static ClusterSpec LoadWith(string upstreamPath, params string[] docs) =>
        ClusterLoader.Load(File.ReadAllText(PathOf(upstreamPath)) + "\n---\n" + string.Join("\n---\n", docs.Prepend(Lab)), upstreamPath);

    public static PodSpec PodNamed(this ClusterSpec cluster, string name) => cluster.Pods.Single(p => p.Name == name);
}
