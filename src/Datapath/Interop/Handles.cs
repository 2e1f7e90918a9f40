using Microsoft.Win32.SafeHandles;

namespace Forensics.Datapath.Interop;

internal sealed class BpfObjectHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    public BpfObjectHandle() : base(true) { }
    public BpfObjectHandle(nint h) : base(true) => SetHandle(h);
    protected override bool ReleaseHandle()
    {
        LibBpf.bpf_object__close(handle);
        return true;
    }
}

internal sealed class BpfLinkHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    public BpfLinkHandle(nint h) : base(true) => SetHandle(h);
    protected override bool ReleaseHandle() => LibBpf.bpf_link__destroy(handle) == 0;
}

internal sealed class RingBufferHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    public RingBufferHandle(nint h) : base(true) => SetHandle(h);
    protected override bool ReleaseHandle()
    {
        LibBpf.ring_buffer__free(handle);
        return true;
    }
}

internal sealed class BtfHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    public BtfHandle(nint h, bool owns = true) : base(owns) => SetHandle(h);
    protected override bool ReleaseHandle()
    {
        LibBpf.btf__free(handle);
        return true;
    }
}

/// <summary>A plain file descriptor we own (e.g. a tcx link): closing it detaches.</summary>
internal sealed class FdHandle : SafeHandleMinusOneIsInvalid
{
    public FdHandle(int fd) : base(true) => SetHandle(fd);
    public int Fd => (int)handle;
    protected override bool ReleaseHandle() => LibC.close((int)handle) == 0;
}
