# Shared clean-up of the benchmark scripts (engine_bench.sh, net_bench.sh, pod_start_bench.sh,
# scheduler_bench.sh). Sourced, not run.

# stop_process PID: SIGTERM, up to 5 s for it to go, then SIGKILL; reaps it.
stop_process() {
  local pid=$1
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
}

# kill_netns_processes PID: kills what still runs in the namespaces of the test kit's network
# made by process PID (named skt-<pid>-...): skiff servers and agents.
kill_netns_processes() {
  local pid=$1 ns
  [ -n "$pid" ] || return 0
  for ns in /run/netns/skt-"$pid"-*; do
    [ -e "$ns" ] || continue
    ip netns pids "$(basename "$ns")" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
  done
}

# delete_netns PID: deletes those namespaces.
delete_netns() {
  local pid=$1 ns
  [ -n "$pid" ] || return 0
  for ns in /run/netns/skt-"$pid"-*; do
    [ -e "$ns" ] && ip netns delete "$(basename "$ns")" 2>/dev/null || true
  done
}

# remove_containers SKIFF DIR...: force-removes every container of each data root.
remove_containers() {
  local skiff=$1 dir ids
  shift
  for dir in "$@"; do
    [ -d "$dir" ] || continue
    ids=$("$skiff" ps -aq --no-trunc --data-root "$dir" 2>/dev/null || true)
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2086
      "$skiff" rm -f --data-root "$dir" $ids >/dev/null 2>&1 || true
    fi
  done
}

# remove_tree DIR: unmounts what is mounted below DIR (deepest first), then removes it.
remove_tree() {
  findmnt -rn -o TARGET | grep "^$1/" | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$1" 2>/dev/null || true
}

# stop_procfs DATA_ROOT: stops the data root's /proc server (`skiff procfs serve`, started by
# the first container; it would leave by itself only after 30 s without containers).
stop_procfs() {
  local pid
  pid=$(cat "$1/procfs/server.pid" 2>/dev/null || true)
  stop_process "$pid"
}
