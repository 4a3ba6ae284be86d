#!/usr/bin/env python3
"""Turns a bench/run.sh run directory into the markdown results table (stdout)."""
import json
import os
import sys

run = sys.argv[1]
T = ("direct", "nginx", "tollgate")


def load(name):
    p = os.path.join(run, name)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        txt = f.read().strip()
    return json.loads(txt) if txt else None


def kv(name):
    out = {}
    p = os.path.join(run, name)
    if os.path.exists(p):
        for line in open(p):
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out


env, mem = kv("env.txt"), kv("mem.txt")
rows, notes = [], []
failures = 0


def wrk(kind, t):
    return load(f"{kind}-{t}.json")


def errors(d):
    return sum(d[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))


def rps(d):
    return d["requests"] / (d["duration_us"] / 1e6)


def cpu_us_per_req(d):
    return d["target_cpu_ticks"] / d["clk_tck"] * 1e6 / d["requests"] if d["requests"] else float("nan")


def fmt(v, unit=""):
    if v is None:
        return "–"
    if isinstance(v, float):
        v = f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.1f}"
    else:
        v = f"{v:,}"
    return f"{v}{unit}"


def verdict(ok):
    global failures
    if ok is None:
        return "n/a"
    if not ok:
        failures += 1
    return "**PASS**" if ok else "**FAIL**"


def added_row(label, vals, limit, target_text):
    """vals: direct, nginx, tollgate (µs). Added = minus direct; ratio = tollgate/nginx added."""
    d, n, g = vals
    na, ga = n - d, g - d
    if limit is None:
        ratio, ok = (ga / na if na > 0 else None), None
    elif na <= 0:
        ratio, ok = None, None
        notes.append(f"{label}: nginx added ≤ 0 µs in this run (noise); ratio not computable")
    else:
        ratio = ga / na
        ok = ratio <= limit
    rows.append([label, fmt(d), fmt(n), fmt(g), fmt(na), fmt(ga),
                 "–" if ratio is None else f"{ratio:.2f}×", target_text, verdict(ok) if limit else "–"])


# -------------------------------------------------------------- non-streaming latency, c1
c1 = {t: wrk("c1", t) for t in T}
for t in T:
    if c1[t] and errors(c1[t]):
        notes.append(f"c1 {t}: {errors(c1[t])} errors/non-2xx in wrk output — the run is invalid")
if all(c1.values()):
    added_row("non-streaming latency p50, c=1 (µs)", [c1[t]["lat_p50_us"] for t in T], 2.0,
              "added ≤ 2× nginx's")
    added_row("non-streaming latency p99, c=1 (µs)", [c1[t]["lat_p99_us"] for t in T], 3.0,
              "added ≤ 3× nginx's")

# -------------------------------------------------------------- throughput, c50
c50 = {t: wrk("c50", t) for t in T}
s50 = {t: wrk("stream-c50", t) for t in T}
for kind, dd in (("c50", c50), ("stream-c50", s50)):
    for t in T:
        if dd[t] and errors(dd[t]):
            notes.append(f"{kind} {t}: {errors(dd[t])} errors/non-2xx in wrk output — the run is invalid")


def tput_row(label, dd, limit):
    if not all(dd.values()):
        return
    r = [rps(dd[t]) for t in T]
    share = r[2] / r[1]
    ok = share >= limit if limit else None
    rows.append([label, fmt(r[0]), fmt(r[1]), fmt(r[2]), "", "", f"{share:.0%} of nginx",
                 f"≥ {limit:.0%} of nginx" if limit else "–", verdict(ok) if limit else "–"])


tput_row("non-streaming throughput, c=50 (req/s)", c50, 0.40)
tput_row("streaming throughput, c=50 (streams/s)", s50, None)
if all(c50.values()):
    added_row("non-streaming latency p50, c=50 (µs)", [c50[t]["lat_p50_us"] for t in T], None, "–")
    added_row("non-streaming latency p99, c=50 (µs)", [c50[t]["lat_p99_us"] for t in T], None, "–")

# -------------------------------------------------------------- streaming TTFB
tt = {t: load(f"ttfb-{t}.json") for t in T}
if all(tt.values()):
    for t in T:
        if tt[t]["bad"]:
            notes.append(f"ttfb {t}: {tt[t]['bad']} streams incomplete or non-200")
    added_row("stream: first response byte p50, c=1 (µs)", [tt[t]["ttfb_p50_us"] for t in T], 2.0,
              "added ≤ 2× nginx's")
    added_row("stream: first response byte p99, c=1 (µs)", [tt[t]["ttfb_p99_us"] for t in T], None, "–")
    added_row("stream: first SSE event p50, c=1 (µs)", [tt[t]["ttfe_p50_us"] for t in T], 2.0,
              "added ≤ 2× nginx's")
    added_row("stream: first SSE event p99, c=1 (µs)", [tt[t]["ttfe_p99_us"] for t in T], None, "–")

# -------------------------------------------------------------- chunks held back?
ch = {t: load(f"chunks-{t}.json") for t in T}
if all(ch.values()):
    delay_us = ch["direct"]["chunk_delay_ms"] * 1000
    base = ch["direct"]["event_offset_p50_us"]

    def max_lag(t):
        """Largest extra delay of any event (median over streams), relative to its direct
        arrival, beyond the lag of the first response byte. A proxy that forwards every chunk
        at once shows a small constant; one that holds chunks back shows a chunk interval."""
        o = ch[t]["event_offset_p50_us"]
        if len(o) != len(base):
            return None
        return max(a - b for a, b in zip(o, base)) - (ch[t]["ttfb_p50_us"] - ch["direct"]["ttfb_p50_us"])

    lags = [max_lag(t) for t in T]
    # A chunk is held back when it is not forwarded until a later one arrives: it then lags by
    # at least one chunk interval. Scheduling noise on a shared machine stays below that.
    ok = (ch["tollgate"]["bad"] == 0 and lags[2] is not None and lags[2] < delay_us)
    rows.append([f"stream: worst chunk lag vs direct, beyond the first byte's (µs; chunk every {delay_us/1000:g} ms)",
                 "0", fmt(lags[1]), fmt(lags[2]), "", "", "", "< 1 chunk interval", verdict(ok)])
    h = [ch[t]["ttfe_p50_us"] - ch[t]["ttfb_p50_us"] for t in T]
    rows.append(["stream: headers → first event p50, paced stream (µs)", fmt(h[0]), fmt(h[1]), fmt(h[2]),
                 "", "", "", "–", "–"])
    held = [f"{ch[t]['gaps_under_half_delay']}/{ch[t]['gaps']}" for t in T]
    rows.append(["stream: event gaps < ½ chunk interval (bunched)", *held, "", "", "", "–", "–"])

# -------------------------------------------------------------- CPU per request
for label, dd in (("CPU per request, non-streaming c=50 (µs)", c50),
                  ("CPU per request, streaming c=50 (µs)", s50)):
    if all(dd.values()):
        v = [cpu_us_per_req(dd[t]) for t in T]
        rows.append([label, fmt(v[0]), fmt(v[1]), fmt(v[2]), "", "",
                     f"{v[2] / v[1]:.1f}× nginx" if v[1] > 0 else "", "–", "–"])

# -------------------------------------------------------------- memory
mib = lambda k: int(mem[k]) / 1024 if k in mem and mem[k] else None
idle = mib("tollgate_rss_idle_kib")
rows.append(["RSS idle after start (MiB)", "", fmt(mib("nginx_worker_rss_idle_kib")), fmt(idle),
             "", "", "", "< 40 MiB", verdict(idle is not None and idle < 40)])
after = mib("tollgate_rss_after_kib")
rows.append(["RSS idle after the runs (MiB)", "", "", fmt(after),
             "", "", "", "< 40 MiB", verdict(after is not None and after < 40)])
rows.append(["peak RSS, VmHWM (MiB)", fmt(mib("sim_hwm_kib")), fmt(mib("nginx_worker_hwm_kib")),
             fmt(mib("tollgate_hwm_kib")), "", "", "", "–", "–"])

soak_path = os.path.join(run, "soak-rss.txt")
if os.path.exists(soak_path):
    samples = []
    for line in open(soak_path):
        a, b = line.split()
        if a != "idle" and b:
            samples.append((int(a), int(b) / 1024))
    if len(samples) >= 4:
        # flat: after the first third (warm-up of pools and allocator), RSS grows < 5% and < 4 MiB
        third = samples[len(samples) // 3][1]
        last = max(s[1] for s in samples[len(samples) // 3:])
        ok = last - third < max(4.0, 0.05 * third)
        dur = samples[-1][0]
        rows.append([f"RSS during {dur}s soak: at ⅓ → max after (MiB)", "", "",
                     f"{third:.1f} → {last:.1f}", "", "", "", "flat", verdict(ok)])
        idle_after = [int(l.split()[1]) / 1024 for l in open(soak_path) if l.startswith("idle ")]
        if idle_after:
            rows.append(["RSS idle after the soak (MiB)", "", "", fmt(idle_after[0]), "", "", "",
                         "< 40 MiB", verdict(idle_after[0] < 40)])
        sp, ss = load("soak-plain.json"), load("soak-stream.json")
        if sp and ss:
            notes.append(f"soak load: {rps(sp):,.0f} req/s plain + {rps(ss):,.0f} streams/s, "
                         f"errors {errors(sp) + errors(ss)}; RSS samples in soak-rss.txt")
else:
    rows.append(["RSS flat over a 5-minute soak", "", "", "not run", "", "", "", "flat", "n/a (use --soak 300)"])

# -------------------------------------------------------------- CPU steal during the measurements
def steal_summary():
    a, b = os.path.join(run, "proc-stat-before.txt"), os.path.join(run, "proc-stat-after.txt")
    if not (os.path.exists(a) and os.path.exists(b)):
        return None
    parse = lambda p: {l.split()[0]: list(map(int, l.split()[1:])) for l in open(p)}
    x, y = parse(a), parse(b)
    out = []
    for cpu in sorted(k for k in x if k != "cpu"):
        d = [j - i for i, j in zip(x[cpu], y[cpu])]
        total = sum(d[:8]) or 1
        out.append(f"{cpu} steal {100 * d[7] / total:.1f}%")
    return ", ".join(out)


steal = steal_summary()

# -------------------------------------------------------------- print
print(f"Run {env.get('date_utc', '?')} · commit {env.get('git_commit', '?')} · {env.get('nproc', '?')} CPUs "
      f"({env.get('cpu', '?')}) · kernel {env.get('kernel', '?')} · load avg before {env.get('load_before', '?')}, "
      f"after {env.get('load_after', '?')} · {env.get('durations', '')}"
      + (f" · CPU steal while measuring: {steal}" if steal else ""))
print()
hdr = ["measurement", "direct", "nginx", "tollgate", "nginx added", "tollgate added", "ratio", "target", "result"]
print("| " + " | ".join(hdr) + " |")
print("|" + "|".join(["---"] + ["---:"] * 6 + ["---", "---"]) + "|")
for r in rows:
    print("| " + " | ".join(r) + " |")
print()
for n in notes:
    print(f"- {n}")
print(f"\n{failures} target(s) missed." if failures else "\nAll targets measured here are met.")
