using System.Globalization;
using Forensics.Query.Recording;

namespace Forensics.Query;

/// <summary>`forensics info`: what a recording is, and whether its files are intact.</summary>
public static class Info
{
    /// <summary>Writes the report; returns false when a file failed verification.</summary>
    public static bool Report(OpenedRecording rec, TextWriter w)
    {
        ArgumentNullException.ThrowIfNull(rec);
        ArgumentNullException.ThrowIfNull(w);
        var m = rec.Manifest;
        var inv = CultureInfo.InvariantCulture;
        w.WriteLine($"recording   {m.RecordingId}");
        w.WriteLine($"path        {rec.Root}");
        w.WriteLine($"node        {m.Node}");
        w.WriteLine($"host        {m.Host.Hostname}, kernel {m.Host.Kernel}{(m.Host.Machine is null ? "" : ", " + m.Host.Machine)}{(m.Host.BootId is null ? "" : ", boot " + m.Host.BootId)}");
        w.WriteLine($"tool        {m.ToolVersion}");
        var end = m.EndedAt is { } e ? e.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", inv) : "(not ended)";
        var span = m.EndedAt is { } e2 ? $" ({(e2 - m.StartedAt).TotalSeconds.ToString("0.###", inv)} s)" : "";
        w.WriteLine($"time        {m.StartedAt.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", inv)} -> {end}{span}");
        w.WriteLine($"stopped     {m.StopReason}{(m.Recovered ? " (recovered after a crash)" : "")}");
        if (m.Config.Kinds is { Count: > 0 } kinds)
            w.WriteLine($"kinds       {string.Join(", ", kinds)}");
        if (m.Config.ExcludeCidrs is { Count: > 0 } cidrs)
            w.WriteLine($"in-cluster  {string.Join(", ", cidrs)}");
        if (m.Config.MonitorAggregation is "medium")
            w.WriteLine("traces      aggregated per connection (--monitor-aggregation medium): not every packet has a trace row");
        if (m.Attribution is { } a)
        {
            w.WriteLine($"attribution source: {a.Source}{(a.Source == "none" ? "" : $" ({a.Pods} pods, {a.Containers} containers)")}");
            foreach (var warning in a.Warnings)
                w.WriteLine($"  warning: {warning}");
        }
        w.WriteLine("tables");
        foreach (var (name, t) in m.Tables.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            w.WriteLine($"  {name,-16} {t.Rows,10} rows  {t.Files.Count,4} file{(t.Files.Count == 1 ? "" : "s")}  schema v{t.SchemaVersion}");
        w.WriteLine($"loss        {m.EventsLost} event{(m.EventsLost == 1 ? "" : "s")} lost");
        foreach (var (kind, l) in m.Loss.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            w.WriteLine($"  {kind,-16} emitted {l.Emitted}, lost in kernel (ring buffer full) {l.Failed}, lost in user space {l.UserspaceDropped}");
        var results = RecordingLocator.Verify(rec);
        var bad = results.Where(r => !r.Ok).ToList();
        w.WriteLine($"files       {results.Count - bad.Count} of {results.Count} verified against the manifest's SHA-256");
        foreach (var b in bad)
            w.WriteLine($"  TAMPERED  {b.RelativePath}: {b.Problem}");
        return bad.Count == 0;
    }
}
