#!/usr/bin/env python3
"""Floods a release Tollgate with bad connections and reports what it holds.

    python3 bench/connections.py [--bin target/release/tollgate] [--idle 5000] [--slow 500]

Starts the simulator and a gateway (header timeout 5 s, idle timeout 10 s, max_in_flight 64)
on loopback, then:

1. opens SLOW slowloris connections (a request line and one header, then a byte a second) and
   IDLE idle keep-alive connections (one request answered, then silence), and meanwhile sends
   normal requests, timing them;
2. samples the gateway's RSS and open descriptors before, at the peak and after the deadlines;
3. fires a burst of 400 concurrent requests at a simulator answering in 200 ms, past
   `max_in_flight: 64`, and counts what was served and what was shed (503 overloaded).

Prints one JSON object. Needs only the standard library; raises its own fd limit.
"""

import argparse
import concurrent.futures
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procs import free_port, proc_stats, wait_http  # noqa: E402


def chat(port, key, timeout=30):
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
        e.read()
    return status, time.perf_counter() - t


def connect(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.setblocking(True)
    return s


def closed(s):
    """Whether the peer closed `s` (any answer it sent is read past first)."""
    s.settimeout(0)
    while True:
        try:
            if s.recv(65536) == b"":
                return True
        except BlockingIOError:
            return False
        except OSError:
            return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/tollgate")
    ap.add_argument("--idle", type=int, default=5000)
    ap.add_argument("--slow", type=int, default=500)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    work = tempfile.mkdtemp(prefix="tollgate-conns-")
    sim_port, gw_port = free_port(), free_port()
    procs = []
    try:
        procs.append(subprocess.Popen(
            [args.bin, "mock-provider", "--listen", f"127.0.0.1:{sim_port}", "--ttft-ms", "200"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{sim_port}/_sim/config")
        cfg = os.path.join(work, "tollgate.yaml")
        with open(cfg, "w") as f:
            f.write(f"""server:
  listen: 127.0.0.1:{gw_port}
  limits: {{header_read_timeout_secs: 5, idle_timeout_secs: 10, max_in_flight: 64}}
storage:
  ledger: sqlite://{work}/ledger.db
providers:
  sim:
    kind: openai
    base_url: http://127.0.0.1:{sim_port}/v1
models:
  gpt-4o-mini:
    deployments: [{{provider: sim, model: gpt-4o-mini}}]
""")
        key = subprocess.run([args.bin, "keys", "create", "--name", "bench", "--tenant", "bench",
                              "--config", cfg], capture_output=True, text=True, check=True).stdout.strip()
        gw = subprocess.Popen([args.bin, "serve", "--config", cfg],
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "gw.log"), "w"))
        procs.append(gw)
        wait_http(f"http://127.0.0.1:{gw_port}/readyz")
        for _ in range(20):
            chat(gw_port, key)
        out = {"limits": {"header_read_timeout_secs": 5, "idle_timeout_secs": 10, "max_in_flight": 64},
               "before": proc_stats(gw.pid)}

        t0 = time.time()
        slow = []
        for _ in range(args.slow):
            s = connect(gw_port)
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
            slow.append(s)
        idle = []
        for _ in range(args.idle):
            s = connect(gw_port)
            s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            idle.append(s)
        opened_in = time.time() - t0
        stop = threading.Event()

        def trickle():
            while not stop.is_set():
                for s in slow:
                    try:
                        s.sendall(b"x")
                    except OSError:
                        pass
                stop.wait(1)

        threading.Thread(target=trickle, daemon=True).start()
        time.sleep(1)
        out["peak"] = proc_stats(gw.pid)
        lat = []
        for _ in range(20):
            status, dt = chat(gw_port, key)
            assert status == 200, status
            lat.append(dt)
        lat.sort()
        out["normal_requests_during_flood"] = {"n": 20, "all_200": True,
                                               "p50_ms": round(lat[10] * 1000, 1), "max_ms": round(lat[-1] * 1000, 1)}
        # Past both deadlines of the last connection opened (and a margin for the timers).
        time.sleep(max(0, t0 + opened_in + 11 - time.time()))
        stop.set()
        out["slow_closed"] = sum(closed(s) for s in slow)
        out["idle_closed"] = sum(closed(s) for s in idle)
        out["connections_opened_in_s"] = round(opened_in, 2)
        for s in slow + idle:
            s.close()
        time.sleep(1)
        out["after"] = proc_stats(gw.pid)

        with concurrent.futures.ThreadPoolExecutor(max_workers=400) as pool:
            results = list(pool.map(lambda _: chat(gw_port, key, timeout=60), range(400)))
        statuses = [s for s, _ in results]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{gw_port}/metrics").read().decode()
        shed_metric = next(int(l.split()[1]) for l in metrics.splitlines()
                           if l.startswith("tollgate_requests_shed_total "))
        out["burst"] = {"sent": 400, "ok": statuses.count(200), "shed_503": statuses.count(503),
                        "other": len(statuses) - statuses.count(200) - statuses.count(503),
                        "tollgate_requests_shed_total": shed_metric}
        out["after_burst"] = proc_stats(gw.pid)
        print(json.dumps(out))
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
