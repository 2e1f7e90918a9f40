/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Outbound connects by process, on tracepoints only:
 *
 * - TCP active opens. sock:inet_sock_set_state CLOSE -> SYN_SENT fires in
 *   the connecting task, but before the source port is chosen; so the
 *   process is remembered per socket (fx_tcp_pending) and the event is
 *   emitted with the full tuple at the first of: connect() returning in that
 *   task, the socket leaving SYN_SENT, or the SYN being retransmitted.
 * - UDP connect(): emitted when connect() returns 0, from the socket.
 * - Unconnected UDP sends: sendto()/sendmsg() that name an address, emitted
 *   when the call returns (the socket is bound by then); once per socket and
 *   destination (fx_udp_seen), so a chatty socket does not flood the ring.
 *
 * Excluded destinations (lib/filter.h) are never emitted, only counted.
 */
#ifndef FX_CONNECT_H
#define FX_CONNECT_H

#include "filter.h"

#define FX_TCP_CLOSE 7
#define FX_TCP_SYN_SENT 2
#define FX_SOCK_STREAM 1
#define FX_SOCK_DGRAM 2
#define FX_IPPROTO_TCP 6
#define FX_IPPROTO_UDP 17

/* Who connected: captured in the task's context, emitted perhaps later. */
struct fx_conn_proc {
	__u32 pid;
	__u32 tid;
	__u32 uid;
	__u32 netns_ino;
	__u64 exec_id;
	__u64 cgroup_id;
	__u8 comm[FX_COMM_LEN];
	__u64 binary_hash;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);	/* struct sock * */
	__type(value, struct fx_conn_proc);
} fx_tcp_pending SEC(".maps");

/* A syscall in flight, per thread: the fd and, for sends, the destination. */
struct fx_sys_call {
	__u32 fd;
	__u16 dport;
	__u8 family;
	__u8 pad;
	__u8 daddr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);	/* tid */
	__type(value, struct fx_sys_call);
} fx_sys_calls SEC(".maps");

struct fx_udp_key {
	__u64 sk;
	__u8 daddr[16];
	__u16 dport;
	__u16 sport;
	__u32 tgid;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct fx_udp_key);
	__type(value, __u8);
} fx_udp_seen SEC(".maps");

/* The tracepoint contexts of syscalls:sys_enter_* / sys_exit_*. */
struct fx_sys_enter_ctx {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__u64 args[6];
};

struct fx_sys_exit_ctx {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__s64 ret;
};

/* sockaddr_in / sockaddr_in6 as user space passes them. */
struct fx_sockaddr {
	__u16 family;
	__u16 port;		/* network order */
	union {
		__u8 v4[4];
		struct {
			__u32 flowinfo;
			__u8 v6[16];
		};
	};
};

static __always_inline void fx_current_proc(struct fx_conn_proc *p)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 id = bpf_get_current_pid_tgid();

	p->pid = id >> 32;
	p->tid = (__u32)id;
	p->uid = (__u32)bpf_get_current_uid_gid();
	p->netns_ino = fx_task_netns(task);
	p->exec_id = fx_exec_id_of(p->pid);
	p->binary_hash = fx_binary_hash_of(p->pid);
	p->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(p->comm, sizeof(p->comm));
}

/* Addresses and ports of a socket; 0 when it is neither IPv4 nor IPv6. */
static __always_inline int fx_sock_tuple(struct sock *sk, struct fx_tuple *t)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	__builtin_memset(t, 0, sizeof(*t));
	if (family == AF_INET) {
		__be32 saddr = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__be32 daddr = BPF_CORE_READ(sk, __sk_common.skc_daddr);

		__builtin_memcpy(t->saddr, &saddr, 4);
		__builtin_memcpy(t->daddr, &daddr, 4);
	} else if (family == AF_INET6) {
		/* struct in6_addr: 16 bytes, read whole */
		BPF_CORE_READ_INTO((struct in6_addr *)t->saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO((struct in6_addr *)t->daddr, sk, __sk_common.skc_v6_daddr);
	} else {
		return 0;
	}
	t->family = family;
	t->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	/* A refused connect (RST in SYN_SENT) releases the port before the state
	 * change is traced: skc_num is 0 by then, inet_sport still holds it. */
	if (!t->sport)
		t->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	t->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	t->proto = BPF_CORE_READ(sk, sk_protocol);
	return 1;
}

/* The socket behind a file descriptor of the current task; NULL when it is not one. */
static __always_inline struct sock *fx_sock_of_fd(__u32 fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds, *file;
	struct socket *sock;

	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) < 0 || !file)
		return NULL;
	if ((BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	sock = BPF_CORE_READ(file, private_data);
	return sock ? BPF_CORE_READ(sock, sk) : NULL;
}

static __always_inline void fx_emit_connect(const struct fx_tuple *t, const struct fx_conn_proc *p, __u8 kind)
{
	struct fx_connect_event *ev;
	__u8 selected;

	if (p->pid == fx_cfg.self_pid)
		return;
	selected = fx_conn_selected(t, p->binary_hash, kind == FX_CONNECT_TCP ? FX_CONN_CLASS_TCP : FX_CONN_CLASS_UDP);
	if (!selected)
		return;
	ev = fx_reserve(FX_KIND_CONNECT, sizeof(*ev));
	if (!ev)
		return;
	ev->tuple = *t;
	ev->pid = p->pid;
	ev->tid = p->tid;
	ev->uid = p->uid;
	ev->netns_ino = p->netns_ino;
	ev->exec_id = p->exec_id;
	ev->cgroup_id = p->cgroup_id;
	__builtin_memcpy(ev->comm, p->comm, sizeof(ev->comm));
	ev->connect_kind = kind;
	ev->selected = selected;
	__builtin_memset(ev->pad, 0, sizeof(ev->pad));
	fx_submit(ev, FX_KIND_CONNECT);
}

/* Emits the TCP connect remembered for this socket, if any. */
static __always_inline void fx_tcp_flush(struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct fx_conn_proc *p = bpf_map_lookup_elem(&fx_tcp_pending, &key);
	struct fx_conn_proc proc;
	struct fx_tuple t;

	if (!p)
		return;
	proc = *p;
	bpf_map_delete_elem(&fx_tcp_pending, &key);
	if (!fx_sock_tuple(sk, &t))
		return;
	t.proto = FX_IPPROTO_TCP;
	t.tcp_flags = 0x02;	/* SYN */
	fx_emit_connect(&t, &proc, FX_CONNECT_TCP);
}

static __always_inline int fx_on_tcp_state(struct sock *sk, int oldstate, int newstate)
{
	struct fx_conn_proc proc;
	struct fx_tuple t;
	__u64 key = (__u64)sk;

	if (!fx_kind_enabled(FX_KIND_CONNECT) || BPF_CORE_READ(sk, sk_protocol) != FX_IPPROTO_TCP)
		return 0;
	if (oldstate == FX_TCP_CLOSE && newstate == FX_TCP_SYN_SENT) {
		if (!fx_sock_tuple(sk, &t) || fx_dest_excluded(&t))
			return 0;
		fx_current_proc(&proc);
		bpf_map_update_elem(&fx_tcp_pending, &key, &proc, BPF_ANY);
	} else if (oldstate == FX_TCP_SYN_SENT) {
		fx_tcp_flush(sk);
	}
	return 0;
}

static __always_inline int fx_on_tcp_retransmit(struct sock *sk)
{
	if (fx_kind_enabled(FX_KIND_CONNECT))
		fx_tcp_flush(sk);
	return 0;
}

static __always_inline int fx_on_sys_enter(__u64 fd, const void *uaddr, __u32 addrlen)
{
	struct fx_sys_call call = {};
	struct fx_sockaddr sa = {};
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	if (!fx_kind_enabled(FX_KIND_CONNECT))
		return 0;
	call.fd = (__u32)fd;
	if (uaddr) {
		if (addrlen < 8)
			return 0;
		if (bpf_probe_read_user(&sa, addrlen < sizeof(sa) ? 8 : sizeof(sa), uaddr) < 0)
			return 0;
		if (sa.family == AF_INET) {
			__builtin_memcpy(call.daddr, sa.v4, 4);
		} else if (sa.family == AF_INET6 && addrlen >= sizeof(sa)) {
			__builtin_memcpy(call.daddr, sa.v6, 16);
		} else {
			return 0;
		}
		call.family = sa.family;
		call.dport = bpf_ntohs(sa.port);
	}
	bpf_map_update_elem(&fx_sys_calls, &tid, &call, BPF_ANY);
	return 0;
}

/* connect() returned: a TCP open remembered for the socket, or a UDP connect. */
static __always_inline int fx_on_connect_exit(__s64 ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct fx_sys_call *call = bpf_map_lookup_elem(&fx_sys_calls, &tid);
	struct fx_conn_proc proc;
	struct fx_tuple t;
	struct sock *sk;
	__u32 fd;

	if (!call)
		return 0;
	fd = call->fd;
	bpf_map_delete_elem(&fx_sys_calls, &tid);
	sk = fx_sock_of_fd(fd);
	if (!sk)
		return 0;
	if (BPF_CORE_READ(sk, sk_protocol) == FX_IPPROTO_TCP) {
		fx_tcp_flush(sk);
		return 0;
	}
	if (ret != 0 || BPF_CORE_READ(sk, sk_type) != FX_SOCK_DGRAM ||
	    BPF_CORE_READ(sk, sk_protocol) != FX_IPPROTO_UDP)
		return 0;
	if (!fx_sock_tuple(sk, &t) || fx_dest_excluded(&t))
		return 0;
	fx_current_proc(&proc);
	fx_emit_connect(&t, &proc, FX_CONNECT_UDP);
	return 0;
}

/* sendto()/sendmsg() with an address returned: an unconnected UDP send. */
static __always_inline int fx_on_send_exit(__s64 ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct fx_sys_call *call = bpf_map_lookup_elem(&fx_sys_calls, &tid);
	struct fx_sys_call c;
	struct fx_conn_proc proc;
	struct fx_udp_key seen = {};
	struct fx_tuple t, st;
	struct sock *sk;
	__u8 one = 1;

	if (!call)
		return 0;
	c = *call;
	bpf_map_delete_elem(&fx_sys_calls, &tid);
	if (ret < 0 || !c.family)
		return 0;
	sk = fx_sock_of_fd(c.fd);
	if (!sk || BPF_CORE_READ(sk, sk_type) != FX_SOCK_DGRAM ||
	    BPF_CORE_READ(sk, sk_protocol) != FX_IPPROTO_UDP)
		return 0;
	if (!fx_sock_tuple(sk, &st))
		return 0;
	__builtin_memset(&t, 0, sizeof(t));
	t.family = c.family;
	t.proto = FX_IPPROTO_UDP;
	t.sport = st.sport;
	t.dport = c.dport;
	__builtin_memcpy(t.daddr, c.daddr, 16);
	/* the socket's bound address, when it has one in the family sent to */
	if (st.family == c.family)
		__builtin_memcpy(t.saddr, st.saddr, 16);
	if (fx_dest_excluded(&t))
		return 0;
	seen.sk = (__u64)sk;
	__builtin_memcpy(seen.daddr, t.daddr, 16);
	seen.dport = t.dport;
	seen.sport = t.sport;
	seen.tgid = bpf_get_current_pid_tgid() >> 32;
	if (bpf_map_update_elem(&fx_udp_seen, &seen, &one, BPF_NOEXIST) != 0)
		return 0;	/* already reported for this socket and destination */
	fx_current_proc(&proc);
	fx_emit_connect(&t, &proc, FX_CONNECT_UDP_SEND);
	return 0;
}

#endif /* FX_CONNECT_H */
