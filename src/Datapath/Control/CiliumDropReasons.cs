namespace Forensics.Datapath.Control;

/// <summary>
/// Cilium's drop reasons (code, `cilium monitor` text, Hubble enum name), from
/// schemas/drop_reasons.csv (Cilium v1.19.4), the one table the query side uses too. Keyed on the number.
/// </summary>
public static class CiliumDropReasons
{
    public static IReadOnlyDictionary<int, (string Text, string Hubble)> All { get; } = Load();

    private static Dictionary<int, (string, string)> Load()
    {
        using var stream = typeof(CiliumDropReasons).Assembly.GetManifestResourceStream("reference/drop_reasons.csv")
            ?? throw new InvalidOperationException("drop_reasons.csv is not embedded");
        using var reader = new StreamReader(stream);
        var all = new Dictionary<int, (string, string)>();
        reader.ReadLine(); // header: code, monitor text, hubble enum, note, bpf define
        while (reader.ReadLine() is { } line)
        {
            if (string.IsNullOrWhiteSpace(line))
                continue;
            var f = SplitCsv(line.TrimEnd('\r'));
            all[int.Parse(f[0], System.Globalization.CultureInfo.InvariantCulture)] = (f.Count > 1 ? f[1] : "", f.Count > 2 ? f[2] : "");
        }
        return all;
    }

    private static List<string> SplitCsv(string line)
    {
        var fields = new List<string>();
        var cur = new System.Text.StringBuilder();
        bool quoted = false;
        for (int i = 0; i < line.Length; i++)
        {
            char c = line[i];
            if (c == '"' && quoted && i + 1 < line.Length && line[i + 1] == '"')
                cur.Append(line[++i]);
            else if (c == '"')
                quoted = !quoted;
            else if (c == ',' && !quoted)
            {
                fields.Add(cur.ToString());
                cur.Clear();
            }
            else
                cur.Append(c);
        }
        fields.Add(cur.ToString());
        return fields;
    }

    /// <summary>The monitor text of a code, or "unknown (N)".</summary>
    public static string Text(int code) => All.TryGetValue(code, out var r) && r.Text.Length > 0 ? r.Text : $"unknown ({code})";

    /// <summary>A code from its number, its monitor text or its Hubble enum name (case-insensitive).</summary>
    public static bool TryParse(string text, out int code)
    {
        ArgumentNullException.ThrowIfNull(text);
        var t = text.Trim();
        if (int.TryParse(t, out code))
            return All.ContainsKey(code);
        foreach (var (c, r) in All)
        {
            if ((r.Text.Length > 0 && string.Equals(r.Text, t, StringComparison.OrdinalIgnoreCase))
                || (r.Hubble.Length > 0 && string.Equals(r.Hubble, t, StringComparison.OrdinalIgnoreCase)))
            {
                code = c;
                return true;
            }
        }
        code = 0;
        return false;
    }
}
