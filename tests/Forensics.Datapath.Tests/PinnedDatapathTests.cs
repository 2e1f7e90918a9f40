using System.Net;
using System.Text.Json;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Control;

namespace Forensics.Datapath.Tests;

/// <summary>The control plane's file a running datapath keeps beside its pinned maps.</summary>
public class PinnedDatapathTests
{
    [Fact]
    public void ControlPlaneFile_WrittenAndRead_SameState()
    {
        var cp = new DatapathSnapshot(
            DateTimeOffset.UnixEpoch.AddSeconds(1_800_000_000),
            [new EndpointInfo(1, "backend-2", "default", IPAddress.Parse("10.0.0.2"), 256, 7, true, false)],
            [new IdentityInfo(256, ["k8s:app=backend"], "workload"), new IdentityInfo(16777217, ["cidr:203.0.113.0/24"], "cidr")],
            [],
            [new PolicyInfo("p", "default", "spec: {}\n")],
            [new PolicyEntry(1, "default/backend-2", Dir.Ingress, 256, 6, 8080, true, false, ["default/p"])],
            [new ServiceInfo(1, "backend-service", "default", IPAddress.Parse("10.0.1.100"), 8080, "TCP",
                [new BackendInfo(0, IPAddress.Parse("10.0.0.2"), 8080, "default/backend-2")])],
            [],
            []);
        var dir = Directory.CreateTempSubdirectory("fxcp-").FullName;
        try
        {
            var path = Path.Combine(dir, "control.json");
            PinnedDatapath.WriteControlPlane(path, cp);
            var read = PinnedDatapath.ReadControlPlane(path);
            Assert.Equal(JsonSerializer.Serialize(cp with { Taken = default }, Options), JsonSerializer.Serialize(read with { Taken = default }, Options));
            Assert.Equal(IPAddress.Parse("10.0.0.2"), read.Endpoints[0].Ip);
            Assert.Equal(["default/p"], read.PolicyEntries[0].Policies);
            if (OperatingSystem.IsLinux())
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void ControlPlaneFile_NotOne_InvalidData()
    {
        var path = Path.GetTempFileName();
        try
        {
            File.WriteAllText(path, "{\"Endpoints\": 5}");
            Assert.Throws<InvalidDataException>(() => PinnedDatapath.ReadControlPlane(path));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void RuleResolver_RuleSetsOfTheControlFile_NamedAndANewSetReadAfterTheOwnerRewritesIt()
    {
        var allow = new PolicyRuleRef("CiliumNetworkPolicy", "default", "backend-from-frontend-8080", "spec.ingress[0]");
        var deny = new PolicyRuleRef("CiliumClusterwideNetworkPolicy", "", "no-world", "spec.egressDeny[0]");
        DatapathSnapshot Cp(params PolicyRuleSet[] sets) => new(DateTimeOffset.UnixEpoch, [], [], [], [], [], [], [], []) { Rules = sets };
        var dir = Directory.CreateTempSubdirectory("fxcp-").FullName;
        try
        {
            var path = Path.Combine(dir, "control.json");
            PinnedDatapath.WriteControlPlane(path, Cp(new PolicyRuleSet(1, [allow])));
            var rulesOf = PinnedDatapath.RuleResolver(path);
            Assert.Equal([allow], rulesOf(1));
            Assert.Empty(rulesOf(0)); // default deny: no rule
            Assert.Empty(rulesOf(2)); // not given (yet)

            // a policy added while the datapath runs: the owner rewrites the file with the new set
            PinnedDatapath.WriteControlPlane(path, Cp(new PolicyRuleSet(1, [allow]), new PolicyRuleSet(2, [deny])));
            File.SetLastWriteTimeUtc(path, DateTime.UtcNow.AddSeconds(5)); // a new time even within the file system's clock tick
            Assert.Equal([deny], rulesOf(2));

            // the owner gone: ids known stay named, the rest unnamed, nothing thrown
            File.Delete(path);
            Assert.Equal([allow], rulesOf(1));
            Assert.Empty(rulesOf(3));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    private static readonly JsonSerializerOptions Options = new() { Converters = { new AddressAsText() } };

    private sealed class AddressAsText : System.Text.Json.Serialization.JsonConverter<IPAddress>
    {
        public override IPAddress Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => IPAddress.Parse(reader.GetString()!);
        public override void Write(Utf8JsonWriter writer, IPAddress value, JsonSerializerOptions options) => writer.WriteStringValue(value.ToString());
    }
}
