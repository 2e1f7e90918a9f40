using System.Runtime.InteropServices;

namespace Forensics.Datapath.Interop;

// The few calls the lab needs beyond loading programs: enumerating the kernel's
// BPF programs (bpftool-free), querying what is attached to an interface, and
// signalling processes.

internal static unsafe partial class LibBpf
{
    [LibraryImport(Lib, SetLastError = true)]
    public static partial int bpf_prog_get_next_id(uint start_id, uint* next_id);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int bpf_prog_get_fd_by_id(uint id);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int bpf_obj_get_info_by_fd(int bpf_fd, void* info, uint* info_len);

    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int bpf_obj_pin(int fd, string pathname);

    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int bpf_obj_get(string pathname);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int bpf_prog_query(int target_fd, uint type, uint query_flags, uint* attach_flags, uint* prog_ids, uint* prog_cnt);
}

/// <summary>The head of struct bpf_map_info (linux/bpf.h); the kernel fills as much as the length given.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct bpf_map_info_head
{
    public uint type;
    public uint id;
    public uint key_size;
    public uint value_size;
    public uint max_entries;
    public uint map_flags;
    public fixed byte name[16];
}

internal static partial class LibC
{
    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    public static partial int kill(int pid, int sig);

    public const int SIGKILL = 9;
    public const int SIGTERM = 15;
}

internal static partial class LibC
{
    [LibraryImport("libc", EntryPoint = "umount2", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int umount2(string target, int flags);

    public const int MNT_DETACH = 2;
}
