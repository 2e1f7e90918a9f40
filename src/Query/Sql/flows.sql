-- Per-connection volumes (the flows table, docs/flows.md), after views.sql.

-- pod_addrs: one row per (recording, address) -> the pod the container runtime gave it (the pods table of a
-- recorded node: CRI sandboxes and their addresses), for recordings without a lab's endpoints snapshot.
CREATE VIEW pod_addrs AS
    SELECT recording, addr, any_value(namespace) AS namespace, any_value(pod) AS pod
    FROM (SELECT recording, namespace, pod, trim(unnest(string_split(ips, ','))) AS addr FROM pods WHERE ips IS NOT NULL AND ips <> '')
    WHERE addr <> '' GROUP BY recording, addr;

-- flow_volumes: one row per connection of the flows table: its last row (the counters are cumulative,
-- so this is the connection's volume), with the workloads at each end named as the other
-- reconstructions name them (the endpoints snapshot, else the runtime's pods), the service it was
-- translated from, and whether and why it ended. A connection between two local pods of our datapath
-- has a row at each endpoint (direction egress at the client's, ingress at the server's).
--   packets_sent/bytes_sent: from the side that opened the connection (orig); *_received: to it (reply).
CREATE VIEW flow_volumes AS
    WITH ranked AS (
        SELECT f.*, row_number() OVER (
                   PARTITION BY recording, node, source, datapath, direction, endpoint_id, netns_ino, ct_id, protocol,
                                src_ip, src_port, dst_ip, dst_port, first_seen
                   ORDER BY time DESC) AS rn
        FROM flows f)
    SELECT r.recording, r.node, r.source, r.datapath, r.direction, r.endpoint_id, r.protocol,
           fx_addr(r.src_ip, r.src_port) AS client,
           coalesce(s.namespace || '/' || s.pod, sp.namespace || '/' || sp.pod) AS client_pod,
           fx_addr(r.dst_ip, r.dst_port) AS server,
           coalesce(t.namespace || '/' || t.pod, tp.namespace || '/' || tp.pod) AS server_pod,
           CASE WHEN r.orig_dst_ip IS NOT NULL THEN fx_addr(r.orig_dst_ip, r.orig_dst_port) END AS original,
           coalesce(r.service, sv.service, svi.service) AS service,
           CASE WHEN r.xlated_src_ip IS NOT NULL THEN fx_addr(r.xlated_src_ip, r.xlated_src_port) END AS snat,
           r.packets_orig AS packets_sent, r.bytes_orig AS bytes_sent, r.packets_reply AS packets_received, r.bytes_reply AS bytes_received,
           r.tcp_flags_orig, r.tcp_flags_reply, r.tcp_state,
           r.first_seen, coalesce(r.last_seen, r.time) AS last_seen,
           r.report = 'end' AS ended, r.end_reason, r.time AS counted_at,
           r.src_ip, r.src_port, r.dst_ip, r.dst_port, r.orig_dst_ip, r.orig_dst_port, r.src_identity, r.dst_identity, r.ct_id, r.netns_ino
    FROM ranked r
    LEFT JOIN endpoint_addrs s ON s.recording = r.recording AND s.addr = r.src_ip
    LEFT JOIN endpoint_addrs t ON t.recording = r.recording AND t.addr = r.dst_ip
    LEFT JOIN pod_addrs sp ON sp.recording = r.recording AND sp.addr = r.src_ip
    LEFT JOIN pod_addrs tp ON tp.recording = r.recording AND tp.addr = r.dst_ip
    LEFT JOIN service_ports sv ON sv.recording = r.recording AND sv.frontend_ip = r.orig_dst_ip AND sv.port = r.orig_dst_port AND sv.protocol = lower(r.protocol)
    LEFT JOIN (SELECT recording, service_id, any_value(service) AS service FROM service_ports GROUP BY ALL) svi
        ON svi.recording = r.recording AND svi.service_id = r.service_id AND r.source = 'datapath'
    WHERE r.rn = 1;

-- connect_volumes: each connect (connects_resolved) with the volume of its connection: the flows
-- connection with the connect's tuple (the source, and the destination it connected to, before or
-- after a service translation) that began closest to the connect (within 5 s: a tuple reused later is
-- another connection), preferring our datapath's row at the client's endpoint, then the kernel's.
CREATE VIEW connect_volumes AS
    SELECT c.recording, c.node, c.ktime_ns, c.src_ip, c.src_port, c.dst_ip, c.dst_port,
           v.packets_sent, v.bytes_sent, v.packets_received, v.bytes_received, v.ended, v.end_reason, v.last_seen AS flow_last_seen
    FROM connects_resolved c
    JOIN flow_volumes v ON v.recording = c.recording AND v.node = c.node AND lower(v.protocol) = lower(c.protocol)
        AND v.src_ip = c.src_ip AND v.src_port = c.src_port
        AND ((v.dst_ip = c.dst_ip AND v.dst_port = c.dst_port) OR (v.orig_dst_ip = c.dst_ip AND v.orig_dst_port = c.dst_port))
        AND v.first_seen BETWEEN c.time - INTERVAL 5 SECOND AND c.time + INTERVAL 5 SECOND
    QUALIFY row_number() OVER (PARTITION BY c.recording, c.node, c.ktime_ns, c.src_ip, c.src_port, c.dst_ip, c.dst_port
                               ORDER BY CASE WHEN v.direction = 'egress' THEN 0 WHEN v.source = 'conntrack' THEN 1 ELSE 2 END,
                                        abs(epoch_ms(v.first_seen) - epoch_ms(c.time))) = 1;

-- flow_story_volumes: each flow of flow_story with the volume of its connection (as connect_volumes
-- matches a connect: the client's tuple, the server before or after translation, the closest start).
CREATE VIEW flow_story_volumes AS
    SELECT s.recording, s.node, s.flow,
           v.packets_sent, v.bytes_sent, v.packets_received, v.bytes_received, v.ended AS flow_ended, v.end_reason AS flow_end_reason,
           v.source AS volume_source
    FROM flow_story s
    JOIN flow_volumes v ON v.recording = s.recording AND v.node = s.node AND lower(v.protocol) = lower(s.protocol)
        AND v.src_ip = s.client_ip AND v.src_port = s.client_port
        AND ((v.dst_ip = s.server_ip AND v.dst_port = s.server_port) OR (v.orig_dst_ip = s.server_ip AND v.orig_dst_port = s.server_port))
        AND v.first_seen BETWEEN s.first_seen - INTERVAL 5 SECOND AND s.last_seen + INTERVAL 5 SECOND
    QUALIFY row_number() OVER (PARTITION BY s.recording, s.node, s.flow
                               ORDER BY CASE WHEN v.direction = 'egress' THEN 0 WHEN v.source = 'conntrack' THEN 1 ELSE 2 END,
                                        abs(epoch_ms(v.first_seen) - epoch_ms(s.first_seen))) = 1;
