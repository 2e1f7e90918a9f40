/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Service load balancing (Cilium's lb4): a packet to ClusterIP:port is
 * translated to one of the service's backends. The backend chosen for a
 * flow is remembered (fx_lb_flows), so every packet of a connection goes to
 * the same backend; the conntrack entry carries the service address so that
 * replies are translated back (rev-DNAT) on their way into the client.
 */
#ifndef FX_LB_H
#define FX_LB_H

#include "ctx.h"
#include "drop.h"
#include "nat.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FX_SERVICES_MAX);
	__type(key, struct fx_service_key);
	__type(value, struct fx_service);
} fx_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FX_BACKENDS_MAX);
	__type(key, struct fx_backend_key);
	__type(value, struct fx_backend);
} fx_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FX_LB_FLOWS_MAX);
	__type(key, struct fx_ct_key);
	__type(value, struct fx_lb_flow);
} fx_lb_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FX_LB_FLOWS_MAX);
	__type(key, struct fx_affinity_key);
	__type(value, struct fx_affinity);
} fx_lb_affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FX_LB_FLOWS_MAX);
	__type(key, struct fx_ct_key);
	__type(value, struct fx_nodeport_entry);
} fx_nodeport_rev SEC(".maps");

/*
 * sessionAffinity ClientIP (Cilium's lb4_affinity): the slot a client was
 * given for the service if it used it within the timeout, else UINT32_MAX.
 */
static __always_inline __u32 fx_lb_affinity_slot(const struct fx_service *svc, const __u8 *client)
{
	struct fx_affinity_key k = { .service_id = svc->id };
	struct fx_affinity *a;

	__builtin_memcpy(k.client, client, 16);
	a = bpf_map_lookup_elem(&fx_lb_affinity, &k);
	if (!a || a->slot >= svc->count || bpf_ktime_get_ns() - a->last_ns > (__u64)svc->affinity_timeout * 1000000000ull)
		return 0xffffffff;
	a->last_ns = bpf_ktime_get_ns();
	return a->slot;
}

static __always_inline void fx_lb_affinity_keep(const struct fx_service *svc, const __u8 *client, __u32 slot)
{
	struct fx_affinity_key k = { .service_id = svc->id };
	struct fx_affinity a = { .slot = slot };

	__builtin_memcpy(k.client, client, 16);
	a.last_ns = bpf_ktime_get_ns();
	bpf_map_update_elem(&fx_lb_affinity, &k, &a, BPF_ANY);
}

struct fx_lb_result {
	__u8 vip[16];		/* the service address and port before translation */
	__u16 vport;
	__u16 pad;
	__u32 service_id;	/* 0 when the packet was not for a service */
};

/*
 * Translates a packet addressed to a service. Returns TC_ACT_OK (translated,
 * res->service_id set, or not a service) or a drop: Service backend not found
 * when the service has no backend.
 */
static __always_inline int fx_lb_translate(struct __sk_buff *skb, struct fx_ctx *ctx, struct fx_lb_result *res)
{
	struct fx_service_key *sk = &ctx->svc_key;
	struct fx_service *svc;
	struct fx_backend_key bk;
	struct fx_backend *be = NULL;
	struct fx_lb_flow *flow, *nf = &ctx->flow;
	struct fx_ct_key *fk = &ctx->key2;
	struct fx_tuple *orig = &ctx->orig;
	__u32 slot;
	int created = 0, rc;

	__builtin_memset(res, 0, sizeof(*res));
	*orig = ctx->pkt.tuple;
	if (orig->family != AF_INET || (orig->proto != IPPROTO_TCP && orig->proto != IPPROTO_UDP))
		return TC_ACT_OK;
	__builtin_memcpy(sk->addr, orig->daddr, 16);
	sk->port = orig->dport;
	sk->proto = orig->proto;
	sk->family = orig->family;
	svc = bpf_map_lookup_elem(&fx_services, sk);
	if (!svc)
		return TC_ACT_OK;
	res->service_id = svc->id;
	__builtin_memcpy(res->vip, orig->daddr, 16);
	res->vport = orig->dport;
	if (svc->count == 0)
		return FX_DROP(ctx, FX_DROP_NO_SERVICE);

	fx_ct_key_fwd(fk, ctx, FX_DIR_EGRESS);
	flow = bpf_map_lookup_elem(&fx_lb_flows, fk);
	if (flow && flow->service_id == svc->id && flow->slot < svc->count) {
		bk.service_id = svc->id;
		bk.slot = flow->slot;
		be = bpf_map_lookup_elem(&fx_backends, &bk);
		/* the backend in that slot changed: choose again */
		if (be && (be->port != flow->port || !fx_addr_eq(be->addr, flow->addr, AF_INET)))
			be = NULL;
	}
	if (!be) {
		slot = svc->affinity_timeout ? fx_lb_affinity_slot(svc, orig->saddr) : 0xffffffff;
		if (slot == 0xffffffff)
			slot = fx_flow_hash(orig, orig->sport, orig->dport) % svc->count;
		if (svc->affinity_timeout)
			fx_lb_affinity_keep(svc, orig->saddr, slot);
		bk.service_id = svc->id;
		bk.slot = slot;
		be = bpf_map_lookup_elem(&fx_backends, &bk);
		if (!be)
			return FX_DROP(ctx, FX_DROP_NO_SERVICE);
		__builtin_memcpy(nf->addr, be->addr, 16);
		nf->port = be->port;
		nf->slot = slot;
		nf->service_id = svc->id;
		bpf_map_update_elem(&fx_lb_flows, fk, nf, BPF_ANY);
		created = 1;
	}
	rc = fx_rewrite_addr4(skb, ctx, 1, be->addr);
	if (!rc)
		rc = fx_rewrite_port(skb, ctx, 1, be->port);
	if (rc)
		return FX_DROP(ctx, rc);
	if (created)
		fx_emit_nat(ctx, orig, FX_NAT_DNAT, svc->id);
	return TC_ACT_OK;
}

/* Replies of a service connection: the backend's address and port become the service's again. */
static __always_inline int fx_lb_rev_translate(struct __sk_buff *skb, struct fx_ctx *ctx, struct fx_ct_entry *e)
{
	int rc;

	ctx->orig = ctx->pkt.tuple;
	__builtin_memcpy(ctx->orig_addr, ctx->orig.saddr, 16);
	rc = fx_rewrite_addr4(skb, ctx, 0, e->nat_addr);
	if (!rc)
		rc = fx_rewrite_port(skb, ctx, 0, e->nat_port);
	if (rc)
		return FX_DROP(ctx, rc);
	if (!(e->flags & FX_CTF_REPLY_SEEN))
		fx_emit_nat(ctx, &ctx->orig, FX_NAT_REV_DNAT, e->service_id);
	return TC_ACT_OK;
}

/*
 * The node's device, ingress: a connection from outside to a service's node
 * port, load balancer address or external IP goes to a backend; the reply
 * tuple is remembered so that the backend's answers leave with the frontend
 * as their source (fx_nodeport_rev_translate).
 */
static __always_inline int fx_nodeport_translate(struct __sk_buff *skb, struct fx_ctx *ctx, int *translated)
{
	struct fx_lb_result lb;
	struct fx_ct_key rk = {};
	struct fx_nodeport_entry ne = {};
	int rc;

	*translated = 0;
	if (ctx->frag_missing)
		return TC_ACT_OK;
	ctx->meta.src_identity = fx_identity_of(ctx->pkt.tuple.saddr, ctx->pkt.tuple.family, NULL);
	rc = fx_lb_translate(skb, ctx, &lb);
	if (rc != TC_ACT_OK) {
		ctx->meta.dst_identity = fx_identity_of(ctx->pkt.tuple.daddr, ctx->pkt.tuple.family, NULL);
		return rc;
	}
	if (!lb.service_id)
		return TC_ACT_OK;
	ctx->meta.dst_identity = fx_identity_of(ctx->pkt.tuple.daddr, ctx->pkt.tuple.family, &ctx->meta.endpoint_id);
	ctx->meta.flow_id = fx_flow_hash(&ctx->pkt.tuple, ctx->ct_sport, ctx->ct_dport);
	fx_ct_key_rev(&rk, ctx, FX_DIR_EGRESS);
	__builtin_memcpy(ne.addr, lb.vip, 16);
	ne.port = lb.vport;
	ne.service_id = lb.service_id;
	if (!bpf_map_lookup_elem(&fx_nodeport_rev, &rk))
		bpf_map_update_elem(&fx_nodeport_rev, &rk, &ne, BPF_ANY);
	*translated = 1;
	return TC_ACT_OK;
}

/* The node's device, egress: a backend's answer to a connection fx_nodeport_translate took in. */
static __always_inline int fx_nodeport_rev_translate(struct __sk_buff *skb, struct fx_ctx *ctx, int *translated)
{
	struct fx_ct_key k = {};
	struct fx_nodeport_entry *e;
	int rc;

	*translated = 0;
	if (ctx->pkt.tuple.family != AF_INET || ctx->frag_missing)
		return TC_ACT_OK;
	fx_ct_key_fwd(&k, ctx, FX_DIR_EGRESS);
	e = bpf_map_lookup_elem(&fx_nodeport_rev, &k);
	if (!e)
		return TC_ACT_OK;
	ctx->orig = ctx->pkt.tuple;
	ctx->meta.src_identity = fx_identity_of(ctx->pkt.tuple.saddr, AF_INET, &ctx->meta.endpoint_id);
	ctx->meta.dst_identity = fx_identity_of(ctx->pkt.tuple.daddr, AF_INET, NULL);
	rc = fx_rewrite_addr4(skb, ctx, 0, e->addr);
	if (!rc)
		rc = fx_rewrite_port(skb, ctx, 0, e->port);
	if (rc)
		return FX_DROP(ctx, rc);
	*translated = 1;
	if (!(e->flags & FX_NATF_REPLY_SEEN)) {
		e->flags |= FX_NATF_REPLY_SEEN;
		fx_emit_nat(ctx, &ctx->orig, FX_NAT_REV_DNAT, e->service_id);
	}
	return TC_ACT_OK;
}

#endif /* FX_LB_H */
