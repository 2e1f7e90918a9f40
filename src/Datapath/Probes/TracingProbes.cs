using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Bpf;
using Forensics.Datapath.Interop;

namespace Forensics.Datapath.Probes;

/// <summary>The probes of bpf/probes.bpf.c, each switchable on its own.</summary>
[Flags]
public enum ProbeSet
{
    None = 0,
    Exec = 1,
    Exit = 2,
    Connect = 4,
    Kdrop = 8,
    All = Exec | Exit | Connect | Kdrop,
}

/// <summary>How the probes are loaded.</summary>
public sealed record ProbeOptions
{
    /// <summary>Ring buffer and configuration shared with every event source.</summary>
    public EventOptions Events { get; init; } = new();

    /// <summary>Which probes run.</summary>
    public ProbeSet Enabled { get; init; } = ProbeSet.All;

    /// <summary>Connect destinations never reported (Tetragon's NotDAddr), only counted.</summary>
    public IReadOnlyList<IPNetwork> ExcludedCidrs { get; init; } = [];

    /// <summary>TracingPolicy selectors: a class of connects they name reports only what one of them selects (the rest counted).</summary>
    public IReadOnlyList<ConnectFilter> ConnectFilters { get; init; } = [];
}

/// <summary>fx_procs value (bpf/lib/process.h).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct ProcEntry
{
    public ulong ExecId;
    public ulong StartTime;
    /// <summary>FNV-1a 64 of the path the image was executed by (<see cref="BinarySet.Hash"/>).</summary>
    public ulong BinaryHash;
}

[InlineArray(8)] internal struct Ushort8 { private ushort e0; }
[InlineArray(8)] internal struct Ulong8 { private ulong e0; }

/// <summary>fx_conn_sel (bpf/lib/filter.h): one selector of the connect filter.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct ConnSel
{
    public byte Flags;
    public byte Families;
    public byte DportN;
    public byte SportN;
    public byte BinaryN;
    public Bytes3 Pad;
    public Ushort8 DportLo;
    public Ushort8 DportHi;
    public Ushort8 SportLo;
    public Ushort8 SportHi;
    public Ulong8 Binary;
}

[StructLayout(LayoutKind.Sequential)]
internal struct ConnFilter
{
    public byte Enabled;
    public byte Count;
    public ushort Pad;
}

[StructLayout(LayoutKind.Sequential)]
internal struct ConnAddrKey
{
    public uint Prefixlen;
    public byte Slot;
    public byte Set;
    public byte Family;
    public byte Pad;
    public Bytes16 Addr;
}

[StructLayout(LayoutKind.Sequential)]
internal struct LpmV4Key
{
    public uint Prefixlen;
    public Bytes4 Addr;
}

[StructLayout(LayoutKind.Sequential)]
internal struct LpmV6Key
{
    public uint Prefixlen;
    public Bytes16 Addr;
}

/// <summary>
/// The tracing probes (Tetragon's half): process exec and exit, TCP/UDP
/// connects with an in-kernel destination filter, and kernel packet drops,
/// on tracepoints. Load, then <see cref="Attach"/>, then
/// <see cref="SeedProcesses"/> so processes older than the recording have an
/// identity too; read events from <see cref="EventsMap"/>.
/// </summary>
public sealed class TracingProbes : IEventSource
{
    public const string ExcludeV4Map = "fx_exclude_v4";
    public const string ExcludeV6Map = "fx_exclude_v6";
    public const string FilterStatsMap = "fx_filter_stats";
    public const string ProcsMap = "fx_procs";

    /// <summary>Entries of each exclusion trie (FX_EXCLUDE_MAX in bpf/lib/filter.h).</summary>
    public const int ExcludeMax = 1024;

    /// <summary>The programs of each probe. exec/exit keep the exec ids that exit and connect events carry.</summary>
    internal static readonly IReadOnlyDictionary<string, ProbeSet> ProgramProbes = new Dictionary<string, ProbeSet>
    {
        ["fx_exec"] = ProbeSet.Exec | ProbeSet.Exit | ProbeSet.Connect,
        ["fx_fork"] = ProbeSet.Exec | ProbeSet.Exit | ProbeSet.Connect,
        ["fx_exit"] = ProbeSet.Exec | ProbeSet.Exit | ProbeSet.Connect,
        ["fx_tcp_state"] = ProbeSet.Connect,
        ["fx_tcp_retransmit"] = ProbeSet.Connect,
        ["fx_connect_enter"] = ProbeSet.Connect,
        ["fx_connect_exit"] = ProbeSet.Connect,
        ["fx_sendto_enter"] = ProbeSet.Connect,
        ["fx_sendto_exit"] = ProbeSet.Connect,
        ["fx_sendmsg_enter"] = ProbeSet.Connect,
        ["fx_sendmsg_exit"] = ProbeSet.Connect,
        ["fx_kfree_skb"] = ProbeSet.Kdrop,
    };

    private readonly BpfObject obj;
    private readonly List<BpfLink> links = [];
    private readonly List<string> loadedPrograms = [];
    private readonly BpfMap filterStats;

    private TracingProbes(BpfObject obj, ProbeOptions options, IReadOnlyList<string> programs)
    {
        this.obj = obj;
        Options = options;
        loadedPrograms.AddRange(programs);
        EventsMap = obj.Map(EventChannel.EventsMap);
        EmitStatsMap = obj.Map(EventChannel.StatsMap);
        filterStats = obj.Map(FilterStatsMap);
        Procs = obj.Map(ProcsMap);
    }

    public string Name => EmbeddedObjects.Probes;

    public ProbeOptions Options { get; }

    public BpfMap EventsMap { get; }

    public BpfMap EmitStatsMap { get; }

    internal BpfMap Procs { get; }

    /// <summary>The programs loaded for the enabled probes.</summary>
    public IReadOnlyList<string> Programs => loadedPrograms;

    /// <summary>Opens, configures and loads the probes; the enabled ones are attached by <see cref="Attach"/>.</summary>
    public static TracingProbes Load(ProbeOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.ExcludedCidrs.Any(c => c.BaseAddress.AddressFamily is not (AddressFamily.InterNetwork or AddressFamily.InterNetworkV6)))
            throw new ArgumentException("excluded CIDRs must be IPv4 or IPv6", nameof(options));
        foreach (var family in options.ExcludedCidrs.Select(Normalize).GroupBy(c => c.BaseAddress.AddressFamily))
            if (family.Count() > ExcludeMax)
                throw new ArgumentException($"{family.Count()} excluded {(family.Key == AddressFamily.InterNetwork ? "IPv4" : "IPv6")} CIDRs: at most {ExcludeMax}", nameof(options));

        var obj = BpfObject.OpenEmbedded(EmbeddedObjects.Probes);
        try
        {
            EventChannel.Configure(obj, options.Events with { Kinds = EffectiveKinds(options) });
            var programs = new List<string>();
            foreach (var (program, probes) in ProgramProbes)
            {
                bool on = (options.Enabled & probes) != 0;
                obj.SetAutoload(program, on);
                if (on)
                    programs.Add(program);
            }
            obj.Load();
            var p = new TracingProbes(obj, options, programs);
            p.SetExcluded(options.ExcludedCidrs);
            p.SetConnectFilters(options.ConnectFilters);
            return p;
        }
        catch
        {
            obj.Dispose();
            throw;
        }
    }

    /// <summary>The event kinds the kernel emits: those asked for, of the probes enabled.</summary>
    internal static HashSet<EventKind> EffectiveKinds(ProbeOptions options)
    {
        var kinds = new HashSet<EventKind>();
        void Add(ProbeSet probe, EventKind kind)
        {
            if ((options.Enabled & probe) != 0 && (options.Events.Kinds.Count == 0 || options.Events.Kinds.Contains(kind)))
                kinds.Add(kind);
        }
        Add(ProbeSet.Exec, EventKind.Exec);
        Add(ProbeSet.Exit, EventKind.Exit);
        Add(ProbeSet.Connect, EventKind.Connect);
        Add(ProbeSet.Kdrop, EventKind.Kdrop);
        if (kinds.Count == 0)
            kinds.Add(EventKind.None); // an empty set would mean "all"
        return kinds;
    }

    private void SetExcluded(IReadOnlyList<IPNetwork> cidrs)
    {
        var v4 = obj.Map(ExcludeV4Map);
        var v6 = obj.Map(ExcludeV6Map);
        foreach (var cidr in cidrs)
        {
            var c = Normalize(cidr);
            var bytes = c.BaseAddress.GetAddressBytes();
            if (bytes.Length == 4)
            {
                var k = new LpmV4Key { Prefixlen = (uint)c.PrefixLength };
                bytes.CopyTo((Span<byte>)k.Addr);
                v4.Update(k, (byte)1);
            }
            else
            {
                var k = new LpmV6Key { Prefixlen = (uint)c.PrefixLength };
                bytes.CopyTo((Span<byte>)k.Addr);
                v6.Update(k, (byte)1);
            }
        }
    }

    /// <summary>Programs the TracingPolicy selectors (fx_conn_filters, fx_conn_sels, fx_conn_addrs).</summary>
    private void SetConnectFilters(IReadOnlyList<ConnectFilter> filters)
    {
        var filterMap = obj.Map("fx_conn_filters");
        var selMap = obj.Map("fx_conn_sels");
        var addrMap = obj.Map("fx_conn_addrs");
        foreach (var f in filters)
        {
            if (f.Selectors.Count > TracingPolicyReader.MaxSelectors)
                throw new ArgumentException($"{f.Selectors.Count} selectors on {f.Class} connects: at most {TracingPolicyReader.MaxSelectors}", nameof(filters));
            for (int i = 0; i < f.Selectors.Count; i++)
            {
                var s = f.Selectors[i];
                byte slot = (byte)((int)f.Class * TracingPolicyReader.MaxSelectors + i);
                var sel = new ConnSel { Families = s.Families };
                void Addrs(IReadOnlyList<IPNetwork>? cidrs, byte set, byte flag)
                {
                    if (cidrs is null)
                        return;
                    sel.Flags |= flag;
                    foreach (var c in cidrs.Select(Normalize))
                    {
                        var k = new ConnAddrKey { Prefixlen = 32 + (uint)c.PrefixLength, Slot = slot, Set = set, Family = MapAddressFamily(c) };
                        c.BaseAddress.GetAddressBytes().CopyTo((Span<byte>)k.Addr);
                        addrMap.Update(k, (byte)1);
                    }
                }
                Addrs(s.DAddrIn, 0, 1);
                Addrs(s.DAddrNotIn, 1, 2);
                Addrs(s.SAddrIn, 2, 4);
                Addrs(s.SAddrNotIn, 3, 8);
                if (s.DPort is { } dp)
                {
                    sel.DportN = (byte)dp.Ranges.Count;
                    for (int r = 0; r < dp.Ranges.Count; r++)
                        (sel.DportLo[r], sel.DportHi[r]) = ((ushort)dp.Ranges[r].First, (ushort)dp.Ranges[r].Last);
                    if (dp.Negate)
                        sel.Flags |= 16;
                }
                if (s.SPort is { } sp)
                {
                    sel.SportN = (byte)sp.Ranges.Count;
                    for (int r = 0; r < sp.Ranges.Count; r++)
                        (sel.SportLo[r], sel.SportHi[r]) = ((ushort)sp.Ranges[r].First, (ushort)sp.Ranges[r].Last);
                    if (sp.Negate)
                        sel.Flags |= 32;
                }
                if (s.Binaries is { } b)
                {
                    sel.BinaryN = (byte)b.Paths.Count;
                    for (int r = 0; r < b.Paths.Count; r++)
                        sel.Binary[r] = BinarySet.Hash(b.Paths[r]);
                    if (b.Negate)
                        sel.Flags |= 64;
                }
                selMap.Update((uint)slot, sel);
            }
            // the class last: the kernel never sees a count without its selectors
            filterMap.Update((uint)f.Class, new ConnFilter { Enabled = 1, Count = (byte)f.Selectors.Count });
        }
    }

    private static byte MapAddressFamily(IPNetwork c) => c.BaseAddress.AddressFamily == AddressFamily.InterNetwork ? (byte)2 : (byte)10;

    /// <summary>
    /// An IPv4-mapped IPv6 CIDR (::ffff:10.0.0.0/104) as the IPv4 CIDR it means: the
    /// kernel looks IPv4-mapped destinations up in the IPv4 trie.
    /// </summary>
    internal static IPNetwork Normalize(IPNetwork c) =>
        c.BaseAddress.IsIPv4MappedToIPv6 && c.PrefixLength >= 96
            ? new IPNetwork(c.BaseAddress.MapToIPv4(), c.PrefixLength - 96)
            : c;

    /// <summary>Attaches every loaded program. Idempotent.</summary>
    public void Attach()
    {
        if (links.Count > 0)
            return;
        try
        {
            foreach (var name in loadedPrograms)
                links.Add(obj.Program(name).Attach());
        }
        catch
        {
            Detach();
            throw;
        }
    }

    /// <summary>Detaches every program; the maps stay readable.</summary>
    public void Detach()
    {
        foreach (var l in links)
            l.Dispose();
        links.Clear();
    }

    /// <summary>Connects not reported because their destination was excluded, summed over CPUs.</summary>
    public ulong FilteredConnects
    {
        get
        {
            ulong sum = 0;
            foreach (var v in filterStats.LookupPerCpu<uint, ulong>(0u))
                sum += v;
            return sum;
        }
    }

    /// <summary>Connects not reported because no TracingPolicy selector selected them, summed over CPUs.</summary>
    public ulong UnselectedConnects
    {
        get
        {
            ulong sum = 0;
            foreach (var v in filterStats.LookupPerCpu<uint, ulong>(1u))
                sum += v;
            return sum;
        }
    }

    /// <summary>Emitted and failed events per kind (see <see cref="EventChannel.ReadCounters"/>).</summary>
    public IReadOnlyDictionary<EventKind, EmitStats> Counters() => EventChannel.ReadCounters(EmitStatsMap);

    /// <summary>
    /// Scans /proc and gives every process running now an exec id in the kernel
    /// (fx_procs), unless the exec probe already gave it one, so that a connect
    /// or exit by a process older than the recording names its process image.
    /// Call after <see cref="Attach"/> (a process that execs or forks meanwhile keeps
    /// the probe's id and is not returned). Returns the processes, for the recording's exec table
    /// (<see cref="ProcfsProcess.ToExecRecord"/>).
    /// </summary>
    public IReadOnlyList<ProcfsProcess> SeedProcesses(string procRoot = "/proc")
    {
        var found = ProcfsScanner.Scan(procRoot);
        var result = new List<ProcfsProcess>(found.Count);
        foreach (var p in found)
        {
            var entry = new ProcEntry { ExecId = p.ExecId, StartTime = p.StartTimeNs, BinaryHash = BinarySet.Hash(p.Binary) };
            try
            {
                Procs.Update(p.Pid, entry, BpfConst.BPF_NOEXIST);
                result.Add(p);
            }
            catch (BpfException e) when (e.Errno == 17)
            {
                // EEXIST: the probe saw it exec (or fork) meanwhile; its own events name it
            }
        }
        return result;
    }

    /// <summary>The exec id the kernel holds for a process, if any.</summary>
    public ulong? ExecIdOf(uint pid) => Procs.TryLookup<uint, ProcEntry>(pid, out var e) ? e.ExecId : null;

    public void Dispose()
    {
        Detach();
        obj.Dispose();
    }
}
