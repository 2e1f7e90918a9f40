using System.Reflection;
using System.Runtime.InteropServices;
using Forensics.Datapath.Bpf;
using Forensics.Datapath.Control;

namespace Forensics.Datapath.Tests;

/// <summary>
/// bpf/include/fx_maps.h (as compiled into the datapath object's BTF) and the
/// control plane's mirrors in Control/MapTypes.cs agree: sizes, offsets, enum
/// values. No root needed.
/// </summary>
public class MapAbiTests
{
    internal static readonly Dictionary<string, Type> Structs = new()
    {
        ["fx_ipcache_key"] = typeof(IpcacheKey),
        ["fx_ipcache_value"] = typeof(IpcacheValue),
        ["fx_endpoint"] = typeof(Endpoint),
        ["fx_policy_key"] = typeof(PolicyKey),
        ["fx_policy_value"] = typeof(PolicyValue),
        ["fx_ct_key"] = typeof(CtKey),
        ["fx_ct_entry"] = typeof(CtEntry),
        ["fx_ct_stats"] = typeof(CtStats),
        ["fx_ct_closed_key"] = typeof(CtClosedKey),
        ["fx_service_key"] = typeof(ServiceKey),
        ["fx_service"] = typeof(Service),
        ["fx_backend_key"] = typeof(BackendKey),
        ["fx_backend"] = typeof(Backend),
        ["fx_lb_flow"] = typeof(LbFlow),
        ["fx_affinity_key"] = typeof(AffinityKey),
        ["fx_affinity"] = typeof(Affinity),
        ["fx_nodeport_entry"] = typeof(NodeportEntry),
        ["fx_nat_entry"] = typeof(NatEntry),
        ["fx_nat_config"] = typeof(NatConfig),
        ["fx_dns_answer"] = typeof(DnsAnswer),
    };

    /// <summary>BPF-side working structs user space never reads.</summary>
    internal static readonly HashSet<string> InternalStructs = ["fx_ctx", "fx_pkt", "fx_maps_anchor", "fx_verdict", "fx_lb_result", "fx_frag_key", "fx_frag_ports", "fx_dns_record"];

    private static readonly Dictionary<string, (Type Type, string Prefix)> Enums = new()
    {
        ["fx_drop_reason"] = (typeof(DropReason), "FX_DROP_"),
        ["fx_reserved_identity"] = (typeof(ReservedIdentity), "FX_ID_"),
        ["fx_endpoint_flags"] = (typeof(EndpointFlags), "FX_EP_"),
        ["fx_policy_flags"] = (typeof(PolicyFlags), "FX_POLICY_"),
        ["fx_ct_flags"] = (typeof(CtFlags), "FX_CTF_"),
        ["fx_nat_flags"] = (typeof(NatFlags), "FX_NATF_"),
    };

    [Fact]
    public void MapStructs_DatapathObject_MatchCSharpMirrors()
    {
        using var btf = Btf.FromElf(EmbeddedObjects.Read(EmbeddedObjects.Datapath));
        foreach (var (cName, type) in Structs)
        {
            var s = btf.Struct(cName);
            Assert.True(s is not null, $"struct {cName} missing from BTF");
            Assert.True(s!.Size == Marshal.SizeOf(type), $"{cName}: C {s.Size} bytes, C# {type.Name} {Marshal.SizeOf(type)}");
            var fields = type.GetFields(BindingFlags.Public | BindingFlags.Instance);
            Assert.True(fields.Length == s.Members.Count, $"{cName}: C has {s.Members.Count} fields, C# {type.Name} has {fields.Length}");
            foreach (var m in s.Members)
            {
                var f = type.GetField(AbiTests.Pascal(m.Name));
                Assert.True(f is not null, $"{type.Name} lacks field {AbiTests.Pascal(m.Name)} for {cName}.{m.Name}");
                int off = (int)Marshal.OffsetOf(type, f!.Name);
                Assert.True(off == m.Offset, $"{cName}.{m.Name}: C offset {m.Offset}, C# {off}");
                int size = f.FieldType.IsEnum ? Marshal.SizeOf(Enum.GetUnderlyingType(f.FieldType)) : Marshal.SizeOf(f.FieldType);
                Assert.True(size == m.Size, $"{cName}.{m.Name}: C {m.Size} bytes ({m.TypeName}), C# {size} ({f.FieldType.Name})");
            }
        }
    }

    [Fact]
    public void MapEnums_DatapathObject_MatchCSharpMirrors()
    {
        using var btf = Btf.FromElf(EmbeddedObjects.Read(EmbeddedObjects.Datapath));
        foreach (var (cName, (type, prefix)) in Enums)
        {
            var values = btf.Enum(cName);
            Assert.True(values is not null, $"enum {cName} missing from BTF");
            var csharp = Enum.GetNames(type).Where(n => n != "None")
                .ToDictionary(n => n, n => Convert.ToInt64(Enum.Parse(type, n), System.Globalization.CultureInfo.InvariantCulture));
            foreach (var (c, v) in values!)
            {
                var name = AbiTests.Pascal(c[prefix.Length..]);
                Assert.True(csharp.TryGetValue(name, out var cv), $"{type.Name} lacks {name} for {c}");
                Assert.True(cv == v, $"{c} = {v} in C, {type.Name}.{name} = {cv}");
            }
            Assert.True(values.Count == csharp.Count, $"{cName}: C has {values.Count} constants, {type.Name} has {csharp.Count}");
        }

        var limits = btf.Enum("fx_map_limits")!;
        foreach (var (c, v) in limits)
        {
            var f = typeof(MapLimits).GetField(AbiTests.Pascal(c["FX_".Length..]));
            Assert.True(f is not null, $"MapLimits lacks {AbiTests.Pascal(c["FX_".Length..])} for {c}");
            Assert.Equal(v, Convert.ToInt64(f!.GetValue(null), System.Globalization.CultureInfo.InvariantCulture));
        }

        var prefixes = btf.Enum("fx_policy_prefix")!;
        Assert.Equal(4, prefixes.Count);
        foreach (var (c, v) in prefixes)
        {
            var f = typeof(PolicyPrefix).GetField(AbiTests.Pascal(c["FX_POLICY_PREFIX_".Length..]));
            Assert.True(f is not null, $"PolicyPrefix lacks {AbiTests.Pascal(c["FX_POLICY_PREFIX_".Length..])} for {c}");
            Assert.Equal(v, Convert.ToInt64(f!.GetValue(null), System.Globalization.CultureInfo.InvariantCulture));
        }
    }
}
