using System.Reflection;
using System.Runtime.InteropServices;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Bpf;

namespace Forensics.Datapath.Tests;

/// <summary>
/// The C header (as compiled into each embedded object's BTF) and the C#
/// mirrors agree: every struct's size and every field's offset and size, and
/// every enum constant. No root needed: BTF is parsed in user space.
/// </summary>
public class AbiTests
{
    private static readonly Dictionary<string, Type> Structs = new()
    {
        ["fx_hdr"] = typeof(Hdr),
        ["fx_tuple"] = typeof(Abi.Tuple),
        ["fx_dp_meta"] = typeof(DpMeta),
        ["fx_drop_event"] = typeof(DropEvent),
        ["fx_policy_event"] = typeof(PolicyEvent),
        ["fx_nat_event"] = typeof(NatEvent),
        ["fx_trace_event"] = typeof(TraceEvent),
        ["fx_capture_event"] = typeof(CaptureEvent),
        ["fx_exec_event"] = typeof(ExecEvent),
        ["fx_exit_event"] = typeof(ExitEvent),
        ["fx_connect_event"] = typeof(ConnectEvent),
        ["fx_kdrop_event"] = typeof(KdropEvent),
        ["fx_emit_stats"] = typeof(EmitStats),
        ["fx_config"] = typeof(Config),
    };

    private static readonly Dictionary<string, (Type Type, string Prefix)> Enums = new()
    {
        ["fx_kind"] = (typeof(EventKind), "FX_KIND_"),
        ["fx_obs_point"] = (typeof(ObsPoint), "FX_OBS_"),
        ["fx_dir"] = (typeof(Dir), "FX_DIR_"),
        ["fx_ct_state"] = (typeof(CtState), "FX_CT_"),
        ["fx_verdict_action"] = (typeof(VerdictAction), "FX_ACTION_"),
        ["fx_match_type"] = (typeof(PolicyMatch), "FX_MATCH_"),
        ["fx_nat_kind"] = (typeof(NatKind), "FX_NAT_"),
        ["fx_connect_kind"] = (typeof(ConnectKind), "FX_CONNECT_"),
        ["fx_src_file"] = (typeof(SrcFile), "FX_FILE_"),
        ["fx_exec_flags"] = (typeof(ExecFlags), "FX_EXEC_"),
    };

    public static TheoryData<string> Objects() => [.. EmbeddedObjects.Names()];

    internal static string Pascal(string snake) =>
        string.Concat(snake.Split('_', StringSplitOptions.RemoveEmptyEntries).Select(w => char.ToUpperInvariant(w[0]) + w[1..].ToLowerInvariant()));

    [Theory]
    [MemberData(nameof(Objects))]
    public void EventStructs_CompiledObject_MatchCSharpMirrors(string obj)
    {
        using var btf = Btf.FromElf(EmbeddedObjects.Read(obj));
        var unmirrored = btf.StructNames("fx_").Where(n => !Structs.ContainsKey(n) && !MapAbiTests.Structs.ContainsKey(n)
            && !MapAbiTests.InternalStructs.Contains(n) && n is not "fx_abi_anchor" and not "fx_proc").ToList();
        Assert.Empty(unmirrored);
        foreach (var (cName, type) in Structs)
        {
            var s = btf.Struct(cName);
            Assert.True(s is not null, $"{obj}: struct {cName} missing from BTF");
            Assert.True(s!.Size == Marshal.SizeOf(type), $"{cName}: C {s.Size} bytes, C# {type.Name} {Marshal.SizeOf(type)}");
            var fields = type.GetFields(BindingFlags.Public | BindingFlags.Instance);
            Assert.True(fields.Length == s.Members.Count, $"{cName}: C has {s.Members.Count} fields, C# {type.Name} has {fields.Length}");
            foreach (var m in s.Members)
            {
                var f = type.GetField(Pascal(m.Name));
                Assert.True(f is not null, $"{type.Name} lacks field {Pascal(m.Name)} for {cName}.{m.Name}");
                int off = (int)Marshal.OffsetOf(type, f!.Name);
                Assert.True(off == m.Offset, $"{cName}.{m.Name}: C offset {m.Offset}, C# {off}");
                int size = f.FieldType.IsEnum ? Marshal.SizeOf(Enum.GetUnderlyingType(f.FieldType)) : Marshal.SizeOf(f.FieldType);
                Assert.True(size == m.Size, $"{cName}.{m.Name}: C {m.Size} bytes ({m.TypeName}), C# {size} ({f.FieldType.Name})");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Objects))]
    public void AbiEnums_CompiledObject_MatchCSharpMirrors(string obj)
    {
        using var btf = Btf.FromElf(EmbeddedObjects.Read(obj));
        foreach (var (cName, (type, prefix)) in Enums)
        {
            var values = btf.Enum(cName);
            Assert.True(values is not null, $"{obj}: enum {cName} missing from BTF");
            var csharp = Enum.GetNames(type).ToDictionary(n => n, n => Convert.ToInt64(Enum.Parse(type, n), System.Globalization.CultureInfo.InvariantCulture));
            foreach (var (c, v) in values!)
            {
                var name = Pascal(c[prefix.Length..]);
                Assert.True(csharp.TryGetValue(name, out var cv), $"{type.Name} lacks {name} for {c}");
                Assert.True(cv == v, $"{c} = {v} in C, {type.Name}.{name} = {cv}");
            }
            Assert.True(values.Count == csharp.Count, $"{cName}: C has {values.Count} constants, {type.Name} has {csharp.Count}");
        }

        var limits = btf.Enum("fx_limits")!;
        foreach (var (c, v) in limits)
        {
            var f = typeof(Limits).GetField(Pascal(c["FX_".Length..]));
            Assert.True(f is not null, $"Limits lacks {Pascal(c["FX_".Length..])} for {c}");
            Assert.Equal(v, Convert.ToInt64(f!.GetValue(null), System.Globalization.CultureInfo.InvariantCulture));
        }
    }

    [Fact]
    public void Pascal_SnakeNames_ConvertAsMirrorsAreNamed()
    {
        Assert.Equal("TcpFlags", Pascal("tcp_flags"));
        Assert.Equal("L3Only", Pascal("L3_ONLY"));
        Assert.Equal("RevDnat", Pascal("REV_DNAT"));
    }
}
