/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Trace and capture events: what the datapath saw, where. */
#ifndef FX_TRACE_H
#define FX_TRACE_H

#include "ctx.h"
#include "events.h"

static __always_inline void fx_emit_trace(struct fx_ctx *ctx)
{
	struct fx_trace_event *ev;

	if (!fx_kind_enabled(FX_KIND_TRACE))
		return;
	ev = fx_reserve(FX_KIND_TRACE, sizeof(*ev));
	if (!ev)
		return;
	fx_event_tuple(&ev->tuple, ctx);
	ev->meta = ctx->meta;
	__builtin_memcpy(ev->orig_addr, ctx->orig_addr, sizeof(ev->orig_addr));
	ev->ct_state = ctx->ct_state;
	__builtin_memset(ev->pad, 0, sizeof(ev->pad));
	fx_submit(ev, FX_KIND_TRACE);
}

/* The first fx_cfg.snaplen bytes of the packet as it is now (after any rewrite). */
static __always_inline void fx_emit_capture(struct __sk_buff *skb, struct fx_ctx *ctx)
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
	fx_event_tuple(&ev->tuple, ctx);
	ev->meta = ctx->meta;
	ev->cap_len = 0;
	if (len) {
		/* 1..FX_CAPTURE_MAX in a form the verifier can bound */
		len = ((len - 1) & (FX_CAPTURE_MAX - 1)) + 1;
		if (bpf_skb_load_bytes(skb, 0, ev->data, len) == 0)
			ev->cap_len = len;
	}
	ev->drop_reason = ctx->drop_reason;
	ev->ct_state = ctx->ct_state;
	__builtin_memset(ev->pad, 0, sizeof(ev->pad));
	fx_submit(ev, FX_KIND_CAPTURE);
}

#endif /* FX_TRACE_H */
