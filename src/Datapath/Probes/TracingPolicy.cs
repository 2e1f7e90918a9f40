using System.Net;
using System.Text;
using System.Text.RegularExpressions;
using YamlDotNet.RepresentationModel;

namespace Forensics.Datapath.Probes;

/// <summary>A TracingPolicy the connect filter can honour, and the CIDRs it excludes.</summary>
public sealed record TracingPolicyFilter(string Name, string Call, IReadOnlyList<IPNetwork> ExcludedCidrs);

/// <summary>A TracingPolicy this tool cannot honour; the message says why, in one line.</summary>
public sealed class TracingPolicyException : Exception
{
    public TracingPolicyException(string message) : base(message) { }
    public TracingPolicyException() { }
    public TracingPolicyException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>
/// Reads a Tetragon TracingPolicy of the quickstart's shape (a kprobe on
/// tcp_connect whose selector has a NotDAddr matchArgs list), so users can
/// reuse that file as it is: ${VAR} references are substituted from the
/// environment first (as envsubst does), and the NotDAddr values become the
/// connect probe's excluded destinations.
/// </summary>
public static partial class TracingPolicyReader
{
    private static readonly string[] ConnectCalls = ["tcp_connect", "tcp_v4_connect", "tcp_v6_connect"];

    public static TracingPolicyFilter ReadFile(string path, Func<string, string?>? environment = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        string text;
        try
        {
            if (Directory.Exists(path))
                throw new TracingPolicyException($"{path}: is a directory, not a TracingPolicy file");
            text = Files.ReadRegularText(path, 16 << 20);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new TracingPolicyException($"{path}: cannot read: {e.Message}", e);
        }
        return Parse(text, environment);
    }

    /// <summary>Parses the policy text; <paramref name="environment"/> defaults to the process environment.</summary>
    public static TracingPolicyFilter Parse(string yaml, Func<string, string?>? environment = null)
    {
        ArgumentNullException.ThrowIfNull(yaml);
        var text = Substitute(yaml, environment ?? Environment.GetEnvironmentVariable);
        var stream = new YamlStream();
        try
        {
            Control.YamlLimits.Check(text, "the TracingPolicy", Control.ClusterLimits.Default, m => new TracingPolicyException(m));
            stream.Load(new StringReader(text));
        }
        catch (YamlDotNet.Core.YamlException e)
        {
            throw new TracingPolicyException($"the TracingPolicy is not valid YAML: {e.Message}", e);
        }
        var documents = stream.Documents.Where(d => !IsNull(d.RootNode)).ToList();
        if (documents.Count == 0)
            throw new TracingPolicyException("the TracingPolicy is empty");
        if (documents.Count > 1)
            throw new TracingPolicyException(
                $"line {documents[1].RootNode.Start.Line}: a second YAML document; one TracingPolicy per file is read (split the file)");
        if (documents[0].RootNode is not YamlMappingNode root)
            throw new TracingPolicyException("the TracingPolicy is not a mapping (kind, metadata, spec)");

        var kind = Scalar(root, "kind");
        if (kind == "TracingPolicyNamespaced")
            throw new TracingPolicyException(
                "kind TracingPolicyNamespaced is not supported: connects are not attributed to Kubernetes namespaces, so its scope cannot be honoured (use a TracingPolicy)");
        if (kind != "TracingPolicy")
            throw new TracingPolicyException($"kind is '{kind}', not TracingPolicy");
        var name = Child(root, "metadata") is YamlMappingNode meta ? Scalar(meta, "name") ?? "" : "";
        if (Child(root, "spec") is not YamlMappingNode spec || Child(spec, "kprobes") is not YamlSequenceNode kprobes)
            throw new TracingPolicyException("the TracingPolicy has no spec.kprobes list");

        foreach (var kpNode in kprobes.Children)
        {
            if (kpNode is not YamlMappingNode kp)
                throw new TracingPolicyException($"line {kpNode.Start.Line}: a kprobe is not a mapping (call, syscall, args, selectors)");
            var call = Scalar(kp, "call");
            if (call is null || !ConnectCalls.Contains(call))
                continue;
            var selectors = Child(kp, "selectors") as YamlSequenceNode;
            if (selectors is null || selectors.Children.Count == 0)
                throw new TracingPolicyException($"the kprobe on {call} has no selectors: nothing to exclude");
            if (selectors.Children.Count > 1)
                throw new TracingPolicyException($"the kprobe on {call} has {selectors.Children.Count} selectors; only one (a NotDAddr list) is supported");
            if (selectors.Children[0] is not YamlMappingNode selector)
                throw new TracingPolicyException($"line {selectors.Children[0].Start.Line}: the selector of {call} is not a mapping (matchArgs, ...)");
            foreach (var key in selector.Children.Keys.OfType<YamlScalarNode>())
                if (key.Value != "matchArgs")
                    throw new TracingPolicyException($"the selector of {call} uses {key.Value}; only matchArgs with NotDAddr is supported");
            if (Child(selector, "matchArgs") is not YamlSequenceNode matchArgs)
                throw new TracingPolicyException($"the selector of {call} has no matchArgs list");

            var cidrs = new List<IPNetwork>();
            foreach (var argNode in matchArgs.Children)
            {
                if (argNode is not YamlMappingNode arg)
                    throw new TracingPolicyException($"line {argNode.Start.Line}: a matchArgs entry is not a mapping (index, operator, values)");
                var op = Scalar(arg, "operator");
                if (op != "NotDAddr")
                    throw new TracingPolicyException($"matchArgs operator '{op}' is not supported; only NotDAddr is");
                if (Child(arg, "values") is not YamlSequenceNode values)
                    throw new TracingPolicyException("a NotDAddr matchArgs has no values list");
                foreach (var v in values.Children)
                {
                    var value = (v as YamlScalarNode)?.Value
                        ?? throw new TracingPolicyException($"line {v.Start.Line}: a NotDAddr value is not a single address or CIDR");
                    if (!Cidrs.TryParse(value, out var net))
                        throw new TracingPolicyException($"NotDAddr value '{value}' is not an address or CIDR (as Go's netip parses them)");
                    cidrs.Add(net);
                }
            }
            if (cidrs.Count == 0)
                throw new TracingPolicyException($"the kprobe on {call} has no NotDAddr values");
            return new TracingPolicyFilter(name, call, cidrs);
        }
        throw new TracingPolicyException($"the TracingPolicy has no kprobe on {string.Join(" or ", ConnectCalls)}");
    }

    /// <summary>envsubst: ${VAR} and $VAR replaced from the environment; an unset variable is an error.</summary>
    internal static string Substitute(string text, Func<string, string?> environment)
    {
        var missing = new List<string>();
        var result = VariablePattern().Replace(text, m =>
        {
            var name = m.Groups[1].Success ? m.Groups[1].Value : m.Groups[2].Value;
            var value = environment(name);
            if (value is null)
            {
                missing.Add(name);
                return m.Value;
            }
            return value;
        });
        if (missing.Count > 0)
            throw new TracingPolicyException($"the TracingPolicy uses {string.Join(", ", missing.Distinct().Select(n => "${" + n + "}"))}, which is not set: export it or run the file through envsubst");
        return result;
    }

    [GeneratedRegex(@"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")]
    private static partial Regex VariablePattern();

    private static bool IsNull(YamlNode node) =>
        node is YamlScalarNode { Style: YamlDotNet.Core.ScalarStyle.Plain, Value: null or "" or "~" or "null" };

    private static YamlNode? Child(YamlMappingNode node, string key) =>
        node.Children.TryGetValue(new YamlScalarNode(key), out var v) ? v : null;

    private static string? Scalar(YamlMappingNode node, string key) => (Child(node, key) as YamlScalarNode)?.Value;
}
