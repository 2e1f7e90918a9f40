using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Lab;

namespace Forensics.Datapath.Tests;

public class LabTextTests
{
    [Theory]
    [InlineData(SrcFile.Datapath, "datapath.bpf.c")]
    [InlineData(SrcFile.Policy, "policy.h")]
    [InlineData(SrcFile.Lb, "lb.h")]
    [InlineData(SrcFile.Unknown, "unknown(0)")]
    [InlineData((SrcFile)77, "unknown(77)")]
    public void SrcFiles_MonitorName_OurFileInCiliumsForm(SrcFile file, string expected) =>
        Assert.Equal(expected, SrcFiles.MonitorName(file));

    [Fact]
    public void Decode_DropRecord_LabLineNamesTheFileAsCiliumMonitorDoes()
    {
        // A drop record as the datapath emits it: 133 (Policy denied) decided in lib/policy.h line 149.
        var rec = new byte[Marshal.SizeOf<DropEvent>()];
        rec[0] = (byte)EventKind.Drop;
        rec[1] = Limits.AbiVersion;
        BinaryPrimitives.WriteUInt16LittleEndian(rec.AsSpan(2), (ushort)rec.Length);
        var tuple = (int)Marshal.OffsetOf<DropEvent>(nameof(DropEvent.Tuple));
        rec[tuple + (int)Marshal.OffsetOf<Abi.Tuple>(nameof(Abi.Tuple.Family))] = 2;
        rec[tuple + (int)Marshal.OffsetOf<Abi.Tuple>(nameof(Abi.Tuple.Proto))] = 6;
        BinaryPrimitives.WriteUInt16LittleEndian(rec.AsSpan((int)Marshal.OffsetOf<DropEvent>(nameof(DropEvent.Reason))), 133);
        BinaryPrimitives.WriteUInt16LittleEndian(rec.AsSpan((int)Marshal.OffsetOf<DropEvent>(nameof(DropEvent.Line))), 149);
        rec[(int)Marshal.OffsetOf<DropEvent>(nameof(DropEvent.File))] = (byte)SrcFile.Policy;

        var e = ObservedEvent.Decode(rec);

        Assert.NotNull(e);
        Assert.EndsWith(", file policy.h:149", e.Text, StringComparison.Ordinal);
    }
}
