using System.Reflection;
using System.Runtime.InteropServices;
using Forensics.Datapath.Bpf;
using Forensics.Datapath.Probes;

namespace Forensics.Datapath.Tests;

/// <summary>The probe maps user space writes (exec ids, excluded CIDRs) agree with their C structs.</summary>
public class ProbeMapAbiTests
{
    /// <summary>Map keys and values that user space reads or writes, with their C# mirrors.</summary>
    internal static readonly Dictionary<string, Type> MapStructs = new()
    {
        ["fx_proc"] = typeof(ProcEntry),
        ["fx_lpm_v4"] = typeof(LpmV4Key),
        ["fx_lpm_v6"] = typeof(LpmV6Key),
        ["fx_conn_sel"] = typeof(ConnSel),
        ["fx_conn_filter"] = typeof(ConnFilter),
        ["fx_conn_addr_key"] = typeof(ConnAddrKey),
    };

    /// <summary>Structs only the BPF programs use (scratch space, tracepoint contexts, in-flight state).</summary>
    internal static readonly HashSet<string> KernelOnlyStructs =
    [
        "fx_conn_proc", "fx_path_scratch", "fx_sys_call", "fx_sys_enter_ctx", "fx_sys_exit_ctx", "fx_udp_key",
        "fx_cwd_walk", "fx_cwd_write", "fx_sockaddr", "fx_user_msghdr",
    ];

    [Fact]
    public void ProbeMapStructs_ProbesObject_MatchCSharpMirrors()
    {
        using var btf = Btf.FromElf(EmbeddedObjects.Read(EmbeddedObjects.Probes));
        foreach (var (cName, type) in MapStructs)
        {
            var s = btf.Struct(cName);
            Assert.True(s is not null, $"struct {cName} missing from the probes' BTF");
            Assert.True(s!.Size == Marshal.SizeOf(type), $"{cName}: C {s.Size} bytes, C# {type.Name} {Marshal.SizeOf(type)}");
            var fields = type.GetFields(BindingFlags.Public | BindingFlags.Instance);
            Assert.Equal(s.Members.Count, fields.Length);
            foreach (var m in s.Members)
            {
                var f = type.GetField(AbiTests.Pascal(m.Name));
                Assert.True(f is not null, $"{type.Name} lacks {AbiTests.Pascal(m.Name)} for {cName}.{m.Name}");
                Assert.Equal(m.Offset, (int)Marshal.OffsetOf(type, f!.Name));
                Assert.Equal(m.Size, Marshal.SizeOf(f.FieldType));
            }
        }
    }

    [Fact]
    public void ProbePrograms_ProbesObject_EveryProgramBelongsToAProbe()
    {
        using var obj = BpfObject.OpenEmbedded(EmbeddedObjects.Probes); // open only: no kernel needed
        Assert.Equal(obj.ProgramNames().Order(StringComparer.Ordinal), Probes.TracingProbes.ProgramProbes.Keys.Order(StringComparer.Ordinal));
    }
}
