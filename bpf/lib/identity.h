/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Security identities (Cilium's ipcache): an LPM trie from address prefix to
 * identity, and the local endpoints by the ifindex of their host-side veth.
 * An address no prefix covers is the world (identity 2).
 */
#ifndef FX_IDENTITY_H
#define FX_IDENTITY_H

#include "ctx.h"

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, FX_IPCACHE_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fx_ipcache_key);
	__type(value, struct fx_ipcache_value);
} fx_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FX_ENDPOINTS_MAX);
	__type(key, __u32);
	__type(value, struct fx_endpoint);
} fx_endpoints SEC(".maps");

static __always_inline __u32 fx_identity_of(const __u8 *addr, __u8 family, __u16 *endpoint_id)
{
	struct fx_ipcache_key k = {};
	struct fx_ipcache_value *v;

	k.prefixlen = 32 + (family == AF_INET ? 32 : 128);
	k.family = family;
	__builtin_memcpy(k.addr, addr, 16);
	v = bpf_map_lookup_elem(&fx_ipcache, &k);
	if (endpoint_id)
		*endpoint_id = v ? v->endpoint_id : 0;
	return v ? v->identity : FX_ID_WORLD;
}

static __always_inline struct fx_endpoint *fx_endpoint_of(__u32 ifindex)
{
	return bpf_map_lookup_elem(&fx_endpoints, &ifindex);
}

#endif /* FX_IDENTITY_H */
