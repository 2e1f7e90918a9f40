using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Forensics.Tests;
using Json.Schema;

namespace Forensics.Format.Tests;

/// <summary>The one manifest model against its JSON Schema: every field it writes is in the schema, and old versions still read.</summary>
public class ManifestTests
{
    private static readonly Dictionary<int, JsonSchema> Schemas = new()
    {
        [1] = JsonSchema.FromText(File.ReadAllText(Repo.Path("schemas", "manifest.v1.schema.json"))),
        [2] = JsonSchema.FromText(File.ReadAllText(Repo.Path("schemas", "manifest.v2.schema.json"))),
    };

    private static JsonSchema Schema(int version) => Schemas[version];

    private static bool Valid(int version, JsonNode json)
    {
        using var doc = JsonDocument.Parse(json.ToJsonString());
        return Schema(version).Evaluate(doc.RootElement).IsValid;
    }

    /// <summary>A manifest with every field set to something other than its default.</summary>
    internal static Manifest Full()
    {
        var m = new Manifest
        {
            RecordingId = "3f0c2f4e-1111-4222-8333-944445555666",
            Node = "node-a",
            Host = new ManifestHost { Hostname = "host-a", Kernel = "6.18.0", Machine = "x64", BootId = "boot-1" },
            ToolVersion = "0.1.0",
            StartedAt = new DateTimeOffset(2026, 12, 4, 10, 0, 0, TimeSpan.Zero),
            EndedAt = new DateTimeOffset(2026, 12, 4, 10, 1, 0, TimeSpan.Zero),
            StopReason = "recovered",
            Recovered = true,
            MonotonicToUtcOffsetNs = 1_795_000_000_000_000_000,
            Config = new ManifestConfig
            {
                Kinds = ["drop", "exec"], ExcludeCidrs = ["10.0.0.0/16"], Snaplen = 128, RingBytes = 1 << 24,
                MonitorAggregation = "medium", Lab = "/lab.yaml", PoliciesSha256 = new string('a', 64), DurationSeconds = 60,
                PodCidrs = ["10.0.0.0/16"], ServiceCidrs = ["10.96.0.0/16"], NodeAddresses = ["192.0.2.1"],
            },
            EventsLost = 7,
            FilteredConnects = 3,
            UnsealedSegments = 1,
            UnsealedBytes = 4096,
            Redaction = new JsonObject { ["ips"] = "crypto-pan" },
            Attribution = new ManifestAttribution
            {
                Source = "cri unix:///run/containerd/containerd.sock (containerd 1.6.20, CRI v1)", Warnings = ["refresh: deadline exceeded"],
                Pods = 2, Containers = 3, Refreshes = 40, Failures = 1,
            },
        };
        m.Sources["kernel"] = new ManifestSource
        {
            Kind = "bpf", Detail = "ring buffers of probes, datapath", Records = 10,
            Loss = { ["drop"] = new ManifestLoss { Emitted = 10, Failed = 2, UserspaceDropped = 5 } },
            NotRecorded = ["NAT not recorded because the datapath is not attached"],
            Inputs = [new ManifestInput { Path = "in.jsonl", Bytes = 12, Sha256 = new string('b', 64) }],
        };
        m.AddFile("drop", 1, new ManifestFile { Path = "drop/node=node-a/seg-000001.parquet", Rows = 10, Bytes = 100, Sha256 = new string('c', 64) });
        m.Loss["drop"] = new ManifestLoss { Emitted = 10, Failed = 2, UserspaceDropped = 5 };
        return m;
    }

    [Fact]
    public void Manifest_EveryFieldSet_ValidatesAgainstTheV2Schema()
    {
        using var json = JsonDocument.Parse(Full().ToJson());
        var result = Schema(2).Evaluate(json.RootElement, new EvaluationOptions { OutputFormat = OutputFormat.List });
        Assert.True(result.IsValid, JsonSerializer.Serialize(result));
    }

    [Fact]
    public void Manifest_AFieldTheSchemaLacks_FailsValidation()
    {
        var json = JsonNode.Parse(Full().ToJson())!.AsObject();
        json["interfaces"] = new JsonArray();
        Assert.False(Valid(2, json));
        var nested = JsonNode.Parse(Full().ToJson())!.AsObject();
        nested["sources"]!["kernel"]!["bogus"] = 1;
        Assert.False(Valid(2, nested));
    }

    [Fact]
    public void Manifest_EveryPropertyOfTheModel_IsInTheSchema()
    {
        // Not only the fields Full() sets: every property a model type can serialize.
        var schema = JsonNode.Parse(File.ReadAllText(Repo.Path("schemas", "manifest.v2.schema.json")))!;
        void Check(Type type, JsonNode? props, string where)
        {
            Assert.NotNull(props);
            foreach (var p in type.GetProperties(BindingFlags.Public | BindingFlags.Instance))
            {
                var name = p.GetCustomAttribute<JsonPropertyNameAttribute>()?.Name;
                Assert.False(name is null, $"{type.Name}.{p.Name} has no JSON name");
                Assert.True(props![name!] is not null, $"{where}.{name} is written but not in manifest.v2.schema.json");
            }
        }
        var root = schema["properties"];
        Check(typeof(Manifest), root, "manifest");
        Check(typeof(ManifestHost), root!["host"]!["properties"], "host");
        Check(typeof(ManifestConfig), root["config"]!["properties"], "config");
        Check(typeof(ManifestTable), root["tables"]!["additionalProperties"]!["properties"], "tables.*");
        Check(typeof(ManifestFile), root["tables"]!["additionalProperties"]!["properties"]!["files"]!["items"]!["properties"], "tables.*.files[]");
        Check(typeof(ManifestLoss), schema["$defs"]!["loss"]!["properties"], "loss.*");
        var source = root["sources"]!["additionalProperties"]!["properties"];
        Check(typeof(ManifestSource), source, "sources.*");
        Check(typeof(ManifestInput), source!["inputs"]!["items"]!["properties"], "sources.*.inputs[]");
    }

    [Fact]
    public void Manifest_RoundTrip_KeepsEveryField()
    {
        var bytes = Full().ToJson();
        var again = Manifest.Parse(bytes, "test").ToJson();
        Assert.Equal(System.Text.Encoding.UTF8.GetString(bytes), System.Text.Encoding.UTF8.GetString(again));
    }

    [Fact]
    public void Manifest_Version1AsTheRecorderWroteIt_StillReads()
    {
        // a manifest of the version 1 recorder: config.interfaces, filtered_connects, pod_cidrs beside the schema
        const string v1 = """
            {"format":"forensics-recording","manifest_version":1,"recording_id":"r1","node":"n","host":{"hostname":"h","kernel":"6.18","machine":"x64","boot_id":"b"},
             "tool_version":"0.1.0","started_at":"2026-12-04T10:00:00.1234567Z","ended_at":null,"stop_reason":"recording","recovered":false,
             "monotonic_to_utc_offset_ns":5,"config":{"kinds":["drop"],"exclude_cidrs":[],"snaplen":128,"ring_bytes":16777216,"monitor_aggregation":"none",
             "interfaces":[],"lab":null,"policies_sha256":null,"duration_seconds":null,"pod_cidrs":["10.0.0.0/16"],"service_cidrs":[]},
             "tables":{"drop":{"schema_version":1,"rows":1,"files":[{"path":"drop/node=n/seg-000001.parquet","rows":1,"bytes":20,"sha256":"0000000000000000000000000000000000000000000000000000000000000000"}]}},
             "loss":{},"events_lost":0,"filtered_connects":4}
            """;
        Assert.True(Valid(1, JsonNode.Parse(v1)!));
        var m = Manifest.Parse(System.Text.Encoding.UTF8.GetBytes(v1), "v1");
        Assert.Equal(1, m.ManifestVersion);
        Assert.Equal(["10.0.0.0/16"], m.Config.PodCidrs);
        Assert.Equal(4UL, m.FilteredConnects);
        Assert.Null(m.EndedAt);
        Assert.Empty(m.Sources);
        Assert.Single(m.Tables["drop"].Files);
    }

    [Theory]
    [InlineData("""{"format":"forensics-recording","manifest_version":3,"recording_id":"r"}""", "version 3 is not supported")]
    [InlineData("""{"format":"other","manifest_version":2,"recording_id":"r"}""", "not a forensics recording manifest")]
    [InlineData("""{"format":"forensics-recording","manifest_version":2,"recording_id":""}""", "no recording_id")]
    [InlineData("""{"format":"forensics-recording","manifest_version":2,"recording_id":"r","tables":null}""", "a null where")]
    [InlineData("""{"format":""", "not a valid manifest")]
    public void Manifest_Unreadable_OneLineManifestException(string json, string expected)
    {
        var e = Assert.Throws<ManifestException>(() => Manifest.Parse(System.Text.Encoding.UTF8.GetBytes(json), "m.json"));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
    }
}
