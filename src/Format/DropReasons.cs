using System.Globalization;

namespace Forensics.Format;

/// <summary>One Cilium drop reason: code, cilium monitor text, Hubble enum name, BPF define.</summary>
public sealed record DropReason(int Code, string Name, string? HubbleName, string? BpfDefine);

/// <summary>
/// Cilium's drop reasons (schemas/drop_reasons.csv, Cilium v1.19.4, embedded), keyed by number: the one
/// table the datapath's loader, the recorder and the query side use.
/// </summary>
public static class DropReasons
{
    private static readonly Lazy<IReadOnlyList<DropReason>> Table = new(Load);
    private static readonly Lazy<Dictionary<int, DropReason>> ByCode = new(() => Table.Value.ToDictionary(r => r.Code));

    public static IReadOnlyList<DropReason> All => Table.Value;

    /// <summary>133: no rule allowed the packet (default deny).</summary>
    public const int PolicyDenied = 133;

    /// <summary>181: a deny rule denied the packet.</summary>
    public const int PolicyDeniedByDenylist = 181;

    /// <summary>The monitor text for a code, e.g. 133 -> "Policy denied"; unknown codes say so with the number.</summary>
    public static string NameOf(int code) =>
        ByCode.Value.TryGetValue(code, out var r) && r.Name.Length > 0 ? r.Name : Unknown(code);

    /// <summary>The text of a code the table does not know (the SQL macro fx_drop_reason says the same).</summary>
    public static string Unknown(int code) => "Unknown reason " + code.ToString(CultureInfo.InvariantCulture);

    /// <summary>Whether the table knows the code.</summary>
    public static bool IsKnown(int code) => ByCode.Value.ContainsKey(code);

    /// <summary>A code from its number, its monitor text or its Hubble enum name (case-insensitive).</summary>
    public static bool TryParse(string text, out int code)
    {
        ArgumentNullException.ThrowIfNull(text);
        var t = text.Trim();
        if (int.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out code))
            return IsKnown(code);
        foreach (var r in All)
        {
            if ((r.Name.Length > 0 && string.Equals(r.Name, t, StringComparison.OrdinalIgnoreCase))
                || (r.HubbleName is { Length: > 0 } h && string.Equals(h, t, StringComparison.OrdinalIgnoreCase)))
            {
                code = r.Code;
                return true;
            }
        }
        code = 0;
        return false;
    }

    private static List<DropReason> Load()
    {
        var list = new List<DropReason>();
        var lines = SchemaCatalog.Resource("drop_reasons.csv").Split('\n');
        foreach (var line in lines.Skip(1)) // header: code, monitor text, hubble enum, note, bpf define
        {
            if (string.IsNullOrWhiteSpace(line))
                continue;
            var f = SplitCsv(line.TrimEnd('\r'));
            list.Add(new DropReason(int.Parse(f[0], CultureInfo.InvariantCulture), f.Count > 1 ? f[1] : "",
                f.Count > 2 && f[2].Length > 0 ? f[2] : null, f.Count > 4 && f[4].Length > 0 ? f[4] : null));
        }
        return list;
    }

    internal static List<string> SplitCsv(string line)
    {
        var fields = new List<string>();
        var sb = new System.Text.StringBuilder();
        var quoted = false;
        for (var i = 0; i < line.Length; i++)
        {
            var c = line[i];
            if (quoted)
            {
                if (c == '"' && i + 1 < line.Length && line[i + 1] == '"') { sb.Append('"'); i++; }
                else if (c == '"') quoted = false;
                else sb.Append(c);
            }
            else if (c == '"') quoted = true;
            else if (c == ',') { fields.Add(sb.ToString()); sb.Clear(); }
            else sb.Append(c);
        }
        fields.Add(sb.ToString());
        return fields;
    }
}

/// <summary>Cilium's reserved security identities, which keep their numbers and labels.</summary>
public static class ReservedIdentities
{
    /// <summary>Identity number -> its label.</summary>
    public static IReadOnlyDictionary<uint, string> Labels { get; } = new SortedDictionary<uint, string>
    {
        [0] = "reserved:unknown",
        [1] = "reserved:host",
        [2] = "reserved:world",
        [3] = "reserved:unmanaged",
        [4] = "reserved:health",
        [5] = "reserved:init",
        [6] = "reserved:remote-node",
        [7] = "reserved:kube-apiserver",
        [8] = "reserved:ingress",
        [9] = "reserved:world-ipv4",
        [10] = "reserved:world-ipv6",
    };

    /// <summary>A reserved identity's name as Cilium's tools print it ("world"), or null for an identity that is not reserved.</summary>
    public static string? Name(ulong id) =>
        id <= uint.MaxValue && Labels.TryGetValue((uint)id, out var label) ? label["reserved:".Length..] : null;
}
