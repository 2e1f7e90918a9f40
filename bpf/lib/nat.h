/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Address and port rewriting with checksum fix-ups, NAT events, and egress
 * masquerading (SNAT): connections from the pod CIDR to anything outside the
 * pod and service CIDRs leave the node's device with the node address; their
 * return traffic is translated back on the way in. IPv4.
 */
#ifndef FX_NAT_H
#define FX_NAT_H

#include <stddef.h>
#include "ctx.h"
#include "drop.h"
#include "identity.h"
#include "conntrack.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FX_NAT_MAX);
	__type(key, struct fx_ct_key);
	__type(value, struct fx_nat_entry);
} fx_snat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fx_nat_config);
} fx_nat_cfg SEC(".maps");

/* Offset of the L4 checksum and the flags its update needs; 0 when there is none to fix. */
static __always_inline __u32 fx_l4_csum_off(const struct fx_ctx *ctx, __u64 *flags)
{
	/* a later fragment holds no L4 header: the first one's checksum covers the datagram */
	if (ctx->pkt.frag == FX_FRAG_LATER)
		return 0;
	if (ctx->pkt.tuple.proto == IPPROTO_TCP) {
		*flags = 0;
		return ctx->pkt.l4_off + 16;
	}
	if (ctx->pkt.tuple.proto == IPPROTO_UDP) {
		*flags = BPF_F_MARK_MANGLED_0;	/* a zero UDP checksum stays zero */
		return ctx->pkt.l4_off + 6;
	}
	return 0;
}

/* Rewrites the IPv4 source (dst = 0) or destination (dst = 1); 0 or a drop reason. */
static __always_inline int fx_rewrite_addr4(struct __sk_buff *skb, struct fx_ctx *ctx, int dst, const __u8 *to_addr)
{
	__u32 off = ctx->pkt.l3_off + (dst ? offsetof(struct iphdr, daddr) : offsetof(struct iphdr, saddr));
	__u8 *field = dst ? ctx->pkt.tuple.daddr : ctx->pkt.tuple.saddr;
	__be32 from, to;
	__u64 flags = 0;
	__u32 csum_off = fx_l4_csum_off(ctx, &flags);

	__builtin_memcpy(&from, field, 4);
	__builtin_memcpy(&to, to_addr, 4);
	if (csum_off && bpf_l4_csum_replace(skb, csum_off, from, to, BPF_F_PSEUDO_HDR | flags | sizeof(to)) < 0)
		return FX_DROP_CSUM_L4;
	if (bpf_l3_csum_replace(skb, ctx->pkt.l3_off + offsetof(struct iphdr, check), from, to, sizeof(to)) < 0)
		return FX_DROP_CSUM_L3;
	if (bpf_skb_store_bytes(skb, off, &to, sizeof(to), 0) < 0)
		return FX_DROP_WRITE_ERROR;
	__builtin_memcpy(field, &to, 4);
	return 0;
}

/* Rewrites the TCP/UDP source (dst = 0) or destination port; 0 or a drop reason. */
static __always_inline int fx_rewrite_port(struct __sk_buff *skb, struct fx_ctx *ctx, int dst, __u16 to_port)
{
	__u64 flags = 0;
	__u32 csum_off = fx_l4_csum_off(ctx, &flags);
	__u16 *field = dst ? &ctx->pkt.tuple.dport : &ctx->pkt.tuple.sport;
	__be16 from = bpf_htons(*field), to = bpf_htons(to_port);

	if (from == to)
		return 0;
	if (!csum_off) {
		/* no header to rewrite in a later fragment: the tuple follows the first one */
		if (ctx->pkt.frag == FX_FRAG_LATER) {
			*field = to_port;
			if (dst)
				ctx->ct_dport = to_port;
			else
				ctx->ct_sport = to_port;
		}
		return 0;
	}
	if (bpf_l4_csum_replace(skb, csum_off, from, to, flags | sizeof(to)) < 0)
		return FX_DROP_CSUM_L4;
	if (bpf_skb_store_bytes(skb, ctx->pkt.l4_off + (dst ? 2 : 0), &to, sizeof(to), 0) < 0)
		return FX_DROP_WRITE_ERROR;
	*field = to_port;
	if (dst)
		ctx->ct_dport = to_port;
	else
		ctx->ct_sport = to_port;
	return 0;
}

static __always_inline void fx_emit_nat(struct fx_ctx *ctx, const struct fx_tuple *orig, __u8 kind, __u32 service_id)
{
	struct fx_nat_event *ev;

	if (!fx_kind_enabled(FX_KIND_NAT))
		return;
	ev = fx_reserve(FX_KIND_NAT, sizeof(*ev));
	if (!ev)
		return;
	ev->orig = *orig;
	ev->xlated = ctx->pkt.tuple;
	ev->meta = ctx->meta;
	ev->service_id = service_id;
	ev->nat_kind = kind;
	__builtin_memset(ev->pad, 0, sizeof(ev->pad));
	fx_submit(ev, FX_KIND_NAT);
}

static __always_inline int fx_in_net4(const __u8 *addr, const __u8 *net, __u8 prefix)
{
	__u32 a, n, mask;

	if (prefix == 0)
		return 1;
	if (prefix > 32)
		prefix = 32;
	__builtin_memcpy(&a, addr, 4);
	__builtin_memcpy(&n, net, 4);
	mask = bpf_htonl(0xffffffffu << (32 - prefix));
	return (a & mask) == (n & mask);
}

/*
 * Trace and capture sampling at the node's device (see fx_sample in
 * datapath.bpf.c) by the translation's entry (its packet count in *seen): its first packets are captured
 * (fx_cfg.capture_first) and, with monitor aggregation, only a direction's
 * first packet and its SYN, FIN and RST packets are traced.
 */
static __always_inline void fx_nat_sample(struct fx_ctx *ctx, __u8 *seen)
{
	__u8 n = *seen;

	if (n < 255)
		*seen = n + 1;
	if (fx_cfg.capture_first != FX_CAPTURE_ALL && n >= fx_cfg.capture_first)
		ctx->capture_skip = 1;
	if (fx_cfg.trace_aggregate && n > 0 &&
	    !(ctx->pkt.tuple.proto == IPPROTO_TCP && (ctx->pkt.tuple.tcp_flags & 0x07)))
		ctx->trace_skip = 1;
}

/*
 * Egress on the node's device: masquerade a pod's connection leaving the
 * cluster. Returns TC_ACT_OK (translated or not ours) or a drop.
 */
static __always_inline int fx_masquerade(struct __sk_buff *skb, struct fx_ctx *ctx, int *translated)
{
	__u32 zero = 0;
	struct fx_nat_config *cfg = bpf_map_lookup_elem(&fx_nat_cfg, &zero);
	struct fx_tuple *orig = &ctx->orig;
	struct fx_ct_key *k = &ctx->key, *rk = &ctx->key2;
	struct fx_nat_entry *m, *out = &ctx->nat_out, *back = &ctx->nat_back;
	__u16 port = ctx->ct_sport;
	int created = 0, i, rc;

	*translated = 0;
	*orig = ctx->pkt.tuple;
	if (!cfg || !cfg->enabled || ctx->pkt.tuple.family != AF_INET || cfg->family != AF_INET || ctx->frag_missing)
		return TC_ACT_OK;
	if (!fx_in_net4(orig->saddr, cfg->pod_net, cfg->pod_prefix) ||
	    fx_in_net4(orig->daddr, cfg->pod_net, cfg->pod_prefix) ||
	    fx_in_net4(orig->daddr, cfg->svc_net, cfg->svc_prefix))
		return TC_ACT_OK;
	if (orig->proto != IPPROTO_TCP && orig->proto != IPPROTO_UDP && orig->proto != IPPROTO_ICMP)
		return TC_ACT_OK;
	ctx->meta.src_identity = fx_identity_of(orig->saddr, AF_INET, &ctx->meta.endpoint_id);
	ctx->meta.dst_identity = fx_identity_of(orig->daddr, AF_INET, NULL);
	fx_ct_key_fwd(k, ctx, FX_DIR_EGRESS);
	m = bpf_map_lookup_elem(&fx_snat, k);
	if (m) {
		port = m->port;
		fx_nat_sample(ctx, &m->seen);
	} else {
		/* the pod's own port if free on the node address, else a few hashed ones */
		__builtin_memset(rk, 0, sizeof(*rk));
		__builtin_memcpy(rk->saddr, orig->daddr, 16);
		__builtin_memcpy(rk->daddr, cfg->node_addr, 16);
		rk->sport = ctx->ct_dport;
		rk->proto = orig->proto;
		rk->dir = FX_DIR_INGRESS;
		rk->family = AF_INET;
		back->identity = ctx->meta.src_identity;
		back->created_ns = bpf_ktime_get_ns();
		__builtin_memcpy(back->addr, orig->saddr, 16);
		back->port = ctx->ct_sport;
		for (i = 0; i < FX_SNAT_PORT_TRIES; i++) {
			if (i > 0 && orig->proto != IPPROTO_ICMP)
				port = 32768 + (bpf_get_prandom_u32() % 28232);
			rk->dport = port;
			if (bpf_map_update_elem(&fx_snat, rk, back, BPF_NOEXIST) == 0) {
				created = 1;
				break;
			}
		}
		if (!created)
			return FX_DROP(ctx, FX_DROP_NAT_NO_MAPPING);
		__builtin_memcpy(out->addr, cfg->node_addr, 16);
		out->port = port;
		out->seen = 1;
		out->identity = back->identity;
		out->created_ns = back->created_ns;
		if (bpf_map_update_elem(&fx_snat, k, out, BPF_ANY) < 0) {
			bpf_map_delete_elem(&fx_snat, rk);
			return FX_DROP(ctx, FX_DROP_NAT_NO_MAPPING);
		}
	}
	rc = fx_rewrite_addr4(skb, ctx, 0, cfg->node_addr);
	if (!rc && orig->proto != IPPROTO_ICMP)
		rc = fx_rewrite_port(skb, ctx, 0, port);
	if (rc)
		return FX_DROP(ctx, rc);
	*translated = 1;
	if (created)
		fx_emit_nat(ctx, orig, FX_NAT_SNAT, 0);
	return TC_ACT_OK;
}

/*
 * Ingress on the node's device: return traffic of a masqueraded connection
 * goes back to the pod's address and port. Anything else passes untouched.
 */
static __always_inline int fx_rev_snat(struct __sk_buff *skb, struct fx_ctx *ctx, int *translated)
{
	__u32 zero = 0;
	struct fx_nat_config *cfg = bpf_map_lookup_elem(&fx_nat_cfg, &zero);
	struct fx_tuple *orig = &ctx->orig;
	struct fx_ct_key *k = &ctx->key;
	struct fx_nat_entry *m;
	int rc;

	*translated = 0;
	*orig = ctx->pkt.tuple;
	if (!cfg || !cfg->enabled || ctx->pkt.tuple.family != AF_INET || ctx->frag_missing ||
	    !fx_addr_eq(orig->daddr, cfg->node_addr, AF_INET))
		return TC_ACT_OK;
	if (fx_icmp_is_error(orig->proto, ctx->icmp_type))
		return TC_ACT_OK;
	fx_ct_key_fwd(k, ctx, FX_DIR_INGRESS);
	m = bpf_map_lookup_elem(&fx_snat, k);
	if (!m)
		return TC_ACT_OK;
	fx_nat_sample(ctx, &m->seen);
	ctx->meta.src_identity = fx_identity_of(orig->saddr, AF_INET, NULL);
	ctx->meta.dst_identity = m->identity;
	__builtin_memcpy(ctx->orig_addr, orig->daddr, 16);
	rc = fx_rewrite_addr4(skb, ctx, 1, m->addr);
	if (!rc && orig->proto != IPPROTO_ICMP)
		rc = fx_rewrite_port(skb, ctx, 1, m->port);
	if (rc)
		return FX_DROP(ctx, rc);
	fx_identity_of(ctx->pkt.tuple.daddr, AF_INET, &ctx->meta.endpoint_id);
	ctx->meta.flow_id = fx_flow_hash(&ctx->pkt.tuple, ctx->ct_sport, ctx->ct_dport);
	*translated = 1;
	if (!(m->flags & FX_NATF_REPLY_SEEN)) {
		m->flags |= FX_NATF_REPLY_SEEN;
		fx_emit_nat(ctx, orig, FX_NAT_REV_SNAT, 0);
	}
	return TC_ACT_OK;
}

#endif /* FX_NAT_H */
