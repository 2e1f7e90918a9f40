using System.Net;
using System.Runtime.InteropServices;
using System.Text;

namespace Forensics.Datapath.Abi;

/// <summary>Pure decode functions over a ring buffer record (exported for tests and the recorder).</summary>
public static class EventReader
{
    /// <summary>The record's header, or throws when the record is shorter than one.</summary>
    public static Hdr Header(ReadOnlySpan<byte> record) => Read<Hdr>(record);

    /// <summary>The record as <typeparamref name="T"/>; throws when the record is too short for it.</summary>
    public static T Read<T>(ReadOnlySpan<byte> record) where T : struct
    {
        int size = Marshal.SizeOf<T>();
        if (record.Length < size)
            throw new InvalidDataException($"{typeof(T).Name}: record of {record.Length} bytes, need {size}");
        return MemoryMarshal.Read<T>(record);
    }

    /// <summary>True when the record's header names a kind and version this build reads.</summary>
    public static bool IsKnown(in Hdr hdr) => hdr.Version == Limits.AbiVersion && hdr.Kind is > EventKind.None and < EventKind.Max;

    public static IPAddress Source(in Tuple t) => Address(t.Saddr, t.Family);

    public static IPAddress Destination(in Tuple t) => Address(t.Daddr, t.Family);

    public static IPAddress Address(in Bytes16 addr, byte family)
    {
        ReadOnlySpan<byte> b = addr;
        return family == 10 ? new IPAddress(b) : new IPAddress(b[..4]);
    }

    /// <summary>A NUL-terminated (or length-bounded) byte string as UTF-8.</summary>
    /// <summary>The first <paramref name="len"/> bytes of a fixed-size field (all of it when len is larger).</summary>
    public static ReadOnlySpan<byte> Head(ReadOnlySpan<byte> bytes, int len) => bytes[..Math.Clamp(len, 0, bytes.Length)];

    public static string CString(ReadOnlySpan<byte> bytes, int maxLen = int.MaxValue)
    {
        bytes = Head(bytes, maxLen);
        int nul = bytes.IndexOf((byte)0);
        return Encoding.UTF8.GetString(nul >= 0 ? bytes[..nul] : bytes);
    }

    /// <summary>argv as the exec probe read it: NUL-separated, argv[0] included.</summary>
    public static string[] Argv(in ExecEvent ev)
    {
        return Argv(Head(ev.Args, ev.ArgsLen));
    }

    /// <summary>argv from the NUL-separated bytes the probe read.</summary>
    public static string[] Argv(ReadOnlySpan<byte> args)
    {
        if (args.Length > 0 && args[^1] == 0)
            args = args[..^1];
        var list = new List<string>();
        foreach (var range in args.Split((byte)0))
            list.Add(Encoding.UTF8.GetString(args[range]));
        return [.. list];
    }
}
