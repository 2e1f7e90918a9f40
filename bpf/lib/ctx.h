/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The per-packet state the datapath carries from parse to verdict: the
 * packet's (possibly translated) tuple, what every event says about where it
 * happened, the connection tracking state and the drop decision.
 */
#ifndef FX_CTX_H
#define FX_CTX_H

#include "../include/fx_abi.h"
#include "../include/fx_maps.h"
#include "parse.h"

#ifndef IPPROTO_ICMPV6
#define IPPROTO_ICMPV6 58
#endif

struct fx_ctx {
	struct fx_pkt pkt;
	struct fx_dp_meta meta;
	__u8 orig_addr[16];	/* source before reverse translation */
	__u16 ct_sport;		/* ports as conntrack sees them (ICMP echo: the id) */
	__u16 ct_dport;
	__u16 drop_reason;
	__u16 drop_line;
	__u32 drop_rule;	/* policy drops: the rule id of the verdict */
	__u8 drop_file;
	__u8 ct_state;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 icmp_known;	/* icmp_type/icmp_code were read from the packet */
	__u8 frag_missing;	/* a later fragment whose first fragment was not seen */
	__u8 trace_skip;	/* aggregated: this packet makes no trace event */
	__u8 capture_skip;	/* sampled out: this packet makes no capture event (unless dropped) */
	/* scratch space: ctx lives in a per-CPU map, off the 512-byte stack */
	struct fx_tuple orig;	/* the tuple before a translation */
	struct fx_ct_key key;	/* the connection's key (forward direction) */
	struct fx_ct_key key2;
	struct fx_ct_entry entry;
	struct fx_nat_entry nat_out;
	struct fx_nat_entry nat_back;
	struct fx_lb_flow flow;
	struct fx_service_key svc_key;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fx_ctx);
} fx_scratch SEC(".maps");

/* IPv4 fragments: the ports of a datagram, learnt from its first fragment. */
struct fx_frag_key {
	__be32 saddr;
	__be32 daddr;
	__u16 id;
	__u8 proto;
	__u8 pad;
};

struct fx_frag_ports {
	__u16 sport;
	__u16 dport;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FX_FRAGS_MAX);
	__type(key, struct fx_frag_key);
	__type(value, struct fx_frag_ports);
} fx_frags SEC(".maps");

/* Records (first fragment) or recovers (later ones) the ports; -1 when a later one has no first. */
static __always_inline int fx_frag_ports(struct fx_pkt *p)
{
	struct fx_frag_key k = {};
	struct fx_frag_ports v, *found;

	if (p->frag == FX_FRAG_NONE)
		return 0;
	__builtin_memcpy(&k.saddr, p->tuple.saddr, 4);
	__builtin_memcpy(&k.daddr, p->tuple.daddr, 4);
	k.id = p->ip_id;
	k.proto = p->tuple.proto;
	if (p->frag == FX_FRAG_FIRST) {
		v.sport = p->tuple.sport;
		v.dport = p->tuple.dport;
		bpf_map_update_elem(&fx_frags, &k, &v, BPF_ANY);
		return 0;
	}
	found = bpf_map_lookup_elem(&fx_frags, &k);
	if (!found)
		return -1;
	p->tuple.sport = found->sport;
	p->tuple.dport = found->dport;
	return 0;
}

/* A hash of a packet's tuple (FNV-1a, then mixed): the flow id in its events. */
static __always_inline __u32 fx_flow_hash(const struct fx_tuple *t, __u16 sport, __u16 dport)
{
	__u32 h = 2166136261u;
	const __u32 *s = (const __u32 *)t->saddr;
	const __u32 *d = (const __u32 *)t->daddr;
	int i;

#pragma unroll
	for (i = 0; i < 4; i++) {
		h = (h ^ s[i]) * 16777619u;
		h = (h ^ d[i]) * 16777619u;
	}
	h = (h ^ (((__u32)sport << 16) | dport)) * 16777619u;
	h = (h ^ t->proto) * 16777619u;
	/* murmur3's finalizer: every input bit reaches the low bits (backend slot = hash % n) */
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

/* Parses the packet into this CPU's ctx; NULL for anything but IPv4/IPv6 (ARP, ...). */
static __always_inline struct fx_ctx *fx_ctx_init(struct __sk_buff *skb, __u8 obs)
{
	__u32 zero = 0;
	struct fx_ctx *ctx = bpf_map_lookup_elem(&fx_scratch, &zero);

	if (!ctx)
		return NULL;
	__builtin_memset(ctx, 0, sizeof(*ctx));
	if (fx_parse(skb, &ctx->pkt) < 0)
		return NULL;
	ctx->meta.ifindex = skb->ifindex;
	ctx->meta.pkt_len = skb->len;
	ctx->meta.obs_point = obs;
	ctx->meta.direction = (obs == FX_OBS_TO_ENDPOINT || obs == FX_OBS_FROM_NETWORK) ?
			      FX_DIR_INGRESS : FX_DIR_EGRESS;
	if (fx_frag_ports(&ctx->pkt) < 0)
		ctx->frag_missing = 1;
	ctx->ct_sport = ctx->pkt.tuple.sport;
	ctx->ct_dport = ctx->pkt.tuple.dport;
	if ((ctx->pkt.tuple.proto == IPPROTO_ICMP || ctx->pkt.tuple.proto == IPPROTO_ICMPV6) &&
	    ctx->pkt.frag != FX_FRAG_LATER) {
		__u8 icmp[8];

		if (bpf_skb_load_bytes(skb, ctx->pkt.l4_off, icmp, sizeof(icmp)) == 0) {
			__u16 id = ((__u16)icmp[4] << 8) | icmp[5];

			ctx->icmp_type = icmp[0];
			ctx->icmp_code = icmp[1];
			ctx->icmp_known = 1;
			/* echo request: the id is the "source port"; echo reply: the destination */
			if (icmp[0] == 8 || icmp[0] == 128)
				ctx->ct_sport = id;
			else if (icmp[0] == 0 || icmp[0] == 129)
				ctx->ct_dport = id;
		}
	}
	ctx->meta.flow_id = fx_flow_hash(&ctx->pkt.tuple, ctx->ct_sport, ctx->ct_dport);
	return ctx;
}

/*
 * The packet's tuple as events carry it: an ICMP message's type and code in
 * the port slots (ICMP has no ports), marked FX_TUPLE_ICMP, when they were read.
 */
static __always_inline void fx_event_tuple(struct fx_tuple *t, const struct fx_ctx *ctx)
{
	*t = ctx->pkt.tuple;
	if (ctx->icmp_known) {
		t->sport = ctx->icmp_type;
		t->dport = ctx->icmp_code;
		t->flags |= FX_TUPLE_ICMP;
	}
}

/* IPv6 neighbour discovery (router/neighbour solicitation and advertisement, redirect): never policed. */
static __always_inline int fx_is_nd(const struct fx_ctx *ctx)
{
	return ctx->pkt.tuple.proto == IPPROTO_ICMPV6 && ctx->icmp_type >= 133 && ctx->icmp_type <= 137;
}

static __always_inline int fx_addr_eq(const __u8 *a, const __u8 *b, __u8 family)
{
	const __u32 *x = (const __u32 *)a;
	const __u32 *y = (const __u32 *)b;

	if (family == AF_INET)
		return x[0] == y[0];
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

#endif /* FX_CTX_H */
