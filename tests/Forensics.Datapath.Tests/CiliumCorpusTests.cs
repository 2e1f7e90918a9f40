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

    private const int MinimumLoaded = 180;

    [Fact]
    public void CorpusFiles_Loaded_NoFewerThanBeforeAndTheRestSayWhy()
    {
        var files = CiliumCorpus.PolicyFiles();
        var failed = new List<(string File, string Message)>();
        foreach (var f in files)
        {
            try
            {
                var c = CiliumCorpus.Load(f);
                var ids = new IdentityAllocator();
                ids.Preallocate(c);
                foreach (var pod in c.Pods)
                    PolicyCompiler.Compile(pod, 1, c.Policies, ids, PolicyContext.Of(c));
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
        // Issue 17 asks for 90%: 180 of 194 (92.8%) load. What keeps the rest out: nodeSelector (10 host
        // policies: the lab's node has no host firewall), two stale upstream files (StaleUpstream), two with
        // a lowercase "in" operator (the CRD's enum is In, NotIn, Exists, DoesNotExist: Kubernetes refuses them).
        // A floor at what loads today, raised as each lands: a regression fails here.
        Assert.True(loaded >= MinimumLoaded, $"{loaded} of {files.Count} load, fewer than {MinimumLoaded}");
    }
}
