using System.Xml.Linq;
using Forensics.Tests;

namespace Forensics.Format.Tests;

/// <summary>The projects reference each other as the design says: Datapath &lt;- Recorder -&gt; Format &lt;- Query, Cilium -&gt; Recorder,
/// Runtime (the container runtime's CRI) a leaf beside Format used by Datapath (the containerd lab node) and Recorder (attribution), Cli on top.</summary>
public class LayeringTests
{
    private static Dictionary<string, SortedSet<string>> Graph()
    {
        var graph = new Dictionary<string, SortedSet<string>>(StringComparer.Ordinal);
        foreach (var csproj in Directory.GetFiles(Repo.Path("src"), "*.csproj", SearchOption.AllDirectories))
        {
            var refs = XDocument.Load(csproj).Descendants("ProjectReference")
                .Select(r => Path.GetFileNameWithoutExtension(r.Attribute("Include")!.Value).Replace("Forensics.", "", StringComparison.Ordinal));
            graph[Path.GetFileNameWithoutExtension(csproj).Replace("Forensics.", "", StringComparison.Ordinal)] = new SortedSet<string>(refs, StringComparer.Ordinal);
        }
        return graph;
    }

    [Fact]
    public void ProjectReferences_FollowTheLayering()
    {
        var g = Graph();
        Assert.Equal(["Cilium", "Cli", "Datapath", "Format", "Query", "Recorder", "Runtime"], g.Keys.Order(StringComparer.Ordinal));
        Assert.Empty(g["Format"]);                       // the format stands alone
        Assert.Empty(g["Runtime"]);                      // the CRI client stands alone: no kernel, no format
        Assert.Equal(["Format", "Runtime"], g["Datapath"]); // the reference tables; the CRI for the containerd lab node
        Assert.Equal(["Datapath", "Format", "Runtime"], g["Recorder"]); // no Query; the runtime for attribution
        Assert.Equal(["Format"], g["Query"]);             // no Datapath, no Recorder, no Runtime: reading needs no kernel and no runtime
        Assert.Equal(["Recorder"], g["Cilium"]);          // Hubble and Tetragon write through the recorder, read nothing of Query
        Assert.DoesNotContain("Cli", g.Where(kv => kv.Key != "Cli").SelectMany(kv => kv.Value));
    }
}
