using System.Runtime.InteropServices;
using System.Text;
using Forensics.Datapath.Interop;

namespace Forensics.Datapath.Bpf;

/// <summary>
/// The kernel's list of loaded BPF programs (BPF_PROG_GET_NEXT_ID) and what is
/// attached to an interface (BPF_PROG_QUERY on tcx), without bpftool.
/// </summary>
public static unsafe class BpfPrograms
{
    private const int ENOENT = 2;

    /// <summary>IDs of every loaded program, bounded to 1,000,000 entries.</summary>
    public static IReadOnlyList<uint> Ids()
    {
        var ids = new List<uint>();
        uint id = 0;
        for (int i = 0; i < 1_000_000; i++)
        {
            uint next;
            if (LibBpf.bpf_prog_get_next_id(id, &next) != 0)
                break;
            ids.Add(next);
            id = next;
        }
        return ids;
    }

    /// <summary>Whether a program with this ID is still loaded.</summary>
    public static bool Exists(uint id)
    {
        int fd = LibBpf.bpf_prog_get_fd_by_id(id);
        if (fd >= 0)
        {
            LibC.close(fd);
            return true;
        }
        int errno = Marshal.GetLastPInvokeError();
        if (errno == ENOENT || -fd == ENOENT)
            return false;
        throw new BpfException($"bpf_prog_get_fd_by_id({id})", errno == 0 ? -fd : errno, "");
    }

    /// <summary>The program's name (at most 15 characters, as the kernel keeps it); null if it is gone.</summary>
    public static string? Name(uint id)
    {
        int fd = LibBpf.bpf_prog_get_fd_by_id(id);
        if (fd < 0)
            return null;
        try
        {
            // struct bpf_prog_info: id at offset 4, name[16] at offset 64. A larger
            // zeroed buffer is accepted by the kernel; it fills what it knows.
            var info = stackalloc byte[256];
            new Span<byte>(info, 256).Clear();
            uint len = 256;
            if (LibBpf.bpf_obj_get_info_by_fd(fd, info, &len) != 0)
                return null;
            var name = new ReadOnlySpan<byte>(info + 64, 16);
            int nul = name.IndexOf((byte)0);
            return Encoding.ASCII.GetString(nul < 0 ? name : name[..nul]);
        }
        finally
        {
            LibC.close(fd);
        }
    }

    /// <summary>IDs of the programs attached with tcx to an interface of the calling thread's network namespace.</summary>
    public static IReadOnlyList<uint> AttachedTcx(int ifindex, TcDirection direction)
    {
        var type = direction == TcDirection.Ingress ? BpfConst.BPF_TCX_INGRESS : BpfConst.BPF_TCX_EGRESS;
        var ids = new uint[64];
        uint count = (uint)ids.Length;
        uint flags = 0;
        fixed (uint* p = ids)
        {
            int rc = LibBpf.bpf_prog_query(ifindex, type, 0, &flags, p, &count);
            if (rc != 0)
                throw new BpfException($"bpf_prog_query(tcx {direction.ToString().ToLowerInvariant()}, ifindex {ifindex})", -rc, "");
        }
        return ids.AsSpan(0, (int)Math.Min(count, (uint)ids.Length)).ToArray();
    }
}
