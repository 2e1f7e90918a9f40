/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Process identity: every exec gets an exec id (boot-time ns of the exec),
 * kept per tgid so that a child's exec, a connect and an exit can name the
 * process image they belong to. User space seeds this map from /proc for
 * processes that started before the recording.
 */
#ifndef FX_PROCESS_H
#define FX_PROCESS_H

struct fx_proc {
	__u64 exec_id;
	__u64 start_time;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct fx_proc);
} fx_procs SEC(".maps");

static __always_inline __u32 fx_task_netns(struct task_struct *task)
{
	return BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
}

static __always_inline __u64 fx_exec_id_of(__u32 tgid)
{
	struct fx_proc *p = bpf_map_lookup_elem(&fx_procs, &tgid);

	return p ? p->exec_id : 0;
}

static __always_inline int fx_emit_exec(struct task_struct *task, struct linux_binprm *bprm)
{
	struct fx_exec_event *ev;
	struct fx_proc proc = {};
	struct mm_struct *mm;
	unsigned long start, end;
	__u32 tgid, ppid, len;
	long n;

	tgid = BPF_CORE_READ(task, tgid);
	ppid = BPF_CORE_READ(task, real_parent, tgid);
	proc.exec_id = bpf_ktime_get_boot_ns();
	proc.start_time = BPF_CORE_READ(task, start_time);
	bpf_map_update_elem(&fx_procs, &tgid, &proc, BPF_ANY);

	if (!fx_kind_enabled(FX_KIND_EXEC) || tgid == fx_cfg.self_pid)
		return 0;
	ev = fx_reserve(FX_KIND_EXEC, sizeof(*ev));
	if (!ev)
		return 0;

	ev->pid = tgid;
	ev->tid = BPF_CORE_READ(task, pid);
	ev->ppid = ppid;
	ev->uid = BPF_CORE_READ(task, cred, uid.val);
	ev->gid = BPF_CORE_READ(task, cred, gid.val);
	ev->netns_ino = fx_task_netns(task);
	ev->cgroup_id = bpf_get_current_cgroup_id();
	ev->exec_id = proc.exec_id;
	ev->parent_exec_id = fx_exec_id_of(ppid);
	ev->start_time = proc.start_time;
	ev->flags = 0;
	ev->argc = BPF_CORE_READ(bprm, argc);
	BPF_CORE_READ_INTO(&ev->comm, task, comm);

	n = bpf_probe_read_kernel_str(ev->filename, sizeof(ev->filename), BPF_CORE_READ(bprm, filename));
	ev->filename_len = n > 0 ? n - 1 : 0;
	if (n >= (long)sizeof(ev->filename))
		ev->flags |= FX_EXEC_FILENAME_TRUNCATED;

	mm = BPF_CORE_READ(task, mm);
	start = BPF_CORE_READ(mm, arg_start);
	end = BPF_CORE_READ(mm, arg_end);
	len = end > start ? end - start : 0;
	if (len > FX_ARGS_MAX) {
		len = FX_ARGS_MAX;
		ev->flags |= FX_EXEC_ARGS_TRUNCATED;
	}
	if (len) {
		len = ((len - 1) & (FX_ARGS_MAX - 1)) + 1;	/* bounded for the verifier */
		if (bpf_probe_read_user(ev->args, len, (void *)start) < 0)
			len = 0;
	}
	ev->args_len = len;
	ev->cwd_len = 0;

	fx_submit(ev, FX_KIND_EXEC);
	return 0;
}

static __always_inline int fx_emit_exit(struct task_struct *task)
{
	struct fx_exit_event *ev;
	__u32 tgid = BPF_CORE_READ(task, tgid);
	__u64 exec_id;

	if (BPF_CORE_READ(task, pid) != tgid)
		return 0;	/* a thread, not the process */
	exec_id = fx_exec_id_of(tgid);
	bpf_map_delete_elem(&fx_procs, &tgid);
	if (!fx_kind_enabled(FX_KIND_EXIT) || tgid == fx_cfg.self_pid)
		return 0;
	ev = fx_reserve(FX_KIND_EXIT, sizeof(*ev));
	if (!ev)
		return 0;
	ev->pid = tgid;
	ev->tid = tgid;
	ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	ev->exit_code = BPF_CORE_READ(task, exit_code);
	ev->exec_id = exec_id;
	ev->cgroup_id = bpf_get_current_cgroup_id();
	ev->netns_ino = fx_task_netns(task);
	ev->pad = 0;
	BPF_CORE_READ_INTO(&ev->comm, task, comm);
	fx_submit(ev, FX_KIND_EXIT);
	return 0;
}

#endif /* FX_PROCESS_H */
