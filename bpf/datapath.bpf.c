// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The datapath (Cilium's half), attached to the host side of each
 * workload's veth: tc ingress sees packets leaving the pod
 * (from-endpoint), tc egress sees packets entering it (to-endpoint). The
 * node's network device gets from-network (reverse SNAT) and to-network
 * (SNAT) programs.
 *
 * from-endpoint: service DNAT, conntrack, egress policy on new connections.
 * to-endpoint:   conntrack (replies: reverse DNAT), ingress policy on new ones.
 *
 * The node itself is the host endpoint (Cilium's host firewall, bpf_host.c)
 * while a host policy selects it: connections to the node's address and from
 * it are policed by its policy too (see fx_host_endpoint).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "lib/events.h"
#include "lib/parse.h"
#include "lib/ctx.h"
#include "lib/drop.h"
#include "lib/trace.h"
#include "lib/identity.h"
#include "lib/policy.h"
#include "lib/conntrack.h"
#include "lib/nat.h"
#include "lib/lb.h"
#include "lib/dns.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Anchors the map ABI in the BTF for the control plane's mirror check. */
struct fx_maps_anchor {
	enum fx_drop_reason drop;
	enum fx_reserved_identity id;
	enum fx_endpoint_flags ep;
	enum fx_policy_flags pol;
	enum fx_policy_prefix polp;
	enum fx_ct_flags ct;
	enum fx_nat_flags nat;
	enum fx_map_limits limits;
	struct fx_ipcache_key ipk;
	struct fx_ipcache_value ipv;
	struct fx_endpoint e;
	struct fx_policy_key pk;
	struct fx_policy_value pv;
	struct fx_ct_key ck;
	struct fx_ct_entry ce;
	struct fx_ct_stats cs;
	struct fx_ct_closed_key cck;
	struct fx_service_key sk;
	struct fx_service s;
	struct fx_backend_key bk;
	struct fx_backend b;
	struct fx_lb_flow lf;
	struct fx_affinity_key ak;
	struct fx_affinity af;
	struct fx_nodeport_entry npe;
	struct fx_nat_entry ne;
	struct fx_nat_config nc;
	struct fx_dns_answer dns;
};
const volatile struct fx_maps_anchor fx_maps_anchor = {};

static __always_inline int fx_finish(struct __sk_buff *skb, struct fx_ctx *ctx, int verdict)
{
	if (verdict == TC_ACT_SHOT) {
		fx_emit_drop(ctx);
		fx_emit_capture(skb, ctx);	/* a dropped packet is always captured */
		return TC_ACT_SHOT;
	}
	if (!ctx->trace_skip)
		fx_emit_trace(ctx);
	if (!ctx->capture_skip)
		fx_emit_capture(skb, ctx);
	return TC_ACT_OK;
}

/*
 * Which packets of a tracked connection make trace and capture events.
 *
 * Monitor aggregation (fx_cfg.trace_aggregate, Cilium's "medium"): a packet
 * makes a trace event only when it is the first reply, when its direction
 * shows a TCP flag (FIN, SYN, RST, ACK) not traced before, or ~5 s after the
 * last trace of the connection.
 *
 * Capture (fx_cfg.capture_first): the first N packets of the connection at
 * this endpoint (both directions), unless every packet is captured.
 *
 * A connection's first packet (no entry yet) is always traced and captured
 * (unless capture is of drops only); drops, verdicts and NAT events are never
 * sampled.
 */
static __always_inline void fx_sample(struct fx_ctx *ctx, struct fx_ct_entry *e)
{
	__u8 tcp = ctx->pkt.tuple.tcp_flags, flags = 0, shift, tick;
	__u32 first = fx_cfg.capture_first;

	if (!e) {
		ctx->capture_skip = first == 0;
		return;
	}
	if (first != FX_CAPTURE_ALL) {
		if (e->captured < first) {
			e->captured++;
		} else {
			ctx->capture_skip = 1;
		}
	}
	if (!fx_cfg.trace_aggregate)
		return;
	if (ctx->pkt.tuple.proto == IPPROTO_TCP)
		flags = (tcp & 0x07) | ((tcp & 0x10) ? 0x08 : 0);
	shift = ctx->ct_state == FX_CT_REPLY ? 4 : 0;
	tick = (__u8)(fx_ct_now() >> 30);
	if ((ctx->ct_state == FX_CT_REPLY && !(e->flags & FX_CTF_REPLY_SEEN)) ||
	    (flags & ~(e->trace_flags >> shift) & 0x0f) || (__u8)(tick - e->trace_tick) >= 5) {
		e->trace_flags |= flags << shift;
		e->trace_tick = tick;
		return;
	}
	ctx->trace_skip = 1;
}

/*
 * The host endpoint (Cilium's host firewall): the node, under key
 * FX_HOST_EP_IFINDEX of fx_endpoints, present while a host policy (a
 * CiliumClusterwideNetworkPolicy with a nodeSelector) selects the node. Its
 * address is the node's; its identity is reserved:host.
 */
static __always_inline struct fx_endpoint *fx_host_endpoint(void)
{
	return fx_endpoint_of(FX_HOST_EP_IFINDEX);
}

/*
 * The host endpoint's policy for a new connection between a pod and the node,
 * seen at the pod's veth: dir is the host's (ingress: pod -> node, as
 * bpf_lxc hands such a packet to the host's ingress policy; egress: node ->
 * pod, as bpf_host's from-host enforces the host's egress policy). Its verdict
 * and drop are the host endpoint's (its id, its direction); otherwise ctx's
 * endpoint is left as it was.
 */
static __always_inline int fx_host_enforce(struct fx_ctx *ctx, __u8 dir, __u32 remote)
{
	struct fx_endpoint *host = fx_host_endpoint();
	__u16 ep_id = ctx->meta.endpoint_id;
	__u8 ep_dir = ctx->meta.direction;
	struct fx_verdict v;
	int rc;

	if (!host || host->family != ctx->pkt.tuple.family)
		return TC_ACT_OK;
	ctx->meta.endpoint_id = host->id;
	ctx->meta.direction = dir;
	rc = fx_policy_enforce(ctx, host, dir, remote, &v);
	if (rc != TC_ACT_OK)
		return rc;
	ctx->meta.endpoint_id = ep_id;
	ctx->meta.direction = ep_dir;
	return TC_ACT_OK;
}

/*
 * The first packet of a connection at an endpoint: enforce the endpoint's
 * policy in this direction against the remote identity, then track the
 * connection (with its service translation to undo on replies, if any). When
 * the other end is the node (to_host), the host endpoint's policy decides too:
 * before the pod's ingress policy for node -> pod, after the pod's egress
 * policy for pod -> node.
 */
static __always_inline int fx_admit_new(struct __sk_buff *skb, struct fx_ctx *ctx, struct fx_endpoint *ep,
					__u8 dir, __u32 remote, const struct fx_lb_result *lb, __u8 to_host)
{
	struct fx_ct_entry *ne = &ctx->entry;
	struct fx_verdict v;
	int rc;

	if (to_host && dir == FX_DIR_INGRESS) {
		rc = fx_host_enforce(ctx, FX_DIR_EGRESS, ep->identity);
		if (rc != TC_ACT_OK)
			return fx_finish(skb, ctx, rc);
	}
	rc = fx_policy_enforce(ctx, ep, dir, remote, &v);
	if (rc != TC_ACT_OK)
		return fx_finish(skb, ctx, rc);
	if (to_host && dir == FX_DIR_EGRESS) {
		rc = fx_host_enforce(ctx, FX_DIR_INGRESS, ep->identity);
		if (rc != TC_ACT_OK)
			return fx_finish(skb, ctx, rc);
	}
	ne->endpoint_id = ep->id;
	ne->remote_identity = remote;
	ne->match = v.match;
	if (v.action == FX_ACTION_AUDIT)
		ne->flags |= FX_CTF_AUDITED;
	if (lb && lb->service_id) {
		ne->flags |= FX_CTF_REV_DNAT;
		__builtin_memcpy(ne->nat_addr, lb->vip, 16);
		ne->nat_port = lb->vport;
		ne->service_id = lb->service_id;
	}
	if (fx_ct_create(ctx, &ctx->key, ne) < 0)
		return fx_finish(skb, ctx, FX_DROP(ctx, FX_DROP_CT_CREATE_FAILED));
	return fx_finish(skb, ctx, TC_ACT_OK);
}

/*
 * The identity of the other end of a packet at an endpoint: for a tracked
 * connection, the one resolved when it was admitted (and its policy decided),
 * which spares an LPM lookup per packet; for a new one, the ipcache's.
 */
static __always_inline __u32 fx_remote_identity(struct fx_ctx *ctx, const struct fx_ct_entry *e, const __u8 *addr)
{
	if (e)
		return e->remote_identity;
	return fx_identity_of(addr, ctx->pkt.tuple.family, NULL);
}

/* Packets leaving the pod (tc ingress on its host-side veth). */
static __always_inline int fx_from_endpoint_handle(struct __sk_buff *skb)
{
	struct fx_ctx *ctx = fx_ctx_init(skb, FX_OBS_FROM_ENDPOINT);
	struct fx_endpoint *ep;
	struct fx_lb_result lb;
	struct fx_ct_entry *e;
	int rc;

	if (!ctx)
		return TC_ACT_OK;
	ep = fx_endpoint_of(skb->ifindex);
	if (!ep || ep->family != ctx->pkt.tuple.family || fx_is_nd(ctx))
		return fx_finish(skb, ctx, TC_ACT_OK);
	ctx->meta.endpoint_id = ep->id;
	ctx->meta.src_identity = ep->identity;
	if (!fx_addr_eq(ctx->pkt.tuple.saddr, ep->addr, ep->family))
		return fx_finish(skb, ctx, FX_DROP(ctx, FX_DROP_INVALID_SIP));
	if (ctx->frag_missing)
		return fx_finish(skb, ctx, FX_DROP(ctx, FX_DROP_FRAG_NOT_FOUND));

	rc = fx_lb_translate(skb, ctx, &lb);
	if (rc != TC_ACT_OK) {
		ctx->meta.dst_identity = fx_identity_of(ctx->pkt.tuple.daddr, ctx->pkt.tuple.family, NULL);
		return fx_finish(skb, ctx, rc);
	}

	ctx->ct_state = fx_ct_lookup(skb, ctx, FX_DIR_EGRESS, &ctx->key, &e);
	ctx->meta.flow_id = fx_flow_hash(&ctx->pkt.tuple, ctx->ct_sport, ctx->ct_dport);
	ctx->meta.dst_identity = fx_remote_identity(ctx, e, ctx->pkt.tuple.daddr);
	fx_sample(ctx, e);
	if (ctx->ct_state == FX_CT_REPLY && e)
		e->flags |= FX_CTF_REPLY_SEEN;
	if (ctx->ct_state != FX_CT_NEW)
		return fx_finish(skb, ctx, TC_ACT_OK);

	return fx_admit_new(skb, ctx, ep, FX_DIR_EGRESS, ctx->meta.dst_identity, &lb,
			    ctx->meta.dst_identity == FX_ID_HOST);
}

/* Packets entering the pod (tc egress on its host-side veth). */
static __always_inline int fx_to_endpoint_handle(struct __sk_buff *skb)
{
	struct fx_ctx *ctx = fx_ctx_init(skb, FX_OBS_TO_ENDPOINT);
	struct fx_endpoint *ep;
	struct fx_ct_entry *e;
	int rc;

	if (!ctx)
		return TC_ACT_OK;
	ep = fx_endpoint_of(skb->ifindex);
	if (!ep || ep->family != ctx->pkt.tuple.family || fx_is_nd(ctx))
		return fx_finish(skb, ctx, TC_ACT_OK);
	ctx->meta.endpoint_id = ep->id;
	ctx->meta.dst_identity = ep->identity;
	if (ctx->frag_missing) {
		ctx->meta.src_identity = fx_identity_of(ctx->pkt.tuple.saddr, ctx->pkt.tuple.family, NULL);
		return fx_finish(skb, ctx, FX_DROP(ctx, FX_DROP_FRAG_NOT_FOUND));
	}

	ctx->ct_state = fx_ct_lookup(skb, ctx, FX_DIR_INGRESS, &ctx->key, &e);
	ctx->meta.src_identity = fx_remote_identity(ctx, e, ctx->pkt.tuple.saddr);
	fx_sample(ctx, e);
	if (ctx->ct_state == FX_CT_REPLY && e) {
		if (e->flags & FX_CTF_REV_DNAT) {
			rc = fx_lb_rev_translate(skb, ctx, e);
			if (rc != TC_ACT_OK)
				return fx_finish(skb, ctx, rc);
		}
		e->flags |= FX_CTF_REPLY_SEEN;
		fx_dns_copy(skb, ctx, ep->id);
	}
	if (ctx->ct_state != FX_CT_NEW)
		return fx_finish(skb, ctx, TC_ACT_OK);

	return fx_admit_new(skb, ctx, ep, FX_DIR_INGRESS, ctx->meta.src_identity, NULL,
			    ctx->meta.src_identity == FX_ID_HOST);
}

SEC("tc")
int fx_from_endpoint(struct __sk_buff *skb)
{
	return fx_from_endpoint_handle(skb);
}

SEC("tc")
int fx_to_endpoint(struct __sk_buff *skb)
{
	return fx_to_endpoint_handle(skb);
}

/*
 * A connection of the node's own on the node's device (from the world to the
 * node's address, or from it to the world; not one translated above), while
 * the host endpoint exists: tracked as the host endpoint's, and its first
 * packet policed by the host's policy in dir, as bpf_host's host firewall
 * does on the native device. Replies (and ICMP errors about it) pass.
 */
static __always_inline int fx_host_network(struct __sk_buff *skb, struct fx_ctx *ctx, struct fx_endpoint *host, __u8 dir)
{
	struct fx_ct_entry *e;
	__u32 remote;

	ctx->meta.endpoint_id = host->id;
	ctx->ct_state = fx_ct_lookup(skb, ctx, dir, &ctx->key, &e);
	if (dir == FX_DIR_INGRESS) {
		remote = fx_remote_identity(ctx, e, ctx->pkt.tuple.saddr);
		ctx->meta.src_identity = remote;
		ctx->meta.dst_identity = host->identity;
	} else {
		remote = fx_remote_identity(ctx, e, ctx->pkt.tuple.daddr);
		ctx->meta.src_identity = host->identity;
		ctx->meta.dst_identity = remote;
	}
	fx_sample(ctx, e);
	if (ctx->ct_state == FX_CT_REPLY && e)
		e->flags |= FX_CTF_REPLY_SEEN;
	if (ctx->ct_state != FX_CT_NEW)
		return fx_finish(skb, ctx, TC_ACT_OK);
	return fx_admit_new(skb, ctx, host, dir, remote, NULL, 0);
}

/*
 * The node's device, egress: replies of connections that came in through a
 * NodePort, a load balancer address or an external IP get their frontend
 * back; pod connections leaving the cluster are masqueraded; the node's own
 * connections meet the host endpoint's egress policy.
 */
SEC("tc")
int fx_to_network(struct __sk_buff *skb)
{
	struct fx_ctx *ctx = fx_ctx_init(skb, FX_OBS_TO_NETWORK);
	struct fx_endpoint *host;
	int translated = 0, rc;

	if (!ctx)
		return TC_ACT_OK;
	rc = fx_nodeport_rev_translate(skb, ctx, &translated);
	if (rc != TC_ACT_OK || translated)
		return fx_finish(skb, ctx, rc);
	rc = fx_masquerade(skb, ctx, &translated);
	if (rc != TC_ACT_OK || translated)
		return fx_finish(skb, ctx, rc);
	host = fx_host_endpoint();
	if (host && host->family == ctx->pkt.tuple.family && !ctx->frag_missing &&
	    fx_addr_eq(ctx->pkt.tuple.saddr, host->addr, host->family))
		return fx_host_network(skb, ctx, host, FX_DIR_EGRESS);
	return TC_ACT_OK;
}

/*
 * The node's device, ingress: return traffic of masqueraded connections, and
 * connections from outside to a NodePort, a load balancer address or an
 * external IP (translated to a backend, as Cilium's nodeport path does);
 * other connections to the node's address meet the host endpoint's ingress
 * policy.
 */
SEC("tc")
int fx_from_network(struct __sk_buff *skb)
{
	struct fx_ctx *ctx = fx_ctx_init(skb, FX_OBS_FROM_NETWORK);
	struct fx_endpoint *host;
	int translated = 0, rc;

	if (!ctx)
		return TC_ACT_OK;
	rc = fx_rev_snat(skb, ctx, &translated);
	if (rc != TC_ACT_OK || translated)
		return fx_finish(skb, ctx, rc);
	rc = fx_nodeport_translate(skb, ctx, &translated);
	if (rc != TC_ACT_OK || translated)
		return fx_finish(skb, ctx, rc);
	host = fx_host_endpoint();
	if (host && host->family == ctx->pkt.tuple.family && !ctx->frag_missing &&
	    fx_addr_eq(ctx->pkt.tuple.daddr, host->addr, host->family))
		return fx_host_network(skb, ctx, host, FX_DIR_INGRESS);
	return TC_ACT_OK;
}
