/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Packet parsing for the tc programs: Ethernet, IPv4/IPv6, TCP/UDP/ICMP. */
#ifndef FX_PARSE_H
#define FX_PARSE_H

#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

enum fx_frag {
	FX_FRAG_NONE = 0,
	FX_FRAG_FIRST = 1,	/* IPv4 first fragment: carries the L4 header */
	FX_FRAG_LATER = 2,	/* IPv4 later fragment: no L4 header, ports unknown here */
};

struct fx_pkt {
	struct fx_tuple tuple;
	__u32 l3_off;
	__u32 l4_off;
	__u16 l3_proto;		/* ETH_P_*, host order */
	__u16 ip_id;		/* IPv4 identification, network order */
	__u8 frag;		/* enum fx_frag */
	__u8 pad[3];
};

static __always_inline __u8 fx_tcp_flags(const struct tcphdr *th)
{
	return ((const __u8 *)th)[13];
}

/* Returns 0 when the packet was parsed as IPv4/IPv6, -1 otherwise. */
static __always_inline int fx_parse(struct __sk_buff *skb, struct fx_pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u8 proto;
	void *l4;

	__builtin_memset(p, 0, sizeof(*p));
	if ((void *)(eth + 1) > end)
		return -1;
	p->l3_proto = bpf_ntohs(eth->h_proto);
	p->l3_off = sizeof(*eth);
	if (p->l3_proto == ETH_P_IP) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end || ip->ihl < 5)
			return -1;
		__builtin_memcpy(p->tuple.saddr, &ip->saddr, 4);
		__builtin_memcpy(p->tuple.daddr, &ip->daddr, 4);
		p->tuple.family = AF_INET;
		proto = ip->protocol;
		l4 = (void *)ip + ip->ihl * 4;
		p->ip_id = ip->id;
		if (ip->frag_off & bpf_htons(0x1fff))
			p->frag = FX_FRAG_LATER;
		else if (ip->frag_off & bpf_htons(0x2000))
			p->frag = FX_FRAG_FIRST;
	} else if (p->l3_proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return -1;
		__builtin_memcpy(p->tuple.saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->tuple.daddr, &ip6->daddr, 16);
		p->tuple.family = AF_INET6;
		proto = ip6->nexthdr;
		l4 = ip6 + 1;
	} else {
		return -1;
	}
	p->tuple.proto = proto;
	p->l4_off = l4 - data;
	if (p->frag == FX_FRAG_LATER)
		return 0;
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > end)
			return 0;
		p->tuple.sport = bpf_ntohs(th->source);
		p->tuple.dport = bpf_ntohs(th->dest);
		p->tuple.tcp_flags = fx_tcp_flags(th);
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > end)
			return 0;
		p->tuple.sport = bpf_ntohs(uh->source);
		p->tuple.dport = bpf_ntohs(uh->dest);
	}
	return 0;
}

#endif /* FX_PARSE_H */
