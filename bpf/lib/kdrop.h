/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Kernel packet drops from skb:kfree_skb: the kernel's own drop reason (enum
 * skb_drop_reason of the running kernel, named in user space from its BTF),
 * the call site, and what the packet was when the headers are there to read
 * (skb->head + network/transport header offsets). Consumed packets (reason
 * SKB_CONSUMED, or not dropped) are not drops and are skipped.
 */
#ifndef FX_KDROP_H
#define FX_KDROP_H

#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>

#define FX_HDR_UNSET 0xffff

/* Reads the IP and transport headers of an skb into t; best effort. */
static __always_inline void fx_skb_tuple(struct sk_buff *skb, __u16 l3_proto, struct fx_tuple *t)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	__u32 l4;
	__u8 proto;
	__u16 ports[2];

	if (!head || nh == FX_HDR_UNSET)
		return;
	if (l3_proto == ETH_P_IP) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh) < 0 || ip.version != 4)
			return;
		__builtin_memcpy(t->saddr, &ip.saddr, 4);
		__builtin_memcpy(t->daddr, &ip.daddr, 4);
		t->family = AF_INET;
		proto = ip.protocol;
		l4 = th != FX_HDR_UNSET && th > nh ? th : nh + ip.ihl * 4;
		if (ip.frag_off & bpf_htons(0x1fff))
			proto = 0xff;	/* a later fragment: no transport header */
	} else if (l3_proto == ETH_P_IPV6) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh) < 0 || ip6.version != 6)
			return;
		__builtin_memcpy(t->saddr, &ip6.saddr, 16);
		__builtin_memcpy(t->daddr, &ip6.daddr, 16);
		t->family = AF_INET6;
		proto = ip6.nexthdr;
		l4 = th != FX_HDR_UNSET && th > nh ? th : nh + sizeof(ip6);
	} else {
		return;
	}
	if (proto == 0xff)
		return;
	t->proto = proto;
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
		if (bpf_probe_read_kernel(ports, sizeof(ports), head + l4) < 0)
			return;
		t->sport = bpf_ntohs(ports[0]);
		t->dport = bpf_ntohs(ports[1]);
		if (proto == IPPROTO_TCP)
			bpf_probe_read_kernel(&t->tcp_flags, 1, head + l4 + 13);
	}
}

/*
 * Bytes from the network header on: skb->len counts from skb->data, which
 * the stack has pulled past the IP header by the time most drops happen.
 */
static __always_inline __u32 fx_skb_l3_len(struct sk_buff *skb)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	unsigned char *data = BPF_CORE_READ(skb, data);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u32 len = BPF_CORE_READ(skb, len);

	if (nh != FX_HDR_UNSET && data >= head + nh && data - (head + nh) < 0x10000)
		len += data - (head + nh);
	return len;
}

static __always_inline int fx_on_kfree_skb(struct sk_buff *skb, void *location, __u32 reason, struct sock *rx_sk)
{
	struct fx_kdrop_event *ev;
	struct net_device *dev;
	struct sock *sk;

	if (!fx_kind_enabled(FX_KIND_KDROP))
		return 0;
	if (reason <= bpf_core_enum_value(enum skb_drop_reason, SKB_CONSUMED))
		return 0;	/* consumed, or not a drop */
	ev = fx_reserve(FX_KIND_KDROP, sizeof(*ev));
	if (!ev)
		return 0;
	__builtin_memset(&ev->tuple, 0, sizeof(ev->tuple));
	ev->location = (__u64)location;
	ev->reason = reason;
	ev->l3_proto = bpf_ntohs(BPF_CORE_READ(skb, protocol));
	ev->pkt_len = fx_skb_l3_len(skb);
	ev->ifindex = 0;
	ev->netns_ino = 0;
	dev = BPF_CORE_READ(skb, dev);
	if (dev) {
		ev->ifindex = BPF_CORE_READ(dev, ifindex);
		ev->netns_ino = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	} else {
		sk = rx_sk ? rx_sk : BPF_CORE_READ(skb, sk);
		if (sk)
			ev->netns_ino = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	}
	__builtin_memset(ev->pad, 0, sizeof(ev->pad));
	fx_skb_tuple(skb, ev->l3_proto, &ev->tuple);
	fx_submit(ev, FX_KIND_KDROP);
	return 0;
}

#endif /* FX_KDROP_H */
