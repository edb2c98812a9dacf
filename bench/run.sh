#!/usr/bin/env bash
# Benchmarks: Skiff against a peer in the same run, reported as ratios (never as absolute
# targets). Usage: bench/run.sh PATH/TO/skiff
#
# Each case is timed with hyperfine (warm-up, then repeated runs); peak memory comes from GNU
# time's maximum resident set size. A ratio below 1.0 means Skiff is faster / smaller.
set -euo pipefail

skiff=$(readlink -f "${1:?usage: bench/run.sh PATH/TO/skiff}")
for tool in hyperfine jq runc crun /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing: run \`make deps\`" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ln -s "$skiff" "$work/skiff-runc"
runc_bin="$work/skiff-runc"
runs=${BENCH_RUNS:-30}

median_ms() { # hyperfine json -> median of command N in ms
  jq -r ".results[$2].median * 100000 | round / 100" "$1"
}

peak_kib() { # peak RSS of one run, in KiB
  /usr/bin/time -f '%M' "$@" 2>&1 >/dev/null | tail -n 1
}

printf '%-44s %12s %12s %8s\n' "case (skiff vs peer)" "skiff" "peer" "ratio"
printf '%-44s %12s %12s %8s\n' "--------------------" "-----" "----" "-----"

row() { # name unit skiff_value peer_value
  ratio=$(awk -v a="$3" -v b="$4" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
  printf '%-44s %10s %s %10s %s %8s\n' "$1" "$3" "$2" "$4" "$2" "$ratio"
}

time_pair() { # name skiff_cmd peer_cmd
  hyperfine -N --warmup 3 --runs "$runs" --export-json "$work/h.json" -i "$2" "$3" >/dev/null 2>&1
  row "$1 (time)" ms "$(median_ms "$work/h.json" 0)" "$(median_ms "$work/h.json" 1)"
}

mem_pair() { # name skiff_cmd... -- peer_cmd...
  local name=$1; shift
  local a=() b=() seen=0
  for arg in "$@"; do
    if [ "$arg" = "--" ]; then seen=1; continue; fi
    if [ $seen = 0 ]; then a+=("$arg"); else b+=("$arg"); fi
  done
  row "$name (peak RSS)" KiB "$(peak_kib "${a[@]}")" "$(peak_kib "${b[@]}")"
}

# Runtime CLI start-up: what every engine pays per call (podman and containerd call the
# runtime binary for each verb).
time_pair "runtime --version vs runc" "$runc_bin --version" "runc --version"
time_pair "runtime --version vs crun" "$runc_bin --version" "crun --version"
time_pair "runtime state <missing> vs runc" "$runc_bin --root $work/root state nope" "runc --root $work/root state nope"
mem_pair "runtime --version vs runc" "$runc_bin" --version -- runc --version
mem_pair "runtime --version vs crun" "$runc_bin" --version -- crun --version

echo
# Container lifecycle: create + start + wait + delete of /bin/true, against runc and crun.
python3 "$(dirname "$0")/runtime_bench.py" "$skiff" "$runs"

echo
# The engine: skiff run --rm against podman and docker on the same image.
"$(dirname "$0")/engine_bench.sh" "$skiff" "$runs"

echo
# Image pull: skiff pull of a three-layer image from a loopback registry against skopeo copy.
"$(dirname "$0")/pull_bench.sh" "$skiff" "${BENCH_PULL_RUNS:-10}"

echo
# The API server: readiness time, idle RSS, creates/s on SQLite and etcd against raw etcd puts.
python_bin=${SKIFF_PYTHON:-$(dirname "$0")/../build/venv/bin/python}
"$python_bin" "$(dirname "$0")/apiserver_bench.py" "$skiff" 10

echo
# Networking: proxy rule propagation across a 3-node cluster, ClusterIP against pod IP HTTP.
"$(dirname "$0")/net_bench.sh" "$skiff"

echo
# The scheduler: pods bound per second at 5,000 simulated nodes, a 1,000-replica Deployment.
"$(dirname "$0")/scheduler_bench.sh" "$skiff"

echo
# Pod start: create -> Running on one node, one at a time and 100 at once, against podman kube play.
"$(dirname "$0")/pod_start_bench.sh" "$skiff"
