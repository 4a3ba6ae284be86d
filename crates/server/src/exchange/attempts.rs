//! Stage 9, the attempt loop's walk: which deployment each attempt of a request goes to, and
//! what happens when one fails — retries with backoff, failover to the model's other
//! deployments, fallbacks to other models, circuit breakers and the retry budget.
//!
//! A [`Dispatch`] is created once per request from the target stage's [`Target`]. The exchange
//! then loops: [`Attempts::next`] gives the next attempt's [`Candidate`] (deployment, price), a
//! breaker guard and the admitted body (budget admission at that candidate's price, stage
//! 9b); the exchange calls the provider and reports back with [`Dispatch::failed`] or
//! [`Dispatch::succeeded`] (through `Attempts::dispatch`). Rules:
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
//!   (`super::upstream`), so once a byte has reached the client there is no retry.
//!
//! Every attempt is counted in the row (`attempts`, `attempted`), and the row's provider,
//! deployment and price follow the attempt that is current.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tollgate_providers::{FailureClass, UpstreamError};
use tollgate_router::{Attempt, Failure, PlanRequest};
use tollgate_types::{ApiError, ErrorCode, LedgerRow};

use crate::exchange::row::PendingRow;
use crate::gateway::{Gateway, LogicalModel, scrubbed};
use crate::stages::budget::{self, Shape};
use crate::stages::target::{self, Candidate, Target};

/// One request's walk over its candidate deployments.
pub(crate) struct Dispatch {
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

impl Dispatch {
    pub(crate) fn new(gw: &Gateway, target: Target) -> Dispatch {
        let now = Instant::now();
        gw.0.router.retry_budget().deposit(now);
        let model = target.model;
        let mut models = vec![model.clone()];
        for f in &model.fallbacks {
            if let Some(m) = gw.0.router.get(f) {
                models.push(m.clone());
            }
        }
        let mut d = Dispatch {
            logical: model.name.clone(),
            policy_cap: target.policy_cap,
            settings: model.retry,
            context_fallback: model.context_window_fallback.clone(),
            models,
            order: Vec::new(),
            pos: 0,
            tried: Vec::new(),
            attempts: 0,
            backoffs: 0,
            sticky: target.sticky,
            stream: target.stream,
            pinned: target.pinned,
            last: None,
            wait: None,
        };
        d.order = d.plan_all(now);
        d
    }

    /// The candidate the first attempt will most likely get (the first priced one), for the
    /// per-request stages before the attempt loop (rate limits, the response cache).
    /// `None` when no candidate is priced — the loop then answers `model_not_priced` — and,
    /// without computing anything, when neither stage is configured: both skip a `None`.
    pub(crate) fn preview(&self, gw: &Gateway) -> Option<Candidate> {
        if gw.0.rate_limits.is_empty() && gw.0.cache.is_none() {
            return None;
        }
        self.order
            .iter()
            .find_map(|&(mi, di)| target::price(gw, &self.models[mi], di, self.policy_cap).ok())
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
    async fn next(
        &mut self,
        gw: &Gateway,
        row: &mut LedgerRow,
    ) -> Result<(Candidate, Attempt), ApiError> {
        // Candidates passed over without an attempt since the last one; a full round of them
        // means nothing can start now. Bounds the loop: it never spins.
        let mut skipped = 0usize;
        loop {
            if self.attempts >= self.settings.max_attempts {
                return Err(self.exhausted(None));
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
                        let mut e = self.exhausted(Some("every deployment's circuit is open"));
                        if let Some(w) = w {
                            e = e.with_retry_after(w.as_secs().max(1));
                        }
                        return Err(e);
                    }
                }
            };
            let model = self.models[mi].clone();
            let cand = match target::price(gw, &model, di, self.policy_cap) {
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
                return Err(self.exhausted(Some("the gateway's retry budget is spent")));
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
            let Some(attempt) = cand.deployment.health.start(Instant::now()) else {
                // Opened (or its probe slot was taken) meanwhile: try the next one.
                skipped += 1;
                continue;
            };
            self.tried.push((mi, di));
            if self.attempts > 0 {
                gw.0.metrics.retry();
            }
            self.attempts += 1;
            cand.note(row);
            return Ok((cand, attempt));
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

    fn exhausted(&mut self, why: Option<&str>) -> ApiError {
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
    pub(crate) fn failed(
        &mut self,
        gw: &Gateway,
        cand: &Candidate,
        attempt: Attempt,
        e: &UpstreamError,
    ) -> Result<(), ApiError> {
        let now = Instant::now();
        let api = scrubbed(gw, e);
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
            deployment = %cand.deployment.label,
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
                        !(Arc::ptr_eq(&self.models[mi], &cand.model) && di == cand.index)
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

    /// The attempt on `cand` answered: a conversation with a sticky key now sticks to it.
    pub(crate) fn succeeded(&self, cand: &Candidate) {
        if let Some(key) = self.sticky
            && self
                .models
                .first()
                .is_some_and(|m| Arc::ptr_eq(&cand.model, m))
        {
            cand.model.stick(key, cand.index, Instant::now());
        }
    }
}

/// A request's attempts: the walk over deployments ([`Dispatch`]) and the upstream body of
/// each attempt, built from the client's (canonical) body — moved, not copied, into the first
/// attempt; later attempts copy the previous attempt's body.
pub(crate) struct Attempts {
    /// Which candidate comes next, and how a failure is judged (`dispatch.failed`).
    pub(crate) dispatch: Dispatch,
    fresh: Option<Map<String, Value>>,
    last: Option<Arc<Map<String, Value>>>,
}

/// One attempt's admitted body.
pub(crate) struct Prepared {
    pub(crate) body: Arc<Map<String, Value>>,
    /// The total output the budgets reserved for (the meter's live cut), if any.
    pub(crate) output_cap: Option<u64>,
    /// The output cap admission wrote into the body, when it changed or set it.
    pub(crate) clamped_to: Option<u64>,
    /// A budget lowered the output cap to fit: the answer may be shorter than usual.
    pub(crate) fitted: bool,
}

impl Attempts {
    pub(crate) fn new(dispatch: Dispatch, body: Map<String, Value>) -> Attempts {
        Attempts {
            dispatch,
            fresh: Some(body),
            last: None,
        }
    }

    /// The next attempt: its candidate ([`Dispatch::next`]), breaker guard and admitted body
    /// ([`Attempts::prepare`]). An error is the request's final answer.
    pub(crate) async fn next(
        &mut self,
        gw: &Gateway,
        rec: &mut PendingRow,
        shape: Shape,
    ) -> Result<(Candidate, Attempt, Prepared), ApiError> {
        let (cand, attempt) = self.dispatch.next(gw, rec.row()).await?;
        let (prepared, intent) = self.prepare(gw, rec, &cand, shape)?;
        if let Some(intent) = intent
            && let Err(e) = intent.await
        {
            // Strict durability could not record the provisional row (the database is failing
            // or the queue is full): the call goes ahead — the final row is still never lost —
            // and the gap is counted in `tollgate_ledger_intents_dropped_total`.
            tracing::warn!(request_id = %rec.request_id(), error = %e,
                "provisional row not committed before the provider call");
        }
        Ok((cand, attempt, prepared))
    }

    /// Budget admission for `cand` — the previous attempt's reservation is returned first,
    /// since the new deployment may be priced differently — and the body to send.
    fn prepare(
        &mut self,
        gw: &Gateway,
        rec: &mut PendingRow,
        cand: &Candidate,
        shape: Shape,
    ) -> Result<(Prepared, Option<tollgate_ledger::Durable>), ApiError> {
        rec.release();
        if matches!(shape, Shape::Embeddings) && !cand.deployment.provider.capabilities().embeddings
        {
            return Err(ApiError::new(
                ErrorCode::EndpointNotSupported,
                format!(
                    "the model '{}' is served by provider '{}', which has no embeddings \
                     endpoint",
                    cand.logical, cand.deployment.provider_name
                ),
            )
            .with_param("model"));
        }
        let base = match (self.fresh.take(), &self.last) {
            (Some(b), _) => b,
            (None, Some(last)) => (**last).clone(),
            (None, None) => Map::new(),
        };
        let mut upstream = base;
        // The deployment's own name for the model.
        upstream.insert("model".into(), Value::String(cand.deployment.model.clone()));
        let admitted = budget::admit(gw, rec.row(), cand, &mut upstream, shape)?;
        let worst = budget::worst_usage(cand, &upstream, shape, &admitted);
        let clamped_to = admitted.clamped_to;
        let fitted = admitted.fitted;
        let output_cap = admitted.reservation.and_then(|r| {
            rec.hold(r);
            budget::stream_output_cap(&upstream)
        });
        let body = Arc::new(upstream);
        self.last = Some(body.clone());
        // Admitted: the upstream call is made next, and may be billed even if this process
        // dies during it.
        cand.count_attempt(rec.row());
        let intent = rec.intend(cand, worst);
        Ok((
            Prepared {
                body,
                output_cap,
                clamped_to,
                fitted,
            },
            intent,
        ))
    }
}
