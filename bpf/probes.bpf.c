// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Tracing probes (Tetragon's half), on tracepoints only (this kernel has no
 * kprobes or fentry): process exec and exit, TCP/UDP connects with an
 * in-kernel destination filter, and kernel packet drops. Each program can be
 * left unloaded (autoload off) to switch its probe off.
 */
#include "include/kernel.h"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

#include "lib/events.h"
#include "lib/process.h"
#include "lib/connect.h"
#include "lib/kdrop.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* process: exec and exit */

SEC("raw_tp/sched_process_exec")
int BPF_PROG(fx_exec, struct task_struct *task, int old_pid, struct linux_binprm *bprm)
{
	return fx_emit_exec(task, bprm);
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(fx_fork, struct task_struct *parent, struct task_struct *child)
{
	return fx_on_fork(parent, child);
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(fx_exit, struct task_struct *task)
{
	return fx_emit_exit(task);
}

/* connect: TCP active opens */

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(fx_tcp_state, struct sock *sk, int oldstate, int newstate)
{
	return fx_on_tcp_state(sk, oldstate, newstate);
}

SEC("raw_tp/tcp_retransmit_skb")
int BPF_PROG(fx_tcp_retransmit, struct sock *sk)
{
	return fx_on_tcp_retransmit(sk);
}

/* connect: connect(), sendto(), sendmsg() */

SEC("tracepoint/syscalls/sys_enter_connect")
int fx_connect_enter(struct fx_sys_enter_ctx *ctx)
{
	return fx_on_sys_enter(ctx->args[0], NULL, 0);
}

SEC("tracepoint/syscalls/sys_exit_connect")
int fx_connect_exit(struct fx_sys_exit_ctx *ctx)
{
	return fx_on_connect_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int fx_sendto_enter(struct fx_sys_enter_ctx *ctx)
{
	const void *addr = (const void *)ctx->args[4];

	return addr ? fx_on_sys_enter(ctx->args[0], addr, (__u32)ctx->args[5]) : 0;
}

SEC("tracepoint/syscalls/sys_exit_sendto")
int fx_sendto_exit(struct fx_sys_exit_ctx *ctx)
{
	return fx_on_send_exit(ctx->ret);
}

/* struct user_msghdr: msg_name, msg_namelen first */
struct fx_user_msghdr {
	void *msg_name;
	int msg_namelen;
};

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int fx_sendmsg_enter(struct fx_sys_enter_ctx *ctx)
{
	struct fx_user_msghdr mh = {};

	if (bpf_probe_read_user(&mh, sizeof(mh), (const void *)ctx->args[1]) < 0 || !mh.msg_name)
		return 0;
	return fx_on_sys_enter(ctx->args[0], mh.msg_name, (__u32)mh.msg_namelen);
}

SEC("tracepoint/syscalls/sys_exit_sendmsg")
int fx_sendmsg_exit(struct fx_sys_exit_ctx *ctx)
{
	return fx_on_send_exit(ctx->ret);
}

/* kernel drops */

SEC("raw_tp/kfree_skb")
int BPF_PROG(fx_kfree_skb, struct sk_buff *skb, void *location, int reason, struct sock *rx_sk)
{
	return fx_on_kfree_skb(skb, location, (__u32)reason, rx_sk);
}
