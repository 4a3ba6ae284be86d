//! # tollgate-telemetry — GenAI traces and metrics over OTLP, off the request path
//!
//! The server hands one [`RequestSpan`] per finished request — its ledger row, its trace
//! context and the timing of each upstream attempt — to [`Telemetry::record`], a non-blocking
//! `try_send` into a bounded queue, and observes its row into the shared metrics
//! ([`Telemetry::aggregates`], which the server's Prometheus `/metrics` renders too). A
//! background task ([`Telemetry::run`]) turns them into:
//! - **spans**, for sampled requests: one `SERVER` span per request named after the GenAI
//!   conventions (`chat gpt-4o`), one `CLIENT` span per upstream attempt (retries and failovers
//!   visible), `gen_ai.*` attributes from the row (semantic conventions v1.41 names,
//!   [`otlp`]) and Tollgate's own under `tollgate.*` (tenant, feature, key id — never the
//!   key —, cost, policy actions, cache status, budget decision). Prompt and completion text
//!   are never in a row, so they are never exported.
//! - **metrics**, from every request's observation: `gen_ai.client.token.usage`,
//!   `gen_ai.client.operation.duration`, `gen_ai.server.time_to_first_token` histograms with
//!   the spec's bucket boundaries, and `tollgate.cost` (integer nano-USD), cumulative, with
//!   bounded label sets (operation, provider, requested and served model, token type, error
//!   type — never tenant, key or user; past [`metrics::MAX_SERIES`] series per metric a
//!   request is counted under the spec's `otel.metric.overflow` attribute).
//!
//! Both are POSTed as OTLP/HTTP protobuf (`/v1/traces`, `/v1/metrics`). Nothing waits on the
//! collector: a full queue drops the request's span (its metrics are already observed) and
//! counts it ([`TelemetryStats::dropped`]); an export that fails is counted and dropped, never
//! retried in a way that could grow memory.

pub mod context;
pub mod metrics;
pub mod otlp;
mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tollgate_types::{LedgerRow, ProviderKind};

pub use context::{TraceContext, format_traceparent, new_span_id, parse_traceparent};

/// Spans sent per export request at most.
const MAX_BATCH: usize = 512;
/// How long spans wait for a batch to fill.
const BATCH_DELAY: Duration = Duration::from_secs(1);
/// How often the exporter takes what is queued. Waking it per request would cost every
/// request a task wake-up; the queue (8192 by default) holds far more than this interval's
/// requests at any rate one process serves.
const DRAIN_EVERY: Duration = Duration::from_millis(50);
/// One export request's deadline.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// `telemetry` in the config, resolved.
#[derive(Clone)]
pub struct TelemetryOptions {
    /// OTLP/HTTP base URL (`http://collector:4318`); `/v1/traces` and `/v1/metrics` are
    /// appended.
    pub endpoint: String,
    /// Extra request headers (e.g. an authorization token; values are secrets).
    pub headers: Vec<(String, String)>,
    /// Share of traces started here that are exported, 0–1 (a client's sampled flag wins).
    pub sampling_ratio: f64,
    pub service_name: String,
    pub metrics_interval: Duration,
    /// Requests waiting for the exporter at most.
    pub queue: usize,
}

impl std::fmt::Debug for TelemetryOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryOptions")
            .field("endpoint", &self.endpoint)
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(k, _)| (k.as_str(), "********"))
                    .collect::<Vec<_>>(),
            )
            .field("sampling_ratio", &self.sampling_ratio)
            .field("service_name", &self.service_name)
            .field("metrics_interval", &self.metrics_interval)
            .field("queue", &self.queue)
            .finish()
    }
}

/// One upstream call of a request.
#[derive(Debug, Clone)]
pub struct AttemptSpan {
    pub span_id: [u8; 8],
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub provider_kind: ProviderKind,
    /// The provider's name in the config.
    pub provider: String,
    /// The upstream model (Azure: deployment).
    pub model: String,
    /// `provider/model`.
    pub deployment: String,
    /// The error code when the attempt failed (`error.type`).
    pub error: Option<String>,
}

/// One finished request: its row and where it sits in a trace.
#[derive(Debug, Clone)]
pub struct RequestSpan {
    pub context: TraceContext,
    /// The server span's id (the parent of the attempts' spans).
    pub span_id: [u8; 8],
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    /// The kind of the provider that served (or last tried) the request.
    pub provider_kind: Option<ProviderKind>,
    pub attempts: Vec<AttemptSpan>,
    pub row: LedgerRow,
}

/// What the exporter did, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TelemetryStats {
    /// Requests whose span was dropped because the queue was full.
    pub dropped: u64,
    pub spans_exported: u64,
    /// Export requests (traces or metrics) that failed.
    pub export_errors: u64,
}

#[derive(Default)]
struct Counters {
    dropped: AtomicU64,
    spans_exported: AtomicU64,
    export_errors: AtomicU64,
}

/// The telemetry handle the gateway holds when `telemetry` is configured.
pub struct Telemetry {
    opts: TelemetryOptions,
    /// The GenAI metrics, observed by the server for every request (it renders the same
    /// aggregation on Prometheus `/metrics`) and exported from here: one aggregation, two
    /// formats, and no second observation per request.
    aggregates: Arc<std::sync::Mutex<metrics::Aggregates>>,
    tx: mpsc::Sender<Box<RequestSpan>>,
    rx: std::sync::Mutex<Option<mpsc::Receiver<Box<RequestSpan>>>>,
    counters: Counters,
    started_unix_nanos: u64,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("opts", &self.opts)
            .finish()
    }
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry.endpoint: {0}")]
    Endpoint(String),
}

/// Now, in nanoseconds since the Unix epoch.
pub fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Telemetry {
    pub fn new(opts: TelemetryOptions) -> Result<Arc<Telemetry>, TelemetryError> {
        let e = opts.endpoint.trim_end_matches('/');
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(TelemetryError::Endpoint(format!(
                "'{e}' is not an http(s) URL"
            )));
        }
        let (tx, rx) = mpsc::channel(opts.queue.max(1));
        Ok(Arc::new(Telemetry {
            opts,
            aggregates: Arc::default(),
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            counters: Counters::default(),
            started_unix_nanos: unix_nanos(),
        }))
    }

    /// The metrics this exporter sends: the caller observes every finished request into it
    /// ([`metrics::Aggregates::observe_row`]).
    pub fn aggregates(&self) -> &Arc<std::sync::Mutex<metrics::Aggregates>> {
        &self.aggregates
    }

    pub fn sampling_ratio(&self) -> f64 {
        self.opts.sampling_ratio
    }

    /// Queues a finished request. Never blocks; a full queue drops it (counted).
    pub fn record(&self, span: RequestSpan) {
        if self.tx.try_send(Box::new(span)).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> TelemetryStats {
        let c = &self.counters;
        TelemetryStats {
            dropped: c.dropped.load(Ordering::Relaxed),
            spans_exported: c.spans_exported.load(Ordering::Relaxed),
            export_errors: c.export_errors.load(Ordering::Relaxed),
        }
    }

    /// The exporter: takes what is queued every 50 ms (no wake-up per request), batches spans
    /// (≤ 512, ≤ 1 s), aggregates metrics and exports them every
    /// `metrics_interval`, until `stop` — then one last flush of both. Run it once, on the
    /// gateway's task tracker; `client` is any reqwest client (no TLS needed for loopback).
    pub async fn run(self: Arc<Self>, client: reqwest::Client, stop: CancellationToken) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let mut spans: Vec<RequestSpan> = Vec::new();
        let mut scratch = otlp::Scratch::default();
        let mut drain = tokio::time::interval(DRAIN_EVERY);
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush = tokio::time::interval(BATCH_DELAY);
        let mut report = tokio::time::interval(self.opts.metrics_interval);
        report.reset();
        let mut open = true;
        while open {
            tokio::select! {
                _ = drain.tick() => {
                    loop {
                        match rx.try_recv() {
                            Ok(s) => {
                                if s.context.sampled {
                                    spans.push(*s);
                                }
                            }
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => {
                                open = false;
                                break;
                            }
                        }
                    }
                    while spans.len() >= MAX_BATCH {
                        self.export_spans(&client, &mut spans, &mut scratch).await;
                    }
                }
                _ = flush.tick() => self.export_spans(&client, &mut spans, &mut scratch).await,
                _ = report.tick() => self.export_metrics(&client).await,
                () = stop.cancelled() => break,
            }
        }
        // Last flush: what is queued, then the final metrics.
        while let Ok(s) = rx.try_recv() {
            if s.context.sampled {
                spans.push(*s);
            }
        }
        while !spans.is_empty() {
            self.export_spans(&client, &mut spans, &mut scratch).await;
        }
        self.export_metrics(&client).await;
    }

    async fn export_spans(
        &self,
        client: &reqwest::Client,
        spans: &mut Vec<RequestSpan>,
        scratch: &mut otlp::Scratch,
    ) {
        if spans.is_empty() {
            return;
        }
        let take = spans.len().min(MAX_BATCH);
        let batch: Vec<RequestSpan> = spans.drain(..take).collect();
        let body = otlp::traces(&self.opts.service_name, &batch, scratch);
        let n: usize = batch.iter().map(|s| 1 + s.attempts.len()).sum();
        if self.post(client, "/v1/traces", body).await {
            self.counters
                .spans_exported
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    async fn export_metrics(&self, client: &reqwest::Client) {
        // A copy, so requests observing never wait on the encoding.
        let agg = self
            .aggregates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if agg.is_empty() {
            return;
        }
        let req = otlp::metrics(
            &self.opts.service_name,
            &agg,
            self.started_unix_nanos,
            unix_nanos(),
        );
        self.post(client, "/v1/metrics", req.encode_to_vec()).await;
    }

    /// One export request; `false` (counted, logged without the headers) when it failed.
    async fn post(&self, client: &reqwest::Client, path: &str, body: Vec<u8>) -> bool {
        let url = format!("{}{path}", self.opts.endpoint.trim_end_matches('/'));
        let mut req = client
            .post(&url)
            .timeout(EXPORT_TIMEOUT)
            .header("content-type", "application/x-protobuf")
            .body(body);
        for (k, v) in &self.opts.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => true,
            Ok(r) => {
                self.counters.export_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(status = r.status().as_u16(), %url, "OTLP export refused");
                false
            }
            Err(e) => {
                self.counters.export_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e.without_url(), %url, "OTLP export failed");
                false
            }
        }
    }
}

/// The GenAI conventions' `gen_ai.provider.name` of a provider kind.
pub fn genai_provider(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai => "openai",
        ProviderKind::Azure => "azure.ai.openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gcp.gemini",
        ProviderKind::Bedrock => "aws.bedrock",
    }
}

/// The GenAI operation of a ledger row's endpoint.
pub fn operation(endpoint: &str) -> &'static str {
    if endpoint.ends_with("/embeddings") {
        "embeddings"
    } else {
        "chat"
    }
}
