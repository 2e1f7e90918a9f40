using Forensics.Cilium.Hubble;
using Forensics.Cilium.Hubble.Api;
using Google.Protobuf;

namespace Forensics.Cilium.Tests;

public sealed class UnknownFieldTests
{
    [Fact]
    public void FindInWire_FieldsNewerThanTheSubset_KeptByNumberWithTheirValues()
    {
        var flow = Fixtures.HubbleFlows()[0];
        // a newer Hubble: field 41 (varint) on the response, field 40 (a string) inside the flow
        var inner = new MemoryStream();
        var io = new CodedOutputStream(inner);
        flow.Flow.WriteTo(io);
        io.WriteTag(40, WireFormat.WireType.LengthDelimited);
        io.WriteString("hello");
        io.Flush();
        var outer = new MemoryStream();
        var oo = new CodedOutputStream(outer);
        oo.WriteTag(1, WireFormat.WireType.LengthDelimited);
        oo.WriteBytes(ByteString.CopyFrom(inner.ToArray()));
        oo.WriteTag(41, WireFormat.WireType.Varint);
        oo.WriteUInt64(7);
        oo.Flush();
        var bytes = outer.ToArray();

        var parsed = GetFlowsResponse.Parser.ParseFrom(bytes);
        var found = new List<KeyValuePair<string, string>>();
        UnknownFields.FindInWire(bytes, GetFlowsResponse.Descriptor, found);

        Assert.Equal(flow.Flow.IP, parsed.Flow.IP); // the rest decodes as usual
        Assert.Equal([new("GetFlowsResponse.flow.40", Convert.ToBase64String("hello"u8)), new("GetFlowsResponse.41", "7")], found);
        Assert.Equal("{\"GetFlowsResponse.flow.40\":\"aGVsbG8=\",\"GetFlowsResponse.41\":7}", UnknownFields.ToJson(found));
    }

    [Fact]
    public void EnumName_ValueNewerThanTheSubset_KeptAsItsNumber()
    {
        var f = new Flow { Verdict = (Verdict)9, DropReasonDesc = (DropReason)250 };
        var reparsed = Flow.Parser.ParseFrom(f.ToByteArray());

        Assert.Equal("9", FlowDecoder.EnumName(reparsed.Verdict));
        Assert.Equal(250, (int)reparsed.DropReasonDesc);
        Assert.Equal("DROPPED", FlowDecoder.EnumName(Verdict.Dropped));
    }

    [Fact]
    public void ParseJson_UnknownMemberAndEnumName_TakenOutAndReported()
    {
        var found = new List<KeyValuePair<string, string>>();
        var ev = Importer.ParseHubble("{\"flow\":{\"verdict\":\"SOMETHING_NEW\",\"emitter\":{\"name\":\"Hubble\"},\"IP\":{\"source\":\"10.0.0.1\"}},\"node_name\":\"n1\"}", found);

        Assert.Equal("10.0.0.1", ev.Flow.IP.Source);
        Assert.Equal(Verdict.Unknown, ev.Flow.Verdict);
        Assert.Equal(["ExportEvent.flow.emitter", "ExportEvent.flow.verdict"], found.Select(f => f.Key).Order(StringComparer.Ordinal));
        Assert.Throws<FormatException>(() => Importer.ParseHubble("{\"flow\":", found));
    }
}
