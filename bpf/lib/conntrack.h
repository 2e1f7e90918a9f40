/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection tracking (Cilium's CT map): an LRU hash keyed by the tuple of
 * the connection's first packet and the direction it was seen in at its
 * endpoint (egress: the endpoint opened it; ingress: it was opened to the
 * endpoint). A packet is new, established (same direction), a reply (the
 * reverse tuple in the other direction) or related (an ICMP error about a
 * tracked connection).
 */
#ifndef FX_CONNTRACK_H
#define FX_CONNTRACK_H

#include "ctx.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FX_CT_MAX);
	__type(key, struct fx_ct_key);
	__type(value, struct fx_ct_entry);
} fx_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fx_ct_stats);
} fx_ct_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FX_CT_CLOSED_MAX);
	__type(key, struct fx_ct_closed_key);
	__type(value, struct fx_ct_entry);
} fx_ct_closed SEC(".maps");

/* Keeps a closed connection's final entry for the reader before its tuple is reused. */
static __always_inline void fx_ct_keep_closed(const struct fx_ct_key *k, const struct fx_ct_entry *e)
{
	struct fx_ct_closed_key ck = {};

	ck.key = *k;
	ck.created_ns = e->created_ns;
	bpf_map_update_elem(&fx_ct_closed, &ck, e, BPF_ANY);
}

static __always_inline void fx_ct_key_fwd(struct fx_ct_key *k, const struct fx_ctx *ctx, __u8 dir)
{
	__builtin_memcpy(k->saddr, ctx->pkt.tuple.saddr, 16);
	__builtin_memcpy(k->daddr, ctx->pkt.tuple.daddr, 16);
	k->sport = ctx->ct_sport;
	k->dport = ctx->ct_dport;
	k->proto = ctx->pkt.tuple.proto;
	k->dir = dir;
	k->family = ctx->pkt.tuple.family;
	k->pad = 0;
}

static __always_inline void fx_ct_key_rev(struct fx_ct_key *k, const struct fx_ctx *ctx, __u8 dir)
{
	__builtin_memcpy(k->saddr, ctx->pkt.tuple.daddr, 16);
	__builtin_memcpy(k->daddr, ctx->pkt.tuple.saddr, 16);
	k->sport = ctx->ct_dport;
	k->dport = ctx->ct_sport;
	k->proto = ctx->pkt.tuple.proto;
	k->dir = dir;
	k->family = ctx->pkt.tuple.family;
	k->pad = 0;
}

static __always_inline int fx_icmp_is_error(__u8 proto, __u8 type)
{
	if (proto == IPPROTO_ICMP)
		return type == 3 || type == 11 || type == 12;
	if (proto == IPPROTO_ICMPV6)
		return type >= 1 && type <= 4;
	return 0;
}

/* The tuple of the packet an ICMPv4 error quotes, as that packet carried it. */
static __always_inline int fx_ct_key_icmp_inner(struct __sk_buff *skb, const struct fx_ctx *ctx,
						struct fx_ct_key *k, __u8 dir)
{
	struct iphdr ip;
	__u16 ports[2];
	__u32 off = ctx->pkt.l4_off + 8;

	if (ctx->pkt.tuple.family != AF_INET)
		return -1;
	if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0 || ip.ihl < 5)
		return -1;
	if (ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP)
		return -1;
	if (bpf_skb_load_bytes(skb, off + ip.ihl * 4, ports, sizeof(ports)) < 0)
		return -1;
	__builtin_memset(k, 0, sizeof(*k));
	__builtin_memcpy(k->saddr, &ip.saddr, 4);
	__builtin_memcpy(k->daddr, &ip.daddr, 4);
	k->sport = bpf_ntohs(ports[0]);
	k->dport = bpf_ntohs(ports[1]);
	k->proto = ip.protocol;
	k->dir = dir;
	k->family = AF_INET;
	return 0;
}

/*
 * Conntrack times come from the coarse monotonic clock (updated every tick,
 * as Cilium's bpf_mono_now()): the same timebase as events' ktime, a few ms
 * coarser, and a fraction of the cost of bpf_ktime_get_ns() in a VM (kvm-clock
 * reads the TSC and scales it), which every established packet would pay.
 */
static __always_inline __u64 fx_ct_now(void)
{
	return bpf_ktime_get_coarse_ns();
}

/* IP bytes of the packet (from the IP header on), as the kernel's conntrack accounting counts them. */
static __always_inline __u32 fx_ct_ip_bytes(const struct fx_ctx *ctx)
{
	return ctx->meta.pkt_len - ctx->pkt.l3_off;
}

/*
 * Looks the packet up for an endpoint seeing it in direction dir. Returns the
 * CT state; *entry is the tracked connection (NULL when new), *fwd the key a
 * new connection is created under. A tracked packet is counted in its
 * direction (packets, IP bytes, TCP flags). A SYN (without ACK) on a connection
 * that saw FIN or RST opens a new one on the same tuple (a reused port): NEW,
 * so that it is decided by policy again and counted from zero, as Cilium
 * reopens a closing entry.
 */
static __always_inline __u8 fx_ct_lookup(struct __sk_buff *skb, struct fx_ctx *ctx, __u8 dir,
					 struct fx_ct_key *fwd, struct fx_ct_entry **entry)
{
	struct fx_ct_key k;
	struct fx_ct_entry *e;
	__u8 other = dir == FX_DIR_EGRESS ? FX_DIR_INGRESS : FX_DIR_EGRESS;
	__u8 tcp_flags = ctx->pkt.tuple.proto == IPPROTO_TCP ? ctx->pkt.tuple.tcp_flags : 0;
	__u32 bytes = fx_ct_ip_bytes(ctx);
	__u64 now = fx_ct_now();

	*entry = NULL;
	fx_ct_key_fwd(fwd, ctx, dir);
	if (fx_icmp_is_error(ctx->pkt.tuple.proto, ctx->icmp_type)) {
		if (fx_ct_key_icmp_inner(skb, ctx, &k, other) == 0 && bpf_map_lookup_elem(&fx_ct, &k))
			return FX_CT_RELATED;
		return FX_CT_NEW;
	}
	e = bpf_map_lookup_elem(&fx_ct, fwd);
	if (e) {
		if ((tcp_flags & 0x12) == 0x02 && (e->flags & FX_CTF_CLOSING)) {
			fx_ct_keep_closed(fwd, e);
			return FX_CT_NEW;
		}
		__sync_fetch_and_add(&e->packets, 1);
		__sync_fetch_and_add(&e->bytes, bytes);
		e->last_ns = now;
		if (tcp_flags & ~e->tcp_flags)
			e->tcp_flags |= tcp_flags;
		if (tcp_flags & 0x05)
			e->flags |= FX_CTF_CLOSING;
		*entry = e;
		return FX_CT_ESTABLISHED;
	}
	fx_ct_key_rev(&k, ctx, other);
	e = bpf_map_lookup_elem(&fx_ct, &k);
	if (e) {
		__sync_fetch_and_add(&e->rev_packets, 1);
		__sync_fetch_and_add(&e->rev_bytes, bytes);
		e->last_ns = now;
		if (tcp_flags & ~e->rev_tcp_flags)
			e->rev_tcp_flags |= tcp_flags;
		if (tcp_flags & 0x05)
			e->flags |= FX_CTF_CLOSING;
		*entry = e;
		return FX_CT_REPLY;
	}
	return FX_CT_NEW;
}

/*
 * Tracks a new connection; the caller fills NAT details in *e first. Its first
 * packet is counted, traced and captured (the sampling state starts from it).
 */
static __always_inline int fx_ct_create(struct fx_ctx *ctx, const struct fx_ct_key *fwd, struct fx_ct_entry *e)
{
	__u64 now = fx_ct_now();
	__u8 tcp = ctx->pkt.tuple.proto == IPPROTO_TCP ? ctx->pkt.tuple.tcp_flags : 0;
	__u32 zero = 0;
	struct fx_ct_stats *st;
	int rc;

	e->created_ns = now;
	e->last_ns = now;
	e->packets = 1;
	e->bytes = fx_ct_ip_bytes(ctx);
	e->rev_packets = 0;
	e->rev_bytes = 0;
	e->tcp_flags = tcp;
	e->rev_tcp_flags = 0;
	e->trace_flags = (tcp & 0x07) | ((tcp & 0x10) ? 0x08 : 0);
	e->trace_tick = (__u8)(now >> 30);
	e->captured = 1;
	e->pad = 0;
	rc = bpf_map_update_elem(&fx_ct, fwd, e, BPF_ANY);
	st = bpf_map_lookup_elem(&fx_ct_stats, &zero);
	if (st) {
		if (rc == 0)
			st->created++;
		else
			st->failed++;
	}
	return rc;
}

#endif /* FX_CONNTRACK_H */
