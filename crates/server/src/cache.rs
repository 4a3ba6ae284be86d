//! The response cache on the request path (the store and keys are `tollgate-cache`).
//!
//! Looked up after authentication, attribution and routing (spend policies included) and
//! before budget admission and the upstream call:
//! - **bypass** — caching is on for the model but the request samples (`temperature` absent or
//!   above 0, unless `cache_nondeterministic`), or the client sent `Cache-Control: no-cache`
//!   or `no-store`, or `x-tollgate-cache: bypass`: neither read nor filled;
//! - **hit** — answered from memory without budget admission or an upstream call; the row
//!   costs zero and records what the answer cost when it was produced as `saved_cost`;
//!   streaming clients get the answer replayed as OpenAI SSE;
//! - **miss** — served normally, and the answer stored if it completed cleanly: a complete
//!   response with a cacheable `finish_reason`, or a stream that ended normally (assembled
//!   from the relayed chunks). Failed, cancelled and budget-shortened answers are never stored.
//!
//! The status goes into the row (`cache_status`) and the `x-tollgate-cache` header; with
//! caching off for the model, neither is set.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value};
use tollgate_cache::key::{self, KeyInput, Namespace};
use tollgate_cache::{CacheKey, Entry, ResponseCache, Scope, StreamAssembler};
use tollgate_metering::{OpenAiRenderer, Renderer, Settlement};
use tollgate_types::canonical::ChunkPeek;
use tollgate_types::{ApiError, LedgerRow, NanoUsd, Outcome, Usage, UsageSource};

use crate::Gateway;
use crate::pipeline::{self, Format, Routed};
use crate::record::PendingRow;

pub const CACHE_HEADER: &str = "x-tollgate-cache";

/// What the cache decided for a request.
pub enum Lookup {
    /// Caching is off for the model.
    Off,
    Bypass,
    Hit(Arc<Entry>),
    /// Not cached; store the answer through this if it completes cleanly.
    Miss(Fill),
}

/// Where a missed request's answer goes.
pub struct Fill {
    cache: Arc<ResponseCache>,
    model: String,
    key: CacheKey,
    ttl: Duration,
    limit: usize,
}

/// Whether the client asked not to use the cache.
fn client_bypass(headers: &HeaderMap) -> bool {
    let cc = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|d| d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("no-store"));
    cc || headers
        .get(CACHE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("bypass"))
}

/// Looks the request up. `endpoint` is the family (`chat`, `messages`); `body` the client's
/// canonical (OpenAI) request body.
pub fn lookup(
    gw: &Gateway,
    row: &mut LedgerRow,
    headers: &HeaderMap,
    endpoint: &str,
    body: &Map<String, Value>,
    stream: bool,
    routed: &Routed,
) -> Lookup {
    let Some(cache) = gw.0.cache.as_ref() else {
        return Lookup::Off;
    };
    let Some(settings) = cache.settings(&routed.logical).copied() else {
        return Lookup::Off;
    };
    if client_bypass(headers)
        || (!settings.cache_nondeterministic && key::is_nondeterministic(body))
    {
        cache.note_bypass();
        row.cache_status = Some("bypass".into());
        return Lookup::Bypass;
    }
    let a = &row.attribution;
    let namespace = match (settings.scope, &a.tenant, &a.key_id) {
        (Scope::Global, _, _) => Namespace::Global,
        (Scope::Tenant, Some(t), _) => Namespace::Tenant(t),
        (Scope::Tenant, None, Some(k)) => Namespace::Key(k),
        // Authentication always sets the key id; without one nothing is shared.
        (Scope::Tenant, None, None) => {
            cache.note_bypass();
            row.cache_status = Some("bypass".into());
            return Lookup::Bypass;
        }
    };
    let key = key::compute(&KeyInput {
        namespace,
        endpoint,
        requested_model: row.requested_model.as_deref().unwrap_or(&routed.logical),
        served_model: &routed.logical,
        policy_cap: routed.policy_cap,
        body,
    });
    match cache.get(&routed.logical, &key) {
        // An answer that cannot be rendered as SSE only serves non-streaming clients.
        Some(e) if !stream || e.sse.is_some() => {
            row.cache_status = Some("hit".into());
            Lookup::Hit(e)
        }
        _ => {
            row.cache_status = Some("miss".into());
            let limit = cache.bound(&routed.logical).unwrap_or(0);
            Lookup::Miss(Fill {
                cache: cache.clone(),
                model: routed.logical.clone(),
                key,
                ttl: settings.ttl,
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            })
        }
    }
}

/// Sets `x-tollgate-cache` from the row's cache status (nothing when caching is off).
pub fn tag(headers: &mut HeaderMap, row: &LedgerRow) {
    if let Some(v) = row
        .cache_status
        .as_deref()
        .and_then(|s| HeaderValue::from_str(s).ok())
    {
        headers.insert(CACHE_HEADER, v);
    }
}

/// Answers a hit: zero cost, `saved_cost` = what the answer cost when produced, labelled with
/// the deployment that produced it; no upstream attempt.
pub fn serve_hit(
    gw: &Gateway,
    mut rec: PendingRow,
    entry: &Entry,
    routed: &Routed,
    stream: bool,
    include_usage: bool,
    request_id: &str,
) -> Response {
    let headers = hit_row(&mut rec, entry, routed, request_id);
    let sse = if stream { entry.sse.as_ref() } else { None };
    let resp = match sse {
        Some(sse) => {
            let mut frames: Vec<Result<Bytes, std::convert::Infallible>> =
                vec![Ok(sse.chunks.clone())];
            if include_usage && let Some(u) = &sse.usage {
                frames.push(Ok(u.clone()));
            }
            frames.push(Ok(Bytes::from_static(tollgate_metering::meter::DONE_FRAME)));
            crate::relay::sse_response(
                gw,
                futures_util::stream::iter(frames),
                headers,
                Format::OpenAi,
            )
        }
        None => hit_json(entry.body.clone(), headers),
    };
    rec.finish();
    resp
}

/// A hit's JSON answer with its headers and a zero cost.
pub fn hit_json(body: Bytes, headers: HeaderMap) -> Response {
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.extend(headers);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&NanoUsd::ZERO.to_usd_string()) {
        h.insert(pipeline::COST_HEADER, v);
    }
    resp
}

/// Fills a hit's row — zero tokens and cost, `saved_cost`, the deployment that produced the
/// answer, no attempt — and returns its response headers.
pub fn hit_row(
    rec: &mut PendingRow,
    entry: &Entry,
    routed: &Routed,
    request_id: &str,
) -> HeaderMap {
    let started = rec.started();
    let row = rec.row();
    row.served_model = Some(entry.served_model.clone());
    row.provider = Some(entry.provider.clone());
    row.deployment = Some(entry.deployment.clone());
    row.attempts = 0;
    row.attempted = String::new();
    row.usage = Usage::default();
    row.usage_source = UsageSource::None;
    row.list_cost = NanoUsd::ZERO;
    row.effective_cost = NanoUsd::ZERO;
    row.saved_cost = entry.cost;
    row.status = 200;
    row.outcome = Outcome::Ok;
    row.ttft_us = Some(started.elapsed().as_micros() as u64);
    let mut headers = HeaderMap::new();
    pipeline::routed_headers(&mut headers, request_id, routed, row);
    for (name, v) in [
        (pipeline::SERVED_MODEL_HEADER, &entry.served_model),
        (pipeline::PROVIDER_HEADER, &entry.provider),
    ] {
        if let Ok(v) = HeaderValue::from_str(v) {
            headers.insert(name, v);
        }
    }
    tag(&mut headers, row);
    headers
}

/// Whether an attempt's answer may fill the entry looked up: only when the attempt is served
/// by the logical model the key was computed for (not a fallback model).
pub fn fill_matches(fill: Option<&Fill>, routed: &Routed) -> bool {
    fill.is_none_or(|f| f.model == routed.logical)
}

/// [`fill_matches`] for a streamed miss.
pub fn stream_fill_matches(fill: Option<&StreamFill>, routed: &Routed) -> bool {
    fill.is_none_or(|f| f.fill.model == routed.logical)
}

impl Fill {
    /// Stores a complete (non-streaming) answer once its row is settled: only a served one
    /// (`ok`, 200 — not one whose client left) with a cacheable `finish_reason`.
    pub fn complete(self, body: &Bytes, row: &LedgerRow) {
        if row.outcome != Outcome::Ok || row.status != 200 {
            return;
        }
        let served = (
            row.served_model.clone().unwrap_or_default(),
            row.provider.clone().unwrap_or_default(),
            row.deployment.clone().unwrap_or_default(),
        );
        self.store(body.clone(), row.usage, row.effective_cost, served);
    }

    /// Checks and stores an answer on a task of its own: parsing the answer and pre-rendering
    /// its SSE replay is the costly part of a miss, and the client need not wait for it.
    fn store(self, body: Bytes, usage: Usage, cost: NanoUsd, served: (String, String, String)) {
        tokio::spawn(async move {
            let Some(sse) = tollgate_cache::assemble::check_complete(&body) else {
                return;
            };
            let entry = Entry::new(body, sse, usage, cost, served, self.ttl);
            self.cache.insert(&self.model, self.key, entry);
        });
    }

    /// Splits into the assembler for the relayed stream and the part that stores its
    /// answer at settlement.
    fn for_stream(self) -> (StreamAssembler, StreamFill) {
        (
            StreamAssembler::new(self.limit),
            StreamFill {
                fill: self,
                slot: Arc::new(OnceLock::new()),
            },
        )
    }
}

/// The storing half of a streamed miss.
pub struct StreamFill {
    fill: Fill,
    slot: Arc<OnceLock<Bytes>>,
}

impl StreamFill {
    /// Stores the assembled answer if the stream ended normally: not failed, not cancelled,
    /// not cut at a budget's output cap.
    pub fn settled(self, s: &Settlement, routed: &Routed) {
        if s.outcome != Outcome::Ok || s.cut_at_cap || s.error.is_some() {
            return;
        }
        let Some(body) = self.slot.get() else {
            return;
        };
        let cost = routed
            .price
            .as_ref()
            .map_or(NanoUsd::ZERO, |(p, _)| tollgate_pricing::cost(&s.usage, p));
        let d = &routed.deployment;
        let served = (d.model.clone(), d.provider_name.clone(), d.label.clone());
        self.fill.store(body.clone(), s.usage, cost, served);
    }
}

/// A stream renderer (OpenAI SSE, or Anthropic events for `/v1/messages`) that also
/// assembles the relayed canonical answer when it is to be stored.
pub struct CachingRenderer<R = OpenAiRenderer> {
    inner: R,
    assembly: Option<(StreamAssembler, Arc<OnceLock<Bytes>>)>,
}

/// The renderer for an OpenAI stream, and what stores its answer at settlement on a miss.
pub fn stream_renderer(
    include_usage: bool,
    fill: Option<Fill>,
) -> (CachingRenderer, Option<StreamFill>) {
    caching(
        OpenAiRenderer {
            client_wants_usage: include_usage,
        },
        fill,
    )
}

/// Wraps any renderer of canonical chunks so a missed answer is assembled for the cache.
pub fn caching<R: Renderer>(
    inner: R,
    fill: Option<Fill>,
) -> (CachingRenderer<R>, Option<StreamFill>) {
    match fill {
        Some(f) => {
            let (asm, sf) = f.for_stream();
            let slot = sf.slot.clone();
            (
                CachingRenderer {
                    inner,
                    assembly: Some((asm, slot)),
                },
                Some(sf),
            )
        }
        None => (
            CachingRenderer {
                inner,
                assembly: None,
            },
            None,
        ),
    }
}

impl<R: Renderer> Renderer for CachingRenderer<R> {
    fn chunk(&mut self, raw: &[u8], peek: Option<&ChunkPeek<'_>>, out: &mut BytesMut) {
        if let Some((asm, _)) = &mut self.assembly {
            asm.push(raw);
            if !asm.is_ok() {
                self.assembly = None;
            }
        }
        self.inner.chunk(raw, peek, out);
    }

    fn error(&mut self, error: &ApiError, out: &mut BytesMut) {
        self.assembly = None;
        self.inner.error(error, out);
    }

    fn done(&mut self, usage: Option<&Usage>, out: &mut BytesMut) {
        if let Some((asm, slot)) = self.assembly.take()
            && let Some(body) = asm.finish()
        {
            let _ = slot.set(body);
        }
        self.inner.done(usage, out);
    }

    fn cut(&mut self, usage: &Usage, out: &mut BytesMut) {
        self.assembly = None;
        self.inner.cut(usage, out);
    }
}

/// Cache gauges and counters for `/metrics`.
pub fn render_metrics(gw: &Gateway, out: &mut String) {
    use std::fmt::Write;
    let Some(cache) = gw.0.cache.as_ref() else {
        return;
    };
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
