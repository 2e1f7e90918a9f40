using System.Globalization;

namespace Forensics.Query.Reference;

/// <summary>
/// Cilium's drop reason codes and names (Reference/drop_reasons.csv, from
/// Cilium v1.19.4): the monitor text `cilium monitor` prints and the Hubble
/// enum name. Keyed by number: 136 and 161 differ between the two vocabularies.
/// </summary>
public static class DropReasons
{
    public sealed record Reason(int Code, string MonitorText, string? HubbleName);

    private static readonly Lazy<IReadOnlyDictionary<int, Reason>> Table = new(Load);

    public static IReadOnlyDictionary<int, Reason> All => Table.Value;

    /// <summary>The monitor text for a code ("Policy denied"), or "Unknown reason (N)".</summary>
    public static string Name(int code) =>
        All.TryGetValue(code, out var r) ? r.MonitorText : $"Unknown reason ({code.ToString(CultureInfo.InvariantCulture)})";

    private static Dictionary<int, Reason> Load()
    {
        using var s = typeof(DropReasons).Assembly.GetManifestResourceStream("reference/drop_reasons.csv")
            ?? throw new InvalidOperationException("drop_reasons.csv is not embedded");
        using var reader = new StreamReader(s);
        var result = new Dictionary<int, Reason>();
        reader.ReadLine(); // header
        while (reader.ReadLine() is { } line)
        {
            var f = SplitCsv(line);
            if (f.Count < 2 || !int.TryParse(f[0], CultureInfo.InvariantCulture, out int code))
                continue;
            result[code] = new Reason(code, f[1], f.Count > 2 && f[2].Length > 0 ? f[2] : null);
        }
        return result;
    }

    internal static List<string> SplitCsv(string line)
    {
        var fields = new List<string>();
        var cur = new System.Text.StringBuilder();
        bool quoted = false;
        for (int i = 0; i < line.Length; i++)
        {
            char c = line[i];
            if (quoted)
            {
                if (c == '"' && i + 1 < line.Length && line[i + 1] == '"') { cur.Append('"'); i++; }
                else if (c == '"') quoted = false;
                else cur.Append(c);
            }
            else if (c == '"') quoted = true;
            else if (c == ',') { fields.Add(cur.ToString()); cur.Clear(); }
            else cur.Append(c);
        }
        fields.Add(cur.ToString());
        return fields;
    }
}
