#!/usr/bin/env python3
"""Headline numbers of several bench/run.sh runs side by side, with the median of each.

    python3 bench/summarize.py bench/out/2026*/

One run on a shared 2-CPU machine is noisy (other builds, hypervisor steal); the verdicts in
BENCHMARKS.md are read from the medians over repeated runs.
"""
import json
import os
import statistics
import sys


def load(run, name):
    p = os.path.join(run, name)
    if not os.path.exists(p):
        return None
    txt = open(p).read().strip()
    return json.loads(txt) if txt else None


def kv(run, name):
    out = {}
    p = os.path.join(run, name)
    if os.path.exists(p):
        for line in open(p):
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out


def steal(run):
    a, b = os.path.join(run, "proc-stat-before.txt"), os.path.join(run, "proc-stat-after.txt")
    if not (os.path.exists(a) and os.path.exists(b)):
        return None
    parse = lambda p: {l.split()[0]: list(map(int, l.split()[1:])) for l in open(p)}
    x, y = parse(a), parse(b)
    d = [j - i for i, j in zip(x["cpu"], y["cpu"])]
    return 100 * d[7] / (sum(d[:8]) or 1)


def metrics(run):
    m = {}
    env, mem = kv(run, "env.txt"), kv(run, "mem.txt")
    m["run"] = env.get("date_utc", os.path.basename(run.rstrip("/")))
    m["load1"] = float(env.get("load_before", "nan").split()[0])
    m["steal%"] = steal(run)
    c1 = {t: load(run, f"c1-{t}.json") for t in ("direct", "nginx", "tollgate")}
    if all(c1.values()):
        for q in ("p50", "p99"):
            d, n, g = (c1[t][f"lat_{q}_us"] for t in ("direct", "nginx", "tollgate"))
            m[f"c1 {q} nginx+"] = n - d
            m[f"c1 {q} tollgate+"] = g - d
            m[f"c1 {q} ratio"] = (g - d) / (n - d) if n > d else None
    c50 = {t: load(run, f"c50-{t}.json") for t in ("direct", "nginx", "tollgate")}
    if all(c50.values()):
        rps = {t: c50[t]["requests"] / c50[t]["duration_us"] * 1e6 for t in c50}
        m["c50 nginx rps"] = rps["nginx"]
        m["c50 tollgate rps"] = rps["tollgate"]
        m["c50 share"] = rps["tollgate"] / rps["nginx"]
        g = c50["tollgate"]
        m["cpu µs/req"] = g["target_cpu_ticks"] / g["clk_tck"] * 1e6 / g["requests"]
    s50 = {t: load(run, f"stream-c50-{t}.json") for t in ("nginx", "tollgate")}
    if all(s50.values()):
        r = {t: s50[t]["requests"] / s50[t]["duration_us"] * 1e6 for t in s50}
        m["stream c50 share"] = r["tollgate"] / r["nginx"]
        g = s50["tollgate"]
        m["cpu µs/stream"] = g["target_cpu_ticks"] / g["clk_tck"] * 1e6 / g["requests"]
    tt = {t: load(run, f"ttfb-{t}.json") for t in ("direct", "nginx", "tollgate")}
    if all(tt.values()):
        for key, label in (("ttfb_p50_us", "ttfb"), ("ttfe_p50_us", "first event")):
            d, n, g = (tt[t][key] for t in ("direct", "nginx", "tollgate"))
            m[f"{label} nginx+"] = n - d
            m[f"{label} tollgate+"] = g - d
            m[f"{label} ratio"] = (g - d) / (n - d) if n > d else None
    ch = {t: load(run, f"chunks-{t}.json") for t in ("direct", "tollgate")}
    if all(ch.values()) and "event_offset_p50_us" in ch["direct"]:
        base, o = ch["direct"]["event_offset_p50_us"], ch["tollgate"]["event_offset_p50_us"]
        if len(base) == len(o):
            m["chunk lag µs"] = max(a - b for a, b in zip(o, base)) - (
                ch["tollgate"]["ttfb_p50_us"] - ch["direct"]["ttfb_p50_us"])
    if mem.get("tollgate_rss_after_kib"):
        m["RSS after MiB"] = int(mem["tollgate_rss_after_kib"]) / 1024
    return m


COLS = [
    ("load1", "load", None), ("steal%", "steal %", None),
    ("c1 p50 nginx+", "c1 p50 nginx +µs", None), ("c1 p50 tollgate+", "c1 p50 tollgate +µs", None),
    ("c1 p50 ratio", "ratio (≤ 2)", lambda v: v <= 2),
    ("c1 p99 nginx+", "c1 p99 nginx +µs", None), ("c1 p99 tollgate+", "c1 p99 tollgate +µs", None),
    ("c1 p99 ratio", "ratio (≤ 3)", lambda v: v <= 3),
    ("c50 nginx rps", "c50 nginx req/s", None), ("c50 tollgate rps", "c50 tollgate req/s", None),
    ("c50 share", "share (≥ 0.40)", lambda v: v >= 0.40),
    ("ttfb nginx+", "stream 1st byte nginx +µs", None), ("ttfb tollgate+", "tollgate +µs", None),
    ("ttfb ratio", "ratio (≤ 2)", lambda v: v <= 2),
    ("first event nginx+", "stream 1st event nginx +µs", None),
    ("first event tollgate+", "tollgate +µs", None),
    ("first event ratio", "ratio (≤ 2)", lambda v: v <= 2),
    ("chunk lag µs", "worst chunk lag µs (< 10,000)", lambda v: v < 10000),
    ("stream c50 share", "stream c50 share", None),
    ("cpu µs/req", "CPU µs/req", None), ("cpu µs/stream", "CPU µs/stream", None),
    ("RSS after MiB", "RSS idle after MiB (< 40)", lambda v: v < 40),
]


def fmt(v, key):
    if v is None:
        return "–"
    if "ratio" in key or "share" in key:
        return f"{v:.2f}"
    if key in ("load1", "steal%"):
        return f"{v:.2f}" if key == "load1" else f"{v:.1f}"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.1f}"


def main():
    runs = [metrics(r) for r in sys.argv[1:]]
    print("| metric | " + " | ".join(m["run"] for m in runs) + " | **median** | target |")
    print("|---|" + "---:|" * len(runs) + "---:|---|")
    for key, label, ok in COLS:
        vals = [m.get(key) for m in runs]
        present = [v for v in vals if v is not None]
        med = statistics.median(present) if present else None
        verdict = "–"
        if ok and med is not None:
            verdict = "PASS" if ok(med) else "FAIL"
        print(f"| {label} | " + " | ".join(fmt(v, key) for v in vals) + f" | **{fmt(med, key)}** | {verdict} |")


if __name__ == "__main__":
    main()
