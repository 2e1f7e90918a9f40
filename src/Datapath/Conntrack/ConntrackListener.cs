using System.Globalization;
using System.Runtime.InteropServices;
using Forensics.Datapath.Interop;
using Forensics.Datapath.Lab;

namespace Forensics.Datapath.Conntrack;

/// <summary>What to listen to.</summary>
public sealed record ConntrackOptions
{
    /// <summary>The network namespace (a /run/netns bind mount, /proc/PID/ns/net); null: the caller's.</summary>
    public string? NetnsPath { get; init; }

    /// <summary>Receive buffer per event socket. When it is full the kernel drops events and counts them (see <see cref="ConntrackCounts.Dropped"/>).</summary>
    public int ReceiveBufferBytes { get; init; } = 16 << 20;

    /// <summary>Subscribe to NFNLGRP_CONNTRACK_UPDATE too (state changes between new and destroy).</summary>
    public bool Updates { get; init; } = true;

    /// <summary>
    /// The nfnetlink subsystem dumps are asked of. Tests name one the kernel does not have, which it
    /// answers as a kernel without ctnetlink answers a conntrack dump (EINVAL).
    /// </summary>
    internal byte Subsystem { get; init; } = CtNetlink.NFNL_SUBSYS_CTNETLINK;
}

/// <summary>The conntrack sysctls of a network namespace (net.netfilter.*); null when unreadable.</summary>
public sealed record ConntrackSysctls(int? Events, int? Acct, int? Timestamp)
{
    /// <summary>Reads them as seen from the calling thread's network namespace.</summary>
    public static ConntrackSysctls ReadHere() => new(
        Read("nf_conntrack_events"), Read("nf_conntrack_acct"), Read("nf_conntrack_timestamp"));

    private static int? Read(string name)
    {
        try
        {
            var text = File.ReadAllText("/proc/sys/net/netfilter/" + name).Trim();
            return int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}

/// <summary>Per event type: what arrived, what the kernel dropped, how often the socket overran.</summary>
public readonly record struct ConntrackCounts(ulong Received, ulong Dropped, ulong Overruns, ulong Malformed);

/// <summary>Gets each entry; the entry is a copy, but only valid to keep as a value.</summary>
public delegate void ConntrackHandler(in ConntrackEntry entry);

/// <summary>
/// The kernel's conntrack table of one network namespace over ctnetlink: table dumps
/// (IPCTNL_MSG_CT_GET) and the new / update / destroy event groups, each on its own socket
/// so that what the kernel could not deliver (a full receive buffer: ENOBUFS) is counted
/// exactly per event type from the socket's drop counter. Poll from one thread.
/// </summary>
public sealed unsafe class ConntrackListener : IDisposable
{
    private const int Slots = 64;
    private const int SlotBytes = 4096;
    private const int DumpBytes = 64 << 10;
    private const int DrainLimit = 4096;

    private readonly CtSocket request;
    private readonly CtSocket?[] events = new CtSocket?[4];
    private readonly ulong[] received = new ulong[4];
    private readonly ulong[] overruns = new ulong[4];
    private readonly ulong[] malformed = new ulong[4];
    private readonly byte[] slots = GC.AllocateArray<byte>(Slots * SlotBytes, pinned: true);
    private readonly mmsghdr[] vec = GC.AllocateArray<mmsghdr>(Slots, pinned: true);
    private readonly iovec[] iov = GC.AllocateArray<iovec>(Slots, pinned: true);
    private readonly byte[] dumpBuffer = new byte[DumpBytes];
    private uint seq = (uint)Environment.TickCount;

    private readonly byte subsystem;

    private ConntrackListener(CtSocket request, ConntrackSysctls sysctls, ulong? netnsInode, byte subsystem)
    {
        this.request = request;
        this.subsystem = subsystem;
        Sysctls = sysctls;
        NetnsInode = netnsInode;
        fixed (byte* b = slots)
        fixed (iovec* io = iov)
        {
            for (int i = 0; i < Slots; i++)
            {
                iov[i].iov_base = b + i * SlotBytes;
                iov[i].iov_len = SlotBytes;
                vec[i].msg_hdr.msg_iov = io + i;
                vec[i].msg_hdr.msg_iovlen = 1;
            }
        }
    }

    /// <summary>The namespace's conntrack sysctls, read when the listener was opened.</summary>
    public ConntrackSysctls Sysctls { get; }

    /// <summary>Inode of the network namespace listened to (null when not known).</summary>
    public ulong? NetnsInode { get; }

    /// <summary>Receive buffer the kernel granted per event socket.</summary>
    public int ReceiveBufferBytes => events.FirstOrDefault(e => e is not null)?.ReceiveBufferBytes ?? 0;

    /// <summary>Dumps that saw NLM_F_DUMP_INTR (the table changed while it was read).</summary>
    public int InterruptedDumps { get; private set; }

    /// <summary>
    /// Opens the sockets in the namespace and subscribes to the event groups. Throws
    /// <see cref="ConntrackException"/> with a one-line reason (no permission, no ctnetlink, no namespace).
    /// </summary>
    public static ConntrackListener Open(ConntrackOptions? options = null)
    {
        options ??= new ConntrackOptions();
        if (options.NetnsPath is null)
            return OpenHere(options, NetNamespace.InodeOfProcess(Environment.ProcessId));
        if (!File.Exists(options.NetnsPath))
            throw new ConntrackException($"network namespace {options.NetnsPath} does not exist");
        ConntrackListener? result = null;
        ConntrackException? error = null;
        try
        {
            NetNamespace.RunAt(options.NetnsPath, () =>
            {
                try
                {
                    result = OpenHere(options, ThreadNetnsInode());
                }
                catch (ConntrackException e)
                {
                    error = e;
                }
                return 0;
            });
        }
        catch (LabException e)
        {
            throw new ConntrackException(e.Message, e);
        }
        return result ?? throw error ?? new ConntrackException($"cannot open ctnetlink in {options.NetnsPath}");
    }

    private static ulong? ThreadNetnsInode()
    {
        try
        {
            var link = new FileInfo("/proc/thread-self/ns/net").LinkTarget;
            return link is not null && link.StartsWith("net:[", StringComparison.Ordinal)
                && ulong.TryParse(link.AsSpan(5, link.Length - 6), NumberStyles.None, CultureInfo.InvariantCulture, out var ino) ? ino : null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    private static ConntrackListener OpenHere(ConntrackOptions options, ulong? inode)
    {
        var sysctls = ConntrackSysctls.ReadHere();
        var request = CtSocket.Open(0, DumpBytes * 4);
        var l = new ConntrackListener(request, sysctls, inode, options.Subsystem);
        try
        {
            l.events[(int)CtEventType.New] = CtSocket.Open(CtNetlink.NFNLGRP_CONNTRACK_NEW, options.ReceiveBufferBytes);
            if (options.Updates)
                l.events[(int)CtEventType.Update] = CtSocket.Open(CtNetlink.NFNLGRP_CONNTRACK_UPDATE, options.ReceiveBufferBytes);
            l.events[(int)CtEventType.Destroy] = CtSocket.Open(CtNetlink.NFNLGRP_CONNTRACK_DESTROY, options.ReceiveBufferBytes);
            return l;
        }
        catch
        {
            l.Dispose();
            throw;
        }
    }

    /// <summary>Counters of one event type (New, Update, Destroy).</summary>
    public ConntrackCounts Counts(CtEventType type)
    {
        int t = (int)type;
        var s = events[t];
        return new ConntrackCounts(received[t], s?.Drops ?? 0, overruns[t], malformed[t]);
    }

    /// <summary>
    /// Reads the whole table (every family): each entry goes to <paramref name="handler"/>
    /// with type <see cref="CtEventType.Dump"/>. Returns the number of entries.
    /// </summary>
    public int Dump(ConntrackHandler handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        return DumpRaw(message =>
        {
            if (CtNetlink.TryParseEntry(message, out var entry))
            {
                entry.Type = CtEventType.Dump;
                handler(in entry);
            }
        });
    }

    /// <summary>
    /// Reads the whole table (every family): each entry's ctnetlink message (header included,
    /// valid only during the call) goes to <paramref name="handler"/>. Returns the number of entries.
    /// </summary>
    public int DumpRaw(Action<ReadOnlySpan<byte>> handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        uint s = ++seq;
        Span<byte> req = stackalloc byte[CtNetlink.NlmsgHdrLen + CtNetlink.NfgenmsgLen];
        int len = CtNetlink.WriteDumpRequest(req, s, subsystem: subsystem);
        request.Send(req[..len]);
        int count = 0;
        bool interrupted = false;
        while (true)
        {
            int n = request.Receive(dumpBuffer, wait: true);
            if (n < 0)
            {
                if (-n == LibC.ENOBUFS)
                    throw new ConntrackException("the conntrack dump overran its socket buffer");
                throw new ConntrackException("recv(ctnetlink dump)", -n);
            }
            if (n > dumpBuffer.Length)
                throw new ConntrackException($"a conntrack dump message of {n} bytes is larger than the {dumpBuffer.Length}-byte buffer");
            foreach (var m in CtNetlink.Messages(dumpBuffer.AsSpan(0, n)))
            {
                if (m.Seq != s)
                    continue; // a late answer to an earlier request
                if ((m.Flags & CtNetlink.NLM_F_DUMP_INTR) != 0)
                    interrupted = true;
                if (m.Type == CtNetlink.NLMSG_DONE)
                {
                    if (interrupted)
                        InterruptedDumps++;
                    return count;
                }
                if (m.Type == CtNetlink.NLMSG_ERROR)
                {
                    if (m.Errno == 0)
                        continue;
                    throw new ConntrackException("IPCTNL_MSG_CT_GET (conntrack table dump)", m.Errno);
                }
                if (CtNetlink.IsEntry(m, out _))
                {
                    handler(m.Bytes);
                    count++;
                }
            }
        }
    }

    /// <summary>
    /// Waits up to <paramref name="timeoutMs"/> for events, then hands every queued event to
    /// <paramref name="handler"/> (at most a few thousand per socket per call, so no group
    /// starves the others). Returns the number of entries handed over.
    /// </summary>
    public int Poll(int timeoutMs, ConntrackHandler handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        int type = 0;
        return PollRaw(timeoutMs, message =>
        {
            if (CtNetlink.TryParseEntry(message, out var entry))
                handler(in entry);
            else
                malformed[type]++;
        }, t => type = t);
    }

    /// <summary>
    /// As <see cref="Poll"/>, handing each event's ctnetlink message (header included, valid only
    /// during the call) instead of the decoded entry.
    /// </summary>
    public int PollRaw(int timeoutMs, Action<ReadOnlySpan<byte>> handler) => PollRaw(timeoutMs, handler, null);

    private int PollRaw(int timeoutMs, Action<ReadOnlySpan<byte>> handler, Action<int>? onSocket)
    {
        ArgumentNullException.ThrowIfNull(handler);
        var fds = stackalloc pollfd[3];
        var types = stackalloc int[3];
        int nfds = 0;
        for (int t = 1; t < events.Length; t++)
        {
            if (events[t] is { } s)
            {
                fds[nfds] = new pollfd { fd = s.Fd, events = LibC.POLLIN };
                types[nfds++] = t;
            }
        }
        int ready = LibC.poll(fds, (nuint)nfds, timeoutMs);
        if (ready < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (errno == LibC.EINTR)
                return 0;
            throw new ConntrackException("poll(ctnetlink)", errno);
        }
        int handed = 0;
        for (int i = 0; i < nfds && ready > 0; i++)
        {
            if (fds[i].revents != 0)
            {
                onSocket?.Invoke(types[i]);
                handed += Drain(types[i], handler);
            }
        }
        return handed;
    }

    private int Drain(int type, Action<ReadOnlySpan<byte>> handler)
    {
        var s = events[type]!;
        int handed = 0, datagrams = 0;
        fixed (mmsghdr* v = vec)
        {
            while (datagrams < DrainLimit)
            {
                for (int i = 0; i < Slots; i++)
                    v[i].msg_hdr.msg_flags = 0;
                int n = LibC.recvmmsg(s.Fd, v, Slots, LibC.MSG_DONTWAIT, null);
                if (n < 0)
                {
                    int errno = Marshal.GetLastPInvokeError();
                    if (errno == LibC.ENOBUFS)
                    {
                        overruns[type]++; // the kernel counted the lost datagrams in sk_drops
                        continue;
                    }
                    if (errno is LibC.EAGAIN or LibC.EINTR)
                        break;
                    throw new ConntrackException("recvmmsg(ctnetlink events)", errno);
                }
                for (int i = 0; i < n; i++)
                {
                    int len = (int)v[i].msg_len;
                    if ((v[i].msg_hdr.msg_flags & LibC.MSG_TRUNC) != 0 || len > SlotBytes)
                    {
                        malformed[type]++;
                        continue;
                    }
                    bool any = false;
                    foreach (var m in CtNetlink.Messages(slots.AsSpan(i * SlotBytes, len)))
                    {
                        if (CtNetlink.IsEntry(m, out _))
                        {
                            any = true;
                            received[type]++;
                            handler(m.Bytes);
                            handed++;
                        }
                    }
                    if (!any)
                        malformed[type]++;
                }
                datagrams += n;
                if (n < Slots)
                    break;
            }
        }
        return handed;
    }

    public void Dispose()
    {
        request.Dispose();
        foreach (var s in events)
            s?.Dispose();
    }
}
