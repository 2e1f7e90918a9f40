using System.Runtime.InteropServices;

namespace Forensics.Datapath.Interop;

/// <summary>Prefix of libbpf's bpf_object_open_opts; libbpf reads only the first <c>sz</c> bytes.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct bpf_object_open_opts
{
    public nuint sz;
    public byte* object_name;
}

[StructLayout(LayoutKind.Sequential)]
internal unsafe struct bpf_test_run_opts
{
    public nuint sz;
    public void* data_in;
    public void* data_out;
    public uint data_size_in;
    public uint data_size_out;
    public void* ctx_in;
    public void* ctx_out;
    public uint ctx_size_in;
    public uint ctx_size_out;
    public uint retval;
    public int repeat;
    public uint duration;
    public uint flags;
    public uint cpu;
    public uint batch_size;
}

/// <summary>struct btf_type: name_off, info (vlen:16, kind:5, kind_flag:1), size/type.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct btf_type
{
    public uint name_off;
    public uint info;
    public uint size_or_type;

    public readonly int Vlen => (int)(info & 0xffff);
    public readonly int Kind => (int)((info >> 24) & 0x1f);
    public readonly bool KindFlag => (info >> 31) != 0;
}

[StructLayout(LayoutKind.Sequential)]
internal struct btf_member
{
    public uint name_off;
    public uint type;
    public uint offset;
}

[StructLayout(LayoutKind.Sequential)]
internal struct btf_enum
{
    public uint name_off;
    public int val;
}

[StructLayout(LayoutKind.Sequential)]
internal struct btf_var_secinfo
{
    public uint type;
    public uint offset;
    public uint size;
}

internal static class BpfConst
{
    public const uint BPF_TCX_INGRESS = 46;
    public const uint BPF_TCX_EGRESS = 47;
    public const uint BPF_MAP_TYPE_PERCPU_HASH = 5;
    public const uint BPF_MAP_TYPE_PERCPU_ARRAY = 6;
    public const uint BPF_MAP_TYPE_LRU_PERCPU_HASH = 10;
    public const uint BPF_MAP_TYPE_RINGBUF = 27;
    public const ulong BPF_ANY = 0;
    public const ulong BPF_NOEXIST = 1;
    public const ulong BPF_EXIST = 2;

    public const int BTF_KIND_INT = 1;
    public const int BTF_KIND_PTR = 2;
    public const int BTF_KIND_ARRAY = 3;
    public const int BTF_KIND_STRUCT = 4;
    public const int BTF_KIND_UNION = 5;
    public const int BTF_KIND_ENUM = 6;
    public const int BTF_KIND_TYPEDEF = 8;
    public const int BTF_KIND_VOLATILE = 9;
    public const int BTF_KIND_CONST = 10;
    public const int BTF_KIND_VAR = 14;
    public const int BTF_KIND_DATASEC = 15;
    public const int BTF_KIND_ENUM64 = 19;
}
