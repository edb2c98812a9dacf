#!/usr/bin/env bash
# The scheduler benchmark: pods bound per second on a simulated cluster (5,000 Node objects,
# 10,000 pods, no agents) and a Deployment of 1,000 replicas, against kube-scheduler's
# published CI floor (680-810 pods/s at 5,000 nodes).
# Usage: bench/scheduler_bench.sh PATH/TO/skiff
#
# Runs crates/skiff/examples/scheduler_bench.rs (built here in release mode) against the given
# binary. The example kills its server and removes its data dir on exit; this script also
# removes the data left by an interrupted run.
set -euo pipefail

skiff=$(readlink -f "${1:?usage: bench/scheduler_bench.sh PATH/TO/skiff}")
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"

cargo=${CARGO:-cargo}
(cd "$root" && "$cargo" build --release -q -p skiff --example scheduler_bench)
bench_bin="$root/target/release/examples/scheduler_bench"

work=$(mktemp -d /tmp/skiff-sched-bench.XXXXXX)
pid=

cleanup() {
  trap - EXIT INT TERM
  stop_process "$pid"
  # A server the example could not kill (the example itself was killed): the one whose data
  # dir is under $work.
  for server in $(pgrep -f -- "--data-dir $work/" || true); do
    kill -KILL "$server" 2>/dev/null || true
  done
  rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$work/tmp"
RUST_BACKTRACE=0 TMPDIR="$work/tmp" SKIFF_BIN="$skiff" "$bench_bin" 2>"$work/stderr" &
pid=$!
if ! wait "$pid"; then
  echo "scheduler_bench failed:" >&2
  grep -v '^\s*[0-9]*: \|^\s*at ' "$work/stderr" | tail -n 60 >&2
  exit 1
fi
