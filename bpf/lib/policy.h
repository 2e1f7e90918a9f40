/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-endpoint L3/L4 policy (Cilium's policy map): an LPM trie keyed by
 * (endpoint, direction, remote identity) and a prefix of (protocol, port),
 * where identity 0 is any identity. Two lookups decide: one for the remote
 * identity and one for any identity, each returning the most specific entry
 * that covers the packet's protocol and port. A deny from either wins; else an
 * allow for the identity (L3-only, L3-L4) before one for any identity
 * (L4-only, all). User space folds every deny into the more specific allows it
 * covers, so that a longest-prefix match never hides a deny. An endpoint no
 * policy selects in a direction allows everything in that direction; once
 * selected, what no entry allows is denied. Each entry carries the id of the
 * policy rules it was compiled from, and the verdict (and a policy drop)
 * reports it, so that a verdict names the rule that decided it.
 */
#ifndef FX_POLICY_H
#define FX_POLICY_H

#include "ctx.h"
#include "drop.h"

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, FX_POLICY_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fx_policy_key);
	__type(value, struct fx_policy_value);
} fx_policy SEC(".maps");

struct fx_verdict {
	__u8 action;		/* enum fx_verdict_action */
	__u8 match;		/* enum fx_match_type */
	__u16 reason;		/* drop reason when denied */
	__u32 rule_id;		/* the rules of the entry that decided; 0: none (default deny) */
};

static __always_inline struct fx_policy_value *
fx_policy_entry(__u16 ep, __u8 dir, __u32 identity, __u8 proto, __u16 dport)
{
	struct fx_policy_key k = {
		.prefixlen = FX_POLICY_PREFIX_FULL,
		.endpoint_id = ep,
		.dir = dir,
		.identity = identity,
		.proto = proto,
		.dport = bpf_htons(dport),
	};

	return bpf_map_lookup_elem(&fx_policy, &k);
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
	struct fx_policy_value *l3, *any, *pv;

	v->action = FX_ACTION_ALLOW;
	v->match = FX_MATCH_ALL;
	v->reason = 0;
	v->rule_id = 0;
	if (!enforced)
		return 0;
	l3 = remote ? fx_policy_entry(ep, dir, remote, proto, dport) : NULL;
	any = fx_policy_entry(ep, dir, 0, proto, dport);
	pv = l3 && (l3->flags & FX_POLICY_DENY) ? l3 : any && (any->flags & FX_POLICY_DENY) ? any : NULL;
	if (pv) {
		__sync_fetch_and_add(&pv->hits, 1);
		v->action = FX_ACTION_DENY;
		v->match = pv == l3 ? (pv->proto_given ? FX_MATCH_L3_L4 : FX_MATCH_L3_ONLY) :
				      (pv->proto_given ? FX_MATCH_L4_ONLY : FX_MATCH_ALL);
		v->reason = FX_DROP_POLICY_DENY;
		v->rule_id = pv->rule_id;
		goto audit;
	}
	pv = l3 && (l3->flags & FX_POLICY_ALLOW) ? l3 : any && (any->flags & FX_POLICY_ALLOW) ? any : NULL;
	if (pv) {
		__sync_fetch_and_add(&pv->hits, 1);
		v->match = pv == l3 ? (pv->proto_given ? FX_MATCH_L3_L4 : FX_MATCH_L3_ONLY) :
				      (pv->proto_given ? FX_MATCH_L4_ONLY : FX_MATCH_ALL);
		v->rule_id = pv->rule_id;
		return 1;
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
	ev->rule_id = v->rule_id;
	ev->pad2 = 0;
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
	/* as Cilium's policy keys ICMP: the ICMP type stands in the port */
	__u16 dport = ctx->pkt.tuple.proto == IPPROTO_ICMP || ctx->pkt.tuple.proto == IPPROTO_ICMPV6 ?
		      ctx->icmp_type : ctx->pkt.tuple.dport;

	if (fx_policy_decide(v, ep->id, ep->flags, dir, remote, ctx->pkt.tuple.proto, dport))
		fx_emit_verdict(ctx, remote, v);
	if (v->action != FX_ACTION_DENY)
		return TC_ACT_OK;
	ctx->drop_rule = v->rule_id;
	if (v->reason == FX_DROP_POLICY_DENY)
		return FX_DROP(ctx, FX_DROP_POLICY_DENY);
	return FX_DROP(ctx, FX_DROP_POLICY);
}

#endif /* FX_POLICY_H */
