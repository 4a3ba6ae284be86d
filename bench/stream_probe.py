#!/usr/bin/env python3
"""Sequential streaming probe for bench/run.sh (stdlib only, raw sockets, one keep-alive
connection).

For each of N sequential `stream: true` chat requests it records, relative to the moment the
request bytes were handed to the kernel:
  * ttfb  - the first byte of the HTTP response (status line), what curl calls
            time_starttransfer;
  * ttfe  - the first complete SSE event (`data: ...\\n\\n`) of the body, i.e. the first chunk
            a client can act on;
  * every later event's arrival time, so a gateway that holds chunks back and releases them
    in a burst can be detected (mode `chunks`, with the simulator's chunk delay > 0).

Raw sockets rather than http.client: the per-request client cost is a few tens of µs of
Python, identical for every target, so it cancels out of the "added vs direct" numbers.
Output: one JSON object on stdout.
"""
import json
import math
import socket
import sys
import time


def percentile(sorted_vals, p):
    if not sorted_vals:
        return None
    # nearest rank: the smallest value with at least p% of the samples at or below it
    k = max(0, min(len(sorted_vals) - 1, math.ceil(p / 100.0 * len(sorted_vals)) - 1))
    return sorted_vals[k]


class Conn:
    def __init__(self, host, port):
        self.host, self.port = host, port
        self.sock = None

    def ensure(self):
        if self.sock is None:
            s = socket.create_connection((self.host, self.port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = s
        return self.sock

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def one_stream(conn, request_bytes):
    """Sends one request, reads the whole response; returns timings in ns (relative)."""
    s = conn.ensure()
    t0 = time.perf_counter_ns()
    s.sendall(request_bytes)
    buf = b""
    ttfb = None
    # --- headers
    while b"\r\n\r\n" not in buf:
        data = s.recv(65536)
        now = time.perf_counter_ns()
        if not data:
            raise IOError("connection closed before headers")
        if ttfb is None:
            ttfb = now - t0
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        hdrs[k.strip().lower()] = v.strip().lower()
    chunked = hdrs.get(b"transfer-encoding") == b"chunked"
    clen = int(hdrs[b"content-length"]) if b"content-length" in hdrs else None
    keep = hdrs.get(b"connection") != b"close"

    events = []  # arrival times (ns since t0) of complete SSE events
    body = b""  # de-chunked body not yet split into events
    raw = rest  # bytes not yet de-chunked
    raw_time = time.perf_counter_ns() - t0
    done = False
    consumed = 0

    def split_events(now_rel):
        nonlocal body
        while True:
            i = body.find(b"\n\n")
            if i < 0:
                return
            ev = body[:i]
            body = body[i + 2:]
            if ev.strip():
                events.append((now_rel, ev))

    while not done:
        # de-chunk what we have
        if chunked:
            while True:
                j = raw.find(b"\r\n")
                if j < 0:
                    break
                size = int(raw[:j].split(b";")[0], 16)
                if size == 0:
                    if raw[j + 2:j + 4] == b"\r\n":
                        raw = raw[j + 4:]
                        done = True
                    break
                if len(raw) < j + 2 + size + 2:
                    break
                body += raw[j + 2:j + 2 + size]
                raw = raw[j + 2 + size + 2:]
        else:
            body += raw
            consumed += len(raw)
            raw = b""
            if clen is not None and consumed >= clen:
                done = True
        split_events(raw_time)
        if done:
            break
        data = s.recv(65536)
        raw_time = time.perf_counter_ns() - t0
        if not data:
            if clen is None and not chunked:
                done = True
                break
            raise IOError("connection closed mid-body")
        raw += data
    if not keep:
        conn.close()
    return status, ttfb, events


def main():
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--key", default="")
    ap.add_argument("--model", default="gpt-4o-mini")
    ap.add_argument("-n", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--chunk-delay-ms", type=float, default=0.0,
                    help="the simulator's chunk delay during this probe (chunks mode)")
    args = ap.parse_args()

    body = json.dumps({
        "model": args.model,
        "messages": [{"role": "user", "content": "Hello from the Tollgate benchmark"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }).encode()
    req = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
        f"Authorization: Bearer {args.key}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    conn = Conn(args.host, args.port)
    ttfb, ttfe, spans, bad, n_events = [], [], [], 0, []
    offsets = []  # per stream: each event's arrival time (µs since the request was sent)
    held = 0  # events that arrived less than half a chunk delay after the previous one
    gaps_total = 0
    for i in range(args.warmup + args.n):
        status, tb, events = one_stream(conn, req)
        if i < args.warmup:
            continue
        if status != 200 or not events or events[-1][1].strip() != b"data: [DONE]":
            bad += 1
            continue
        ttfb.append(tb / 1000.0)
        ttfe.append(events[0][0] / 1000.0)
        spans.append((events[-1][0] - events[0][0]) / 1000.0)
        n_events.append(len(events))
        offsets.append([e[0] / 1000.0 for e in events])
        if args.chunk_delay_ms > 0:
            half = args.chunk_delay_ms * 1e6 / 2
            for a, b in zip(events, events[1:]):
                gaps_total += 1
                if b[0] - a[0] < half:
                    held += 1
    conn.close()
    ttfb.sort(); ttfe.sort(); spans.sort()
    # median arrival offset of the i-th event, over streams that had the usual event count
    event_p50 = []
    if offsets:
        k = max(set(n_events), key=n_events.count)
        same = [o for o in offsets if len(o) == k]
        event_p50 = [round(percentile(sorted(o[i] for o in same), 50), 1) for i in range(k)]
    out = {
        "n": len(ttfb), "bad": bad,
        "ttfb_p50_us": percentile(ttfb, 50), "ttfb_p99_us": percentile(ttfb, 99),
        "ttfe_p50_us": percentile(ttfe, 50), "ttfe_p99_us": percentile(ttfe, 99),
        "span_p50_us": percentile(spans, 50), "span_max_us": spans[-1] if spans else None,
        "events_per_stream": sorted(set(n_events)),
        "chunk_delay_ms": args.chunk_delay_ms,
        "gaps": gaps_total, "gaps_under_half_delay": held,
        "event_offset_p50_us": event_p50,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
