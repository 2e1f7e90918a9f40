using System.Globalization;
using Forensics.Format;
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
        var c = m.Config;
        if (c.Kinds.Count > 0)
            w.WriteLine($"kinds       {string.Join(", ", c.Kinds)}");
        var settings = new List<string> { $"snaplen {c.Snaplen}", $"ring {c.RingBytes} bytes" };
        if (c.DurationSeconds is { } d)
            settings.Add($"duration {d.ToString("0.###", inv)} s");
        if (c.Lab is not null)
            settings.Add($"lab {c.Lab}");
        if (c.PoliciesSha256 is not null)
            settings.Add($"policies sha256 {c.PoliciesSha256}");
        w.WriteLine($"config      {string.Join(", ", settings)}");
        if (c.ExcludeCidrs.Count > 0)
            w.WriteLine($"in-cluster  {string.Join(", ", c.ExcludeCidrs)}");
        if (c.PodCidrs.Count + c.ServiceCidrs.Count + c.NodeAddresses.Count > 0)
            w.WriteLine($"cluster     pods {List(c.PodCidrs)}; services {List(c.ServiceCidrs)}; node {List(c.NodeAddresses)}");
        if (c.Kinds.Count == 0 || c.Kinds.Contains("trace") || c.Kinds.Contains("capture"))
        {
            w.WriteLine(c.MonitorAggregation is "medium"
            ? "traces      aggregated per connection (--monitor-aggregation medium): a connection's first packet and first reply, new TCP flags per direction and one every ~5 s have a trace row, not every packet; every drop, verdict and NAT has its row"
                : "traces      every packet (--monitor-aggregation none)");
            w.WriteLine($"capture     {c.CaptureText() ?? (c.Snaplen == 0 ? "off (snaplen 0)" : "every packet")}");
        }
        if (c.FlowIntervalSeconds is { } fi)
            w.WriteLine($"flows       a row per active connection every {fi.ToString("0.###", inv)} s and one at its end (packets and IP bytes each way; from the datapath's and the kernel's conntrack)");
        if (m.Attribution is { } a)
        {
            w.WriteLine($"attribution source: {a.Source}{(a.Source == "none" ? "" : $" ({a.Pods} pods, {a.Containers} containers)")}");
            if (a.Refreshes + a.Failures > 0)
                w.WriteLine($"  refreshes {a.Refreshes}, of them failed {a.Failures}");
            foreach (var warning in a.Warnings)
                w.WriteLine($"  warning: {warning}");
        }
        if (m.FilteredConnects > 0)
            w.WriteLine($"filtered    {m.FilteredConnects} connect{(m.FilteredConnects == 1 ? "" : "s")} not recorded: to excluded destinations (--exclude-cidr), or not selected by the TracingPolicy (--tetragon-policy) for their workload (counted)");
        foreach (var (name, src) in m.Sources)
        {
            var delivered = src.Received > 0 || src.Kind is "grpc" || (src.Kind == "file" && src.Inputs.Count > 0)
                ? $"{src.Received} received, {src.Stored} stored, {src.Skipped.Values.Sum()} not stored, {src.Malformed} malformed"
                : $"{src.Records} records";
            w.WriteLine($"source      {name} ({src.Kind}{(src.Detail.Length > 0 ? ": " + src.Detail : "")}): {delivered}");
            if (src.RowsWritten.Count > 0)
                w.WriteLine($"  rows      {string.Join(", ", src.RowsWritten.Select(kv => $"{kv.Key} {kv.Value}"))}");
            foreach (var (table, l) in src.Loss)
                w.WriteLine($"  {table,-16} emitted {l.Emitted}, not handed over {l.Failed}, lost in user space {l.UserspaceDropped}");
            foreach (var line in src.NotRecorded)
                w.WriteLine($"  not recorded: {line}");
            foreach (var input in src.Inputs)
                w.WriteLine($"  input     {input.Path} ({(input.Lines > 0 ? $"{input.Lines} lines, " : "")}{input.Bytes} bytes, sha256 {input.Sha256})");
            if (src.Skipped.Count > 0)
                w.WriteLine($"  skipped   {string.Join(", ", src.Skipped.Select(kv => $"{kv.Key} {kv.Value}"))}");
            if (src.Lost.Count > 0)
                w.WriteLine($"  lost      {string.Join(", ", src.Lost.Select(kv => $"{kv.Key} {kv.Value}"))}");
            if (src.UnknownFields.Count > 0)
                w.WriteLine($"  unknown   {string.Join(", ", src.UnknownFields.Select(kv => $"{kv.Key} {kv.Value}"))} (kept in the extra column)");
            foreach (var gap in src.Disconnects.Take(10))
                w.WriteLine($"  stream    {gap}");
        }
        w.WriteLine("tables");
        foreach (var (name, t) in m.Tables.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            w.WriteLine($"  {name,-16} {t.Rows,10} rows  {t.Files.Count,4} file{(t.Files.Count == 1 ? "" : "s")}  schema v{t.SchemaVersion}");
        w.WriteLine($"loss        {m.EventsLost} event{(m.EventsLost == 1 ? "" : "s")} lost");
        if (m.UnsealedSegments > 0)
            w.WriteLine($"  unsealed segments: {m.UnsealedSegments} ({m.UnsealedBytes} bytes) were never sealed: their rows were lost with the recorder");
        foreach (var (kind, l) in m.Loss.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            w.WriteLine(kind is "hubble" or "tetragon"
                ? $"  {kind,-16} reported lost by {kind} {l.Failed}"
                : $"  {kind,-16} emitted {l.Emitted}, lost in kernel ({(kind == "nat" ? "ring buffer full, or the ctnetlink socket's ENOBUFS" : "ring buffer full")}) {l.Failed}, lost in user space {l.UserspaceDropped}");
        var results = RecordingLocator.Verify(rec);
        var bad = results.Where(r => !r.Ok).ToList();
        w.WriteLine($"files       {results.Count - bad.Count} of {results.Count} verified against the manifest's SHA-256");
        foreach (var b in bad)
            w.WriteLine($"  TAMPERED  {b.RelativePath}: {b.Problem}");
        if (m.Redaction is not null)
            w.WriteLine($"redaction   {m.Redaction.ToJsonString()}");
        return bad.Count == 0;
    }

    private static string List(List<string> items) => items.Count == 0 ? "-" : string.Join(", ", items);
}
