#!/usr/bin/env bash
# Runs the benchmarks of issue 7 and prints their lines (copy them into bench/RESULTS.md).
#   bench/run.sh [all|ingest|ingest-exec|writer|datapath|query|query10m|import|net|capture|conntrack|whatif|monitor|arrow|flows-walk]   (root: BPF, BPF_PROG_TEST_RUN, veths named fxb*, labs named fxn*)
#   bench/run.sh soak [--minutes N] [--baseline-minutes N] [--churn N/s] [--execs N/s] [--drops N/s] [--record-args "ARGS"]   (not part of all: 10+ minutes; lab fxsoak)
# Output files go to $FXB_DIR (default /tmp/fxb-bench); everything is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
out=${FXB_OUT:-bench/out}
mkdir -p "$out"
export FXB_DIR=${FXB_DIR:-/tmp/fxb-bench}

FORENSICS_BENCH=1 source scripts/prereqs.sh   # installs what is missing (root), or says what to install
echo "# $(date -u +%FT%TZ) $(uname -r) nproc=$(nproc) load: $(cut -d' ' -f1-3 /proc/loadavg)"
dotnet build bench/Forensics.Bench -c Release -v q -nologo >/dev/null
bench=bench/Forensics.Bench/bin/Release/net10.0/Forensics.Bench
cc -O2 -Wall -o "$out/drain" bench/c/drain.c -lbpf -lpthread
cc -O2 -Wall -o "$out/udpflood" bench/c/udpflood.c
cc -O2 -Wall -o "$out/ctflood" bench/c/ctflood.c
cc -O2 -Wall -o "$out/churn" bench/c/churn.c
cc -O2 -Wall -o "$out/execloop" bench/c/execloop.c
clang-14 -O2 -g -target bpf -D__TARGET_ARCH_x86 -I/usr/include/$(uname -m)-linux-gnu \
	-c bench/bpf/baseline.bpf.c -o "$out/baseline.bpf.o"
clang-14 -O2 -g -target bpf -D__TARGET_ARCH_x86 -I/usr/include/$(uname -m)-linux-gnu \
	-c bench/bpf/exec_producer.bpf.c -o "$out/exec_producer.bpf.o"

if [[ $what == soak ]]; then
	# issue 18: a lab under sustained load (iperf3 TCP, a churn of short connections, execs, denied datagrams) recorded by
	# `forensics record --lab` with its defaults for --minutes (default 10), after a baseline of the same load with the
	# datapath and nothing recording (and one minute of tcpdump -w of every packet, counted); a line per minute and a table
	minutes=10 baseline=2 churn=500 execs=300 drops=50 record_args=""
	shift
	while [[ $# -gt 0 ]]; do
		case $1 in
			--minutes) minutes=$2; shift 2 ;;
			--baseline-minutes) baseline=$2; shift 2 ;;
			--churn) churn=$2; shift 2 ;;
			--execs) execs=$2; shift 2 ;;
			--drops) drops=$2; shift 2 ;;
			--record-args) record_args=$2; shift 2 ;;   # e.g. "--monitor-aggregation none --capture all": every packet
			*) echo "soak: unknown option $1" >&2; exit 2 ;;
		esac
	done
	./forensics --help >/dev/null   # builds the command the soak runs
	timeout $(( (minutes + baseline) * 60 + 900 )) "$bench" soak "$PWD/forensics" "$out/churn" "$out/execloop" "$out/udpflood" "$minutes" "$baseline" "$churn" "$execs" "$drops" "$record_args"
	exit 0
fi
if [[ $what == all || $what == ingest ]]; then
	# the C baseline: a filled 16 MiB ring drained, and a live producer with a concurrent consumer
	echo "drain $(timeout 60 "$out/drain" bpf/datapath.bpf.o filled 20)"
	echo "drain $(timeout 60 "$out/drain" bpf/datapath.bpf.o live 5)"
	# the recorder: fixed rates (one process each, so peak memory is that trial's), then stepped rates
	timeout 120 "$bench" ingest-fixed 100000 5
	timeout 120 "$bench" ingest-fixed 1000000 5
	# the same after a 2 s warm-up trial in the same process (JIT tiering done), 8 s measured
	timeout 120 "$bench" ingest-fixed 750000 8 warm
	timeout 120 "$bench" ingest-fixed 1000000 8 warm
	timeout 120 "$bench" ingest-fixed 2000000 8 warm
	timeout 600 "$bench" ingest-step 3
	echo "drain $(timeout 60 "$out/drain" bpf/datapath.bpf.o live 5)"
fi
if [[ $what == all || $what == ingest-exec ]]; then
	# exec events (1640 bytes each): the C drain of the same producer, then the recorder at rising rates
	export FXB_PROG=fxb_exec FXB_KIND=6
	echo "drain-exec $(timeout 60 "$out/drain" "$out/exec_producer.bpf.o" filled 20 2>/dev/null)"
	echo "drain-exec $(timeout 60 "$out/drain" "$out/exec_producer.bpf.o" live 5 2>/dev/null)"
	unset FXB_PROG FXB_KIND
	for rate in 50000 100000 200000 300000 400000 500000 750000 1000000; do
		timeout 120 "$bench" ingest-exec "$out/exec_producer.bpf.o" $rate 5 warm | grep '^ingest-exec'
	done
fi
if [[ $what == all || $what == writer ]]; then
	# the Parquet writer alone (one thread, real trace rows), and Parquet.Net 6 per column type
	timeout 300 "$bench" writer 100
	timeout 300 "$bench" columns
fi
if [[ $what == all || $what == datapath ]]; then
	timeout 600 "$bench" datapath "$out/baseline.bpf.o"
fi
if [[ $what == all || $what == query ]]; then
	timeout 900 "$bench" query 1000000 50000
	timeout 600 "$bench" storage-exec 1000000
fi
if [[ $what == all || $what == import ]]; then
	# Hubble and Tetragon exports (1M lines each, shaped like real ones) imported: storage and queries
	timeout 1200 "$bench" import 1000000
fi
if [[ $what == all || $what == net ]]; then
	# two lab pods (namespaces fxn<pid>-*): iperf3 TCP, iperf3 and udpflood 64-byte UDP, 4 s each;
	# no BPF, datapath attached with events off, datapath + probes recorded (forensics record --lab defaults); 3 trials, ratios per trial
	timeout 300 "$bench" net "$out/udpflood" 4 3
fi
if [[ $what == all || $what == capture ]]; then
	# 64-byte UDP from one lab pod to another at rising offered loads (0 = as fast as the sender goes), 3 s each,
	# tcpdump -w on the client's host veth and the datapath's capture recorded at the same time:
	# first with every kind and the probes on (forensics record --lab), then with capture events only
	timeout 180 "$bench" capture "$out/udpflood" 3 100000,200000,300000,1000000,0 all
	timeout 180 "$bench" capture "$out/udpflood" 3 100000,200000,300000,1000000,0 capture
fi
if [[ $what == all || $what == flows-walk ]]; then
	# the flows table's read of the datapath's conntrack map (every second while recording), batched and key by key
	timeout 300 "$bench" flows-walk 20
fi
if [[ $what == all || $what == monitor ]]; then
	# the monitor socket: events/s to 1 and 3 clients of a running datapath against the ring drained directly,
	# as fast as the producer goes, then at fixed rates (5 s each)
	timeout 600 "$bench" monitor 5 0,500000,1000000
fi
if [[ $what == all || $what == conntrack ]]; then
	# new conntrack entries (one UDP datagram per new 5-tuple, DNATed) in a namespace fxbct<pid>, 5 s per rate:
	# ours (ctnetlink over the socket API) and `conntrack -E -o timestamp > file` listening at the same time
	timeout 300 "$bench" conntrack "$out/ctflood" 5 25000,50000,100000,200000,0
fi
if [[ $what == all || $what == whatif ]]; then
	# whatif (issue 20): 100k flows through the real datapath in-process (against the kernel's own time for the same runs),
	# then `forensics whatif` on a recording of 10M trace events over 100k flows (a changed policy, --changed-only)
	FXB_FORENSICS=${FXB_FORENSICS:-./forensics} timeout 1800 "$bench" whatif 10000000 100000
fi
if [[ $what == all || $what == arrow ]]; then
	# issue 22: query -f arrow / arrow-file / csv / json over 10M trace rows (wall, bytes, peak RSS), then the
	# monitor's Arrow stream at 1M events/s against the recorder's own ingest at the same rate, in this run
	dotnet build src/Cli -c Release -v q -nologo >/dev/null
	timeout 1800 "$bench" arrow-query 10000000 "$PWD/src/Cli/bin/Release/net10.0/forensics.dll"
	timeout 120 "$bench" ingest-fixed 1000000 5 warm
	timeout 120 "$bench" arrow-monitor 1000000 5
	timeout 120 "$bench" arrow-monitor 2000000 5
fi
if [[ $what == query10m ]]; then
	timeout 1800 "$bench" query 10000000 50000
fi
