/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The event channel shared by every program: one ring buffer, per-CPU
 * emission counters by event kind, and the read-only configuration.
 *
 * Wakeups are batched: a program submits with BPF_RB_NO_WAKEUP until the
 * ring holds fx_cfg.wakeup_bytes, then forces one. The consumer also polls
 * on a short timer, so nothing waits longer than that timer.
 */
#ifndef FX_EVENTS_H
#define FX_EVENTS_H

#include "../include/fx_abi.h"

#ifndef FX_RINGBUF_BYTES
#define FX_RINGBUF_BYTES (16 << 20)	/* resized from user space before load */
#endif

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, FX_RINGBUF_BYTES);
} fx_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FX_KIND_MAX);
	__type(key, __u32);
	__type(value, struct fx_emit_stats);
} fx_emit_stats SEC(".maps");

const volatile struct fx_config fx_cfg = {
	.kinds_enabled = 0xffffffff,
	.snaplen = 128,
	.wakeup_bytes = 1 << 20,
	.self_pid = 0,
	.trace_aggregate = 0,
	.capture_first = FX_CAPTURE_ALL,
};

/*
 * Anchors every ABI enum and event struct in the object's BTF, whether or not
 * this object emits it, so that user space can check its mirrors against
 * them. Never read.
 */
struct fx_abi_anchor {
	enum fx_kind kind;
	enum fx_obs_point obs;
	enum fx_dir dir;
	enum fx_ct_state ct;
	enum fx_verdict_action action;
	enum fx_match_type match;
	enum fx_nat_kind nat;
	enum fx_connect_kind connect;
	enum fx_src_file file;
	enum fx_exec_flags exec_flags;
	enum fx_limits limits;
	struct fx_drop_event drop;
	struct fx_policy_event policy;
	struct fx_nat_event nat_ev;
	struct fx_trace_event trace;
	struct fx_capture_event capture;
	struct fx_exec_event exec;
	struct fx_exit_event exit;
	struct fx_connect_event conn;
	struct fx_kdrop_event kdrop;
	struct fx_emit_stats stats;
};
const volatile struct fx_abi_anchor fx_abi_anchor = {};

static __always_inline int fx_kind_enabled(__u32 kind)
{
	return (fx_cfg.kinds_enabled >> kind) & 1;
}

static __always_inline void fx_count(__u32 kind, int ok)
{
	struct fx_emit_stats *st = bpf_map_lookup_elem(&fx_emit_stats, &kind);

	if (!st)
		return;
	if (ok)
		st->emitted++;
	else
		st->failed++;
}

/* Reserve an event of `size` bytes and fill its header; NULL (counted) on failure. */
static __always_inline void *fx_reserve(__u32 kind, __u32 size)
{
	struct fx_hdr *hdr = bpf_ringbuf_reserve(&fx_events, size, 0);

	if (!hdr) {
		fx_count(kind, 0);
		return NULL;
	}
	hdr->kind = kind;
	hdr->version = FX_ABI_VERSION;
	hdr->size = size;
	hdr->cpu = bpf_get_smp_processor_id();
	hdr->ktime = bpf_ktime_get_ns();
	return hdr;
}

/*
 * Force one wakeup when this record takes the pending bytes across
 * fx_cfg.wakeup_bytes, not one per record above it: a forced wakeup costs
 * microseconds, and a consumer that lags would otherwise get a wakeup per
 * event (bench/RESULTS.md: 3.3 us instead of 0.2 us per event past the mark).
 * The window is the record with its 8-byte ring header, rounded up to 8.
 */
static __always_inline __u64 fx_wakeup_flags(__u32 size)
{
	__u64 avail = bpf_ringbuf_query(&fx_events, BPF_RB_AVAIL_DATA);

	return avail >= fx_cfg.wakeup_bytes && avail < fx_cfg.wakeup_bytes + size + 16 ?
	       BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

static __always_inline void fx_submit(void *ev, __u32 kind)
{
	bpf_ringbuf_submit(ev, fx_wakeup_flags(((struct fx_hdr *)ev)->size));
	fx_count(kind, 1);
}

#endif /* FX_EVENTS_H */
