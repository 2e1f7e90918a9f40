using System.Runtime.InteropServices;
using Forensics.Datapath.Interop;

namespace Forensics.Datapath.Bpf;

/// <summary>Typed access to a loaded map; valid while its object is.</summary>
public sealed unsafe class BpfMap
{
    private readonly BpfObject owner;
    private readonly nint map;

    internal BpfMap(BpfObject owner, nint map, string name)
    {
        this.owner = owner;
        this.map = map;
        Name = name;
    }

    public string Name { get; }
    public int Fd => LibBpf.bpf_map__fd(map);
    public int KeySize => (int)LibBpf.bpf_map__key_size(map);
    public int ValueSize => (int)LibBpf.bpf_map__value_size(map);
    public uint MaxEntries => LibBpf.bpf_map__max_entries(map);
    internal uint Type => LibBpf.bpf_map__type(map);

    private bool PerCpu => Type is BpfConst.BPF_MAP_TYPE_PERCPU_ARRAY or BpfConst.BPF_MAP_TYPE_PERCPU_HASH or BpfConst.BPF_MAP_TYPE_LRU_PERCPU_HASH;

    public static int PossibleCpus => Math.Max(1, LibBpf.libbpf_num_possible_cpus());

    public bool TryLookup<TKey, TValue>(in TKey key, out TValue value) where TKey : unmanaged where TValue : unmanaged
    {
        CheckSizes<TKey, TValue>();
        if (PerCpu)
            throw new InvalidOperationException($"{Name} is per-CPU: use LookupPerCpu");
        TValue v;
        int rc;
        fixed (TKey* k = &key)
            rc = LibBpf.bpf_map_lookup_elem(Fd, k, &v);
        owner.KeepAlive();
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
        owner.KeepAlive();
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
        owner.KeepAlive();
    }

    /// <summary>Deletes a key; false when it was not there.</summary>
    public bool Delete<TKey>(in TKey key) where TKey : unmanaged
    {
        int rc;
        fixed (TKey* k = &key)
            rc = LibBpf.bpf_map_delete_elem(Fd, k);
        owner.KeepAlive();
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
        owner.KeepAlive();
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
