// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Tracing probes (Tetragon's half): process exec and exit on raw
 * tracepoints. Tracepoints only: this kernel has no kprobes or fentry.
 */
#include "include/kernel.h"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "lib/events.h"
#include "lib/process.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("raw_tp/sched_process_exec")
int BPF_PROG(fx_exec, struct task_struct *task, int old_pid, struct linux_binprm *bprm)
{
	return fx_emit_exec(task, bprm);
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(fx_exit, struct task_struct *task)
{
	return fx_emit_exit(task);
}
