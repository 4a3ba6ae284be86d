//! The exchange: one data-plane request from its first byte to its ledger row, the same for
//! every endpoint. An endpoint implements [`Endpoint`] — its wire format in and out — and the
//! exchange runs the stages, in this order:
//!
//! 1. **open the row** ([`row::PendingRow`]): from here on exactly one ledger row is
//!    guaranteed, recorded on every exit or by `Drop` if the client vanishes;
//! 2. **authenticate** (`stages::auth`) → `401 invalid_api_key`, `503 shutting_down`;
//! 3. **read and parse** the body under `server.max_body_bytes` (`413`) into the endpoint's
//!    state and the canonical (OpenAI Chat-shaped) request ([`Endpoint::parse`]) → `400`
//!    naming the `param`;
//! 4. **attribute** (`stages::attribute`) → `400` naming the header;
//! 5. **spend policies** (`stages::policy`): downgrade / reroute, cap, block
//!    (`429 policy_blocked`), alerts queued;
//! 6. **target** (`stages::target`): the logical model and key permission (`404` / `403`),
//!    the deployment pin, the stickiness key; the candidates ranked ([`attempts::Dispatch`]);
//! 7. **rate limits** (`stages::ratelimit`) on the first candidate → `429
//!    rate_limit_exceeded`, `x-ratelimit-*` on every answer;
//! 8. **response cache** (`stages::cache`), for cacheable endpoints: a hit is answered here at
//!    zero cost in the endpoint's format ([`Endpoint::hit`]); a miss may be stored at 11;
//! 9. **attempts** ([`attempts::Attempts`]), until one answers or the rules give up — (9a) the
//!    next candidate whose breaker admits it, priced (fail-closed `400 model_not_priced`);
//!    (9b) budget admission at that price (`stages::budget`): reserve, fit by clamping the
//!    output cap, or `429 budget_exceeded`; (9c) the provider call the endpoint builds
//!    ([`Endpoint::call`], [`upstream`]); a retryable failure returns the reservation and
//!    moves on;
//! 10. **relay**: a complete answer in the endpoint's format ([`Endpoint::respond`]) from a
//!     detached task, so a departing client cannot stop the bill from being recorded; a
//!     stream, held until its first content, relayed chunk by chunk through the meter (the
//!     endpoint's renderer for canonical chunks, native events as they came), cut cleanly at
//!     the output cap the budget reserved;
//! 11. **settle** ([`settle`]): usage and cost into the row (provider usage, else counted
//!     locally and flagged `estimated`), the attempt reported to its breaker, a clean miss
//!     stored in the cache, the row recorded — which settles the budget reservation and the
//!     rate-limit hold.
//!
//! A new endpoint is a file in `crate::endpoints` implementing [`Endpoint`], and a route in
//! `crate::routes`. A new stage is a file in `crate::stages` and one step here.

pub(crate) mod attempts;
pub(crate) mod row;
pub(crate) mod settle;
pub(crate) mod upstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value};
use tollgate_cache::Entry;
use tollgate_metering::{
    MeterOptions, MeteredStream, OpenAiRenderer, Renderer, Settlement, anthropic::MeteredEvents,
};
use tollgate_providers::{ChatCall, UpstreamError};
use tollgate_store::StoredKey;
use tollgate_tokens::Encoding;
use tollgate_types::{ApiError, ErrorCode, LedgerRow, NanoUsd, Outcome, Usage, UsageSource};

use crate::gateway::Gateway;
use crate::http::{WireFormat, body, headers, sse};
use crate::metrics::Route;
use crate::stages::budget::Shape;
use crate::stages::cache::{self, Fill, Lookup};
use crate::stages::target::{self, Candidate};
use crate::stages::{attribute, auth, policy, ratelimit};

use attempts::{Attempts, Dispatch, Prepared};
use row::PendingRow;
use upstream::{Answer, Call, Miss, Reply, Started};

/// A request as every stage reads it: the canonical (OpenAI Chat-shaped) body, whatever the
/// client's wire format.
pub(crate) struct Canonical {
    /// The logical model the client asked for.
    pub(crate) model: String,
    pub(crate) stream: bool,
    pub(crate) body: Map<String, Value>,
}

/// A cache hit rendered in the client's wire format.
pub(crate) enum Hit {
    Json(Bytes),
    /// SSE frames, sent in order.
    Events(Vec<Bytes>),
}

/// What an endpoint of the data plane tells the exchange: its wire format, in and out, and
/// three properties. Everything else — the stages, the attempt loop, metering, the row — is
/// the exchange's. The defaults fit an OpenAI-shaped endpoint.
pub(crate) trait Endpoint: Sized + Send + Sync + 'static {
    /// The route: the row's `endpoint` and the metrics label.
    const ROUTE: Route;
    /// The shape of errors and of stream error events.
    const FORMAT: WireFormat;
    /// Priced by tokens as a chat (prompt + output cap) or as input only (embeddings).
    const SHAPE: Shape;
    /// The cache's endpoint family; `None` when answers are never cached.
    const CACHE: Option<&'static str>;
    /// Whether a client may ask for a stream.
    const STREAMS: bool;

    /// The client's body → the endpoint's own state (kept to render the answer) and the
    /// canonical request.
    fn parse(body: &[u8], headers: &HeaderMap) -> Result<(Self, Canonical), ApiError>;

    /// The provider call of one attempt on `cand`, from the admitted canonical body.
    fn call(&self, cand: &Candidate, prepared: &Prepared, stream: bool) -> Call {
        let _ = cand;
        Call::Chat(ChatCall {
            body: prepared.body.clone(),
            stream,
        })
    }

    /// A complete answer in the client's format (`usage` is what was billed).
    fn respond(&self, reply: &Reply, usage: &Usage) -> Result<Bytes, ApiError> {
        let _ = usage;
        Ok(reply.body().clone())
    }

    /// How canonical stream chunks reach the client.
    fn renderer(&self) -> Box<dyn Renderer> {
        Box::new(OpenAiRenderer {
            client_wants_usage: false,
        })
    }

    /// A cached canonical answer in the client's format (cacheable endpoints only).
    fn hit(&self, entry: &Entry, stream: bool) -> Result<Hit, ApiError> {
        let _ = (entry, stream);
        Err(ApiError::internal(format!(
            "{} has no cache rendering",
            Self::ROUTE.path()
        )))
    }
}

/// `503 overloaded` when more requests are in flight (this one included) than
/// `server.limits.max_in_flight`.
fn shed(gw: &Gateway) -> Result<(), ApiError> {
    let max = gw.settings().limits.max_in_flight;
    if gw.0.metrics.in_flight_now() <= max {
        return Ok(());
    }
    gw.0.metrics.shed();
    let mut e = ApiError::new(
        ErrorCode::Overloaded,
        format!("the gateway is at its limit of {max} requests in flight; retry shortly"),
    );
    e.retry_after_secs = Some(1);
    Err(e)
}

/// Runs one request of endpoint `E` through every stage.
pub(crate) async fn run<E: Endpoint>(gw: Gateway, headers: HeaderMap, body: Body) -> Response {
    // 1.
    let mut rec = PendingRow::open(&gw, E::ROUTE);
    rec.start_trace(&headers);
    // Under `storage.durability: strict` every answer waits for its row.
    let hold = rec.holder();
    hold.apply(pipeline::<E>(gw, rec, headers, body).await)
}

/// Stages 2–11 of [`run`].
async fn pipeline<E: Endpoint>(
    gw: Gateway,
    mut rec: PendingRow,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Load shedding before any work: the row is still recorded, unattributed.
    if let Err(e) = shed(&gw) {
        return rec.reject(e, Outcome::Rejected, E::FORMAT);
    }
    let (ep, canonical, dispatch) = match admit::<E>(&gw, &mut rec, &headers, body).await {
        Ok(v) => v,
        Err(e) => {
            // An early refusal still counts against the key's request rate.
            if let Err(l) = ratelimit::count_refused(&gw, rec.row()) {
                let ratelimit::Limited { error, limits } = *l;
                return limits.apply(rec.reject(error, Outcome::Rejected, E::FORMAT));
            }
            return rec.reject(e, Outcome::Rejected, E::FORMAT);
        }
    };
    // 7.
    let first = dispatch.preview(&gw);
    let limits = match ratelimit::admit(&gw, rec.row(), first.as_ref(), &canonical.body, E::SHAPE) {
        Ok(a) => {
            if let Some(h) = a.hold {
                rec.hold_rate(h);
            }
            a.limits
        }
        Err(l) => {
            let ratelimit::Limited { error, limits } = *l;
            return limits.apply(rec.reject(error, Outcome::Rejected, E::FORMAT));
        }
    };
    // 8.
    let stream = canonical.stream && E::STREAMS;
    let fill = match (E::CACHE, &first) {
        (Some(family), Some(first)) => {
            let row = rec.row();
            match cache::lookup(&gw, row, &headers, family, &canonical.body, stream, first) {
                Lookup::Hit(entry) => {
                    return limits.apply(serve_hit(&gw, rec, &ep, &entry, stream));
                }
                Lookup::Miss(fill) => Some(fill),
                Lookup::Off | Lookup::Bypass => None,
            }
        }
        _ => None,
    };
    // 9. – 11.
    let ex = Exchange {
        gw,
        rec,
        ep,
        attempts: Attempts::new(dispatch, canonical.body),
        fill,
        maybe_billed: None,
    };
    let resp = if stream {
        ex.stream().await
    } else {
        ex.complete().await
    };
    limits.apply(resp)
}

/// In debug builds, a request for this model panics after its row has a model: the tests
/// prove a panic is answered `500 internal_error` and recorded as such, never as a client that
/// went away. Release builds have no such model.
#[cfg(debug_assertions)]
pub(crate) const PANIC_PROBE_MODEL: &str = "__tollgate_panic_probe__";

/// Stages 2–6: every check before the per-request limits. Fills the row as facts become
/// known, so a rejected request's row says how far it got.
async fn admit<E: Endpoint>(
    gw: &Gateway,
    rec: &mut PendingRow,
    headers: &HeaderMap,
    body: Body,
) -> Result<(E, Canonical, Dispatch), ApiError> {
    // 2.
    let key = auth::authenticate(gw, headers)?;
    auth::note_key(rec.row(), &key);
    // 3.
    let bytes = body::read(
        body,
        gw.settings().max_body_bytes,
        gw.settings().limits.body_read_timeout,
    )
    .await?;
    let (ep, canonical) = E::parse(&bytes, headers)?;
    let row = rec.row();
    row.requested_model = Some(canonical.model.clone());
    row.stream = canonical.stream && E::STREAMS;
    // Fault injection for the panic-path tests: compiled into debug builds only.
    #[cfg(debug_assertions)]
    #[allow(clippy::panic, reason = "the probe exists to panic")]
    if canonical.model == PANIC_PROBE_MODEL {
        panic!("panic probe: a deliberate panic in the request path");
    }
    // 4.
    attribute::attribute(row, &key, headers, &canonical.body)?;
    // 5.
    let steer = policy::evaluate(gw, row, &canonical.model)?;
    // 6.
    let hints = target::Hints {
        headers,
        conversation: (E::SHAPE == Shape::Chat).then_some(&canonical.body),
        stream: row.stream,
    };
    let target = target::resolve(gw, &key, row, &canonical.model, steer, hints)?;
    Ok((ep, canonical, Dispatch::new(gw, target)))
}

/// Answers a request the gateway serves itself (no upstream, no cost) after stages 1–2:
/// `answer` gets the key and the row and returns the JSON body or the error.
pub(crate) fn local(
    gw: &Gateway,
    route: Route,
    headers: &HeaderMap,
    answer: impl FnOnce(&StoredKey, &mut LedgerRow) -> Result<Value, ApiError>,
) -> Response {
    let mut rec = PendingRow::open(gw, route);
    let key = match auth::authenticate(gw, headers) {
        Ok(k) => k,
        Err(e) => return rec.reject(e, Outcome::Rejected, WireFormat::OpenAi),
    };
    auth::note_key(rec.row(), &key);
    match answer(&key, rec.row()) {
        Ok(v) => {
            let mut resp = json(Bytes::from(v.to_string()));
            headers::request_id(resp.headers_mut(), rec.request_id());
            rec.row().status = 200;
            rec.finish();
            resp
        }
        Err(e) => rec.reject(e, Outcome::Rejected, WireFormat::OpenAi),
    }
}

/// A complete JSON answer (headers are written into the response itself: no map to merge).
fn json(body: Bytes) -> Response {
    let mut resp = Response::new(Body::from(body));
    headers::json_body(resp.headers_mut());
    resp
}

/// The headers of a routed answer: request id, policy actions, who served it, cache status.
fn routed_headers(h: &mut HeaderMap, row: &LedgerRow, served_model: &str, provider: &str) {
    headers::request_id(h, &row.request_id);
    headers::policy(h, &row.policy_actions);
    headers::served(h, served_model, provider);
    headers::cache(h, row.cache_status.as_deref());
}

/// Stage 8's hit: zero cost, `saved_cost` = what the answer cost when produced, labelled with
/// the deployment that produced it; no upstream attempt.
fn serve_hit<E: Endpoint>(
    gw: &Gateway,
    mut rec: PendingRow,
    ep: &E,
    entry: &Entry,
    stream: bool,
) -> Response {
    let started = rec.started();
    cache::hit_row(rec.row(), entry, started);
    let body = match ep.hit(entry, stream) {
        Ok(b) => b,
        // The stored answer was checked when it was stored: this is a bug.
        Err(e) => return rec.reject(e, Outcome::Failed, E::FORMAT),
    };
    let mut resp = match body {
        Hit::Json(b) => {
            let mut resp = json(b);
            headers::cost(resp.headers_mut(), NanoUsd::ZERO);
            resp
        }
        Hit::Events(frames) => {
            let frames = futures_util::stream::iter(frames.into_iter().map(Ok));
            sse::response(frames, E::FORMAT, &gw.0.cut)
        }
    };
    routed_headers(
        resp.headers_mut(),
        rec.row(),
        &entry.served_model,
        &entry.provider,
    );
    rec.finish();
    resp
}

/// The attempt that answered.
struct Won<T> {
    cand: Candidate,
    /// Its breaker guard, reported when the answer is settled.
    attempt: tollgate_router::Attempt,
    prepared: Prepared,
    /// When the provider call started.
    t0: Instant,
    got: T,
}

/// One request across its attempts (stages 9–11).
struct Exchange<E> {
    gw: Gateway,
    rec: PendingRow,
    ep: E,
    attempts: Attempts,
    /// Where a missed answer goes (in the canonical shape, so every endpoint of its family
    /// can be served from it).
    fill: Option<Fill>,
    /// The last attempt that timed out after the provider had the request: it may have been
    /// billed for the prompt, so a request that fails in the end is recorded at that estimate
    /// (`usage_source: unknown`), not as a certain $0.
    maybe_billed: Option<(Usage, NanoUsd)>,
}

impl<E: Endpoint> Exchange<E> {
    /// Notes an attempt that timed out once the provider had the request (first byte, idle,
    /// total — not connect).
    fn note_timeout(&mut self, cand: &Candidate, prepared: &Prepared, e: &UpstreamError) {
        use tollgate_providers::{TimeoutPhase, UpstreamErrorKind};
        if let UpstreamErrorKind::Timeout(
            TimeoutPhase::FirstByte | TimeoutPhase::Idle | TimeoutPhase::Total,
        ) = e.kind
        {
            let usage = settle::prompt_usage(E::SHAPE, cand, &prepared.body);
            let cost = cand
                .price
                .as_ref()
                .map_or(NanoUsd::ZERO, |(p, _)| tollgate_pricing::cost(&usage, p));
            self.maybe_billed = Some((usage, cost));
        }
    }

    /// A failed request's row, billed at the estimate of a timed-out attempt if it had one.
    fn failed(&mut self, e: ApiError) -> (ApiError, Outcome) {
        if let Some((usage, cost)) = self.maybe_billed.take() {
            let row = self.rec.row();
            row.usage = usage;
            row.usage_source = UsageSource::Unknown;
            row.list_cost = cost;
            row.effective_cost = cost;
        }
        (e, Outcome::Failed)
    }

    /// Keeps the cache fill only for an answer the cache key stands for: not one shortened
    /// to fit a budget, not one served by a fallback model.
    fn keep_fill(&mut self, cand: &Candidate, prepared: &Prepared) {
        if prepared.fitted || !self.fill.as_ref().is_none_or(|f| f.matches(cand)) {
            self.fill = None;
        }
    }

    /// Stage 9: attempts until one answers — the next candidate, admitted against the budgets,
    /// called with `call` (a complete call or a held stream). A retryable miss moves on by the
    /// dispatch rules. `Err` is the request's final error, with `failed` once an upstream call
    /// was made and `rejected` when it never got that far (budget refusal, every circuit open).
    async fn attempt<T>(
        &mut self,
        stream: bool,
        call: impl AsyncFn(&Candidate, Call) -> Result<T, Miss>,
    ) -> Result<Won<T>, (ApiError, Outcome)> {
        loop {
            let (cand, attempt, prepared) =
                match self.attempts.next(&self.gw, &mut self.rec, E::SHAPE).await {
                    Ok(v) => v,
                    Err(e) if self.rec.row().attempts > 0 => return Err(self.failed(e)),
                    Err(e) => return Err((e, Outcome::Rejected)),
                };
            self.keep_fill(&cand, &prepared);
            let request = self.ep.call(&cand, &prepared, stream);
            let t0 = Instant::now();
            let result = match self.rec.attempt_begins(&cand) {
                Some(tp) => {
                    tollgate_providers::http::with_traceparent(tp, call(&cand, request)).await
                }
                None => call(&cand, request).await,
            };
            match &result {
                // A stream's attempt span lasts until the stream ends (closed with the row).
                Ok(_) if stream => {}
                Ok(_) => self.rec.attempt_ends(|| None),
                Err(Miss::Final(e)) => self.rec.attempt_ends(|| Some(e.code)),
                // Only with a trace open: the code needs the client-facing error built.
                Err(Miss::Upstream(e)) => self.rec.attempt_ends(|| Some(e.to_api_error(&[]).code)),
            }
            match result {
                Ok(got) => {
                    self.attempts.dispatch.succeeded(&cand);
                    return Ok(Won {
                        cand,
                        attempt,
                        prepared,
                        t0,
                        got,
                    });
                }
                Err(Miss::Final(e)) => return Err(self.failed(e)),
                Err(Miss::Upstream(e)) => {
                    self.note_timeout(&cand, &prepared, &e);
                    if let Err(api) = self.attempts.dispatch.failed(&self.gw, &cand, attempt, &e) {
                        return Err(self.failed(api));
                    }
                }
            }
        }
    }

    /// Non-streaming: the attempts run on a tracked task (see [`detached`]).
    async fn complete(self) -> Response {
        let gw = self.gw.clone();
        let id = self.rec.request_id().to_string();
        detached(&gw, id, E::FORMAT, move |gone| self.complete_attached(gone)).await
    }

    async fn complete_attached(mut self, gone: Arc<AtomicBool>) -> Response {
        let won = match self.attempt(false, upstream::complete).await {
            Ok(w) => w,
            Err((e, outcome)) => return self.rec.reject(e, outcome, E::FORMAT),
        };
        let Won {
            cand,
            attempt,
            prepared,
            t0,
            got: Answer { reply, usage },
        } = won;
        let took = t0.elapsed();
        attempt.success(Some(took), took, Instant::now());
        let (usage, source) = match usage {
            Some(u) => (u, UsageSource::Provider),
            None => (
                settle::local_usage(E::SHAPE, &cand, &prepared.body, &reply),
                UsageSource::Estimated,
            ),
        };
        // Billed before rendering: the provider charged for the answer whatever happens
        // to it here.
        settle::complete(&mut self.rec, &cand, usage, source, &gone);
        let body = match self.ep.respond(&reply, &usage) {
            Ok(b) => b,
            Err(e) => return self.rec.reject(e, Outcome::Failed, E::FORMAT),
        };
        if let Some(f) = self.fill.take()
            && let Some(canonical) = canonical_answer(&reply)
        {
            f.complete(canonical, self.rec.row());
        }
        let mut resp = json(body);
        let (h, row, d) = (resp.headers_mut(), self.rec.row(), &cand.deployment);
        routed_headers(h, row, &d.model, &d.provider_name);
        headers::cost(h, row.effective_cost);
        self.rec.finish();
        resp
    }

    /// Streaming: each attempt is held until its first content, so an upstream that fails
    /// before producing anything fails over without the client noticing; then headers go out
    /// and the stream is relayed through the meter, which settles the row when the stream
    /// ends, fails or is dropped.
    async fn stream(mut self) -> Response {
        let won = match self.attempt(true, upstream::stream).await {
            Ok(w) => w,
            Err((e, outcome)) => return self.rec.reject(e, outcome, E::FORMAT),
        };
        let Won {
            cand,
            attempt,
            prepared,
            t0,
            got: started,
        } = won;
        let Exchange {
            gw,
            mut rec,
            ep,
            fill,
            ..
        } = self;
        rec.row().status = 200;
        let d = &cand.deployment;
        let mut resp = Response::new(Body::empty());
        routed_headers(resp.headers_mut(), rec.row(), &d.model, &d.provider_name);
        headers::event_stream(resp.headers_mut());
        let opts = MeterOptions {
            encoding: Encoding::for_model(&d.model),
            request: prepared.body.clone(),
            secrets: gw.secrets().clone(),
            output_cap: prepared.output_cap,
        };
        let cut = gw.0.cut.clone();
        let cut_for_row = cut.clone();
        *resp.body_mut() = match started {
            Started::Chunks(chunks) => {
                let (renderer, fill) = cache::caching(ep.renderer(), fill);
                let metered = MeteredStream::new(chunks, opts, renderer, move |s: Settlement| {
                    settle::report_stream(attempt, &s, t0);
                    if let Some(f) = fill {
                        f.settled(&s, &cand);
                    }
                    settle::stream(rec, &cand, &s, &cut_for_row);
                });
                sse::body(metered, E::FORMAT, &cut)
            }
            // Native events are relayed as the provider sent them; they are not stored
            // (the cache holds canonical answers).
            Started::Events(events) => {
                let metered = MeteredEvents::new(events, opts, move |s: Settlement| {
                    settle::report_stream(attempt, &s, t0);
                    settle::stream(rec, &cand, &s, &cut_for_row);
                });
                sse::body(metered, E::FORMAT, &cut)
            }
        };
        resp
    }
}

/// A complete answer in the canonical shape the cache stores.
fn canonical_answer(reply: &Reply) -> Option<Bytes> {
    match reply {
        Reply::Completion(b) => Some(b.clone()),
        Reply::Message(b) => {
            let created = u64::try_from(jiff::Timestamp::now().as_second()).unwrap_or(0);
            tollgate_providers::anthropic::response::to_chat_completion(b, created)
                .ok()
                .map(|(b, _)| Bytes::from(b))
        }
        Reply::Embeddings(_) => None,
    }
}

/// Sets a flag when dropped unless disarmed: tells a detached task that the client is gone.
struct ClientWatch(Arc<AtomicBool>, bool);

impl Drop for ClientWatch {
    fn drop(&mut self) {
        if !self.1 {
            self.0.store(true, Ordering::Release);
        }
    }
}

/// Runs a non-streaming upstream exchange on a tracked task, so its usage is captured and its
/// row recorded even if the client disconnects while the model is generating (the provider
/// bills the whole answer either way). `work` receives a flag that turns true when the client
/// has gone; shutdown waits for these tasks.
async fn detached<F, Fut>(gw: &Gateway, request_id: String, format: WireFormat, work: F) -> Response
where
    F: FnOnce(Arc<AtomicBool>) -> Fut,
    Fut: std::future::Future<Output = Response> + Send + 'static,
{
    let gone = Arc::new(AtomicBool::new(false));
    let mut watch = ClientWatch(gone.clone(), false);
    let out = gw.0.tasks.spawn(work(gone)).await;
    watch.1 = true;
    match out {
        Ok(resp) => resp,
        // The task's own row was recorded by its `Drop` (as cancelled); this answers the
        // client, with the panic in the log.
        Err(join) => crate::http::error_response(
            format,
            ApiError::internal(format!("the upstream task failed: {join}")),
            Some(&request_id),
        ),
    }
}
