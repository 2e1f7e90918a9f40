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

/* Per-CPU counters of the filter; slot FX_FILTER_CONNECTS counts excluded connects. */
enum fx_filter_slot {
	FX_FILTER_CONNECTS = 0,
	FX_FILTER_SLOTS = 1,
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

#endif /* FX_FILTER_H */
