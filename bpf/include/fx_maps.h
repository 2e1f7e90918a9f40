/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Keys and values of the datapath's maps: the contract between the BPF
 * programs and the control plane (src/Datapath/Control). The C# mirrors live
 * in src/Datapath/Control/MapTypes.cs; a test checks them against the BTF.
 * Addresses are 16 bytes, IPv4 in the first 4 (network order); ports in host
 * order unless said otherwise.
 */
#ifndef FX_MAPS_H
#define FX_MAPS_H

/* Cilium's drop reasons (bpf/lib/drop_reasons.h, same numbers). */
enum fx_drop_reason {
	FX_DROP_INVALID_SIP = 132,	/* Invalid source ip */
	FX_DROP_POLICY = 133,		/* Policy denied */
	FX_DROP_INVALID = 134,		/* Invalid packet */
	FX_DROP_CT_INVALID_HDR = 135,	/* CT: Truncated or invalid header */
	FX_DROP_WRITE_ERROR = 141,	/* Error writing to packet */
	FX_DROP_CSUM_L3 = 153,		/* Error while correcting L3 checksum */
	FX_DROP_CSUM_L4 = 154,		/* Error while correcting L4 checksum */
	FX_DROP_CT_CREATE_FAILED = 155,	/* CT: Map insertion failed */
	FX_DROP_NO_SERVICE = 158,	/* Service backend not found */
	FX_DROP_NAT_NO_MAPPING = 167,	/* No mapping for NAT masquerade */
	FX_DROP_FRAG_NOT_FOUND = 175,	/* First logical datagram fragment not found */
	FX_DROP_POLICY_DENY = 181,	/* Policy denied by denylist */
};

/* Cilium's reserved identities (pkg/identity/numericidentity.go). */
enum fx_reserved_identity {
	FX_ID_UNKNOWN = 0,
	FX_ID_HOST = 1,
	FX_ID_WORLD = 2,
	FX_ID_UNMANAGED = 3,
	FX_ID_HEALTH = 4,
	FX_ID_INIT = 5,
	FX_ID_REMOTE_NODE = 6,
	FX_ID_KUBE_APISERVER = 7,
	FX_ID_INGRESS = 8,
	FX_ID_WORLD_IPV4 = 9,
	FX_ID_WORLD_IPV6 = 10,
	FX_ID_MIN_CLUSTER = 256,	/* first identity allocated from labels */
	FX_ID_MIN_LOCAL = 16777216,	/* first CIDR identity (local scope, 1 << 24) */
};

enum fx_endpoint_flags {
	FX_EP_INGRESS_ENFORCED = 1,	/* a policy selects the endpoint for ingress */
	FX_EP_EGRESS_ENFORCED = 2,	/* a policy selects the endpoint for egress */
	FX_EP_AUDIT = 4,		/* policy audit mode: deny verdicts are logged, not enforced */
};

enum fx_policy_flags {
	FX_POLICY_ALLOW = 1,
	FX_POLICY_DENY = 2,
};

enum fx_ct_flags {
	FX_CTF_REV_DNAT = 1,		/* replies get their source rewritten to nat_addr:nat_port */
	FX_CTF_REPLY_SEEN = 2,
	FX_CTF_CLOSING = 4,		/* FIN or RST seen */
	FX_CTF_AUDITED = 8,		/* allowed only by policy audit mode */
};

enum fx_nat_flags {
	FX_NATF_REPLY_SEEN = 1,
};

enum fx_map_limits {
	FX_IPCACHE_MAX = 16384,
	FX_ENDPOINTS_MAX = 1024,
	FX_POLICY_MAX = 65536,
	FX_CT_MAX = 65536,
	FX_CT_CLOSED_MAX = 16384,
	FX_SERVICES_MAX = 1024,
	FX_BACKENDS_MAX = 16384,
	FX_LB_FLOWS_MAX = 65536,
	FX_NAT_MAX = 65536,
	FX_FRAGS_MAX = 8192,
	FX_MAX_BACKENDS_PER_SERVICE = 256,
	FX_SNAT_PORT_TRIES = 8,
};

/* fx_ipcache (LPM trie): prefixlen counts the bits after it (32 for family+pad, then the address). */
struct fx_ipcache_key {
	__u32 prefixlen;
	__u8 family;		/* AF_INET or AF_INET6 */
	__u8 pad[3];
	__u8 addr[16];
};
_Static_assert(sizeof(struct fx_ipcache_key) == 24, "fx_ipcache_key");

struct fx_ipcache_value {
	__u32 identity;
	__u16 endpoint_id;	/* local endpoint owning the address, or 0 */
	__u16 pad;
};
_Static_assert(sizeof(struct fx_ipcache_value) == 8, "fx_ipcache_value");

/*
 * fx_endpoints: host-side veth ifindex -> endpoint; key FX_HOST_EP_IFINDEX (no
 * device has ifindex 0) is the host endpoint (the node: its address, identity
 * reserved:host), present while a host policy selects the node.
 */
#define FX_HOST_EP_IFINDEX 0

struct fx_endpoint {
	__u8 addr[16];
	__u32 identity;
	__u16 id;
	__u8 family;
	__u8 flags;		/* enum fx_endpoint_flags */
};
_Static_assert(sizeof(struct fx_endpoint) == 24, "fx_endpoint");

/*
 * fx_policy (LPM trie, as Cilium's policy map): (endpoint, direction, remote
 * identity) exactly, then the protocol and a prefix of the destination port,
 * so that one entry covers a port range (endPort). Identity 0 is any
 * identity; a prefix that stops before the protocol is any protocol (and any
 * port), one that stops before the port is any port of that protocol. ICMP
 * and ICMPv6 put the ICMP type in dport.
 */
enum fx_policy_prefix {
	FX_POLICY_PREFIX_ANY_PROTO = 64,	/* endpoint, dir, pad1, identity */
	FX_POLICY_PREFIX_ANY_PORT = 72,		/* ... and proto */
	FX_POLICY_PREFIX_PORT = 80,		/* ... and pad2: add the port's prefix bits (16: one port) */
	FX_POLICY_PREFIX_FULL = 96,
};

struct fx_policy_key {
	__u32 prefixlen;	/* enum fx_policy_prefix */
	__u16 endpoint_id;
	__u8 dir;		/* enum fx_dir */
	__u8 pad1;
	__u32 identity;
	__u8 proto;
	__u8 pad2;
	__be16 dport;		/* network order: a prefix of its bits is a range */
};
_Static_assert(sizeof(struct fx_policy_key) == 16, "fx_policy_key");

struct fx_policy_value {
	__u16 flags;		/* enum fx_policy_flags */
	__u8 proto_given;	/* the entry names a protocol: an L4 match (L3-L4, L4-only) */
	__u8 pad;
	__u32 rule_id;		/* the policy rules this entry was compiled from (user space's
				 * policy_rules table); carried into verdict and drop events */
	__u64 hits;		/* connections this entry decided */
};
_Static_assert(sizeof(struct fx_policy_value) == 16, "fx_policy_value");

/* fx_ct, fx_lb_flows, fx_snat: a connection's tuple as the packet carries it. */
struct fx_ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 dir;		/* enum fx_dir: CT_EGRESS for connections the endpoint opened */
	__u8 family;
	__u8 pad;
};
_Static_assert(sizeof(struct fx_ct_key) == 40, "fx_ct_key");

/*
 * A tracked connection at one endpoint. Counters are per direction: forward is
 * the direction of the connection's first packet (the key's tuple), reply the
 * other; bytes are IP bytes (from the IP header on, as the kernel's conntrack
 * accounting counts them). The recorder reads them for the flows table.
 */
struct fx_ct_entry {
	__u64 created_ns;
	__u64 last_ns;
	__u64 packets;		/* forward */
	__u64 bytes;		/* forward */
	__u64 rev_packets;	/* reply */
	__u64 rev_bytes;	/* reply */
	__u8 nat_addr[16];	/* service address replies are rewritten to (FX_CTF_REV_DNAT) */
	__u16 nat_port;
	__u16 endpoint_id;
	__u32 service_id;
	__u32 remote_identity;
	__u8 flags;		/* enum fx_ct_flags */
	__u8 match;		/* enum fx_match_type of the verdict that created it */
	__u8 trace_flags;	/* TCP flags traced so far: forward in bits 0-3, reply in 4-7 (FIN SYN RST ACK) */
	__u8 trace_tick;	/* when last traced, in units of 2^30 ns (fx_cfg.trace_aggregate) */
	__u8 tcp_flags;		/* every TCP flag seen forward (FIN SYN RST PSH ACK URG ECE CWR) */
	__u8 rev_tcp_flags;	/* every TCP flag seen in replies */
	__u16 captured;		/* packets captured at this endpoint so far (fx_cfg.capture_first) */
	__u32 pad;
};
_Static_assert(sizeof(struct fx_ct_entry) == 88, "fx_ct_entry");
_Static_assert(sizeof(struct fx_ct_entry) % 8 == 0, "fx_ct_entry: a multiple of 8 bytes");

/*
 * fx_ct_closed: a connection that saw FIN or RST whose tuple was opened again
 * (a reused port) before a reader took its final counters from fx_ct: its
 * entry as it was, under its key and creation time, until the reader takes it.
 */
struct fx_ct_closed_key {
	struct fx_ct_key key;
	__u64 created_ns;
};
_Static_assert(sizeof(struct fx_ct_closed_key) == 48, "fx_ct_closed_key");

/* fx_ct_stats[0] (per CPU): connections tracked, so that a reader of fx_ct knows how many it never saw. */
struct fx_ct_stats {
	__u64 created;		/* entries created (new and reopened connections) */
	__u64 failed;		/* creations the map refused */
};
_Static_assert(sizeof(struct fx_ct_stats) == 16, "fx_ct_stats");

/* fx_services: ClusterIP:port/proto -> service. */
struct fx_service_key {
	__u8 addr[16];
	__u16 port;
	__u8 proto;
	__u8 family;
};
_Static_assert(sizeof(struct fx_service_key) == 20, "fx_service_key");

struct fx_service {
	__u32 id;
	__u16 count;		/* backends in slots 0..count-1; 0 drops with FX_DROP_NO_SERVICE */
	__u16 pad;
	__u32 affinity_timeout;	/* sessionAffinity ClientIP: seconds a client keeps its backend; 0 none */
};
_Static_assert(sizeof(struct fx_service) == 12, "fx_service");

/* fx_lb_affinity: (service, client address) -> the backend it was given, and when last. */
struct fx_affinity_key {
	__u32 service_id;
	__u32 pad;
	__u8 client[16];
};
_Static_assert(sizeof(struct fx_affinity_key) == 24, "fx_affinity_key");

struct fx_affinity {
	__u64 last_ns;
	__u32 slot;
	__u32 pad;
};
_Static_assert(sizeof(struct fx_affinity) == 16, "fx_affinity");

/*
 * fx_nodeport_rev: a connection from outside the node to a NodePort, a load
 * balancer address or an external IP, translated on the node's device: the
 * backend's reply tuple (backend -> client) -> the frontend address and port
 * its source is rewritten back to on the way out.
 */
struct fx_nodeport_entry {
	__u8 addr[16];
	__u16 port;
	__u8 flags;		/* enum fx_nat_flags */
	__u8 seen;		/* packets translated with this entry, saturating at 255 (trace and capture sampling) */
	__u32 service_id;
};
_Static_assert(sizeof(struct fx_nodeport_entry) == 24, "fx_nodeport_entry");

struct fx_backend_key {
	__u32 service_id;
	__u32 slot;
};
_Static_assert(sizeof(struct fx_backend_key) == 8, "fx_backend_key");

struct fx_backend {
	__u8 addr[16];
	__u16 port;
	__u8 family;
	__u8 pad;
};
_Static_assert(sizeof(struct fx_backend) == 20, "fx_backend");

/* fx_lb_flows: client tuple towards the service -> the backend chosen for it. */
struct fx_lb_flow {
	__u8 addr[16];
	__u16 port;
	__u16 slot;
	__u32 service_id;
};
_Static_assert(sizeof(struct fx_lb_flow) == 24, "fx_lb_flow");

/*
 * fx_snat: FX_DIR_EGRESS keys are the pod's tuple (pod -> remote), their
 * value the node address and port it leaves with; FX_DIR_INGRESS keys are the
 * return tuple (remote -> node:port), their value the pod address and port.
 */
struct fx_nat_entry {
	__u8 addr[16];
	__u16 port;
	__u8 flags;		/* enum fx_nat_flags */
	__u8 seen;		/* packets translated with this entry, saturating at 255 (trace and capture sampling) */
	__u32 identity;		/* the pod's identity */
	__u64 created_ns;
};
_Static_assert(sizeof(struct fx_nat_entry) == 32, "fx_nat_entry");

/* fx_nat_cfg[0]: egress masquerading (SNAT) configuration. */
struct fx_nat_config {
	__u8 node_addr[16];
	__u8 pod_net[16];
	__u8 svc_net[16];
	__u8 pod_prefix;
	__u8 svc_prefix;
	__u8 family;
	__u8 enabled;
};
_Static_assert(sizeof(struct fx_nat_config) == 52, "fx_nat_config");

/*
 * fx_dns (ring buffer): a DNS answer (UDP or TCP from port 53, a reply of a
 * tracked connection) on its way into an endpoint; its first len payload bytes
 * follow the header (at most FX_DNS_MAX; over TCP with the 2-byte length). For toFQDNs: the names' addresses are
 * learnt from these, as Cilium's DNS proxy learns them.
 */
#define FX_DNS_MAX 512

struct fx_dns_answer {
	__u8 saddr[16];		/* the server that answered */
	__u8 daddr[16];		/* the endpoint */
	__u16 endpoint_id;
	__u16 sport;
	__u16 len;		/* payload bytes copied (0: none could be read) */
	__u8 family;
	__u8 proto;		/* IPPROTO_UDP or IPPROTO_TCP */
};
_Static_assert(sizeof(struct fx_dns_answer) == 40, "fx_dns_answer");

#endif /* FX_MAPS_H */
