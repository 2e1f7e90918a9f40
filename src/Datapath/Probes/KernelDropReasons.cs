using System.Globalization;
using Forensics.Datapath.Bpf;

namespace Forensics.Datapath.Probes;

/// <summary>
/// Names of the running kernel's <c>enum skb_drop_reason</c>, read from its BTF
/// (never a hard-coded table: the values move between kernel versions).
/// Names lose their SKB_DROP_REASON_ / SKB_ prefix, as the kfree_skb
/// tracepoint prints them (NO_SOCKET, TCP_CSUM, ...).
/// </summary>
public sealed class KernelDropReasons
{
    public const string EnumName = "skb_drop_reason";

    private readonly Dictionary<uint, string> names;

    public KernelDropReasons(IReadOnlyDictionary<string, long> enumValues)
    {
        ArgumentNullException.ThrowIfNull(enumValues);
        names = [];
        foreach (var (name, value) in enumValues)
            names.TryAdd((uint)value, ShortName(name));
    }

    /// <summary>From /sys/kernel/btf/vmlinux; fails when the kernel has no such enum.</summary>
    public static KernelDropReasons FromRunningKernel()
    {
        using var btf = Btf.Vmlinux();
        var values = btf.Enum(EnumName)
            ?? throw new PrerequisiteException($"the kernel's BTF has no enum {EnumName}: kernel drop reasons need Linux 5.17 or later");
        return new KernelDropReasons(values);
    }

    public int Count => names.Count;

    /// <summary>The reason's name, or its number when this kernel does not name it.</summary>
    public string Name(uint reason) => names.TryGetValue(reason, out var n) ? n : reason.ToString(CultureInfo.InvariantCulture);

    /// <summary>The value of a reason by its short name (NO_SOCKET); null when this kernel has none.</summary>
    public uint? Value(string name)
    {
        foreach (var (v, n) in names)
            if (n == name)
                return v;
        return null;
    }

    internal static string ShortName(string name)
    {
        if (name.StartsWith("SKB_DROP_REASON_", StringComparison.Ordinal))
            return name["SKB_DROP_REASON_".Length..];
        if (name.StartsWith("SKB_", StringComparison.Ordinal))
            return name["SKB_".Length..];
        return name;
    }
}
