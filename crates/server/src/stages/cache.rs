//! Stage 8, the response cache (the store and keys are `tollgate-cache`).
//!
//! Looked up after the target and the rate limits, before budget admission and the upstream
//! call, for endpoints that say they are cacheable:
//! - **bypass** — caching is on for the model but the request samples (`temperature` absent or
//!   above 0, unless `cache_nondeterministic`), or the client opted out
//!   (`http::headers::cache_opt_out`): neither read nor filled;
//! - **hit** — answered from memory without budget admission or an upstream call; the row
//!   costs zero and records what the answer cost when it was produced as `saved_cost`
//!   ([`hit_row`]); the endpoint renders the stored canonical answer in its wire format;
//! - **miss** — served normally, and the answer stored if it completed cleanly: a complete
//!   response with a cacheable `finish_reason`, or a stream that ended normally (assembled
//!   from the relayed chunks by [`CachingRenderer`]). Failed, cancelled, budget-shortened and
//!   fallback-served answers are never stored.
//!
//! The status goes into the row (`cache_status`) and the `x-tollgate-cache` header; with
//! caching off for the model, neither is set.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value};
use tokio_util::task::TaskTracker;
use tollgate_cache::key::{self, KeyInput, Namespace};
use tollgate_cache::{CacheKey, CacheScope, Entry, ResponseCache, StreamAssembler};
use tollgate_metering::{Renderer, Settlement};
use tollgate_types::canonical::ChunkPeek;
use tollgate_types::{ApiError, LedgerRow, NanoUsd, Outcome, Usage, UsageSource};

use crate::gateway::Gateway;
use crate::http::headers;
use crate::stages::target::Candidate;

/// What the cache decided for a request.
pub(crate) enum Lookup {
    /// Caching is off for the model.
    Off,
    Bypass,
    Hit(Arc<Entry>),
    /// Not cached; store the answer through this if it completes cleanly.
    Miss(Fill),
}

/// Where a missed request's answer goes.
pub(crate) struct Fill {
    cache: Arc<ResponseCache>,
    model: String,
    key: CacheKey,
    ttl: Duration,
    limit: usize,
    tasks: TaskTracker,
}

/// Looks the request up. `family` is the endpoint's cache family (`chat`, `messages`); `body`
/// the client's canonical (OpenAI) request body; `cand` the first attempt's candidate.
pub(crate) fn lookup(
    gw: &Gateway,
    row: &mut LedgerRow,
    request_headers: &HeaderMap,
    family: &str,
    body: &Map<String, Value>,
    stream: bool,
    cand: &Candidate,
) -> Lookup {
    let Some(cache) = gw.0.cache.as_ref() else {
        return Lookup::Off;
    };
    let Some(settings) = cache.settings(&cand.logical).copied() else {
        return Lookup::Off;
    };
    let bypass = |row: &mut LedgerRow| {
        cache.note_bypass();
        row.cache_status = Some("bypass".into());
        Lookup::Bypass
    };
    if headers::cache_opt_out(request_headers)
        || (!settings.cache_nondeterministic && key::is_nondeterministic(body))
    {
        return bypass(row);
    }
    let a = &row.attribution;
    let namespace = match (settings.scope, &a.tenant, &a.key_id) {
        (CacheScope::Global, _, _) => Namespace::Global,
        (CacheScope::Tenant, Some(t), _) => Namespace::Tenant(t),
        (CacheScope::Tenant, None, Some(k)) => Namespace::Key(k),
        // Authentication always sets the key id; without one nothing is shared.
        (CacheScope::Tenant, None, None) => return bypass(row),
    };
    let key = key::compute(&KeyInput {
        namespace,
        endpoint: family,
        requested_model: row.requested_model.as_deref().unwrap_or(&cand.logical),
        served_model: &cand.logical,
        policy_cap: cand.policy_cap,
        body,
    });
    match cache.get(&cand.logical, &key) {
        // An answer that cannot be rendered as SSE only serves non-streaming clients.
        Some(e) if !stream || e.sse.is_some() => {
            row.cache_status = Some("hit".into());
            Lookup::Hit(e)
        }
        _ => {
            row.cache_status = Some("miss".into());
            let limit = cache.bound(&cand.logical).unwrap_or(0);
            Lookup::Miss(Fill {
                cache: cache.clone(),
                model: cand.logical.clone(),
                key,
                ttl: settings.ttl,
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
                tasks: gw.0.tasks.clone(),
            })
        }
    }
}

/// Fills a hit's row — zero tokens and cost, `saved_cost`, the deployment that produced the
/// answer, no attempt.
pub(crate) fn hit_row(row: &mut LedgerRow, entry: &Entry, started: Instant) {
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
    row.ttft_us = Some(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
}

impl Fill {
    /// Whether an attempt's answer may fill the entry looked up: only when the attempt is
    /// served by the logical model the key was computed for (not a fallback model).
    pub(crate) fn matches(&self, cand: &Candidate) -> bool {
        self.model == cand.logical
    }

    /// Stores a complete (non-streaming) canonical answer once its row is settled: only a
    /// served one (`ok`, 200 — not one whose client left) with a cacheable `finish_reason`.
    pub(crate) fn complete(self, body: Bytes, row: &LedgerRow) {
        if row.outcome != Outcome::Ok || row.status != 200 {
            return;
        }
        let served = (
            row.served_model.clone().unwrap_or_default(),
            row.provider.clone().unwrap_or_default(),
            row.deployment.clone().unwrap_or_default(),
        );
        self.store(body, row.usage, row.effective_cost, served);
    }

    /// Checks and stores an answer on a task of its own: parsing the answer and pre-rendering
    /// its SSE replay is the costly part of a miss, and the client need not wait for it.
    fn store(self, body: Bytes, usage: Usage, cost: NanoUsd, served: (String, String, String)) {
        let tasks = self.tasks.clone();
        tasks.spawn(async move {
            let Some(sse) = tollgate_cache::assemble::check_complete(&body) else {
                return;
            };
            let entry = Entry::new(body, sse, usage, cost, served, self.ttl);
            self.cache.insert(&self.model, self.key, entry);
        });
    }
}

/// The storing half of a streamed miss.
pub(crate) struct StreamFill {
    fill: Fill,
    slot: Arc<OnceLock<Bytes>>,
}

impl StreamFill {
    /// Stores the assembled answer if the stream ended normally: not failed, not cancelled,
    /// not cut at a budget's output cap.
    pub(crate) fn settled(self, s: &Settlement, cand: &Candidate) {
        if s.outcome != Outcome::Ok || s.cut_at_cap || s.error.is_some() {
            return;
        }
        let Some(body) = self.slot.get() else {
            return;
        };
        let cost = cand
            .price
            .as_ref()
            .map_or(NanoUsd::ZERO, |(p, _)| tollgate_pricing::cost(&s.usage, p));
        let d = &cand.deployment;
        let served = (d.model.clone(), d.provider_name.clone(), d.label.clone());
        self.fill.store(body.clone(), s.usage, cost, served);
    }
}

/// A stream renderer (the endpoint's: OpenAI SSE, Anthropic events, …) that also assembles the
/// relayed canonical answer when it is to be stored.
pub(crate) struct CachingRenderer {
    inner: Box<dyn Renderer>,
    assembly: Option<(StreamAssembler, Arc<OnceLock<Bytes>>)>,
}

/// Wraps the endpoint's renderer so a missed answer is assembled for the cache; the second
/// half stores it when the stream settles.
pub(crate) fn caching(
    inner: Box<dyn Renderer>,
    fill: Option<Fill>,
) -> (CachingRenderer, Option<StreamFill>) {
    match fill {
        Some(fill) => {
            let slot = Arc::new(OnceLock::new());
            let asm = StreamAssembler::new(fill.limit);
            (
                CachingRenderer {
                    inner,
                    assembly: Some((asm, slot.clone())),
                },
                Some(StreamFill { fill, slot }),
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

impl Renderer for CachingRenderer {
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
            // Set once: the renderer finishes once.
            let _ = slot.set(body);
        }
        self.inner.done(usage, out);
    }

    fn cut(&mut self, usage: &Usage, out: &mut BytesMut) {
        self.assembly = None;
        self.inner.cut(usage, out);
    }
}
