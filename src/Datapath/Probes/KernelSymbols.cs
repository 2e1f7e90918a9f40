using System.Globalization;

namespace Forensics.Datapath.Probes;

/// <summary>
/// Resolves kernel addresses to "function+0xoffset" through /proc/kallsyms
/// (text symbols only). Without privileges the kernel shows every address
/// as zero; then nothing resolves and addresses print in hex.
/// </summary>
public sealed class KernelSymbols
{
    private readonly ulong[] addresses;
    private readonly string[] symbols;

    private KernelSymbols(ulong[] addresses, string[] symbols)
    {
        this.addresses = addresses;
        this.symbols = symbols;
    }

    public int Count => addresses.Length;

    public static KernelSymbols Load(string path = "/proc/kallsyms")
    {
        using var reader = new StreamReader(path);
        return Parse(reader);
    }

    /// <summary>Parses kallsyms lines: "ffffffff81000000 T _stext" (a module symbol ends in "\t[module]").</summary>
    public static KernelSymbols Parse(TextReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        var list = new List<(ulong Addr, string Name)>();
        for (var line = reader.ReadLine(); line is not null; line = reader.ReadLine())
        {
            var parts = line.Split([' ', '\t'], 4, StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length < 3 || parts[1].Length != 1 || parts[1][0] is not ('t' or 'T'))
                continue;
            if (!ulong.TryParse(parts[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var addr) || addr == 0)
                continue;
            list.Add((addr, parts[2]));
        }
        list.Sort((a, b) => a.Addr.CompareTo(b.Addr));
        return new KernelSymbols([.. list.Select(x => x.Addr)], [.. list.Select(x => x.Name)]);
    }

    /// <summary>The function holding the address and the offset into it; null when none does.</summary>
    public (string Symbol, ulong Offset)? Lookup(ulong address)
    {
        int i = Array.BinarySearch(addresses, address);
        if (i < 0)
            i = ~i - 1;
        if (i < 0 || address == 0)
            return null;
        return (symbols[i], address - addresses[i]);
    }

    /// <summary>"function+0xoff" as the kernel's %pS prints it, or the address in hex.</summary>
    public string Resolve(ulong address) =>
        Lookup(address) is { } s
            ? $"{s.Symbol}+0x{s.Offset.ToString("x", CultureInfo.InvariantCulture)}"
            : "0x" + address.ToString("x", CultureInfo.InvariantCulture);
}
