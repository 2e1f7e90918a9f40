using System.Globalization;
using YamlDotNet.RepresentationModel;

namespace Forensics.Datapath.Control;

/// <summary>A validation failure: one line naming the file, the document and the field.</summary>
public sealed class ClusterSpecException : Exception
{
    public ClusterSpecException(string message) : base(message) { }
    public ClusterSpecException() { }
    public ClusterSpecException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>Where a document sits in its file, to name it in errors.</summary>
internal sealed class DocRef(string file, int index, int? item = null)
{
    public string File { get; } = file;
    public int Index { get; } = index;
    /// <summary>The index in a List document's items, if the object came from one.</summary>
    public int? Item { get; } = item;
    public string Kind { get; set; } = "";
    public string Name { get; set; } = "";

    public override string ToString()
    {
        var what = Kind.Length == 0 ? "" : Name.Length == 0 ? $" ({Kind})" : $" ({Kind} {Name})";
        return Item is { } i ? $"document {Index} items[{i}]{what}" : $"document {Index}{what}";
    }

    public ClusterSpecException Error(YamlNode? node, string field, string message)
    {
        var line = node is null ? "" : $":{node.Start.Line}";
        var f = field.Length == 0 ? "" : field + ": ";
        return new ClusterSpecException($"{File}{line}: {this}: {f}{message}");
    }
}

/// <summary>A YAML node seen at a field path, with strict accessors that fail with one line.</summary>
internal readonly struct Node
{
    public Node(DocRef doc, YamlNode yaml, string path)
    {
        Doc = doc;
        Yaml = yaml;
        Path = path;
    }

    public DocRef Doc { get; }
    public YamlNode Yaml { get; }
    public string Path { get; }

    public ClusterSpecException Error(string message) => Doc.Error(Yaml, Path, message);

    private string Child(string key) => Path.Length == 0 ? key : $"{Path}.{key}";

    public bool IsNull => Yaml is YamlScalarNode s && s.Style == YamlDotNet.Core.ScalarStyle.Plain && (s.Value is null or "" or "~" or "null");

    public YamlMappingNode Mapping()
    {
        if (Yaml is YamlMappingNode m)
            return m;
        throw Error("expected a mapping (key: value)");
    }

    /// <summary>The mapping's keys, failing on any key not in <paramref name="allowed"/>.</summary>
    public Node Strict(params string[] allowed)
    {
        var map = Mapping();
        foreach (var key in map.Children.Keys)
        {
            var k = key is YamlScalarNode s ? s.Value ?? "" : "";
            if (Array.IndexOf(allowed, k) < 0)
                throw Doc.Error(key, Child(k), $"unknown field (expected one of: {string.Join(", ", allowed)})");
        }
        return this;
    }

    /// <summary>
    /// As <see cref="Strict(string[])"/>, for a schema this tool models in part: a key in
    /// <paramref name="unsupported"/> is a real field of the format that is not modelled
    /// ("not supported: FIELD (why)"); only a key in neither list is an unknown field.
    /// </summary>
    public Node Strict(IReadOnlyDictionary<string, string> unsupported, params string[] allowed)
    {
        ArgumentNullException.ThrowIfNull(unsupported);
        var map = Mapping();
        foreach (var key in map.Children.Keys)
        {
            var k = key is YamlScalarNode s ? s.Value ?? "" : "";
            if (unsupported.TryGetValue(k, out var why) && Array.IndexOf(allowed, k) < 0)
                throw Doc.Error(key, Child(k), $"not supported: {k} ({why})");
        }
        return Strict([.. allowed, .. unsupported.Keys]);
    }

    public Node? Get(string key)
    {
        var map = Mapping();
        foreach (var (k, v) in map.Children)
        {
            if (k is YamlScalarNode s && s.Value == key)
            {
                var n = new Node(Doc, v, Child(key));
                return n.IsNull ? null : n;
            }
        }
        return null;
    }

    public Node Require(string key) => Get(key) ?? throw Error($"{key}: required field is missing");

    public IEnumerable<(string Key, Node Value)> Entries()
    {
        var map = Mapping();
        foreach (var (k, v) in map.Children)
        {
            var key = k is YamlScalarNode s ? s.Value ?? "" : throw Doc.Error(k, Path, "keys must be plain strings");
            yield return (key, new Node(Doc, v, Child(key)));
        }
    }

    public IReadOnlyList<Node> Items()
    {
        if (Yaml is not YamlSequenceNode seq)
            throw Error("expected a list");
        var list = new List<Node>(seq.Children.Count);
        for (int i = 0; i < seq.Children.Count; i++)
            list.Add(new Node(Doc, seq.Children[i], $"{Path}[{i}]"));
        return list;
    }

    public string Scalar()
    {
        if (Yaml is YamlScalarNode s && s.Value is not null)
            return s.Value;
        throw Error("expected a single value");
    }

    public string String()
    {
        var v = Scalar().Trim();
        if (v.Length == 0)
            throw Error("must not be empty");
        return v;
    }

    public bool Bool()
    {
        return Scalar().Trim().ToLowerInvariant() switch
        {
            "true" or "yes" => true,
            "false" or "no" => false,
            var v => throw Error($"'{v}' is not true or false"),
        };
    }

    /// <summary>
    /// A YAML boolean as Kubernetes reads one (sigs.k8s.io/yaml, YAML 1.1): an
    /// unquoted true/false (also yes/no, on/off, y/n); a quoted "true" is a string
    /// and, like any other value, refused.
    /// </summary>
    public bool YamlBool()
    {
        if (Yaml is YamlScalarNode { Style: YamlDotNet.Core.ScalarStyle.Plain, Value: { } v })
        {
            switch (v)
            {
                case "true" or "True" or "TRUE" or "yes" or "Yes" or "YES" or "y" or "Y" or "on" or "On" or "ON":
                    return true;
                case "false" or "False" or "FALSE" or "no" or "No" or "NO" or "n" or "N" or "off" or "Off" or "OFF":
                    return false;
            }
        }
        var shown = Yaml is YamlScalarNode sc ? $"'{sc.Value}'" : "a " + (Yaml is YamlSequenceNode ? "list" : "mapping");
        throw Error($"{shown} is not a boolean (true or false)");
    }

    public int Int(int min, int max, string what)
    {
        var v = Scalar().Trim();
        if (!int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out int n))
            throw Error($"'{v}' is not {what}");
        if (n < min || n > max)
            throw Error($"{n} is out of range for {what} ({min}-{max})");
        return n;
    }

    public int Port(bool allowZero = false) => Int(allowZero ? 0 : 1, 65535, "a port");

    public IReadOnlyDictionary<string, string> StringMap()
    {
        var d = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (k, v) in Entries())
            d[k] = v.IsNull ? "" : v.Scalar();
        return d;
    }
}
