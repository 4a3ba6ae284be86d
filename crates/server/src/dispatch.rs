//! Upstream dispatch: which deployment each attempt of a request goes to, and what happens when
//! one fails — retries with backoff, failover to the model's other deployments, fallbacks to
//! other models, circuit breakers and the retry budget.
//!
//! A [`Dispatch`] is created once per request, after authentication, attribution and the spend
//! policies (which fix the logical model). The handler then loops: [`Dispatch::next`] gives the
//! next attempt's [`Routed`] (deployment, price) and a breaker guard; the handler admits the
//! attempt against budgets, calls the provider and reports back with [`Dispatch::failed`] or
//! [`Dispatch::succeeded`]. Rules:
//!
//! - candidates, in order: the logical model's deployments as its strategy ranks them (pinned
//!   and sticky ones first), then each `fallbacks` model's deployments; a `context_window`
//!   failure switches to the model's `context_window_fallback` instead;
//! - retryable failures (connect, timeout, 429, 5xx, overloaded) move on to the next
//!   candidate at once; coming back to a deployment already tried waits a jittered
//!   exponential backoff, or the provider's `Retry-After` when it is short enough;
//! - content-policy and other client errors are final: retrying cannot change them;
//! - a deployment whose breaker is open is skipped without an attempt; every attempt after the
//!   first spends from the gateway-wide retry budget, so an outage cannot multiply traffic;
//! - streams are retried only until their first chunk: the handler peeks it before answering
//!   (see [`start_stream`]), so once a byte has reached the client there is no retry.
//!
//! Every attempt is counted in the row (`attempts`, `attempted`), and the row's provider,
//! deployment and price follow the attempt that is current.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::Response;
use futures_util::{Stream, StreamExt};
use serde_json::{Map, Value};
use tollgate_pricing::{DeploymentRef, Resolution};
use tollgate_providers::{FailureClass, UpstreamError};
use tollgate_router::{Attempt, Failure, LogicalModel, PlanRequest};
use tollgate_types::{ApiError, ErrorCode, LedgerRow, Outcome};

use crate::Gateway;
use crate::budget::{self, Shape};
use crate::pipeline::{Format, Routed};
use crate::record::PendingRow;

/// Request header pinning a deployment (`provider/model` label) or a provider, for keys with
/// `allow_route_override`.
pub const DEPLOYMENT_HEADER: &str = "x-tollgate-deployment";

/// One request's walk over its candidate deployments.
pub struct Dispatch {
    /// The logical model the request is served by (after spend policies).
    logical: String,
    policy_cap: Option<u32>,
    /// The primary model, then its fallbacks; a context-window fallback replaces them.
    models: Vec<Arc<LogicalModel>>,
    /// Candidates: (index into `models`, deployment index).
    order: Vec<(usize, usize)>,
    pos: usize,
    tried: Vec<(usize, usize)>,
    attempts: u32,
    backoffs: u32,
    settings: tollgate_router::RetrySettings,
    context_fallback: Option<String>,
    sticky: Option<u64>,
    stream: bool,
    pinned: Option<String>,
    /// The last upstream failure, as the client would see it.
    last: Option<ApiError>,
    /// A `Retry-After` the last failure asked for, honoured before the next attempt.
    wait: Option<Duration>,
}

/// What a request asks of routing beyond the model name.
pub struct Wish<'a> {
    pub pinned: Option<&'a str>,
    pub sticky: Option<u64>,
    pub stream: bool,
}

impl Dispatch {
    /// `model` is the resolved logical model; `policy_cap` an output cap a policy imposed.
    pub fn new(
        gw: &Gateway,
        logical: &str,
        model: Arc<LogicalModel>,
        policy_cap: Option<u32>,
        wish: Wish<'_>,
    ) -> Result<Dispatch, ApiError> {
        let now = Instant::now();
        gw.0.router.retry_budget().deposit(now);
        if let Some(p) = wish.pinned
            && !model
                .deployments
                .iter()
                .any(|d| d.label == p || d.provider_name == p)
        {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "{DEPLOYMENT_HEADER}: the model '{logical}' has no deployment or provider \
                     named '{p}'"
                ),
            )
            .with_param(DEPLOYMENT_HEADER));
        }
        let mut models = vec![model.clone()];
        for f in &model.fallbacks {
            if let Some(m) = gw.0.router.get(f) {
                models.push(m.clone());
            }
        }
        let mut d = Dispatch {
            logical: logical.to_string(),
            policy_cap,
            settings: model.retry,
            context_fallback: model.context_window_fallback.clone(),
            models,
            order: Vec::new(),
            pos: 0,
            tried: Vec::new(),
            attempts: 0,
            backoffs: 0,
            sticky: wish.sticky,
            stream: wish.stream,
            pinned: wish.pinned.map(str::to_string),
            last: None,
            wait: None,
        };
        d.order = d.plan_all(now);
        Ok(d)
    }

    /// The routing the first attempt will most likely get (the first priced candidate), for
    /// the per-request stages before the attempt loop (rate limits, the response cache).
    /// `None` when no candidate is priced — the loop then answers `model_not_priced` — and,
    /// without computing anything, when neither stage is configured: both skip a `None`.
    pub fn preview(&self, gw: &Gateway) -> Option<Routed> {
        if gw.0.rate_limits.is_empty() && gw.0.cache.is_none() {
            return None;
        }
        self.order
            .iter()
            .find_map(|&(mi, di)| price(gw, &self.models[mi], di, self.policy_cap).ok())
    }

    fn plan_all(&self, now: Instant) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (mi, m) in self.models.iter().enumerate() {
            let req = PlanRequest {
                // Pins and sticky keys name the primary model's deployments.
                pinned: if mi == 0 {
                    self.pinned.as_deref()
                } else {
                    None
                },
                sticky: if mi == 0 { self.sticky } else { None },
                stream: self.stream,
            };
            out.extend(m.plan(&req, now).into_iter().map(|di| (mi, di)));
        }
        out
    }

    /// The next attempt, its breaker guard, and the row updated to it. Waits out backoff or a
    /// short `Retry-After` first when needed. An error when nothing is left to try.
    pub async fn next(
        &mut self,
        gw: &Gateway,
        row: &mut LedgerRow,
    ) -> Result<(Routed, Attempt), ApiError> {
        // Candidates passed over without an attempt since the last one; a full round of them
        // means nothing can start now. Bounds the loop: it never spins.
        let mut skipped = 0usize;
        loop {
            if self.attempts >= self.settings.max_attempts {
                return Err(self.give_up(None));
            }
            let picked = if skipped >= self.order.len() {
                None
            } else {
                self.pick(Instant::now())
            };
            let Some((mi, di, revisit)) = picked else {
                // Nothing can be tried now: wait for the first breaker to half-open if that
                // is soon enough, else give up.
                match self.soonest_probe(Instant::now()) {
                    Some(w) if w <= self.settings.max_retry_after && !self.order.is_empty() => {
                        // The wait covers any Retry-After the last failure asked for.
                        self.wait = None;
                        tokio::time::sleep(w.max(Duration::from_millis(1))).await;
                        self.tried.clear();
                        skipped = 0;
                        continue;
                    }
                    w => {
                        let mut e = self.give_up(Some("every deployment's circuit is open"));
                        if let Some(w) = w {
                            e = e.with_retry_after(w.as_secs().max(1));
                        }
                        return Err(e);
                    }
                }
            };
            let model = self.models[mi].clone();
            let routed = match price(gw, &model, di, self.policy_cap) {
                Ok(r) => r,
                Err(e) => {
                    // An unpriced candidate can never be served (fail-closed); a fallback may
                    // be. It leaves the plan for good.
                    self.order.retain(|&c| c != (mi, di));
                    self.pos = 0;
                    self.last = Some(e);
                    continue;
                }
            };
            if self.attempts > 0 && !gw.0.router.retry_budget().try_withdraw(Instant::now()) {
                gw.0.metrics.retry_budget_exhausted();
                return Err(self.give_up(Some("the gateway's retry budget is spent")));
            }
            let wait = match self.wait.take() {
                Some(w) => Some(w),
                None if revisit => Some(tollgate_router::backoff(
                    self.backoffs,
                    self.settings.backoff,
                    self.settings.max_backoff,
                    None,
                )),
                None => None,
            };
            if let Some(w) = wait.filter(|w| !w.is_zero()) {
                self.backoffs += 1;
                tokio::time::sleep(w).await;
            }
            let Some(attempt) = model.deployments[di].health.start(Instant::now()) else {
                // Opened (or its probe slot was taken) meanwhile: try the next one.
                skipped += 1;
                continue;
            };
            self.tried.push((mi, di));
            if self.attempts > 0 {
                gw.0.metrics.retry();
            }
            self.attempts += 1;
            crate::pipeline::note_route(row, &routed);
            return Ok((routed, attempt));
        }
    }

    /// The next available candidate from `pos`, wrapping around once; `revisit` when it was
    /// tried before in this request.
    fn pick(&mut self, now: Instant) -> Option<(usize, usize, bool)> {
        let n = self.order.len();
        if n == 0 {
            return None;
        }
        for step in 0..n {
            let i = (self.pos + step) % n;
            let (mi, di) = self.order[i];
            if self.models[mi].deployments[di].health.available(now) {
                self.pos = (i + 1) % n;
                return Some((mi, di, self.tried.contains(&(mi, di))));
            }
        }
        None
    }

    fn soonest_probe(&self, now: Instant) -> Option<Duration> {
        self.order
            .iter()
            .filter_map(|&(mi, di)| {
                let s = self.models[mi].deployments[di].health.snapshot(now);
                s.retry_in_ms.map(Duration::from_millis)
            })
            .min()
    }

    fn give_up(&mut self, why: Option<&str>) -> ApiError {
        if let Some(e) = self.last.take() {
            return e;
        }
        let mut msg = format!(
            "no deployment of the model '{}' could be tried",
            self.logical
        );
        if let Some(why) = why {
            msg.push_str(": ");
            msg.push_str(why);
        }
        ApiError::new(ErrorCode::NoHealthyDeployment, msg)
    }

    /// An attempt failed with `e` before anything reached the client. Reports it to the
    /// deployment's breaker and decides: `Ok` = try [`Dispatch::next`] again, `Err` = the
    /// error to answer with.
    pub fn failed(
        &mut self,
        gw: &Gateway,
        routed: &Routed,
        attempt: Attempt,
        e: &UpstreamError,
    ) -> Result<(), ApiError> {
        let now = Instant::now();
        let api = crate::pipeline::upstream_error(gw, e);
        let class = e.class();
        match class {
            FailureClass::Transient => attempt.failure(Failure::Transient, now),
            // A provider that says how long to back off cools the deployment down for exactly
            // that long; one that does not is an ordinary failure for the breaker's thresholds
            // (one bare 429 must not take a deployment out for a whole cool-down).
            FailureClass::RateLimited | FailureClass::Overloaded => match e.retry_after() {
                Some(ra) => attempt.failure(
                    Failure::RateLimited {
                        retry_after: Some(ra),
                    },
                    now,
                ),
                None => attempt.failure(Failure::Transient, now),
            },
            // Not the deployment's fault: its health is unaffected.
            FailureClass::ContextWindow | FailureClass::ContentPolicy | FailureClass::Client => {
                drop(attempt)
            }
        }
        tracing::debug!(
            deployment = %routed.deployment.label,
            attempt = self.attempts,
            ?class,
            "upstream attempt failed"
        );
        match class {
            FailureClass::ContentPolicy | FailureClass::Client => Err(api),
            FailureClass::ContextWindow => match self.context_fallback.take() {
                Some(name) => match gw.0.router.get(&name) {
                    Some(m) => {
                        self.models = vec![m.clone()];
                        self.logical = name;
                        self.sticky = None;
                        self.pinned = None;
                        self.pos = 0;
                        self.tried.clear();
                        self.order = self.plan_all(now);
                        self.last = Some(api);
                        Ok(())
                    }
                    None => Err(api),
                },
                None => Err(api),
            },
            FailureClass::Transient | FailureClass::RateLimited | FailureClass::Overloaded => {
                if let Some(ra) = e.retry_after() {
                    // Another deployment is tried at once (this one's breaker now cools
                    // down); only coming back to this one waits, and only if that is short.
                    let others = self.order.iter().any(|&(mi, di)| {
                        !(Arc::ptr_eq(&self.models[mi], &routed.model) && di == routed.index)
                            && self.models[mi].deployments[di].health.available(now)
                    });
                    if !others {
                        if ra > self.settings.max_retry_after {
                            return Err(api);
                        }
                        self.wait = Some(ra);
                    }
                }
                self.last = Some(api);
                Ok(())
            }
        }
    }

    /// The attempt on `routed` answered: a conversation with a sticky key now sticks to it.
    pub fn succeeded(&self, routed: &Routed) {
        if let Some(key) = self.sticky
            && Arc::ptr_eq(&routed.model, &self.models[0])
        {
            routed.model.stick(key, routed.index, Instant::now());
        }
    }
}

/// A request's attempts: the walk over deployments ([`Dispatch`]) and the upstream body of
/// each attempt, built from the client's (canonical) body — moved, not copied, into the first
/// attempt; later attempts copy the previous attempt's body.
pub struct Attempts {
    dispatch: Dispatch,
    fresh: Option<Map<String, Value>>,
    last: Option<Arc<Map<String, Value>>>,
}

/// One attempt's admitted body.
pub struct Prepared {
    pub body: Arc<Map<String, Value>>,
    /// The total output the budgets reserved for (the meter's live cut), if any.
    pub output_cap: Option<u64>,
    /// The output cap admission wrote into the body, when it changed or set it.
    pub clamped_to: Option<u64>,
    /// A budget lowered the output cap to fit: the answer may be shorter than usual.
    pub fitted: bool,
}

impl Attempts {
    pub fn new(dispatch: Dispatch, body: Map<String, Value>) -> Attempts {
        Attempts {
            dispatch,
            fresh: Some(body),
            last: None,
        }
    }

    /// The next attempt: its deployment ([`Dispatch::next`]), breaker guard and admitted body
    /// ([`Attempts::prepare`]). An error is the request's final answer (record it with the
    /// outcome [`outcome_of`] gives).
    pub async fn next(
        &mut self,
        gw: &Gateway,
        rec: &mut PendingRow,
        shape: Shape,
    ) -> Result<(Routed, Attempt, Prepared), ApiError> {
        let (routed, attempt) = self.dispatch.next(gw, rec.row()).await?;
        let prepared = self.prepare(gw, rec, &routed, shape)?;
        Ok((routed, attempt, prepared))
    }

    /// See [`Dispatch::failed`].
    pub fn failed(
        &mut self,
        gw: &Gateway,
        routed: &Routed,
        attempt: Attempt,
        e: &UpstreamError,
    ) -> Result<(), ApiError> {
        self.dispatch.failed(gw, routed, attempt, e)
    }

    /// See [`Dispatch::succeeded`].
    pub fn succeeded(&self, routed: &Routed) {
        self.dispatch.succeeded(routed)
    }

    /// Budget admission for `routed` — the previous attempt's reservation is returned first,
    /// since the new deployment may be priced differently — and the body to send.
    fn prepare(
        &mut self,
        gw: &Gateway,
        rec: &mut PendingRow,
        routed: &Routed,
        shape: Shape,
    ) -> Result<Prepared, ApiError> {
        rec.release();
        if matches!(shape, Shape::Embeddings)
            && !routed.deployment.provider.capabilities().embeddings
        {
            return Err(ApiError::new(
                ErrorCode::EndpointNotSupported,
                format!(
                    "the model '{}' is served by provider '{}', which has no embeddings \
                     endpoint",
                    routed.logical, routed.deployment.provider_name
                ),
            )
            .with_param("model"));
        }
        let base = match (self.fresh.take(), &self.last) {
            (Some(b), _) => b,
            (None, Some(last)) => (**last).clone(),
            (None, None) => Map::new(),
        };
        let mut upstream = crate::pipeline::upstream_body(base, routed);
        let admitted = budget::admit(gw, rec.row(), routed, &mut upstream, shape)?;
        let clamped_to = admitted.clamped_to;
        let fitted = admitted.fitted;
        let output_cap = admitted.reservation.and_then(|r| {
            rec.hold(r);
            budget::stream_output_cap(&upstream)
        });
        let body = Arc::new(upstream);
        self.last = Some(body.clone());
        // Admitted: the upstream call is made next.
        crate::pipeline::note_attempt(rec.row(), routed);
        Ok(Prepared {
            body,
            output_cap,
            clamped_to,
            fitted,
        })
    }
}

/// Records and answers a request whose attempts ended in `error`: `failed` once an upstream
/// call was made, `rejected` when it never got that far (budget refusal, every circuit open).
pub fn give_up(
    mut rec: PendingRow,
    error: ApiError,
    request_id: String,
    format: Format,
) -> Response {
    let outcome = if rec.row().attempts > 0 {
        Outcome::Failed
    } else {
        Outcome::Rejected
    };
    crate::pipeline::reject(rec, error, request_id, outcome, format)
}

/// Prices deployment `di` of `model` (fail-closed) into a [`Routed`].
fn price(
    gw: &Gateway,
    model: &Arc<LogicalModel>,
    di: usize,
    policy_cap: Option<u32>,
) -> Result<Routed, ApiError> {
    let deployment = model.deployments[di].clone();
    let name = &model.name;
    let price = match gw.0.prices.resolve(
        name,
        &DeploymentRef {
            provider: &deployment.provider_name,
            model: &deployment.model,
        },
    ) {
        Resolution::Priced { price, version, .. } => Some((price, version)),
        Resolution::Unpriced { allowed: true } => None,
        Resolution::Unpriced { allowed: false } => {
            return Err(ApiError::new(
                ErrorCode::ModelNotPriced,
                format!(
                    "the model '{name}' (deployment '{}') has no price; add one under \
                     models.{name}.price or set pricing.unknown_model: allow",
                    deployment.label
                ),
            )
            .with_param("model"));
        }
    };
    Ok(Routed {
        logical: name.clone(),
        policy_cap,
        default_cap: model.max_output_tokens,
        deployment,
        price,
        model: model.clone(),
        index: di,
    })
}

/// Most items a stream's preamble may hold back (a provider sending more content-free
/// items than this is relayed anyway).
const MAX_PREAMBLE: usize = 16;

/// Waits until a stream has produced something the client must see — content, a tool call,
/// a finish, usage — holding back the content-free preamble before it (OpenAI's role-only
/// chunk, Anthropic's `message_start` and `ping`). `Ok` with the stream restored (held items
/// first) when it started cleanly; `Err` when the upstream failed before that: the moment up
/// to which a stream can still fail over without the client noticing (Anthropic's in-stream
/// `overloaded_error` typically arrives right after `message_start`).
pub async fn start_stream<T, S>(
    mut stream: S,
    is_preamble: fn(&T) -> bool,
) -> Result<std::pin::Pin<Box<dyn Stream<Item = Result<T, UpstreamError>> + Send>>, UpstreamError>
where
    T: Send + 'static,
    S: Stream<Item = Result<T, UpstreamError>> + Send + Unpin + 'static,
{
    let mut held = Vec::new();
    loop {
        match stream.next().await {
            Some(Err(e)) => return Err(e),
            Some(Ok(item)) => {
                let preamble = is_preamble(&item);
                held.push(Ok(item));
                if !preamble || held.len() >= MAX_PREAMBLE {
                    break;
                }
            }
            None => break,
        }
    }
    Ok(Box::pin(futures_util::stream::iter(held).chain(stream)))
}

/// An OpenAI chunk carrying nothing the client needs yet: no content, refusal, reasoning,
/// tool call, finish reason, usage or error (the role-only opening chunk).
pub fn chunk_is_preamble(raw: &bytes::Bytes) -> bool {
    let Ok(p) = serde_json::from_slice::<tollgate_types::canonical::ChunkPeek<'_>>(raw) else {
        return false;
    };
    p.usage.is_none()
        && p.error.is_none()
        && p.choices.iter().flatten().all(|c| {
            c.finish_reason.is_none()
                && c.delta.as_ref().is_none_or(|d| {
                    d.content.as_deref().is_none_or(str::is_empty)
                        && d.refusal.is_none()
                        && d.reasoning_content.as_deref().is_none_or(str::is_empty)
                        && d.tool_calls.is_none()
                })
        })
}

/// An Anthropic event before the first content: `message_start` and `ping`.
pub fn event_is_preamble(e: &tollgate_providers::sse::Event) -> bool {
    matches!(e.event.as_deref(), Some("message_start" | "ping"))
}

/// The prompt-prefix key of a chat request for stickiness: the conversation's opening (tools,
/// system messages and the first user turn), namespaced by tenant (or key) and model. `None`
/// when the prompt is too short for providers to cache.
pub fn sticky_key(
    body: &serde_json::Map<String, serde_json::Value>,
    namespace: &str,
    model: &str,
    min_chars: usize,
) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let messages = body.get("messages")?.as_array()?;
    let total: usize = messages.iter().map(content_len).sum();
    if total < min_chars {
        return None;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    namespace.hash(&mut h);
    model.hash(&mut h);
    if let Some(t) = body.get("tools") {
        t.to_string().hash(&mut h);
    }
    for m in messages {
        m.to_string().hash(&mut h);
        if m.get("role").and_then(|r| r.as_str()) == Some("user") {
            return Some(h.finish());
        }
    }
    None
}

fn content_len(m: &serde_json::Value) -> usize {
    match m.get("content") {
        Some(serde_json::Value::String(s)) => s.len(),
        Some(serde_json::Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
            .map(str::len)
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err() -> UpstreamError {
        UpstreamError {
            provider: "p".into(),
            kind: tollgate_providers::UpstreamErrorKind::InStream {
                message: "overloaded".into(),
                body: bytes::Bytes::new(),
            },
        }
    }

    #[tokio::test]
    async fn a_failure_after_only_the_preamble_can_still_fail_over() {
        let role = bytes::Bytes::from_static(
            br#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
        );
        let text =
            bytes::Bytes::from_static(br#"{"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#);
        assert!(chunk_is_preamble(&role));
        assert!(!chunk_is_preamble(&text));
        // Role chunk, then an error: nothing the client needs was produced — fail over.
        let s = futures_util::stream::iter(vec![Ok(role.clone()), Err(err())]);
        assert!(start_stream(s, chunk_is_preamble).await.is_err());
        // Role chunk, content, then an error: started; every item is relayed in order.
        let s = futures_util::stream::iter(vec![Ok(role.clone()), Ok(text.clone()), Err(err())]);
        let out: Vec<_> = start_stream(s, chunk_is_preamble)
            .await
            .unwrap()
            .collect()
            .await;
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].as_ref().unwrap(), &role);
        assert_eq!(out[1].as_ref().unwrap(), &text);
        assert!(out[2].is_err());
        // An empty stream starts (and ends) cleanly.
        let s = futures_util::stream::iter(Vec::<Result<bytes::Bytes, UpstreamError>>::new());
        assert!(start_stream(s, chunk_is_preamble).await.is_ok());
    }

    #[test]
    fn sticky_key_follows_the_conversation_opening() {
        let long = "x".repeat(5000);
        let turn1 = json!({"messages": [
            {"role": "system", "content": long},
            {"role": "user", "content": "hi"}
        ]});
        let turn2 = json!({"messages": [
            {"role": "system", "content": long},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "more"}
        ]});
        let k1 = sticky_key(turn1.as_object().unwrap(), "acme", "m", 4096);
        let k2 = sticky_key(turn2.as_object().unwrap(), "acme", "m", 4096);
        assert!(k1.is_some());
        assert_eq!(k1, k2);
        // Other tenants and other models never share a key.
        assert_ne!(
            k1,
            sticky_key(turn1.as_object().unwrap(), "other", "m", 4096)
        );
        assert_ne!(
            k1,
            sticky_key(turn1.as_object().unwrap(), "acme", "m2", 4096)
        );
        // Short prompts are not worth sticking.
        let short = json!({"messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(
            sticky_key(short.as_object().unwrap(), "acme", "m", 4096),
            None
        );
    }
}
