using System.Net;
using Forensics.Datapath;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Control;
using Forensics.Tests;
using static Forensics.Kernel.Tests.DatapathHarness;
using static Forensics.Kernel.Tests.TestCluster;

namespace Forensics.Kernel.Tests;

/// <summary>
/// The real datapath programs, one crafted packet at a time through
/// BPF_PROG_TEST_RUN: verdicts, rewritten headers, checksums and the exact
/// events emitted, for every policy rule kind, conntrack, DNAT and SNAT.
/// </summary>
public class DatapathTests
{
    private const byte SynAck = Packets.TcpSyn | Packets.TcpAck;
    private const byte FinAck = 0x01 | Packets.TcpAck;

    private static NetworkPolicySpec BackendIngress(params PolicyRule[] rules) => Policy("backend-ingress", Sel(("app", "backend")), ingress: rules);

    private static void AssertAllowedNew(Events ev, uint remote, PolicyMatch match, Dir dir)
    {
        Assert.Equal([EventKind.Policy, EventKind.Trace, EventKind.Capture], ev.Kinds);
        var v = Assert.Single(ev.Verdicts);
        Assert.Equal(VerdictAction.Allow, v.Action);
        Assert.Equal(match, v.Match);
        Assert.Equal(remote, v.RemoteIdentity);
        Assert.Equal(dir, v.Meta.Direction);
        Assert.Equal(CtState.New, Assert.Single(ev.Traces).CtState);
    }

    private static void AssertPolicyDrop(Events ev, uint remote, ushort reason, PolicyMatch match, Dir dir)
    {
        Assert.Equal([EventKind.Policy, EventKind.Drop, EventKind.Capture], ev.Kinds);
        var v = Assert.Single(ev.Verdicts);
        Assert.Equal(VerdictAction.Deny, v.Action);
        Assert.Equal(match, v.Match);
        Assert.Equal(remote, v.RemoteIdentity);
        var d = Assert.Single(ev.Drops);
        Assert.Equal(reason, d.Reason);
        Assert.Equal(SrcFile.Policy, d.File);
        Assert.True(d.Line > 0);
        DropSite.AssertPointsAtFxDrop(d);
        Assert.Equal(dir, d.Meta.Direction);
        Assert.Equal(reason, Assert.Single(ev.Captures).DropReason);
    }

    [KernelFact]
    public void L4OnlyRule_AllowedPortAndOtherPort_AllowedL4OnlyAndDroppedPolicyDenied()
    {
        using var h = new DatapathHarness(Cluster(BackendIngress(Rule(ports: [new PortProtocol(8080, "TCP")]))));
        var fe = h.IdentityOf(Frontend);

        var ok = h.To(Backend2, Packets.Tcp("10.244.0.10", 40000, "10.244.0.20", 8080));
        var okEv = h.Take();
        var bad = h.To(Backend2, Packets.Tcp("10.244.0.10", 40001, "10.244.0.20", 9090));
        var badEv = h.Take();

        Assert.Equal(TcActOk, ok.ReturnValue);
        AssertAllowedNew(okEv, fe, PolicyMatch.L4Only, Dir.Ingress);
        var t = Assert.Single(okEv.Traces);
        Assert.Equal(fe, t.Meta.SrcIdentity);
        Assert.Equal(h.IdentityOf(Backend2), t.Meta.DstIdentity);
        Assert.Equal(ObsPoint.ToEndpoint, t.Meta.ObsPoint);
        Assert.Equal((uint)h.IfindexOf(Backend2), t.Meta.Ifindex);
        Assert.Equal("10.244.0.10:40000", Pkt.S(t.Tuple));
        Assert.Equal(TcActShot, bad.ReturnValue);
        AssertPolicyDrop(badEv, fe, (ushort)DropReason.Policy, PolicyMatch.None, Dir.Ingress);
        var d = Assert.Single(badEv.Drops);
        Assert.Equal("10.244.0.20:9090", Pkt.D(d.Tuple));
        Assert.Equal(fe, d.Meta.SrcIdentity);
        Assert.Equal(h.IdentityOf(Backend2), d.Meta.DstIdentity);
        Assert.Equal(CtState.New, d.CtState);
        Assert.NotEqual(0, d.Meta.EndpointId);
    }

    [KernelFact]
    public void L3OnlyRule_SelectedPeerAnyPort_AllowedL3OnlyAndUnselectedPeerDropped()
    {
        using var h = new DatapathHarness(Cluster(BackendIngress(Rule(endpoints: [Sel(("app", "frontend"))]))));

        var ok = h.To(Backend2, Packets.Udp("10.244.0.10", 40000, "10.244.0.20", 7777));
        var okEv = h.Take();
        var other = h.To(Backend2, Packets.Tcp("10.244.0.30", 40000, "10.244.0.20", 8080));
        var otherEv = h.Take();
        // same labels in another namespace: the policy's namespace is implied
        var tool = h.To(Backend2, Packets.Tcp("10.244.1.5", 40000, "10.244.0.20", 8080));
        var toolEv = h.Take();

        Assert.Equal(TcActOk, ok.ReturnValue);
        AssertAllowedNew(okEv, h.IdentityOf(Frontend), PolicyMatch.L3Only, Dir.Ingress);
        Assert.Equal(TcActShot, other.ReturnValue);
        AssertPolicyDrop(otherEv, h.IdentityOf(Other), (ushort)DropReason.Policy, PolicyMatch.None, Dir.Ingress);
        Assert.Equal(TcActShot, tool.ReturnValue);
        AssertPolicyDrop(toolEv, h.IdentityOf(Tool), (ushort)DropReason.Policy, PolicyMatch.None, Dir.Ingress);
    }

    [KernelFact]
    public void L3L4Rule_PeerAndPort_OnlyThatPairAllowed()
    {
        using var h = new DatapathHarness(Cluster(BackendIngress(
            Rule(endpoints: [Sel(("k8s:app", "frontend"))], ports: [new PortProtocol(8080, "TCP")]))));

        var ok = h.To(Backend2, Packets.Tcp("10.244.0.10", 40000, "10.244.0.20", 8080));
        var okEv = h.Take();
        var wrongPort = h.To(Backend2, Packets.Tcp("10.244.0.10", 40001, "10.244.0.20", 9090));
        var wrongPortEv = h.Take();
        var wrongProto = h.To(Backend2, Packets.Udp("10.244.0.10", 40002, "10.244.0.20", 8080));
        h.Take();
        var wrongPeer = h.To(Backend2, Packets.Tcp("10.244.0.30", 40003, "10.244.0.20", 8080));
        var wrongPeerEv = h.Take();

        Assert.Equal(TcActOk, ok.ReturnValue);
        AssertAllowedNew(okEv, h.IdentityOf(Frontend), PolicyMatch.L3L4, Dir.Ingress);
        Assert.Equal(TcActShot, wrongPort.ReturnValue);
        AssertPolicyDrop(wrongPortEv, h.IdentityOf(Frontend), (ushort)DropReason.Policy, PolicyMatch.None, Dir.Ingress);
        Assert.Equal(TcActShot, wrongProto.ReturnValue);
        Assert.Equal(TcActShot, wrongPeer.ReturnValue);
        AssertPolicyDrop(wrongPeerEv, h.IdentityOf(Other), (ushort)DropReason.Policy, PolicyMatch.None, Dir.Ingress);
    }

    [KernelFact]
    public void AllEntityRule_AnyPeerAnyPort_AllowedMatchAll()
    {
        using var h = new DatapathHarness(Cluster(BackendIngress(Rule(entities: ["all"]))));

        var r = h.To(Backend2, Packets.Tcp("203.0.113.7", 40000, "10.244.0.20", 22));

        Assert.Equal(TcActOk, r.ReturnValue);
        AssertAllowedNew(h.Take(), (uint)ReservedIdentity.World, PolicyMatch.All, Dir.Ingress);
    }

    [KernelFact]
    public void Verdicts_AllowedDeniedAndUnmatched_CarryTheRuleThatDecided()
    {
        using var h = new DatapathHarness(Cluster(
            Policy("backend-ingress", Sel(("app", "backend")),
                ingress: [Rule(entities: ["world"]), Rule(endpoints: [Sel(("app", "frontend"))], ports: [new PortProtocol(8080, "TCP")])],
                ingressDeny: [Rule(endpoints: [Sel(("app", "other"))])]),
            Policy("also-8080", Sel(("app", "backend")), ingress: [Rule(endpoints: [Sel(("app", "frontend"))], ports: [new PortProtocol(8080, "TCP")])])));
        var rules = () => h.Dp.Snapshot().Rules.ToDictionary(r => r.Id, r => string.Join(", ", r.Rules));

        h.To(Backend2, Packets.Tcp("10.244.0.10", 40000, "10.244.0.20", 8080));
        var allowed = Assert.Single(h.Take().Verdicts);
        h.To(Backend2, Packets.Tcp("10.244.0.30", 40001, "10.244.0.20", 8080));
        var deniedEv = h.Take();
        h.To(Backend2, Packets.Tcp("10.244.0.10", 40002, "10.244.0.20", 9090));
        var unmatchedEv = h.Take();

        // one entry made by two policies: both are named (Hubble lists every policy of the entry)
        Assert.Equal("default/also-8080 spec.ingress[0], default/backend-ingress spec.ingress[1]", rules()[allowed.RuleId]);
        var denied = Assert.Single(deniedEv.Verdicts);
        Assert.Equal(VerdictAction.Deny, denied.Action);
        Assert.Equal("default/backend-ingress spec.ingressDeny[0]", rules()[denied.RuleId]);
        Assert.Equal(denied.RuleId, Assert.Single(deniedEv.Drops).RuleId);
        Assert.Equal(0u, Assert.Single(unmatchedEv.Verdicts).RuleId);
        Assert.Equal(0u, Assert.Single(unmatchedEv.Drops).RuleId);
        // the snapshot's entries carry the same ids
        var entry = h.Dp.Snapshot().PolicyEntries.Single(e => e.Endpoint == Backend2.FullName && e.Identity == h.IdentityOf(Frontend) && e.Port == 8080);
        Assert.Equal(allowed.RuleId, entry.RuleId);
    }

    [KernelFact]
    public void DenyRule_OverlapsAllowAll_DenyWinsWithDenylistReason()
    {
        using var h = new DatapathHarness(Cluster(Policy("deny-frontend-8080", Sel(("app", "backend")),
            ingress: [Rule(entities: ["all"])],
            ingressDeny: [Rule(endpoints: [Sel(("app", "frontend"))], ports: [new PortProtocol(8080, "TCP")])])));

        var denied = h.To(Backend2, Packets.Tcp("10.244.0.10", 40000, "10.244.0.20", 8080));
        var deniedEv = h.Take();
        var allowed = h.To(Backend2, Packets.Tcp("10.244.0.10", 40001, "10.244.0.20", 9090));
        var allowedEv = h.Take();

        Assert.Equal(TcActShot, denied.ReturnValue);
        AssertPolicyDrop(deniedEv, h.IdentityOf(Frontend), (ushort)DropReason.PolicyDeny, PolicyMatch.L3L4, Dir.Ingress);
        Assert.Equal(TcActOk, allowed.ReturnValue);
        AssertAllowedNew(allowedEv, h.IdentityOf(Frontend), PolicyMatch.All, Dir.Ingress);
    }

    [KernelFact]
    public void EgressDeny_ToPeer_DroppedAtSourceEndpoint()
    {
        using var h = new DatapathHarness(Cluster(Policy("no-backend", Sel(("app", "frontend")),
            egress: [Rule(entities: ["all"])],
            egressDeny: [Rule(endpoints: [Sel(("app", "backend"))])])));

        var r = h.From(Frontend, Packets.Tcp("10.244.0.10", 40000, "10.244.0.20", 8080));
        var ev = h.Take();
        var world = h.From(Frontend, Packets.Tcp("10.244.0.10", 40001, "198.51.100.10", 443));

        Assert.Equal(TcActShot, r.ReturnValue);
        AssertPolicyDrop(ev, h.IdentityOf(Backend2), (ushort)DropReason.PolicyDeny, PolicyMatch.L3Only, Dir.Egress);
        Assert.Equal(ObsPoint.FromEndpoint, Assert.Single(ev.Drops).Meta.ObsPoint);
        Assert.Equal(TcActOk, world.ReturnValue);
    }

    [KernelFact]
    public void NoPolicySelects_BothDirections_AllowedWithoutVerdicts()
    {
        // the policy selects backends only: frontend is unrestricted both ways
        using var h = new DatapathHarness(Cluster(BackendIngress(Rule(ports: [new PortProtocol(8080, "TCP")]))));

        var egress = h.From(Frontend, Packets.Tcp("10.244.0.10", 40000, "10.244.0.30", 1234));
        var egressEv = h.Take();
        var ingress = h.To(Frontend, Packets.Tcp("10.244.0.30", 40001, "10.244.0.10", 4321));
        var ingressEv = h.Take();
        var backendEgress = h.From(Backend2, Packets.Tcp("10.244.0.20", 40002, "10.244.0.30", 1234));

        Assert.Equal(TcActOk, egress.ReturnValue);
        Assert.Equal([EventKind.Trace, EventKind.Capture], egressEv.Kinds);
        Assert.Equal(CtState.New, Assert.Single(egressEv.Traces).CtState);
        Assert.Equal(TcActOk, ingress.ReturnValue);
        Assert.Equal([EventKind.Trace, EventKind.Capture], ingressEv.Kinds);
        Assert.Equal(TcActOk, backendEgress.ReturnValue); // selected for ingress only
    }

    [KernelFact]
    public void SelectedByPolicy_RuleMatchesNothing_DefaultDeny()
    {
        using var h = new DatapathHarness(Cluster(BackendIngress(Rule(endpoints: [Sel(("app", "nothing"))]))));

        var r = h.To(Backend2, Packets.Tcp("10.244.0.10", 40000, "10.244.0.20", 8080));
        var ev = h.Take();
        var icmp = h.To(Backend2, Packets.IcmpEcho("10.244.0.10", "10.244.0.20", 77));
        var icmpEv = h.Take();

        Assert.Equal(TcActShot, r.ReturnValue);
        AssertPolicyDrop(ev, h.IdentityOf(Frontend), (ushort)DropReason.Policy, PolicyMatch.None, Dir.Ingress);
        Assert.Equal(TcActShot, icmp.ReturnValue);
        Assert.Equal(1, Assert.Single(icmpEv.Drops).Tuple.Proto);
        var snap = h.Dp.Snapshot();
        Assert.True(snap.Endpoints.Single(e => e.Pod == "backend-2").IngressEnforced);
        Assert.False(snap.Endpoints.Single(e => e.Pod == "backend-2").EgressEnforced);
        Assert.DoesNotContain(snap.PolicyEntries, e => e.EndpointId == snap.Endpoints.Single(x => x.Pod == "backend-2").Id);
    }

    [KernelFact]
    public void ReplyOfAllowedConnection_EgressDefaultDeny_PassesAsReplyWithoutVerdict()
    {
        using var h = new DatapathHarness(Cluster(Policy("backend-locked", Sel(("app", "backend")),
            ingress: [Rule(ports: [new PortProtocol(8080, "TCP")])],
            egress: [Rule(endpoints: [Sel(("app", "nothing"))])])));

        h.From(Frontend, Packets.Tcp("10.244.0.10", 40000, "10.244.0.20", 8080));
        var syn = h.To(Backend2, Packets.Tcp("10.244.0.10", 40000, "10.244.0.20", 8080));
        h.Take();
        var synAck = h.From(Backend2, Packets.Tcp("10.244.0.20", 8080, "10.244.0.10", 40000, SynAck));
        var synAckEv = h.Take();
        var back = h.To(Frontend, Packets.Tcp("10.244.0.20", 8080, "10.244.0.10", 40000, SynAck));
        var backEv = h.Take();
        var ack = h.To(Backend2, Packets.Tcp("10.244.0.10", 40000, "10.244.0.20", 8080, Packets.TcpAck));
        var ackEv = h.Take();
        var newOut = h.From(Backend2, Packets.Tcp("10.244.0.20", 8081, "10.244.0.10", 40000, Packets.TcpSyn));
        var newOutEv = h.Take();

        Assert.Equal(TcActOk, syn.ReturnValue);
        Assert.Equal(TcActOk, synAck.ReturnValue);
        Assert.Equal([EventKind.Trace, EventKind.Capture], synAckEv.Kinds);
        Assert.Equal(CtState.Reply, Assert.Single(synAckEv.Traces).CtState);
        Assert.Equal(TcActOk, back.ReturnValue);
        Assert.Equal(CtState.Reply, Assert.Single(backEv.Traces).CtState);
        Assert.Equal(TcActOk, ack.ReturnValue);
        Assert.Equal(CtState.Established, Assert.Single(ackEv.Traces).CtState);
        Assert.Equal(TcActShot, newOut.ReturnValue);
        AssertPolicyDrop(newOutEv, h.IdentityOf(Frontend), (ushort)DropReason.Policy, PolicyMatch.None, Dir.Egress);

        var ct = h.Dp.Snapshot().Conntrack.Single(c => c.Direction == Dir.Ingress && c.DestinationPort == 8080);
        Assert.Equal(3ul, ct.Packets); // SYN, SYN-ACK (reply), ACK
        Assert.True(ct.Flags.HasFlag(CtFlags.ReplySeen));
        Assert.Equal(PolicyMatch.L4Only, ct.Match);
    }

    [KernelFact]
    public void IcmpErrorAboutTrackedFlow_EgressDenied_PassesAsRelated()
    {
        using var h = new DatapathHarness(Cluster(Policy("backend-locked", Sel(("app", "backend")),
            ingress: [Rule(entities: ["cluster"])],
            egress: [Rule(endpoints: [Sel(("app", "nothing"))])])));
        var udp = Packets.Udp("10.244.0.10", 40000, "10.244.0.20", 5353);

        Assert.Equal(TcActOk, h.To(Backend2, udp).ReturnValue);
        h.Take();
        var err = h.From(Backend2, Packets.IcmpError("10.244.0.20", "10.244.0.10", udp));
        var ev = h.Take();
        var stray = h.From(Backend2, Packets.IcmpError("10.244.0.20", "10.244.0.10", Packets.Udp("10.244.0.10", 40001, "10.244.0.20", 5353)));

        Assert.Equal(TcActOk, err.ReturnValue);
        Assert.Equal(CtState.Related, Assert.Single(ev.Traces).CtState);
        Assert.Equal(TcActShot, stray.ReturnValue);
    }

    [KernelFact]
    public void ServiceDnat_FirstPacketAndReply_TranslatedBothWaysWithValidChecksums()
    {
        var cluster = Cluster();
        using var h = new DatapathHarness(cluster);
        var svc = h.Dp.Snapshot().Services.Single(s => s.Name == "backend-service" && s.Port == 80);
        var syn = Packets.Tcp("10.244.0.10", 41000, BackendVip, 80);

        var out1 = h.From(Frontend, syn);
        var ev1 = h.Take();
        var out2 = h.From(Frontend, Packets.Tcp("10.244.0.10", 41000, BackendVip, 80, Packets.TcpAck));
        var ev2 = h.Take();

        Assert.Equal(TcActOk, out1.ReturnValue);
        Assert.True(Packets.ChecksumsValid(out1.DataOut));
        var backend = Pkt.Dst4(out1.DataOut);
        Assert.Contains(backend, svc.Backends.Select(b => Pkt.Ep(b.Ip, b.Port)));
        Assert.Equal(8080, Pkt.Dport(out1.DataOut));
        Assert.Equal("10.244.0.10:41000", Pkt.Src4(out1.DataOut));
        Assert.Equal([EventKind.Nat, EventKind.Trace, EventKind.Capture], ev1.Kinds);
        var nat = Assert.Single(ev1.Nats);
        Assert.Equal(NatKind.Dnat, nat.NatKind);
        Assert.Equal(svc.Id, nat.ServiceId);
        Assert.Equal($"{BackendVip}:80", Pkt.D(nat.Orig));
        Assert.Equal(backend, Pkt.D(nat.Xlated));
        Assert.Equal("10.244.0.10:41000", Pkt.S(nat.Xlated));
        Assert.Equal(backend, Pkt.D(Assert.Single(ev1.Traces).Tuple));
        Assert.Equal(CtState.New, Assert.Single(ev1.Traces).CtState);
        // same flow, same backend, no second DNAT event
        Assert.Equal(backend, Pkt.Dst4(out2.DataOut));
        Assert.Equal([EventKind.Trace, EventKind.Capture], ev2.Kinds);
        Assert.Equal(CtState.Established, Assert.Single(ev2.Traces).CtState);

        var backendPod = svc.Backends.Single(b => Pkt.Ep(b.Ip, b.Port) == backend);
        var reply = h.To(Frontend, Packets.Tcp(backendPod.Ip.ToString(), 8080, "10.244.0.10", 41000, SynAck));
        var rev = h.Take();

        Assert.Equal(TcActOk, reply.ReturnValue);
        Assert.True(Packets.ChecksumsValid(reply.DataOut));
        Assert.Equal($"{BackendVip}:80", Pkt.Src4(reply.DataOut));
        Assert.Equal("10.244.0.10:41000", Pkt.Dst4(reply.DataOut));
        Assert.Equal([EventKind.Nat, EventKind.Trace, EventKind.Capture], rev.Kinds);
        var rnat = Assert.Single(rev.Nats);
        Assert.Equal(NatKind.RevDnat, rnat.NatKind);
        Assert.Equal(svc.Id, rnat.ServiceId);
        Assert.Equal(backend, Pkt.S(rnat.Orig));
        Assert.Equal($"{BackendVip}:80", Pkt.S(rnat.Xlated));
        var t = Assert.Single(rev.Traces);
        Assert.Equal(CtState.Reply, t.CtState);
        Assert.Equal(backendPod.Ip, EventReader.Address(t.OrigAddr, 2));
        Assert.Equal($"{BackendVip}:80", Pkt.S(t.Tuple));
        Assert.Equal(h.Dp.IdentityOf(cluster.Pods.Single(p => p.FullName == backendPod.Pod)).Id, t.Meta.SrcIdentity);
    }

    [KernelFact]
    public void ServiceDnat_ManyFlows_EachFlowKeepsItsBackendAndBothBackendsUsed()
    {
        using var h = new DatapathHarness(Cluster(), EventOptions.PerPacket with { RingBytes = 1 << 20, Kinds = new HashSet<EventKind> { EventKind.Drop } });
        var chosen = new Dictionary<int, string>();

        for (int port = 42000; port < 42032; port++)
            chosen[port] = Pkt.Dst4(h.From(Frontend, Packets.Udp("10.244.0.10", (ushort)port, BackendVip, 53)).DataOut);
        for (int port = 42000; port < 42032; port++)
        {
            var again = h.From(Frontend, Packets.Udp("10.244.0.10", (ushort)port, BackendVip, 53));
            Assert.True(Packets.ChecksumsValid(again.DataOut));
            Assert.Equal(chosen[port], Pkt.Dst4(again.DataOut));
        }

        Assert.Equal(["10.244.0.20:5353", "10.244.0.21:5353"], chosen.Values.Distinct().Order().ToArray());
        Assert.Empty(h.Take().Records);
    }

    [KernelFact]
    public void FlowId_SameConnectionAtBothEndpoints_Equal()
    {
        using var h = new DatapathHarness(Cluster());

        h.From(Frontend, Packets.Tcp("10.244.0.10", 41500, "10.244.0.20", 8080));
        var atClient = Assert.Single(h.Take().Traces);
        h.To(Backend2, Packets.Tcp("10.244.0.10", 41500, "10.244.0.20", 8080));
        var atServer = Assert.Single(h.Take().Traces);
        h.To(Backend2, Packets.Tcp("10.244.0.10", 41501, "10.244.0.20", 8080));
        var other = Assert.Single(h.Take().Traces);

        Assert.Equal(atClient.Meta.FlowId, atServer.Meta.FlowId);
        Assert.NotEqual(atClient.Meta.FlowId, other.Meta.FlowId);
        Assert.Equal((ObsPoint.FromEndpoint, ObsPoint.ToEndpoint), (atClient.Meta.ObsPoint, atServer.Meta.ObsPoint));
    }

    /// <summary>An IPv4 packet split into two fragments at L4 byte <paramref name="at"/> (a multiple of 8).</summary>
    private static (byte[] First, byte[] Later) Fragment(byte[] pkt, int at, ushort id)
    {
        var l4 = pkt.AsSpan(34);
        byte[] Part(ReadOnlySpan<byte> body, ushort fragField)
        {
            var p = new byte[34 + body.Length];
            pkt.AsSpan(0, 34).CopyTo(p);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(16), (ushort)(20 + body.Length));
            System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(18), id);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(20), fragField);
            Fix(p);
            body.CopyTo(p.AsSpan(34));
            return p;
        }
        return (Part(l4[..at], 0x2000), Part(l4[at..], (ushort)(at / 8)));
    }

    private static void Fix(byte[] p)
    {
        p[24] = p[25] = 0;
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(24), Packets.Checksum(p.AsSpan(14, 20), 0));
    }

    [KernelFact]
    public void Ipv4Fragments_UdpToService_BothFragmentsTranslatedAndLoneLaterFragmentDropped()
    {
        using var h = new DatapathHarness(Cluster());
        var whole = Packets.Udp("10.244.0.10", 52000, BackendVip, 53, payload: 32);
        var (first, later) = Fragment(whole, 24, 0x4242);

        var a = h.From(Frontend, first);
        var b = h.From(Frontend, later);
        h.Take();
        var lone = h.From(Frontend, Fragment(Packets.Udp("10.244.0.10", 52001, BackendVip, 53, payload: 32), 24, 0x4343).Later);
        var loneEv = h.Take();

        Assert.Equal((TcActOk, TcActOk), (a.ReturnValue, b.ReturnValue));
        var backend = Pkt.Dst(a.DataOut);
        Assert.True(backend.ToString() is "10.244.0.20" or "10.244.0.21", $"backend {backend}");
        Assert.Equal(5353, Pkt.Dport(a.DataOut));
        Assert.Equal(backend, Pkt.Dst(b.DataOut));
        Assert.Equal(later.AsSpan(34).ToArray(), b.DataOut.AsSpan(34).ToArray()); // payload untouched
        // reassembled, the datagram's UDP checksum holds for the translated addresses and port
        var re = new byte[whole.Length];
        a.DataOut.AsSpan(0, 34).CopyTo(re);
        a.DataOut.AsSpan(34).CopyTo(re.AsSpan(34));
        b.DataOut.AsSpan(34).CopyTo(re.AsSpan(34 + 24));
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(re.AsSpan(16), (ushort)(re.Length - 14));
        re[20] = re[21] = 0;
        Fix(re);
        Assert.True(Packets.ChecksumsValid(re));
        Assert.Equal(TcActShot, lone.ReturnValue);
        Assert.Equal((ushort)DropReason.FragNotFound, Assert.Single(loneEv.Drops).Reason);
    }

    [KernelFact]
    public void ServiceWithoutBackends_Syn_DroppedServiceBackendNotFound()
    {
        using var h = new DatapathHarness(Cluster());

        var r = h.From(Frontend, Packets.Tcp("10.244.0.10", 43000, EmptyVip, 80));
        var ev = h.Take();

        Assert.Equal(TcActShot, r.ReturnValue);
        Assert.Equal([EventKind.Drop, EventKind.Capture], ev.Kinds);
        var d = Assert.Single(ev.Drops);
        Assert.Equal((ushort)DropReason.NoService, d.Reason);
        Assert.Equal(158, d.Reason);
        Assert.Equal(SrcFile.Lb, d.File);
        DropSite.AssertPointsAtFxDrop(d);
        Assert.Equal($"{EmptyVip}:80", Pkt.D(d.Tuple));
        Assert.Equal(Dir.Egress, d.Meta.Direction);
        Assert.Equal((ushort)158, Assert.Single(ev.Captures).DropReason);
    }

    [KernelFact]
    public void Snat_PodToWorldAndReturn_MasqueradedAndTranslatedBack()
    {
        using var h = new DatapathHarness(Cluster());
        var syn = Packets.Tcp("10.244.0.10", 44000, "198.51.100.10", 443);

        Assert.Equal(TcActOk, h.From(Frontend, syn).ReturnValue);
        h.Take();
        var out1 = h.ToNetwork(syn);
        var ev = h.Take();

        Assert.Equal(TcActOk, out1.ReturnValue);
        Assert.True(Packets.ChecksumsValid(out1.DataOut));
        Assert.Equal(IPAddress.Parse(NodeIp), Pkt.Src(out1.DataOut));
        Assert.Equal("198.51.100.10:443", Pkt.Dst4(out1.DataOut));
        int nodePort = Pkt.Sport(out1.DataOut);
        Assert.Equal([EventKind.Nat, EventKind.Trace, EventKind.Capture], ev.Kinds);
        var nat = Assert.Single(ev.Nats);
        Assert.Equal(NatKind.Snat, nat.NatKind);
        Assert.Equal("10.244.0.10:44000", Pkt.S(nat.Orig));
        Assert.Equal($"{NodeIp}:{nodePort}", Pkt.S(nat.Xlated));
        Assert.Equal(h.IdentityOf(Frontend), nat.Meta.SrcIdentity);
        Assert.Equal((uint)ReservedIdentity.World, nat.Meta.DstIdentity);
        Assert.Equal(ObsPoint.ToNetwork, nat.Meta.ObsPoint);

        var ret = h.FromNetwork(Packets.Tcp("198.51.100.10", 443, NodeIp, (ushort)nodePort, SynAck));
        var retEv = h.Take();

        Assert.Equal(TcActOk, ret.ReturnValue);
        Assert.True(Packets.ChecksumsValid(ret.DataOut));
        Assert.Equal("10.244.0.10:44000", Pkt.Dst4(ret.DataOut));
        Assert.Equal("198.51.100.10:443", Pkt.Src4(ret.DataOut));
        var rnat = Assert.Single(retEv.Nats);
        Assert.Equal(NatKind.RevSnat, rnat.NatKind);
        Assert.Equal($"{NodeIp}:{nodePort}", Pkt.D(rnat.Orig));
        Assert.Equal("10.244.0.10:44000", Pkt.D(rnat.Xlated));
        Assert.Equal(IPAddress.Parse(NodeIp), EventReader.Address(Assert.Single(retEv.Traces).OrigAddr, 2));

        var toPod = h.To(Frontend, ret.DataOut);
        Assert.Equal(TcActOk, toPod.ReturnValue);
        Assert.Equal(CtState.Reply, Assert.Single(h.Take().Traces).CtState);

        var snap = h.Dp.Snapshot();
        Assert.Contains(snap.Nat, n => n.Kind == "snat" && n.SourcePort == 44000 && n.ToAddress.Equals(IPAddress.Parse(NodeIp)) && n.ToPort == nodePort);
        Assert.Contains(snap.Nat, n => n.Kind == "rev-snat" && n.DestinationPort == nodePort && n.ToPort == 44000);
    }

    [KernelFact]
    public void Snat_InClusterAndServiceDestinations_LeftUntouched()
    {
        using var h = new DatapathHarness(Cluster());
        var toPod = Packets.Tcp("10.244.0.10", 44100, "10.244.0.20", 8080);
        var toSvc = Packets.Tcp("10.244.0.10", 44101, "10.96.5.5", 80);
        var stray = Packets.Tcp("198.51.100.10", 443, NodeIp, 55555, SynAck);

        var a = h.ToNetwork(toPod);
        var b = h.ToNetwork(toSvc);
        var c = h.FromNetwork(stray);

        Assert.Equal(toPod, a.DataOut);
        Assert.Equal(toSvc, b.DataOut);
        Assert.Equal(stray, c.DataOut);
        Assert.Empty(h.Take().Records);
    }

    [KernelFact]
    public void CidrSetWithExcept_InsideAndExceptedAddress_AllowedAndDropped()
    {
        using var h = new DatapathHarness(Cluster(Policy("to-testnet", Sel(("app", "frontend")),
            egress: [Rule(cidrs: [new CidrRule("198.51.100.0/24", ["198.51.100.128/25"])])])));
        var ids = h.Dp.Identities;
        var inside = ids.Single(i => i.Labels.Contains("cidr:198.51.100.0/24")).Id;
        var excepted = ids.Single(i => i.Labels.Contains("cidr:198.51.100.128/25")).Id;

        var ok = h.From(Frontend, Packets.Tcp("10.244.0.10", 45000, "198.51.100.10", 443));
        var okEv = h.Take();
        var no = h.From(Frontend, Packets.Tcp("10.244.0.10", 45001, "198.51.100.200", 443));
        var noEv = h.Take();
        var outside = h.From(Frontend, Packets.Tcp("10.244.0.10", 45002, "203.0.113.9", 443));
        var outsideEv = h.Take();

        Assert.True(inside >= (uint)ReservedIdentity.MinLocal && excepted >= (uint)ReservedIdentity.MinLocal);
        Assert.Equal(TcActOk, ok.ReturnValue);
        AssertAllowedNew(okEv, inside, PolicyMatch.L3Only, Dir.Egress);
        Assert.Equal(TcActShot, no.ReturnValue);
        AssertPolicyDrop(noEv, excepted, (ushort)DropReason.Policy, PolicyMatch.None, Dir.Egress);
        Assert.Equal(TcActShot, outside.ReturnValue);
        AssertPolicyDrop(outsideEv, (uint)ReservedIdentity.World, (ushort)DropReason.Policy, PolicyMatch.None, Dir.Egress);
    }

    [KernelFact]
    public void Entities_WorldHostCluster_SelectReservedAndWorkloadIdentities()
    {
        using var h = new DatapathHarness(Cluster(
            Policy("fe-world", Sel(("app", "frontend")), egress: [Rule(entities: ["world"], ports: [new PortProtocol(443, "TCP")])]),
            BackendIngress(Rule(entities: ["host"]), Rule(entities: ["cluster"], ports: [new PortProtocol(8080, "ANY")]))));

        var world = h.From(Frontend, Packets.Tcp("10.244.0.10", 46000, "203.0.113.5", 443));
        var worldEv = h.Take();
        var notWorld = h.From(Frontend, Packets.Tcp("10.244.0.10", 46001, "10.244.0.20", 443));
        h.Take();
        var host = h.To(Backend2, Packets.Tcp(NodeIp, 46002, "10.244.0.20", 22));
        var hostEv = h.Take();
        var cluster = h.To(Backend2, Packets.Udp("10.244.1.5", 46003, "10.244.0.20", 8080));
        var clusterEv = h.Take();
        var outsider = h.To(Backend2, Packets.Udp("203.0.113.5", 46004, "10.244.0.20", 8080));

        Assert.Equal(TcActOk, world.ReturnValue);
        AssertAllowedNew(worldEv, (uint)ReservedIdentity.World, PolicyMatch.L3L4, Dir.Egress);
        Assert.Equal(TcActShot, notWorld.ReturnValue);
        Assert.Equal(TcActOk, host.ReturnValue);
        AssertAllowedNew(hostEv, (uint)ReservedIdentity.Host, PolicyMatch.L3Only, Dir.Ingress);
        Assert.Equal(TcActOk, cluster.ReturnValue);
        AssertAllowedNew(clusterEv, h.IdentityOf(Tool), PolicyMatch.L3L4, Dir.Ingress);
        Assert.Equal(TcActShot, outsider.ReturnValue);
    }

    [KernelFact]
    public void AuditMode_ConnectionPolicyDenies_PassesWithAuditVerdict()
    {
        using var h = new DatapathHarness(Cluster(BackendIngress(Rule(ports: [new PortProtocol(8080, "TCP")]))));
        h.Dp.PolicyAuditMode = true;

        var r = h.To(Backend2, Packets.Tcp("10.244.0.10", 47100, "10.244.0.20", 9090));
        var ev = h.Take();

        Assert.Equal(TcActOk, r.ReturnValue);
        Assert.Equal([EventKind.Policy, EventKind.Trace, EventKind.Capture], ev.Kinds);
        var v = Assert.Single(ev.Verdicts);
        Assert.Equal((VerdictAction.Audit, PolicyMatch.None), (v.Action, v.Match));
        Assert.True(Assert.Single(h.Dp.Snapshot().Conntrack).Flags.HasFlag(CtFlags.Audited));
    }

    [KernelFact]
    public void IcmpMessages_ThroughPrograms_RowsCarryTypeAndCodeAndReplayNamesThemAsCiliumMonitor()
    {
        using var h = new DatapathHarness(Cluster());
        h.To(Backend2, Packets.IcmpEcho("10.244.0.10", "10.244.0.20", 77));
        h.From(Backend2, Packets.IcmpEcho("10.244.0.20", "10.244.0.10", 77, reply: true));
        h.From(Backend2, Packets.IcmpError("10.244.0.20", "10.244.0.10", Packets.Udp("10.244.0.10", 40001, "10.244.0.20", 5353)));
        h.From(Backend2, Packets.IcmpError("10.244.0.20", "10.244.0.10", Packets.Udp("10.244.0.10", 40002, "10.244.0.20", 5353), type: 11, code: 0));
        var ev = h.Take();

        // the event's tuple: the type and code in the port slots, marked as such
        var traces = ev.Traces;
        Assert.All(traces, t => Assert.True(t.Tuple.CarriesIcmp));
        Assert.Equal([(8, 0), (0, 0), (3, 3), (11, 0)], traces.Select(t => ((int)t.Tuple.Sport, (int)t.Tuple.Dport)).Distinct());

        // the recorded rows: ports 0 (the schema's "0 for ICMP"), the type and code in the summary as Hubble writes it
        var ctx = new Forensics.Recorder.Tables.EventContext(0);
        var rows = Forensics.Recorder.Tables.Rows.For(EventKind.Trace, 16)!;
        foreach (var r in ev.Records.Where(r => EventReader.Header(r).Kind == EventKind.Trace))
            rows.Append(r, ctx);
        var table = Forensics.Recorder.Batches.BatchRows.Rows(rows.Batch).ToList();
        Assert.All(table, r => Assert.Equal(((ushort)0, (ushort)0), ((ushort)r["src_port"]!, (ushort)r["dst_port"]!)));
        Assert.Equal(["ICMPv4 EchoRequest", "ICMPv4 EchoReply", "ICMPv4 DestinationUnreachable(Port)", "ICMPv4 TimeExceeded(TTLExceeded)"],
            table.Select(r => (string)r["summary"]!).Distinct());

        // replayed as cilium monitor prints them: "-> endpoint 212 flow ... : 10.244.0.10 -> 10.244.0.20 EchoRequest"
        var renderer = new Forensics.Query.Render.LineRenderer(Forensics.Query.Render.RenderFormat.Compact);
        var lines = table.Select(r => renderer.Render("trace", r)!).ToList();
        Assert.EndsWith(": 10.244.0.10 -> 10.244.0.20 EchoRequest", lines[0], StringComparison.Ordinal);
        Assert.Contains(lines, l => l.EndsWith(": 10.244.0.20 -> 10.244.0.10 EchoReply", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.EndsWith(": 10.244.0.20 -> 10.244.0.10 DestinationUnreachable(Port)", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.EndsWith(": 10.244.0.20 -> 10.244.0.10 TimeExceeded(TTLExceeded)", StringComparison.Ordinal));
    }

    [KernelFact]
    public void Snat_IcmpEcho_MasqueradedAndReplyTranslatedBack()
    {
        using var h = new DatapathHarness(Cluster());

        var echo = h.ToNetwork(Packets.IcmpEcho("10.244.0.10", "203.0.113.20", 4242));
        var reply = h.FromNetwork(Packets.IcmpEcho("203.0.113.20", NodeIp, 4242, reply: true));
        var ev = h.Take();

        Assert.Equal(IPAddress.Parse(NodeIp), Pkt.Src(echo.DataOut));
        Assert.True(Packets.ChecksumsValid(echo.DataOut));
        Assert.Equal(IPAddress.Parse("10.244.0.10"), Pkt.Dst(reply.DataOut));
        Assert.True(Packets.ChecksumsValid(reply.DataOut));
        Assert.Equal([NatKind.Snat, NatKind.RevSnat], ev.Nats.Select(n => n.NatKind));
    }

    [KernelFact]
    public void Ipv6Endpoints_L4Policy_EnforcedAndNeighbourDiscoveryPasses()
    {
        var fe6 = Pod("frontend-6", "default", "fd00::10", ("app", "frontend"));
        var be6 = Pod("backend-6", "default", "fd00::20", ("app", "backend"));
        var cluster = new ClusterSpec("v6.yaml", null, [fe6, be6], [],
            [BackendIngress(Rule(endpoints: [Sel(("app", "frontend"))], ports: [new PortProtocol(8080, "TCP")]))]);
        using var h = new DatapathHarness(cluster);

        var ok = h.To(be6, Packets.Tcp("fd00::10", 40000, "fd00::20", 8080));
        var okEv = h.Take();
        var bad = h.To(be6, Packets.Tcp("fd00::10", 40001, "fd00::20", 9090));
        var badEv = h.Take();
        var reply = h.From(be6, Packets.Tcp("fd00::20", 8080, "fd00::10", 40000, SynAck));
        var replyEv = h.Take();
        var nd = h.To(be6, Packets.Icmp6("fe80::1", "ff02::1:ff00:20", 135));
        var ndOut = h.From(be6, Packets.Icmp6("fe80::2", "ff02::1:ff00:10", 135));

        Assert.Equal(TcActOk, ok.ReturnValue);
        AssertAllowedNew(okEv, h.IdentityOf(fe6), PolicyMatch.L3L4, Dir.Ingress);
        Assert.Equal(10, Assert.Single(okEv.Traces).Tuple.Family);
        Assert.Equal(TcActShot, bad.ReturnValue);
        AssertPolicyDrop(badEv, h.IdentityOf(fe6), (ushort)DropReason.Policy, PolicyMatch.None, Dir.Ingress);
        Assert.Equal(TcActOk, reply.ReturnValue);
        Assert.Equal(CtState.Reply, Assert.Single(replyEv.Traces).CtState);
        Assert.Equal(TcActOk, nd.ReturnValue);
        Assert.Equal(TcActOk, ndOut.ReturnValue);
        Assert.Contains(h.Dp.Snapshot().Ipcache, i => i.Prefix == "fd00::20/128" && i.Identity == h.IdentityOf(be6));
    }

    [KernelFact]
    public void ReplacePolicies_NewPolicyInForce_NewConnectionsDeniedTrackedOnesContinue()
    {
        using var h = new DatapathHarness(Cluster());
        Assert.Equal(TcActOk, h.To(Backend2, Packets.Tcp("10.244.0.10", 51000, "10.244.0.20", 8080)).ReturnValue);

        h.Dp.ReplacePolicies([BackendIngress(Rule(cidrs: [new CidrRule("203.0.113.0/24", [])]))]);
        h.Take();
        var tracked = h.To(Backend2, Packets.Tcp("10.244.0.10", 51000, "10.244.0.20", 8080, Packets.TcpAck));
        var fresh = h.To(Backend2, Packets.Tcp("10.244.0.10", 51001, "10.244.0.20", 8080));
        var world = h.To(Backend2, Packets.Tcp("203.0.113.9", 51002, "10.244.0.20", 8080));
        var ev = h.Take();

        Assert.Equal(TcActOk, tracked.ReturnValue);
        Assert.Equal(TcActShot, fresh.ReturnValue);
        Assert.Equal(TcActOk, world.ReturnValue);
        var cidrId = h.Dp.Identities.Single(i => i.Labels.Contains("cidr:203.0.113.0/24")).Id;
        Assert.Equal([(VerdictAction.Deny, h.IdentityOf(Frontend)), (VerdictAction.Allow, cidrId)], ev.Verdicts.Select(v => (v.Action, v.RemoteIdentity)));
        Assert.Equal("backend-ingress", Assert.Single(h.Dp.Snapshot().Policies).Name);
        h.Dp.ReplacePolicies([]);
        Assert.Equal(TcActOk, h.To(Backend2, Packets.Tcp("10.244.0.10", 51003, "10.244.0.20", 8080)).ReturnValue);
        Assert.Empty(h.Dp.Snapshot().PolicyEntries);
    }

    [KernelFact]
    public void SpoofedSource_FromEndpoint_DroppedInvalidSourceIp()
    {
        using var h = new DatapathHarness(Cluster());

        var r = h.From(Frontend, Packets.Tcp("10.244.0.99", 47000, "10.244.0.20", 8080));
        var d = Assert.Single(h.Take().Drops);

        Assert.Equal(TcActShot, r.ReturnValue);
        Assert.Equal((ushort)DropReason.InvalidSip, d.Reason);
        Assert.Equal(SrcFile.Datapath, d.File);
        DropSite.AssertPointsAtFxDrop(d);
    }

    [KernelFact]
    public void EventKinds_OnlyDropsEnabled_AllowedPacketSilentAndDropCounted()
    {
        using var h = new DatapathHarness(Cluster(BackendIngress(Rule(ports: [new PortProtocol(8080, "TCP")]))),
            EventOptions.PerPacket with { RingBytes = 1 << 20, Kinds = new HashSet<EventKind> { EventKind.Drop } });

        h.To(Backend2, Packets.Tcp("10.244.0.10", 48000, "10.244.0.20", 8080));
        h.To(Backend2, Packets.Tcp("10.244.0.10", 48001, "10.244.0.20", 9090));
        var ev = h.Take();

        Assert.Equal([EventKind.Drop], ev.Kinds);
        var counters = EventChannel.ReadCounters(h.Dp.EmitStatsMap);
        Assert.Equal(1ul, counters[EventKind.Drop].Emitted);
        Assert.Equal(0ul, counters[EventKind.Trace].Emitted);
        Assert.Equal(0ul, counters[EventKind.Policy].Emitted);
    }

    [KernelFact]
    public void Capture_DroppedPacket_BytesAsSentWithReason()
    {
        using var h = new DatapathHarness(Cluster(BackendIngress(Rule(ports: [new PortProtocol(8080, "TCP")]))),
            EventOptions.PerPacket with { RingBytes = 1 << 20, Snaplen = 40 });
        var pkt = Packets.Tcp("10.244.0.10", 49000, "10.244.0.20", 9090);

        h.To(Backend2, pkt);
        var cap = Assert.Single(h.Take().Captures);

        Assert.Equal(40, cap.CapLen);
        Assert.Equal(pkt[..40], ((ReadOnlySpan<byte>)cap.Data)[..40].ToArray());
        Assert.Equal((ushort)DropReason.Policy, cap.DropReason);
        Assert.Equal(CtState.New, cap.CtState);
    }

    [KernelFact]
    public void Snapshot_AfterTraffic_HoldsIdentitiesPoliciesServicesAndConntrack()
    {
        var policy = BackendIngress(Rule(endpoints: [Sel(("app", "frontend"))], ports: [new PortProtocol(8080, "TCP")]));
        using var h = new DatapathHarness(Cluster(policy));
        h.To(Backend2, Packets.Tcp("10.244.0.10", 50000, "10.244.0.20", 8080));

        var s = h.Dp.Snapshot();

        Assert.Equal(5, s.Endpoints.Count);
        Assert.Contains(s.Identities, i => i.Id == 1 && i.Labels.SequenceEqual(["reserved:host"]));
        Assert.Contains(s.Identities, i => i.Id == 2 && i.Labels.SequenceEqual(["reserved:world"]));
        var fe = s.Identities.Single(i => i.Id == h.IdentityOf(Frontend));
        Assert.Equal(
            ["k8s:app=frontend", "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default", "k8s:io.cilium.k8s.policy.cluster=default",
             "k8s:io.cilium.k8s.policy.serviceaccount=default", "k8s:io.kubernetes.pod.namespace=default"],
            fe.Labels);
        Assert.NotEqual(h.IdentityOf(Frontend), h.IdentityOf(Tool)); // same app label, other namespace
        Assert.Equal(h.IdentityOf(Backend2), h.IdentityOf(Backend3)); // same labels, one identity
        Assert.Contains(s.Ipcache, i => i.Prefix == "10.244.0.20/32" && i.Identity == h.IdentityOf(Backend2) && i.EndpointId != 0);
        Assert.Contains(s.Ipcache, i => i.Prefix == $"{NodeIp}/32" && i.Identity == 1);
        Assert.Equal(policy.SourceText, Assert.Single(s.Policies).SourceText);
        var entry = s.PolicyEntries.Single(e => e.Endpoint == "default/backend-2");
        Assert.Equal((h.IdentityOf(Frontend), (byte)6, (ushort)8080, true, false, 1ul), (entry.Identity, entry.Protocol, entry.Port, entry.Allow, entry.Deny, entry.Hits));
        Assert.Equal(PolicyMatch.L3L4, entry.Match);
        var svc = s.Services.Single(x => x.Name == "backend-service" && x.Protocol == "TCP");
        Assert.Equal(["default/backend-2", "default/backend-3"], svc.Backends.Select(b => b.Pod!).ToArray());
        Assert.All(svc.Backends, b => Assert.Equal(8080, b.Port));
        Assert.Empty(s.Services.Single(x => x.Name == "empty-service").Backends);
        var ct = Assert.Single(s.Conntrack);
        Assert.Equal((IPAddress.Parse("10.244.0.10"), 50000, 8080, Dir.Ingress, h.IdentityOf(Frontend)),
            (ct.Source, ct.SourcePort, ct.DestinationPort, ct.Direction, ct.RemoteIdentity));
    }

    [KernelFact]
    public void MonitorAggregationMedium_EstablishedPackets_TracedOnlyOnNewFlagsPerDirection()
    {
        // as Cilium's monitor aggregation "medium": a tracked connection's packets make a trace event
        // when the direction shows a TCP flag not traced before; verdicts, drops and capture are not aggregated
        using var h = new DatapathHarness(Cluster(BackendIngress(Rule(ports: [new PortProtocol(8080, "TCP")]))),
            new EventOptions { RingBytes = 1 << 20, MonitorAggregation = MonitorAggregation.Medium, CaptureFirst = EventOptions.CaptureAll });
        int Traces(byte flags, bool reply = false)
        {
            var p = reply ? Packets.Tcp("10.244.0.20", 8080, "10.244.0.10", 40000, flags) : Packets.Tcp("10.244.0.10", 40000, "10.244.0.20", 8080, flags);
            var r = reply ? h.From(Backend2, p) : h.To(Backend2, p);
            Assert.Equal(TcActOk, r.ReturnValue);
            var ev = h.Take();
            Assert.Single(ev.Captures); // capture all: per packet whatever the aggregation
            return ev.Traces.Count;
        }

        Assert.Equal(1, Traces(Packets.TcpSyn));          // new connection (with its verdict)
        Assert.Equal(1, Traces(SynAck, reply: true));     // the reply direction's first SYN and ACK
        Assert.Equal(1, Traces(Packets.TcpAck));          // ACK first seen going forward
        Assert.Equal(0, Traces(Packets.TcpAck));          // nothing new: aggregated
        Assert.Equal(0, Traces(Packets.TcpAck, reply: true));
        Assert.Equal(0, Traces(Packets.TcpAck));
        Assert.Equal(1, Traces(FinAck)); // FIN first seen going forward
        Assert.Equal(0, Traces(FinAck));
        Assert.Equal(1, Traces(FinAck, reply: true));

        var ct = h.Dp.Snapshot().Conntrack.Single(c => c.Direction == Dir.Ingress && c.DestinationPort == 8080);
        Assert.Equal(9ul, ct.Packets); // every packet was still tracked
    }

    [KernelFact]
    public void MonitorAggregationNone_EveryPacketTraced()
    {
        using var h = new DatapathHarness(Cluster(BackendIngress(Rule(ports: [new PortProtocol(8080, "TCP")]))),
            new EventOptions { RingBytes = 1 << 20, MonitorAggregation = MonitorAggregation.None });
        h.To(Backend2, Packets.Tcp("10.244.0.10", 40000, "10.244.0.20", 8080, Packets.TcpSyn));
        h.Take();
        for (int i = 0; i < 3; i++)
        {
            h.To(Backend2, Packets.Tcp("10.244.0.10", 40000, "10.244.0.20", 8080, Packets.TcpAck));
            Assert.Equal(CtState.Established, Assert.Single(h.Take().Traces).CtState);
        }
    }

    /// <summary>
    /// One scripted exchange: a service flow (DNAT both ways, 24 packets each way), a denied TCP port retried 5
    /// times, an allowed UDP flow (10 datagrams each way), run through the real programs.
    /// </summary>
    private static Events RunSampledScript(EventOptions options)
    {
        var policy = BackendIngress(Rule(ports: [new PortProtocol(8080, "TCP"), new PortProtocol(5353, "UDP")]));
        using var h = new DatapathHarness(Cluster(policy), options with { RingBytes = 1 << 22 });
        var all = new List<byte[]>();
        void Take() => all.AddRange(h.Take().Records);
        var backend = Pkt.Dst4(h.From(Frontend, Packets.Tcp("10.244.0.10", 43000, BackendVip, 80)).DataOut);
        var (bip, bport) = (backend.Split(':')[0], ushort.Parse(backend.Split(':')[1], System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(TcActOk, h.To(Frontend, Packets.Tcp(bip, bport, "10.244.0.10", 43000, SynAck)).ReturnValue);
        for (int i = 0; i < 24; i++)
        {
            h.From(Frontend, Packets.Tcp("10.244.0.10", 43000, BackendVip, 80, Packets.TcpAck | 0x08, payload: 100));
            h.To(Frontend, Packets.Tcp(bip, bport, "10.244.0.10", 43000, Packets.TcpAck | 0x08, payload: 1000));
        }
        h.From(Frontend, Packets.Tcp("10.244.0.10", 43000, BackendVip, 80, FinAck));
        h.To(Frontend, Packets.Tcp(bip, bport, "10.244.0.10", 43000, FinAck));
        Take();
        for (int i = 0; i < 5; i++)
            Assert.Equal(TcActShot, h.To(Backend2, Packets.Tcp("10.244.0.10", 43001, "10.244.0.20", 9090)).ReturnValue);
        Take();
        for (int i = 0; i < 10; i++)
        {
            Assert.Equal(TcActOk, h.To(Backend2, Packets.Udp("10.244.0.10", 43002, "10.244.0.20", 5353, payload: 64)).ReturnValue);
            Assert.Equal(TcActOk, h.From(Backend2, Packets.Udp("10.244.0.20", 5353, "10.244.0.10", 43002, payload: 512)).ReturnValue);
        }
        Take();
        return new Events(all);
    }

    private static string Key(in Forensics.Datapath.Abi.Tuple t, in DpMeta m) => $"{Pkt.S(t)}>{Pkt.D(t)}/{t.Proto}@{m.ObsPoint}";

    [KernelFact]
    public void DefaultSampling_ScriptedFlows_EveryDropVerdictNatAndFirstPacketsOfEachFlowKept()
    {
        // the defaults of a long recording (monitor aggregation medium, capture of drops and first packets)
        // against every packet traced and captured, on the same packets
        var every = RunSampledScript(EventOptions.PerPacket);
        var sampled = RunSampledScript(new EventOptions());

        Assert.Equal(MonitorAggregation.Medium, new EventOptions().MonitorAggregation);
        // every drop, verdict and NAT event: the same events in both
        Assert.Equal(5, every.Drops.Count);
        Assert.Equal(every.Drops.Select(d => (Key(d.Tuple, d.Meta), d.Reason)), sampled.Drops.Select(d => (Key(d.Tuple, d.Meta), d.Reason)));
        Assert.Equal(6, every.Verdicts.Count); // 5 denied SYNs and the UDP flow
        Assert.Equal(every.Verdicts.Select(v => (Key(v.Tuple, v.Meta), v.Action)), sampled.Verdicts.Select(v => (Key(v.Tuple, v.Meta), v.Action)));
        Assert.Equal([NatKind.Dnat, NatKind.RevDnat], sampled.Nats.Select(n => n.NatKind));
        Assert.Equal(every.Nats.Select(n => (Pkt.S(n.Orig), Pkt.D(n.Orig), Pkt.D(n.Xlated), n.NatKind)), sampled.Nats.Select(n => (Pkt.S(n.Orig), Pkt.D(n.Orig), Pkt.D(n.Xlated), n.NatKind)));
        // every dropped packet captured, with its reason
        Assert.Equal(5, sampled.Captures.Count(c => c.DropReason == (ushort)DropReason.Policy));
        // each flow's first packet and first reply traced; new TCP flags traced (SYN, SYN-ACK, first ACK each way, FINs)
        Assert.Equal(52 + 20, every.Traces.Count);
        var tcpTraces = sampled.Traces.Where(t => t.Tuple.Proto == 6).ToList();
        Assert.Equal([CtState.New, CtState.Reply, CtState.Established, CtState.Established, CtState.Reply],
            tcpTraces.Select(t => t.CtState));
        Assert.Equal([0x02, 0x12, 0x18, 0x11, 0x11], tcpTraces.Select(t => (int)t.Tuple.TcpFlags));
        var udpTraces = sampled.Traces.Where(t => t.Tuple.Proto == 17).ToList();
        Assert.Equal([CtState.New, CtState.Reply], udpTraces.Select(t => t.CtState));
        // the first 8 packets of each connection at its endpoint captured (both directions), in order
        var tcpCaptures = sampled.Captures.Where(c => c.Tuple.Proto == 6 && c.DropReason == 0).ToList();
        var firstEight = every.Captures.Where(c => c.Tuple.Proto == 6 && c.DropReason == 0).Take(8).ToList();
        Assert.Equal(firstEight.Select(c => ((ReadOnlySpan<byte>)c.Data)[..c.CapLen].ToArray()), tcpCaptures.Select(c => ((ReadOnlySpan<byte>)c.Data)[..c.CapLen].ToArray()));
        Assert.Equal(8, sampled.Captures.Count(c => c.Tuple.Proto == 17));
        Assert.True(sampled.Records.Count * 3 < every.Records.Count, $"{sampled.Records.Count} events sampled, {every.Records.Count} per packet");
    }

    [KernelFact]
    public void CaptureDrops_AllowedAndDroppedPackets_OnlyDropsCaptured()
    {
        using var h = new DatapathHarness(Cluster(BackendIngress(Rule(ports: [new PortProtocol(8080, "TCP")]))),
            new EventOptions { RingBytes = 1 << 20, CaptureFirst = 0 });

        h.To(Backend2, Packets.Tcp("10.244.0.10", 44000, "10.244.0.20", 8080));
        h.To(Backend2, Packets.Tcp("10.244.0.10", 44000, "10.244.0.20", 8080, Packets.TcpAck));
        h.To(Backend2, Packets.Tcp("10.244.0.10", 44001, "10.244.0.20", 9090));
        var ev = h.Take();

        var cap = Assert.Single(ev.Captures);
        Assert.Equal((ushort)DropReason.Policy, cap.DropReason);
        Assert.Equal(2, ev.Traces.Count);
    }

    [KernelFact]
    public void Conntrack_PacketsBothWays_CountedPerDirectionInIpBytesWithTcpFlags()
    {
        using var h = new DatapathHarness(Cluster(BackendIngress(Rule(ports: [new PortProtocol(8080, "TCP")]))));

        h.To(Backend2, Packets.Tcp("10.244.0.10", 45000, "10.244.0.20", 8080));                        // 40 IP bytes
        h.From(Backend2, Packets.Tcp("10.244.0.20", 8080, "10.244.0.10", 45000, SynAck));             // 40
        h.To(Backend2, Packets.Tcp("10.244.0.10", 45000, "10.244.0.20", 8080, Packets.TcpAck, payload: 300)); // 340
        h.From(Backend2, Packets.Tcp("10.244.0.20", 8080, "10.244.0.10", 45000, Packets.TcpAck, payload: 1000)); // 1040
        h.From(Backend2, Packets.Tcp("10.244.0.20", 8080, "10.244.0.10", 45000, 0x04)); // RST, 40

        var map = h.Dp.Object.Map("fx_ct");
        var (_, e) = Assert.Single(map.Entries<CtKey, CtEntry>(), kv => kv.Key.Sport == 45000);
        Assert.Equal((2ul, 380ul, 3ul, 1120ul), (e.Packets, e.Bytes, e.RevPackets, e.RevBytes));
        Assert.Equal((0x12, 0x16), ((int)e.TcpFlags, (int)e.RevTcpFlags));
        Assert.True((e.Flags & CtFlags.Closing) != 0);
        var stats = h.Dp.Object.Map("fx_ct_stats").LookupPerCpu<uint, CtStats>(0);
        Assert.Equal(1ul, stats.Aggregate(0ul, (a, s) => a + s.Created));
    }

    [KernelFact]
    public void Conntrack_SynAfterFin_ReopensTheConnectionFromZero()
    {
        using var h = new DatapathHarness(Cluster(BackendIngress(Rule(ports: [new PortProtocol(8080, "TCP")]))));
        h.To(Backend2, Packets.Tcp("10.244.0.10", 46000, "10.244.0.20", 8080));
        h.To(Backend2, Packets.Tcp("10.244.0.10", 46000, "10.244.0.20", 8080, FinAck, payload: 10));
        h.Take();

        h.To(Backend2, Packets.Tcp("10.244.0.10", 46000, "10.244.0.20", 8080)); // the port reused
        var ev = h.Take();

        Assert.Equal(CtState.New, Assert.Single(ev.Traces).CtState);
        Assert.Single(ev.Verdicts); // decided by policy again
        var (_, e) = Assert.Single(h.Dp.Object.Map("fx_ct").Entries<CtKey, CtEntry>(), kv => kv.Key.Sport == 46000);
        Assert.Equal((1ul, 40ul, 0x02), (e.Packets, e.Bytes, (int)e.TcpFlags));
        Assert.Equal(CtFlags.None, e.Flags & CtFlags.Closing);
        // the closed connection's entry is kept for the recorder, with its final counters, under its creation time
        var (ck, closed) = Assert.Single(h.Dp.Object.Map("fx_ct_closed").Entries<CtClosedKey, CtEntry>());
        Assert.Equal((46000, (ushort)8080, closed.CreatedNs), (ck.Key.Sport, ck.Key.Dport, ck.CreatedNs));
        Assert.Equal((2ul, 90ul, 0x13), (closed.Packets, closed.Bytes, (int)closed.TcpFlags));
        Assert.True(closed.CreatedNs <= e.CreatedNs);
    }
}
