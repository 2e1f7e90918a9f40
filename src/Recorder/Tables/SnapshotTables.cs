using System.Net;
using Forensics.Datapath.Abi;
using Forensics.Datapath.Control;
using Forensics.Format;
using Forensics.Recorder.Batches;

namespace Forensics.Recorder.Tables;

/// <summary>One service frontend and its backends (address, port, namespace/pod) for the services snapshot.</summary>
public sealed record ServiceRow(uint Id, string Namespace, string Name, IPAddress Frontend, int Port, string Protocol,
    IReadOnlyList<(IPAddress Ip, int Port, string? Pod)> Backends, string? PortName, string Kind, string Source, string? Netns)
{
    /// <summary>The rows of a node's view of the services (a services file, kube-proxy's rules).</summary>
    public static IEnumerable<ServiceRow> From(IEnumerable<Datapath.Cluster.ServiceFrontend> services, string? netns = null) =>
        services.Select(s => new ServiceRow(0, s.Namespace, s.Name, s.Ip, s.Port, s.Protocol,
            [.. s.Endpoints.Select(e => (e.Ip, e.Port, e.Pod is null ? null : (string?)$"{e.PodNamespace}/{e.Pod}"))],
            s.PortName, s.Kind, s.Source, netns));
}

/// <summary>
/// The datapath's tables at one moment (endpoints, identities, ipcache,
/// policies as given and as compiled, services and backends, conntrack and
/// NAT entries) as table batches, with a phase column (start / end).
/// </summary>
public static class SnapshotTables
{
    public static List<TableBatch> From(DatapathSnapshot s, string phase)
    {
        ArgumentNullException.ThrowIfNull(s);
        long taken = (s.Taken.UtcTicks - DateTime.UnixEpoch.Ticks) * 100;
        var result = new List<TableBatch>();

        TableBatch New(string table, int rows, out Column<long> takenCol, out StringColumn phaseCol)
        {
            var b = new TableBatch(table, Math.Max(1, rows));
            phaseCol = b.Str("phase");
            takenCol = b.Timestamp("taken");
            result.Add(b);
            return b;
        }

        int Row(TableBatch b, Column<long> t, StringColumn p)
        {
            int i = b.NextRow();
            t.Values[i] = taken;
            p.Values[i] = phase;
            return i;
        }

        {
            var b = New("endpoints", s.Endpoints.Count, out var t, out var p);
            var (id, ns, pod, ip, identity, ifindex, ing, eg) = (b.U16("endpoint_id"), b.Str("namespace"), b.Str("pod"), b.Str("ip"),
                b.U32("identity"), b.U32("ifindex"), b.Bool("ingress_enforced"), b.Bool("egress_enforced"));
            foreach (var e in s.Endpoints)
            {
                int i = Row(b, t, p);
                id.Values[i] = e.Id; ns.Values[i] = e.Namespace; pod.Values[i] = e.Pod; ip.Values[i] = e.Ip.ToString();
                identity.Values[i] = e.Identity; ifindex.Values[i] = (uint)e.Ifindex; ing.Values[i] = e.IngressEnforced; eg.Values[i] = e.EgressEnforced;
            }
        }
        {
            var b = New("identities", s.Identities.Count, out var t, out var p);
            var (id, labels, kind) = (b.U32("identity"), b.Str("labels"), b.Str("kind"));
            foreach (var e in s.Identities)
            {
                int i = Row(b, t, p);
                id.Values[i] = e.Id; labels.Values[i] = string.Join(' ', e.Labels); kind.Values[i] = e.Kind;
            }
        }
        {
            var b = New("ipcache", s.Ipcache.Count, out var t, out var p);
            var (prefix, identity, ep) = (b.Str("prefix"), b.U32("identity"), b.U16("endpoint_id"));
            foreach (var e in s.Ipcache)
            {
                int i = Row(b, t, p);
                prefix.Values[i] = e.Prefix; identity.Values[i] = e.Identity; ep.Values[i] = e.EndpointId;
            }
        }
        {
            var b = New("policies", s.Policies.Count, out var t, out var p);
            var (name, ns, text) = (b.Str("name"), b.Str("namespace"), b.Str("source_text"));
            foreach (var e in s.Policies)
            {
                int i = Row(b, t, p);
                name.Values[i] = e.Name; ns.Values[i] = e.Namespace; text.Values[i] = e.SourceText;
            }
        }
        {
            var b = New("policy_entries", s.PolicyEntries.Count, out var t, out var p);
            var (ep, endpoint, dir, identity, proto, port, allow, deny, policies, hits) = (b.U16("endpoint_id"), b.Str("endpoint"), b.Str("direction"),
                b.U32("identity"), b.Str("protocol"), b.U16("port"), b.Bool("allow"), b.Bool("deny"), b.Str("policies"), b.U64("hits"));
            foreach (var e in s.PolicyEntries)
            {
                int i = Row(b, t, p);
                ep.Values[i] = e.EndpointId; endpoint.Values[i] = e.Endpoint; dir.Values[i] = Names.Direction((byte)e.Direction);
                identity.Values[i] = e.Identity; proto.Values[i] = e.Protocol == 0 ? "any" : Names.Protocol(e.Protocol); port.Values[i] = e.Port;
                allow.Values[i] = e.Allow; deny.Values[i] = e.Deny; policies.Values[i] = string.Join(',', e.Policies); hits.Values[i] = e.Hits;
            }
        }
        result.Add(Services(phase, s.Taken, s.Services.Select(svc => new ServiceRow(svc.Id, svc.Namespace, svc.Name, svc.Frontend, svc.Port,
            svc.Protocol.ToLowerInvariant(), [.. svc.Backends.Select(be => (be.Ip, be.Port, be.Pod))], null, "cluster IP", "lab", null))));
        {
            var b = New("conntrack", s.Conntrack.Count, out var t, out var p);
            var (src, sport, dst, dport, proto, dir, ep, remote, match, flags) = (b.Str("src_ip"), b.U16("src_port"), b.Str("dst_ip"), b.U16("dst_port"),
                b.Str("protocol"), b.Str("direction"), b.U16("endpoint_id"), b.U32("remote_identity"), b.Str("match"), b.Str("flags"));
            var (pkts, bytes, created, last, svc, sip, sport2) = (b.U64("packets"), b.U64("bytes"), b.U64("created_ns"), b.U64("last_ns"),
                b.U32("service_id"), b.Str("service_ip", nullable: true), b.I32("service_port", nullable: true));
            foreach (var e in s.Conntrack)
            {
                int i = Row(b, t, p);
                src.Values[i] = e.Source.ToString(); sport.Values[i] = (ushort)e.SourcePort; dst.Values[i] = e.Destination.ToString(); dport.Values[i] = (ushort)e.DestinationPort;
                proto.Values[i] = Names.Protocol(e.Protocol); dir.Values[i] = Names.Direction((byte)e.Direction); ep.Values[i] = e.EndpointId; remote.Values[i] = e.RemoteIdentity;
                match.Values[i] = Names.Match((byte)e.Match); flags.Values[i] = FlagText(e.Flags);
                pkts.Values[i] = e.Packets; bytes.Values[i] = e.Bytes; created.Values[i] = e.CreatedNs; last.Values[i] = e.LastNs; svc.Values[i] = e.ServiceId;
                sip.Values[i] = e.ServiceAddress?.ToString();
                if (e.ServiceAddress is null) sport2.SetNull(i); else sport2.Set(i, e.ServicePort);
            }
        }
        {
            var b = New("nat_entries", s.Nat.Count, out var t, out var p);
            var (kind, src, sport, dst, dport, proto, to, toPort, svc, created) = (b.Str("kind"), b.Str("src_ip"), b.U16("src_port"), b.Str("dst_ip"), b.U16("dst_port"),
                b.Str("protocol"), b.Str("to_ip"), b.U16("to_port"), b.U32("service_id"), b.U64("created_ns"));
            foreach (var e in s.Nat)
            {
                int i = Row(b, t, p);
                kind.Values[i] = e.Kind; src.Values[i] = e.Source.ToString(); sport.Values[i] = (ushort)e.SourcePort; dst.Values[i] = e.Destination.ToString();
                dport.Values[i] = (ushort)e.DestinationPort; proto.Values[i] = Names.Protocol(e.Protocol); to.Values[i] = e.ToAddress.ToString();
                toPort.Values[i] = (ushort)e.ToPort; svc.Values[i] = e.ServiceId; created.Values[i] = e.CreatedNs;
            }
        }
        return result;
    }

    /// <summary>
    /// The services snapshot (schemas/services.v2.json): one row per frontend and backend (backend columns
    /// null for a frontend without backends), from our datapath, a services file or kube-proxy's rules.
    /// </summary>
    public static TableBatch Services(string phase, DateTimeOffset taken, IEnumerable<ServiceRow> services)
    {
        ArgumentNullException.ThrowIfNull(services);
        var list = services.ToList();
        var b = new TableBatch("services", Math.Max(1, list.Sum(x => Math.Max(1, x.Backends.Count))));
        var (ph, tk) = (b.Str("phase"), b.Timestamp("taken"));
        var (id, name, ns, fip, port, proto) = (b.U32("service_id"), b.Str("name"), b.Str("namespace"), b.Str("frontend_ip"), b.U16("port"), b.Str("protocol"));
        var (bip, bport, bpod) = (b.Str("backend_ip", nullable: true), b.I32("backend_port", nullable: true), b.Str("backend_pod", nullable: true));
        var (pname, kind, source, netns) = (b.Str("port_name", nullable: true), b.Str("kind"), b.Str("source"), b.Str("netns", nullable: true));
        long takenNs = (taken.UtcTicks - DateTime.UnixEpoch.Ticks) * 100;
        foreach (var svc in list)
        {
            var backends = svc.Backends.Count > 0 ? svc.Backends.Select(x => ((IPAddress Ip, int Port, string? Pod)?)x) : [null];
            foreach (var be in backends)
            {
                int i = b.NextRow();
                ph.Values[i] = phase; tk.Values[i] = takenNs;
                id.Values[i] = svc.Id; name.Values[i] = svc.Name; ns.Values[i] = svc.Namespace; fip.Values[i] = svc.Frontend.ToString();
                port.Values[i] = (ushort)svc.Port; proto.Values[i] = svc.Protocol;
                bip.Values[i] = be?.Ip.ToString(); bpod.Values[i] = be?.Pod;
                if (be is null) bport.SetNull(i); else bport.Set(i, be.Value.Port);
                pname.Values[i] = string.IsNullOrEmpty(svc.PortName) ? null : svc.PortName;
                kind.Values[i] = svc.Kind; source.Values[i] = svc.Source; netns.Values[i] = svc.Netns;
            }
        }
        return b;
    }

    private static string FlagText(CtFlags f)
    {
        var parts = new List<string>();
        if ((f & CtFlags.RevDnat) != 0) parts.Add("rev-dnat");
        if ((f & CtFlags.ReplySeen) != 0) parts.Add("reply-seen");
        if ((f & CtFlags.Closing) != 0) parts.Add("closing");
        if ((f & CtFlags.Audited) != 0) parts.Add("audited");
        return string.Join(',', parts);
    }
}
