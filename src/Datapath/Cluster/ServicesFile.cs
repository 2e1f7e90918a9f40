using System.Globalization;
using System.Net;
using System.Text.Json;

namespace Forensics.Datapath.Cluster;

/// <summary>
/// Services and their backends from <c>kubectl get svc,endpointslices -A -o json</c> (a v1
/// List of Service and discovery.k8s.io/v1 EndpointSlice items; a single object or items of
/// other kinds are accepted): every ClusterIP (and external IP) port, its backends from the
/// EndpointSlices that name the service (kubernetes.io/service-name), with the pod a backend
/// is (targetRef). Headless services (clusterIP None) have no virtual address and are skipped.
/// </summary>
public static class ServicesFile
{
    public const string SourceName = "services-file";

    public static ClusterServices Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ClusterInputException($"cannot read the services file {path}: {e.Message}", e);
        }
        try
        {
            return Parse(bytes);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException or KeyNotFoundException)
        {
            throw new ClusterInputException($"{path}: not the JSON of 'kubectl get svc,endpointslices -A -o json' ({OneLine(e.Message)})", e);
        }
    }

    private static string OneLine(string s) => s.ReplaceLineEndings(" ");

    public static ClusterServices Parse(ReadOnlySpan<byte> json)
    {
        using var doc = JsonDocument.Parse(json.ToArray());
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
            throw new FormatException("the document is not a JSON object");
        var items = new List<JsonElement>();
        if (root.TryGetProperty("items", out var list) && list.ValueKind == JsonValueKind.Array)
            items.AddRange(list.EnumerateArray());
        else if (root.TryGetProperty("kind", out _))
            items.Add(root);
        else
            throw new FormatException("neither a List with items nor a Kubernetes object");

        // service (ns/name) -> port name -> backends
        var slices = new Dictionary<(string Ns, string Svc), List<(string? PortName, int Port, string Protocol, ServiceEndpoint Ep)>>();
        foreach (var item in items.Where(i => Kind(i) == "EndpointSlice"))
        {
            var ns = Str(item, "metadata", "namespace") ?? "default";
            if (!item.TryGetProperty("metadata", out var md) || !md.TryGetProperty("labels", out var labels)
                || !labels.TryGetProperty("kubernetes.io/service-name", out var svcName) || svcName.GetString() is not { } svc)
                continue;
            var ports = item.TryGetProperty("ports", out var pl) && pl.ValueKind == JsonValueKind.Array
                ? pl.EnumerateArray().Select(p => (Name: Str(p, "name"), Port: Int(p, "port") ?? 0, Protocol: (Str(p, "protocol") ?? "TCP").ToLowerInvariant())).ToList()
                : [];
            if (!item.TryGetProperty("endpoints", out var eps) || eps.ValueKind != JsonValueKind.Array)
                continue;
            if (!slices.TryGetValue((ns, svc), out var backends))
                slices[(ns, svc)] = backends = [];
            foreach (var ep in eps.EnumerateArray())
            {
                if (ep.TryGetProperty("conditions", out var cond) && cond.TryGetProperty("ready", out var ready) && ready.ValueKind == JsonValueKind.False)
                    continue;
                string? podNs = null, pod = null;
                if (ep.TryGetProperty("targetRef", out var tr) && Str(tr, "kind") == "Pod")
                {
                    pod = Str(tr, "name");
                    podNs = Str(tr, "namespace") ?? ns;
                }
                if (!ep.TryGetProperty("addresses", out var addrs) || addrs.ValueKind != JsonValueKind.Array)
                    continue;
                foreach (var a in addrs.EnumerateArray())
                    if (a.GetString() is { } s && IPAddress.TryParse(s, out var ip))
                        foreach (var p in ports)
                            backends.Add((p.Name, p.Port, p.Protocol, new ServiceEndpoint(ip, p.Port, podNs, pod)));
            }
        }

        var services = new List<ServiceFrontend>();
        foreach (var item in items.Where(i => Kind(i) == "Service"))
        {
            var ns = Str(item, "metadata", "namespace") ?? "default";
            var name = Str(item, "metadata", "name") ?? throw new FormatException("a Service without metadata.name");
            if (!item.TryGetProperty("spec", out var spec))
                continue;
            var ips = new List<(IPAddress Ip, string Kind)>();
            if (spec.TryGetProperty("clusterIPs", out var cips) && cips.ValueKind == JsonValueKind.Array)
                ips.AddRange(cips.EnumerateArray().Select(x => x.GetString()).Where(s => s is not null && IPAddress.TryParse(s, out _)).Select(s => (IPAddress.Parse(s!), "cluster IP")));
            else if (Str(spec, "clusterIP") is { } cip && IPAddress.TryParse(cip, out var one))
                ips.Add((one, "cluster IP"));
            if (spec.TryGetProperty("externalIPs", out var eips) && eips.ValueKind == JsonValueKind.Array)
                ips.AddRange(eips.EnumerateArray().Select(x => x.GetString()).Where(s => s is not null && IPAddress.TryParse(s, out _)).Select(s => (IPAddress.Parse(s!), "external IP")));
            if (!spec.TryGetProperty("ports", out var ports) || ports.ValueKind != JsonValueKind.Array)
                continue;
            var backends = slices.GetValueOrDefault((ns, name)) ?? [];
            foreach (var port in ports.EnumerateArray())
            {
                var portName = Str(port, "name") ?? "";
                var protocol = (Str(port, "protocol") ?? "TCP").ToLowerInvariant();
                var number = Int(port, "port") ?? throw new FormatException($"service {ns}/{name} has a port without a number");
                var eps = backends.Where(b => (b.PortName ?? "") == portName && b.Protocol == protocol).Select(b => b.Ep)
                    .DistinctBy(e => (e.Ip, e.Port)).ToList();
                foreach (var (ip, kind) in ips)
                    services.Add(new ServiceFrontend(ns, name, portName, ip, number, protocol,
                        eps.Where(e => e.Ip.AddressFamily == ip.AddressFamily).ToList(), SourceName, kind));
            }
        }
        return new ClusterServices(services, []);
    }

    private static string? Kind(JsonElement e) => Str(e, "kind");

    private static string? Str(JsonElement e, params string[] path)
    {
        foreach (var p in path)
        {
            if (e.ValueKind != JsonValueKind.Object || !e.TryGetProperty(p, out e))
                return null;
        }
        return e.ValueKind == JsonValueKind.String ? e.GetString() : null;
    }

    private static int? Int(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var i) ? i
        : e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out v) && v.ValueKind == JsonValueKind.String && int.TryParse(v.GetString(), CultureInfo.InvariantCulture, out i) ? i
        : null;
}
