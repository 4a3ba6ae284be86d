//! Prometheus metrics (`GET /metrics`).
//!
//! A fixed set of counters in atomics — the label space (endpoint × outcome) is small and known,
//! so no registry and no allocation on the request path — and the GenAI histograms
//! (`gen_ai_client_operation_duration_seconds`, `gen_ai_client_token_usage`,
//! `gen_ai_server_time_to_first_token_seconds`, `tollgate_genai_cost_nano_usd_total`), the
//! OTLP exporter's aggregation under their Prometheus names, bounded the same way
//! (operation, provider, requested and served model, token or error type; at most
//! `tollgate_telemetry::metrics::MAX_SERIES` series each, then `otel_metric_overflow`).

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use tollgate_types::{ErrorCode, LedgerRow, Outcome};

/// A data-plane route: the row's `endpoint` and the metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Chat,
    Embeddings,
    Models,
    Messages,
}

impl Route {
    pub(crate) const ALL: [Route; 4] = [
        Route::Chat,
        Route::Embeddings,
        Route::Models,
        Route::Messages,
    ];

    pub(crate) fn path(self) -> &'static str {
        match self {
            Route::Chat => "/v1/chat/completions",
            Route::Embeddings => "/v1/embeddings",
            Route::Models => "/v1/models",
            Route::Messages => "/v1/messages",
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
pub(crate) struct Metrics {
    requests: [[AtomicU64; 4]; 4],
    cost_nanos: [AtomicU64; 4],
    input_tokens: [AtomicU64; 4],
    output_tokens: [AtomicU64; 4],
    latency_us_sum: [AtomicU64; 4],
    rate_limited: [AtomicU64; 4],
    in_flight: AtomicI64,
    retries: AtomicU64,
    retry_budget_exhausted: AtomicU64,
    shed: AtomicU64,
    /// Client connections: open now, refused at `max_connections`, closed by a limit.
    pub(crate) connections: ConnectionStats,
    /// The GenAI histograms and cost by model, the OTLP exporter's aggregation under
    /// Prometheus names (`tollgate_telemetry::metrics`). A lock per request: held for one
    /// hash lookup and a few additions, and a known series allocates nothing.
    /// Shared with the OTLP exporter when telemetry is on (`Telemetry::aggregates`).
    genai: std::sync::Arc<std::sync::Mutex<tollgate_telemetry::metrics::Aggregates>>,
}

/// What the listener counts (`listener.rs`).
#[derive(Debug, Default)]
pub(crate) struct ConnectionStats {
    pub(crate) open: AtomicI64,
    pub(crate) refused: AtomicU64,
    pub(crate) closed_idle: AtomicU64,
    pub(crate) closed_header_timeout: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
}

impl Metrics {
    /// Metrics aggregating the GenAI series into `genai` (the exporter's, when telemetry is
    /// on, so the two never disagree).
    pub(crate) fn new(
        genai: std::sync::Arc<std::sync::Mutex<tollgate_telemetry::metrics::Aggregates>>,
    ) -> Metrics {
        Metrics {
            genai,
            ..Metrics::default()
        }
    }

    pub(crate) fn observe(
        &self,
        route: Route,
        row: &LedgerRow,
        provider_kind: Option<tollgate_types::ProviderKind>,
    ) {
        self.genai
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .observe_row(row, provider_kind);
        let e = route as usize;
        self.requests[e][outcome_idx(row.outcome)].fetch_add(1, Ordering::Relaxed);
        self.cost_nanos[e].fetch_add(row.effective_cost.0.max(0) as u64, Ordering::Relaxed);
        self.input_tokens[e].fetch_add(row.usage.input_tokens, Ordering::Relaxed);
        self.output_tokens[e].fetch_add(row.usage.output_tokens, Ordering::Relaxed);
        self.latency_us_sum[e].fetch_add(row.latency_us, Ordering::Relaxed);
        if row.error_code.as_deref() == Some(ErrorCode::RateLimitExceeded.as_str()) {
            self.rate_limited[e].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An upstream attempt after a request's first (retry, failover or fallback).
    pub(crate) fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// A retry refused because the gateway-wide retry budget was spent.
    pub(crate) fn retry_budget_exhausted(&self) {
        self.retry_budget_exhausted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    /// Requests in flight now (rows open).
    pub(crate) fn in_flight_now(&self) -> usize {
        usize::try_from(self.in_flight.load(Ordering::Relaxed)).unwrap_or(0)
    }

    pub(crate) fn shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn render(&self, ledger: &tollgate_ledger::LedgerStats) -> String {
        let mut s = String::with_capacity(4096);
        let _ = writeln!(
            s,
            "# HELP tollgate_requests_total Data-plane requests by endpoint and outcome."
        );
        let _ = writeln!(s, "# TYPE tollgate_requests_total counter");
        for ep in Route::ALL {
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
            for ep in Route::ALL {
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
        let c = &self.connections;
        let lines: [(&str, &str, &str, i64); 6] = [
            (
                "tollgate_requests_shed_total",
                "counter",
                "Requests refused with 503 overloaded at server.limits.max_in_flight.",
                to_i64(self.shed.load(Ordering::Relaxed)),
            ),
            (
                "tollgate_connections_open",
                "gauge",
                "Client connections open.",
                c.open.load(Ordering::Relaxed),
            ),
            (
                "tollgate_connections_refused_total",
                "counter",
                "Connections answered 503 overloaded and closed at server.limits.max_connections.",
                to_i64(c.refused.load(Ordering::Relaxed)),
            ),
            (
                "tollgate_connections_closed_idle_total",
                "counter",
                "Connections closed after server.limits.idle_timeout_secs without a request.",
                to_i64(c.closed_idle.load(Ordering::Relaxed)),
            ),
            (
                "tollgate_connections_closed_header_timeout_total",
                "counter",
                "Connections closed for not completing request headers within \
                 server.limits.header_read_timeout_secs.",
                to_i64(c.closed_header_timeout.load(Ordering::Relaxed)),
            ),
            (
                "tollgate_accept_errors_total",
                "counter",
                "Failed accept() calls (e.g. EMFILE: out of file descriptors).",
                to_i64(c.accept_errors.load(Ordering::Relaxed)),
            ),
        ];
        for (name, kind, help, v) in lines {
            let _ = writeln!(s, "# HELP {name} {help}");
            let _ = writeln!(s, "# TYPE {name} {kind}");
            let _ = writeln!(s, "{name} {v}");
        }
        let _ = writeln!(
            s,
            "# HELP tollgate_upstream_retries_total Upstream attempts after a request's first \
             (retries, failovers, fallbacks)."
        );
        let _ = writeln!(s, "# TYPE tollgate_upstream_retries_total counter");
        let _ = writeln!(
            s,
            "tollgate_upstream_retries_total {}",
            self.retries.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP tollgate_retry_budget_exhausted_total Retries refused by the retry budget."
        );
        let _ = writeln!(s, "# TYPE tollgate_retry_budget_exhausted_total counter");
        let _ = writeln!(
            s,
            "tollgate_retry_budget_exhausted_total {}",
            self.retry_budget_exhausted.load(Ordering::Relaxed)
        );
        let ledger_counters = [
            ("tollgate_ledger_rows_recorded_total", ledger.rows_recorded),
            ("tollgate_ledger_rows_written_total", ledger.rows_written),
            ("tollgate_ledger_rows_spilled_total", ledger.rows_spilled),
            ("tollgate_ledger_write_errors_total", ledger.write_errors),
            // Provisional rows (crash durability): recorded, dropped under overload, and the
            // interrupted rows this process recorded at start from a dead one's intents.
            (
                "tollgate_ledger_intents_recorded_total",
                ledger.intents_recorded,
            ),
            (
                "tollgate_ledger_intents_dropped_total",
                ledger.intents_dropped,
            ),
            (
                "tollgate_ledger_rows_interrupted_total",
                ledger.rows_interrupted,
            ),
        ];
        for (name, v) in ledger_counters {
            let _ = writeln!(s, "# TYPE {name} counter");
            let _ = writeln!(s, "{name} {v}");
        }
        let _ = writeln!(s, "# TYPE tollgate_ledger_queue_depth gauge");
        let _ = writeln!(s, "tollgate_ledger_queue_depth {}", ledger.queue_depth);
        // A copy, so requests never wait on the text being written.
        let genai = self
            .genai
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        genai.prometheus(&mut s);
        s
    }
}

/// The OpenTelemetry exporter's counters (`telemetry` on).
pub(crate) fn render_telemetry(t: &tollgate_telemetry::TelemetryStats, out: &mut String) {
    for (name, help, v) in [
        (
            "tollgate_telemetry_dropped_total",
            "Requests whose span and metric observation were dropped: the export queue was full.",
            t.dropped,
        ),
        (
            "tollgate_telemetry_spans_exported_total",
            "Spans the OTLP collector accepted.",
            t.spans_exported,
        ),
        (
            "tollgate_telemetry_export_errors_total",
            "OTLP export requests that failed or were refused.",
            t.export_errors,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {v}");
    }
}

/// Per-deployment gauges from the router's live health: breaker state, in-flight requests,
/// latency EWMAs, and the prompt-cache stickiness table of each logical model.
pub(crate) fn render_deployments<P>(router: &tollgate_router::Router<P>, out: &mut String) {
    let now = std::time::Instant::now();
    let _ = writeln!(
        out,
        "# HELP tollgate_deployment_breaker_open 1 when the deployment's circuit is open or \
         half-open."
    );
    let _ = writeln!(out, "# TYPE tollgate_deployment_breaker_open gauge");
    let mut rows = Vec::new();
    for name in router.names() {
        let Some(m) = router.get(name) else { continue };
        for d in &m.deployments {
            rows.push((label(name), label(&d.label), d.health.snapshot(now)));
        }
    }
    for (model, label, h) in &rows {
        let open = u8::from(h.state != tollgate_router::BreakerState::Closed);
        let _ = writeln!(
            out,
            "tollgate_deployment_breaker_open{{model=\"{model}\",deployment=\"{label}\"}} {open}"
        );
    }
    let _ = writeln!(out, "# TYPE tollgate_deployment_in_flight gauge");
    for (model, label, h) in &rows {
        let _ = writeln!(
            out,
            "tollgate_deployment_in_flight{{model=\"{model}\",deployment=\"{label}\"}} {}",
            h.in_flight
        );
    }
    let _ = writeln!(out, "# TYPE tollgate_deployment_latency_ewma_ms gauge");
    for (model, label, h) in &rows {
        if let Some(v) = h.ewma_latency_ms {
            let _ = writeln!(
                out,
                "tollgate_deployment_latency_ewma_ms{{model=\"{model}\",deployment=\"{label}\"}} {v:.3}"
            );
        }
    }
    let _ = writeln!(out, "# TYPE tollgate_sticky_hits_total counter");
    for name in router.names() {
        if let Some(m) = router.get(name) {
            let st = m.sticky_stats();
            let _ = writeln!(
                out,
                "tollgate_sticky_hits_total{{model=\"{}\"}} {}",
                label(name),
                st.hits
            );
        }
    }
}

/// Cache gauges and counters for `/metrics`.
pub(crate) fn render_cache(cache: &tollgate_cache::ResponseCache, out: &mut String) {
    let s = cache.stats();
    for (name, kind, help, v) in [
        (
            "tollgate_cache_bytes",
            "gauge",
            "Bytes held by the response cache (payload plus per-entry overhead).",
            s.bytes,
        ),
        (
            "tollgate_cache_max_bytes",
            "gauge",
            "The response cache's global memory bound.",
            s.max_bytes,
        ),
        (
            "tollgate_cache_entries",
            "gauge",
            "Answers held by the response cache.",
            s.entries,
        ),
        (
            "tollgate_cache_hits_total",
            "counter",
            "Requests answered from the cache.",
            s.hits,
        ),
        (
            "tollgate_cache_misses_total",
            "counter",
            "Cache lookups that found nothing.",
            s.misses,
        ),
        (
            "tollgate_cache_bypasses_total",
            "counter",
            "Requests that skipped the cache.",
            s.bypasses,
        ),
        (
            "tollgate_cache_inserts_total",
            "counter",
            "Answers stored.",
            s.inserts,
        ),
        (
            "tollgate_cache_expired_total",
            "counter",
            "Entries found expired and dropped.",
            s.expired,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {v}");
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped (model names may hold
/// any printable character).
fn label(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        std::borrow::Cow::Owned(
            v.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n"),
        )
    } else {
        std::borrow::Cow::Borrowed(v)
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod label_tests {
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::label("gpt-4o"), "gpt-4o");
        assert_eq!(super::label("a\"b\\c"), "a\\\"b\\\\c");
    }
}
