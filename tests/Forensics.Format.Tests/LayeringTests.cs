using System.Text.RegularExpressions;
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

    /// <summary>
    /// Native code in any project but Datapath, each hit as "path:line: text" or "path: AllowUnsafeBlocks": a P/Invoke
    /// (DllImport, LibraryImport, an extern method) in the source, or a project that allows unsafe code (without which
    /// neither unsafe blocks nor function pointers compile).
    /// </summary>
    internal static List<string> NativeCodeOutsideDatapath(string srcRoot)
    {
        var native = new Regex(@"\[\s*(System\.Runtime\.InteropServices\.)?(DllImport|LibraryImport)(Attribute)?\b|\bstatic\s+(partial\s+)?extern\b|\bextern\s+static\b", RegexOptions.Compiled);
        var hits = new List<string>();
        foreach (var file in Directory.EnumerateFiles(srcRoot, "*.cs", SearchOption.AllDirectories))
        {
            var rel = Path.GetRelativePath(srcRoot, file).Replace('\\', '/');
            if (rel.StartsWith("Datapath/", StringComparison.Ordinal) || rel.Contains("/obj/", StringComparison.Ordinal) || rel.Contains("/bin/", StringComparison.Ordinal))
                continue;
            var lines = File.ReadAllLines(file);
            for (var i = 0; i < lines.Length; i++)
            {
                var code = lines[i].TrimStart();
                if (code.StartsWith("//", StringComparison.Ordinal) || code.StartsWith('*'))
                    continue;
                if (native.IsMatch(code))
                    hits.Add($"src/{rel}:{i + 1}: {code}");
            }
        }
        foreach (var csproj in Directory.EnumerateFiles(srcRoot, "*.csproj", SearchOption.AllDirectories))
        {
            var rel = Path.GetRelativePath(srcRoot, csproj).Replace('\\', '/');
            if (!rel.StartsWith("Datapath/", StringComparison.Ordinal)
                && XDocument.Load(csproj).Descendants("AllowUnsafeBlocks").Any(e => string.Equals(e.Value.Trim(), "true", StringComparison.OrdinalIgnoreCase)))
                hits.Add($"src/{rel}: AllowUnsafeBlocks");
        }
        return hits;
    }

    [Fact]
    public void NativeCode_OnlyInDatapath()
    {
        // Query reads recordings with managed calls alone (RegularFile, SqlGuard); Cli, Recorder, Format, Runtime, Cilium likewise.
        Assert.Empty(NativeCodeOutsideDatapath(Repo.Path("src")));
    }

    [Fact]
    public void NativeCodeScan_FindsPInvokeAndUnsafe()
    {
        // The scan itself can fail: planted P/Invokes and an unsafe project outside Datapath are each found; Datapath's and words in comments or strings are not.
        var root = Directory.CreateTempSubdirectory("fx-layering-").FullName;
        try
        {
            Directory.CreateDirectory(Path.Combine(root, "Query"));
            Directory.CreateDirectory(Path.Combine(root, "Datapath"));
            File.WriteAllText(Path.Combine(root, "Query", "A.cs"), "class A {\n    [DllImport(\"libc\")]\n    static extern int open(string p, int f);\n}\n");
            File.WriteAllText(Path.Combine(root, "Query", "B.cs"), "partial class B {\n    [LibraryImport(\"libc\")]\n    private static partial int close(int fd);\n    void F() { unsafe { } }\n}\n");
            File.WriteAllText(Path.Combine(root, "Query", "C.cs"), "// unsafe to extract: a comment is not code\nclass C { string s = \"an unsafe path\"; }\n");
            File.WriteAllText(Path.Combine(root, "Query", "Forensics.Query.csproj"), "<Project><PropertyGroup><AllowUnsafeBlocks>true</AllowUnsafeBlocks></PropertyGroup></Project>");
            File.WriteAllText(Path.Combine(root, "Datapath", "D.cs"), "class D {\n    [DllImport(\"libbpf\")]\n    static extern int bpf();\n}\n");
            var hits = NativeCodeOutsideDatapath(root);
            Assert.Equal(["src/Query/A.cs:2", "src/Query/A.cs:3", "src/Query/B.cs:2", "src/Query/Forensics.Query.csproj"],
                hits.Select(h => h.Split(": ")[0]).Order(StringComparer.Ordinal));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    /// <summary>
    /// Types named as a part of their own namespace, each as "path: Namespace.Type" (Forensics.Datapath.Lab.Lab was one: every
    /// use had to be spelt Lab.Lab or aliased). Top-level declarations of every .cs file under the root.
    /// </summary>
    internal static List<string> TypesNamedLikeTheirNamespace(string srcRoot)
    {
        var ns = new Regex(@"^namespace\s+([\w.]+)\s*;", RegexOptions.Multiline);
        var type = new Regex(@"^(?:public|internal|file)?\s*(?:(?:static|sealed|abstract|readonly|partial|ref|unsafe)\s+)*(?:class|struct|interface|enum|record(?:\s+(?:class|struct))?|delegate\s+[\w<>\[\]?,. ]+?)\s+(\w+)", RegexOptions.Multiline);
        var hits = new List<string>();
        foreach (var file in Directory.EnumerateFiles(srcRoot, "*.cs", SearchOption.AllDirectories))
        {
            var rel = Path.GetRelativePath(srcRoot, file).Replace('\\', '/');
            if (rel.Contains("/obj/", StringComparison.Ordinal) || rel.Contains("/bin/", StringComparison.Ordinal))
                continue;
            var text = File.ReadAllText(file);
            if (ns.Match(text) is not { Success: true } n)
                continue;
            var segments = n.Groups[1].Value.Split('.');
            foreach (Match t in type.Matches(text))
                if (segments.Contains(t.Groups[1].Value, StringComparer.Ordinal))
                    hits.Add($"src/{rel}: {n.Groups[1].Value}.{t.Groups[1].Value}");
        }
        return hits;
    }

    [Fact]
    public void TypeNames_DifferFromTheirNamespaces()
    {
        Assert.Empty(TypesNamedLikeTheirNamespace(Repo.Path("src")));
    }

    [Fact]
    public void TypeNameScan_FindsATypeNamedLikeItsNamespace()
    {
        var root = Directory.CreateTempSubdirectory("fx-naming-").FullName;
        try
        {
            Directory.CreateDirectory(Path.Combine(root, "Datapath", "Lab"));
            File.WriteAllText(Path.Combine(root, "Datapath", "Lab", "Lab.cs"), "namespace Forensics.Datapath.Lab;\n\n/// <summary>a lab</summary>\npublic sealed class Lab { }\n");
            File.WriteAllText(Path.Combine(root, "Datapath", "Lab", "NetnsLab.cs"), "namespace Forensics.Datapath.Lab;\n\n// the Lab class was renamed\npublic sealed class NetnsLab { public string Lab = \"\"; }\n");
            File.WriteAllText(Path.Combine(root, "Datapath", "Probes.cs"), "namespace Forensics.Datapath.Probes;\n\ninternal static partial class Probes { }\n");
            Assert.Equal(["src/Datapath/Lab/Lab.cs: Forensics.Datapath.Lab.Lab", "src/Datapath/Probes.cs: Forensics.Datapath.Probes.Probes"],
                TypesNamedLikeTheirNamespace(root).Order(StringComparer.Ordinal));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }
}
