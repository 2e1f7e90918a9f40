using YamlDotNet.Core;
using YamlDotNet.Core.Events;

namespace Forensics.Datapath.Control;

/// <summary>
/// Limits on a cluster YAML, which may come from someone else (docs/cli.md): each bounds the
/// memory, time or machine state a hostile file can cost. Label keys and values are limited as
/// Kubernetes limits them, which no real object exceeds.
/// </summary>
public sealed record ClusterLimits
{
    public static ClusterLimits Default { get; } = new();

    /// <summary>The YAML file's size.</summary>
    public long MaxFileBytes { get; init; } = 16L << 20;

    /// <summary>Pods (each one a network namespace and a veth pair in a lab); --max-pods.</summary>
    public int MaxPods { get; init; } = 1000;

    /// <summary>Nesting of mappings and sequences (a Kubernetes object nests about 12 deep).</summary>
    public int MaxDepth { get; init; } = 64;

    /// <summary>Nodes of one document with every alias expanded (YAML's "billion laughs").</summary>
    public long MaxNodes { get; init; } = 1_000_000;

    /// <summary>A label value: Kubernetes allows 63 characters.</summary>
    public int MaxLabelValue { get; init; } = 63;

    /// <summary>A label key: a 253-character prefix, '/', a 63-character name.</summary>
    public int MaxLabelKey { get; init; } = 317;
}

/// <summary>
/// A pass over the YAML's events (YamlDotNet's parser is a state machine; building the node tree
/// recurses and a deeply nested file overflows the stack, which no handler can catch): nesting
/// and the size of the document with aliases expanded must stay within <see cref="ClusterLimits"/>.
/// </summary>
internal static class YamlLimits
{
    public static void Check(string text, string file, ClusterLimits limits) =>
        Check(text, file, limits, m => new ClusterSpecException(m));

    /// <summary>As <see cref="Check(string, string, ClusterLimits)"/>, with the caller's exception for the one-line message.</summary>
    public static void Check(string text, string file, ClusterLimits limits, Func<string, Exception> error)
    {
        var parser = new Parser(new StringReader(text));
        var anchors = new Dictionary<string, long>(StringComparer.Ordinal);
        var open = new Stack<(string? Anchor, long Nodes)>();
        var document = 0;
        long docNodes = 0;
        while (NextOrStop(parser))
        {
            var e = parser.Current!;
            long add = 0;
            switch (e)
            {
                case DocumentStart:
                    document++;
                    docNodes = 0;
                    anchors.Clear();
                    continue;
                case MappingStart m:
                    Open(m.Anchor.IsEmpty ? null : m.Anchor.Value, e);
                    continue;
                case SequenceStart sq:
                    Open(sq.Anchor.IsEmpty ? null : sq.Anchor.Value, e);
                    continue;
                case MappingEnd or SequenceEnd:
                    var (anchor, nodes) = open.Pop();
                    if (anchor is not null)
                        anchors[anchor] = nodes;
                    add = nodes;
                    break;
                case Scalar sc:
                    if (!sc.Anchor.IsEmpty)
                        anchors[sc.Anchor.Value] = 1;
                    add = 1;
                    break;
                case AnchorAlias a:
                    add = anchors.GetValueOrDefault(a.Value.Value, 1);
                    break;
                default:
                    continue;
            }
            if (open.Count > 0)
            {
                var (anchor, nodes) = open.Pop();
                open.Push((anchor, nodes + add));
                Budget(nodes + add, e);
            }
            else
            {
                docNodes += add;
                Budget(docNodes, e);
            }
        }

        // A syntax error is the tree builder's to report (with its document number); everything before it was checked.
        static bool NextOrStop(Parser p)
        {
            try
            {
                return p.MoveNext();
            }
            catch (YamlException)
            {
                return false;
            }
        }

        void Open(string? anchor, ParsingEvent e)
        {
            if (open.Count >= limits.MaxDepth)
                throw error($"{file}:{e.Start.Line}: document {document}: nested more than {limits.MaxDepth} deep");
            open.Push((anchor, 1));
        }

        void Budget(long nodes, ParsingEvent e)
        {
            if (nodes > limits.MaxNodes)
                throw error($"{file}:{e.Start.Line}: document {document}: more than {limits.MaxNodes} nodes with its aliases expanded");
        }
    }
}
