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

    /// <summary>
    /// The workloads of the policy (TracingPolicyNamespaced, podSelector, hostSelector), null for every one: not a kernel
    /// condition; applied in user space to what the kernel reports, once the connect's pod is known.
    /// </summary>
    public WorkloadScope? Scope { get; init; }

    /// <summary>Selects no connect: what a class is filtered by when its hooks' selectors select none of it (a family no connect has).</summary>
    public static ConnectSelector Nothing { get; } = new() { Families = NoFamily };

    /// <summary>The family bit no connect has.</summary>
    public const byte NoFamily = 0x80;

    /// <summary>The same conditions (two hooks of one socket often repeat a selector: the kernel need hold it once).</summary>
    public bool SameAs(ConnectSelector o)
    {
        ArgumentNullException.ThrowIfNull(o);
        static bool Nets(IReadOnlyList<IPNetwork>? a, IReadOnlyList<IPNetwork>? b) => a is null ? b is null : b is not null && a.SequenceEqual(b);
        static bool Ports(PortSet? a, PortSet? b) => a is null ? b is null : b is not null && a.Negate == b.Negate && a.Ranges.SequenceEqual(b.Ranges);
        return Families == o.Families && Equals(Scope?.ToString(), o.Scope?.ToString()) && Nets(DAddrIn, o.DAddrIn) && Nets(DAddrNotIn, o.DAddrNotIn) && Nets(SAddrIn, o.SAddrIn)
            && Nets(SAddrNotIn, o.SAddrNotIn) && Ports(DPort, o.DPort) && Ports(SPort, o.SPort)
            && (Binaries is null ? o.Binaries is null : o.Binaries is not null && Binaries.Negate == o.Binaries.Negate && Binaries.Paths.SequenceEqual(o.Binaries.Paths));
    }
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
    IReadOnlyList<IPNetwork> ExcludedCidrs)
{
    /// <summary>Whether a selector applies to some workloads only (then the recorder checks each reported connect's pod).</summary>
    public bool Scoped => Filters.Any(f => f.Selectors.Any(s => s.Scope is not null));
}

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
/// tcp_v4_connect, tcp_v6_connect (TCP), udp_sendmsg, ip4/ip6_datagram_connect (UDP),
/// security_socket_connect, __sys_connect and the connect syscall (both); tcp_sendmsg
/// and tcp_close select the connect of the socket they would report (said once);
/// matchArgs DAddr, NotDAddr, SAddr, NotSAddr, DPort, NotDPort, SPort, NotSPort,
/// [Not]DPortPriv, [Not]SPortPriv, Protocol, Family, State on their sock, socket
/// and skb arguments (on a sockaddr, SAddr and SPort are the address connected to,
/// as Tetragon reads them), matchBinaries In and NotIn, selectors ORed (Tetragon
/// applies the first that matches: a NoPost selector is read only after the last
/// that posts), conditions ANDed. Other hooks are noted, not recorded; observing
/// actions (FollowFD, TrackSock, GetUrl, ...) are read and not performed;
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
        ["ip4_datagram_connect"] = [ConnectClass.Udp],
        ["ip6_datagram_connect"] = [ConnectClass.Udp],
        ["security_socket_connect"] = [ConnectClass.Tcp, ConnectClass.Udp],
        ["__sys_connect"] = [ConnectClass.Tcp, ConnectClass.Udp],
    };

    /// <summary>
    /// Hooks on a connected socket's later life, which this recorder stands for by the socket's
    /// connect: their selectors select the connects whose sockets they would report.
    /// </summary>
    private static readonly Dictionary<string, (ConnectClass[] Classes, string Maps)> SocketHooks = new(StringComparer.Ordinal)
    {
        ["tcp_sendmsg"] = ([ConnectClass.Tcp], "recorded as the TCP connect of its socket (the bytes it sends are in the recording's flows); sends on accepted sockets are not traced"),
        ["tcp_close"] = ([ConnectClass.Tcp], "recorded as the TCP connect of its socket (the connection's end is in the recording's flows); closes of accepted sockets are not traced"),
    };

    private static readonly string[] ConnectSyscalls = ["connect", "sys_connect", "__x64_sys_connect", "__arm64_sys_connect", "__x64_connect"];

    private static readonly string[] Enforcement = ["Sigkill", "Signal", "Override", "NotifyEnforcer", "CleanupEnforcerNotification", "Set"];

    /// <summary>Actions that change nothing in the traced process: Tetragon still posts the event; this recorder performs none of them.</summary>
    private static readonly string[] Observing = ["FollowFD", "UnfollowFD", "CopyFD", "TrackSock", "UntrackSock", "GetUrl", "DnsLookup"];

    /// <summary>Selectors per class the kernel filter holds (FX_SEL_MAX), ranges per port set, binaries per selector.</summary>
    public const int MaxSelectors = 8;

    /// <summary>Tetragon's limit on one kprobe's selectors (pkg/selectors MaxSelectors): it refuses a policy with more.</summary>
    public const int TetragonMaxSelectors = 5;
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
            if (kind is not ("TracingPolicy" or "TracingPolicyNamespaced"))
                throw new TracingPolicyException($"{at}: kind is '{kind}', not TracingPolicy or TracingPolicyNamespaced");
            var meta = Child(root, "metadata") as YamlMappingNode;
            var name = meta is null ? "" : Scalar(meta, "name") ?? "";
            names.Add(name);
            if (Child(root, "spec") is not YamlMappingNode spec)
                throw new TracingPolicyException($"{at}: the {kind} {name} has no spec");
            string? policyNamespace = null;
            if (kind == "TracingPolicyNamespaced")
            {
                policyNamespace = meta is null ? null : Scalar(meta, "namespace");
                if (string.IsNullOrEmpty(policyNamespace))
                {
                    policyNamespace = "default";
                    notices.Add($"TracingPolicyNamespaced {name}: no metadata.namespace: namespace default (as kubectl applies it without -n)");
                }
            }
            LabelSelector? pods = null;
            bool host = false;
            foreach (var key in spec.Children.Keys.OfType<YamlScalarNode>().Select(k => k.Value ?? ""))
            {
                switch (key)
                {
                    case "kprobes":
                        break;
                    case "podSelector":
                        pods = ReadLabelSelector(Child(spec, key)!, $"{name}: spec.podSelector");
                        break;
                    case "hostSelector":
                        if (IsNull(Child(spec, key)!))
                            break;
                        if (Child(spec, key) is not YamlMappingNode { Children.Count: 0 })
                            throw new TracingPolicyException($"{name}: spec.hostSelector: only {{}} (every host process) or null is supported, as Tetragon supports them");
                        if (policyNamespace is not null)
                            throw new TracingPolicyException($"{name}: spec.hostSelector: a TracingPolicyNamespaced applies to pods of its namespace only (as Tetragon refuses it)");
                        host = true;
                        break;
                    case "nodeSelector":
                        notices.Add($"TracingPolicy {name}: spec.nodeSelector: not applied (a policy from a file is loaded on this node, as Tetragon loads one from a file)");
                        break;
                    case "containerSelector":
                        throw new TracingPolicyException($"{name}: not supported: spec.containerSelector (connects are attributed to pods, not filtered by container)");
                    case "tracepoints" or "uprobes" or "lsmhooks" or "usdts" or "enforcers":
                        notices.Add($"TracingPolicy {name}: spec.{key}: not recorded (this recorder records execs, exits and connects)");
                        break;
                    case "lists" or "options" or "loader":
                        break;
                    default:
                        throw new TracingPolicyException($"{name}: spec.{key}: unknown field");
                }
            }
            var scope = policyNamespace is null && pods is null && !host ? null : new WorkloadScope(policyNamespace, pods, host);
            if (scope is not null && Child(spec, "kprobes") is not null)
                notices.Add($"{kind} {name} applies to {scope}: applied in user space after attribution (the kernel reports what its selectors select; " +
                    "a connect by a process outside these workloads is counted as filtered, not recorded)");
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
                string? socketLife = null;
                if (classes is null && !syscall && SocketHooks.TryGetValue(call, out var life))
                {
                    (classes, socketLife) = (life.Classes, call);
                    notices.Add($"kprobe {call}: {life.Maps}");
                }
                if (classes is null)
                {
                    notices.Add($"TracingPolicy {name}: kprobe {call}: not recorded (this recorder records connects, not {call})");
                    continue;
                }
                var args = Args(kp, where);
                if (Child(kp, "selectors") is not YamlSequenceNode sels || sels.Children.Count == 0)
                {
                    foreach (var c in classes)
                    {
                        if (scope is null)
                            perClass[c] = null; // every connect of the class
                        else if (!perClass.TryGetValue(c, out var some) || some is not null)
                        {
                            var all = new ConnectSelector { Scope = scope }; // every connect of the class, of these workloads
                            perClass[c] = some is not null && some.Any(all.SameAs) ? some : [.. some ?? [], all];
                            if (perClass[c]!.Count > MaxSelectors)
                                throw new TracingPolicyException(
                                    $"{where}: more than {MaxSelectors} selectors on {(c == ConnectClass.Tcp ? "TCP" : "UDP")} connects: the in-kernel filter holds {MaxSelectors}");
                        }
                    }
                    continue;
                }
                if (sels.Children.Count > TetragonMaxSelectors)
                    throw new TracingPolicyException(
                        $"{where}.selectors: no more than {TetragonMaxSelectors} selectors supported ({sels.Children.Count} provided), as Tetragon refuses it");
                var selectorNodes = new List<YamlMappingNode>();
                for (int j = 0; j < sels.Children.Count; j++)
                    selectorNodes.Add(sels.Children[j] as YamlMappingNode
                        ?? throw new TracingPolicyException($"{where}.selectors[{j}]: a selector is not a mapping (matchArgs, matchBinaries, matchActions, ...)"));
                // Tetragon applies the first selector that matches: one with NoPost reports nothing, so it only
                // changes what is reported when a selector that posts comes after it
                int lastPosting = selectorNodes.FindLastIndex(n => !HasAction(n, "NoPost"));
                foreach (var c in classes)
                    if (!perClass.TryGetValue(c, out var existing) || existing is not null)
                        perClass[c] = existing ?? [];
                for (int j = 0; j < selectorNodes.Count; j++)
                {
                    var swhere = $"{where}.selectors[{j}]";
                    var sel = selectorNodes[j];
                    if (HasAction(sel, "NoPost"))
                    {
                        if (j < lastPosting)
                            throw new TracingPolicyException(
                                $"{swhere}.matchActions: not supported: NoPost before a selector that posts (the in-kernel filter selects connects, it cannot set some aside first)");
                        notices.Add($"TracingPolicy {name}: kprobe {call}: a selector with NoPost reports nothing: what only it selects is not recorded");
                        continue;
                    }
                    foreach (var (c, unscoped) in Selector(sel, args, classes, swhere, excluded, socketLife, notices, name))
                    {
                        var selector = unscoped with { Scope = scope };
                        var list = perClass[c];
                        if (list is null || list.Any(selector.SameAs))
                            continue; // already every connect, or this selector
                        list.Add(selector);
                        if (list.Count > MaxSelectors)
                            throw new TracingPolicyException(
                                $"{swhere}: more than {MaxSelectors} selectors on {(c == ConnectClass.Tcp ? "TCP" : "UDP")} connects: the in-kernel filter holds {MaxSelectors}");
                    }
                }
            }
        }
        var filters = perClass.OrderBy(kv => kv.Key).Select(kv => new ConnectFilter(kv.Key,
            kv.Value is null ? [] : kv.Value.Count == 0 ? [ConnectSelector.Nothing] : kv.Value)).ToList();
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

    private static bool HasAction(YamlMappingNode sel, string action) =>
        Child(sel, "matchActions") is YamlSequenceNode actions
        && actions.Children.OfType<YamlMappingNode>().Any(a => string.Equals(Scalar(a, "action"), action, StringComparison.OrdinalIgnoreCase));

    /// <summary>
    /// One selector: for each class it keeps (a Protocol condition can narrow them), the conditions the kernel applies.
    /// A sockaddr argument is the address the call names (for a connect, the destination): Tetragon reads it with
    /// SAddr and SPort, and refuses DAddr, DPort, Protocol and State on it.
    /// </summary>
    private static IEnumerable<(ConnectClass, ConnectSelector)> Selector(YamlMappingNode sel, Dictionary<int, string> args, ConnectClass[] classes,
        string where, List<IPNetwork> excluded, string? socketLife, List<string> notices, string policy)
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
                if (string.Equals(action, "Post", StringComparison.OrdinalIgnoreCase))
                {
                    if (Child(a, "rateLimit") is not null)
                        notices.Add($"TracingPolicy {policy}: Post rateLimit is not applied: every selected connect is recorded (once per socket and destination for UDP sends)");
                    continue;
                }
                if (Observing.FirstOrDefault(o => string.Equals(o, action, StringComparison.OrdinalIgnoreCase)) is { } observing)
                {
                    notices.Add($"TracingPolicy {policy}: action {observing}: not performed (this recorder records the connect and performs no action)");
                    continue;
                }
                throw new TracingPolicyException($"{where}.matchActions: not supported: action {action} (Post, NoPost, {string.Join(", ", Observing)})");
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
                bool priv = op is "SPortPriv" or "NotSPortPriv" or "DPortPriv" or "NotDPortPriv";
                var values = priv ? [] : Values(m, $"{where}.matchArgs {op}");
                if (!int.TryParse(Scalar(m, "index") ?? "0", NumberStyles.None, CultureInfo.InvariantCulture, out var index) || !args.TryGetValue(index, out var type))
                    throw new TracingPolicyException($"{where}.matchArgs {op}: index {Scalar(m, "index")} is not an argument of the kprobe");
                if (type is not ("sock" or "socket" or "sockaddr" or "skb"))
                    throw new TracingPolicyException($"{where}.matchArgs {op}: not supported: operator {op} on a {type} argument (the connect probe filters on its socket)");
                if (type == "sockaddr")
                {
                    // the address a connect names is its destination (as Tetragon's validation says: "sockaddr only supports [not]saddr, [not]sport[priv], and family")
                    op = op switch
                    {
                        "SAddr" => "DAddr",
                        "NotSAddr" => "NotDAddr",
                        "SPort" => "DPort",
                        "NotSPort" => "NotDPort",
                        "SPortPriv" => "DPortPriv",
                        "NotSPortPriv" => "NotDPortPriv",
                        "Family" => "Family",
                        _ => throw new TracingPolicyException($"{where}.matchArgs {op}: sockaddr only supports [not]saddr, [not]sport[priv], and family (as Tetragon refuses it)"),
                    };
                }
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
                    case "DPortPriv" or "NotDPortPriv":
                        s = s.DPort is null ? s with { DPort = new PortSet(op == "NotDPortPriv", [(0, 1023)]) } : throw new TracingPolicyException(Twice());
                        break;
                    case "SPortPriv" or "NotSPortPriv":
                        s = s.SPort is null ? s with { SPort = new PortSet(op == "NotSPortPriv", [(0, 1023)]) } : throw new TracingPolicyException(Twice());
                        break;
                    case "Family":
                        byte fams = 0;
                        foreach (var v in values)
                            fams |= v switch
                            {
                                "AF_INET" or "2" => (byte)1,
                                "AF_INET6" or "10" => (byte)2,
                                "AF_UNIX" or "AF_LOCAL" or "1" => (byte)0, // a connect this probe sees is IPv4 or IPv6
                                _ => throw new TracingPolicyException($"{where}.matchArgs Family: '{v}' is not an address family (AF_INET, AF_INET6, AF_UNIX)"),
                            };
                        fams = (byte)(s.Families == 0 ? fams : s.Families & fams);
                        if (fams == 0)
                            keep.Clear(); // no family the probe sees: the selector selects no connect
                        s = s with { Families = fams };
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
                        if (socketLife is not null)
                            throw new TracingPolicyException(
                                $"{where}.matchArgs State: not supported on {socketLife} (this recorder sees the socket as it connects, in TCP_SYN_SENT)");
                        // the connect hooks see a TCP socket in SYN_SENT; a UDP socket is ESTABLISHED once connected, CLOSE when
                        // it sends unconnected, which the class's filter does not tell apart
                        if (keep.Contains(ConnectClass.Udp) && values.Any(v => v is "TCP_ESTABLISHED" or "1" or "TCP_CLOSE" or "7"))
                            throw new TracingPolicyException(
                                $"{where}.matchArgs State: not supported on UDP sockets (the filter does not tell connected from unconnected sends)");
                        keep.Remove(ConnectClass.Udp);
                        if (!values.Contains("TCP_SYN_SENT") && !values.Contains("2"))
                            keep.Clear();
                        break;
                    default:
                        throw new TracingPolicyException($"{where}.matchArgs: not supported: operator {op} (DAddr, NotDAddr, SAddr, NotSAddr, DPort, NotDPort, SPort, NotSPort, [Not]SPortPriv, [Not]DPortPriv, Protocol, Family, State)");
                }
            }
        }
        return keep.Select(c => (c, s));
    }

    /// <summary>matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist), as Kubernetes' LabelSelector.</summary>
    private static LabelSelector ReadLabelSelector(YamlNode node, string where)
    {
        if (IsNull(node))
            return new LabelSelector([]);
        if (node is not YamlMappingNode m)
            throw new TracingPolicyException($"{where}: a label selector is a mapping (matchLabels, matchExpressions)");
        var reqs = new List<LabelRequirement>();
        foreach (var key in m.Children.Keys.OfType<YamlScalarNode>().Select(k => k.Value ?? ""))
        {
            switch (key)
            {
                case "matchLabels":
                    if (IsNull(m.Children[key]))
                        break;
                    if (m.Children[key] is not YamlMappingNode labels)
                        throw new TracingPolicyException($"{where}.matchLabels: a mapping of label to value");
                    foreach (var (k, v) in labels.Children)
                        reqs.Add(new LabelRequirement((k as YamlScalarNode)?.Value ?? "", "In",
                            [(v as YamlScalarNode)?.Value ?? throw new TracingPolicyException($"line {v.Start.Line}: {where}.matchLabels: a value is not a single value")]));
                    break;
                case "matchExpressions":
                    if (IsNull(m.Children[key]))
                        break;
                    foreach (var e in Items(m.Children[key], $"{where}.matchExpressions"))
                    {
                        var op = Scalar(e, "operator") ?? "";
                        if (op is not ("In" or "NotIn" or "Exists" or "DoesNotExist"))
                            throw new TracingPolicyException($"{where}.matchExpressions: operator '{op}' (In, NotIn, Exists, DoesNotExist)");
                        var values = Child(e, "values") is null ? [] : Values(e, $"{where}.matchExpressions");
                        if (op is "In" or "NotIn" && values.Count == 0)
                            throw new TracingPolicyException($"{where}.matchExpressions: operator {op} needs values");
                        reqs.Add(new LabelRequirement(Scalar(e, "key") ?? throw new TracingPolicyException($"{where}.matchExpressions: key: required field is missing"), op, values));
                    }
                    break;
                default:
                    throw new TracingPolicyException($"{where}.{key}: unknown field");
            }
        }
        return new LabelSelector(reqs);
    }

    private static List<IPNetwork> Addresses(List<string> values, string where, string op)
    {
        var list = new List<IPNetwork>();
        foreach (var v in values)
        {
            if (!Cidrs.TryParse(v, out var net))
                throw new TracingPolicyException($"{op} value '{v}' is not an address or CIDR (as Go's netip parses them)");
            list.Add(TracingProbes.Normalize(net));
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
