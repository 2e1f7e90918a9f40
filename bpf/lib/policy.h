/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-endpoint L3/L4 policy (Cilium's policy map): entries keyed by
 * (endpoint, direction, remote identity, protocol, port), where identity 0,
 * protocol 0 and port 0 are wildcards. Deny entries win over allow entries;
 * among allows the most specific match names the match type. An endpoint no
 * policy selects in a direction allows everything in that direction; once
 * selected, what no entry allows is denied.
 */
#ifndef FX_POLICY_H
#define FX_POLICY_H

#include "ctx.h"
#include "drop.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FX_POLICY_MAX);
	__type(key, struct fx_policy_key);
	__type(value, struct fx_policy_value);
} fx_policy SEC(".maps");

struct fx_verdict {
	__u8 action;		/* enum fx_verdict_action */
	__u8 match;		/* enum fx_match_type */
	__u16 reason;		/* drop reason when denied */
};

static __always_inline struct fx_policy_value *
fx_policy_entry(__u16 ep, __u8 dir, __u32 identity, __u8 proto, __u16 dport)
{
	struct fx_policy_key k = {
		.identity = identity,
		.endpoint_id = ep,
		.dport = dport,
		.proto = proto,
		.dir = dir,
	};

	return bpf_map_lookup_elem(&fx_policy, &k);
}

/* The six lookups from most to least specific; i selects one. */
static __always_inline struct fx_policy_value *
fx_policy_probe(int i, __u16 ep, __u8 dir, __u32 id, __u8 proto, __u16 dport, __u8 *match)
{
	switch (i) {
	case 0:
		*match = FX_MATCH_L3_L4;
		return dport ? fx_policy_entry(ep, dir, id, proto, dport) : NULL;
	case 1:
		*match = FX_MATCH_L3_L4;
		return fx_policy_entry(ep, dir, id, proto, 0);
	case 2:
		*match = FX_MATCH_L3_ONLY;
		return fx_policy_entry(ep, dir, id, 0, 0);
	case 3:
		*match = FX_MATCH_L4_ONLY;
		return dport ? fx_policy_entry(ep, dir, 0, proto, dport) : NULL;
	case 4:
		*match = FX_MATCH_L4_ONLY;
		return fx_policy_entry(ep, dir, 0, proto, 0);
	default:
		*match = FX_MATCH_ALL;
		return fx_policy_entry(ep, dir, 0, 0, 0);
	}
}

/*
 * The verdict for the first packet of a connection. ep_flags say whether a
 * policy selects the endpoint in this direction, and whether it audits.
 * Returns whether the direction is enforced.
 */
static __always_inline int fx_policy_decide(struct fx_verdict *v, __u16 ep, __u8 ep_flags, __u8 dir,
					     __u32 remote, __u8 proto, __u16 dport)
{
	__u8 enforced = dir == FX_DIR_INGRESS ? ep_flags & FX_EP_INGRESS_ENFORCED :
						ep_flags & FX_EP_EGRESS_ENFORCED;
	struct fx_policy_value *pv;
	__u8 match = FX_MATCH_NONE;
	int i;

	v->action = FX_ACTION_ALLOW;
	v->match = FX_MATCH_ALL;
	v->reason = 0;
	if (!enforced)
		return 0;
#pragma unroll
	for (i = 0; i < 6; i++) {
		pv = fx_policy_probe(i, ep, dir, remote, proto, dport, &match);
		if (pv && (pv->flags & FX_POLICY_DENY)) {
			__sync_fetch_and_add(&pv->hits, 1);
			v->action = FX_ACTION_DENY;
			v->match = match;
			v->reason = FX_DROP_POLICY_DENY;
			goto audit;
		}
	}
#pragma unroll
	for (i = 0; i < 6; i++) {
		pv = fx_policy_probe(i, ep, dir, remote, proto, dport, &match);
		if (pv && (pv->flags & FX_POLICY_ALLOW)) {
			__sync_fetch_and_add(&pv->hits, 1);
			v->match = match;
			return 1;
		}
	}
	v->action = FX_ACTION_DENY;
	v->match = FX_MATCH_NONE;
	v->reason = FX_DROP_POLICY;
audit:
	if (ep_flags & FX_EP_AUDIT)
		v->action = FX_ACTION_AUDIT;
	return 1;
}

static __always_inline void fx_emit_verdict(struct fx_ctx *ctx, __u32 remote, const struct fx_verdict *v)
{
	struct fx_policy_event *ev;

	if (!fx_kind_enabled(FX_KIND_POLICY))
		return;
	ev = fx_reserve(FX_KIND_POLICY, sizeof(*ev));
	if (!ev)
		return;
	fx_event_tuple(&ev->tuple, ctx);
	ev->meta = ctx->meta;
	ev->remote_identity = remote;
	ev->action = v->action;
	ev->match = v->match;
	ev->pad = 0;
	fx_submit(ev, FX_KIND_POLICY);
}

/*
 * Decides, reports and enforces policy for a new connection: TC_ACT_OK or
 * a drop (Policy denied, or Policy denied by denylist). As Cilium does,
 * verdicts are reported only for directions a policy enforces.
 */
static __always_inline int fx_policy_enforce(struct fx_ctx *ctx, const struct fx_endpoint *ep, __u8 dir,
					     __u32 remote, struct fx_verdict *v)
{
	if (fx_policy_decide(v, ep->id, ep->flags, dir, remote, ctx->pkt.tuple.proto, ctx->pkt.tuple.dport))
		fx_emit_verdict(ctx, remote, v);
	if (v->action != FX_ACTION_DENY)
		return TC_ACT_OK;
	if (v->reason == FX_DROP_POLICY_DENY)
		return FX_DROP(ctx, FX_DROP_POLICY_DENY);
	return FX_DROP(ctx, FX_DROP_POLICY);
}

#endif /* FX_POLICY_H */
