// Baselines for the datapath cost benchmark (bench/run.sh datapath): built by the
// bench script with clang-14 -O2 -target bpf, never committed as objects.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct key { __u32 saddr, daddr; __u16 sport, dport; __u32 proto; };

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct key);
	__type(value, __u64);
} fxb_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} fxb_events SEC(".maps");

/* does nothing */
SEC("tc")
int fxb_empty(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

static __always_inline __u64 *lookup(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	__u8 *ip = data + 14;
	struct key k = {};

	if ((void *)(ip + 24) > end)
		return 0;
	k.saddr = *(__u32 *)(ip + 12);
	k.daddr = *(__u32 *)(ip + 16);
	k.sport = *(__u16 *)(ip + 20);
	k.dport = *(__u16 *)(ip + 22);
	k.proto = ip[9];
	return bpf_map_lookup_elem(&fxb_ct, &k);
}

/* one hash lookup keyed by the 5-tuple */
SEC("tc")
int fxb_lookup(struct __sk_buff *skb)
{
	__u64 *v = lookup(skb);

	if (v)
		__sync_fetch_and_add(v, 1);
	return TC_ACT_OK;
}

/* one hash lookup and a 64-byte ring buffer event */
SEC("tc")
int fxb_lookup_event(struct __sk_buff *skb)
{
	__u64 *v = lookup(skb);
	__u64 *e;

	if (v)
		__sync_fetch_and_add(v, 1);
	e = bpf_ringbuf_reserve(&fxb_events, 64, 0);
	if (!e)
		return TC_ACT_OK;
	e[0] = bpf_ktime_get_ns();
	e[1] = skb->len;
	e[2] = v ? *v : 0;
	bpf_ringbuf_submit(e, 0);
	return TC_ACT_OK;
}

/* conntrack-like state: an LRU hash with the datapath's entry size (the cost of tracking a new flow) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct key);
	__type(value, __u8[80]);
} fxb_lru SEC(".maps");

/* a missed lookup, then one LRU hash insert of an 80-byte entry, and a 64-byte event: a new flow's floor */
SEC("tc")
int fxb_insert_event(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	__u8 *ip = data + 14;
	__u8 zero[80] = {};
	struct key k = {};
	__u64 *e;

	if ((void *)(ip + 24) > end)
		return TC_ACT_OK;
	k.saddr = *(__u32 *)(ip + 12);
	k.daddr = *(__u32 *)(ip + 16);
	k.sport = *(__u16 *)(ip + 20);
	k.dport = *(__u16 *)(ip + 22);
	k.proto = ip[9];
	if (!bpf_map_lookup_elem(&fxb_lru, &k))
		bpf_map_update_elem(&fxb_lru, &k, zero, BPF_ANY);
	e = bpf_ringbuf_reserve(&fxb_events, 64, 0);
	if (!e)
		return TC_ACT_OK;
	e[0] = bpf_ktime_get_ns();
	e[1] = skb->len;
	bpf_ringbuf_submit(e, 0);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
