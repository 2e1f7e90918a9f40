#!/usr/bin/env bash
# Installs, only when missing, what building, recording and testing need on a
# Debian machine that has the .NET SDK. Sourced by test.sh and demo.sh.
set -euo pipefail

need_pkgs=()
want() { # want <command-or-file> <debian package>
  if [[ "$1" == /* ]]; then [[ -e "$1" ]] || need_pkgs+=("$2"); else command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2"); fi
}

want /usr/lib/x86_64-linux-gnu/libbpf.so.1 libbpf1
want ip iproute2
want /usr/bin/python3 python3  # kernel tests run small socket clients
if [[ "${FORENSICS_DEV:-0}" == 1 ]]; then
  # Building and checking the BPF objects (users run the committed ones).
  want clang-14 clang-14
  want llvm-strip-14 llvm-14
  want /usr/include/bpf/bpf_helpers.h libbpf-dev
  want /usr/include/x86_64-linux-gnu/asm/types.h linux-libc-dev
  want bpftool bpftool
  want tshark tshark
  want tcpdump tcpdump
  want ssh-keygen openssh-client
  want iptables iptables   # kernel NAT tests: real iptables / nftables rules in private namespaces
  want nft nftables
  # The Arrow tests read this tool's Arrow output with apache-arrow (npm) under Node (tests/arrow/).
  want node nodejs
  want npm npm
fi
if [[ "${FORENSICS_DEV:-0}" == 1 || "${FORENSICS_CONTAINERD:-0}" == 1 ]]; then
  # The containerd lab node (spec.node: containerd), its kernel tests and `demo.sh containerd`.
  want /usr/bin/containerd containerd
  want /usr/sbin/runc runc
  want /usr/lib/cni/bridge containernetworking-plugins
  want /bin/busybox busybox-static
  want /usr/sbin/iptables-restore iptables
  want /usr/bin/nsenter util-linux
fi
if [[ "${FORENSICS_BENCH:-0}" == 1 ]]; then
  # bench/run.sh: the C baselines, jq and DuckDB-over-JSON comparisons, traffic between lab pods.
  want clang-14 clang-14
  want cc gcc
  want /usr/include/bpf/bpf_helpers.h libbpf-dev
  want /usr/include/x86_64-linux-gnu/asm/types.h linux-libc-dev
  want jq jq
  want iperf3 iperf3
  want tcpdump tcpdump
  want conntrack conntrack # the baseline of the conntrack ingest benchmark (conntrack -E)
  want iptables iptables
fi

if ((${#need_pkgs[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "error: missing packages ${need_pkgs[*]}: run as root (sudo) or install them with apt-get" >&2
    exit 3
  fi
  echo "installing: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if ! command -v dotnet >/dev/null 2>&1; then
  echo "error: the .NET SDK (dotnet) is not on PATH: install the .NET 10 SDK" >&2
  exit 3
fi
