using Forensics.Datapath.Abi;
using Forensics.Datapath.Probes;

namespace Forensics.Recorder.Tables;

/// <summary>
/// The workload scopes of TracingPolicy selectors (TracingPolicyNamespaced, podSelector, hostSelector), applied
/// to the connects the kernel reports: the kernel says which selectors of the connect's class selected it
/// (ConnectEvent.Selected), and the connect is a row when one of those applies to every workload or to the
/// connect's pod (its namespace and labels, from the runtime or the lab). The rest are counted, not recorded.
/// Used by the decode thread only.
/// </summary>
public sealed class ConnectScopes
{
    private readonly WorkloadScope?[][] byClass = new WorkloadScope?[2][];
    private readonly bool[] scoped = new bool[2];

    public ConnectScopes(IReadOnlyList<ConnectFilter> filters)
    {
        ArgumentNullException.ThrowIfNull(filters);
        byClass[0] = byClass[1] = [];
        foreach (var f in filters)
        {
            byClass[(int)f.Class] = [.. f.Selectors.Select(s => s.Scope)];
            scoped[(int)f.Class] = f.Selectors.Any(s => s.Scope is not null);
        }
    }

    /// <summary>Connects the kernel reported that no selector in scope selected.</summary>
    public ulong OutOfScope => Interlocked.Read(ref outOfScope);

    private ulong outOfScope;

    /// <summary>Whether the connect is a row (<paramref name="owner"/>: its owner, as the row will carry it); counts it when not.</summary>
    public bool Keeps(in ConnectEvent ev, EventOwner owner, EventContext ctx)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        int cls = ev.ConnectKind == ConnectKind.Tcp ? (int)ConnectClass.Tcp : (int)ConnectClass.Udp;
        if (!scoped[cls])
            return true;
        IReadOnlyDictionary<string, string>? labels = owner.Labels is { } l ? LabelsOf(l) : owner.Pod is null ? null : ctx.Owner(ev.NetnsIno)?.Labels;
        var scopes = byClass[cls];
        for (int i = 0; i < scopes.Length; i++)
            if ((ev.Selected & (1 << i)) != 0 && (scopes[i] is not { } s || s.Selects(owner.Pod is null ? null : owner.Namespace ?? "default", labels)))
                return true;
        Interlocked.Increment(ref outOfScope);
        return false;
    }

    // a pod's labels, parsed once per distinct "k=v,k=v" string (the catalog's strings are shared per pod)
    private readonly Dictionary<string, Dictionary<string, string>> parsed = new(StringComparer.Ordinal);

    private Dictionary<string, string> LabelsOf(string labels)
    {
        if (parsed.TryGetValue(labels, out var d))
            return d;
        if (parsed.Count >= 4096)
            parsed.Clear();
        return parsed[labels] = ParseLabels(labels);
    }

    /// <summary>"k=v,k=v" (EventOwner.Labels) as a dictionary.</summary>
    private static Dictionary<string, string> ParseLabels(string labels)
    {
        var d = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var kv in labels.Split(',', StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = kv.IndexOf('=', StringComparison.Ordinal);
            if (eq > 0)
                d[kv[..eq]] = kv[(eq + 1)..];
        }
        return d;
    }
}
