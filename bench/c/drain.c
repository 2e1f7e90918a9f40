// Minimal libbpf consumer: the baseline the recorder's ingest is measured against.
// Loads bpf/datapath.bpf.o with the same event configuration the recorder uses
// (trace events only, capture off), produces trace events with BPF_PROG_TEST_RUN
// (repeat) and drains the ring buffer, copying each record into a 1 MiB chunk
// (as the recorder's ring thread does) and counting it.
//   drain OBJ live SECONDS [RING_BYTES]   producer thread + consumer thread
//   drain OBJ filled ROUNDS [RING_BYTES]  fill the ring, then time the drain
// Prints one line: key=value pairs.
// FXB_PROG=NAME runs another program of OBJ and FXB_KIND=N enables that event kind
// instead of trace (bench/run.sh ingest-exec: fxb_exec of bench/out/exec_producer.bpf.o, kind 6).
#define _GNU_SOURCE
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FX_KIND_TRACE 4
static uint32_t kind = FX_KIND_TRACE;
#define FX_KIND_MAX 10
#define REPEAT 10000

struct fx_config { uint32_t kinds_enabled, snaplen; uint64_t wakeup_bytes; uint32_t self_pid, pad; };
struct fx_emit_stats { uint64_t emitted, failed; };

static unsigned char chunk[1 << 20];
static size_t chunk_used;
static uint64_t consumed, consumed_bytes;
static atomic_int stop;
static int prog_fd;
static unsigned char pkt[64];
static uint64_t produce_ns, produce_runs;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int on_record(void *ctx, void *data, size_t size)
{
	(void)ctx;
	if (chunk_used + size > sizeof(chunk))
		chunk_used = 0;
	memcpy(chunk + chunk_used, data, size);
	chunk_used += size;
	consumed++;
	consumed_bytes += size;
	return 0;
}

static uint16_t csum(const void *p, int n)
{
	const uint16_t *w = p;
	uint32_t s = 0;
	for (; n > 1; n -= 2)
		s += *w++;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

/* Ethernet + IPv4 10.0.0.5:40000 -> 10.0.0.6:53 UDP, 8 bytes of payload (as the C# bench) */
static void make_packet(void)
{
	memset(pkt, 0, sizeof(pkt));
	unsigned char *ip = pkt + 14;
	pkt[12] = 0x08; pkt[13] = 0x00;
	ip[0] = 0x45; ip[8] = 64; ip[9] = 17;
	*(uint16_t *)(ip + 2) = htons(20 + 8 + 8);
	inet_pton(AF_INET, "10.0.0.5", ip + 12);
	inet_pton(AF_INET, "10.0.0.6", ip + 16);
	*(uint16_t *)(ip + 10) = csum(ip, 20);
	unsigned char *udp = ip + 20;
	*(uint16_t *)(udp + 0) = htons(40000);
	*(uint16_t *)(udp + 2) = htons(53);
	*(uint16_t *)(udp + 4) = htons(16);
}

static void run_once(int repeat)
{
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = pkt, .data_size_in = 14 + 36, .repeat = repeat);
	if (bpf_prog_test_run_opts(prog_fd, &o)) {
		perror("test_run");
		exit(1);
	}
	produce_ns += (uint64_t)o.duration * repeat;
	produce_runs += repeat;
}

static void *producer(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop))
		run_once(REPEAT);
	return NULL;
}

static void set_config(struct bpf_object *obj, uint32_t ring)
{
	struct bpf_map *rodata = NULL, *m;
	bpf_object__for_each_map(m, obj)
		if (strstr(bpf_map__name(m), ".rodata"))
			rodata = m;
	struct btf *btf = bpf_object__btf(obj);
	int id = btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC);
	if (!rodata || id < 0) {
		fprintf(stderr, "no .rodata\n");
		exit(1);
	}
	const struct btf_type *sec = btf__type_by_id(btf, id);
	const struct btf_var_secinfo *v = btf_var_secinfos(sec);
	size_t sz;
	char *data = (char *)bpf_map__initial_value(rodata, &sz);
	for (int i = 0; i < btf_vlen(sec); i++, v++) {
		const char *name = btf__name_by_offset(btf, btf__type_by_id(btf, v->type)->name_off);
		if (strcmp(name, "fx_cfg") == 0) {
			struct fx_config c = { .kinds_enabled = 1u << kind, .snaplen = 0,
					       .wakeup_bytes = ring / 2 < (1u << 20) ? ring / 2 : (1u << 20) };
			if (getenv("FXB_WAKEUP")) /* pending bytes that force a wakeup (default 1 MiB) */
				c.wakeup_bytes = strtoull(getenv("FXB_WAKEUP"), NULL, 0);
			memcpy(data + v->offset, &c, sizeof(c));
			bpf_map__set_max_entries(bpf_object__find_map_by_name(obj, "fx_events"), ring);
			return;
		}
	}
	fprintf(stderr, "no fx_cfg\n");
	exit(1);
}

static struct fx_emit_stats stats(int fd)
{
	struct fx_emit_stats sum = { 0 }, per[256];
	uint32_t k = kind;
	int ncpu = libbpf_num_possible_cpus();
	if (bpf_map_lookup_elem(fd, &k, per) == 0)
		for (int i = 0; i < ncpu; i++) {
			sum.emitted += per[i].emitted;
			sum.failed += per[i].failed;
		}
	return sum;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: drain OBJ live SECONDS [RING] | drain OBJ filled ROUNDS [RING]\n");
		return 2;
	}
	if (getenv("FXB_KIND"))
		kind = (uint32_t)atoi(getenv("FXB_KIND"));
	const char *prog_name = getenv("FXB_PROG") ? getenv("FXB_PROG") : "fx_from_endpoint";
	uint32_t ring = argc > 4 ? (uint32_t)strtoul(argv[4], NULL, 0) : 16u << 20;
	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	if (!obj) {
		perror("open");
		return 1;
	}
	set_config(obj, ring);
	if (bpf_object__load(obj)) {
		fprintf(stderr, "load failed\n");
		return 1;
	}
	prog_fd = bpf_program__fd(bpf_object__find_program_by_name(obj, prog_name));
	int events_fd = bpf_map__fd(bpf_object__find_map_by_name(obj, "fx_events"));
	int stats_fd = bpf_map__fd(bpf_object__find_map_by_name(obj, "fx_emit_stats"));
	struct ring_buffer *rb = ring_buffer__new(events_fd, on_record, NULL, NULL);
	make_packet();

	double t0, elapsed;
	if (strcmp(argv[2], "live") == 0) {
		double secs = atof(argv[3]);
		pthread_t th;
		t0 = now();
		pthread_create(&th, NULL, producer, NULL);
		while (now() - t0 < secs)
			ring_buffer__poll(rb, 10);
		atomic_store(&stop, 1);
		pthread_join(th, NULL);
		ring_buffer__consume(rb);
		elapsed = now() - t0;
		struct fx_emit_stats s = stats(stats_fd);
		printf("mode=live seconds=%.3f consumed=%lu rate=%.0f emitted=%lu failed=%lu produce_ns_per_run=%.1f\n",
		       elapsed, consumed, consumed / elapsed, s.emitted, s.failed, (double)produce_ns / produce_runs);
	} else {
		int rounds = atoi(argv[3]);
		int fill = getenv("FXB_FILL") ? atoi(getenv("FXB_FILL")) : (int)(ring / (kind == FX_KIND_TRACE ? 112 : 1648) - 64); /* record + 8-byte header, leave room */
		double drain = 0;
		for (int r = 0; r < rounds; r++) {
			run_once(fill);
			t0 = now();
			ring_buffer__consume(rb);
			drain += now() - t0;
		}
		struct fx_emit_stats s = stats(stats_fd);
		printf("mode=filled rounds=%d consumed=%lu drain_seconds=%.4f rate=%.0f emitted=%lu failed=%lu produce_ns_per_run=%.1f\n",
		       rounds, consumed, drain, consumed / drain, s.emitted, s.failed, (double)produce_ns / produce_runs);
	}
	ring_buffer__free(rb);
	bpf_object__close(obj);
	return 0;
}
