#!/usr/bin/env bash
# The main job, on a fresh machine: build, record the star wars lab scenario
# (a real cluster of network namespaces with our eBPF datapath and probes),
# then show what the recording caught. Run as root: sudo ./demo.sh
#
#   sudo ./demo.sh containerd   the same scenario on a node of real containerd pods behind
#                               kube-proxy's iptables rules, recorded host-wide (no --lab) with
#                               pods and containers attributed from containerd's CRI socket
set -euo pipefail
cd "$(dirname "$0")"
mode="${1:-netns}"
[[ "$mode" == containerd ]] && export FORENSICS_CONTAINERD=1
source scripts/prereqs.sh
if [[ $(id -u) -ne 0 ]]; then echo "error: the demo builds network namespaces and loads BPF programs: run it with sudo" >&2; exit 3; fi
show() { echo; echo "== forensics $*"; ./forensics "$@"; }

if [[ "$mode" == containerd ]]; then
  lab=examples/starwars-containerd.yaml
  rec="recordings/starwars-containerd-$(date -u +%Y%m%d-%H%M%S)"
  mkdir -p recordings
  ./forensics lab down "$lab" >/dev/null
  echo "== lab up $lab (containerd, CRI pods, kube-proxy rules), in the background"
  ./forensics lab up "$lab" > recordings/lab-up.log 2>&1 &
  up=$!
  trap './forensics lab down "$lab" >/dev/null 2>&1 || true' EXIT
  for _ in $(seq 1 240); do ./forensics lab status "$lab" | grep -q ': ready' && break; sleep 0.5; done
  ./forensics lab status "$lab"
  endpoint=$(sed -n 's/.*"ContainerdDir": "\(.*\)".*/unix:\/\/\1\/containerd.sock/p' /run/forensics/lab/swcd.json)
  echo "== recording the node host-wide (attribution from $endpoint, NAT from the node's conntrack) while lab run runs the steps"
  # until the steps are done (SIGTERM stops it as Ctrl-C does; the duration only bounds a run that hangs)
  ./forensics record --duration 10m --runtime-endpoint "$endpoint" --netns swcd-node -o "$rec" &
  recorder=$!
  for _ in $(seq 1 120); do [[ -f "$rec/manifest.json" ]] && break; sleep 0.5; done
  ./forensics lab run "$lab" || true
  kill -TERM "$recorder"
  wait "$recorder" || true
  ./forensics lab down "$lab"
  wait "$up" 2>/dev/null || true
  trap - EXIT
  show info "$rec"
  show query "$rec" "SELECT namespace, pod, container, \"binary\", dst_ip, dst_port FROM connect WHERE pod IS NOT NULL ORDER BY time"
  show query "$rec" "SELECT pod, container, reason_name, function, dst_ip, dst_port, count(*) AS drops FROM kdrop WHERE pod IS NOT NULL GROUP BY ALL"
  show query "$rec" "SELECT phase, namespace, pod, uid, ips FROM pods ORDER BY taken, pod"
  show drops "$rec"
  show nat "$rec"
  show connects --external "$rec"
  show replay "$rec" -f compact --pod xwing -t process -t connect -t exit
  echo
  echo "The recording is in $rec: plain Parquet files and a manifest (see schemas/README.md)."
  exit 0
fi

rec="recordings/starwars-$(date -u +%Y%m%d-%H%M%S)"
mkdir -p recordings
echo "== recording the star wars scenario to $rec"
./forensics record --lab examples/starwars.yaml -o "$rec"

show info "$rec"
show drops "$rec"
show nat "$rec"
show connects --external "$rec"
show replay "$rec" -t drop -t policy-verdict
show replay "$rec" -f compact --pod xwing -t process -t connect -t exit
show flow "$rec" --pod xwing --port 443
show query "$rec" "SELECT reason_name, count(*) AS drops FROM \"drop\" GROUP BY ALL ORDER BY drops DESC"
echo
echo "The recording is in $rec: plain Parquet files and a manifest (see schemas/README.md)."
