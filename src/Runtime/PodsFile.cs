using System.Globalization;
using System.Text.Json;

namespace Forensics.Runtime;

/// <summary>
/// Pods and containers from <c>kubectl get pods -A -o json</c> (a List of Pods, or one Pod):
/// metadata (name, namespace, uid, labels, creationTimestamp), status.podIP(s), and
/// status.containerStatuses[] (name, image, containerID "containerd://ID"). It names no
/// network namespace: those are learned from the processes in the pods' containers.
/// </summary>
public sealed class PodsFileSource : IWorkloadSource
{
    private readonly WorkloadSnapshot snapshot;

    private PodsFileSource(string path, WorkloadSnapshot snapshot)
    {
        Description = $"pods file {path}";
        this.snapshot = snapshot;
    }

    public string Description { get; }

    public bool Live => false;

    public WorkloadSnapshot Read() => snapshot;

    /// <summary>Reads the file; a one-line <see cref="RuntimeException"/> when it is not kubectl's JSON.</summary>
    public static PodsFileSource Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RuntimeException($"{path}: {e.Message}", e);
        }
        try
        {
            return new PodsFileSource(path, Parse(text));
        }
        catch (JsonException e)
        {
            throw new RuntimeException($"{path}: not JSON (kubectl get pods -A -o json): {e.Message.Split('\n')[0]}", e);
        }
        catch (InvalidOperationException e)
        {
            throw new RuntimeException($"{path}: {e.Message}", e);
        }
    }

    internal static WorkloadSnapshot Parse(string json)
    {
        using var doc = JsonDocument.Parse(json);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
            throw new InvalidOperationException("expected a JSON object (kind: List or Pod)");
        var kind = Str(root, "kind");
        IEnumerable<JsonElement> items = kind switch
        {
            "List" or "PodList" when root.TryGetProperty("items", out var it) && it.ValueKind == JsonValueKind.Array => it.EnumerateArray(),
            "Pod" => [root],
            _ => throw new InvalidOperationException($"kind is '{kind ?? "missing"}', expected List or Pod (kubectl get pods -A -o json)"),
        };
        var pods = new List<PodRecord>();
        var containers = new List<ContainerRecord>();
        foreach (var item in items)
        {
            if (Str(item, "kind") is { } k && k != "Pod")
                continue;
            if (!item.TryGetProperty("metadata", out var meta) || meta.ValueKind != JsonValueKind.Object)
                throw new InvalidOperationException("an item has no metadata");
            var uid = Str(meta, "uid") ?? throw new InvalidOperationException($"pod {Str(meta, "name")} has no metadata.uid");
            var labels = new Dictionary<string, string>(StringComparer.Ordinal);
            if (meta.TryGetProperty("labels", out var l) && l.ValueKind == JsonValueKind.Object)
                foreach (var kv in l.EnumerateObject())
                    labels[kv.Name] = kv.Value.ValueKind == JsonValueKind.String ? kv.Value.GetString()! : kv.Value.GetRawText();
            var created = Str(meta, "creationTimestamp") is { } ts && DateTime.TryParse(ts, CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal, out var t) ? t : DateTime.UnixEpoch;
            var ips = new List<string>();
            var ready = false;
            if (item.TryGetProperty("status", out var status) && status.ValueKind == JsonValueKind.Object)
            {
                if (status.TryGetProperty("podIPs", out var pips) && pips.ValueKind == JsonValueKind.Array)
                    ips.AddRange(pips.EnumerateArray().Select(x => Str(x, "ip")).OfType<string>());
                else if (Str(status, "podIP") is { } ip)
                    ips.Add(ip);
                ready = Str(status, "phase") == "Running";
                if (status.TryGetProperty("containerStatuses", out var cs) && cs.ValueKind == JsonValueKind.Array)
                {
                    foreach (var c in cs.EnumerateArray())
                    {
                        var cid = Str(c, "containerID");
                        if (cid is null)
                            continue;
                        var sep = cid.IndexOf("://", StringComparison.Ordinal);
                        var id = sep >= 0 ? cid[(sep + 3)..] : cid;
                        var state = c.TryGetProperty("state", out var st) && st.ValueKind == JsonValueKind.Object
                            ? st.EnumerateObject().Select(x => x.Name).FirstOrDefault() ?? "unknown" : "unknown";
                        containers.Add(new ContainerRecord(id, Str(c, "name") ?? "", Str(c, "image") ?? "", uid, null,
                            state == "terminated" ? "exited" : state, created));
                    }
                }
            }
            pods.Add(new PodRecord(uid, Str(meta, "namespace") ?? "default", Str(meta, "name") ?? "", null, ips, 0, labels, created, ready));
        }
        return new WorkloadSnapshot(pods, containers);
    }

    private static string? Str(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    public void Dispose()
    {
    }
}
