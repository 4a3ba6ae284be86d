#!/usr/bin/env python3
"""Kills a release Tollgate with `kill -9` under load and counts what its ledger kept.

    python3 bench/crash.py [--bin target/release/tollgate] [--runs 10] [--clients 200]
                           [--durability batched|strict]

Starts the simulator (first byte after 100 ms; streams of 8 chunks 15 ms apart) and a gateway
with a hard budget on the load's tenant, then, RUNS times:

1. CLIENTS threads send a mix of complete and streamed chat requests (each run tagged with its
   own feature, `x-tollgate-feature: run-N`), remembering the request id of every answer they
   received in full;
2. after 1.5–2.5 s the gateway is killed with SIGKILL, mid-load;
3. it is started again (its start-up replays the spill file and records the intents the dead
   process left as `gateway_interrupted`), the budget's live reservations are read, and it is
   stopped cleanly;
4. the run's ledger rows are read from SQLite: answered requests without a row are **lost**;
   answered requests whose row is `gateway_interrupted` kept a row but at the reserved worst
   case (their final row was not committed in time); requests sent but not answered that have
   no row never reached the provider call, or died before their provisional row was written.

Prints one JSON object. Needs only the standard library.
"""

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procs import free_port, start_sim, wait_http  # noqa: E402


def client(port, key, feature, stop, answered, sent, lock):
    rng = random.Random()
    while not stop.is_set():
        stream = rng.random() < 0.5
        body = json.dumps({"model": "gpt-4o-mini", "stream": stream, "max_tokens": 64,
                           "messages": [{"role": "user", "content": f"crash test {rng.random()}"}]}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
            headers={"authorization": f"Bearer {key}", "content-type": "application/json",
                     "x-tollgate-feature": feature})
        with lock:
            sent[0] += 1
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                data = r.read()
                rid = r.headers.get("x-tollgate-request-id")
                complete = (b"[DONE]" in data) if stream else data.endswith(b"}")
                if r.status == 200 and complete and rid:
                    with lock:
                        answered.append(rid)
        except Exception as e:
            # The gateway died under this request, or is already dead: a connection it never
            # accepted is not a request it saw.
            if isinstance(getattr(e, "reason", e), ConnectionRefusedError):
                with lock:
                    sent[0] -= 1
            time.sleep(0.01)


def start_gateway(bin_, cfg, port, log):
    gw = subprocess.Popen([bin_, "serve", "--config", cfg], stdout=subprocess.DEVNULL,
                          stderr=open(log, "a"))
    wait_http(f"http://127.0.0.1:{port}/readyz")
    return gw


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/tollgate")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--durability", choices=["batched", "strict"], default="batched")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="tollgate-crash-")
    sim_port, gw_port = free_port(), free_port()
    master = "crash-bench-master-key"
    db = os.path.join(work, "ledger.db")
    sim = start_sim(args.bin, sim_port, "--ttft-ms", "100", "--chunks", "8", "--chunk-delay-ms", "15")
    gw = None
    try:
        cfg = os.path.join(work, "tollgate.yaml")
        with open(cfg, "w") as f:
            f.write(f"""server:
  listen: 127.0.0.1:{gw_port}
  master_key: {master}
  limits: {{max_in_flight: 4096}}
storage:
  ledger: sqlite://{db}
  durability: {args.durability}
providers:
  sim:
    kind: openai
    base_url: http://127.0.0.1:{sim_port}/v1
models:
  gpt-4o-mini:
    deployments: [{{provider: sim, model: gpt-4o-mini}}]
budgets:
  - {{name: crash, scope: {{tenant: crash}}, limit_usd: "1000", window: month, mode: hard}}
""")
        key = subprocess.run([args.bin, "keys", "create", "--name", "crash", "--tenant", "crash",
                              "--config", cfg], capture_output=True, text=True, check=True).stdout.strip()
        log = os.path.join(work, "gw.log")
        runs = []
        for n in range(args.runs):
            feature = f"run-{n}"
            gw = start_gateway(args.bin, cfg, gw_port, log)
            stop = threading.Event()
            answered, sent, lock = [], [0], threading.Lock()
            threads = [threading.Thread(target=client, daemon=True,
                                        args=(gw_port, key, feature, stop, answered, sent, lock))
                       for _ in range(args.clients)]
            for t in threads:
                t.start()
            time.sleep(1.5 + random.random())
            gw.send_signal(signal.SIGKILL)
            gw.wait()
            killed_at = time.time()
            stop.set()
            for t in threads:
                t.join(timeout=35)
            answered_ids = set(answered)
            # Restart: recovery runs before it listens.
            gw = start_gateway(args.bin, cfg, gw_port, log)
            b = json.load(urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{gw_port}/admin/v1/budgets/crash",
                headers={"authorization": f"Bearer {master}"})))
            gw.send_signal(signal.SIGTERM)
            gw.wait(timeout=60)
            gw = None
            con = sqlite3.connect(db)
            rows = {r[0]: r[1] for r in con.execute(
                "SELECT request_id, error_code FROM requests WHERE feature = ?", (feature,))}
            leftover_intents = con.execute("SELECT COUNT(*) FROM intents").fetchone()[0]
            con.close()
            lost = sorted(answered_ids - rows.keys())
            runs.append({
                "sent": sent[0],
                "answered": len(answered_ids),
                "rows": len(rows),
                "lost_answered_without_row": len(lost),
                "answered_but_interrupted": sum(1 for i in answered_ids if rows.get(i) == "gateway_interrupted"),
                "interrupted_rows": sum(1 for c in rows.values() if c == "gateway_interrupted"),
                "sent_without_row": sent[0] - len(rows),
                "reserved_after_restart": b["reserved"],
                "intents_left": leftover_intents,
            })
            print(json.dumps({"run": n, **runs[-1]}), file=sys.stderr)
        total = {k: sum(r[k] for r in runs) for k in runs[0] if k != "reserved_after_restart"}
        print(json.dumps({
            "durability": args.durability,
            "clients": args.clients,
            "runs": runs,
            "total": total,
            "max_lost_per_run": max(r["lost_answered_without_row"] for r in runs),
            "reservations_after_restart": sorted({r["reserved_after_restart"] for r in runs}),
        }, indent=1))
    finally:
        for p in (gw, sim):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
