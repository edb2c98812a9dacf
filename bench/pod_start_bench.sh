#!/usr/bin/env bash
# The pod start benchmark: create -> Running seen through a watch on one node, image present,
# 100 pods one after another (p50/p99) and 100 at once (until all Running), the agent's idle
# RSS, each against `podman kube play` of the same manifest.
# Usage: bench/pod_start_bench.sh PATH/TO/skiff
#
# Runs crates/skiff/examples/pod_start_bench.rs (built here in release mode) against the given
# binary. Everything it creates -- network namespaces, skiff processes, containers, podman's
# pods and storage, data directories -- is removed on exit, also when interrupted or killed:
# the example cleans up after itself, and this script sweeps whatever an interrupted run left.
set -euo pipefail

skiff=$(readlink -f "${1:?usage: bench/pod_start_bench.sh PATH/TO/skiff}")
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
for tool in podman runc nsenter ip busybox tar; do
  command -v "$tool" >/dev/null || { echo "pod_start_bench: $tool is missing: run \`make deps\`" >&2; exit 1; }
done

cargo=${CARGO:-cargo}
(cd "$root" && "$cargo" build --release -q -p skiff --example pod_start_bench)
bench_bin="$root/target/release/examples/pod_start_bench"

work=$(mktemp -d /tmp/skiff-pod-start-bench.XXXXXX)
pid=

cleanup() {
  trap - EXIT INT TERM
  stop_process "$pid"
  # Processes still running in the run's namespaces (skiff server and agents).
  kill_netns_processes "$pid"
  # Containers of every node's data root (all data roots live under $work).
  remove_containers "$skiff" "$work"/tmp/skiff-net-*
  # podman's pods, over the example's own storage (same flags as the example).
  # (under /tmp itself, as podman wants a short run root; the example names it in state.podman)
  podman_dir=$(cat "$work/state.podman" 2>/dev/null || true)
  for dir in $podman_dir; do
    [ -d "$dir" ] || continue
    CONTAINERS_CONF="$dir/containers.conf" podman --root "$dir/root" --runroot "$dir/run" \
      --tmpdir "$dir/tmp" --network-config-dir "$dir/networks" --storage-driver vfs \
      --cgroup-manager cgroupfs --events-backend none --runtime runc \
      pod rm -f -a -t 0 >/dev/null 2>&1 || true
    remove_tree "$dir"
  done
  delete_netns "$pid"
  # Mounts left under the data roots, deepest first, then the files.
  remove_tree "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$work/tmp"
RUST_BACKTRACE=0 TMPDIR="$work/tmp" SKIFF_BIN="$skiff" SKIFF_POD_BENCH_STATE="$work/state" \
  "$bench_bin" 2>"$work/stderr" &
pid=$!
if ! wait "$pid"; then
  echo "pod_start_bench failed:" >&2
  grep -v '^\s*[0-9]*: \|^\s*at ' "$work/stderr" | tail -n 120 >&2
  exit 1
fi
grep '^pod_start_bench' "$work/stderr" >&2 || true
