using System.Runtime.InteropServices;
using Forensics.Datapath.Interop;

namespace Forensics.Datapath.Bpf;

/// <summary>
/// Typed access to a map: one of a loaded object's (valid while the object is), or one another process
/// pinned in bpffs (<see cref="OpenPinned"/>, valid until disposed).
/// </summary>
public sealed unsafe class BpfMap : IDisposable
{
    private readonly object owner; // the BpfObject, or the FdHandle of a pinned map: kept alive across each call
    private readonly FdHandle? ownedFd;

    internal BpfMap(BpfObject owner, nint map, string name)
    {
        this.owner = owner;
        Name = name;
        Fd = LibBpf.bpf_map__fd(map);
        KeySize = (int)LibBpf.bpf_map__key_size(map);
        ValueSize = (int)LibBpf.bpf_map__value_size(map);
        MaxEntries = LibBpf.bpf_map__max_entries(map);
        Type = LibBpf.bpf_map__type(map);
    }

    private BpfMap(FdHandle fd, string name, in bpf_map_info_head info)
    {
        owner = fd;
        ownedFd = fd;
        Name = name;
        Fd = fd.Fd;
        KeySize = (int)info.key_size;
        ValueSize = (int)info.value_size;
        MaxEntries = info.max_entries;
        Type = info.type;
    }

    /// <summary>Opens a map pinned at <paramref name="path"/> (bpffs) by another process; dispose to close it.</summary>
    public static BpfMap OpenPinned(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        int fd = LibBpf.bpf_obj_get(path);
        if (fd < 0)
            throw new BpfException($"bpf_obj_get({path})", Marshal.GetLastPInvokeError() is var e and > 0 ? e : -fd);
        var handle = new FdHandle(fd);
        bpf_map_info_head info = default;
        uint len = (uint)sizeof(bpf_map_info_head);
        int rc = LibBpf.bpf_obj_get_info_by_fd(fd, &info, &len);
        if (rc != 0)
        {
            handle.Dispose();
            throw new BpfException($"bpf_obj_get_info_by_fd({path})", Marshal.GetLastPInvokeError() is var e2 and > 0 ? e2 : -rc);
        }
        return new BpfMap(handle, Path.GetFileName(path), info);
    }

    /// <summary>Pins the map at <paramref name="path"/> in bpffs, so that other processes can open it.</summary>
    public void Pin(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        int rc = LibBpf.bpf_obj_pin(Fd, path);
        KeepAlive();
        if (rc != 0)
            throw new BpfException($"bpf_obj_pin({Name}, {path})", Marshal.GetLastPInvokeError() is var e and > 0 ? e : -rc);
    }

    public string Name { get; }
    public int Fd { get; }
    public int KeySize { get; }
    public int ValueSize { get; }
    public uint MaxEntries { get; }
    internal uint Type { get; }

    public static int PossibleCpus => Math.Max(1, LibBpf.libbpf_num_possible_cpus());

    private void KeepAlive() => GC.KeepAlive(owner);

    /// <summary>Closes a pinned map's descriptor; nothing for a map of a loaded object (the object owns it).</summary>
    public void Dispose() => ownedFd?.Dispose();

    private bool PerCpu => Type is BpfConst.BPF_MAP_TYPE_PERCPU_ARRAY or BpfConst.BPF_MAP_TYPE_PERCPU_HASH or BpfConst.BPF_MAP_TYPE_LRU_PERCPU_HASH;

    public bool TryLookup<TKey, TValue>(in TKey key, out TValue value) where TKey : unmanaged where TValue : unmanaged
    {
        CheckSizes<TKey, TValue>();
        if (PerCpu)
            throw new InvalidOperationException($"{Name} is per-CPU: use LookupPerCpu");
        TValue v;
        int rc;
        fixed (TKey* k = &key)
            rc = LibBpf.bpf_map_lookup_elem(Fd, k, &v);
        KeepAlive();
        if (rc == -2) // ENOENT
        {
            value = default;
            return false;
        }
        BpfException.Check(rc, $"bpf_map_lookup_elem({Name})");
        value = v;
        return true;
    }

    /// <summary>One value per possible CPU.</summary>
    public TValue[] LookupPerCpu<TKey, TValue>(in TKey key) where TKey : unmanaged where TValue : unmanaged
    {
        if (sizeof(TKey) != KeySize)
            throw new ArgumentException($"{Name}: key is {KeySize} bytes, {typeof(TKey).Name} is {sizeof(TKey)}");
        int cpus = PossibleCpus;
        int stride = (sizeof(TValue) + 7) & ~7;
        var buf = new byte[stride * cpus];
        int rc;
        fixed (TKey* k = &key)
        fixed (byte* b = buf)
            rc = LibBpf.bpf_map_lookup_elem(Fd, k, b);
        KeepAlive();
        if (rc == -2)
            return new TValue[cpus];
        BpfException.Check(rc, $"bpf_map_lookup_elem({Name})");
        var result = new TValue[cpus];
        for (int i = 0; i < cpus; i++)
            result[i] = MemoryMarshal.Read<TValue>(buf.AsSpan(i * stride, sizeof(TValue)));
        return result;
    }

    public void Update<TKey, TValue>(in TKey key, in TValue value, ulong flags = BpfConst.BPF_ANY) where TKey : unmanaged where TValue : unmanaged
    {
        CheckSizes<TKey, TValue>();
        fixed (TKey* k = &key)
        fixed (TValue* v = &value)
            BpfException.Check(LibBpf.bpf_map_update_elem(Fd, k, v, flags), $"bpf_map_update_elem({Name})");
        KeepAlive();
    }

    /// <summary>Deletes a key; false when it was not there.</summary>
    public bool Delete<TKey>(in TKey key) where TKey : unmanaged
    {
        int rc;
        fixed (TKey* k = &key)
            rc = LibBpf.bpf_map_delete_elem(Fd, k);
        KeepAlive();
        if (rc == -2)
            return false;
        BpfException.Check(rc, $"bpf_map_delete_elem({Name})");
        return true;
    }

    /// <summary>Every key, in the kernel's iteration order.</summary>
    public List<TKey> Keys<TKey>() where TKey : unmanaged
    {
        if (sizeof(TKey) != KeySize)
            throw new ArgumentException($"{Name}: key is {KeySize} bytes, {typeof(TKey).Name} is {sizeof(TKey)}");
        var keys = new List<TKey>();
        TKey cur, next;
        TKey* prev = null;
        while (true)
        {
            int rc = LibBpf.bpf_map_get_next_key(Fd, prev, &next);
            if (rc == -2)
                break;
            BpfException.Check(rc, $"bpf_map_get_next_key({Name})");
            keys.Add(next);
            cur = next;
            prev = &cur;
            if (keys.Count > 10_000_000)
                throw new InvalidOperationException($"{Name}: iteration did not end");
        }
        KeepAlive();
        return keys;
    }

    /// <summary>Every (key, value) pair of a non-per-CPU map.</summary>
    public List<KeyValuePair<TKey, TValue>> Entries<TKey, TValue>() where TKey : unmanaged where TValue : unmanaged
    {
        var list = new List<KeyValuePair<TKey, TValue>>();
        foreach (var k in Keys<TKey>())
            if (TryLookup<TKey, TValue>(k, out var v))
                list.Add(new(k, v));
        return list;
    }

    private void CheckSizes<TKey, TValue>() where TKey : unmanaged where TValue : unmanaged
    {
        if (sizeof(TKey) != KeySize || sizeof(TValue) != ValueSize)
            throw new ArgumentException($"{Name}: key/value are {KeySize}/{ValueSize} bytes, {typeof(TKey).Name}/{typeof(TValue).Name} are {sizeof(TKey)}/{sizeof(TValue)}");
    }
}
