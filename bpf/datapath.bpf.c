// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The datapath (Cilium's half), attached to the host side of each
 * workload's veth: tc ingress sees packets leaving the pod
 * (from-endpoint), tc egress sees packets entering it (to-endpoint).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "lib/events.h"
#include "lib/parse.h"
#include "lib/trace.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline int fx_handle(struct __sk_buff *skb, __u8 obs)
{
	struct fx_pkt pkt;

	if (fx_parse(skb, &pkt) < 0)
		return TC_ACT_OK;
	fx_emit_trace(skb, &pkt, obs, FX_CT_NONE);
	fx_emit_capture(skb, &pkt, obs, 0);
	return TC_ACT_OK;
}

SEC("tc")
int fx_from_endpoint(struct __sk_buff *skb)
{
	return fx_handle(skb, FX_OBS_FROM_ENDPOINT);
}

SEC("tc")
int fx_to_endpoint(struct __sk_buff *skb)
{
	return fx_handle(skb, FX_OBS_TO_ENDPOINT);
}
