/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The Forensics event ABI: the wire truth between the BPF programs and the
 * recorder. Every event starts with struct fx_hdr. Fixed-width fields,
 * explicit padding, a size assertion on every struct, every enum once.
 *
 * The C# mirrors live in src/Datapath/Abi/Events.cs; a test reads this
 * object's BTF and checks every size, offset and enum value against them.
 * A change here is a new FX_ABI_VERSION.
 */
#ifndef FX_ABI_H
#define FX_ABI_H

#define FX_ABI_VERSION 2

enum fx_kind {
	FX_KIND_NONE = 0,
	FX_KIND_DROP = 1,	/* datapath drop, Cilium reason code */
	FX_KIND_POLICY = 2,	/* policy verdict, first packet of a connection */
	FX_KIND_NAT = 3,	/* DNAT / rev-DNAT / SNAT / rev-SNAT */
	FX_KIND_TRACE = 4,	/* packet seen at an observation point */
	FX_KIND_CAPTURE = 5,	/* first bytes of a packet */
	FX_KIND_EXEC = 6,	/* process exec */
	FX_KIND_EXIT = 7,	/* process exit */
	FX_KIND_CONNECT = 8,	/* TCP/UDP connect or unconnected UDP send */
	FX_KIND_KDROP = 9,	/* skb:kfree_skb with a drop reason */
	FX_KIND_MAX = 10,
};

/* Where a datapath packet was seen (Cilium's observation points). */
enum fx_obs_point {
	FX_OBS_FROM_ENDPOINT = 0,	/* tc ingress on the host veth: leaving the pod */
	FX_OBS_TO_ENDPOINT = 1,		/* tc egress on the host veth: entering the pod */
	FX_OBS_TEST = 2,		/* BPF_PROG_TEST_RUN */
	FX_OBS_FROM_NETWORK = 3,	/* tc ingress on the node's network device */
	FX_OBS_TO_NETWORK = 4,		/* tc egress on the node's network device */
};

enum fx_dir {
	FX_DIR_INGRESS = 0,	/* towards the endpoint */
	FX_DIR_EGRESS = 1,	/* away from the endpoint */
};

enum fx_ct_state {
	FX_CT_NONE = 0,
	FX_CT_NEW = 1,
	FX_CT_ESTABLISHED = 2,
	FX_CT_REPLY = 3,
	FX_CT_RELATED = 4,
};

enum fx_verdict_action {
	FX_ACTION_DENY = 0,
	FX_ACTION_ALLOW = 1,
	FX_ACTION_AUDIT = 2,
};

enum fx_match_type {
	FX_MATCH_NONE = 0,
	FX_MATCH_L3_ONLY = 1,
	FX_MATCH_L3_L4 = 2,
	FX_MATCH_L4_ONLY = 3,
	FX_MATCH_ALL = 4,
};

enum fx_nat_kind {
	FX_NAT_DNAT = 1,
	FX_NAT_REV_DNAT = 2,
	FX_NAT_SNAT = 3,
	FX_NAT_REV_SNAT = 4,
};

enum fx_connect_kind {
	FX_CONNECT_TCP = 1,		/* active open (SYN_SENT) */
	FX_CONNECT_UDP = 2,		/* connect() on a UDP socket */
	FX_CONNECT_UDP_SEND = 3,	/* sendto()/sendmsg() with an address */
};

/* The source file a drop was decided in (Cilium stamps file:line). */
enum fx_src_file {
	FX_FILE_UNKNOWN = 0,
	FX_FILE_DATAPATH = 1,	/* datapath.bpf.c */
	FX_FILE_POLICY = 2,	/* lib/policy.h */
	FX_FILE_CONNTRACK = 3,	/* lib/conntrack.h */
	FX_FILE_LB = 4,		/* lib/lb.h */
	FX_FILE_NAT = 5,	/* lib/nat.h */
	FX_FILE_PARSE = 6,	/* lib/parse.h */
};

/* exec flags */
enum fx_exec_flags {
	FX_EXEC_NONE = 0,
	FX_EXEC_ARGS_TRUNCATED = 1,
	FX_EXEC_FILENAME_TRUNCATED = 2,
	FX_EXEC_CWD_TRUNCATED = 4,
	FX_EXEC_PROCFS = 8,	/* synthesized from /proc at start, not seen by the probe */
};

enum fx_limits {
	FX_FILENAME_MAX = 256,
	FX_ARGS_MAX = 1024,
	FX_CWD_MAX = 256,
	FX_COMM_LEN = 16,
	FX_CAPTURE_MAX = 256,
};

/* fx_config.capture_first: capture every packet. */
#define FX_CAPTURE_ALL 0xffffffffu

/* Common header of every event (Tetragon's common message header). */
struct fx_hdr {
	__u8 kind;		/* enum fx_kind */
	__u8 version;		/* FX_ABI_VERSION */
	__u16 size;		/* bytes of the whole event, header included */
	__u32 cpu;
	__u64 ktime;		/* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
};
_Static_assert(sizeof(struct fx_hdr) == 16, "fx_hdr");

/*
 * Addresses: IPv4 in the first 4 bytes of the 16. Ports in host order. An
 * ICMP/ICMPv6 packet has no ports: when flags has FX_TUPLE_ICMP, sport is the
 * ICMP type and dport the ICMP code (as Cilium's policy keys carry the ICMP
 * type in the port slot); without it they are 0 (type and code not read).
 */
struct fx_tuple {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;		/* IPPROTO_* */
	__u8 family;		/* AF_INET (2) or AF_INET6 (10) */
	__u8 tcp_flags;		/* FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 */
	__u8 flags;		/* FX_TUPLE_* (was padding, always 0) */
};
_Static_assert(sizeof(struct fx_tuple) == 40, "fx_tuple");

enum {
	FX_TUPLE_ICMP = 0x01,	/* sport/dport are the ICMP type/code */
};

/* What every datapath event says about where it happened. */
struct fx_dp_meta {
	__u32 src_identity;
	__u32 dst_identity;
	__u32 ifindex;
	__u32 flow_id;		/* hash of the connection's tuple */
	__u32 pkt_len;
	__u16 endpoint_id;
	__u8 obs_point;		/* enum fx_obs_point */
	__u8 direction;		/* enum fx_dir */
};
_Static_assert(sizeof(struct fx_dp_meta) == 24, "fx_dp_meta");

struct fx_drop_event {
	struct fx_hdr hdr;
	struct fx_tuple tuple;
	struct fx_dp_meta meta;
	__u16 reason;		/* Cilium drop code */
	__u16 line;
	__u8 file;		/* enum fx_src_file */
	__u8 ct_state;		/* enum fx_ct_state */
	__u16 pad;
	__u32 rule_id;		/* policy drops: the deny rules that matched (the policy_rules
				 * table); 0 when no rule did (default deny) or not a policy drop */
	__u32 pad2;
};
_Static_assert(sizeof(struct fx_drop_event) == 96, "fx_drop_event");

struct fx_policy_event {
	struct fx_hdr hdr;
	struct fx_tuple tuple;
	struct fx_dp_meta meta;
	__u32 remote_identity;
	__u8 action;		/* enum fx_verdict_action */
	__u8 match;		/* enum fx_match_type */
	__u16 pad;
	__u32 rule_id;		/* the rules of the policy entry that decided (the policy_rules
				 * table); 0 when no entry matched: default deny */
	__u32 pad2;
};
_Static_assert(sizeof(struct fx_policy_event) == 96, "fx_policy_event");

struct fx_nat_event {
	struct fx_hdr hdr;
	struct fx_tuple orig;
	struct fx_tuple xlated;
	struct fx_dp_meta meta;
	__u32 service_id;
	__u8 nat_kind;		/* enum fx_nat_kind */
	__u8 pad[3];
};
_Static_assert(sizeof(struct fx_nat_event) == 128, "fx_nat_event");

struct fx_trace_event {
	struct fx_hdr hdr;
	struct fx_tuple tuple;
	struct fx_dp_meta meta;
	__u8 orig_addr[16];	/* address before reverse translation, or zero */
	__u8 ct_state;		/* enum fx_ct_state */
	__u8 pad[7];
};
_Static_assert(sizeof(struct fx_trace_event) == 104, "fx_trace_event");

struct fx_capture_event {
	struct fx_hdr hdr;
	struct fx_tuple tuple;
	struct fx_dp_meta meta;
	__u16 cap_len;		/* bytes of data[] that hold the packet */
	__u16 drop_reason;	/* 0 unless the packet was dropped */
	__u8 ct_state;
	__u8 pad[3];
	__u8 data[FX_CAPTURE_MAX];	/* from the Ethernet header on */
};
_Static_assert(sizeof(struct fx_capture_event) == 344, "fx_capture_event");

struct fx_exec_event {
	struct fx_hdr hdr;
	__u32 pid;		/* tgid */
	__u32 tid;
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__u32 netns_ino;
	__u64 cgroup_id;
	__u64 exec_id;		/* boot-time ns of this exec; unique per process image */
	__u64 parent_exec_id;	/* 0 when the parent is unknown */
	__u64 start_time;	/* task start, boot-time ns */
	__u32 flags;		/* enum fx_exec_flags */
	__u16 filename_len;
	__u16 args_len;		/* argv, NUL-separated, argv[0] included */
	__u16 cwd_len;
	__u16 argc;
	__u8 comm[FX_COMM_LEN];
	__u8 pad[4];
	__u8 filename[FX_FILENAME_MAX];
	__u8 args[FX_ARGS_MAX];
	__u8 cwd[FX_CWD_MAX];
};
_Static_assert(sizeof(struct fx_exec_event) == 1640, "fx_exec_event");

struct fx_exit_event {
	struct fx_hdr hdr;
	__u32 pid;
	__u32 tid;
	__u32 ppid;
	__u32 exit_code;	/* as wait(2) reports it: code << 8 | signal */
	__u64 exec_id;
	__u64 cgroup_id;
	__u32 netns_ino;
	__u32 pad;
	__u8 comm[FX_COMM_LEN];
};
_Static_assert(sizeof(struct fx_exit_event) == 72, "fx_exit_event");

struct fx_connect_event {
	struct fx_hdr hdr;
	struct fx_tuple tuple;
	__u32 pid;
	__u32 tid;
	__u32 uid;
	__u32 netns_ino;
	__u64 exec_id;
	__u64 cgroup_id;
	__u8 comm[FX_COMM_LEN];
	__u8 connect_kind;	/* enum fx_connect_kind */
	__u8 selected;		/* the TracingPolicy selectors of its class that selected it (bit i: selector i); 0xff: no policy hooks the class */
	__u8 pad[6];
};
_Static_assert(sizeof(struct fx_connect_event) == 112, "fx_connect_event");

struct fx_kdrop_event {
	struct fx_hdr hdr;
	struct fx_tuple tuple;
	__u64 location;		/* kernel address of the dropping call site */
	__u32 reason;		/* enum skb_drop_reason of the running kernel */
	__u32 netns_ino;
	__u32 ifindex;
	__u32 pkt_len;
	__u16 l3_proto;		/* ETH_P_*, host order */
	__u8 pad[6];
};
_Static_assert(sizeof(struct fx_kdrop_event) == 88, "fx_kdrop_event");

/* Per-CPU emission counters, one slot per enum fx_kind. */
struct fx_emit_stats {
	__u64 emitted;		/* events handed to the ring buffer */
	__u64 failed;		/* reservations that failed: events lost */
};
_Static_assert(sizeof(struct fx_emit_stats) == 16, "fx_emit_stats");

/* Read-only configuration, set from user space before load. */
struct fx_config {
	__u32 kinds_enabled;	/* bit (1 << enum fx_kind) */
	__u32 snaplen;		/* capture bytes, 0 = capture off */
	__u64 wakeup_bytes;	/* wake the consumer once this much is pending */
	__u32 self_pid;		/* the recorder's own tgid, never reported */
	__u32 trace_aggregate;	/* 0: a trace event per packet; 1: per connection and
				 * direction, when it starts, when new TCP flags appear,
				 * and every ~5 s (Cilium's monitor aggregation "medium") */
	__u32 capture_first;	/* FX_CAPTURE_ALL: every packet; N: dropped packets and the
				 * first N packets of each connection at each endpoint */
	__u32 pad;
};
_Static_assert(sizeof(struct fx_config) == 32, "fx_config");

#endif /* FX_ABI_H */
