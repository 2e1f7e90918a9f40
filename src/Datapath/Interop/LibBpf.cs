using System.Runtime.InteropServices;

namespace Forensics.Datapath.Interop;

/// <summary>
/// libbpf.so.1 entry points, by area of its API. Native names are kept so that
/// grepping libbpf's headers finds them. Pointer-returning calls set errno
/// (libbpf 1.x), int-returning calls return -errno.
/// </summary>
internal static unsafe partial class LibBpf
{
    public const string Lib = "libbpf.so.1";

    // --- objects ---------------------------------------------------------
    [LibraryImport(Lib, SetLastError = true)]
    public static partial nint bpf_object__open_mem(void* obj_buf, nuint obj_buf_sz, bpf_object_open_opts* opts);

    [LibraryImport(Lib)]
    public static partial int bpf_object__load(nint obj);

    [LibraryImport(Lib)]
    public static partial void bpf_object__close(nint obj);

    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint bpf_object__find_program_by_name(nint obj, string name);

    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint bpf_object__find_map_by_name(nint obj, string name);

    [LibraryImport(Lib)]
    public static partial nint bpf_object__next_program(nint obj, nint prog);

    [LibraryImport(Lib)]
    public static partial nint bpf_object__next_map(nint obj, nint map);

    [LibraryImport(Lib)]
    public static partial nint bpf_object__btf(nint obj);

    // --- programs --------------------------------------------------------
    [LibraryImport(Lib)]
    public static partial int bpf_program__fd(nint prog);

    [LibraryImport(Lib)]
    public static partial nint bpf_program__name(nint prog);

    [LibraryImport(Lib)]
    public static partial nint bpf_program__section_name(nint prog);

    [LibraryImport(Lib)]
    public static partial int bpf_program__set_autoload(nint prog, [MarshalAs(UnmanagedType.U1)] bool autoload);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial nint bpf_program__attach(nint prog);

    [LibraryImport(Lib)]
    public static partial int bpf_link__destroy(nint link);

    [LibraryImport(Lib)]
    public static partial int bpf_link_create(int prog_fd, int target_fd, uint attach_type, void* opts);

    [LibraryImport(Lib)]
    public static partial int bpf_prog_test_run_opts(int prog_fd, bpf_test_run_opts* opts);

    // --- maps ------------------------------------------------------------
    [LibraryImport(Lib)]
    public static partial int bpf_map__fd(nint map);

    [LibraryImport(Lib)]
    public static partial nint bpf_map__name(nint map);

    [LibraryImport(Lib)]
    public static partial int bpf_map__set_max_entries(nint map, uint max_entries);

    [LibraryImport(Lib)]
    public static partial uint bpf_map__max_entries(nint map);

    [LibraryImport(Lib)]
    public static partial uint bpf_map__key_size(nint map);

    [LibraryImport(Lib)]
    public static partial uint bpf_map__value_size(nint map);

    [LibraryImport(Lib)]
    public static partial uint bpf_map__type(nint map);

    [LibraryImport(Lib)]
    public static partial void* bpf_map__initial_value(nint map, nuint* psize);

    [LibraryImport(Lib)]
    public static partial int bpf_map_lookup_elem(int fd, void* key, void* value);

    [LibraryImport(Lib)]
    public static partial int bpf_map_update_elem(int fd, void* key, void* value, ulong flags);

    [LibraryImport(Lib)]
    public static partial int bpf_map_delete_elem(int fd, void* key);

    [LibraryImport(Lib)]
    public static partial int bpf_map_get_next_key(int fd, void* key, void* next_key);

    [LibraryImport(Lib)]
    public static partial int bpf_map_lookup_and_delete_batch(int fd, void* in_batch, void* out_batch, void* keys, void* values, uint* count, void* opts);

    [LibraryImport(Lib)]
    public static partial int bpf_map_lookup_batch(int fd, void* in_batch, void* out_batch, void* keys, void* values, uint* count, void* opts);

    [LibraryImport(Lib)]
    public static partial int libbpf_num_possible_cpus();

    // --- ring buffer -----------------------------------------------------
    [LibraryImport(Lib, SetLastError = true)]
    public static partial nint ring_buffer__new(int map_fd, delegate* unmanaged<void*, void*, nuint, int> sample_cb, void* ctx, void* opts);

    [LibraryImport(Lib)]
    public static partial int ring_buffer__add(nint rb, int map_fd, delegate* unmanaged<void*, void*, nuint, int> sample_cb, void* ctx);

    [LibraryImport(Lib)]
    public static partial int ring_buffer__poll(nint rb, int timeout_ms);

    [LibraryImport(Lib)]
    public static partial int ring_buffer__consume(nint rb);

    [LibraryImport(Lib)]
    public static partial void ring_buffer__free(nint rb);

    // --- BTF -------------------------------------------------------------
    [LibraryImport(Lib, SetLastError = true)]
    public static partial nint btf__new(void* data, uint size);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial nint btf__load_vmlinux_btf();

    [LibraryImport(Lib)]
    public static partial void btf__free(nint btf);

    [LibraryImport(Lib)]
    public static partial uint btf__type_cnt(nint btf);

    [LibraryImport(Lib)]
    public static partial btf_type* btf__type_by_id(nint btf, uint id);

    [LibraryImport(Lib)]
    public static partial nint btf__name_by_offset(nint btf, uint offset);

    [LibraryImport(Lib)]
    public static partial long btf__resolve_size(nint btf, uint type_id);

    [LibraryImport(Lib)]
    public static partial int btf__resolve_type(nint btf, uint type_id);

    // --- logging ---------------------------------------------------------
    [LibraryImport(Lib)]
    public static partial nint libbpf_set_print(delegate* unmanaged<int, byte*, nint, int> fn);

    [LibraryImport(Lib)]
    public static partial int libbpf_strerror(int err, byte* buf, nuint size);
}

/// <summary>libc calls the interop needs (formatting libbpf's va_list log lines, closing fds, syscalls).</summary>
internal static unsafe partial class LibC
{
    [LibraryImport("libc", EntryPoint = "vsnprintf")]
    public static partial int vsnprintf(byte* buf, nuint size, byte* fmt, nint va_list);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int close(int fd);

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    public static partial int fsync(int fd);

    public const int O_RDONLY = 0;
    public const int O_DIRECTORY = 0x10000;
    public const int O_NONBLOCK = 0x800;
    public const int O_CLOEXEC = 0x80000;
    public const int O_NOFOLLOW = 0x20000;
    public const int ELOOP = 40;

    /// <summary>statx(2): struct statx has one layout on every architecture (stx_mode at 0x1C).</summary>
    [LibraryImport("libc", EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int statx(int dirfd, string path, int flags, uint mask, byte* buf);

    public const int AT_EMPTY_PATH = 0x1000;
    public const uint STATX_TYPE = 0x1;
    public const uint STATX_INO = 0x100;

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int open(string path, int flags, uint mode);

    [LibraryImport("libc", EntryPoint = "flock", SetLastError = true)]
    public static partial int flock(int fd, int operation);

    [LibraryImport("libc", EntryPoint = "mkdir", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int mkdir(string path, uint mode);

    public const int O_RDWR = 2;
    public const int O_CREAT = 0x40;
    public const int LOCK_EX = 2;
    public const int LOCK_NB = 4;
    public const int EEXIST = 17;
    public const int EWOULDBLOCK = 11;

    [LibraryImport("libc", EntryPoint = "geteuid")]
    public static partial uint geteuid();

    [LibraryImport("libc", EntryPoint = "if_nametoindex", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial uint if_nametoindex(string name);

    [LibraryImport("libc", EntryPoint = "mount", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int mount(string source, string target, string fstype, ulong flags, nint data);

    [LibraryImport("libc", EntryPoint = "setns", SetLastError = true)]
    public static partial int setns(int fd, int nstype);

    [LibraryImport("libc", EntryPoint = "unshare", SetLastError = true)]
    public static partial int unshare(int flags);

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    public static partial long syscall(long number, long a1, long a2, long a3);

    [LibraryImport("libc", EntryPoint = "clock_gettime", SetLastError = true)]
    public static partial int clock_gettime(int clockid, Timespec* tp);

    public const int CLOCK_REALTIME = 0;
    public const int CLOCK_MONOTONIC = 1;
    public const int CLOCK_BOOTTIME = 7;
    public const int CLONE_NEWNET = 0x40000000;
}

[StructLayout(LayoutKind.Sequential)]
internal struct Timespec
{
    public long tv_sec;
    public long tv_nsec;
}
