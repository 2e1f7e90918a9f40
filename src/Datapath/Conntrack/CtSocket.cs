using System.Runtime.InteropServices;
using Forensics.Datapath.Interop;

namespace Forensics.Datapath.Conntrack;

/// <summary>A failed ctnetlink call: what failed, the errno, and why that matters, in one line.</summary>
public sealed class ConntrackException : Exception
{
    public ConntrackException(string call, int errno)
        : base(Describe(call, errno))
    {
        Call = call;
        Errno = errno;
    }

    public ConntrackException(string message) : base(message) { Call = "unknown"; }

    public ConntrackException() : this("unknown", 0) { }

    public ConntrackException(string message, Exception inner) : base(message, inner) { Call = "unknown"; }

    public string Call { get; } = "unknown";

    /// <summary>Positive errno (EPERM = 1, ...); 0 when the failure was not a system call's.</summary>
    public int Errno { get; }

    private static string Describe(string call, int errno) => errno switch
    {
        1 or 13 => $"{call}: permission denied: reading conntrack over ctnetlink needs CAP_NET_ADMIN in the network namespace",
        93 or 97 => $"{call}: the kernel has no nfnetlink (CONFIG_NETFILTER_NETLINK): conntrack cannot be read",
        95 or 2 or 22 => $"{call}: the kernel has no ctnetlink (CONFIG_NF_CT_NETLINK, module nf_conntrack_netlink): {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})",
        _ => $"{call}: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})",
    };
}

/// <summary>
/// One AF_NETLINK/NETLINK_NETFILTER socket, in the network namespace of the thread that
/// opened it, optionally subscribed to one conntrack event group. Not thread-safe.
/// </summary>
internal sealed unsafe class CtSocket : IDisposable
{
    private readonly FdHandle fd;

    private CtSocket(FdHandle fd) => this.fd = fd;

    public int Fd => fd.Fd;

    /// <summary>Opens a socket; <paramref name="group"/> 0 subscribes to nothing (requests only).</summary>
    public static CtSocket Open(int group, int receiveBufferBytes)
    {
        int s = LibC.socket(LibC.AF_NETLINK, LibC.SOCK_RAW | LibC.SOCK_CLOEXEC, LibC.NETLINK_NETFILTER);
        if (s < 0)
            throw new ConntrackException("socket(AF_NETLINK, NETLINK_NETFILTER)", Marshal.GetLastPInvokeError());
        var sock = new CtSocket(new FdHandle(s));
        try
        {
            var addr = new sockaddr_nl { nl_family = LibC.AF_NETLINK };
            if (LibC.bind(s, &addr, (uint)sizeof(sockaddr_nl)) != 0)
                throw new ConntrackException("bind(AF_NETLINK)", Marshal.GetLastPInvokeError());
            if (receiveBufferBytes > 0)
            {
                int size = receiveBufferBytes;
                // SO_RCVBUFFORCE passes net.core.rmem_max (it needs CAP_NET_ADMIN, which subscribing needs anyway)
                if (LibC.setsockopt(s, LibC.SOL_SOCKET, LibC.SO_RCVBUFFORCE, &size, sizeof(int)) != 0
                    && LibC.setsockopt(s, LibC.SOL_SOCKET, LibC.SO_RCVBUF, &size, sizeof(int)) != 0)
                    throw new ConntrackException("setsockopt(SO_RCVBUF)", Marshal.GetLastPInvokeError());
            }
            if (group != 0)
            {
                int g = group;
                if (LibC.setsockopt(s, LibC.SOL_NETLINK, LibC.NETLINK_ADD_MEMBERSHIP, &g, sizeof(int)) != 0)
                    throw new ConntrackException($"subscribing to conntrack events (NETLINK_ADD_MEMBERSHIP {GroupName(group)})", Marshal.GetLastPInvokeError());
            }
            return sock;
        }
        catch
        {
            sock.Dispose();
            throw;
        }
    }

    public static string GroupName(int group) => group switch
    {
        CtNetlink.NFNLGRP_CONNTRACK_NEW => "NFNLGRP_CONNTRACK_NEW",
        CtNetlink.NFNLGRP_CONNTRACK_UPDATE => "NFNLGRP_CONNTRACK_UPDATE",
        CtNetlink.NFNLGRP_CONNTRACK_DESTROY => "NFNLGRP_CONNTRACK_DESTROY",
        _ => group.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };

    /// <summary>The receive buffer size the kernel granted (it doubles what was asked).</summary>
    public int ReceiveBufferBytes
    {
        get
        {
            int v = 0;
            uint len = sizeof(int);
            return LibC.getsockopt(Fd, LibC.SOL_SOCKET, LibC.SO_RCVBUF, &v, &len) == 0 ? v : 0;
        }
    }

    /// <summary>
    /// Messages the kernel could not queue on this socket (sk_drops, from SO_MEMINFO): each
    /// ctnetlink event is one datagram, so this is the number of events lost to a full buffer.
    /// </summary>
    public ulong Drops
    {
        get
        {
            var info = stackalloc uint[LibC.SK_MEMINFO_VARS];
            uint len = sizeof(uint) * LibC.SK_MEMINFO_VARS;
            if (LibC.getsockopt(Fd, LibC.SOL_SOCKET, LibC.SO_MEMINFO, info, &len) != 0)
                throw new ConntrackException("getsockopt(SO_MEMINFO)", Marshal.GetLastPInvokeError());
            return len > LibC.SK_MEMINFO_DROPS * sizeof(uint) ? info[LibC.SK_MEMINFO_DROPS] : 0;
        }
    }

    public void Send(ReadOnlySpan<byte> message)
    {
        fixed (byte* p = message)
        {
            while (true)
            {
                nint n = LibC.send(Fd, p, (nuint)message.Length, 0);
                if (n >= 0)
                    return;
                int errno = Marshal.GetLastPInvokeError();
                if (errno != LibC.EINTR)
                    throw new ConntrackException("send(ctnetlink request)", errno);
            }
        }
    }

    /// <summary>Receives one datagram, waiting; returns its length, or -errno (EINTR retried).</summary>
    public int Receive(Span<byte> buffer, bool wait)
    {
        fixed (byte* p = buffer)
        {
            while (true)
            {
                nint n = LibC.recv(Fd, p, (nuint)buffer.Length, (wait ? 0 : LibC.MSG_DONTWAIT) | LibC.MSG_TRUNC);
                if (n >= 0)
                    return (int)n;
                int errno = Marshal.GetLastPInvokeError();
                if (errno != LibC.EINTR)
                    return -errno;
            }
        }
    }

    public void Dispose() => fd.Dispose();
}
