using Forensics.Datapath.Interop;

namespace Forensics.Datapath.Bpf;

public enum TcDirection
{
    /// <summary>Packets the interface receives (for a pod's host veth: leaving the pod).</summary>
    Ingress,
    /// <summary>Packets the interface sends (for a pod's host veth: entering the pod).</summary>
    Egress,
}

/// <summary>The result of one BPF_PROG_TEST_RUN.</summary>
public sealed record TestRunResult(uint ReturnValue, byte[] DataOut, uint DurationNs);

/// <summary>A loaded program of a <see cref="BpfObject"/>; valid while the object is.</summary>
public sealed unsafe class BpfProgram
{
    private readonly BpfObject owner;
    private readonly nint prog;

    internal BpfProgram(BpfObject owner, nint prog, string name)
    {
        this.owner = owner;
        this.prog = prog;
        Name = name;
    }

    public string Name { get; }

    public int Fd => LibBpf.bpf_program__fd(prog);

    /// <summary>Attaches by the program's section (raw_tp/..., tracepoint/...).</summary>
    public BpfLink Attach()
    {
        LibBpfLog.Clear();
        var link = BpfException.Check(LibBpf.bpf_program__attach(prog), $"bpf_program__attach({Name})");
        return new BpfLink(new BpfLinkHandle(link), $"{Name}");
    }

    /// <summary>
    /// Attaches a tc program to an interface with a tcx link (kernel &gt;= 6.6):
    /// the link dies with its fd, so a killed process leaves nothing attached.
    /// </summary>
    public TcxLink AttachTcx(int ifindex, TcDirection direction)
    {
        var type = direction == TcDirection.Ingress ? BpfConst.BPF_TCX_INGRESS : BpfConst.BPF_TCX_EGRESS;
        int fd = LibBpf.bpf_link_create(Fd, ifindex, type, null);
        if (fd < 0)
            throw new BpfException($"bpf_link_create(tcx {direction.ToString().ToLowerInvariant()}, ifindex {ifindex}, {Name})", -fd, LibBpfLog.TakeRecent());
        return new TcxLink(new FdHandle(fd), ifindex, direction, Name);
    }

    /// <summary>
    /// Runs the program once (or <paramref name="repeat"/> times) on a packet with BPF_PROG_TEST_RUN.
    /// For tc programs, <paramref name="ifindex"/> (an existing interface) becomes skb->ifindex;
    /// 0 leaves the kernel's default (loopback).
    /// </summary>
    public TestRunResult TestRun(ReadOnlySpan<byte> packet, int repeat = 1, int dataOutSize = -1, int ifindex = 0)
    {
        var outBuf = new byte[dataOutSize >= 0 ? dataOutSize : packet.Length + 256];
        // struct __sk_buff up to and including ifindex (offset 40); the kernel
        // zero-fills the rest and rejects fields it does not take from user space.
        var skbCtx = new byte[SkBuffIfindexOffset + 4];
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(skbCtx.AsSpan(SkBuffIfindexOffset), ifindex);
        fixed (byte* pin = packet)
        fixed (byte* pout = outBuf)
        fixed (byte* pctx = skbCtx)
        {
            var opts = new bpf_test_run_opts
            {
                sz = (nuint)sizeof(bpf_test_run_opts),
                data_in = pin,
                data_size_in = (uint)packet.Length,
                data_out = pout,
                data_size_out = (uint)outBuf.Length,
                ctx_in = ifindex > 0 ? pctx : null,
                ctx_size_in = ifindex > 0 ? (uint)skbCtx.Length : 0,
                repeat = repeat,
            };
            BpfException.Check(LibBpf.bpf_prog_test_run_opts(Fd, &opts), $"bpf_prog_test_run_opts({Name})");
            owner.KeepAlive();
            return new TestRunResult(opts.retval, outBuf.AsSpan(0, (int)opts.data_size_out).ToArray(), opts.duration);
        }
    }

    /// <summary>offsetof(struct __sk_buff, ifindex): part of the stable UAPI.</summary>
    private const int SkBuffIfindexOffset = 40;
}

/// <summary>A libbpf link (tracepoint, raw tracepoint); disposing detaches.</summary>
public sealed class BpfLink : IDisposable
{
    private readonly BpfLinkHandle handle;

    internal BpfLink(BpfLinkHandle handle, string description)
    {
        this.handle = handle;
        Description = description;
    }

    public string Description { get; }

    public void Dispose() => handle.Dispose();
}

/// <summary>A tcx link on an interface; disposing (or the process dying) detaches.</summary>
public sealed class TcxLink : IDisposable
{
    private readonly FdHandle fd;

    internal TcxLink(FdHandle fd, int ifindex, TcDirection direction, string program)
    {
        this.fd = fd;
        Ifindex = ifindex;
        Direction = direction;
        Program = program;
    }

    public int Ifindex { get; }
    public TcDirection Direction { get; }
    public string Program { get; }

    public void Dispose() => fd.Dispose();
}
