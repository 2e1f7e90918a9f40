using System.Runtime.InteropServices;

namespace Forensics.Datapath.Interop;

// The socket calls the netlink (ctnetlink) client needs: socket, bind, setsockopt,
// getsockopt, send, recv, recvmmsg, poll. Names and numbers as in <sys/socket.h>,
// <linux/netlink.h> and <poll.h>.

#pragma warning disable CS8981 // the C names, so that grepping the headers finds them

[StructLayout(LayoutKind.Sequential)]
internal struct sockaddr_nl
{
    public ushort nl_family;
    public ushort nl_pad;
    public uint nl_pid;
    public uint nl_groups;
}

[StructLayout(LayoutKind.Sequential)]
internal unsafe struct iovec
{
    public void* iov_base;
    public nuint iov_len;
}

[StructLayout(LayoutKind.Sequential)]
internal unsafe struct msghdr
{
    public void* msg_name;
    public uint msg_namelen;
    public iovec* msg_iov;
    public nuint msg_iovlen;
    public void* msg_control;
    public nuint msg_controllen;
    public int msg_flags;
}

[StructLayout(LayoutKind.Sequential)]
internal struct mmsghdr
{
    public msghdr msg_hdr;
    public uint msg_len;
}

[StructLayout(LayoutKind.Sequential)]
internal struct pollfd
{
    public int fd;
    public short events;
    public short revents;
}

internal static unsafe partial class LibC
{
    [LibraryImport("libc", EntryPoint = "socket", SetLastError = true)]
    public static partial int socket(int domain, int type, int protocol);

    [LibraryImport("libc", EntryPoint = "bind", SetLastError = true)]
    public static partial int bind(int fd, sockaddr_nl* addr, uint len);

    [LibraryImport("libc", EntryPoint = "getsockname", SetLastError = true)]
    public static partial int getsockname(int fd, sockaddr_nl* addr, uint* len);

    [LibraryImport("libc", EntryPoint = "setsockopt", SetLastError = true)]
    public static partial int setsockopt(int fd, int level, int name, void* value, uint len);

    [LibraryImport("libc", EntryPoint = "getsockopt", SetLastError = true)]
    public static partial int getsockopt(int fd, int level, int name, void* value, uint* len);

    [LibraryImport("libc", EntryPoint = "send", SetLastError = true)]
    public static partial nint send(int fd, void* buf, nuint len, int flags);

    [LibraryImport("libc", EntryPoint = "recv", SetLastError = true)]
    public static partial nint recv(int fd, void* buf, nuint len, int flags);

    [LibraryImport("libc", EntryPoint = "recvmmsg", SetLastError = true)]
    public static partial int recvmmsg(int fd, mmsghdr* msgvec, uint vlen, int flags, Timespec* timeout);

    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    public static partial int poll(pollfd* fds, nuint nfds, int timeout);

    public const int AF_NETLINK = 16;
    public const int SOCK_RAW = 3;
    public const int SOCK_CLOEXEC = 0x80000;
    public const int NETLINK_NETFILTER = 12;

    public const int SOL_SOCKET = 1;
    public const int SO_RCVBUF = 8;
    public const int SO_RCVBUFFORCE = 33;
    public const int SO_MEMINFO = 55;
    /// <summary>Index of sk_drops in SO_MEMINFO's u32 array (SK_MEMINFO_DROPS, linux/sock_diag.h).</summary>
    public const int SK_MEMINFO_DROPS = 8;
    public const int SK_MEMINFO_VARS = 9;

    public const int SOL_NETLINK = 270;
    public const int NETLINK_ADD_MEMBERSHIP = 1;
    public const int NETLINK_EXT_ACK = 11;

    public const int MSG_DONTWAIT = 0x40;
    public const int MSG_TRUNC = 0x20;

    public const short POLLIN = 0x001;

    public const int EINTR = 4;
    public const int EAGAIN = 11;
    public const int ENOBUFS = 105;
}
