/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The few kernel types the tracing programs read, declared with
 * preserve_access_index so that libbpf relocates every field against the
 * running kernel's BTF (CO-RE). Only the fields we read are listed; their
 * order and neighbours do not matter. Packet headers and BPF uapi come from
 * the kernel's uapi headers instead.
 */
#ifndef FX_KERNEL_H
#define FX_KERNEL_H

#include <linux/types.h>
#include <linux/in6.h>

#define __ksym __attribute__((section(".ksyms")))
#define FX_CORE __attribute__((preserve_access_index))

typedef struct { __u32 val; } kuid_t;
typedef struct { __u32 val; } kgid_t;

struct ns_common {
	unsigned int inum;
} FX_CORE;

struct net {
	struct ns_common ns;
} FX_CORE;

struct nsproxy {
	struct net *net_ns;
} FX_CORE;

struct cred {
	kuid_t uid;
	kgid_t gid;
} FX_CORE;

struct qstr {
	const unsigned char *name;
} FX_CORE;

struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
} FX_CORE;

struct vfsmount {
	struct dentry *mnt_root;
} FX_CORE;

/* fs/mount.h: a vfsmount is embedded in its struct mount (container_of via CO-RE). */
struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
} FX_CORE;

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
} FX_CORE;

struct fs_struct {
	struct path root;
	struct path pwd;
} FX_CORE;

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
} FX_CORE;

typedef struct { int counter; } atomic_t;

struct signal_struct {
	atomic_t live;
	int group_exit_code;
	unsigned int flags;
} FX_CORE;

struct inode {
	__u16 i_mode;
} FX_CORE;

struct file {
	struct inode *f_inode;
	void *private_data;
} FX_CORE;

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} FX_CORE;

struct files_struct {
	struct fdtable *fdt;
} FX_CORE;

struct task_struct {
	int pid;
	int tgid;
	unsigned int flags;
	int exit_code;
	__u64 start_time;
	__u64 start_boottime;
	char comm[16];
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	const struct cred *cred;
	struct nsproxy *nsproxy;
	struct fs_struct *fs;
	struct files_struct *files;
	struct mm_struct *mm;
	struct signal_struct *signal;
} FX_CORE;

struct linux_binprm {
	int argc;
	const char *filename;
} FX_CORE;

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	int ifindex;
	possible_net_t nd_net;
} FX_CORE;

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} FX_CORE;

struct sock {
	struct sock_common __sk_common;
	__u16 sk_type;
	__u16 sk_protocol;
} FX_CORE;

struct inet_sock {
	struct sock sk;
	__be16 inet_sport;
} FX_CORE;

struct socket {
	short type;
	struct sock *sk;
} FX_CORE;

struct sk_buff {
	struct net_device *dev;
	struct sock *sk;
	unsigned int len;
	__u16 protocol;
	__u16 network_header;
	__u16 transport_header;
	unsigned char *head;
	unsigned char *data;
} FX_CORE;

/* Only the values the programs compare against; CO-RE relocates them. */
enum skb_drop_reason {
	SKB_NOT_DROPPED_YET = 0,
	SKB_CONSUMED = 1,
};

#define PF_KTHREAD 0x00200000
#define S_IFMT 00170000
#define S_IFSOCK 0140000

#endif /* FX_KERNEL_H */
