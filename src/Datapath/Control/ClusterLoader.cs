using System.Net;
using System.Text.RegularExpressions;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;
using static Forensics.Datapath.Control.ObjectFields;

namespace Forensics.Datapath.Control;

/// <summary>
/// Loads Kubernetes-shaped multi-document YAML (Pod, Service, CiliumNetworkPolicy
/// cilium.io/v2, and our own Lab forensics.dev/v1) into a <see cref="ClusterSpec"/>.
/// Everything is validated before anything is returned: the first problem throws a
/// <see cref="ClusterSpecException"/> whose message is one line naming the file, the
/// line, the document (index, kind and name) and the field.
///
/// Each kind of document is read on its own (Loader/*Document.cs: what one document
/// says); this class splits the stream into documents, dispatches them by kind, and
/// then checks and completes what they say together (duplicates, addresses assigned
/// from the Lab's CIDRs, selectors that select nothing, the Lab's steps).
/// </summary>
public static partial class ClusterLoader
{
    public const string LabApiVersion = "forensics.dev/v1";
    public const string NamespaceLabel = "k8s:io.kubernetes.pod.namespace";

    /// <summary>The entities a policy may name (those the datapath implements).</summary>
    public static IReadOnlyList<string> Entities => PolicyDocument.Entities;

    public static ClusterSpec LoadFile(string path, ClusterLimits? limits = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        limits ??= ClusterLimits.Default;
        string text;
        try
        {
            text = Files.ReadRegularText(path, limits.MaxFileBytes);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ClusterSpecException($"{path}: cannot read: {e.Message}");
        }
        return Load(text, path, limits);
    }

    /// <summary>
    /// Loads the documents of a file; a Lab document's spec.include names more files
    /// (relative to this one: unmodified manifests beside a lab, as kubectl apply -f
    /// takes several), loaded after it.
    /// </summary>
    public static ClusterSpec Load(string text, string sourceFile, ClusterLimits? limits = null)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(sourceFile);
        limits ??= ClusterLimits.Default;
        var b = new Builder(sourceFile, limits);
        b.AddText(text, sourceFile);
        foreach (var (at, include) in b.Includes)
        {
            var path = Path.Combine(Path.GetDirectoryName(sourceFile) ?? "", include);
            string included;
            try
            {
                included = Files.ReadRegularText(path, limits.MaxFileBytes);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw at.Error($"cannot read {path}: {e.Message}");
            }
            b.AddText(included, path);
        }
        return b.Build();
    }

    /// <summary>A document's text without the separator and comments that follow it.</summary>
    private static string DocText(string text)
    {
        var lines = text.Split('\n').ToList();
        while (lines.Count > 0 && (lines[^1].Trim().Length == 0 || lines[^1].TrimEnd() is "---" or "..." || lines[^1].TrimStart().StartsWith('#')))
            lines.RemoveAt(lines.Count - 1);
        return string.Join('\n', lines) + "\n";
    }

    [GeneratedRegex(@"^\(Line: \d+, Col: \d+, Idx: \d+\) - \(Line: \d+, Col: \d+, Idx: \d+\): ")]
    private static partial Regex LocationPrefix();

    /// <summary>Whether a selector selects a pod: matched against the pod's identity labels, as Cilium matches it.</summary>
    public static bool Matches(EndpointSelector selector, PodSpec pod)
    {
        ArgumentNullException.ThrowIfNull(selector);
        ArgumentNullException.ThrowIfNull(pod);
        return PolicyCompiler.Selects(selector, IdentityAllocator.PodLabels(pod), null);
    }

    /// <summary>The label key without its k8s:/any: source; null for sources pods never carry (reserved:, cidr:...).</summary>
    internal static string? StripSource(string key)
    {
        int colon = key.IndexOf(':', StringComparison.Ordinal);
        if (colon < 0)
            return key;
        var source = key[..colon];
        return source is "k8s" or "any" ? key[(colon + 1)..] : null;
    }

    private sealed class Builder(string file, ClusterLimits limits)
    {
        /// <summary>Every document of one file (a kind List's items each on their own).</summary>
        public void AddText(string text, string sourceFile)
        {
            var stream = new YamlStream();
            try
            {
                // Before the tree is built (recursively, by YamlDotNet): nesting and alias expansion bounded.
                YamlLimits.Check(text, sourceFile, limits);
                stream.Load(new StringReader(text));
            }
            catch (YamlException e)
            {
                var msg = LocationPrefix().Replace(e.InnerException is YamlException inner ? inner.Message : e.Message, "");
                if (e.InnerException is ArgumentException)
                    msg = "duplicate key";
                throw new ClusterSpecException(
                    $"{sourceFile}:{e.Start.Line}: document {stream.Documents.Count + 1}: malformed YAML at column {e.Start.Column}: {msg.ReplaceLineEndings(" ")}");
            }
            for (int i = 0; i < stream.Documents.Count; i++)
            {
                var root = stream.Documents[i].RootNode;
                var doc = new DocRef(sourceFile, i + 1);
                var node = new Node(doc, root, "");
                if (node.IsNull)
                    continue; // an empty document (e.g. a trailing ---)
                long end = i + 1 < stream.Documents.Count ? stream.Documents[i + 1].RootNode.Start.Index : text.Length;
                var src = end > root.Start.Index && end <= text.Length ? DocText(text[(int)root.Start.Index..(int)end]) : "";
                if (root is YamlMappingNode && node.Get("kind") is { } k && k.Yaml is YamlScalarNode { Value: "List" })
                {
                    // kubectl get -o yaml: kind List with items, each an object of its own.
                    doc.Kind = "List";
                    node.Strict("apiVersion", "kind", "metadata", "items");
                    if (node.Require("apiVersion").String() != "v1")
                        throw node.Require("apiVersion").Error("a List's apiVersion is v1");
                    var items = node.Get("items")?.Items() ?? [];
                    for (int j = 0; j < items.Count; j++)
                        Document(new Node(new DocRef(sourceFile, i + 1, j), items[j].Yaml, ""), src);
                    continue;
                }
                Document(node, src);
            }
        }

        /// <summary>The files the Lab document includes (spec.include), relative to its own.</summary>
        public IReadOnlyList<(Node At, string Path)> Includes => lab?.Include ?? [];

        private readonly List<RawPod> pods = [];
        private readonly List<RawService> services = [];
        private readonly List<RawEndpoints> endpoints = [];
        private readonly List<RawPolicy> policies = [];
        private readonly List<(Node At, string Name, Dictionary<string, string> Labels)> namespaces = [];
        private readonly List<(Node At, string Name, string Namespace)> serviceAccounts = [];
        private readonly List<string> notices = [];
        private readonly HashSet<string> noticed = new(StringComparer.Ordinal);
        private readonly Dictionary<string, (string Text, int Index)> seen = new(StringComparer.Ordinal);
        private RawLab? lab;

        public void Document(Node root, string sourceText)
        {
            root.Mapping();
            var kind = root.Require("kind").String();
            root.Doc.Kind = kind;
            bool clusterScoped = kind is "Lab" or "Namespace" or "CiliumClusterwideNetworkPolicy";
            if (root.Get("metadata") is { } meta && meta.Yaml is YamlMappingNode && meta.Get("name") is { } n)
                root.Doc.Name = (clusterScoped ? "" : (meta.Get("namespace") is { } ns ? ns.Scalar() : "default") + "/") + n.Scalar();
            // the same object twice, word for word (kubectl apply applies it twice: the second changes nothing)
            if (root.Doc.Name.Length > 0 && sourceText.Length > 0)
            {
                var key = $"{kind} {root.Doc.Name}";
                if (seen.TryGetValue(key, out var first) && first.Text == sourceText)
                {
                    notices.Add($"{root.Doc.File}: {root.Doc}: the same as document {first.Index}: read once");
                    return;
                }
                seen.TryAdd(key, (sourceText, root.Doc.Index));
            }
            var api = root.Require("apiVersion").String();
            string? expectedApi = kind switch
            {
                "Pod" or "Service" or "Namespace" or "ServiceAccount" or "Endpoints" => "v1",
                "EndpointSlice" => "discovery.k8s.io/v1",
                "CiliumNetworkPolicy" or "CiliumClusterwideNetworkPolicy" => "cilium.io/v2",
                "Lab" => LabApiVersion,
                _ => WorkloadDocument.ApiVersions.GetValueOrDefault(kind),
            };
            if (expectedApi is null)
            {
                if (api == LabApiVersion)
                    throw root.Get("kind")!.Value.Error($"kind '{kind}' is not a kind of {LabApiVersion} (Lab)");
                // a kind the lab does not model (ConfigMap, Secret, Ingress, ...): said once, not an error
                notices.Add($"{root.Doc.File}: {root.Doc}: skipped: the lab does not model {kind} ({api})");
                return;
            }
            if (api != expectedApi)
                throw root.Get("apiVersion")!.Value.Error($"'{api}' is not the apiVersion of {kind} ({expectedApi})");
            switch (kind)
            {
                case "Pod":
                    root.Strict("apiVersion", "kind", "metadata", "spec", "status");
                    pods.Add(PodDocument.Read(root));
                    break;
                case "Service":
                    root.Strict("apiVersion", "kind", "metadata", "spec", "status");
                    services.Add(ServiceDocument.Read(root));
                    break;
                case "Endpoints" or "EndpointSlice":
                    endpoints.Add(ServiceDocument.ReadEndpoints(root, kind));
                    break;
                case "Namespace":
                {
                    root.Strict("apiVersion", "kind", "metadata", "spec", "status");
                    var (name, _, labels) = Meta(root, namespaced: false);
                    if (name.Contains('.', StringComparison.Ordinal) || name.Length > 63)
                        throw root.Require("metadata").Require("name").Error($"'{name}' is not a valid namespace name (a DNS label)");
                    namespaces.Add((root, name, labels));
                    break;
                }
                case "ServiceAccount":
                {
                    root.Strict("apiVersion", "kind", "metadata", "secrets", "imagePullSecrets", "automountServiceAccountToken");
                    var (name, ns, _) = Meta(root);
                    serviceAccounts.Add((root, name, ns));
                    break;
                }
                case "CiliumNetworkPolicy" or "CiliumClusterwideNetworkPolicy":
                    root.Strict("apiVersion", "kind", "metadata", "spec", "specs", "status");
                    foreach (var p in PolicyDocument.Read(root, sourceText, kind))
                    {
                        policies.Add(p);
                        foreach (var (key, text) in p.Notices)
                            if (noticed.Add(key))
                                notices.Add(text);
                    }
                    break;
                case "Lab":
                    root.Strict("apiVersion", "kind", "metadata", "spec");
                    lab = LabDocument.Read(root, lab);
                    break;
                default:
                    root.Strict("apiVersion", "kind", "metadata", "spec", "status");
                    pods.AddRange(WorkloadDocument.Read(root, kind));
                    break;
            }
        }

        public ClusterSpec Build()
        {
            if (pods.Count > limits.MaxPods)
                throw pods[limits.MaxPods].At.Error($"more than {limits.MaxPods} pods (--max-pods raises the limit)");

            // Namespaces and service accounts: what pods carry into their identity.
            foreach (var g in namespaces.GroupBy(n => n.Name).Where(g => g.Count() > 1))
                throw g.Skip(1).First().At.Require("metadata").Require("name").Error($"duplicate Namespace {g.Key}");
            foreach (var g in serviceAccounts.GroupBy(a => $"{a.Namespace}/{a.Name}").Where(g => g.Count() > 1))
                throw g.Skip(1).First().At.Require("metadata").Require("name").Error($"duplicate ServiceAccount {g.Key}");
            var nsLabels = namespaces.ToDictionary(n => n.Name, n => (IReadOnlyDictionary<string, string>)n.Labels, StringComparer.Ordinal);
            for (int i = 0; i < pods.Count; i++)
            {
                var p = pods[i];
                if (p.Pod.ServiceAccount != "default" && !serviceAccounts.Any(a => a.Name == p.Pod.ServiceAccount && a.Namespace == p.Pod.Namespace))
                    throw (p.ServiceAccountNode ?? p.At).Error($"no ServiceAccount '{p.Pod.ServiceAccount}' in namespace {p.Pod.Namespace} (Kubernetes would not admit the pod)");
                if (nsLabels.TryGetValue(p.Pod.Namespace, out var labels))
                    pods[i] = p with { Pod = p.Pod with { NamespaceLabels = labels } };
            }

            // Duplicates.
            foreach (var g in pods.GroupBy(p => p.Pod.FullName).Where(g => g.Count() > 1))
                throw g.Skip(1).First().At.Require("metadata").Require("name").Error($"duplicate Pod {g.Key} (first in document {g.First().Doc.Index})");
            foreach (var g in services.GroupBy(s => $"{s.Namespace}/{s.Name}").Where(g => g.Count() > 1))
                throw g.Skip(1).First().At.Require("metadata").Require("name").Error($"duplicate Service {g.Key} (first in document {g.First().Doc.Index})");
            foreach (var g in policies.GroupBy(p => $"{p.Policy.Kind} {p.Policy.FullName}").Where(g => g.Count() > 1))
                throw g.Skip(1).First().At.Error($"duplicate {g.Key} (first in document {g.First().Doc.Index})");

            // Pod addresses: given ones checked, missing ones assigned from the pod CIDR in document order.
            var used = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var p in pods.Where(p => p.Pod.Ip is not null))
            {
                var ip = p.Pod.Ip!;
                if (lab is not null && !lab.PodCidr.Contains(ip))
                    throw p.IpNode!.Value.Error($"{ip} is outside the lab's pod CIDR {lab.PodCidr}");
                if (lab is not null && (ip.Equals(lab.PodCidr.BaseAddress) || ip.Equals(Last(lab.PodCidr))))
                    throw p.IpNode!.Value.Error($"{ip} is the network or broadcast address of {lab.PodCidr}");
                if (used.TryGetValue(ip.ToString(), out var other))
                    throw p.IpNode!.Value.Error($"{ip} is already the address of {other}");
                used[ip.ToString()] = "Pod " + p.Pod.FullName;
            }
            var finalPods = new List<PodSpec>();
            foreach (var p in pods)
            {
                var pod = p.Pod;
                if (pod.Ip is null)
                {
                    if (lab is null)
                        throw p.At.Error("status.podIP: missing, and there is no Lab document with a podCIDR to assign it from");
                    var ip = NextFree(lab.PodCidr, used) ?? throw p.At.Error($"status.podIP: the pod CIDR {lab.PodCidr} is full");
                    used[ip.ToString()] = "Pod " + pod.FullName;
                    pod = pod with { Ip = ip };
                }
                finalPods.Add(pod);
            }

            // Services: cluster IPs given are checked, missing ones assigned from the service CIDR in
            // document order (none for a headless or an ExternalName service); node ports likewise
            // from Kubernetes' range; a LoadBalancer without an address takes one from the Lab's pool.
            foreach (var s in services.Where(s => s.ClusterIp is not null))
            {
                var ip = s.ClusterIp!;
                if (lab is not null && !lab.ServiceCidr.Contains(ip))
                    throw s.IpNode!.Value.Error($"{ip} is outside the lab's service CIDR {lab.ServiceCidr}");
                if (used.TryGetValue(ip.ToString(), out var other))
                    throw s.IpNode!.Value.Error($"{ip} is already the address of {other}");
                used[ip.ToString()] = $"Service {s.Namespace}/{s.Name}";
            }
            var nodePorts = new Dictionary<(int, string), string>();
            foreach (var s in services)
                foreach (var sp in s.Ports.Where(p => p.NodePort != 0))
                    if (!nodePorts.TryAdd((sp.NodePort, sp.Protocol), $"{s.Namespace}/{s.Name}"))
                        throw sp.NodePortNode!.Value.Error($"provided port is already allocated (to Service {nodePorts[(sp.NodePort, sp.Protocol)]})");
            var external = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var s in services)
                foreach (var (at, ip) in s.ExternalIps.Concat(s.LoadBalancerIps))
                {
                    if (lab is not null && (lab.PodCidr.Contains(ip) || lab.ServiceCidr.Contains(ip) || ip.Equals(lab.NodeIp)))
                        throw at.Error($"{ip} is inside the pod or service CIDR, or the node's address");
                    if (used.TryGetValue(ip.ToString(), out var other))
                        throw at.Error($"{ip} is already the address of {other}");
                    external.TryAdd(ip.ToString(), $"Service {s.Namespace}/{s.Name}");
                }
            foreach (var e in endpoints)
                if (!services.Any(s => s.Name == e.Service && s.Namespace == e.Namespace))
                    notices.Add(e.At.Error($"no Service {e.Namespace}/{e.Service} for these endpoints: skipped").Message);
            var finalServices = new List<ServiceSpec>();
            foreach (var s in services)
            {
                var ip = s.ClusterIp;
                if (ip is null && !s.Headless)
                {
                    if (lab is null)
                        throw s.At.Error("spec.clusterIP: missing, and there is no Lab document with a serviceCIDR to assign it from");
                    ip = NextFree(lab.ServiceCidr, used) ?? throw s.At.Error($"spec.clusterIP: the service CIDR {lab.ServiceCidr} is full");
                    used[ip.ToString()] = $"Service {s.Namespace}/{s.Name}";
                }
                // A selector that matches no Pod is valid (a deployment scaled to zero): the service
                // loads without backends and its traffic is dropped as Cilium drops it (158).
                var ports = new List<ServicePort>();
                foreach (var sp in s.Ports)
                {
                    int nodePort = sp.NodePort;
                    if (nodePort == 0 && s.Type is "NodePort" or "LoadBalancer")
                    {
                        nodePort = Enumerable.Range(ServiceDocument.NodePortMin, ServiceDocument.NodePortMax - ServiceDocument.NodePortMin + 1)
                            .First(n => !nodePorts.ContainsKey((n, sp.Protocol)));
                        nodePorts[(nodePort, sp.Protocol)] = $"{s.Namespace}/{s.Name}";
                    }
                    ports.Add(new ServicePort(sp.Port, sp.TargetName is null ? sp.TargetPort : 0, sp.Protocol, sp.Name, sp.TargetName) { NodePort = nodePort });
                }
                var lbIps = s.LoadBalancerIps.Select(l => l.Ip).ToList();
                if (s.Type == "LoadBalancer" && lbIps.Count == 0)
                {
                    if (lab?.LoadBalancerPool is { } pool && NextFree(pool, used, external) is { } lbIp)
                    {
                        lbIps.Add(lbIp);
                        external[lbIp.ToString()] = $"Service {s.Namespace}/{s.Name}";
                    }
                    else
                        notices.Add(s.At.Error(lab?.LoadBalancerPool is null
                            ? "status.loadBalancer: no address, and the Lab has no loadBalancerPool: pending, as in a cluster without a load balancer controller (the node ports work)"
                            : $"status.loadBalancer: the Lab's loadBalancerPool {lab.LoadBalancerPool} is full: pending").Message);
                }
                var eps = endpoints.Where(e => e.Service == s.Name && e.Namespace == s.Namespace).ToList();
                if (eps.Count > 0 && s.Selector.Count > 0)
                    notices.Add(eps[0].At.Error($"Service {s.Namespace}/{s.Name} has a selector: its endpoints come from its pods, these are ignored (as Kubernetes' endpoints controller overwrites them)").Message);
                finalServices.Add(new ServiceSpec(s.Name, s.Namespace, ip, s.Selector, ports)
                {
                    Type = s.Type,
                    ExternalName = s.ExternalName,
                    Labels = s.Labels,
                    ExternalIps = [.. s.ExternalIps.Select(e => e.Ip)],
                    LoadBalancerIps = lbIps,
                    AffinityTimeoutSeconds = s.AffinityTimeoutSeconds,
                    Endpoints = s.Selector.Count > 0 ? [] : [.. eps.SelectMany(e => e.Addresses).Distinct()],
                    EndpointPorts = eps.SelectMany(e => e.Ports).GroupBy(kv => kv.Key).ToDictionary(g => g.Key, g => g.First().Value, StringComparer.Ordinal),
                });
            }

            // Policies: a selector that selects no pod is valid (Cilium enforces nothing for it), but
            // in a lab it is most often a typo: said once per selector.
            foreach (var p in policies)
            {
                foreach (var (at, sel, subject) in p.Selectors)
                {
                    if (sel.MatchLabels.Keys.Concat(sel.MatchExpressions.Select(r => r.Key)).Any(k => PolicyCompiler.SplitKey(k).Source == "reserved"))
                        continue; // reserved labels select no pod, nothing to say
                    if (!finalPods.Any(pod => Matches(sel, pod)))
                        notices.Add(at.Doc.Error(at.Yaml, at.Path, $"{(subject ? "endpointSelector" : "selector")} selects no Pod ({Show(sel)})").Message);
                }
            }

            // Host policies: a nodeSelector the lab's node does not match makes no host endpoint (valid, as for a node
            // Cilium has not labelled yet), most often a label missing from spec.nodeLabels: said once per policy.
            if (lab is not null)
                foreach (var p in policies.Where(p => p.Policy.SelectsNodes && !PolicyCompiler.SelectsNode(p.Policy, lab.NodeLabels)))
                    notices.Add((p.At.Get("nodeSelector") ?? p.At).Error(
                        $"nodeSelector selects no node (the lab's node has {string.Join(", ", lab.NodeLabels.Select(kv => $"{kv.Key}={kv.Value}"))}; spec.nodeLabels adds labels): the host policy is not enforced").Message);

            // the containerd node's kube-proxy rules are rendered for cluster IPs only (KubeProxyRules)
            if (lab?.NodeKind == LabNodeKinds.Containerd)
            {
                var unrendered = finalServices
                    .Where(s => s.Type is "NodePort" or "LoadBalancer" || s.ExternalIps.Count > 0 || s.AffinityTimeoutSeconds > 0)
                    .Select(s => $"{s.Namespace}/{s.Name}").ToList();
                if (unrendered.Count > 0)
                    notices.Add($"node: containerd: kube-proxy's rules are made for cluster IPs only; the node ports, load balancer and external addresses and session affinity of {string.Join(", ", unrendered)} are not (a netns node's datapath has them)");
            }

            LabSpec? labSpec = null;
            if (lab is not null)
                labSpec = LabDocument.Build(lab, finalPods, finalServices);
            return new ClusterSpec(file, labSpec, finalPods, finalServices, policies.Select(p => p.Policy).ToList())
            {
                Notices = [.. notices],
                NodeLabels = lab?.NodeLabels ?? new Dictionary<string, string>(StringComparer.Ordinal),
            };
        }

        private static string Show(EndpointSelector sel) =>
            string.Join(", ", sel.MatchLabels.Select(kv => $"{kv.Key}={kv.Value}")
                .Concat(sel.MatchExpressions.Select(r => $"{r.Key} {r.Operator}{(r.Values.Count > 0 ? " (" + string.Join(", ", r.Values) + ")" : "")}")));

        private static IPAddress Last(IPNetwork net)
        {
            var b = net.BaseAddress.GetAddressBytes();
            uint v = (uint)(b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]);
            v |= net.PrefixLength == 0 ? uint.MaxValue : (1u << (32 - net.PrefixLength)) - 1;
            return new IPAddress([(byte)(v >> 24), (byte)(v >> 16), (byte)(v >> 8), (byte)v]);
        }

        private static IPAddress? NextFree(IPNetwork net, Dictionary<string, string> used, Dictionary<string, string>? alsoUsed = null)
        {
            var b = net.BaseAddress.GetAddressBytes();
            uint start = (uint)(b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]);
            ulong size = 1UL << (32 - net.PrefixLength);
            for (ulong i = 1; i + 1 < size && i < 65536; i++)
            {
                uint v = start + (uint)i;
                var ip = new IPAddress([(byte)(v >> 24), (byte)(v >> 16), (byte)(v >> 8), (byte)v]);
                if (!used.ContainsKey(ip.ToString()) && alsoUsed?.ContainsKey(ip.ToString()) != true)
                    return ip;
            }
            return null;
        }

    }
}
