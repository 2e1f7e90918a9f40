using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Interop;

namespace Forensics.Datapath.Probes;

/// <summary>
/// A process found running in /proc when the recording started: the identity
/// the exec probe would have given it, had it been watching. Times are
/// boot-time ns (CLOCK_BOOTTIME), as the probe's are.
/// </summary>
public sealed record ProcfsProcess(
    uint Pid,
    uint Ppid,
    uint Uid,
    uint Gid,
    ulong StartTimeNs,
    ulong ExecId,
    ulong ParentExecId,
    string Binary,
    IReadOnlyList<string> Argv,
    bool ArgsTruncated,
    string Cwd,
    string Comm,
    uint NetnsIno,
    ulong CgroupId)
{
    /// <summary>The process as an exec event record stamped now (see <see cref="ToExecRecord(ulong)"/>).</summary>
    public byte[] ToExecRecord() => ToExecRecord(KernelClock.MonotonicNs());

    /// <summary>
    /// The process as an exec event record (fx_exec_event, flag FX_EXEC_PROCFS), so
    /// the recorder stores it through the same decoder as the probe's events;
    /// <paramref name="ktimeNs"/> is the header's CLOCK_MONOTONIC stamp.
    /// </summary>
    public byte[] ToExecRecord(ulong ktimeNs)
    {
        var rec = new byte[Marshal.SizeOf<ExecEvent>()];
        var span = rec.AsSpan();
        span[0] = (byte)EventKind.Exec;
        span[1] = Limits.AbiVersion;
        BinaryPrimitives.WriteUInt16LittleEndian(span[2..], (ushort)rec.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(span[4..], 0);
        BinaryPrimitives.WriteUInt64LittleEndian(span[8..], ktimeNs);
        U32(span, nameof(ExecEvent.Pid), Pid);
        U32(span, nameof(ExecEvent.Tid), Pid);
        U32(span, nameof(ExecEvent.Ppid), Ppid);
        U32(span, nameof(ExecEvent.Uid), Uid);
        U32(span, nameof(ExecEvent.Gid), Gid);
        U32(span, nameof(ExecEvent.NetnsIno), NetnsIno);
        U64(span, nameof(ExecEvent.CgroupId), CgroupId);
        U64(span, nameof(ExecEvent.ExecId), ExecId);
        U64(span, nameof(ExecEvent.ParentExecId), ParentExecId);
        U64(span, nameof(ExecEvent.StartTime), StartTimeNs);

        var flags = ExecFlags.Procfs;
        var filename = Bytes(Binary, Limits.FilenameMax, ref flags, ExecFlags.FilenameTruncated);
        var cwd = Bytes(Cwd, Limits.CwdMax, ref flags, ExecFlags.CwdTruncated);
        var args = new List<byte>();
        foreach (var a in Argv)
        {
            args.AddRange(Encoding.UTF8.GetBytes(a));
            args.Add(0);
        }
        if (args.Count > Limits.ArgsMax)
        {
            args.RemoveRange(Limits.ArgsMax, args.Count - Limits.ArgsMax);
            flags |= ExecFlags.ArgsTruncated;
        }
        if (ArgsTruncated)
            flags |= ExecFlags.ArgsTruncated;
        U32(span, nameof(ExecEvent.Flags), (uint)flags);
        U16(span, nameof(ExecEvent.FilenameLen), (ushort)filename.Length);
        U16(span, nameof(ExecEvent.ArgsLen), (ushort)args.Count);
        U16(span, nameof(ExecEvent.CwdLen), (ushort)cwd.Length);
        U16(span, nameof(ExecEvent.Argc), (ushort)Argv.Count);
        var comm = Encoding.UTF8.GetBytes(Comm);
        comm.AsSpan(0, Math.Min(comm.Length, Limits.CommLen - 1)).CopyTo(span[Offset(nameof(ExecEvent.Comm))..]);
        filename.CopyTo(span[Offset(nameof(ExecEvent.Filename))..]);
        args.ToArray().CopyTo(span[Offset(nameof(ExecEvent.Args))..]);
        cwd.CopyTo(span[Offset(nameof(ExecEvent.Cwd))..]);
        return rec;
    }

    private static byte[] Bytes(string s, int max, ref ExecFlags flags, ExecFlags truncated)
    {
        var b = Encoding.UTF8.GetBytes(s);
        if (b.Length <= max)
            return b;
        flags |= truncated;
        return b[..max];
    }

    private static int Offset(string field) => (int)Marshal.OffsetOf<ExecEvent>(field);
    private static void U16(Span<byte> s, string field, ushort v) => BinaryPrimitives.WriteUInt16LittleEndian(s[Offset(field)..], v);
    private static void U32(Span<byte> s, string field, uint v) => BinaryPrimitives.WriteUInt32LittleEndian(s[Offset(field)..], v);
    private static void U64(Span<byte> s, string field, ulong v) => BinaryPrimitives.WriteUInt64LittleEndian(s[Offset(field)..], v);
}

/// <summary>Reads the running processes from /proc (kernel threads left out).</summary>
public static class ProcfsScanner
{
    private const uint PF_KTHREAD = 0x00200000;

    /// <summary>USER_HZ: /proc/PID/stat counts start times in these ticks.</summary>
    public const long ClockTicksPerSecond = 100;

    /// <summary>
    /// Every user-space process: pid, parent, start time, executable, argv, cwd,
    /// network namespace and cgroup. A process's exec id is its start time in
    /// ns plus its pid (unique: /proc counts start times in 10 ms ticks, and
    /// pids stay below 2^22); parents found in the same scan give the parent
    /// exec id. Processes that end during the scan are left out.
    /// </summary>
    public static IReadOnlyList<ProcfsProcess> Scan(string procRoot = "/proc", string cgroupRoot = "/sys/fs/cgroup")
    {
        var found = new List<ProcfsProcess>();
        foreach (var dir in Directory.EnumerateDirectories(procRoot))
        {
            if (!uint.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
                continue;
            try
            {
                if (Read(dir, pid, cgroupRoot) is { } p)
                    found.Add(p);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
            {
                // the process ended while we read it
            }
        }
        var execIds = found.ToDictionary(p => p.Pid, p => p.ExecId);
        return [.. found.Select(p => p with { ParentExecId = execIds.GetValueOrDefault(p.Ppid) }).OrderBy(p => p.Pid)];
    }

    /// <summary>One process; null for a kernel thread.</summary>
    internal static ProcfsProcess? Read(string dir, uint pid, string cgroupRoot)
    {
        var stat = File.ReadAllText(Path.Combine(dir, "stat"));
        int close = stat.LastIndexOf(')');
        var f = stat[(close + 2)..].Split(' ');
        // after "pid (comm) ": state(3) ppid(4) ... flags(9) ... starttime(22)
        uint ppid = uint.Parse(f[1], CultureInfo.InvariantCulture);
        uint pflags = uint.Parse(f[6], CultureInfo.InvariantCulture);
        if ((pflags & PF_KTHREAD) != 0)
            return null;
        ulong startTicks = ulong.Parse(f[19], CultureInfo.InvariantCulture);
        ulong startNs = startTicks * (ulong)(1_000_000_000 / ClockTicksPerSecond);

        uint uid = 0, gid = 0;
        foreach (var line in File.ReadLines(Path.Combine(dir, "status")))
        {
            if (line.StartsWith("Uid:", StringComparison.Ordinal))
                uid = uint.Parse(line[4..].Split('\t', StringSplitOptions.RemoveEmptyEntries)[0], CultureInfo.InvariantCulture);
            else if (line.StartsWith("Gid:", StringComparison.Ordinal))
                gid = uint.Parse(line[4..].Split('\t', StringSplitOptions.RemoveEmptyEntries)[0], CultureInfo.InvariantCulture);
        }

        var cmdline = File.ReadAllBytes(Path.Combine(dir, "cmdline"));
        bool truncated = cmdline.Length > Limits.ArgsMax;
        var argv = new List<string>();
        var args = cmdline.AsSpan();
        if (args.Length > 0 && args[^1] == 0)
            args = args[..^1];
        if (args.Length > 0)
            foreach (var range in args.Split((byte)0))
                argv.Add(Encoding.UTF8.GetString(args[range]));

        return new ProcfsProcess(
            Pid: pid,
            Ppid: ppid,
            Uid: uid,
            Gid: gid,
            StartTimeNs: startNs,
            ExecId: startNs + pid,
            ParentExecId: 0,
            Binary: Link(Path.Combine(dir, "exe")),
            Argv: argv,
            ArgsTruncated: truncated,
            Cwd: Link(Path.Combine(dir, "cwd")),
            Comm: File.ReadAllText(Path.Combine(dir, "comm")).TrimEnd('\n'),
            NetnsIno: Attribution.NetnsInode(Path.Combine(dir, "ns", "net")) ?? 0,
            CgroupId: CgroupId(dir, cgroupRoot));
    }

    private static string Link(string path)
    {
        try
        {
            return new FileInfo(path).LinkTarget ?? "";
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return "";
        }
    }

    /// <summary>The cgroup v2 id (the inode of the cgroup's directory), as bpf_get_current_cgroup_id() gives it.</summary>
    private static ulong CgroupId(string dir, string cgroupRoot)
    {
        foreach (var line in File.ReadLines(Path.Combine(dir, "cgroup")))
            if (line.StartsWith("0::", StringComparison.Ordinal))
                return FileStat.Inode(cgroupRoot + line[3..]) ?? 0;
        return 0;
    }
}
