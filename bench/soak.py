#!/usr/bin/env python3
"""Soaks a release Tollgate at a moderate, steady load and samples what it holds over time.

    python3 bench/soak.py [--bin target/release/tollgate] [--minutes 60] [--rate 200]
                          [--every 30]

Starts the simulator (first byte after 20 ms; streams of 8 chunks 5 ms apart) and a gateway
with the response cache, a hard budget, a rate limit and a spend policy on, then sends RATE
requests per second (paced, keep-alive, 8 client threads) for MINUTES: chat completions and
streams with varied prompts (some repeated, so the cache hits), embeddings, Anthropic Messages,
unknown models (404) and bad bodies (400). Every EVERY seconds it samples the gateway's RSS,
open file descriptors, threads, and ledger rows written (`/metrics`).

Prints one JSON object: the timeline, and a summary — RSS and fds at the end of the first 10
minutes and at the end, the least-squares RSS slope over the second half (MiB per hour), and
the request counts by status. Needs only the standard library.
"""

import argparse
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procs import free_port, proc_stats, start_sim, wait_http  # noqa: E402


def metric(text, name):
    m = re.search(rf"^{name}(?:{{[^}}]*}})? (\d+)", text, re.M)
    return int(m.group(1)) if m else None


def request(rng):
    """One request of the mix: (path, headers, body)."""
    r = rng.random()
    prompt = f"soak prompt {rng.randrange(50)}" if rng.random() < 0.3 else f"soak {rng.random()}"
    if r < 0.45:
        return "/v1/chat/completions", {}, {"model": "gpt-4o-mini", "max_tokens": 32,
                                             "messages": [{"role": "user", "content": prompt}]}
    if r < 0.75:
        return "/v1/chat/completions", {}, {"model": "gpt-4o-mini", "stream": True, "max_tokens": 32,
                                             "messages": [{"role": "user", "content": prompt}]}
    if r < 0.85:
        return "/v1/embeddings", {}, {"model": "text-embedding-3-small", "input": prompt}
    if r < 0.93:
        return "/v1/messages", {"anthropic-version": "2023-06-01"}, {
            "model": "gpt-4o-mini", "max_tokens": 32, "messages": [{"role": "user", "content": prompt}]}
    if r < 0.97:
        return "/v1/chat/completions", {}, {"model": f"unknown-{rng.randrange(1000)}",
                                             "messages": [{"role": "user", "content": "x"}]}
    return "/v1/chat/completions", {}, {"model": "gpt-4o-mini"}


def client(port, key, rate, stop, counts, lock):
    rng = random.Random()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    interval = 1.0 / rate
    next_at = time.monotonic() + rng.random() * interval
    while not stop.is_set():
        now = time.monotonic()
        if now < next_at:
            time.sleep(next_at - now)
        next_at += interval
        path, headers, body = request(rng)
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json", **headers}
        try:
            conn.request("POST", path, json.dumps(body), headers)
            resp = conn.getresponse()
            resp.read()
            status = resp.status
        except Exception:
            status = "error"
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        with lock:
            counts[status] = counts.get(status, 0) + 1


def slope_per_hour(points):
    """Least-squares slope of (seconds, MiB) points, in MiB per hour."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    var = sum((p[0] - mx) ** 2 for p in points)
    if var == 0:
        return 0.0
    return sum((p[0] - mx) * (p[1] - my) for p in points) / var * 3600


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/tollgate")
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--rate", type=float, default=200, help="requests per second, all clients")
    ap.add_argument("--every", type=float, default=30, help="seconds between samples")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="tollgate-soak-")
    sim_port, gw_port = free_port(), free_port()
    metrics_token = "soak-metrics-token"
    sim = start_sim(args.bin, sim_port, "--ttft-ms", "20", "--chunks", "8", "--chunk-delay-ms", "5")
    gw = None
    try:
        cfg = os.path.join(work, "tollgate.yaml")
        with open(cfg, "w") as f:
            f.write(f"""server:
  listen: 127.0.0.1:{gw_port}
  metrics_auth: {metrics_token}
storage:
  ledger: sqlite://{work}/ledger.db
providers:
  sim:
    kind: openai
    base_url: http://127.0.0.1:{sim_port}/v1
models:
  gpt-4o-mini:
    deployments: [{{provider: sim, model: gpt-4o-mini}}]
  text-embedding-3-small:
    deployments: [{{provider: sim, model: text-embedding-3-small}}]
cache:
  default: {{enabled: true, ttl_secs: 120, cache_nondeterministic: true}}
budgets:
  - {{name: soak, scope: {{tenant: soak}}, limit_usd: "100000", window: month, mode: hard}}
rate_limits:
  - {{name: per-key, per: key, rpm: 1000000}}
policies:
  - name: watch
    scope: {{tenant: soak}}
    budget: soak
    mode: enforce
    steps:
      - when: {{utilization_pct: 99}}
        then: [block]
""")
        key = subprocess.run([args.bin, "keys", "create", "--name", "soak", "--tenant", "soak",
                              "--config", cfg], capture_output=True, text=True, check=True).stdout.strip()
        gw = subprocess.Popen([args.bin, "serve", "--config", cfg], stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(work, "gw.log"), "w"))
        wait_http(f"http://127.0.0.1:{gw_port}/readyz")
        stop = threading.Event()
        counts, lock = {}, threading.Lock()
        n_clients = 8
        threads = [threading.Thread(target=client, daemon=True,
                                    args=(gw_port, key, args.rate / n_clients, stop, counts, lock))
                   for _ in range(n_clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        timeline = []
        end = t0 + args.minutes * 60
        while True:
            now = time.monotonic()
            m = urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{gw_port}/metrics",
                headers={"authorization": f"Bearer {metrics_token}"})).read().decode()
            with lock:
                served = sum(counts.values())
            timeline.append({"t_s": round(now - t0), **proc_stats(gw.pid),
                             "ledger_rows_written": metric(m, "tollgate_ledger_rows_written_total"),
                             "requests_sent": served})
            print(json.dumps(timeline[-1]), file=sys.stderr)
            if now >= end:
                break
            time.sleep(min(args.every, max(0, end - time.monotonic())))
        stop.set()
        for t in threads:
            t.join(timeout=35)
        elapsed = time.monotonic() - t0
        ten = min(timeline, key=lambda p: abs(p["t_s"] - 600))
        second_half = [(p["t_s"], p["rss_mib"]) for p in timeline if p["t_s"] >= elapsed / 2]
        summary = {
            "minutes": round(elapsed / 60, 1),
            "rate_target": args.rate,
            "rate_achieved": round(sum(counts.values()) / elapsed, 1),
            "statuses": {str(k): v for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))},
            "rss_mib_at_10_min": ten["rss_mib"],
            "rss_mib_at_end": timeline[-1]["rss_mib"],
            "rss_mib_max": max(p["rss_mib"] for p in timeline),
            "rss_slope_mib_per_hour_second_half": round(slope_per_hour(second_half), 2),
            "fds_at_10_min": ten["fds"],
            "fds_at_end": timeline[-1]["fds"],
            "fds_max": max(p["fds"] for p in timeline),
            "threads_max": max(p["threads"] for p in timeline),
        }
        gw.send_signal(signal.SIGTERM)
        gw.wait(timeout=60)
        gw = None
        print(json.dumps({"summary": summary, "timeline": timeline}, indent=1))
    finally:
        for p in (gw, sim):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
