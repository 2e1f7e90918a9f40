using System.Net;
using YamlDotNet.RepresentationModel;
using static Forensics.Datapath.Control.ObjectFields;

namespace Forensics.Datapath.Control;

/// <summary>A Pod document (v1): name, namespace, labels, container ports, status.podIP.</summary>
/// <summary>A pod as a document says it (a Pod, or one made by a workload); ServiceAccountNode names the account it uses, if given.</summary>
internal sealed record RawPod(DocRef Doc, Node At, PodSpec Pod, Node? IpNode, Dictionary<string, PortProtocol> NamedPorts, Node? ServiceAccountNode = null);

internal static class PodDocument
{
    private static readonly string[] PodSpecFields =
    [
        "activeDeadlineSeconds", "affinity", "automountServiceAccountToken", "containers", "dnsConfig", "dnsPolicy",
        "enableServiceLinks", "ephemeralContainers", "hostAliases", "hostIPC", "hostNetwork", "hostPID", "hostUsers",
        "hostname", "imagePullSecrets", "initContainers", "nodeName", "nodeSelector", "os", "overhead",
        "preemptionPolicy", "priority", "priorityClassName", "readinessGates", "resourceClaims", "resources",
        "restartPolicy", "runtimeClassName", "schedulerName", "schedulingGates", "securityContext", "serviceAccount",
        "serviceAccountName", "setHostnameAsFQDN", "shareProcessNamespace", "subdomain",
        "terminationGracePeriodSeconds", "tolerations", "topologySpreadConstraints", "volumes",
    ];

    private static readonly string[] ContainerFields =
    [
        "args", "command", "env", "envFrom", "image", "imagePullPolicy", "lifecycle", "livenessProbe", "name", "ports",
        "readinessProbe", "resizePolicy", "resources", "restartPolicy", "securityContext", "startupProbe", "stdin",
        "stdinOnce", "terminationMessagePath", "terminationMessagePolicy", "tty", "volumeDevices", "volumeMounts",
        "workingDir",
    ];

    public static RawPod Read(Node root)
    {
        var (name, ns, labels) = Meta(root);
        var (ports, named, serviceAccount, containerSpecs) = root.Get("spec") is { } spec ? ReadSpec(spec, name) : ([], new(StringComparer.Ordinal), "default", []);
        IPAddress? ip = null;
        Node? ipNode = null;
        if (root.Get("status") is { } status)
        {
            if (status.Yaml is not YamlMappingNode)
                throw status.Error("expected a mapping (key: value)");
            if (status.Get("podIP") is { } pip)
            {
                ip = Ipv4(pip);
                ipNode = pip;
            }
        }
        var pod = new PodSpec(name, ns, labels, ip, ports) { NamedPorts = named, ServiceAccount = serviceAccount, Containers = containerSpecs };
        return new RawPod(root.Doc, root, pod, ipNode, named, root.Get("spec")?.Get("serviceAccountName") ?? root.Get("spec")?.Get("serviceAccount"));
    }

    /// <summary>
    /// A PodSpec (of a Pod, or of a workload's template): container ports, their names, the service account, the
    /// containers (a container without a name is named NAME-INDEX after the pod or workload).
    /// </summary>
    public static (List<PortProtocol> Ports, Dictionary<string, PortProtocol> Named, string ServiceAccount, List<ContainerSpec> Containers) ReadSpec(Node spec, string name)
    {
        spec.Strict(PodSpecFields);
        var ports = new List<PortProtocol>();
        var named = new Dictionary<string, PortProtocol>(StringComparer.Ordinal);
        var containerSpecs = new List<ContainerSpec>();
        if (spec.Get("containers") is { } containers)
        {
            foreach (var c in containers.Items())
            {
                c.Strict(ContainerFields);
                var cname = c.Get("name") is { } cn ? cn.String() : $"{name}-{containerSpecs.Count}";
                if (containerSpecs.Any(x => x.Name == cname))
                    throw c.Error($"two containers are named '{cname}'");
                containerSpecs.Add(new ContainerSpec(cname, c.Get("image") is { } ci ? ci.String() : null));
                if (c.Get("ports") is not { } cports)
                    continue;
                foreach (var p in cports.Items())
                {
                    p.Strict("containerPort", "protocol", "name", "hostPort", "hostIP");
                    var port = p.Require("containerPort").Port();
                    var proto = Protocol(p.Get("protocol"), "TCP", "TCP", "UDP");
                    var pp = new PortProtocol(port, proto);
                    if (ports.Contains(pp))
                        throw p.Error($"{proto} port {port} is listed twice");
                    ports.Add(pp);
                    if (p.Get("name") is { } pn)
                        named[pn.String()] = pp;
                }
            }
        }
        // serviceAccount is the deprecated alias of serviceAccountName
        var sa = (spec.Get("serviceAccountName") ?? spec.Get("serviceAccount"))?.String() ?? "default";
        if (!DnsName().IsMatch(sa))
            throw (spec.Get("serviceAccountName") ?? spec.Get("serviceAccount"))!.Value.Error($"'{sa}' is not a valid service account name");
        return (ports, named, sa, containerSpecs);
    }
}
