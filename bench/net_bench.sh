#!/usr/bin/env bash
# The networking benchmark: rule propagation across a 3-node cluster (1,000 Services x 10
# endpoints, 50 EndpointSlice changes) and HTTP through a ClusterIP against the pod IP.
# Usage: bench/net_bench.sh PATH/TO/skiff
#
# Runs crates/skiff/examples/net_bench.rs (built here in release mode) against the given
# binary. Everything it creates -- network namespaces, skiff processes, containers, data
# directories -- is removed on exit, also when interrupted or killed: the example cleans up
# after itself, and this script sweeps whatever an interrupted run left behind.
set -euo pipefail

skiff=$(readlink -f "${1:?usage: bench/net_bench.sh PATH/TO/skiff}")
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
for tool in wrk nft nsenter ip busybox; do
  command -v "$tool" >/dev/null || { echo "net_bench: $tool is missing: run \`make deps\`" >&2; exit 1; }
done

cargo=${CARGO:-cargo}
(cd "$root" && "$cargo" build --release -q -p skiff --example net_bench)
bench_bin="$root/target/release/examples/net_bench"

work=$(mktemp -d /tmp/skiff-net-bench.XXXXXX)
pid=

cleanup() {
  trap - EXIT INT TERM
  stop_process "$pid"
  # Processes still running in the run's namespaces (skiff server and agents).
  kill_netns_processes "$pid"
  # Containers of every node's data root (all data roots live under $work).
  remove_containers "$skiff" "$work"/tmp/skiff-net-*
  delete_netns "$pid"
  # Mounts left under the data roots, deepest first, then the files.
  remove_tree "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$work/tmp"
RUST_BACKTRACE=0 TMPDIR="$work/tmp" SKIFF_BIN="$skiff" SKIFF_NET_BENCH_STATE="$work/state" \
  "$bench_bin" 2>"$work/stderr" &
pid=$!
if ! wait "$pid"; then
  echo "net_bench failed:" >&2
  grep -v '^\s*[0-9]*: \|^\s*at ' "$work/stderr" | tail -n 120 >&2
  exit 1
fi
