/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Process identity: every exec gets an exec id (boot-time ns of the exec),
 * kept per tgid so that a child's exec, a connect and an exit can name the
 * process image they belong to; a forked child inherits its parent's until
 * it execs. User space seeds this map from /proc for processes that started
 * before the recording. Exec events also carry the working directory (a
 * bounded dentry walk across mounts, relative to the task's root).
 */
#ifndef FX_PROCESS_H
#define FX_PROCESS_H

struct fx_proc {
	__u64 exec_id;
	__u64 start_time;
	__u64 binary_hash;	/* FNV-1a 64 of the path the image was executed by (matchBinaries) */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct fx_proc);
} fx_procs SEC(".maps");

/* Bounds of the working-directory walk: path components, mounts included. */
#define FX_CWD_DEPTH 32
#define FX_CWD_STEPS 48

struct fx_path_scratch {
	__u8 buf[FX_CWD_MAX * 2];	/* room for a full read at any offset below FX_CWD_MAX */
	const unsigned char *names[FX_CWD_DEPTH];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fx_path_scratch);
} fx_path_scratch SEC(".maps");

/* v & mask, kept in the instruction stream so the verifier sees the bound. */
static __always_inline __u64 fx_mask(__u64 v, const __u64 mask)
{
	asm volatile("%[v] &= %[m]" : [v] "+r"(v) : [m] "i"(mask));
	return v;
}

static __always_inline struct mount *fx_real_mount(struct vfsmount *vfsmnt)
{
	return (struct mount *)((char *)vfsmnt - bpf_core_field_offset(struct mount, mnt));
}

struct fx_cwd_walk {
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	struct dentry *root_dentry;
	struct vfsmount *root_mnt;
	__u32 n;
	__u32 complete;
};

/* One step up the tree: a component, a mount crossing, or the end. */
static long fx_cwd_step(__u32 i, void *data)
{
	struct fx_cwd_walk *w = data;
	struct dentry *dentry = w->dentry, *mnt_root, *parent;
	struct vfsmount *vfsmnt = w->vfsmnt;
	struct mount *mnt = w->mnt, *mnt_parent;
	struct fx_path_scratch *s;
	__u32 zero = 0;

	if (dentry == w->root_dentry && vfsmnt == w->root_mnt) {
		w->complete = 1;
		return 1;
	}
	mnt_root = BPF_CORE_READ(vfsmnt, mnt_root);
	parent = BPF_CORE_READ(dentry, d_parent);
	if (dentry == mnt_root || dentry == parent) {
		mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
		if (dentry != mnt_root || mnt == mnt_parent) {
			w->complete = 1;	/* the global root (or an unreachable dentry) */
			return 1;
		}
		/* cross from this mount's root to its mount point in the parent */
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = mnt_parent;
		w->vfsmnt = (struct vfsmount *)((char *)mnt_parent + bpf_core_field_offset(struct mount, mnt));
		return 0;
	}
	if (w->n >= FX_CWD_DEPTH)
		return 1;
	s = bpf_map_lookup_elem(&fx_path_scratch, &zero);
	if (!s)
		return 1;
	s->names[fx_mask(w->n, FX_CWD_DEPTH - 1)] = BPF_CORE_READ(dentry, d_name.name);
	w->n++;
	w->dentry = parent;
	return 0;
}

struct fx_cwd_write {
	__u32 n;
	__u32 off;
	__u32 truncated;
};

/* Writes component n-1-i (the collection is leaf first) after a '/'. */
static long fx_cwd_put(__u32 i, void *data)
{
	struct fx_cwd_write *w = data;
	struct fx_path_scratch *s;
	__u32 zero = 0;
	long r;

	if (i >= w->n)
		return 1;
	if (w->off > FX_CWD_MAX - 2) {
		w->truncated = 1;
		return 1;
	}
	s = bpf_map_lookup_elem(&fx_path_scratch, &zero);
	if (!s)
		return 1;
	s->buf[fx_mask(w->off, FX_CWD_MAX - 1)] = '/';
	w->off++;
	r = bpf_probe_read_kernel_str(&s->buf[fx_mask(w->off, FX_CWD_MAX - 1)], FX_CWD_MAX,
				      s->names[fx_mask(w->n - 1 - i, FX_CWD_DEPTH - 1)]);
	if (r > 1 && r <= FX_CWD_MAX)
		w->off += r - 1;
	return 0;
}

/*
 * The task's working directory as d_path() would print it, relative to the
 * task's root: walk the dentries up to each mount's root, cross to the
 * mount point in the parent mount, stop at the task's root or the global
 * root. At most FX_CWD_STEPS steps and FX_CWD_DEPTH components; a deeper or
 * longer path is truncated (flagged). Writes ev->cwd and ev->cwd_len.
 */
static __always_inline void fx_read_cwd(struct task_struct *task, struct fx_exec_event *ev)
{
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	struct fx_cwd_walk walk = {};
	struct fx_cwd_write put = {};
	struct fx_path_scratch *s;
	__u32 zero = 0;

	ev->cwd_len = 0;
	s = bpf_map_lookup_elem(&fx_path_scratch, &zero);
	if (!s || !fs)
		return;
	walk.dentry = BPF_CORE_READ(fs, pwd.dentry);
	walk.vfsmnt = BPF_CORE_READ(fs, pwd.mnt);
	walk.root_dentry = BPF_CORE_READ(fs, root.dentry);
	walk.root_mnt = BPF_CORE_READ(fs, root.mnt);
	walk.mnt = fx_real_mount(walk.vfsmnt);
	bpf_loop(FX_CWD_STEPS, fx_cwd_step, &walk, 0);
	if (!walk.complete)
		ev->flags |= FX_EXEC_CWD_TRUNCATED;

	put.n = walk.n;
	bpf_loop(FX_CWD_DEPTH, fx_cwd_put, &put, 0);
	if (put.truncated)
		ev->flags |= FX_EXEC_CWD_TRUNCATED;
	if (walk.n == 0) {
		s->buf[0] = '/';
		put.off = 1;
	}
	if (put.off >= FX_CWD_MAX) {
		ev->flags |= FX_EXEC_CWD_TRUNCATED;
		put.off = FX_CWD_MAX;
	}
	if (bpf_probe_read_kernel(ev->cwd, FX_CWD_MAX, s->buf) == 0)
		ev->cwd_len = put.off;
}

/*
 * The path exec was given, read through the scratch buffer so that a name of
 * exactly FX_FILENAME_MAX bytes is kept whole (no NUL then) and only a longer
 * one is flagged as truncated.
 */
static __always_inline void fx_read_filename(struct linux_binprm *bprm, struct fx_exec_event *ev)
{
	struct fx_path_scratch *s;
	__u32 zero = 0;
	long n;

	ev->filename_len = 0;
	s = bpf_map_lookup_elem(&fx_path_scratch, &zero);
	if (!s)
		return;
	n = bpf_probe_read_kernel_str(s->buf, sizeof(s->buf), BPF_CORE_READ(bprm, filename));
	if (n > FX_FILENAME_MAX + 1) {
		ev->flags |= FX_EXEC_FILENAME_TRUNCATED;
		n = FX_FILENAME_MAX + 1;
	}
	if (n > 1 && bpf_probe_read_kernel(ev->filename, FX_FILENAME_MAX, s->buf) == 0)
		ev->filename_len = n - 1;
}

static __always_inline __u32 fx_task_netns(struct task_struct *task)
{
	return BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
}

static __always_inline __u64 fx_exec_id_of(__u32 tgid)
{
	struct fx_proc *p = bpf_map_lookup_elem(&fx_procs, &tgid);

	return p ? p->exec_id : 0;
}

static __always_inline __u64 fx_binary_hash_of(__u32 tgid)
{
	struct fx_proc *p = bpf_map_lookup_elem(&fx_procs, &tgid);

	return p ? p->binary_hash : 0;
}

/* FNV-1a 64 of the exec's path (bprm->filename), as user space hashes matchBinaries paths. */
static __always_inline __u64 fx_filename_hash(struct linux_binprm *bprm)
{
	__u32 zero = 0;
	struct fx_path_scratch *s = bpf_map_lookup_elem(&fx_path_scratch, &zero);
	__u64 h = 0xcbf29ce484222325ull;
	int i;

	if (!s || bpf_probe_read_kernel_str(s->buf, FX_FILENAME_MAX, BPF_CORE_READ(bprm, filename)) <= 0)
		return 0;
	for (i = 0; i < FX_FILENAME_MAX; i++) {
		__u8 c = s->buf[i];

		if (!c)
			break;
		h = (h ^ c) * 0x100000001b3ull;
	}
	return h;
}

static __always_inline int fx_emit_exec(struct task_struct *task, struct linux_binprm *bprm)
{
	struct fx_exec_event *ev;
	struct fx_proc proc = {};
	struct mm_struct *mm;
	unsigned long start, end;
	__u32 tgid, ppid, len;

	tgid = BPF_CORE_READ(task, tgid);
	ppid = BPF_CORE_READ(task, real_parent, tgid);
	proc.exec_id = bpf_ktime_get_boot_ns();
	proc.start_time = BPF_CORE_READ(task, start_boottime);
	proc.binary_hash = fx_filename_hash(bprm);
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

	fx_read_filename(bprm, ev);

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
	fx_read_cwd(task, ev);

	fx_submit(ev, FX_KIND_EXEC);
	return 0;
}

/*
 * A new process (not a thread) runs its parent's image until it execs: it
 * inherits the parent's exec id, so a forked worker's connects and exit name
 * the image they run. No event: the exec that follows, if any, is one.
 */
static __always_inline int fx_on_fork(struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = BPF_CORE_READ(parent, tgid);
	__u32 ctgid = BPF_CORE_READ(child, tgid);
	struct fx_proc *pp;

	if (BPF_CORE_READ(child, pid) != ctgid || ptgid == ctgid)
		return 0;
	pp = bpf_map_lookup_elem(&fx_procs, &ptgid);
	if (pp)
		bpf_map_update_elem(&fx_procs, &ctgid, pp, BPF_ANY);
	return 0;
}

static __always_inline int fx_emit_exit(struct task_struct *task)
{
	struct fx_exit_event *ev;
	__u32 tgid = BPF_CORE_READ(task, tgid);
	__u64 exec_id;

	/* do_exit() decremented signal->live before this tracepoint: 0 means the
	 * last thread of the process is exiting (whichever thread it is). */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	exec_id = fx_exec_id_of(tgid);
	bpf_map_delete_elem(&fx_procs, &tgid);
	if (!fx_kind_enabled(FX_KIND_EXIT) || tgid == fx_cfg.self_pid)
		return 0;
	ev = fx_reserve(FX_KIND_EXIT, sizeof(*ev));
	if (!ev)
		return 0;
	ev->pid = tgid;
	ev->tid = BPF_CORE_READ(task, pid);
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
