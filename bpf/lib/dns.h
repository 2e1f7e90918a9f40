/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * DNS answers to endpoints, for toFQDNs: what Cilium's DNS proxy sees of a
 * lookup, the control plane reads from here. A UDP or TCP reply (with data)
 * from port 53 of a tracked connection, on its way into a pod, is copied (its first
 * FX_DNS_MAX payload bytes) to the fx_dns ring buffer when fx_dns_cfg[0] is
 * non-zero (user space sets it while a policy has toFQDNs). The packet itself
 * is not touched. A full ring counts in fx_dns_cfg[1].
 */
#ifndef FX_DNS_H
#define FX_DNS_H

#include "ctx.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 << 10);
} fx_dns SEC(".maps");

/* [0]: copy answers when non-zero; [1]: answers lost to a full ring. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} fx_dns_cfg SEC(".maps");

struct fx_dns_record {
	struct fx_dns_answer hdr;
	__u8 payload[FX_DNS_MAX];
};

static __always_inline void fx_dns_copy(struct __sk_buff *skb, const struct fx_ctx *ctx, __u16 endpoint_id)
{
	__u32 zero = 0, one = 1, *on, *lost;
	struct fx_dns_record *r;
	__u32 off, len;
	__u8 doff;

	if ((ctx->pkt.tuple.proto != IPPROTO_UDP && ctx->pkt.tuple.proto != IPPROTO_TCP) ||
	    ctx->pkt.tuple.sport != 53 || ctx->pkt.frag == FX_FRAG_LATER)
		return;
	on = bpf_map_lookup_elem(&fx_dns_cfg, &zero);
	if (!on || !*on)
		return;
	off = ctx->pkt.l4_off + 8;
	if (ctx->pkt.tuple.proto == IPPROTO_TCP) {
		/* the segment's data, after the TCP header (its data offset, in 32-bit words) */
		if (bpf_skb_load_bytes(skb, ctx->pkt.l4_off + 12, &doff, 1) < 0)
			return;
		off = ctx->pkt.l4_off + (doff >> 4) * 4;
	}
	if (skb->len <= off)
		return;
	len = skb->len - off;
	if (len > FX_DNS_MAX)
		len = FX_DNS_MAX;
	r = bpf_ringbuf_reserve(&fx_dns, sizeof(*r), 0);
	if (!r) {
		lost = bpf_map_lookup_elem(&fx_dns_cfg, &one);
		if (lost)
			__sync_fetch_and_add(lost, 1);
		return;
	}
	r->hdr.endpoint_id = endpoint_id;
	r->hdr.family = ctx->pkt.tuple.family;
	r->hdr.proto = ctx->pkt.tuple.proto;
	r->hdr.sport = ctx->pkt.tuple.sport;
	r->hdr.len = 0;
	__builtin_memcpy(r->hdr.saddr, ctx->pkt.tuple.saddr, 16);
	__builtin_memcpy(r->hdr.daddr, ctx->pkt.tuple.daddr, 16);
	/* 1..FX_DNS_MAX in a form the verifier can bound (FX_DNS_MAX is a power of two) */
	asm volatile("" : "+r"(len));
	len = ((len - 1) & (FX_DNS_MAX - 1)) + 1;
	if (bpf_skb_load_bytes(skb, off, r->payload, len) == 0)
		r->hdr.len = len;
	bpf_ringbuf_submit(r, 0);
}

#endif /* FX_DNS_H */
