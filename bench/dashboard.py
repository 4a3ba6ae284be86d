#!/usr/bin/env python3
"""Dashboard pages over a large ledger: server time of every /ui/ page.

    bench/dashboard.py [--rows 1000000] [--bin target/release/tollgate]
                       [--seed target/release/examples/seed_ledger] [--runs 5]

Seeds a SQLite ledger with ROWS synthetic rows over June 2026 (the `seed_ledger` example: 50
tenants, 4 teams, 3 features, 4 models on 2 providers), keeps it under
~/.cache/tollgate-bench/ (re-seeded only when missing), starts `tollgate serve` on it, signs
in with the master key and fetches each page RUNS times over loopback. The time of a request
is what the gateway reports in its `Server-Timing: app;dur=` header (the handler's time,
without the socket), so the figure is the server's, not the client's. Prints one JSON line
per page with the first fetch (the finance pages remember whole days after it: see
`crates/server/src/gateway/memo.rs`), the median and the maximum, in milliseconds.

Build first: cargo build --release -p tollgate --bin tollgate --example seed_ledger
"""

import argparse
import http.cookiejar
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import free_port, wait_http  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MASTER = "bench-dashboard-master-key-0000"
MONTH = "from=2026-06-01T00:00&to=2026-07-01T00:00"
DAY = "from=2026-06-15T00:00&to=2026-06-16T00:00"

PAGES = [
    ("overview, a day", f"/ui/?{DAY}"),
    ("overview, the month", f"/ui/?{MONTH}"),
    ("overview, the month by model", f"/ui/?{MONTH}&by=model"),
    ("budgets", "/ui/budgets"),
    ("requests, first page", "/ui/requests"),
    ("requests, one tenant", "/ui/requests?tenant=tenant-07"),
    ("requests, one model, the month", f"/ui/requests?model=gpt-4o&{MONTH}"),
    ("tenants, the month", f"/ui/tenants?{MONTH}"),
    ("deployments", "/ui/deployments"),
    ("keys", "/ui/keys"),
    ("policies", "/ui/policies"),
    ("finance, the month", f"/ui/finance?{MONTH}"),
]

CONFIG = """
server:
  listen: 127.0.0.1:{port}
  master_key: {master}
storage:
  ledger: sqlite://{db}
budgets:
  - {{name: org-monthly, scope: {{}}, limit_usd: "5000", window: month, mode: soft}}
  - {{name: t07-daily, scope: {{tenant: tenant-07}}, limit_usd: "10", window: day, mode: hard}}
policies:
  - name: t07-ladder
    scope: {{tenant: tenant-07}}
    budget: t07-daily
    mode: enforce
    steps:
      - when: {{utilization_pct: 90}}
        then: [block]
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--bin", default=str(ROOT / "target/release/tollgate"))
    ap.add_argument("--seed", default=str(ROOT / "target/release/examples/seed_ledger"))
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    cache = Path.home() / ".cache" / "tollgate-bench"
    cache.mkdir(parents=True, exist_ok=True)
    db = cache / f"dashboard-{args.rows}.db"
    if not db.exists():
        print(f"[dashboard] seeding {args.rows} rows into {db}", file=sys.stderr)
        subprocess.run([args.seed, str(args.rows), f"sqlite://{db}.tmp"], check=True)
        os.rename(f"{db}.tmp", db)
        for suffix in ("-wal", "-shm"):
            Path(f"{db}.tmp{suffix}").unlink(missing_ok=True)

    work = Path(tempfile.mkdtemp(prefix="tollgate-dashboard-bench."))
    port = free_port()
    config = work / "tollgate.yaml"
    config.write_text(CONFIG.format(port=port, master=MASTER, db=db))
    log = open(work / "serve.log", "w")
    proc = subprocess.Popen([args.bin, "serve", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz", timeout=120)
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        form = urllib.parse.urlencode({"credential": MASTER, "next": "/ui/"}).encode()
        opener.open(urllib.request.Request(f"{base}/ui/login", data=form,
                                           headers={"Origin": base}))
        # One request's page: the newest row's.
        first = opener.open(f"{base}/ui/requests").read().decode()
        m = re.search(r'href="/ui/requests/([^"?]+)"', first)
        pages = list(PAGES)
        if m:
            pages.append(("one request", f"/ui/requests/{m.group(1)}"))
        for name, path in pages:
            times = []
            for _ in range(args.runs):
                with opener.open(f"{base}{path}") as r:
                    r.read()
                    timing = r.headers.get("Server-Timing", "")
                    dur = re.search(r"dur=([0-9.]+)", timing)
                    if r.status != 200 or not dur:
                        raise SystemExit(f"{path}: status {r.status}, Server-Timing '{timing}'")
                    times.append(float(dur.group(1)))
            print(json.dumps({"page": name, "path": path, "rows": args.rows,
                              "first_ms": round(times[0], 1),
                              "median_ms": round(statistics.median(times), 1),
                              "max_ms": round(max(times), 1)}), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


if __name__ == "__main__":
    main()
