#!/usr/bin/env bash
# Runs a command in private network and mount namespaces, so that kernel tests
# (labs with fixed names, /run/netns, /run/forensics, bpffs pins, iptables,
# conntrack) neither see nor disturb the machine's own network or another run
# of the tests on the same machine. Used by test.sh; usable by hand:
#   sudo scripts/private-ns.sh dotnet test tests/Forensics.Kernel.Tests ...
# Inside: a fresh /run (tmpfs), a sysfs of the new network namespace (so
# /sys/class/net shows its links) with the machine's cgroup and tracing mounts
# carried over, a fresh bpffs at /sys/fs/bpf, loopback up. /tmp and the rest of
# the file system are the machine's.
set -euo pipefail
if [[ "${FORENSICS_PRIVATE_NS:-}" != inside ]]; then
  if [[ $(id -u) -ne 0 ]]; then exec "$@"; fi  # without root, kernel tests skip anyway
  export FORENSICS_PRIVATE_NS=inside
  exec unshare --net --mount --fork -- "$0" "$@"
fi
mount --make-rprivate /
mount -t tmpfs -o mode=0755 forensics-run /run
mkdir -p /run/lock /run/user
# sysfs shows the links of the network namespace that mounted it: mount one for ours, keeping the
# machine's cgroup hierarchy and tracefs/debugfs where they were.
keep=()
for m in /sys/fs/cgroup /sys/kernel/tracing /sys/kernel/debug; do
  if mountpoint -q "$m"; then
    mkdir -p "/run/.keep$m"; mount --rbind "$m" "/run/.keep$m"; keep+=("$m")
  fi
done
umount -l /sys
mount -t sysfs sysfs /sys
for m in "${keep[@]}"; do mount --move "/run/.keep$m" "$m"; done
rm -rf /run/.keep
mount -t bpf -o mode=0700 bpf /sys/fs/bpf
ip link set lo up
exec "$@"
