namespace Forensics.Query.Schema;

/// <summary>
/// The columns the query side relies on in the snapshot tables (endpoints,
/// identities, policies, policy_entries, services, conntrack, nat_entries).
/// Their storage schemas come with the datapath; until a schemas/TABLE.vN.json
/// exists, these are what a snapshot view offers. When a schema exists, its
/// columns come first and any of these it lacks are added as NULL, so the
/// reconstructions keep working.
/// </summary>
public static class SnapshotSchemas
{
    public static readonly IReadOnlyList<string> Tables =
        ["endpoints", "identities", "policies", "policy_entries", "services", "conntrack", "nat_entries"];

    private static ColumnSchema C(string name, string type, string doc) => new(name, type, true, doc);

    private static readonly Dictionary<string, IReadOnlyList<ColumnSchema>> Expected = new()
    {
        ["endpoints"] =
        [
            C("endpoint_id", "uint16", "endpoint (pod) id used in datapath events"),
            C("namespace", "utf8", "pod namespace"),
            C("pod", "utf8", "pod name"),
            C("ip", "utf8", "IPv4 address"),
            C("ipv6", "utf8", "IPv6 address"),
            C("identity", "uint32", "security identity"),
            C("ifindex", "uint32", "host-side veth ifindex"),
            C("netns_ino", "uint32", "network namespace inode"),
            C("labels", "utf8", "labels"),
        ],
        ["identities"] =
        [
            C("identity", "uint32", "security identity"),
            C("labels", "utf8", "labels, Cilium style (k8s:app=x)"),
            C("namespace", "utf8", "namespace of the identity's pods"),
        ],
        ["policies"] =
        [
            C("namespace", "utf8", "policy namespace"),
            C("name", "utf8", "policy name"),
            C("source", "utf8", "the policy as written"),
        ],
        ["policy_entries"] =
        [
            C("endpoint_id", "uint16", "endpoint the entry belongs to"),
            C("direction", "utf8", "ingress or egress"),
            C("identity", "uint32", "peer identity (0 = any)"),
            C("port", "uint16", "port (0 = any)"),
            C("protocol", "utf8", "protocol"),
            C("action", "utf8", "allow or deny"),
        ],
        ["services"] =
        [
            C("service_id", "uint32", "service id used in NAT events"),
            C("namespace", "utf8", "service namespace"),
            C("name", "utf8", "service name"),
            C("cluster_ip", "utf8", "virtual IP"),
            C("port", "uint16", "service port"),
            C("protocol", "utf8", "protocol"),
            C("backend_ip", "utf8", "backend address"),
            C("backend_port", "uint16", "backend port"),
        ],
        ["conntrack"] =
        [
            C("protocol", "utf8", "protocol"),
            C("src_ip", "utf8", "source address"),
            C("src_port", "uint16", "source port"),
            C("dst_ip", "utf8", "destination address"),
            C("dst_port", "uint16", "destination port"),
        ],
        ["nat_entries"] =
        [
            C("protocol", "utf8", "protocol"),
            C("orig_src_ip", "utf8", "source before translation"),
            C("orig_src_port", "uint16", "source port before translation"),
            C("xlated_src_ip", "utf8", "source after translation"),
            C("xlated_src_port", "uint16", "source port after translation"),
        ],
    };

    private static readonly Dictionary<(string Table, string Column), string[]> AliasMap = new()
    {
        [("endpoints", "endpoint_id")] = ["id", "endpoint"],
        [("endpoints", "ip")] = ["ipv4", "address", "ip_address"],
        [("endpoints", "pod")] = ["pod_name", "name"],
        [("endpoints", "identity")] = ["identity_id", "security_identity"],
        [("identities", "identity")] = ["id", "identity_id"],
        [("identities", "labels")] = ["label"],
        [("services", "service_id")] = ["id"],
        [("services", "cluster_ip")] = ["frontend", "frontend_ip", "vip", "ip"],
        [("services", "port")] = ["frontend_port"],
        [("services", "backend_ip")] = ["backend", "backend_address"],
    };

    /// <summary>Other names a snapshot writer may have given an expected column.</summary>
    public static IReadOnlyList<string> Aliases(string table, string column) =>
        AliasMap.TryGetValue((table, column), out var a) ? a : [];

    /// <summary>The columns a snapshot view offers: its schema's (when present) and the expected ones.</summary>
    public static IReadOnlyList<ColumnSchema> Columns(string table)
    {
        var fromSchema = SchemaCatalog.Schemas.Any(s => s.Table == table) ? SchemaCatalog.Current(table).Columns : [];
        var expected = Expected.TryGetValue(table, out var e) ? e : [];
        return [.. fromSchema, .. expected.Where(x => fromSchema.All(c => c.Name != x.Name))];
    }
}
