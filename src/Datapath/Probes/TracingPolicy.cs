using System.Globalization;
using System.Net;
using System.Text;
using System.Text.RegularExpressions;
using YamlDotNet.RepresentationModel;

namespace Forensics.Datapath.Probes;

/// <summary>The connects a filter applies to: TCP active opens, UDP connect() and unconnected sends.</summary>
public enum ConnectClass
{
    Tcp = 0,
    Udp = 1,
}

/// <summary>An In (or NotIn) set of CIDRs for an address.</summary>
public sealed record AddressSet(bool Negate, IReadOnlyList<IPNetwork> Cidrs);

/// <summary>An In (or NotIn) set of port ranges.</summary>
public sealed record PortSet(bool Negate, IReadOnlyList<(int First, int Last)> Ranges);

/// <summary>An In (or NotIn) set of binaries, by the path they were executed by.</summary>
public sealed record BinarySet(bool Negate, IReadOnlyList<string> Paths)
{
    /// <summary>FNV-1a 64 of a path's bytes, as bpf/lib/process.h hashes an exec's path.</summary>
    public static ulong Hash(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        ulong h = 0xcbf29ce484222325;
        foreach (var b in Encoding.UTF8.GetBytes(path))
            h = (h ^ b) * 0x100000001b3;
        return h;
    }
}

/// <summary>
/// One selector of a TracingPolicy kprobe, as the connect probe applies it in the
/// kernel: every condition given must hold (Tetragon ANDs a selector's matchArgs and
/// matchBinaries). Families: bit 0 IPv4, bit 1 IPv6, 0 any.
/// </summary>
public sealed record ConnectSelector
{
    public byte Families { get; init; }
    public IReadOnlyList<IPNetwork>? DAddrIn { get; init; }
    public IReadOnlyList<IPNetwork>? DAddrNotIn { get; init; }
    public IReadOnlyList<IPNetwork>? SAddrIn { get; init; }
    public IReadOnlyList<IPNetwork>? SAddrNotIn { get; init; }
    public PortSet? DPort { get; init; }
    public PortSet? SPort { get; init; }
    public BinarySet? Binaries { get; init; }
}

/// <summary>
/// What the policies ask of one class of connects: reported when any selector
/// selects it (Tetragon ORs a kprobe's selectors, and every policy reports its
/// own); an empty list is every connect of the class (a hook without selectors).
/// </summary>
public sealed record ConnectFilter(ConnectClass Class, IReadOnlyList<ConnectSelector> Selectors);

/// <summary>
/// The TracingPolicies of a file, as this recorder honours them: a filter per class
/// of connects their network hooks select (classes no hook selects are reported as
/// the probe reports them), what else they say, once per line (hooks this recorder
/// does not trace), and the CIDRs their NotDAddr conditions exclude (what the
/// policy's author counts as inside the cluster).
/// </summary>
public sealed record TracingPolicySet(IReadOnlyList<string> Names, IReadOnlyList<ConnectFilter> Filters, IReadOnlyList<string> Notices,
    IReadOnlyList<IPNetwork> ExcludedCidrs);

/// <summary>A TracingPolicy this tool cannot honour; the message says why, in one line.</summary>
public sealed class TracingPolicyException : Exception
{
    public TracingPolicyException(string message) : base(message) { }
    public TracingPolicyException() { }
    public TracingPolicyException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>
/// Reads Tetragon TracingPolicies (cilium.io/v1alpha1), every document of a file,
/// so users can reuse their files as they are (${VAR} references substituted from
/// the environment first, as envsubst does). The network hooks the connect probe
/// can stand for become in-kernel filters with Tetragon's semantics: tcp_connect,
/// tcp_v4_connect, tcp_v6_connect (TCP), udp_sendmsg (UDP), security_socket_connect
/// and the connect syscall (both); matchArgs DAddr, NotDAddr, SAddr, NotSAddr,
/// DPort, NotDPort, SPort, NotSPort, Protocol, Family on their sock, socket and
/// sockaddr arguments, matchBinaries In and NotIn, selectors ORed, conditions
/// ANDed. Other hooks (tcp_close, tcp_sendmsg, ...) are noted, not recorded;
/// enforcement actions are refused: this is a recorder.
/// </summary>
public static partial class TracingPolicyReader
{
    private static readonly Dictionary<string, ConnectClass[]> ConnectHooks = new(StringComparer.Ordinal)
    {
        ["tcp_connect"] = [ConnectClass.Tcp],
        ["tcp_v4_connect"] = [ConnectClass.Tcp],
        ["tcp_v6_connect"] = [ConnectClass.Tcp],
        ["udp_sendmsg"] = [ConnectClass.Udp],
        ["security_socket_connect"] = [ConnectClass.Tcp, ConnectClass.Udp],
    };

    private static readonly string[] ConnectSyscalls = ["connect", "sys_connect", "__x64_sys_connect", "__arm64_sys_connect", "__x64_connect"];

    private static readonly string[] Enforcement = ["Sigkill", "Signal", "Override", "NotifyEnforcer", "CleanupEnforcerNotification", "Set"];

    /// <summary>Selectors per class the kernel filter holds (FX_SEL_MAX), ranges per port set, binaries per selector.</summary>
    public const int MaxSelectors = 8;
    public const int MaxPortRanges = 8;
    public const int MaxBinaries = 8;

    public static TracingPolicySet ReadFile(string path, Func<string, string?>? environment = null)
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

    /// <summary>Parses the policies' text; <paramref name="environment"/> defaults to the process environment.</summary>
    public static TracingPolicySet Parse(string yaml, Func<string, string?>? environment = null)
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
        var names = new List<string>();
        var notices = new List<string>();
        var perClass = new Dictionary<ConnectClass, List<ConnectSelector>?>();
        var excluded = new List<IPNetwork>();
        foreach (var doc in documents)
        {
            var at = $"line {doc.RootNode.Start.Line}";
            if (doc.RootNode is not YamlMappingNode root)
                throw new TracingPolicyException($"{at}: a TracingPolicy is a mapping (apiVersion, kind, metadata, spec)");
            var kind = Scalar(root, "kind");
            if (kind == "TracingPolicyNamespaced")
                throw new TracingPolicyException(
                    $"{at}: kind TracingPolicyNamespaced is not supported: connects are not attributed to Kubernetes namespaces, so its scope cannot be honoured (use a TracingPolicy)");
            if (kind != "TracingPolicy")
                throw new TracingPolicyException($"{at}: kind is '{kind}', not TracingPolicy");
            var name = Child(root, "metadata") is YamlMappingNode meta ? Scalar(meta, "name") ?? "" : "";
            names.Add(name);
            if (Child(root, "spec") is not YamlMappingNode spec)
                throw new TracingPolicyException($"{at}: the TracingPolicy {name} has no spec");
            foreach (var key in spec.Children.Keys.OfType<YamlScalarNode>().Select(k => k.Value ?? ""))
            {
                switch (key)
                {
                    case "kprobes":
                        break;
                    case "podSelector" or "containerSelector":
                        throw new TracingPolicyException($"{name}: not supported: spec.{key} (connects are not attributed to pods)");
                    case "tracepoints" or "uprobes" or "lsmhooks" or "usdts" or "enforcers":
                        notices.Add($"TracingPolicy {name}: spec.{key}: not recorded (this recorder records execs, exits and connects)");
                        break;
                    case "lists" or "options" or "loader":
                        break;
                    default:
                        throw new TracingPolicyException($"{name}: spec.{key}: unknown field");
                }
            }
            if (Child(spec, "kprobes") is null)
                continue;
            if (Child(spec, "kprobes") is not YamlSequenceNode kprobes)
                throw new TracingPolicyException($"{name}: spec.kprobes is not a list");
            for (int i = 0; i < kprobes.Children.Count; i++)
            {
                var where = $"{name}: spec.kprobes[{i}]";
                if (kprobes.Children[i] is not YamlMappingNode kp)
                    throw new TracingPolicyException($"{where}: a kprobe is not a mapping (call, syscall, args, selectors)");
                var call = Scalar(kp, "call") ?? throw new TracingPolicyException($"{where}: call: required field is missing");
                bool syscall = Scalar(kp, "syscall") is "true" or "True";
                RefuseEnforcement(kp, where);
                var classes = syscall
                    ? ConnectSyscalls.Contains(call) ? [ConnectClass.Tcp, ConnectClass.Udp] : null
                    : ConnectHooks.GetValueOrDefault(call);
                if (classes is null)
                {
                    notices.Add($"TracingPolicy {name}: kprobe {call}: not recorded (this recorder records connects, not {call})");
                    continue;
                }
                var args = Args(kp, where);
                if (Child(kp, "selectors") is not YamlSequenceNode sels || sels.Children.Count == 0)
                {
                    foreach (var c in classes)
                        perClass[c] = null; // every connect of the class
                    continue;
                }
                for (int j = 0; j < sels.Children.Count; j++)
                {
                    var swhere = $"{where}.selectors[{j}]";
                    if (sels.Children[j] is not YamlMappingNode sel)
                        throw new TracingPolicyException($"{swhere}: a selector is not a mapping (matchArgs, matchBinaries, matchActions, ...)");
                    foreach (var (c, selector) in Selector(sel, args, classes, swhere, excluded))
                    {
                        if (perClass.TryGetValue(c, out var list) && list is null)
                            continue; // already every connect
                        if (!perClass.ContainsKey(c))
                            perClass[c] = list = [];
                        list!.Add(selector);
                        if (list.Count > MaxSelectors)
                            throw new TracingPolicyException(
                                $"{swhere}: more than {MaxSelectors} selectors on {(c == ConnectClass.Tcp ? "TCP" : "UDP")} connects: the in-kernel filter holds {MaxSelectors}");
                    }
                }
            }
        }
        var filters = perClass.OrderBy(kv => kv.Key).Select(kv => new ConnectFilter(kv.Key, kv.Value ?? [])).ToList();
        if (filters.Count == 0)
        {
            notices.Add($"no hook this recorder filters connects on ({string.Join(", ", ConnectHooks.Keys)}, the connect syscall): connects are recorded unfiltered");
        }
        else
        {
            foreach (var c in new[] { ConnectClass.Tcp, ConnectClass.Udp }.Where(c => !perClass.ContainsKey(c)))
                notices.Add($"no policy hooks {(c == ConnectClass.Tcp ? "TCP connects (tcp_connect)" : "UDP sends (udp_sendmsg)")}: they are recorded unfiltered");
        }
        return new TracingPolicySet(names, filters, notices.Distinct().ToList(), excluded.Distinct().ToList());
    }

    /// <summary>A policy that would kill, signal or override is refused, whatever it hooks: a recorder enforces nothing.</summary>
    private static void RefuseEnforcement(YamlMappingNode kp, string where)
    {
        if (Child(kp, "selectors") is not YamlSequenceNode sels)
            return;
        foreach (var sel in sels.Children.OfType<YamlMappingNode>())
            foreach (var key in (string[])["matchActions", "matchReturnActions"])
                if (Child(sel, key) is YamlSequenceNode actions)
                    foreach (var a in actions.Children.OfType<YamlMappingNode>())
                        if (Scalar(a, "action") is { } action && Enforcement.Contains(action, StringComparer.OrdinalIgnoreCase))
                            throw new TracingPolicyException($"{where}: {key} {action}: enforcement actions are not supported: this is a recorder");
    }

    /// <summary>The kprobe's arguments by index: their types (sock, socket, sockaddr, int, ...).</summary>
    private static Dictionary<int, string> Args(YamlMappingNode kp, string where)
    {
        var args = new Dictionary<int, string>();
        if (Child(kp, "args") is not YamlSequenceNode list)
            return args;
        foreach (var a in list.Children)
        {
            if (a is not YamlMappingNode am || !int.TryParse(Scalar(am, "index"), NumberStyles.None, CultureInfo.InvariantCulture, out var idx))
                throw new TracingPolicyException($"{where}.args: an argument is a mapping with an index and a type");
            args[idx] = Scalar(am, "type") ?? "";
        }
        return args;
    }

    /// <summary>One selector: for each class it keeps (a Protocol condition can narrow them), the conditions the kernel applies.</summary>
    private static IEnumerable<(ConnectClass, ConnectSelector)> Selector(YamlMappingNode sel, Dictionary<int, string> args, ConnectClass[] classes,
        string where, List<IPNetwork> excluded)
    {
        var s = new ConnectSelector();
        var keep = classes.ToHashSet();
        foreach (var key in sel.Children.Keys.OfType<YamlScalarNode>().Select(k => k.Value ?? ""))
        {
            switch (key)
            {
                case "matchArgs" or "matchBinaries" or "matchActions":
                    break;
                case "matchPIDs" or "matchNamespaces" or "matchCapabilities" or "matchNamespaceChanges" or "matchCapabilityChanges"
                    or "matchReturnArgs" or "matchReturnActions" or "matchData":
                    throw new TracingPolicyException($"{where}: not supported: {key} (the connect probe filters on addresses, ports, family, protocol and binary)");
                default:
                    throw new TracingPolicyException($"{where}: {key}: unknown field");
            }
        }
        if (Child(sel, "matchActions") is { } actions)
        {
            foreach (var a in Items(actions, $"{where}.matchActions"))
            {
                var action = Scalar(a, "action") ?? "";
                if (Enforcement.Contains(action, StringComparer.OrdinalIgnoreCase))
                    throw new TracingPolicyException($"{where}.matchActions: {action}: enforcement actions are not supported: this is a recorder");
                if (!string.Equals(action, "Post", StringComparison.OrdinalIgnoreCase))
                    throw new TracingPolicyException($"{where}.matchActions: not supported: action {action} (only Post: the event is recorded)");
            }
        }
        if (Child(sel, "matchBinaries") is { } bins)
        {
            foreach (var b in Items(bins, $"{where}.matchBinaries"))
            {
                var op = Scalar(b, "operator") ?? "";
                if (op is not ("In" or "NotIn"))
                    throw new TracingPolicyException($"{where}.matchBinaries: not supported: operator {op} (In and NotIn)");
                if (s.Binaries is not null)
                    throw new TracingPolicyException($"{where}.matchBinaries: not supported: more than one matchBinaries entry in a selector");
                var paths = Values(b, $"{where}.matchBinaries");
                if (paths.Count > MaxBinaries)
                    throw new TracingPolicyException($"{where}.matchBinaries: {paths.Count} binaries: the in-kernel filter holds {MaxBinaries} per selector");
                s = s with { Binaries = new BinarySet(op == "NotIn", paths) };
            }
        }
        if (Child(sel, "matchArgs") is { } margs)
        {
            foreach (var m in Items(margs, $"{where}.matchArgs"))
            {
                var op = Scalar(m, "operator") ?? "";
                var values = Values(m, $"{where}.matchArgs {op}");
                if (!int.TryParse(Scalar(m, "index") ?? "0", NumberStyles.None, CultureInfo.InvariantCulture, out var index) || !args.TryGetValue(index, out var type))
                    throw new TracingPolicyException($"{where}.matchArgs {op}: index {Scalar(m, "index")} is not an argument of the kprobe");
                if (type is not ("sock" or "socket" or "sockaddr" or "skb"))
                    throw new TracingPolicyException($"{where}.matchArgs {op}: not supported: operator {op} on a {type} argument (the connect probe filters on its socket)");
                string Twice() => $"{where}.matchArgs: not supported: {op} twice in a selector";
                switch (op)
                {
                    case "DAddr":
                        s = s.DAddrIn is null ? s with { DAddrIn = Addresses(values, where, op) } : throw new TracingPolicyException(Twice());
                        break;
                    case "NotDAddr":
                        s = s.DAddrNotIn is null ? s with { DAddrNotIn = Addresses(values, where, op) } : throw new TracingPolicyException(Twice());
                        excluded.AddRange(s.DAddrNotIn!);
                        break;
                    case "SAddr":
                        s = s.SAddrIn is null ? s with { SAddrIn = Addresses(values, where, op) } : throw new TracingPolicyException(Twice());
                        break;
                    case "NotSAddr":
                        s = s.SAddrNotIn is null ? s with { SAddrNotIn = Addresses(values, where, op) } : throw new TracingPolicyException(Twice());
                        break;
                    case "DPort" or "NotDPort":
                        s = s.DPort is null ? s with { DPort = Ports(values, op == "NotDPort", where, op) } : throw new TracingPolicyException(Twice());
                        break;
                    case "SPort" or "NotSPort":
                        s = s.SPort is null ? s with { SPort = Ports(values, op == "NotSPort", where, op) } : throw new TracingPolicyException(Twice());
                        break;
                    case "Family":
                        byte fams = 0;
                        foreach (var v in values)
                            fams |= v switch
                            {
                                "AF_INET" or "2" => (byte)1,
                                "AF_INET6" or "10" => (byte)2,
                                _ => throw new TracingPolicyException($"{where}.matchArgs Family: '{v}' is not an address family (AF_INET, AF_INET6)"),
                            };
                        s = s with { Families = (byte)(s.Families == 0 ? fams : s.Families & fams) };
                        break;
                    case "Protocol":
                        var protos = values.Select(v => v switch
                        {
                            "IPPROTO_TCP" or "6" => ConnectClass.Tcp,
                            "IPPROTO_UDP" or "17" => ConnectClass.Udp,
                            _ => throw new TracingPolicyException($"{where}.matchArgs Protocol: not supported: '{v}' (the connect probe sees TCP and UDP)"),
                        }).ToHashSet();
                        keep.IntersectWith(protos);
                        break;
                    case "State":
                        // the connect hooks see a TCP socket in SYN_SENT
                        if (!values.Contains("TCP_SYN_SENT"))
                            keep.Clear();
                        break;
                    default:
                        throw new TracingPolicyException($"{where}.matchArgs: not supported: operator {op} (DAddr, NotDAddr, SAddr, NotSAddr, DPort, NotDPort, SPort, NotSPort, Protocol, Family, State)");
                }
            }
        }
        return keep.Select(c => (c, s));
    }

    private static List<IPNetwork> Addresses(List<string> values, string where, string op)
    {
        var list = new List<IPNetwork>();
        foreach (var v in values)
        {
            if (!Cidrs.TryParse(v, out var net))
                throw new TracingPolicyException($"{op} value '{v}' is not an address or CIDR (as Go's netip parses them)");
            list.Add(Probes.Normalize(net));
        }
        return list;
    }

    [GeneratedRegex("^(?<a>[0-9]{1,5})(:(?<b>[0-9]{1,5}))?$")]
    private static partial Regex PortValue();

    private static PortSet Ports(List<string> values, bool negate, string where, string op)
    {
        var ranges = new List<(int, int)>();
        foreach (var v in values)
        {
            var m = PortValue().Match(v);
            int a = m.Success ? int.Parse(m.Groups["a"].Value, CultureInfo.InvariantCulture) : -1;
            int b = m.Success && m.Groups["b"].Success ? int.Parse(m.Groups["b"].Value, CultureInfo.InvariantCulture) : a;
            if (!m.Success || a > 65535 || b > 65535 || b < a)
                throw new TracingPolicyException($"{where}.matchArgs {op}: '{v}' is not a port or a range (PORT or FIRST:LAST)");
            ranges.Add((a, b));
        }
        if (ranges.Count > MaxPortRanges)
            throw new TracingPolicyException($"{where}.matchArgs {op}: {ranges.Count} ports: the in-kernel filter holds {MaxPortRanges} ranges");
        return new PortSet(negate, ranges);
    }

    private static List<YamlMappingNode> Items(YamlNode node, string where)
    {
        if (node is not YamlSequenceNode seq)
            throw new TracingPolicyException($"{where} is not a list");
        return seq.Children.Select(c => c as YamlMappingNode ?? throw new TracingPolicyException($"line {c.Start.Line}: {where}: an entry is not a mapping")).ToList();
    }

    private static List<string> Values(YamlMappingNode m, string where)
    {
        if (Child(m, "values") is not YamlSequenceNode values)
            throw new TracingPolicyException($"{where}: no values list");
        return values.Children.Select(v => (v as YamlScalarNode)?.Value
            ?? throw new TracingPolicyException($"line {v.Start.Line}: {where}: a value is not a single value")).ToList();
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
