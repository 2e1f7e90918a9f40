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
        w.WriteLine("tables");
        foreach (var (name, t) in m.Tables.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            w.WriteLine($"  {name,-16} {t.Rows,10} rows  {t.Files.Count,4} file{(t.Files.Count == 1 ? "" : "s")}  schema v{t.SchemaVersion}");
        w.WriteLine($"loss        {m.EventsLost} event{(m.EventsLost == 1 ? "" : "s")} lost");
        foreach (var (kind, l) in m.Loss.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            w.WriteLine(kind is "hubble" or "tetragon"
                ? $"  {kind,-16} reported lost by {kind} {l.Failed}"
                : $"  {kind,-16} emitted {l.Emitted}, lost in kernel (ring buffer full) {l.Failed}, lost in user space {l.UserspaceDropped}");
        foreach (var src in m.Sources ?? [])
        {
            w.WriteLine($"source      {src.Name} ({(src.Kind == "import" ? "imported" : "gRPC " + src.Address)}): {src.Received} received, {src.Stored} stored, {src.Skipped.Values.Sum()} not stored, {src.Malformed} malformed");
            foreach (var f in src.Files)
                w.WriteLine($"  file      {f.Path} ({f.Lines} lines, {f.Bytes} bytes, sha256 {f.Sha256})");
            if (src.Skipped.Count > 0)
                w.WriteLine($"  skipped   {string.Join(", ", src.Skipped.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key} {kv.Value}"))}");
            if (src.Lost.Count > 0)
                w.WriteLine($"  lost      {string.Join(", ", src.Lost.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key} {kv.Value}"))}");
            if (src.UnknownFields.Count > 0)
                w.WriteLine($"  unknown   {string.Join(", ", src.UnknownFields.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key} {kv.Value}"))} (kept in the extra column)");
            foreach (var d in src.Disconnects.Take(10))
                w.WriteLine($"  stream    {d}");
        }
        var results = RecordingLocator.Verify(rec);
        var bad = results.Where(r => !r.Ok).ToList();
        w.WriteLine($"files       {results.Count - bad.Count} of {results.Count} verified against the manifest's SHA-256");
        foreach (var b in bad)
            w.WriteLine($"  TAMPERED  {b.RelativePath}: {b.Problem}");
        return bad.Count == 0;
    }
}
