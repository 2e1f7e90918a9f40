/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The connect destination filter (Tetragon's NotDAddr): destinations inside
 * an excluded CIDR are never emitted, only counted. One LPM trie per family,
 * filled from user space; IPv4-mapped IPv6 destinations (::ffff:a.b.c.d) are
 * looked up in the IPv4 trie.
 */
#ifndef FX_FILTER_H
#define FX_FILTER_H

#define FX_EXCLUDE_MAX 1024

struct fx_lpm_v4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct fx_lpm_v6 {
	__u32 prefixlen;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, FX_EXCLUDE_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fx_lpm_v4);
	__type(value, __u8);
} fx_exclude_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, FX_EXCLUDE_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fx_lpm_v6);
	__type(value, __u8);
} fx_exclude_v6 SEC(".maps");

/*
 * Per-CPU counters of the filters: FX_FILTER_CONNECTS counts connects to an
 * excluded destination, FX_FILTER_SELECTORS connects no selector of a
 * TracingPolicy selected.
 */
enum fx_filter_slot {
	FX_FILTER_CONNECTS = 0,
	FX_FILTER_SELECTORS = 1,
	FX_FILTER_SLOTS = 2,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FX_FILTER_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} fx_filter_stats SEC(".maps");

static __always_inline int fx_v4_mapped(const __u8 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == 0 && a[4] == 0 && a[5] == 0 &&
	       a[6] == 0 && a[7] == 0 && a[8] == 0 && a[9] == 0 && a[10] == 0xff && a[11] == 0xff;
}

/* 1 when the destination is excluded; the exclusion is then counted. */
static __always_inline int fx_dest_excluded(const struct fx_tuple *t)
{
	__u32 slot = FX_FILTER_CONNECTS;
	__u64 *cnt;
	void *hit;

	if (t->family == AF_INET6 && !fx_v4_mapped(t->daddr)) {
		struct fx_lpm_v6 k6 = { .prefixlen = 128 };

		__builtin_memcpy(k6.addr, t->daddr, 16);
		hit = bpf_map_lookup_elem(&fx_exclude_v6, &k6);
	} else {
		struct fx_lpm_v4 k4 = { .prefixlen = 32 };

		if (t->family == AF_INET6)
			__builtin_memcpy(k4.addr, &t->daddr[12], 4);
		else
			__builtin_memcpy(k4.addr, t->daddr, 4);
		hit = bpf_map_lookup_elem(&fx_exclude_v4, &k4);
	}
	if (!hit)
		return 0;
	cnt = bpf_map_lookup_elem(&fx_filter_stats, &slot);
	if (cnt)
		(*cnt)++;
	return 1;
}

/*
 * TracingPolicy selectors on connects (Tetragon's kprobe selectors on
 * tcp_connect, security_socket_connect, udp_sendmsg...): per class of connect
 * (TCP, UDP), up to FX_SEL_MAX selectors ORed, each an AND of its conditions:
 * family, destination and source addresses (In/NotIn CIDR sets in one LPM trie
 * keyed by selector slot), destination and source port ranges (In/NotIn), and
 * the binary (In/NotIn, by a hash of the path it was executed by). A class a
 * policy hooks reports only what a selector selects; the rest is counted.
 */
enum fx_conn_class {
	FX_CONN_CLASS_TCP = 0,
	FX_CONN_CLASS_UDP = 1,
};

enum fx_sel_limits {
	FX_SEL_MAX = 8,		/* selectors per class */
	FX_SEL_PORTS = 8,	/* port ranges per condition */
	FX_SEL_BINARIES = 8,	/* binaries per selector */
	FX_SEL_ADDRS = 4096,	/* prefixes in fx_conn_addrs */
};

enum fx_sel_flags {
	FX_SEL_DADDR_IN = 1,
	FX_SEL_DADDR_NOTIN = 2,
	FX_SEL_SADDR_IN = 4,
	FX_SEL_SADDR_NOTIN = 8,
	FX_SEL_DPORT_NOT = 16,
	FX_SEL_SPORT_NOT = 32,
	FX_SEL_BINARY_NOT = 64,
};

/* Which address set of a selector an fx_conn_addrs prefix belongs to. */
enum fx_sel_addr {
	FX_SEL_ADDR_DADDR_IN = 0,
	FX_SEL_ADDR_DADDR_NOTIN = 1,
	FX_SEL_ADDR_SADDR_IN = 2,
	FX_SEL_ADDR_SADDR_NOTIN = 3,
};

struct fx_conn_sel {
	__u8 flags;		/* enum fx_sel_flags */
	__u8 families;		/* bit 0 IPv4, bit 1 IPv6; 0: any */
	__u8 dport_n;		/* ranges in dport_lo/hi; 0: any port */
	__u8 sport_n;
	__u8 binary_n;		/* hashes in binary; 0: any binary */
	__u8 pad[3];
	__u16 dport_lo[FX_SEL_PORTS];
	__u16 dport_hi[FX_SEL_PORTS];
	__u16 sport_lo[FX_SEL_PORTS];
	__u16 sport_hi[FX_SEL_PORTS];
	__u64 binary[FX_SEL_BINARIES];
};

struct fx_conn_filter {
	__u8 enabled;		/* a policy hooks this class: report what a selector selects */
	__u8 count;		/* selectors; 0 (enabled): every connect of the class */
	__u8 pad[2];
};

/* fx_conn_addrs: prefixlen counts 32 (slot, set, family, pad) + the address's prefix. */
struct fx_conn_addr_key {
	__u32 prefixlen;
	__u8 slot;		/* class * FX_SEL_MAX + selector */
	__u8 set;		/* enum fx_sel_addr */
	__u8 family;		/* AF_INET or AF_INET6 */
	__u8 pad;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct fx_conn_filter);
} fx_conn_filters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * FX_SEL_MAX);
	__type(key, __u32);
	__type(value, struct fx_conn_sel);
} fx_conn_sels SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, FX_SEL_ADDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fx_conn_addr_key);
	__type(value, __u8);
} fx_conn_addrs SEC(".maps");

static __always_inline int fx_sel_addr_in(__u8 slot, __u8 set, __u8 family, const __u8 *addr)
{
	struct fx_conn_addr_key k = { .slot = slot, .set = set, .family = family };

	k.prefixlen = 32 + (family == AF_INET ? 32 : 128);
	if (family == AF_INET)
		__builtin_memcpy(k.addr, addr, 4);
	else
		__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&fx_conn_addrs, &k) != NULL;
}

static __always_inline int fx_sel_port_in(const __u16 *lo, const __u16 *hi, __u8 n, __u16 port)
{
	int i;

	for (i = 0; i < FX_SEL_PORTS; i++) {
		if (i >= n)
			break;
		if (port >= lo[i] && port <= hi[i])
			return 1;
	}
	return 0;
}

static __always_inline int fx_sel_match(const struct fx_conn_sel *sel, __u8 slot, const struct fx_tuple *t, __u64 binary)
{
	/* an IPv4-mapped IPv6 address is the IPv4 address it maps (as Tetragon reads it) */
	__u8 family = t->family == AF_INET6 && fx_v4_mapped(t->daddr) ? AF_INET : t->family;
	const __u8 *daddr = family == AF_INET && t->family == AF_INET6 ? &t->daddr[12] : t->daddr;
	const __u8 *saddr = family == AF_INET && t->family == AF_INET6 ? &t->saddr[12] : t->saddr;
	int i, found;

	if (sel->families && !(sel->families & (family == AF_INET ? 1 : 2)))
		return 0;
	if ((sel->flags & FX_SEL_DADDR_IN) && !fx_sel_addr_in(slot, FX_SEL_ADDR_DADDR_IN, family, daddr))
		return 0;
	if ((sel->flags & FX_SEL_DADDR_NOTIN) && fx_sel_addr_in(slot, FX_SEL_ADDR_DADDR_NOTIN, family, daddr))
		return 0;
	if ((sel->flags & FX_SEL_SADDR_IN) && !fx_sel_addr_in(slot, FX_SEL_ADDR_SADDR_IN, family, saddr))
		return 0;
	if ((sel->flags & FX_SEL_SADDR_NOTIN) && fx_sel_addr_in(slot, FX_SEL_ADDR_SADDR_NOTIN, family, saddr))
		return 0;
	if (sel->dport_n && fx_sel_port_in(sel->dport_lo, sel->dport_hi, sel->dport_n, t->dport) == !!(sel->flags & FX_SEL_DPORT_NOT))
		return 0;
	if (sel->sport_n && fx_sel_port_in(sel->sport_lo, sel->sport_hi, sel->sport_n, t->sport) == !!(sel->flags & FX_SEL_SPORT_NOT))
		return 0;
	if (sel->binary_n) {
		found = 0;
		for (i = 0; i < FX_SEL_BINARIES; i++) {
			if (i >= sel->binary_n)
				break;
			if (sel->binary[i] == binary)
				found = 1;
		}
		if (found == !!(sel->flags & FX_SEL_BINARY_NOT))
			return 0;
	}
	return 1;
}

/* The selectors of its class that select the connect (bit i: selector i, every one asked, so that user space can
 * apply a selector's workload scope), FX_SEL_UNFILTERED when no policy hooks its class; 0: not reported (counted).
 * The mask is gathered in a per-CPU slot, not on the stack: the verifier would follow every value it can take. */
#define FX_SEL_UNFILTERED 0xff

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} fx_conn_mask SEC(".maps");

static __always_inline __u8 fx_conn_selected(const struct fx_tuple *t, __u64 binary, __u32 cls)
{
	struct fx_conn_filter *f = bpf_map_lookup_elem(&fx_conn_filters, &cls);
	__u32 slot = FX_FILTER_SELECTORS, i, idx, zero = 0, *mask;
	struct fx_conn_sel *sel;
	__u64 *cnt;

	if (!f || !f->enabled || f->count == 0)
		return FX_SEL_UNFILTERED;
	mask = bpf_map_lookup_elem(&fx_conn_mask, &zero);
	if (!mask)
		return FX_SEL_UNFILTERED;
	*mask = 0;
	for (i = 0; i < FX_SEL_MAX; i++) {
		if (i >= f->count)
			break;
		idx = cls * FX_SEL_MAX + i;
		sel = bpf_map_lookup_elem(&fx_conn_sels, &idx);
		if (sel && fx_sel_match(sel, (__u8)idx, t, binary))
			*mask |= 1 << i;
	}
	if (*mask & FX_SEL_UNFILTERED)
		return *mask & FX_SEL_UNFILTERED;
	cnt = bpf_map_lookup_elem(&fx_filter_stats, &slot);
	if (cnt)
		(*cnt)++;
	return 0;
}

#endif /* FX_FILTER_H */
