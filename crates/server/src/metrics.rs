//! Prometheus metrics (`GET /metrics`).
//!
//! A fixed set of counters in atomics — the label space (endpoint × outcome) is small and known,
//! so no registry, no locks and no allocation on the request path.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use tollgate_types::{ErrorCode, LedgerRow, Outcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Embeddings,
    Models,
    Messages,
}

impl Endpoint {
    pub const ALL: [Endpoint; 4] = [
        Endpoint::Chat,
        Endpoint::Embeddings,
        Endpoint::Models,
        Endpoint::Messages,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Models => "/v1/models",
            Endpoint::Messages => "/v1/messages",
        }
    }
}

const OUTCOMES: [Outcome; 4] = [
    Outcome::Ok,
    Outcome::Rejected,
    Outcome::Failed,
    Outcome::Cancelled,
];

fn outcome_idx(o: Outcome) -> usize {
    match o {
        Outcome::Ok => 0,
        Outcome::Rejected => 1,
        Outcome::Failed => 2,
        Outcome::Cancelled => 3,
    }
}

#[derive(Default)]
pub struct Metrics {
    requests: [[AtomicU64; 4]; 4],
    cost_nanos: [AtomicU64; 4],
    input_tokens: [AtomicU64; 4],
    output_tokens: [AtomicU64; 4],
    latency_us_sum: [AtomicU64; 4],
    rate_limited: [AtomicU64; 4],
    in_flight: AtomicI64,
}

impl Metrics {
    pub fn observe(&self, ep: Endpoint, row: &LedgerRow) {
        let e = ep as usize;
        self.requests[e][outcome_idx(row.outcome)].fetch_add(1, Ordering::Relaxed);
        self.cost_nanos[e].fetch_add(row.effective_cost.0.max(0) as u64, Ordering::Relaxed);
        self.input_tokens[e].fetch_add(row.usage.input_tokens, Ordering::Relaxed);
        self.output_tokens[e].fetch_add(row.usage.output_tokens, Ordering::Relaxed);
        self.latency_us_sum[e].fetch_add(row.latency_us, Ordering::Relaxed);
        if row.error_code.as_deref() == Some(ErrorCode::RateLimitExceeded.as_str()) {
            self.rate_limited[e].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn render(&self, ledger: &tollgate_ledger::LedgerStats) -> String {
        let mut s = String::with_capacity(4096);
        let _ = writeln!(
            s,
            "# HELP tollgate_requests_total Data-plane requests by endpoint and outcome."
        );
        let _ = writeln!(s, "# TYPE tollgate_requests_total counter");
        for ep in Endpoint::ALL {
            for o in OUTCOMES {
                let v = self.requests[ep as usize][outcome_idx(o)].load(Ordering::Relaxed);
                let _ = writeln!(
                    s,
                    "tollgate_requests_total{{endpoint=\"{}\",outcome=\"{}\"}} {v}",
                    ep.path(),
                    o.as_str()
                );
            }
        }
        let families: [(&str, &str, &[AtomicU64; 4]); 5] = [
            (
                "tollgate_cost_nano_usd_total",
                "Effective cost recorded, nano-USD.",
                &self.cost_nanos,
            ),
            (
                "tollgate_input_tokens_total",
                "Input tokens recorded.",
                &self.input_tokens,
            ),
            (
                "tollgate_output_tokens_total",
                "Output tokens recorded.",
                &self.output_tokens,
            ),
            (
                "tollgate_request_latency_microseconds_sum",
                "Sum of request latencies in the gateway.",
                &self.latency_us_sum,
            ),
            (
                "tollgate_rate_limited_total",
                "Requests refused by a rate limit (429 rate_limit_exceeded).",
                &self.rate_limited,
            ),
        ];
        for (name, help, vals) in families {
            let _ = writeln!(s, "# HELP {name} {help}");
            let _ = writeln!(s, "# TYPE {name} counter");
            for ep in Endpoint::ALL {
                let _ = writeln!(
                    s,
                    "{name}{{endpoint=\"{}\"}} {}",
                    ep.path(),
                    vals[ep as usize].load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            s,
            "# HELP tollgate_requests_in_flight Requests being handled."
        );
        let _ = writeln!(s, "# TYPE tollgate_requests_in_flight gauge");
        let _ = writeln!(
            s,
            "tollgate_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        let ledger_counters = [
            ("tollgate_ledger_rows_recorded_total", ledger.rows_recorded),
            ("tollgate_ledger_rows_written_total", ledger.rows_written),
            ("tollgate_ledger_rows_spilled_total", ledger.rows_spilled),
            ("tollgate_ledger_write_errors_total", ledger.write_errors),
        ];
        for (name, v) in ledger_counters {
            let _ = writeln!(s, "# TYPE {name} counter");
            let _ = writeln!(s, "{name} {v}");
        }
        let _ = writeln!(s, "# TYPE tollgate_ledger_queue_depth gauge");
        let _ = writeln!(s, "tollgate_ledger_queue_depth {}", ledger.queue_depth);
        s
    }
}
