using System.Net;
using System.Text.Json;
using System.Text.Json.Serialization;
using Forensics.Datapath.Bpf;

namespace Forensics.Datapath.Control;

/// <summary>
/// A datapath another process owns and keeps running (<c>lab up</c>), read from outside: its state maps
/// pinned in bpffs and its control plane's state in a JSON file beside its monitor socket, both kept current by
/// the owner. <see cref="Snapshot"/> gives the same tables <see cref="LoadedDatapath.Snapshot"/> gives in the owner,
/// by the same code, without loading or changing anything.
/// </summary>
public static class PinnedDatapath
{
    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = false,
        Converters = { new IpAddressConverter() },
    };

    /// <summary>Writes the control plane's state atomically (a temporary file, then a rename), readable by its owner only.</summary>
    public static void WriteControlPlane(string path, DatapathSnapshot controlPlane)
    {
        ArgumentNullException.ThrowIfNull(path);
        var tmp = path + ".tmp";
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        using (var f = new FileStream(tmp, options))
            JsonSerializer.Serialize(f, controlPlane, Json);
        File.Move(tmp, path, overwrite: true);
    }

    /// <summary>Reads the control plane's state the owner wrote; throws <see cref="InvalidDataException"/> when it is not one.</summary>
    public static DatapathSnapshot ReadControlPlane(string path)
    {
        try
        {
            using var f = File.OpenRead(path);
            return JsonSerializer.Deserialize<DatapathSnapshot>(f, Json) ?? throw new InvalidDataException($"{path}: empty");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not a datapath's control plane state: {e.Message}", e);
        }
    }

    /// <summary>The running datapath's tables now: the control plane's file completed from the pinned maps.</summary>
    public static DatapathSnapshot Snapshot(string pinDir, string controlFile)
    {
        var cp = ReadControlPlane(controlFile);
        var opened = new Dictionary<string, BpfMap>(StringComparer.Ordinal);
        try
        {
            return LoadedDatapath.ReadKernelTables(cp, name =>
            {
                if (!opened.TryGetValue(name, out var m))
                    opened[name] = m = BpfMap.OpenPinned(Path.Combine(pinDir, name));
                return m;
            });
        }
        finally
        {
            foreach (var m in opened.Values)
                m.Dispose();
        }
    }

    /// <summary>
    /// The rules behind the rule ids of a running datapath's verdicts and policy drops (<see cref="LoadedDatapath.RulesOf"/>
    /// in its owner), from the control plane's file: read again when an id is not in it and the owner has rewritten
    /// the file since (a policy changed), or a second has passed since it was read (two writes within the file
    /// system's clock tick have one time). Empty for an id the owner never gave or when the file cannot be read.
    /// </summary>
    public static Func<uint, IReadOnlyList<PolicyRuleRef>> RuleResolver(string controlFile)
    {
        ArgumentNullException.ThrowIfNull(controlFile);
        var gate = new object();
        var byId = new Dictionary<uint, IReadOnlyList<PolicyRuleRef>>();
        DateTime? written = null;
        long readAt = 0;
        return id =>
        {
            if (id == 0)
                return [];
            lock (gate)
            {
                if (byId.TryGetValue(id, out var rules))
                    return rules;
                try
                {
                    var now = File.GetLastWriteTimeUtc(controlFile);
                    if (now == written && Environment.TickCount64 - readAt < 1000)
                        return [];
                    written = now;
                    readAt = Environment.TickCount64;
                    foreach (var set in ReadControlPlane(controlFile).Rules)
                        byId[set.Id] = set.Rules;
                }
                catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException)
                {
                    return []; // the owner went away: its ids stay unnamed
                }
                return byId.TryGetValue(id, out rules) ? rules : [];
            }
        };
    }

    private sealed class IpAddressConverter : JsonConverter<IPAddress>
    {
        public override IPAddress? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
            reader.TokenType == JsonTokenType.Null ? null
                : IPAddress.TryParse(reader.GetString(), out var ip) ? ip : throw new JsonException($"not an address: {reader.GetString()}");

        public override void Write(Utf8JsonWriter writer, IPAddress value, JsonSerializerOptions options) => writer.WriteStringValue(value.ToString());
    }
}
