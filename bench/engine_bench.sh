#!/usr/bin/env bash
# `skiff run --rm IMAGE true` against `podman run --rm` and `docker run --rm` of the same image,
# timed in one hyperfine run (median wall time, ratios skiff / peer). The image is a busybox
# root filesystem imported into Docker, saved as a docker archive, and loaded into Skiff and
# podman, so all three run identical bytes.
# Usage: bench/engine_bench.sh PATH/TO/skiff [RUNS]
set -euo pipefail

skiff=$(readlink -f "${1:?usage: bench/engine_bench.sh PATH/TO/skiff [RUNS]}")
runs=${2:-20}
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
for tool in hyperfine jq docker podman; do
  command -v "$tool" >/dev/null || { echo "engine bench: $tool is missing: run \`make deps\`" >&2; exit 1; }
done
work=$(mktemp -d)
image=skiff-bench/busybox:latest
cleanup() {
  docker rmi -f "$image" >/dev/null 2>&1 || true
  podman --root "$work/podman" --runroot "$work/podman-run" --storage-driver vfs rmi -af >/dev/null 2>&1 || true
  stop_procfs "$work/skiff"
  remove_tree "$work"
}
trap cleanup EXIT

mkdir -p "$work/rootfs/bin" "$work/rootfs/etc" "$work/rootfs/tmp" "$work/rootfs/proc" "$work/rootfs/sys" "$work/rootfs/dev"
cp /bin/busybox "$work/rootfs/bin/busybox"
for applet in sh true echo; do ln -s busybox "$work/rootfs/bin/$applet"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$work/rootfs/etc/passwd"
echo 'root:x:0:' > "$work/rootfs/etc/group"
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
docker import "$work/rootfs.tar" "$image" >/dev/null
docker save "$image" -o "$work/image.tar"
"$skiff" load --data-root "$work/skiff" -i "$work/image.tar" >/dev/null
podman_cmd="podman --root $work/podman --runroot $work/podman-run --storage-driver vfs --cgroup-manager cgroupfs --events-backend none"
$podman_cmd load -i "$work/image.tar" >/dev/null 2>&1

hyperfine -N --warmup 2 --runs "$runs" --export-json "$work/h.json" \
  "$skiff run --data-root $work/skiff --rm $image true" \
  "$podman_cmd --runtime runc run --rm --network none --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 $image true" \
  "docker run --rm --network none $image true" >/dev/null 2>&1

median() { jq -r ".results[$1].median * 1000 | . * 100 | round / 100" "$work/h.json"; }
s=$(median 0); p=$(median 1); d=$(median 2)
echo "container run --rm of /bin/true, $runs runs each, median wall ms"
printf '%-24s %10s\n' "skiff run --rm" "$s" "podman run --rm" "$p" "docker run --rm" "$d"
awk -v s="$s" -v p="$p" -v d="$d" 'BEGIN {
  printf "ratio skiff/podman %.2f  skiff/docker %.2f\n", s / p, s / d
  f = p < d ? p : d
  printf "target: at most 0.20 of the faster peer: %.2f, %s\n", s / f, (s / f <= 0.20 ? "met" : "not met")
}'
