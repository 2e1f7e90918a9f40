using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using Forensics.Datapath.Interop;

namespace Forensics.Datapath.Bpf;

/// <summary>
/// A BPF ELF object opened by libbpf from memory: configure (read-only
/// config, ring size, which programs load), then <see cref="Load"/>, then use
/// its programs and maps. Disposing closes the object, its maps and programs.
/// </summary>
public sealed unsafe class BpfObject : IDisposable
{
    private readonly BpfObjectHandle handle;
    private readonly byte[] elf; // libbpf keeps pointers into the buffer until load
    private GCHandle pin;
    private bool loaded;

    private BpfObject(string name, byte[] elf)
    {
        Name = name;
        this.elf = elf;
        LibBpfLog.Install();
        pin = GCHandle.Alloc(this.elf, GCHandleType.Pinned);
        var nameBytes = Encoding.UTF8.GetBytes(name + "\0");
        fixed (byte* pName = nameBytes)
        {
            var opts = new bpf_object_open_opts { sz = (nuint)sizeof(bpf_object_open_opts), object_name = pName };
            var h = LibBpf.bpf_object__open_mem((void*)pin.AddrOfPinnedObject(), (nuint)elf.Length, &opts);
            if (h == 0)
            {
                pin.Free();
                BpfException.Check(h, $"bpf_object__open_mem({name})");
            }
            handle = new BpfObjectHandle(h);
        }
    }

    public string Name { get; }

    /// <summary>Opens an ELF object from bytes.</summary>
    public static BpfObject Open(string name, byte[] elf) => new(name, elf);

    /// <summary>Opens one of the objects embedded in this assembly (bpf/NAME.bpf.o).</summary>
    public static BpfObject OpenEmbedded(string name) => new(name, EmbeddedObjects.Read(name));

    internal nint Raw => handle.DangerousGetHandle();

    /// <summary>Writes a value over a .rodata variable before load (e.g. fx_cfg).</summary>
    public void SetReadOnly<T>(string variable, in T value) where T : unmanaged
    {
        EnsureNotLoaded();
        var (offset, size) = RodataVariable(variable);
        if (size != sizeof(T))
            throw new InvalidOperationException($"{Name}: .rodata variable {variable} is {size} bytes, {typeof(T).Name} is {sizeof(T)}");
        var map = LibBpf.bpf_object__find_map_by_name(Raw, ".rodata");
        if (map == 0)
            throw new InvalidOperationException($"{Name}: no .rodata map");
        nuint total;
        var data = (byte*)LibBpf.bpf_map__initial_value(map, &total);
        if (data == null || offset + size > (int)total)
            throw new InvalidOperationException($"{Name}: .rodata initial value unavailable");
        fixed (T* p = &value)
            Buffer.MemoryCopy(p, data + offset, size, size);
    }

    /// <summary>Reads a .rodata variable's current initial value.</summary>
    public T GetReadOnly<T>(string variable) where T : unmanaged
    {
        var (offset, _) = RodataVariable(variable);
        var map = LibBpf.bpf_object__find_map_by_name(Raw, ".rodata");
        nuint total;
        var data = (byte*)LibBpf.bpf_map__initial_value(map, &total);
        return *(T*)(data + offset);
    }

    private (int Offset, int Size) RodataVariable(string variable)
    {
        using var btf = Btf.OfObject(this);
        return btf.DatasecVariable(".rodata", variable)
            ?? throw new InvalidOperationException($"{Name}: no .rodata variable {variable}");
    }

    /// <summary>Sets a map's max_entries before load (ring buffer size in bytes for ring buffers).</summary>
    public void SetMaxEntries(string map, uint entries)
    {
        EnsureNotLoaded();
        BpfException.Check(LibBpf.bpf_map__set_max_entries(FindMap(map), entries), $"bpf_map__set_max_entries({map})");
    }

    /// <summary>Marks programs not to be loaded (e.g. a probe switched off).</summary>
    public void SetAutoload(string program, bool autoload)
    {
        EnsureNotLoaded();
        BpfException.Check(LibBpf.bpf_program__set_autoload(FindProgram(program), autoload), $"bpf_program__set_autoload({program})");
    }

    /// <summary>Loads every program and creates every map in the kernel.</summary>
    public void Load()
    {
        EnsureNotLoaded();
        LibBpfLog.Clear();
        BpfException.Check(LibBpf.bpf_object__load(Raw), $"bpf_object__load({Name})");
        loaded = true;
    }

    public BpfProgram Program(string name)
    {
        EnsureLoaded();
        return new BpfProgram(this, FindProgram(name), name);
    }

    public BpfMap Map(string name)
    {
        EnsureLoaded();
        return new BpfMap(this, FindMap(name), name);
    }

    /// <summary>Names of the programs in the object.</summary>
    public IReadOnlyList<string> ProgramNames()
    {
        var names = new List<string>();
        for (nint p = LibBpf.bpf_object__next_program(Raw, 0); p != 0; p = LibBpf.bpf_object__next_program(Raw, p))
            names.Add(Marshal.PtrToStringUTF8(LibBpf.bpf_program__name(p))!);
        return names;
    }

    private nint FindProgram(string name)
    {
        var p = LibBpf.bpf_object__find_program_by_name(Raw, name);
        return p != 0 ? p : throw new InvalidOperationException($"{Name}: no program {name}");
    }

    private nint FindMap(string name)
    {
        var m = LibBpf.bpf_object__find_map_by_name(Raw, name);
        return m != 0 ? m : throw new InvalidOperationException($"{Name}: no map {name}");
    }

    private void EnsureNotLoaded()
    {
        ObjectDisposedException.ThrowIf(handle.IsClosed, this);
        if (loaded)
            throw new InvalidOperationException($"{Name} is already loaded");
    }

    private void EnsureLoaded()
    {
        ObjectDisposedException.ThrowIf(handle.IsClosed, this);
        if (!loaded)
            throw new InvalidOperationException($"{Name} is not loaded");
    }

    internal void KeepAlive() => GC.KeepAlive(this);

    public void Dispose()
    {
        handle.Dispose();
        if (pin.IsAllocated)
            pin.Free();
    }
}

/// <summary>The BPF objects compiled from bpf/ and embedded in this assembly.</summary>
public static class EmbeddedObjects
{
    public const string Datapath = "datapath";
    public const string Probes = "probes";

    public static byte[] Read(string name)
    {
        using var s = typeof(EmbeddedObjects).Assembly.GetManifestResourceStream($"bpf/{name}.bpf.o")
            ?? throw new InvalidOperationException($"no embedded BPF object bpf/{name}.bpf.o");
        var bytes = new byte[s.Length];
        s.ReadExactly(bytes);
        return bytes;
    }

    public static IEnumerable<string> Names() =>
        typeof(EmbeddedObjects).Assembly.GetManifestResourceNames()
            .Where(n => n.StartsWith("bpf/", StringComparison.Ordinal) && n.EndsWith(".bpf.o", StringComparison.Ordinal))
            .Select(n => n["bpf/".Length..^".bpf.o".Length]);

    internal static Assembly Assembly => typeof(EmbeddedObjects).Assembly;
}
