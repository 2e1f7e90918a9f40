/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Trace and capture events: what the datapath saw, where. */
#ifndef FX_TRACE_H
#define FX_TRACE_H

static __always_inline void fx_fill_meta(struct fx_dp_meta *m, struct __sk_buff *skb, __u8 obs)
{
	m->src_identity = 0;
	m->dst_identity = 0;
	m->ifindex = skb->ifindex;
	m->flow_id = skb->hash;
	m->pkt_len = skb->len;
	m->endpoint_id = 0;
	m->obs_point = obs;
	m->direction = obs == FX_OBS_TO_ENDPOINT ? FX_DIR_INGRESS : FX_DIR_EGRESS;
}

static __always_inline void fx_emit_trace(struct __sk_buff *skb, struct fx_pkt *pkt, __u8 obs, __u8 ct)
{
	struct fx_trace_event *ev;

	if (!fx_kind_enabled(FX_KIND_TRACE))
		return;
	ev = fx_reserve(FX_KIND_TRACE, sizeof(*ev));
	if (!ev)
		return;
	ev->tuple = pkt->tuple;
	fx_fill_meta(&ev->meta, skb, obs);
	__builtin_memset(ev->orig_addr, 0, sizeof(ev->orig_addr));
	ev->ct_state = ct;
	__builtin_memset(ev->pad, 0, sizeof(ev->pad));
	fx_submit(ev, FX_KIND_TRACE);
}

static __always_inline void fx_emit_capture(struct __sk_buff *skb, struct fx_pkt *pkt, __u8 obs, __u16 reason)
{
	struct fx_capture_event *ev;
	__u32 len = fx_cfg.snaplen;

	if (!len || !fx_kind_enabled(FX_KIND_CAPTURE))
		return;
	if (len > skb->len)
		len = skb->len;
	if (len > FX_CAPTURE_MAX)
		len = FX_CAPTURE_MAX;
	ev = fx_reserve(FX_KIND_CAPTURE, sizeof(*ev));
	if (!ev)
		return;
	ev->tuple = pkt->tuple;
	fx_fill_meta(&ev->meta, skb, obs);
	ev->cap_len = 0;
	if (len) {
		/* 1..FX_CAPTURE_MAX in a form the verifier can bound */
		len = ((len - 1) & (FX_CAPTURE_MAX - 1)) + 1;
		if (bpf_skb_load_bytes(skb, 0, ev->data, len) == 0)
			ev->cap_len = len;
	}
	ev->drop_reason = reason;
	ev->ct_state = 0;
	__builtin_memset(ev->pad, 0, sizeof(ev->pad));
	fx_submit(ev, FX_KIND_CAPTURE);
}

#endif /* FX_TRACE_H */
