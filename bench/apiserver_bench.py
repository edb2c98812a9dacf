#!/usr/bin/env python3
"""API server figures, each in one run on this machine:

- time from starting `skiff server --disable-agent` to /readyz answering 200, and its idle RSS;
- ConfigMap creates/s from 16 concurrent clients with p50/p99 latency, on the SQLite store and
  on the etcd store, with raw etcd puts from 16 clients (etcd's v3 JSON gateway) as the anchor
  for the etcd figure (ratio skiff-on-etcd / raw etcd).

Usage: apiserver_bench.py SKIFF_BINARY [CREATES_PER_CLIENT]   (run with the venv's python:
it needs `requests`, which `make deps` installs with the kubernetes client)
"""

import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
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


def hammer(per_client, send):
    latencies, errors = [], []
    lock = threading.Lock()

    def client(n):
        session = requests.Session()
        mine = []
        for i in range(per_client):
            t0 = time.perf_counter()
            ok = send(session, n, i)
            mine.append((time.perf_counter() - t0) * 1000)
            if not ok:
                with lock:
                    errors.append(1)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return {
        "per_s": len(latencies) / elapsed,
        "p50": statistics.median(latencies),
        "p99": latencies[int(len(latencies) * 0.99) - 1],
        "errors": len(errors),
    }


def creates(url, token, per_client):
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def send(session, n, i):
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{n}-{i}"}, "data": {"k": "v" * 64}}
        r = session.post(f"{url}/api/v1/namespaces/default/configmaps", headers=headers, data=json.dumps(body), verify=False)
        return r.status_code == 201

    return hammer(per_client, send)


def main():
    skiff = os.path.realpath(sys.argv[1])
    per_client = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    work = tempfile.mkdtemp(prefix="skiff-api-bench-")
    procs = []
    try:
        data = os.path.join(work, "sqlite")
        proc, url, ready_ms = start_server(skiff, data, [])
        procs.append(proc)
        time.sleep(1)
        idle = rss_kib(proc.pid)
        sqlite = creates(url, token_of(data), per_client)
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

        def put(session, n, i):
            key = base64.b64encode(f"/bench/raw/{n}/{i}".encode()).decode()
            value = base64.b64encode(b"v" * 300).decode()
            return session.post(f"{etcd_url}/v3/kv/put", json={"key": key, "value": value}).ok

        raw = hammer(per_client, put)
        data = os.path.join(work, "etcd-store")
        proc, url, _ = start_server(skiff, data, ["--store", "etcd", "--etcd-endpoints", etcd_url])
        procs.append(proc)
        on_etcd = creates(url, token_of(data), per_client)

        print(f"API server: ready in {ready_ms:.0f} ms (fresh data dir), idle RSS {idle / 1024:.1f} MiB")
        print(f"ConfigMap creates, {CLIENTS} clients x {per_client}")
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
