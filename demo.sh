#!/usr/bin/env bash
# The main job, on a fresh machine: build, record the star wars lab scenario
# (a real cluster of network namespaces with our eBPF datapath and probes),
# then show what the recording caught. Run as root: sudo ./demo.sh
set -euo pipefail
cd "$(dirname "$0")"
source scripts/prereqs.sh
if [[ $(id -u) -ne 0 ]]; then echo "error: the demo builds network namespaces and loads BPF programs: run it with sudo" >&2; exit 3; fi

rec="recordings/starwars-$(date -u +%Y%m%d-%H%M%S)"
mkdir -p recordings
echo "== recording the star wars scenario to $rec"
./forensics record --lab examples/starwars.yaml -o "$rec"

show() { echo; echo "== forensics $*"; ./forensics "$@"; }
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
