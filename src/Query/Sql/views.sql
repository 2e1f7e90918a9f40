-- Reconstructions: the on-call questions as SQL views over the event and snapshot views.
-- Every view carries `recording` (the manifest's recording_id) and `node`, so that several
-- recordings opened together stay apart. `forensics drops|nat|connects|flow` print these views.

-- cluster_cidrs: what counts as inside the cluster. Per recording: the manifest's
-- config.exclude_cidrs (the CIDRs the connect probe filters in the kernel, like Tetragon's
-- NotDAddr: pod CIDR, service CIDR, loopback), every endpoint and service address of the
-- snapshot tables, and loopback; plus CIDRs given with --cluster-cidr (recording NULL: all).
CREATE VIEW cluster_cidrs AS
    SELECT recording, cidr, source FROM manifest_cidrs
    UNION ALL SELECT DISTINCT recording, ip, 'endpoints' FROM endpoints WHERE ip IS NOT NULL AND ip <> ''
    UNION ALL SELECT DISTINCT recording, frontend_ip, 'services' FROM services WHERE frontend_ip IS NOT NULL AND frontend_ip <> ''
    -- pods the container runtime (or a pods file) listed
    UNION ALL SELECT DISTINCT recording, addr, 'pods' FROM (SELECT recording, unnest(string_split(ips, ',')) AS addr FROM pods) WHERE addr <> ''
    -- pods that Hubble named in its flows (a recording of a Cilium node has no endpoints snapshot)
    UNION ALL SELECT DISTINCT recording, src_ip, 'hubble' FROM (
        SELECT recording, src_ip FROM "drop" WHERE src_pod IS NOT NULL UNION ALL SELECT recording, dst_ip FROM "drop" WHERE dst_pod IS NOT NULL
        UNION ALL SELECT recording, src_ip FROM policy WHERE src_pod IS NOT NULL UNION ALL SELECT recording, dst_ip FROM policy WHERE dst_pod IS NOT NULL
        UNION ALL SELECT recording, src_ip FROM trace WHERE src_pod IS NOT NULL UNION ALL SELECT recording, dst_ip FROM trace WHERE dst_pod IS NOT NULL)
    UNION ALL SELECT NULL, '127.0.0.0/8', 'loopback'
    UNION ALL SELECT NULL, '::1/128', 'loopback';

-- fx_in_cluster(addr [, rec := recording]): whether addr lies in the cluster (see the view cluster_cidrs).
CREATE MACRO fx_in_cluster(p_addr, rec := NULL) AS
    EXISTS (SELECT 1 FROM cluster_cidrs c WHERE (rec IS NULL OR c.recording IS NULL OR c.recording = rec) AND fx_in_cidr(p_addr, c.cidr));

-- endpoint_addrs: one row per (recording, address) -> the endpoint (pod) that owns it.
-- The datapath's endpoints snapshot first; on a node without our datapath, the pods the container
-- runtime (or a pods file) listed with their addresses.
CREATE VIEW endpoint_addrs AS
    WITH ep AS (
        SELECT recording, ip AS addr, any_value(endpoint_id) AS endpoint_id, any_value(namespace) AS namespace, any_value(pod) AS pod,
               any_value(identity) AS identity
        FROM endpoints WHERE ip IS NOT NULL AND ip <> ''
        GROUP BY recording, ip),
    runtime AS (
        SELECT recording, addr, NULL::USMALLINT AS endpoint_id, any_value(namespace) AS namespace, any_value(pod) AS pod, NULL::UINTEGER AS identity
        FROM (SELECT recording, namespace, pod, unnest(string_split(ips, ',')) AS addr FROM pods WHERE ips <> '')
        WHERE addr <> '' GROUP BY recording, addr)
    SELECT * FROM ep
    UNION ALL SELECT r.* FROM runtime r WHERE NOT EXISTS (SELECT 1 FROM ep WHERE ep.recording = r.recording AND ep.addr = r.addr);

-- identity_labels: one row per (recording, identity) -> its labels (fx_identity_labels as a table;
-- reserved identities are in reserved_identities).
CREATE VIEW identity_labels AS
    SELECT recording, identity, min(labels) AS labels FROM identities GROUP BY recording, identity;

-- service_ports: one row per (recording, virtual IP, port, protocol) -> namespace/name.
CREATE VIEW service_ports AS
    SELECT recording, frontend_ip, port, lower(protocol) AS protocol, any_value(service_id) AS service_id,
           any_value(namespace || '/' || name) AS service
    FROM services WHERE frontend_ip IS NOT NULL GROUP BY ALL;

-- kdrops_resolved: every kernel drop (skb:kfree_skb with a drop reason) with `hidden` set for
-- those that are not a dropped network packet in the user's sense (docs/drops.md: the reasons of
-- the table kernel_drop_hidden, packets that are not IP, multicast or broadcast destinations) and
-- `twin` set when our datapath dropped the same packet just before (its tc program's verdict
-- is freed by the kernel as TC_INGRESS / TC_EGRESS): that drop is the datapath row's, not a row of its own.
CREATE VIEW kdrops_resolved AS
    WITH twins AS (
        -- the kernel's drop of the packet a datapath drop event was emitted for: the next kdrop of the same tuple within 50 ms
        SELECT k.recording, k.node, k.ktime_ns, k.cpu, k.location, d.ktime_ns AS drop_ktime_ns
        FROM "drop" d ASOF JOIN kdrop k ON k.recording = d.recording AND k.node = d.node AND k.protocol = d.protocol
            AND k.src_ip = d.src_ip AND k.src_port = d.src_port AND k.dst_ip = d.dst_ip AND k.dst_port = d.dst_port
            AND k.ktime_ns >= d.ktime_ns
        WHERE k.ktime_ns - d.ktime_ns < 50000000)
    SELECT k.*,
           coalesce(h.why, CASE WHEN k.l3_proto NOT IN (2048, 34525) THEN 'not an IPv4 or IPv6 packet'
                                WHEN fx_is_multicast(k.dst_ip) THEN 'to a multicast or broadcast address' END) AS hidden_why,
           h.why IS NOT NULL OR k.l3_proto NOT IN (2048, 34525) OR fx_is_multicast(k.dst_ip) AS hidden,
           t.drop_ktime_ns AS twin_of_ktime_ns, t.drop_ktime_ns IS NOT NULL AS twin
    FROM kdrop k
    LEFT JOIN kernel_drop_hidden h ON h.reason_name = k.reason_name
    LEFT JOIN twins t ON t.recording = k.recording AND t.node = k.node AND t.ktime_ns = k.ktime_ns AND t.cpu = k.cpu AND t.location = k.location;

-- drops_resolved: every drop with its source and destination workload (namespace/pod by
-- address from the endpoints snapshot, identity and its labels), from both layers:
-- dropped_by 'datapath' (our datapath: Cilium's reason code and name), 'kernel' (reason NULL,
-- reason_name the kernel's skb_drop_reason from BTF, kernel_function where) or 'datapath+kernel'
-- (the datapath's drop, which the kernel then freed: kernel_reason names the kernel's side).
-- For a kernel drop, drop_netns_pod names the pod it belongs to (the recorder's attribution: the pod of
-- the namespace it happened in, or in the node's namespace the pod whose connect sent it, else the pod
-- owning its source address; docs/drops.md). `hidden` marks kernel drops left out by default.
-- src_netns_ino: for a kernel drop, the network namespace of the process whose connect sent the packet
-- (the connect from the same source address, port and protocol, the last if the port was reused: a forwarded
-- packet dropped in the node's namespace names its client's, pod or not); NULL when no connect did.
CREATE VIEW drops_resolved AS
    WITH kt AS (SELECT * FROM kdrops_resolved WHERE twin),
    senders AS (
        -- a connect is reported after its first packets when they go unanswered: matched by address, not by time
        SELECT recording, node, protocol, src_ip, src_port, arg_max(netns_ino, ktime_ns) AS netns_ino
        FROM connect GROUP BY ALL),
    kc AS (
        SELECT k.*, c.netns_ino AS src_netns_ino
        FROM kdrops_resolved k LEFT JOIN senders c ON c.recording = k.recording AND c.node = k.node
            AND c.protocol = k.protocol AND c.src_ip = k.src_ip AND c.src_port = k.src_port
        WHERE NOT k.twin),
    dp AS (
        SELECT d.*, k.reason_name AS kernel_reason, k."function" AS kernel_function
        FROM "drop" d
        LEFT JOIN kt k ON k.recording = d.recording AND k.node = d.node AND k.twin_of_ktime_ns = d.ktime_ns
            AND k.src_ip = d.src_ip AND k.src_port = d.src_port AND k.dst_ip = d.dst_ip AND k.dst_port = d.dst_port AND k.protocol = d.protocol),
    all_drops AS (
        SELECT recording, node, time, ktime_ns, src_identity, src_ip, src_port, dst_identity, dst_ip, dst_port, protocol, tcp_flags,
               reason, reason_name, obs_point, direction, endpoint_id, ifindex, flow_id, file, line, ct_state,
               src_namespace, src_pod, src_labels, dst_namespace, dst_pod, dst_labels,
               CASE WHEN kernel_reason IS NULL THEN 'datapath' ELSE 'datapath+kernel' END AS dropped_by, kernel_reason, kernel_function,
               NULL::VARCHAR AS drop_netns_pod, NULL::UINTEGER AS src_netns_ino, false AS hidden, NULL::VARCHAR AS hidden_why,
               denied_by, rule_id, rules
        FROM dp
        UNION ALL BY NAME
        SELECT recording, node, time, ktime_ns, NULL::UINTEGER AS src_identity, src_ip, src_port, NULL::UINTEGER AS dst_identity, dst_ip, dst_port,
               protocol, ''::VARCHAR AS tcp_flags, NULL::USMALLINT AS reason, reason_name, NULL::VARCHAR AS obs_point, NULL::VARCHAR AS direction,
               NULL::USMALLINT AS endpoint_id, ifindex, NULL::UINTEGER AS flow_id, NULL::VARCHAR AS file, NULL::USMALLINT AS line,
               NULL::VARCHAR AS ct_state, NULL::VARCHAR AS src_namespace, NULL::VARCHAR AS src_pod, NULL::VARCHAR AS src_labels,
               NULL::VARCHAR AS dst_namespace, NULL::VARCHAR AS dst_pod, NULL::VARCHAR AS dst_labels, 'kernel' AS dropped_by, reason_name AS kernel_reason, "function" AS kernel_function,
               coalesce(namespace || '/' || pod, pod) AS drop_netns_pod, src_netns_ino, hidden, hidden_why,
               NULL::VARCHAR AS denied_by, NULL::UINTEGER AS rule_id, NULL::VARCHAR AS rules
        FROM kc)
    SELECT d.recording, d.node, d.time, d.ktime_ns,
           -- what the row names itself (Hubble's endpoints) wins over the endpoints snapshot
           coalesce(d.src_namespace, s.namespace) AS src_namespace, coalesce(d.src_pod, s.pod) AS src_pod, d.src_identity,
           coalesce(d.src_labels, sl.labels, sr.labels) AS src_labels, d.src_ip, d.src_port,
           coalesce(d.dst_namespace, t.namespace) AS dst_namespace, coalesce(d.dst_pod, t.pod) AS dst_pod, d.dst_identity,
           coalesce(d.dst_labels, tl.labels, tr.labels) AS dst_labels, d.dst_ip, d.dst_port, sv.service AS dst_service,
           d.protocol, d.tcp_flags, d.reason,
           CASE WHEN d.dropped_by = 'kernel' THEN d.reason_name
                ELSE coalesce(nullif(d.reason_name, ''), dr.name, 'Unknown reason ' || CAST(d.reason AS VARCHAR)) END AS reason_name,
           d.dropped_by, d.kernel_reason, d.kernel_function, d.drop_netns_pod, d.src_netns_ino, d.hidden, d.hidden_why,
           d.obs_point, d.direction, d.endpoint_id, d.ifindex, d.flow_id, d.file, d.line, d.ct_state,
           d.denied_by, d.rule_id, d.rules, fx_drop_by(d.reason, d.rules, d.denied_by) AS decided_by
    FROM all_drops d
    LEFT JOIN endpoint_addrs s ON s.recording = d.recording AND s.addr = d.src_ip
    LEFT JOIN endpoint_addrs t ON t.recording = d.recording AND t.addr = d.dst_ip
    -- joins, not the per-row macros fx_identity_labels/fx_drop_reason: a few ms, not seconds, per million drops
    LEFT JOIN identity_labels sl ON sl.recording = d.recording AND sl.identity = d.src_identity
    LEFT JOIN reserved_identities sr ON sr.identity = d.src_identity
    LEFT JOIN identity_labels tl ON tl.recording = d.recording AND tl.identity = d.dst_identity
    LEFT JOIN reserved_identities tr ON tr.identity = d.dst_identity
    -- a service's virtual IP:port (a 158 drop, service without backends, is dropped before any translation)
    LEFT JOIN service_ports sv ON sv.recording = d.recording AND sv.frontend_ip = d.dst_ip AND sv.port = d.dst_port AND sv.protocol = lower(d.protocol)
    LEFT JOIN drop_reasons dr ON dr.code = CAST(d.reason AS INTEGER) AND d.dropped_by <> 'kernel';

-- drops_between(since, until [, all_reasons := false]): drops_by_workload over a time window
-- (NULL: open); all_reasons keeps the kernel drops that are hidden by default.
-- source/destination: namespace/pod when the address is an endpoint's, else (destination) the
-- service whose virtual IP:port it is, as "namespace/name (VIP:port)", else the identity's labels
-- (reserved:world, ...), else the address (identity 0: unknown); drop_netns_pod: the pod
-- a kernel drop belongs to, src_netns_ino the network namespace of its client (see drops_resolved). decided_by: for a policy drop, the rules that
-- denied it ('denied by CiliumNetworkPolicy ns/name spec.egressDeny[0]') or 'default deny' (fx_drop_by).
CREATE MACRO drops_between(since, until, all_reasons := false) AS TABLE
    SELECT recording, node,
           coalesce(src_namespace || '/' || src_pod, CASE WHEN src_identity <> 0 THEN src_labels END, src_ip) AS source,
           src_namespace, src_pod, src_identity, src_labels,
           coalesce(dst_namespace || '/' || dst_pod, dst_service || ' (' || fx_addr(dst_ip, dst_port) || ')',
                    CASE WHEN dst_identity <> 0 THEN dst_labels END, dst_ip) AS destination,
           dst_namespace, dst_pod, dst_service, dst_identity, dst_labels,
           dst_port, protocol, reason, reason_name, decided_by, dropped_by, kernel_reason, drop_netns_pod, src_netns_ino,
           count(*) AS count, min(time) AS first_seen, max(time) AS last_seen
    FROM drops_resolved
    WHERE (since IS NULL OR time >= CAST(since AS TIMESTAMPTZ)) AND (until IS NULL OR time < CAST(until AS TIMESTAMPTZ))
      AND (all_reasons OR NOT hidden)
    GROUP BY ALL
    ORDER BY count DESC, first_seen;

-- drops_by_workload: who was dropped where and why: source and destination workload,
-- identity, port, protocol, reason, how often, first and last seen.
CREATE VIEW drops_by_workload AS SELECT * FROM drops_between(NULL, NULL);

-- nat_mappings: every translation seen, one row per flow that used it.
--   mapping 'service': original = service VIP:port, translated = backend, client = who connected.
--   mapping 'snat':    original = pod address:port,  translated = node address:port, destination = outside peer.
-- source 'datapath' (our datapath's NAT events): packets counts forward translations, replies the
-- reverse translations of the same flow. source 'conntrack' (the kernel's conntrack: kube-proxy,
-- Docker, a CNI's masquerade): one flow per conntrack entry; packets and replies are the kernel's
-- counters (NULL unless net.netfilter.nf_conntrack_acct=1), first/last seen its timestamps (else
-- when its events were received); an entry translated both ways (dnat+snat) is a service and an snat row.
CREATE VIEW nat_mappings AS
    WITH dp AS (SELECT * REPLACE (coalesce(nullif(source, ''), 'datapath') AS source) FROM nat WHERE coalesce(source, '') <> 'conntrack'),
    fwd AS (
        SELECT recording, node, source, protocol,
               CASE nat_kind WHEN 'dnat' THEN 'service' ELSE 'snat' END AS mapping,
               orig_src_ip AS client_ip, orig_src_port AS client_port,
               CASE nat_kind WHEN 'dnat' THEN orig_dst_ip ELSE orig_src_ip END AS orig_ip,
               CASE nat_kind WHEN 'dnat' THEN orig_dst_port ELSE orig_src_port END AS orig_port,
               CASE nat_kind WHEN 'dnat' THEN xlated_dst_ip ELSE xlated_src_ip END AS xlated_ip,
               CASE nat_kind WHEN 'dnat' THEN xlated_dst_port ELSE xlated_src_port END AS xlated_port,
               CASE nat_kind WHEN 'dnat' THEN xlated_dst_ip ELSE orig_dst_ip END AS dst_ip,
               CASE nat_kind WHEN 'dnat' THEN xlated_dst_port ELSE orig_dst_port END AS dst_port,
               service_id, time,
               service AS row_service, src_namespace || '/' || src_pod AS row_client_pod -- as the source named them (Hubble)
        FROM dp WHERE nat_kind IN ('dnat', 'snat')),
    rev AS (
        -- reverse translations, rewritten to the forward flow they belong to
        SELECT recording, protocol,
               CASE nat_kind WHEN 'rev-dnat' THEN 'service' ELSE 'snat' END AS mapping,
               xlated_dst_ip AS client_ip, xlated_dst_port AS client_port,
               CASE nat_kind WHEN 'rev-dnat' THEN xlated_src_ip ELSE xlated_dst_ip END AS orig_ip,
               CASE nat_kind WHEN 'rev-dnat' THEN xlated_src_port ELSE xlated_dst_port END AS orig_port,
               CASE nat_kind WHEN 'rev-dnat' THEN orig_src_ip ELSE orig_dst_ip END AS xlated_ip,
               CASE nat_kind WHEN 'rev-dnat' THEN orig_src_port ELSE orig_dst_port END AS xlated_port,
               orig_src_ip AS dst_ip, orig_src_port AS dst_port, count(*) AS replies, max(time) AS last_reply
        FROM dp WHERE nat_kind IN ('rev-dnat', 'rev-snat') GROUP BY ALL),
    flows AS (
        SELECT recording, node, source, mapping, protocol, client_ip, client_port, orig_ip, orig_port, xlated_ip, xlated_port, dst_ip, dst_port,
               max(service_id) AS service_id, count(*) AS packets, min(time) AS first_seen, max(time) AS last_seen,
               any_value(row_service) AS row_service, any_value(row_client_pod) AS row_client_pod
        FROM fwd GROUP BY recording, node, source, mapping, protocol, client_ip, client_port, orig_ip, orig_port, xlated_ip, xlated_port, dst_ip, dst_port),
    dp_flows AS (
        SELECT f.recording, f.node, f.source, f.mapping, f.protocol, f.client_ip, f.client_port, f.orig_ip, f.orig_port,
               f.xlated_ip, f.xlated_port, f.dst_ip, f.dst_port, f.service_id, f.row_service, f.row_client_pod,
               f.packets, coalesce(r.replies, 0) AS replies, f.first_seen, greatest(f.last_seen, r.last_reply) AS last_seen,
               NULL::UINTEGER AS ct_id, NULL::UINTEGER AS netns_ino
        FROM flows f
        LEFT JOIN rev r ON r.recording = f.recording AND r.mapping = f.mapping AND r.protocol = f.protocol
            AND r.client_ip = f.client_ip AND r.client_port = f.client_port AND r.orig_ip = f.orig_ip AND r.orig_port = f.orig_port
            AND r.xlated_ip = f.xlated_ip AND r.xlated_port = f.xlated_port AND r.dst_ip = f.dst_ip AND r.dst_port = f.dst_port),
    ct AS (
        -- the kernel's conntrack: every event and dump row of one entry is one flow
        SELECT recording, node, netns_ino, ct_id, protocol, nat_kind,
               orig_src_ip, orig_src_port, orig_dst_ip, orig_dst_port, xlated_src_ip, xlated_src_port, xlated_dst_ip, xlated_dst_port,
               max(packets_orig)::BIGINT AS packets, max(packets_reply)::BIGINT AS replies,
               coalesce(min(first_seen), min(time)) AS first_seen, greatest(max(last_seen), max(time)) AS last_seen,
               any_value(service) AS row_service
        FROM nat WHERE source = 'conntrack'
        GROUP BY recording, node, netns_ino, ct_id, protocol, nat_kind,
                 orig_src_ip, orig_src_port, orig_dst_ip, orig_dst_port, xlated_src_ip, xlated_src_port, xlated_dst_ip, xlated_dst_port),
    ct_flows AS (
        SELECT recording, node, 'conntrack' AS source, 'service' AS mapping, protocol, orig_src_ip AS client_ip, orig_src_port AS client_port,
               orig_dst_ip AS orig_ip, orig_dst_port AS orig_port, xlated_dst_ip AS xlated_ip, xlated_dst_port AS xlated_port,
               xlated_dst_ip AS dst_ip, xlated_dst_port AS dst_port, NULL::UINTEGER AS service_id, row_service, NULL::VARCHAR AS row_client_pod,
               packets, replies, first_seen, last_seen, ct_id, netns_ino
        FROM ct WHERE nat_kind IN ('dnat', 'dnat+snat')
        UNION ALL
        SELECT recording, node, 'conntrack', 'snat', protocol, orig_src_ip, orig_src_port,
               orig_src_ip, orig_src_port, xlated_src_ip, xlated_src_port,
               xlated_dst_ip, xlated_dst_port, NULL::UINTEGER, NULL::VARCHAR, NULL::VARCHAR,
               packets, replies, first_seen, last_seen, ct_id, netns_ino
        FROM ct WHERE nat_kind IN ('snat', 'dnat+snat')),
    all_flows AS (SELECT * FROM dp_flows UNION ALL BY NAME SELECT * FROM ct_flows)
    SELECT f.recording, f.node, f.source, f.mapping, f.protocol,
           fx_addr(f.client_ip, f.client_port) AS client, coalesce(c.namespace || '/' || c.pod, f.row_client_pod) AS client_pod,
           fx_addr(f.orig_ip, f.orig_port) AS original, fx_addr(f.xlated_ip, f.xlated_port) AS translated,
           fx_addr(f.dst_ip, f.dst_port) AS destination,
           -- what the row names wins for conntrack (kube-proxy's port name), the services snapshot for the others
           CASE f.mapping WHEN 'service' THEN CASE WHEN f.source = 'conntrack' THEN coalesce(f.row_service, sp.service)
                ELSE coalesce(sp.service, f.row_service, (SELECT any_value(s.namespace || '/' || s.name) FROM services s WHERE s.recording = f.recording AND s.service_id = f.service_id AND f.service_id <> 0)) END END AS service,
           CASE f.mapping WHEN 'service' THEN b.namespace || '/' || b.pod END AS backend_pod,
           f.packets, f.replies, f.first_seen, f.last_seen,
           f.client_ip, f.client_port, f.orig_ip, f.orig_port, f.xlated_ip, f.xlated_port, f.dst_ip, f.dst_port, f.service_id, f.ct_id, f.netns_ino
    FROM all_flows f
    LEFT JOIN endpoint_addrs c ON c.recording = f.recording AND c.addr = f.client_ip
    LEFT JOIN endpoint_addrs b ON b.recording = f.recording AND b.addr = f.xlated_ip AND f.mapping = 'service'
    LEFT JOIN service_ports sp ON sp.recording = f.recording AND f.mapping = 'service' AND sp.frontend_ip = f.orig_ip AND sp.port = f.orig_port AND sp.protocol = lower(f.protocol)
    ORDER BY f.first_seen;

-- processes: one row per process image (exec_id): the exec seen by the probe wins over one found in /proc.
CREATE VIEW processes AS
    SELECT * FROM exec QUALIFY row_number() OVER (PARTITION BY recording, exec_id ORDER BY procfs, time) = 1;

-- fx_tuple_key(proto, ip1, port1, ip2, port2): a direction-free key of a 5-tuple.
CREATE MACRO fx_tuple_key(proto, ip1, port1, ip2, port2) AS
    lower(proto) || ' ' || least(fx_addr(ip1, port1), fx_addr(ip2, port2)) || ' ' || greatest(fx_addr(ip1, port1), fx_addr(ip2, port2));

-- flow_aliases: the tuples NAT made of a flow, mapped to the flow's tuple as the client sent it
-- (before DNAT and SNAT): dnat/snat/dnat+snat (a conntrack entry) translate orig -> xlated, rev-dnat/rev-snat xlated <- orig.
CREATE VIEW flow_aliases AS
    SELECT recording, node, alias_key, any_value(flow_key) AS flow_key FROM (
        SELECT recording, node,
               CASE WHEN nat_kind IN ('dnat', 'snat', 'dnat+snat') THEN fx_tuple_key(protocol, xlated_src_ip, xlated_src_port, xlated_dst_ip, xlated_dst_port)
                    ELSE fx_tuple_key(protocol, orig_src_ip, orig_src_port, orig_dst_ip, orig_dst_port) END AS alias_key,
               CASE WHEN nat_kind IN ('dnat', 'snat', 'dnat+snat') THEN fx_tuple_key(protocol, orig_src_ip, orig_src_port, orig_dst_ip, orig_dst_port)
                    ELSE fx_tuple_key(protocol, xlated_src_ip, xlated_src_port, xlated_dst_ip, xlated_dst_port) END AS flow_key
        FROM nat)
    WHERE alias_key <> flow_key GROUP BY ALL;

-- connect_replies: UDP sends that answer a peer, which are not connects: an earlier connect of
-- the same flow (its 5-tuple, through NAT: flow_aliases) came from the other side, so the peer
-- spoke first (a server answering a client, e.g. a DNS server's answer). Matched also without
-- NAT records: the earlier connect went to this send's source address and port, from its
-- destination port (a client socket that was not bound to an address).
CREATE VIEW connect_replies AS
    WITH c AS (
        SELECT c.recording, c.node, c.ktime_ns, c.src_ip, c.src_port, c.dst_ip, c.dst_port,
               coalesce(a.flow_key, fx_tuple_key(c.protocol, c.src_ip, c.src_port, c.dst_ip, c.dst_port)) AS flow_key
        FROM connect c
        LEFT JOIN flow_aliases a ON a.recording = c.recording AND a.node = c.node
            AND a.alias_key = fx_tuple_key(c.protocol, c.src_ip, c.src_port, c.dst_ip, c.dst_port)
        WHERE lower(c.protocol) = 'udp')
    SELECT DISTINCT r.recording, r.node, r.ktime_ns, r.src_ip, r.src_port, r.dst_ip, r.dst_port
    FROM c r JOIN c i ON i.recording = r.recording AND i.node = r.node AND i.ktime_ns < r.ktime_ns
        AND ((i.flow_key = r.flow_key AND NOT (i.src_ip IS NOT DISTINCT FROM r.src_ip AND i.src_port = r.src_port))
             OR (i.dst_ip = r.src_ip AND i.dst_port = r.src_port AND i.src_port = r.dst_port));

-- connects_resolved: every connect with its process (exec by exec_id: binary, arguments) and
-- its end (exit by exec_id: code or signal); *_missing says why a link is absent; reply: a UDP
-- send answering a peer that spoke first (connect_replies), not a connect.
CREATE VIEW connects_resolved AS
    -- inside or outside the cluster is decided once per destination address, not per connect
    WITH destinations AS (
        SELECT recording, dst_ip, NOT fx_in_cluster(dst_ip, rec := recording) AS external
        FROM (SELECT DISTINCT recording, dst_ip FROM connect))
    SELECT c.recording, c.node, c.time, c.namespace, c.pod, c.pid, c.exec_id,
           coalesce(e."binary", c."binary", x."binary") AS "binary", e.arguments, c.comm, c.connect_kind, c.protocol,
           c.src_ip, c.src_port, c.dst_ip, c.dst_port, fx_addr(c.dst_ip, c.dst_port) AS destination,
           d.external, rp.recording IS NOT NULL AS reply,
           e.time AS exec_time, x.time AS exit_time, x.exit_code, x.signal,
           c.netns_ino, e.netns_ino AS exec_netns_ino, c.ktime_ns,
           CASE WHEN c.exec_id IS NULL THEN 'the connect carries no exec_id'
                WHEN e.exec_id IS NULL THEN 'no exec event for this exec_id (started before the recording?)' END AS exec_missing,
           CASE WHEN c.exec_id IS NULL THEN 'the connect carries no exec_id'
                WHEN x.exec_id IS NULL THEN 'no exit event (still running when the recording stopped?)' END AS exit_missing
    FROM connect c
    LEFT JOIN destinations d ON d.recording = c.recording AND d.dst_ip IS NOT DISTINCT FROM c.dst_ip
    LEFT JOIN connect_replies rp ON rp.recording = c.recording AND rp.node = c.node AND rp.ktime_ns = c.ktime_ns
        AND rp.src_ip IS NOT DISTINCT FROM c.src_ip AND rp.src_port = c.src_port AND rp.dst_ip = c.dst_ip AND rp.dst_port = c.dst_port
    LEFT JOIN processes e ON e.recording = c.recording AND e.exec_id = c.exec_id
    LEFT JOIN exit x ON x.recording = c.recording AND x.exec_id = c.exec_id;

-- external_connects: connects leaving the cluster (destination outside cluster_cidrs) by
-- process: pod, binary, arguments, destination, when, and the process's exit code or signal.
-- A reply (a server answering over UDP) is not a connect and is not listed.
CREATE VIEW external_connects AS
    SELECT recording, node, time, namespace, pod, pid, "binary", arguments, connect_kind, protocol,
           fx_addr(src_ip, src_port) AS source, destination, exit_code, signal, exit_time, exec_time,
           exec_missing, exit_missing, exec_id, src_ip, src_port, dst_ip, dst_port
    FROM connects_resolved WHERE external AND NOT reply ORDER BY time;

-- flow_observations: every event about a 5-tuple in one shape, keyed by the flow's client-side tuple.
CREATE VIEW flow_observations AS
    WITH obs AS (
        SELECT recording, node, time, ktime_ns, 'trace' AS step, protocol, src_ip, src_port, dst_ip, dst_port, tcp_flags,
               obs_point, direction, endpoint_id, ct_state AS state, NULL::VARCHAR AS action, NULL::VARCHAR AS match,
               NULL::UINTEGER AS reason, NULL::VARCHAR AS reason_name, NULL::VARCHAR AS nat_kind,
               NULL::VARCHAR AS xlated_src, NULL::VARCHAR AS xlated_dst, NULL::UBIGINT AS exec_id, NULL::UINTEGER AS netns_ino,
               NULL::VARCHAR AS "binary", NULL::UINTEGER AS pid, NULL::VARCHAR AS decided_by
        FROM trace
        UNION ALL BY NAME
        SELECT recording, node, time, ktime_ns, 'policy' AS step, protocol, src_ip, src_port, dst_ip, dst_port, tcp_flags,
               obs_point, direction, endpoint_id, action, match,
               fx_verdict_by(action, match, rules, allowed_by, denied_by, rule_id) AS decided_by FROM policy
        UNION ALL BY NAME
        SELECT recording, node, time, ktime_ns, 'drop' AS step, protocol, src_ip, src_port, dst_ip, dst_port, tcp_flags,
               obs_point, direction, endpoint_id, ct_state AS state, reason,
               coalesce(nullif(reason_name, ''), fx_drop_reason(reason)) AS reason_name,
               fx_drop_by(reason, rules, denied_by) AS decided_by FROM "drop"
        UNION ALL BY NAME
        SELECT recording, node, time, ktime_ns, nat_kind AS step, protocol, orig_src_ip AS src_ip, orig_src_port AS src_port,
               orig_dst_ip AS dst_ip, orig_dst_port AS dst_port, obs_point, direction, endpoint_id, nat_kind, ct_status AS state,
               fx_addr(xlated_src_ip, xlated_src_port) AS xlated_src, fx_addr(xlated_dst_ip, xlated_dst_port) AS xlated_dst FROM nat
        UNION ALL BY NAME
        SELECT recording, node, time, ktime_ns, 'kdrop' AS step, protocol, src_ip, src_port, dst_ip, dst_port,
               reason, reason_name || ' in ' || "function" AS reason_name, netns_ino FROM kdrop
        UNION ALL BY NAME
        SELECT recording, node, time, ktime_ns, 'connect' AS step, protocol, src_ip, src_port, dst_ip, dst_port,
               connect_kind AS state, exec_id, netns_ino, "binary", pid FROM connect)
    SELECT o.*, coalesce(a.flow_key, fx_tuple_key(o.protocol, o.src_ip, o.src_port, o.dst_ip, o.dst_port)) AS flow_key
    FROM obs o
    LEFT JOIN flow_aliases a ON a.recording = o.recording AND a.node = o.node
        AND a.alias_key = fx_tuple_key(o.protocol, o.src_ip, o.src_port, o.dst_ip, o.dst_port);

-- flow_events: flow_observations split into flow instances. A 5-tuple can be reused; an
-- instance starts at a connect (the process side) and takes every later event of the same
-- tuple (by kernel time on the same node) until the next connect; events of a tuple with no
-- connect before them form one instance that starts at their first event. The connect probe
-- reports a TCP connect when connect() returns or the SYN is retransmitted, so the handshake's
-- packets come just before it: an instance reaches back 3 s before its connect (a tuple is not
-- reused that fast).
CREATE VIEW flow_events AS
    WITH starts AS (
        SELECT recording, node, flow_key, greatest(ktime_ns, 3000000000) - 3000000000 AS start_ns FROM flow_observations WHERE step = 'connect'),
    assigned AS (
        SELECT o.*, s.start_ns FROM flow_observations o
        ASOF LEFT JOIN starts s ON s.recording = o.recording AND s.node = o.node AND s.flow_key = o.flow_key AND o.ktime_ns >= s.start_ns)
    SELECT *, flow_key || ' @' || CAST(coalesce(start_ns, min(ktime_ns) OVER (PARTITION BY recording, node, flow_key, start_ns IS NULL)) AS VARCHAR) AS flow
    FROM assigned;

-- flow_story: one row per flow instance, the joined story
--   process exec -> connect -> DNAT/SNAT -> policy verdicts -> delivered or dropped (reason) -> process exit,
-- exact on the 5-tuple (through NAT), the node's kernel time, and the network namespace (connect vs exec).
-- `missing` names every link that could not be made, and why. When no connect links a process,
-- `process_candidates` lists the processes alive in the client's network namespace when the flow
-- began: a lead to follow, not a link.
CREATE VIEW flow_story AS
    WITH ev AS MATERIALIZED (SELECT * FROM flow_events),
    first_conn AS (
        SELECT flow, arg_min(src_ip, ktime_ns) AS c_src_ip, arg_min(src_port, ktime_ns) AS c_src_port,
               arg_min(dst_ip, ktime_ns) AS c_dst_ip, arg_min(dst_port, ktime_ns) AS c_dst_port,
               min(time) AS connect_time, arg_min(exec_id, ktime_ns) AS exec_id, arg_min(netns_ino, ktime_ns) AS netns_ino,
               arg_min("binary", ktime_ns) AS c_binary, arg_min(pid, ktime_ns) AS c_pid, count(*) AS connects
        FROM ev WHERE step = 'connect' GROUP BY flow),
    first_dnat AS (
        SELECT flow, arg_min(src_ip, ktime_ns) AS n_src_ip, arg_min(src_port, ktime_ns) AS n_src_port,
               arg_min(dst_ip, ktime_ns) AS n_dst_ip, arg_min(dst_port, ktime_ns) AS n_dst_port,
               arg_min(xlated_dst, ktime_ns) AS backend, min(time) AS dnat_time
        FROM ev WHERE step IN ('dnat', 'dnat+snat') GROUP BY flow),
    first_snat AS (
        SELECT flow, arg_min(src_ip, ktime_ns) AS s_src_ip, arg_min(src_port, ktime_ns) AS s_src_port,
               arg_min(dst_ip, ktime_ns) AS s_dst_ip, arg_min(dst_port, ktime_ns) AS s_dst_port,
               arg_min(xlated_src, ktime_ns) AS snat_src, min(time) AS snat_time
        FROM ev WHERE step IN ('snat', 'dnat+snat') GROUP BY flow),
    first_any AS (
        SELECT flow, recording, node, flow_key, any_value(protocol) AS protocol,
               arg_min(src_ip, ktime_ns) AS f_src_ip, arg_min(src_port, ktime_ns) AS f_src_port,
               arg_min(dst_ip, ktime_ns) AS f_dst_ip, arg_min(dst_port, ktime_ns) AS f_dst_port,
               min(time) AS first_seen, max(time) AS last_seen,
               count(*) FILTER (WHERE step NOT IN ('connect')) AS datapath_events
        FROM ev GROUP BY flow, recording, node, flow_key),
    verdicts AS (
        SELECT flow,
               string_agg(DISTINCT direction || ' ' || action || ' (match ' || match || ', endpoint ' || endpoint_id
                          || coalesce(', ' || decided_by, '') || ')', '; ') AS verdicts,
               bool_or(action = 'deny') AS denied
        FROM ev WHERE step = 'policy' GROUP BY flow),
    drops AS (
        SELECT flow, arg_min(reason_name || ' (' || reason || coalesce(', ' || decided_by, '') || ') at ' || obs_point || ' of endpoint ' || endpoint_id, ktime_ns) AS drop_reason,
               min(time) AS drop_time, count(*) AS drops
        FROM ev WHERE step = 'drop' GROUP BY flow),
    kdrops AS (
        SELECT flow, arg_min(reason_name, ktime_ns) AS kdrop_reason, count(*) AS kdrops FROM ev WHERE step = 'kdrop' GROUP BY flow),
    base AS (
        SELECT a.*, c.*  EXCLUDE (flow), d.* EXCLUDE (flow), s.* EXCLUDE (flow), v.* EXCLUDE (flow), dr.* EXCLUDE (flow), k.* EXCLUDE (flow),
               coalesce(c.c_src_ip, d.n_src_ip, s.s_src_ip, a.f_src_ip) AS client_ip,
               coalesce(c.c_src_port, d.n_src_port, s.s_src_port, a.f_src_port) AS client_port,
               coalesce(c.c_dst_ip, d.n_dst_ip, s.s_dst_ip, a.f_dst_ip) AS server_ip,
               coalesce(c.c_dst_port, d.n_dst_port, s.s_dst_port, a.f_dst_port) AS server_port
        FROM first_any a
        LEFT JOIN first_conn c USING (flow) LEFT JOIN first_dnat d USING (flow) LEFT JOIN first_snat s USING (flow)
        LEFT JOIN verdicts v USING (flow) LEFT JOIN drops dr USING (flow) LEFT JOIN kdrops k USING (flow)),
    delivery AS (
        -- delivered: the packet entered the server's pod (to-endpoint, towards the server), or the server answered
        SELECT b.flow,
               bool_or(e.step IN ('trace', 'policy') AND e.obs_point = 'to-endpoint'
                       AND NOT (e.src_ip = b.server_ip AND e.src_port = b.server_port)
                       AND coalesce(e.action, 'allow') <> 'deny') AS entered,
               bool_or((e.step IN ('trace', 'rev-dnat', 'rev-snat') AND NOT (e.src_ip = b.client_ip AND e.src_port = b.client_port)
                       AND (e.dst_ip = b.client_ip OR e.step <> 'trace'))
                       -- the kernel's conntrack saw the server's reply
                       OR (e.step IN ('dnat', 'snat', 'dnat+snat') AND contains(coalesce(e.state, ''), 'SEEN_REPLY'))) AS answered,
               bool_or(e.step = 'trace' AND e.obs_point = 'from-endpoint' AND e.src_ip = b.client_ip AND e.src_port = b.client_port) AS left_pod
        FROM base b JOIN ev e ON e.flow = b.flow GROUP BY b.flow)
    SELECT b.recording, b.node, b.flow, b.protocol,
           fx_addr(b.client_ip, b.client_port) AS client,
           coalesce(p.namespace || '/' || p.pod, ca.namespace || '/' || ca.pod) AS client_pod,
           fx_addr(b.server_ip, b.server_port) AS server,
           coalesce(sa.namespace || '/' || sa.pod, sp.service) AS server_workload,
           coalesce(p.pid, b.c_pid) AS pid, coalesce(p."binary", b.c_binary, x."binary") AS "binary", p.arguments, p.time AS exec_time,
           b.connect_time,
           CASE WHEN b.backend IS NOT NULL THEN fx_addr(b.server_ip, b.server_port) || ' -> ' || b.backend END AS dnat,
           b.dnat_time,
           CASE WHEN b.snat_src IS NOT NULL THEN fx_addr(b.s_src_ip, b.s_src_port) || ' -> ' || b.snat_src END AS snat,
           b.snat_time,
           b.verdicts AS policy,
           CASE WHEN b.drops > 0 THEN 'dropped'
                WHEN dl.entered OR dl.answered THEN 'delivered' -- a later kernel drop (e.g. a queue purged at close) did not stop it
                WHEN b.kdrops > 0 THEN 'dropped by the kernel'
                WHEN dl.left_pod THEN 'forwarded (left the pod, no answer seen)'
                ELSE 'unknown' END AS outcome,
           CASE WHEN b.drops > 0 THEN b.drop_reason
                WHEN coalesce(dl.entered OR dl.answered, false) THEN NULL
                ELSE b.kdrop_reason END AS drop_reason, b.drop_time,
           x.exit_code, x.signal, x.time AS exit_time,
           b.first_seen, b.last_seen,
           -- not a link: processes alive in the client's network namespace (or pod) when the flow began
           CASE WHEN b.exec_id IS NULL AND ca.pod IS NOT NULL THEN (
               SELECT string_agg(DISTINCT coalesce(pp."binary", pp.comm) || ' (pid ' || pp.pid || ')', ', ')
               FROM processes pp LEFT JOIN exit xx ON xx.recording = pp.recording AND xx.exec_id = pp.exec_id
               WHERE pp.recording = b.recording AND pp.node = b.node
                 AND pp.pod = ca.pod AND pp.namespace = ca.namespace
                 AND pp.time <= b.first_seen AND (xx.time IS NULL OR xx.time >= b.first_seen)) END AS process_candidates,
           list_filter([
               CASE WHEN b.connects IS NULL THEN 'connect: none recorded (in-cluster destinations are filtered in the kernel), so no process is linked' END,
               CASE WHEN b.connects IS NOT NULL AND b.exec_id IS NULL THEN 'exec: the connect carries no exec_id' END,
               CASE WHEN b.exec_id IS NOT NULL AND p.exec_id IS NULL THEN 'exec: not recorded (the process started before the recording)' END,
               CASE WHEN p.exec_id IS NOT NULL AND b.netns_ino IS NOT NULL AND p.netns_ino <> b.netns_ino THEN 'netns: the process connected from another network namespace than it was started in' END,
               CASE WHEN sp.service IS NOT NULL AND b.backend IS NULL THEN 'dnat: the server is a service address but no translation was recorded' END,
               CASE WHEN b.datapath_events = 0 THEN 'datapath: no packet of this flow was seen' END,
               CASE WHEN b.datapath_events > 0 AND b.verdicts IS NULL THEN 'policy: no verdict recorded' END,
               CASE WHEN b.datapath_events > 0 AND b.drops IS NULL AND b.kdrops IS NULL AND NOT (dl.entered OR dl.answered OR dl.left_pod) THEN 'outcome: neither delivery nor drop seen' END,
               CASE WHEN b.exec_id IS NOT NULL AND x.exec_id IS NULL THEN 'exit: none recorded (still running when the recording stopped?)' END
           ], m -> m IS NOT NULL) AS missing,
           b.client_ip, b.client_port, b.server_ip, b.server_port, b.exec_id, b.netns_ino, b.flow_key
    FROM base b
    LEFT JOIN delivery dl ON dl.flow = b.flow
    LEFT JOIN processes p ON p.recording = b.recording AND p.exec_id = b.exec_id
    LEFT JOIN exit x ON x.recording = b.recording AND x.exec_id = b.exec_id
    LEFT JOIN endpoint_addrs ca ON ca.recording = b.recording AND ca.addr = b.client_ip
    LEFT JOIN endpoint_addrs sa ON sa.recording = b.recording AND sa.addr = b.server_ip
    LEFT JOIN service_ports sp ON sp.recording = b.recording AND sp.frontend_ip = b.server_ip AND sp.port = b.server_port AND sp.protocol = lower(b.protocol)
    ORDER BY b.first_seen;
