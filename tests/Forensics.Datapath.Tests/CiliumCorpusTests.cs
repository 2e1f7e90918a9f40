using Forensics.Datapath.Control;
using Forensics.Tests;
using Xunit.Abstractions;

namespace Forensics.Datapath.Tests;

/// <summary>
/// Cilium's own policy files as a new user would try them (issue 17): each wrapped
/// in a lab with pods its selectors select. Those that do not load must say
/// "not supported: FIELD" for a real Cilium field this tool does not model, or
/// refuse what Cilium itself refuses.
/// </summary>
public class CiliumCorpusTests(ITestOutputHelper output)
{
    /// <summary>
    /// Files of the repository that use a field Cilium (and kubectl's strict field
    /// validation) does not know: stale examples. "unknown field" is the right answer.
    /// </summary>
    private static readonly (string File, string Field)[] StaleUpstream =
    [
        ("examples/policies/auth/auth.yaml", "spec.egress[0].auth"), // api.EgressRule calls it "authentication"
        ("examples/policies/kubernetes/clustermesh/cross-cluster-policy.yaml", "metadata.description"), // ObjectMeta has none
    ];

    private const int MinimumLoaded = 190;

    [Fact]
    public void CorpusFiles_Loaded_NoFewerThanBeforeAndTheRestSayWhy()
    {
        var files = CiliumCorpus.PolicyFiles();
        var failed = new List<(string File, string Message)>();
        var hostFiles = new List<string>();
        foreach (var f in files)
        {
            try
            {
                var c = CiliumCorpus.Load(f);
                var ids = new IdentityAllocator();
                ids.Preallocate(c);
                foreach (var pod in c.Pods)
                    PolicyCompiler.Compile(pod, 1, c.Policies, ids, PolicyContext.Of(c));
                // host policies: the node labelled as their nodeSelector asks is their host endpoint, with rules
                if (c.Policies.Any(p => p.SelectsNodes))
                {
                    Assert.True(c.Policies.Where(p => p.SelectsNodes).All(p => PolicyCompiler.SelectsNode(p, c.NodeLabels)), $"{f}: a nodeSelector does not select the lab's node");
                    var host = PolicyCompiler.CompileHost(1, c.Policies, ids, PolicyContext.Of(c));
                    Assert.True(host.IngressEnforced || host.EgressEnforced, $"{f}: the host endpoint is not enforced");
                    hostFiles.Add(f);
                }
            }
            catch (ClusterSpecException e)
            {
                failed.Add((f, e.Message));
            }
        }
        foreach (var (f, m) in failed)
            output.WriteLine($"{f}: {m}");
        int loaded = files.Count - failed.Count;
        output.WriteLine($"{loaded} of {files.Count} files load ({100.0 * loaded / files.Count:F1}%)");

        Assert.True(files.Count >= 190, $"{files.Count} files");
        Assert.All(failed, f => Assert.True(
            f.Message.Contains("not supported: ", StringComparison.Ordinal) || f.Message.Contains("Cilium refuses", StringComparison.Ordinal)
                || f.Message.Contains("Kubernetes refuses", StringComparison.Ordinal) || StaleUpstream.Any(s => f.File == s.File && f.Message.Contains(s.Field + ": unknown field", StringComparison.Ordinal)),
            f.Message));
        // Issue 17 asks for 90%: 190 of 194 (97.9%) load, the 10 host policies (nodeSelector) among them. What
        // keeps the rest out: two stale upstream files (StaleUpstream), two with a lowercase "in" operator (the
        // CRD's enum is In, NotIn, Exists, DoesNotExist: Kubernetes refuses them).
        Assert.Equal(10, hostFiles.Count);
        // A floor at what loads today, raised as each lands: a regression fails here.
        Assert.True(loaded >= MinimumLoaded, $"{loaded} of {files.Count} load, fewer than {MinimumLoaded}");
    }
}
