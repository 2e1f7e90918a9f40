using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Google.Protobuf;
using Google.Protobuf.Reflection;

namespace Forensics.Cilium;

/// <summary>
/// What a source sent that the project's .proto subset does not declare: found in the wire bytes
/// (field numbers, with their values) or in a JSON line (member names, with their JSON), kept in the
/// row's extra column and counted in the manifest, never dropped silently. The generated messages keep
/// unknown enum values as numbers themselves.
/// </summary>
public static class UnknownFields
{
    /// <summary>Unknown fields of a serialized message: path (Message.number) -> value (number, or base64 bytes).</summary>
    public static void FindInWire(ReadOnlySpan<byte> data, MessageDescriptor descriptor, List<KeyValuePair<string, string>> found)
    {
        ArgumentNullException.ThrowIfNull(descriptor);
        ArgumentNullException.ThrowIfNull(found);
        Walk(data, descriptor, descriptor.Name, found, 0);
    }

    private static void Walk(ReadOnlySpan<byte> data, MessageDescriptor d, string path, List<KeyValuePair<string, string>> found, int depth)
    {
        int off = 0;
        while (off < data.Length && depth < 32)
        {
            if (!Varint(data, ref off, out var tag))
                return;
            int number = (int)(tag >> 3);
            int wire = (int)(tag & 7);
            var fd = d.FindFieldByNumber(number);
            string value;
            switch (wire)
            {
                case 0:
                    if (!Varint(data, ref off, out var v))
                        return;
                    value = v.ToString(CultureInfo.InvariantCulture);
                    break;
                case 1:
                    if (off + 8 > data.Length)
                        return;
                    value = BitConverter.ToUInt64(data.Slice(off, 8)).ToString(CultureInfo.InvariantCulture);
                    off += 8;
                    break;
                case 5:
                    if (off + 4 > data.Length)
                        return;
                    value = BitConverter.ToUInt32(data.Slice(off, 4)).ToString(CultureInfo.InvariantCulture);
                    off += 4;
                    break;
                case 2:
                    if (!Varint(data, ref off, out var len) || len > (ulong)(data.Length - off))
                        return;
                    var body = data.Slice(off, (int)len);
                    off += (int)len;
                    if (fd is not null && fd.FieldType == FieldType.Message)
                    {
                        Walk(body, fd.MessageType, path + "." + fd.Name, found, depth + 1);
                        continue;
                    }
                    value = Convert.ToBase64String(body);
                    break;
                default:
                    return; // groups: not proto3
            }
            if (fd is null)
                found.Add(new(path + "." + number.ToString(CultureInfo.InvariantCulture), value));
        }
    }

    private static bool Varint(ReadOnlySpan<byte> data, ref int off, out ulong value)
    {
        value = 0;
        for (int shift = 0; shift < 64 && off < data.Length; shift += 7)
        {
            byte b = data[off++];
            value |= (ulong)(b & 0x7f) << shift;
            if ((b & 0x80) == 0)
                return true;
        }
        return false;
    }

    private static readonly JsonParser Strict = new(JsonParser.Settings.Default);

    /// <summary>
    /// Parses one protojson line into <typeparamref name="T"/>. Members the descriptor does not declare
    /// and enum names it does not know are taken out (path -> JSON text into <paramref name="found"/>)
    /// and the rest is parsed; throws <see cref="FormatException"/> when the line is not such a message.
    /// </summary>
    public static T ParseJson<T>(string line, List<KeyValuePair<string, string>> found) where T : IMessage<T>, new()
    {
        ArgumentNullException.ThrowIfNull(found);
        try
        {
            return Strict.Parse<T>(line);
        }
        catch (Exception e) when (e is InvalidProtocolBufferException or InvalidJsonException or FormatException or ArgumentException)
        {
            JsonNode? node;
            try
            {
                node = JsonNode.Parse(line);
            }
            catch (JsonException je)
            {
                throw new FormatException("not JSON: " + je.Message, je);
            }
            if (node is not JsonObject obj)
                throw new FormatException("not a JSON object");
            var d = new T().Descriptor;
            int before = found.Count;
            Clean(obj, d, d.Name, found);
            if (found.Count == before)
                throw new FormatException(e.Message);
            try
            {
                return Strict.Parse<T>(obj.ToJsonString());
            }
            catch (Exception e2) when (e2 is InvalidProtocolBufferException or InvalidJsonException or FormatException or ArgumentException)
            {
                throw new FormatException(e2.Message, e2);
            }
        }
    }

    private static void Clean(JsonObject obj, MessageDescriptor d, string path, List<KeyValuePair<string, string>> found)
    {
        if (IsWellKnown(d))
            return;
        foreach (var (name, value) in obj.ToList())
        {
            var fd = d.FindFieldByName(name) ?? d.Fields.InDeclarationOrder().FirstOrDefault(f => f.JsonName == name);
            if (fd is null)
            {
                found.Add(new(path + "." + name, value?.ToJsonString() ?? "null"));
                obj.Remove(name);
                continue;
            }
            if (value is null)
                continue;
            if (fd.IsMap)
            {
                var vfd = fd.MessageType.FindFieldByNumber(2);
                if (value is JsonObject map && vfd.FieldType == FieldType.Message)
                    foreach (var (_, v) in map)
                        if (v is JsonObject vo)
                            Clean(vo, vfd.MessageType, path + "." + name, found);
                continue;
            }
            if (fd.FieldType == FieldType.Message)
            {
                if (value is JsonObject o)
                    Clean(o, fd.MessageType, path + "." + fd.Name, found);
                else if (value is JsonArray a)
                    foreach (var item in a)
                        if (item is JsonObject io)
                            Clean(io, fd.MessageType, path + "." + fd.Name, found);
            }
            else if (fd.FieldType == FieldType.Enum)
            {
                if (value is JsonValue jv && jv.TryGetValue<string>(out var s) && fd.EnumType.FindValueByName(s) is null)
                {
                    found.Add(new(path + "." + fd.Name, value.ToJsonString()));
                    obj.Remove(name);
                }
                else if (value is JsonArray arr)
                {
                    for (int i = arr.Count - 1; i >= 0; i--)
                        if (arr[i] is JsonValue ev && ev.TryGetValue<string>(out var es) && fd.EnumType.FindValueByName(es) is null)
                        {
                            found.Add(new(path + "." + fd.Name, ev.ToJsonString()));
                            arr.RemoveAt(i);
                        }
                }
            }
        }
    }

    private static bool IsWellKnown(MessageDescriptor d) => d.File.Package == "google.protobuf";

    /// <summary>The found pairs as one JSON object (a path seen twice becomes an array); null when none.</summary>
    public static string? ToJson(List<KeyValuePair<string, string>> found)
    {
        ArgumentNullException.ThrowIfNull(found);
        if (found.Count == 0)
            return null;
        var o = new JsonObject();
        foreach (var g in found.GroupBy(f => f.Key, StringComparer.Ordinal))
        {
            var values = g.Select(v => Parse(v.Value)).ToList();
            o[g.Key] = values.Count == 1 ? values[0] : new JsonArray([.. values]);
        }
        return o.ToJsonString(Relaxed);
    }

    private static readonly JsonSerializerOptions Relaxed = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private static JsonNode? Parse(string text)
    {
        try
        {
            return JsonNode.Parse(text);
        }
        catch (JsonException)
        {
            return JsonValue.Create(text);
        }
    }
}
