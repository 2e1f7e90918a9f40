using System.Diagnostics;
using System.Text.Json;

namespace Forensics.Tests;

/// <summary>
/// A test that reads Arrow output with an independent implementation: the npm package apache-arrow
/// (tests/arrow/read-arrow.cjs under Node; test.sh installs it into out/arrow-reader). Locally without
/// Node or the package it skips with the reason; in CI (CI=true) it runs and fails.
/// </summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class ArrowReaderFactAttribute : FactAttribute
{
    public ArrowReaderFactAttribute()
    {
        if (Environment.GetEnvironmentVariable("CI") == "true")
            return;
        if (ArrowReader.MissingReason() is { } reason)
            Skip = "arrow reader: " + reason;
    }
}

/// <summary>What read-arrow.cjs saw: the schema, the metadata, each batch's rows (cells as JSON) and arrival time.</summary>
public sealed record ArrowRead(string Format, IReadOnlyList<ArrowField> Schema, IReadOnlyDictionary<string, string> Metadata, IReadOnlyList<ArrowBatch> Batches)
{
    public IEnumerable<JsonElement[]> Rows => Batches.SelectMany(b => b.Rows);

    public int Column(string name)
    {
        for (var i = 0; i < Schema.Count; i++)
            if (Schema[i].Name == name)
                return i;
        throw new KeyNotFoundException($"no column {name} in [{string.Join(", ", Schema.Select(f => f.Name))}]");
    }

    /// <summary>A cell as the text the reader printed (null: a null).</summary>
    public static string? Text(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Null => null,
        JsonValueKind.String => e.GetString(),
        JsonValueKind.True => "true",
        JsonValueKind.False => "false",
        _ => e.GetRawText(),
    };
}

public sealed record ArrowField(string Name, string Type, bool Nullable);

public sealed record ArrowBatch(int Index, long ReceivedNs, IReadOnlyList<JsonElement[]> Rows);

public static class ArrowReader
{
    public static string Modules => Repo.Path("out", "arrow-reader", "node_modules");

    public static string Script => Repo.Path("tests", "arrow", "read-arrow.cjs");

    public static string? MissingReason()
    {
        if (!File.Exists("/usr/bin/node") && !(Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Any(d => File.Exists(Path.Combine(d, "node"))))
            return "node is not installed (scripts/prereqs.sh installs it)";
        if (!Directory.Exists(Path.Combine(Modules, "apache-arrow")))
            return $"{Modules}/apache-arrow is missing (test.sh installs it with npm)";
        return null;
    }

    public static ProcessStartInfo StartInfo(string? file)
    {
        if (MissingReason() is { } reason)
            throw new InvalidOperationException(reason);
        var psi = new ProcessStartInfo("node") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = file is null, UseShellExecute = false };
        psi.ArgumentList.Add(Script);
        if (file is not null)
            psi.ArgumentList.Add(file);
        psi.Environment["NODE_PATH"] = Modules;
        return psi;
    }

    /// <summary>Reads an Arrow IPC stream or file.</summary>
    public static ArrowRead ReadFile(string file)
    {
        using var p = Process.Start(StartInfo(file))!;
        var stderr = p.StandardError.ReadToEndAsync();
        var lines = new List<string>();
        while (p.StandardOutput.ReadLine() is { } l)
            lines.Add(l);
        if (!p.WaitForExit(60_000))
        {
            p.Kill(true);
            throw new TimeoutException("read-arrow.cjs did not finish in 60 s");
        }
        if (p.ExitCode != 0)
            throw new InvalidDataException($"read-arrow.cjs {file}: exit {p.ExitCode}: {stderr.Result}");
        return Parse(lines);
    }

    public static ArrowRead Parse(IReadOnlyList<string> lines)
    {
        if (lines.Count == 0)
            throw new InvalidDataException("read-arrow.cjs printed nothing");
        var head = JsonDocument.Parse(lines[0]).RootElement;
        var schema = head.GetProperty("schema").EnumerateArray()
            .Select(f => new ArrowField(f.GetProperty("name").GetString()!, f.GetProperty("type").GetString()!, f.GetProperty("nullable").GetBoolean())).ToList();
        var meta = head.GetProperty("metadata").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!);
        return new ArrowRead(head.GetProperty("format").GetString()!, schema, meta, [.. lines.Skip(1).Select(ParseBatch)]);
    }

    public static ArrowBatch ParseBatch(string line)
    {
        var b = JsonDocument.Parse(line).RootElement;
        return new ArrowBatch(b.GetProperty("batch").GetInt32(), long.Parse(b.GetProperty("received_ns").GetString()!, System.Globalization.CultureInfo.InvariantCulture),
            [.. b.GetProperty("rows").EnumerateArray().Select(r => r.EnumerateArray().Select(c => c.Clone()).ToArray())]);
    }
}
