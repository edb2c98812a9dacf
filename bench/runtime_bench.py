#!/usr/bin/env python3
"""Container create+start+wait+delete of /bin/true in a busybox bundle: skiff-runc against
runc and crun, run in turn (A B C, A B C, ...) so a drifting machine hits all alike.

The whole benchmark re-runs itself once inside a private mount namespace where the hybrid
host's /sys/fs/cgroup/unified/cgroup.controllers reads empty (crun refuses hybrid cgroups
otherwise); the runtimes are then started directly, all three alike. Wall time from a monotonic clock and
CPU time (user + system) from wait4's rusage, which covers the runtime and the processes it
reaped; peak RSS (largest process) from GNU time in a separate run of each. Prints medians and ratios (skiff / peer; below 1.0 is better).

Usage: runtime_bench.py SKIFF_BINARY [RUNS]
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def make_bundle(root):
    rootfs = os.path.join(root, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    for d in ("proc", "sys", "dev", "tmp", "etc"):
        os.makedirs(os.path.join(rootfs, d))
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin/busybox"))
    for applet in ("true", "sh"):
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    subprocess.run(["runc", "spec", "--bundle", root], check=True)
    path = os.path.join(root, "config.json")
    with open(path) as f:
        config = json.load(f)
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/true"]
    with open(path, "w") as f:
        json.dump(config, f)
    return root


def enter_private_mount_namespace():
    """Re-executes this script in a private mount namespace with the cgroup2 controller list
    hidden (only there: the host's own mounts are untouched)."""
    if os.environ.get("SKIFF_BENCH_IN_NS") == "1":
        return
    controllers = "/sys/fs/cgroup/unified/cgroup.controllers"
    hide = f"[ -e {controllers} ] && mount --bind /dev/null {controllers}; " if os.path.exists(controllers) else ""
    script = hide + 'exec "$0" "$@"'
    env = dict(os.environ, SKIFF_BENCH_IN_NS="1")
    os.execvpe("unshare", ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, sys.executable, *sys.argv], env)


def measure(command):
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{command[-1]} failed ({proc.returncode}): {proc.stderr.read().decode()}")
    return wall * 1000, (usage.ru_utime + usage.ru_stime) * 1000, usage.ru_maxrss


def peak_rss_kib(command):
    """Peak RSS of the runtime process tree's largest process, through GNU time (a small
    process forks the runtime: rusage from a direct child of Python would count Python's own
    memory, which a fork carries until exec)."""
    result = subprocess.run(["/usr/bin/time", "-f", "%M", *command], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
    return int(result.stderr.decode().strip().splitlines()[-1])


def main():
    enter_private_mount_namespace()
    skiff = os.path.realpath(sys.argv[1])
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    work = tempfile.mkdtemp(prefix="skiff-bench-")
    try:
        bundle = make_bundle(os.path.join(work, "bundle"))
        link = os.path.join(work, "skiff-runc")
        os.symlink(skiff, link)
        runtimes = {
            "skiff-runc": [link, "--root", os.path.join(work, "state-skiff"), "run", "--bundle", bundle, "bench"],
            "runc": ["runc", "--root", os.path.join(work, "state-runc"), "run", "--bundle", bundle, "bench"],
            "crun": ["crun", "--root", os.path.join(work, "state-crun"), "run", "--bundle", bundle, "bench"],
        }
        figures = {name: {"wall": [], "cpu": [], "rss": []} for name in runtimes}
        for name, command in runtimes.items():  # warm-up
            measure(command)
        for _ in range(runs):
            for name, command in runtimes.items():
                wall, cpu, _ = measure(command)
                figures[name]["wall"].append(wall)
                figures[name]["cpu"].append(cpu)
                figures[name]["rss"].append(peak_rss_kib(command))
        med = {n: {k: statistics.median(v) for k, v in f.items()} for n, f in figures.items()}
        print(f"container create+start+wait+delete of /bin/true, {runs} runs each, medians")
        print(f"{'runtime':<12} {'wall ms':>9} {'cpu ms':>9} {'peak RSS KiB':>13}")
        for name, m in med.items():
            print(f"{name:<12} {m['wall']:>9.2f} {m['cpu']:>9.2f} {m['rss']:>13.0f}")
        s = med["skiff-runc"]
        for peer in ("runc", "crun"):
            p = med[peer]
            print(f"ratio skiff-runc/{peer:<5} wall {s['wall'] / p['wall']:.2f}  cpu {s['cpu'] / p['cpu']:.2f}  rss {s['rss'] / p['rss']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
