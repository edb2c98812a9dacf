#!/usr/bin/env bash
# `skiff pull` of a three-layer image from a loopback `docker-registry` against `skopeo copy` of
# the same image to a local directory, timed by hyperfine in interleaved rounds (median wall
# time, ratio skiff / skopeo; target: no slower, ratio <= 1.0).
#
# The image is built here as an OCI layout: three tar+gzip layers of about 18 MiB each
# (uncompressed) made from a fixed-key AES-CTR stream, so every run pulls the same bytes: an
# 8 MiB binary file (incompressible), 4 text files of 2.3 MiB each (base64 of the stream,
# which gzip squeezes to about 3/4 and has to really inflate) and 256 small 4 KiB files.
# About 16 MiB per layer (48 MiB in all) goes over the wire. It is pushed with skopeo (digests kept) to
# Debian's `docker-registry` on a free 127.0.0.1 port, plain HTTP, started by this script with
# its storage in the script's temp dir (as the test kit's registry fixture does).
#
# Each run starts empty: hyperfine's --prepare moves the previous run's Skiff data root and
# skopeo directory aside (see below why not delete). Skiff does more than skopeo here: it also unpacks every layer into its
# snapshot (checking the DiffID) and syncs each blob before making it visible; skopeo only
# downloads the blobs into the directory.
# With SKIFF_PULL_BENCH_BASELINE=PATH/TO/other/skiff, that binary (e.g. a build from before a
# change) is timed in the same rounds as a third command, with its own ratio.
# Usage: bench/pull_bench.sh PATH/TO/skiff [RUNS]
set -euo pipefail

skiff=$(readlink -f "${1:?usage: bench/pull_bench.sh PATH/TO/skiff [RUNS]}")
runs=${2:-10}
for tool in hyperfine jq skopeo docker-registry openssl curl python3; do
  command -v "$tool" >/dev/null || { echo "pull bench: $tool is missing: run \`make deps\`" >&2; exit 1; }
done
work=$(mktemp -d)
registry_pid=
cleanup() {
  if [ -n "$registry_pid" ] && kill -0 "$registry_pid" 2>/dev/null; then
    kill -TERM "$registry_pid" 2>/dev/null || true
    wait "$registry_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A deterministic pseudo-random stream of N bytes, keyed by SEED.
stream() { # SEED N
  head -c "$2" /dev/zero | openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:skiff-pull-bench-$1"
}

sha256() { sha256sum "$1" | cut -d' ' -f1; }
size_of() { stat -c %s "$1"; }

# --- The image: an OCI layout under $work/image. ---
image=$work/image
mkdir -p "$image/blobs/sha256"
diff_ids=() layers_json=()
for i in 1 2 3; do
  root=$work/layer$i
  mkdir -p "$root/data$i/small"
  stream "bin-$i" $((8 * 1024 * 1024)) > "$root/data$i/blob.bin"
  for t in 1 2 3 4; do
    stream "text-$i-$t" $((1728 * 1024)) | base64 -w 76 > "$root/data$i/text-$t.txt"
  done
  stream "small-$i" $((256 * 4096)) | split -b 4096 -a 3 -d - "$root/data$i/small/f"
  tar -C "$root" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=gnu \
    -cf "$work/layer$i.tar" "data$i"
  diff_ids+=("sha256:$(sha256 "$work/layer$i.tar")")
  gzip -n -6 -c "$work/layer$i.tar" > "$work/layer$i.tar.gz"
  digest=$(sha256 "$work/layer$i.tar.gz")
  layers_json+=("$(jq -cn --arg d "sha256:$digest" --argjson s "$(size_of "$work/layer$i.tar.gz")" \
    '{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $d, size: $s}')")
  mv "$work/layer$i.tar.gz" "$image/blobs/sha256/$digest"
  rm -f "$work/layer$i.tar" # (the tree stays until the end: see next-run below)
done
case $(uname -m) in
  x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;;
esac
jq -cn --arg arch "$arch" --args '{architecture: $arch, os: "linux",
    config: {Cmd: ["/bin/sh"]}, rootfs: {type: "layers", diff_ids: $ARGS.positional}}' \
  "${diff_ids[@]}" > "$work/config.json"
config_digest=$(sha256 "$work/config.json")
jq -cn --arg d "sha256:$config_digest" --argjson s "$(size_of "$work/config.json")" \
  --argjson layers "$(printf '%s\n' "${layers_json[@]}" | jq -cs .)" \
  '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $d, size: $s},
    layers: $layers}' > "$work/manifest.json"
manifest_digest=$(sha256 "$work/manifest.json")
mv "$work/config.json" "$image/blobs/sha256/$config_digest"
jq -cn --arg d "sha256:$manifest_digest" --argjson s "$(size_of "$work/manifest.json")" \
  '{schemaVersion: 2, manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json",
    digest: $d, size: $s, annotations: {"org.opencontainers.image.ref.name": "latest"}}]}' \
  > "$image/index.json"
mv "$work/manifest.json" "$image/blobs/sha256/$manifest_digest"
echo '{"imageLayoutVersion":"1.0.0"}' > "$image/oci-layout"
wire_bytes=$(jq '[.layers[].size] | add' "$image/blobs/sha256/$manifest_digest")

# --- skopeo's private configuration (the host's must not interfere). ---
sk=$work/skopeo
mkdir -p "$sk/registries.d" "$sk/tmp" "$sk/docker"
echo '{"auths":{}}' > "$sk/auth.json"
echo '{"auths":{}}' > "$sk/docker/config.json"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' > "$sk/policy.json"
echo 'unqualified-search-registries = []' > "$sk/registries.conf"
export CONTAINERS_REGISTRIES_CONF=$sk/registries.conf REGISTRY_AUTH_FILE=$sk/auth.json DOCKER_CONFIG=$sk/docker
skopeo_global="skopeo --policy $sk/policy.json --registries.d $sk/registries.d --tmpdir $sk/tmp"

# --- The registry: plain HTTP on a free loopback port. ---
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/registry"
cat > "$work/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
  formatter: text
storage:
  filesystem:
    rootdirectory: "$work/registry/storage"
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: "127.0.0.1:$port"
  secret: "skiff-pull-bench-$$"
EOF
(
  for var in $(env | grep -o '^REGISTRY_[A-Za-z0-9_]*' || true); do unset "$var"; done
  exec docker-registry serve "$work/registry/config.yml"
) > "$work/registry/registry.log" 2>&1 &
registry_pid=$!
deadline=$((SECONDS + 20))
until curl -fs -o /dev/null "http://127.0.0.1:$port/v2/"; do
  if ! kill -0 "$registry_pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
    echo "pull bench: the registry on 127.0.0.1:$port did not answer; its log:" >&2
    tail -n 25 "$work/registry/registry.log" >&2
    exit 1
  fi
  sleep 0.1
done
ref=127.0.0.1:$port/bench/three:latest
$skopeo_global copy --authfile "$sk/auth.json" --preserve-digests --dest-tls-verify=false \
  "oci:$image:latest" "docker://$ref" >/dev/null

# --- One checked pull each before timing: both must get the whole image. ---
"$skiff" pull --data-root "$work/check-skiff" -q "$ref" >/dev/null
"$skiff" images --data-root "$work/check-skiff" --digests | grep -q "sha256:$manifest_digest" || {
  echo "pull bench: skiff pull did not record $ref" >&2; exit 1; }
$skopeo_global copy --authfile "$sk/auth.json" --src-tls-verify=false "docker://$ref" "dir:$work/check-skopeo" >/dev/null
for layer in $(jq -r '.layers[].digest | sub("sha256:"; "")' "$image/blobs/sha256/$manifest_digest"); do
  [ -f "$work/check-skopeo/$layer" ] || { echo "pull bench: skopeo did not copy layer $layer" >&2; exit 1; }
done

# Each run starts empty: the previous run's trees are moved aside, not deleted (until the
# end). Creating files soon after deleting many is slow on an ext4 without a journal (as on
# this VM): each create skips inodes freed within the last minute (`recently_deleted` in the
# kernel), which cost every run of the ~800-file unpack more than a second of system time
# when the previous run's tree was removed in between.
mkdir -p "$work/aside"
cat > "$work/next-run" <<EOF
#!/bin/sh
n=\$(date +%s%N)
for d in check-skiff check-skopeo pull-skiff pull-skopeo pull-baseline; do
  if [ -e "$work/\$d" ]; then mv "$work/\$d" "$work/aside/\$d-\$n"; fi
done
EOF
chmod +x "$work/next-run"
"$work/next-run"

names=(skiff skopeo)
commands=(
  "$skiff pull --data-root $work/pull-skiff -q $ref"
  "$skopeo_global copy --authfile $sk/auth.json --src-tls-verify=false docker://$ref dir:$work/pull-skopeo"
)
baseline=${SKIFF_PULL_BENCH_BASELINE:-}
if [ -n "$baseline" ]; then
  baseline=$(readlink -f "$baseline")
  names+=(baseline)
  commands+=("$baseline pull --data-root $work/pull-baseline -q $ref")
fi
# Interleaved rounds: each round is one hyperfine run of every command, in an order that
# rotates from round to round, so that the load of this shared machine, which drifts over
# seconds, falls on all of them alike (one hyperfine call times all runs of one command
# before the next). Round 0 is the warm-up.
for round in $(seq 0 "$runs"); do
  args=()
  for k in "${!names[@]}"; do
    i=$(((k + round) % ${#names[@]}))
    args+=(--command-name "${names[$i]}" "${commands[$i]}")
  done
  hyperfine -N --runs 1 --prepare "$work/next-run" --export-json "$work/round-$round.json" \
    "${args[@]}" >/dev/null 2>&1
done

median() { # NAME -> median wall ms over the timed rounds
  for round in $(seq 1 "$runs"); do
    jq -r --arg n "$1" '.results[] | select(.command == $n) | .mean * 1000' "$work/round-$round.json"
  done | sort -n | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f", m }'
}
s=$(median skiff); p=$(median skopeo)
echo "pull of a three-layer image ($((wire_bytes / 1024)) KiB gzip) from a loopback registry, $runs interleaved runs each, median wall ms"
printf '%-40s %10s\n' "skiff pull (download + unpack)" "$s" "skopeo copy to dir: (download only)" "$p"
if [ -n "$baseline" ]; then
  b=$(median baseline)
  printf '%-40s %10s\n' "baseline skiff pull" "$b"
  awk -v b="$b" -v p="$p" -v s="$s" 'BEGIN { printf "ratio baseline/skopeo %.2f, skiff/baseline %.2f\n", b / p, s / b }'
fi
awk -v s="$s" -v p="$p" 'BEGIN {
  r = s / p
  printf "ratio skiff/skopeo %.2f (target <= 1.00: %s)\n", r, (r <= 1.0 ? "met" : "not met")
}'
