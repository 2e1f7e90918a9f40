using System.Globalization;
using System.Text;
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

    private static readonly JsonParser Lenient = new(JsonParser.Settings.Default.WithIgnoreUnknownFields(true));

    /// <summary>
    /// Parses one protojson line into <typeparamref name="T"/>. Members the descriptor does not declare
    /// and enum names it does not know are found in one pass over the line (path -> JSON text into
    /// <paramref name="found"/>) and left out of the message; throws <see cref="FormatException"/> when the
    /// line is not such a message.
    /// </summary>
    public static T ParseJson<T>(string line, List<KeyValuePair<string, string>> found) where T : IMessage<T>, new()
    {
        ArgumentNullException.ThrowIfNull(line);
        ArgumentNullException.ThrowIfNull(found);
        var d = new T().Descriptor;
        var bytes = Encoding.UTF8.GetBytes(line);
        try
        {
            var reader = new Utf8JsonReader(bytes, new JsonReaderOptions { MaxDepth = 128 });
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
                throw new FormatException("not a JSON object");
            Scan(ref reader, bytes, d, d.Name, found);
            if (reader.Read())
                throw new FormatException("more than one JSON value on the line");
        }
        catch (JsonException e)
        {
            throw new FormatException("not JSON: " + e.Message, e);
        }
        try
        {
            return Lenient.Parse<T>(line);
        }
        catch (Exception e) when (e is InvalidProtocolBufferException or InvalidJsonException or FormatException or ArgumentException)
        {
            throw new FormatException(e.Message, e);
        }
    }

    /// <summary>Walks an object whose StartObject was just read, up to its EndObject, against the descriptor.</summary>
    private static void Scan(ref Utf8JsonReader r, byte[] line, MessageDescriptor d, string path, List<KeyValuePair<string, string>> found)
    {
        bool wellKnown = d.File.Package == "google.protobuf";
        while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
        {
            var name = r.GetString()!;
            var fd = wellKnown ? null : Field(d, name);
            long start = r.BytesConsumed;
            if (!r.Read())
                throw new JsonException("truncated");
            if (wellKnown)
            {
                r.Skip();
                continue;
            }
            if (fd is null)
            {
                int from = ValueStart(line, start);
                r.Skip();
                found.Add(new(path + "." + name, Encoding.UTF8.GetString(line, from, (int)r.BytesConsumed - from)));
                continue;
            }
            Value(ref r, line, fd, path + "." + fd.Name, found);
        }
        if (r.TokenType != JsonTokenType.EndObject)
            throw new JsonException("not an object");
    }

    private static void Value(ref Utf8JsonReader r, byte[] line, FieldDescriptor fd, string path, List<KeyValuePair<string, string>> found)
    {
        if (r.TokenType == JsonTokenType.StartArray && fd.IsRepeated)
        {
            while (r.Read() && r.TokenType != JsonTokenType.EndArray)
                Single(ref r, line, fd, path, found);
            return;
        }
        if (fd.IsMap && r.TokenType == JsonTokenType.StartObject)
        {
            var vfd = fd.MessageType.FindFieldByNumber(2);
            while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
            {
                r.Read();
                if (vfd.FieldType == FieldType.Message && r.TokenType == JsonTokenType.StartObject)
                    Scan(ref r, line, vfd.MessageType, path, found);
                else
                    r.Skip();
            }
            return;
        }
        Single(ref r, line, fd, path, found);
    }

    private static void Single(ref Utf8JsonReader r, byte[] line, FieldDescriptor fd, string path, List<KeyValuePair<string, string>> found)
    {
        if (fd.FieldType == FieldType.Message && r.TokenType == JsonTokenType.StartObject)
            Scan(ref r, line, fd.MessageType, path, found);
        else if (fd.FieldType == FieldType.Enum && r.TokenType == JsonTokenType.String && fd.EnumType.FindValueByName(r.GetString()!) is null)
            found.Add(new(path, "\"" + r.GetString() + "\""));
        else
            r.Skip();
    }

    private static int ValueStart(byte[] line, long afterName)
    {
        int i = (int)afterName;
        while (i < line.Length && (line[i] is (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n' or (byte)':'))
            i++;
        return i;
    }

    private static FieldDescriptor? Field(MessageDescriptor d, string name) =>
        d.FindFieldByName(name) ?? d.Fields.InDeclarationOrder().FirstOrDefault(f => f.JsonName == name);

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
