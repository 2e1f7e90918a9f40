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
		slot = fx_flow_hash(orig, orig->sport, orig->dport) % svc->count;
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

#endif /* FX_LB_H */
