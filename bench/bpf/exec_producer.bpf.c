// A producer of exec events for the ingest benchmark (bench/run.sh ingest-exec): a tc
// program, driven by BPF_PROG_TEST_RUN, that emits one full-size fx_exec_event per run
// through the real event channel (bpf/lib/events.h: same ring, counters and wakeup
// policy as bpf/probes.bpf.c). The content is what the probe records for
// `curl -s http://203.0.113.10/` run from /root by an interactive shell; pid, tid and
// exec id change per event. A real exec cannot be driven this fast (fork + exec costs
// about 0.3 ms here). Built by bench/run.sh with clang-14, never committed as an object.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "../../bpf/lib/events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define FILENAME "/usr/bin/curl"
#define ARGS "curl\0-s\0http://203.0.113.10/"
#define CWD "/root"
#define COMM "curl"

SEC("tc")
int fxb_exec(struct __sk_buff *skb)
{
	struct fx_exec_event *ev;
	__u64 now = bpf_ktime_get_boot_ns();
	__u32 pid = 10000 + (__u32)(now % 4000000);

	if (!fx_kind_enabled(FX_KIND_EXEC))
		return TC_ACT_OK;
	ev = fx_reserve(FX_KIND_EXEC, sizeof(*ev));
	if (!ev)
		return TC_ACT_OK;
	ev->pid = pid;
	ev->tid = pid;
	ev->ppid = 4242;
	ev->uid = 0;
	ev->gid = 0;
	ev->netns_ino = 4026531840;
	ev->cgroup_id = 1234;
	ev->exec_id = now;
	ev->parent_exec_id = 1000000;
	ev->start_time = now - 1000;
	ev->flags = 0;
	ev->argc = 3;
	__builtin_memset(ev->comm, 0, sizeof(ev->comm));
	__builtin_memcpy(ev->comm, COMM, sizeof(COMM));
	__builtin_memcpy(ev->filename, FILENAME, sizeof(FILENAME) - 1);
	ev->filename_len = sizeof(FILENAME) - 1;
	__builtin_memcpy(ev->args, ARGS, sizeof(ARGS));
	ev->args_len = sizeof(ARGS);
	__builtin_memcpy(ev->cwd, CWD, sizeof(CWD) - 1);
	ev->cwd_len = sizeof(CWD) - 1;
	fx_submit(ev, FX_KIND_EXEC);
	return TC_ACT_OK;
}
