using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Forensics.Datapath.Interop;

namespace Forensics.Datapath.Bpf;

public sealed record BtfMember(string Name, int Offset, int Size, string TypeName, int BitSize);

public sealed record BtfStruct(string Name, int Size, IReadOnlyList<BtfMember> Members);

/// <summary>
/// Type information of a BPF object (its .BTF section) or of the running
/// kernel (/sys/kernel/btf/vmlinux), read through libbpf.
/// </summary>
public sealed unsafe class Btf : IDisposable
{
    private readonly BtfHandle handle;

    private Btf(nint h, bool owns = true) => handle = new BtfHandle(h, owns);

    /// <summary>An opened object's BTF, as libbpf fixed it up (data section offsets filled in); owned by the object.</summary>
    internal static Btf OfObject(BpfObject obj) =>
        new(BpfException.Check(LibBpf.bpf_object__btf(obj.Raw), $"bpf_object__btf({obj.Name})"), owns: false);

    /// <summary>The .BTF section of an ELF object.</summary>
    public static Btf FromElf(ReadOnlySpan<byte> elf)
    {
        LibBpfLog.Install();
        var section = ElfSection(elf, ".BTF") ?? throw new InvalidOperationException("the object has no .BTF section");
        var data = elf.Slice(section.Offset, section.Size);
        fixed (byte* p = data)
            return new Btf(BpfException.Check(LibBpf.btf__new(p, (uint)data.Length), "btf__new"));
    }

    /// <summary>The running kernel's BTF; fails with a clear message without CONFIG_DEBUG_INFO_BTF.</summary>
    public static Btf Vmlinux()
    {
        LibBpfLog.Install();
        if (!File.Exists("/sys/kernel/btf/vmlinux"))
            throw new PrerequisiteException("the kernel has no BTF (/sys/kernel/btf/vmlinux is missing): a kernel built with CONFIG_DEBUG_INFO_BTF=y is needed");
        return new Btf(BpfException.Check(LibBpf.btf__load_vmlinux_btf(), "btf__load_vmlinux_btf"));
    }

    private nint H => handle.DangerousGetHandle();

    private string NameOf(uint off) => Marshal.PtrToStringUTF8(LibBpf.btf__name_by_offset(H, off)) ?? "";

    private IEnumerable<uint> Ids()
    {
        uint n = LibBpf.btf__type_cnt(H);
        for (uint id = 1; id < n; id++)
            yield return id;
    }

    private uint FindId(string name, int kind)
    {
        foreach (var id in Ids())
        {
            var t = LibBpf.btf__type_by_id(H, id);
            if (t->Kind == kind && NameOf(t->name_off) == name)
                return id;
        }
        return 0;
    }

    /// <summary>A struct by name, with its members' byte offsets and sizes; null when absent.</summary>
    public BtfStruct? Struct(string name)
    {
        uint id = FindId(name, BpfConst.BTF_KIND_STRUCT);
        if (id == 0)
            return null;
        var t = LibBpf.btf__type_by_id(H, id);
        var members = new List<BtfMember>();
        var m = (btf_member*)(t + 1);
        for (int i = 0; i < t->Vlen; i++)
        {
            uint bitOffset = t->KindFlag ? m[i].offset & 0xffffff : m[i].offset;
            int bitSize = t->KindFlag ? (int)(m[i].offset >> 24) : 0;
            members.Add(new BtfMember(NameOf(m[i].name_off), (int)(bitOffset / 8),
                (int)LibBpf.btf__resolve_size(H, m[i].type), TypeName(m[i].type), bitSize));
        }
        return new BtfStruct(name, (int)t->size_or_type, members);
    }

    /// <summary>Every struct whose name starts with <paramref name="prefix"/>.</summary>
    public IReadOnlyList<string> StructNames(string prefix)
    {
        var names = new List<string>();
        foreach (var id in Ids())
        {
            var t = LibBpf.btf__type_by_id(H, id);
            if (t->Kind == BpfConst.BTF_KIND_STRUCT)
            {
                var n = NameOf(t->name_off);
                if (n.StartsWith(prefix, StringComparison.Ordinal))
                    names.Add(n);
            }
        }
        return names;
    }

    /// <summary>An enum's constants by name; null when absent.</summary>
    public IReadOnlyDictionary<string, long>? Enum(string name)
    {
        foreach (var id in Ids())
        {
            var t = LibBpf.btf__type_by_id(H, id);
            if ((t->Kind == BpfConst.BTF_KIND_ENUM || t->Kind == BpfConst.BTF_KIND_ENUM64) && NameOf(t->name_off) == name)
                return EnumValues(t);
        }
        return null;
    }

    private Dictionary<string, long> EnumValues(btf_type* t)
    {
        var values = new Dictionary<string, long>();
        if (t->Kind == BpfConst.BTF_KIND_ENUM)
        {
            var e = (btf_enum*)(t + 1);
            bool signed = t->KindFlag;
            for (int i = 0; i < t->Vlen; i++)
                values[NameOf(e[i].name_off)] = signed ? e[i].val : (uint)e[i].val;
        }
        else
        {
            var e = (uint*)(t + 1); // name_off, val_lo32, val_hi32
            for (int i = 0; i < t->Vlen; i++)
                values[NameOf(e[i * 3])] = (long)(e[i * 3 + 1] | ((ulong)e[i * 3 + 2] << 32));
        }
        return values;
    }

    /// <summary>Offset and size of a variable inside a data section (.rodata, .bss).</summary>
    public (int Offset, int Size)? DatasecVariable(string section, string variable)
    {
        uint id = FindId(section, BpfConst.BTF_KIND_DATASEC);
        if (id == 0)
            return null;
        var t = LibBpf.btf__type_by_id(H, id);
        var vars = (btf_var_secinfo*)(t + 1);
        for (int i = 0; i < t->Vlen; i++)
        {
            var v = LibBpf.btf__type_by_id(H, vars[i].type);
            if (NameOf(v->name_off) == variable)
                return ((int)vars[i].offset, (int)vars[i].size);
        }
        return null;
    }

    private string TypeName(uint id)
    {
        var t = LibBpf.btf__type_by_id(H, id);
        return t->Kind switch
        {
            BpfConst.BTF_KIND_ARRAY => TypeName(((uint*)(t + 1))[0]) + "[" + ((uint*)(t + 1))[2] + "]",
            BpfConst.BTF_KIND_PTR => TypeName(t->size_or_type) + "*",
            BpfConst.BTF_KIND_CONST or BpfConst.BTF_KIND_VOLATILE => TypeName(t->size_or_type),
            _ => NameOf(t->name_off) is { Length: > 0 } n ? n : "(anon)",
        };
    }

    /// <summary>A section of an ELF64 little-endian file, by name.</summary>
    internal static (int Offset, int Size)? ElfSection(ReadOnlySpan<byte> elf, string name)
    {
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[4] != 2)
            throw new InvalidOperationException("not an ELF64 object");
        long shoff = BinaryPrimitives.ReadInt64LittleEndian(elf[0x28..]);
        int shentsize = BinaryPrimitives.ReadUInt16LittleEndian(elf[0x3a..]);
        int shnum = BinaryPrimitives.ReadUInt16LittleEndian(elf[0x3c..]);
        int shstrndx = BinaryPrimitives.ReadUInt16LittleEndian(elf[0x3e..]);
        long strOff = BinaryPrimitives.ReadInt64LittleEndian(elf.Slice((int)shoff + shstrndx * shentsize, shentsize)[0x18..]);
        for (int i = 0; i < shnum; i++)
        {
            var h = elf.Slice((int)shoff + i * shentsize, shentsize);
            int nameOff = BinaryPrimitives.ReadInt32LittleEndian(h);
            var nameSpan = elf[(int)(strOff + nameOff)..];
            int end = nameSpan.IndexOf((byte)0);
            if (System.Text.Encoding.ASCII.GetString(nameSpan[..end]) == name)
                return ((int)BinaryPrimitives.ReadInt64LittleEndian(h[0x18..]), (int)BinaryPrimitives.ReadInt64LittleEndian(h[0x20..]));
        }
        return null;
    }

    public void Dispose() => handle.Dispose();
}
