#!/usr/bin/env python3
"""API server figures, each in one run on this machine:

- time from starting `skiff server --disable-agent` to /readyz answering 200, and its idle RSS;
- watch fan-out (1,000 watchers, p99 delivery latency) and the time to list 10,000 pods, by
  crates/skiff/examples/apiserver_bench.rs against the SQLite server;
- ConfigMap creates/s from 16 concurrent connections with p50/p99 latency, on the SQLite store
  and on the etcd store, with raw etcd puts from 16 connections (etcd's v3 JSON gateway) as the
  anchor for the etcd figure (ratio skiff-on-etcd / raw etcd). The load comes from wrk (C,
  keep-alive connections, scripts in bench/wrk/) so the client is never what sets the pace.

Usage: apiserver_bench.py SKIFF_BINARY [SECONDS_PER_CASE]   (run with the venv's python:
it needs `requests`, which `make deps` installs with the kubernetes client)
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import requests
import urllib3

urllib3.disable_warnings()
CLIENTS = 16


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start_server(skiff, data, extra):
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen([skiff, "server", "--data-dir", data, "--https-port", str(port), "--disable-agent", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"https://127.0.0.1:{port}"
    deadline = started + 30
    while time.perf_counter() < deadline:
        try:
            if requests.get(f"{url}/readyz", verify=False, timeout=1).status_code == 200:
                return proc, url, (time.perf_counter() - started) * 1000
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            raise SystemExit("skiff server exited before it was ready")
        time.sleep(0.002)
    proc.kill()
    raise SystemExit("skiff server was not ready within 30 s")


def token_of(data):
    with open(os.path.join(data, "server", "admin.kubeconfig")) as f:
        for line in f:
            if "token:" in line:
                return line.split("token:", 1)[1].strip().strip('"')
    raise SystemExit("no token in the admin kubeconfig")


WRK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wrk")


def wrk_ms(text):
    """wrk's latency figures ('812.00us', '1.23ms', '2.01s') in milliseconds."""
    for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)


def hammer(url, script, seconds, token=None):
    """Runs wrk with CLIENTS connections on two threads for `seconds`; requests per second,
    p50/p99 latency and the count of failed requests (non-2xx answers and socket errors)."""
    env = dict(os.environ, BENCH_TOKEN=token or "")
    out = subprocess.run(["wrk", "-t2", f"-c{CLIENTS}", f"-d{seconds}s", "--latency", "-s",
                          os.path.join(WRK_DIR, script), url],
                         env=env, capture_output=True, text=True, check=True)
    result = {"per_s": 0.0, "p50": 0.0, "p99": 0.0, "errors": 0}
    for line in out.stdout.splitlines():
        fields = line.split()
        if line.startswith("Requests/sec:"):
            result["per_s"] = float(fields[1])
        elif len(fields) == 2 and fields[0] == "50%":
            result["p50"] = wrk_ms(fields[1])
        elif len(fields) == 2 and fields[0] == "99%":
            result["p99"] = wrk_ms(fields[1])
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            result["errors"] += int(fields[-1])
        elif line.strip().startswith("Socket errors:"):
            result["errors"] += sum(int(f.rstrip(",")) for f in fields[3::2])
    if out.stderr.strip():
        print(out.stderr.strip(), file=sys.stderr)
    return result


def creates(url, token, seconds):
    return hammer(f"{url}/api/v1/namespaces/default/configmaps", "create_configmaps.lua", seconds, token)


def main():
    skiff = os.path.realpath(sys.argv[1])
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([os.environ.get("CARGO", "cargo"), "build", "--release", "-q", "-p", "skiff",
                    "--example", "apiserver_bench"], cwd=root, check=True)
    example = os.path.join(root, "target", "release", "examples", "apiserver_bench")
    work = tempfile.mkdtemp(prefix="skiff-api-bench-")
    procs = []
    try:
        data = os.path.join(work, "sqlite")
        proc, url, ready_ms = start_server(skiff, data, [])
        procs.append(proc)
        time.sleep(1)
        idle = rss_kib(proc.pid)
        sqlite = creates(url, token_of(data), seconds)
        # Watch fan-out and the list of 10,000 pods, on the same server (its own namespaces).
        subprocess.run([example, os.path.join(data, "server", "admin.kubeconfig")], check=True)
        proc.terminate()
        proc.wait()

        etcd_port, peer_port = free_port(), free_port()
        etcd = subprocess.Popen(["etcd", "--data-dir", os.path.join(work, "etcd"),
                                 "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                                 "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                                 "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                                 "--initial-cluster", f"default=http://127.0.0.1:{peer_port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(etcd)
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        for _ in range(3000):
            try:
                if requests.get(f"{etcd_url}/health", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.01)

        raw = hammer(f"{etcd_url}/v3/kv/put", "etcd_put.lua", seconds)
        data = os.path.join(work, "etcd-store")
        proc, url, _ = start_server(skiff, data, ["--store", "etcd", "--etcd-endpoints", etcd_url])
        procs.append(proc)
        on_etcd = creates(url, token_of(data), seconds)

        print(f"API server: ready in {ready_ms:.0f} ms (fresh data dir), idle RSS {idle / 1024:.1f} MiB")
        print(f"ConfigMap creates, {CLIENTS} connections for {seconds} s (wrk, 2 threads)")
        print(f"{'':<22} {'per s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for name, r in [("skiff on SQLite", sqlite), ("skiff on etcd", on_etcd), ("raw etcd puts", raw)]:
            print(f"{name:<22} {r['per_s']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['errors']:>7}")
        print(f"ratio skiff-on-etcd / raw etcd puts: {on_etcd['per_s'] / raw['per_s']:.2f}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
