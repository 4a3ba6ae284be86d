//! The pending ledger row of one request, and the settlement of what rides on it.
//!
//! **Invariant: one request, one row.** A [`PendingRow`] is opened before anything else
//! happens and consumed by exactly one of its finishing methods; if it is dropped unfinished —
//! the client disconnected and axum dropped the handler future — its `Drop` records the row as
//! `cancelled`. There is no path that leaves a request without a row.
//!
//! Recording settles everything the request holds: the budget reservation (with the row's
//! actual cost, so a failure returns it all), the rate-limit token hold (with the actual
//! tokens), the burn-rate counters of spend policies, the metrics; then the row goes to the
//! ledger without blocking.
//!
//! **Crash durability.** Before each provider call the row as it would read if the process
//! died then — `gateway_interrupted`, billed at the worst case admission allowed, `usage_source`
//! `unknown` ([`PendingRow::intend`]) — goes to the ledger's intent log; the final row replaces
//! it. Under `storage.durability: strict` the intent is committed before the call, and the
//! response is held ([`Strict`]) until the final row is on disk.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio_util::task::task_tracker::TaskTrackerToken;
use tollgate_ledger::{Durability, Durable};
use tollgate_types::{
    ApiError, ErrorCode, LedgerRow, NanoUsd, Outcome, RequestId, Usage, UsageSource,
};

use crate::gateway::{Gateway, Inner, now_ms};
use crate::http::{WireFormat, error_response};
use crate::metrics::Route;

pub(crate) struct PendingRow {
    row: Option<LedgerRow>,
    started: Instant,
    route: Route,
    gw: Arc<Inner>,
    /// Counts this request as in flight for `serve`'s final wait; dropped with the row.
    _in_flight: TaskTrackerToken,
    /// The budget reservation admission took, settled with the row's cost when it is recorded.
    reservation: Option<tollgate_policy::Reservation>,
    /// The rate-limit token reservation, settled with the row's actual input + output tokens.
    rate: Option<tollgate_policy::RateHold>,
    /// `strict` durability: where the final row's [`Durable`] goes for the response to wait on.
    strict: Option<Arc<Slot>>,
    /// The request's trace, when telemetry is on.
    trace: Option<Box<Trace>>,
    /// The kind of the provider last called, for the GenAI metrics' `gen_ai.provider.name`.
    provider_kind: Option<tollgate_types::ProviderKind>,
}

/// Where a request sits in its trace, and the spans of its attempts so far.
struct Trace {
    context: tollgate_telemetry::TraceContext,
    span_id: [u8; 8],
    start_unix_nanos: u64,
    provider_kind: Option<tollgate_types::ProviderKind>,
    attempts: Vec<tollgate_telemetry::AttemptSpan>,
    /// The attempt whose call (or relayed stream) is running.
    open: Option<tollgate_telemetry::AttemptSpan>,
}

/// Holds a response's body until its row is on disk (`strict`; a no-op otherwise).
pub(crate) struct Holder(Option<Arc<Slot>>);

impl Holder {
    pub(crate) fn apply(self, resp: Response) -> Response {
        let Some(slot) = self.0 else {
            return resp;
        };
        resp.map(|inner| {
            Body::new(Strict {
                inner,
                slot,
                waiting: None,
                held: None,
            })
        })
    }
}

/// The final row's durability, handed from the row to the response body.
#[derive(Default)]
pub(crate) struct Slot(Mutex<Option<Durable>>);

impl Slot {
    fn take(&self) -> Option<Durable> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl PendingRow {
    pub(crate) fn open(gw: &Gateway, route: Route) -> PendingRow {
        gw.0.metrics.in_flight(1);
        PendingRow {
            row: Some(LedgerRow::start(
                RequestId::new().to_string(),
                now_ms(),
                route.path(),
            )),
            started: Instant::now(),
            route,
            gw: gw.0.clone(),
            _in_flight: gw.0.tasks.token(),
            reservation: None,
            rate: None,
            strict: (gw.0.ledger.durability() == Durability::Strict)
                .then(|| Arc::new(Slot::default())),
            trace: None,
            provider_kind: None,
        }
    }

    /// Continues the client's trace (`traceparent`, `tracestate`) or starts one, when
    /// telemetry is on.
    pub(crate) fn start_trace(&mut self, headers: &axum::http::HeaderMap) {
        let Some(t) = &self.gw.telemetry else {
            return;
        };
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        let context = tollgate_telemetry::TraceContext::start(
            h("traceparent"),
            h("tracestate"),
            t.exporter.sampling_ratio(),
        );
        let elapsed = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(0);
        self.trace = Some(Box::new(Trace {
            context,
            span_id: tollgate_telemetry::new_span_id(),
            start_unix_nanos: tollgate_telemetry::unix_nanos().saturating_sub(elapsed),
            provider_kind: None,
            attempts: Vec::new(),
            open: None,
        }));
    }

    /// An upstream call to `cand` starts: its span opens. Returns the `traceparent` to send
    /// with it when trace context is propagated to providers.
    pub(crate) fn attempt_begins(
        &mut self,
        cand: &crate::stages::target::Candidate,
    ) -> Option<String> {
        self.provider_kind = Some(cand.deployment.provider.kind());
        let propagate = self.gw.telemetry.as_ref().is_some_and(|t| t.propagate);
        let t = self.trace.as_mut()?;
        if let Some(open) = t.open.take() {
            t.attempts.push(open);
        }
        let d = &cand.deployment;
        let kind = d.provider.kind();
        t.provider_kind = Some(kind);
        let span = tollgate_telemetry::AttemptSpan {
            span_id: tollgate_telemetry::new_span_id(),
            start_unix_nanos: tollgate_telemetry::unix_nanos(),
            end_unix_nanos: 0,
            provider_kind: kind,
            provider: d.provider_name.clone(),
            model: d.model.clone(),
            deployment: d.label.clone(),
            error: None,
        };
        let tp = propagate.then(|| {
            tollgate_telemetry::format_traceparent(
                &t.context.trace_id,
                &span.span_id,
                t.context.sampled,
            )
        });
        t.open = Some(span);
        tp
    }

    /// The running upstream call ended, failed with the code `error` gives or not; `error`
    /// runs only when a trace is open, so nothing is computed with telemetry off.
    pub(crate) fn attempt_ends(&mut self, error: impl FnOnce() -> Option<ErrorCode>) {
        if let Some(t) = self.trace.as_mut()
            && let Some(mut span) = t.open.take()
        {
            span.end_unix_nanos = tollgate_telemetry::unix_nanos();
            span.error = error().map(|c| c.as_str().to_string());
            t.attempts.push(span);
        }
    }

    /// What holds this request's response under `strict` durability.
    pub(crate) fn holder(&self) -> Holder {
        Holder(self.strict.clone())
    }

    /// Sends the provisional row for the attempt about to call `cand`: this row as it stands,
    /// marked `gateway_interrupted` and billed at `worst` (`usage_source: unknown`). Under
    /// `strict` the returned future resolves once it is committed.
    pub(crate) fn intend(
        &mut self,
        cand: &crate::stages::target::Candidate,
        worst: Usage,
    ) -> Option<Durable> {
        let mut provisional = self.row().clone();
        cand.bill(&mut provisional, worst, UsageSource::Unknown);
        let code = ErrorCode::GatewayInterrupted;
        provisional.outcome = Outcome::Failed;
        provisional.status = code.status();
        provisional.error_code = Some(code.as_str().into());
        provisional.error_origin = Some(code.origin().as_str().into());
        provisional.latency_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(0);
        let ledger = &self.gw.ledger;
        match self.strict {
            Some(_) => Some(ledger.intend_durable(provisional)),
            None => {
                ledger.intend(provisional);
                None
            }
        }
    }

    pub(crate) fn request_id(&self) -> &str {
        self.row.as_ref().map_or("", |r| r.request_id.as_str())
    }

    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Mutable access to the row being built.
    pub(crate) fn row(&mut self) -> &mut LedgerRow {
        // The row is only taken by `record`, which only runs when `self` is consumed.
        self.row
            .get_or_insert_with(|| LedgerRow::start(String::new(), 0, ""))
    }

    /// Holds a budget reservation until the row is recorded.
    pub(crate) fn hold(&mut self, reservation: tollgate_policy::Reservation) {
        self.reservation = Some(reservation);
    }

    /// Returns a held budget reservation unused (an attempt failed before costing anything;
    /// the next attempt reserves for its own deployment's price).
    pub(crate) fn release(&mut self) {
        if let Some(r) = self.reservation.take() {
            self.gw.budgets.settle(&r, NanoUsd::ZERO);
        }
    }

    /// Holds a rate-limit token reservation until the row is recorded.
    pub(crate) fn hold_rate(&mut self, hold: tollgate_policy::RateHold) {
        self.rate = Some(hold);
    }

    /// Records a request refused or failed with `error` and answers it in `format`.
    pub(crate) fn reject(
        mut self,
        error: ApiError,
        outcome: Outcome,
        format: WireFormat,
    ) -> Response {
        let row = self.row();
        row.status = error.status();
        row.outcome = outcome;
        row.error_code = Some(error.code.as_str().to_string());
        row.error_origin = Some(error.code.origin().as_str().to_string());
        let id = row.request_id.clone();
        self.finish();
        error_response(format, error, Some(&id))
    }

    /// Records the row as it stands (status and outcome already set by the caller).
    pub(crate) fn finish(mut self) {
        self.record();
    }

    fn record(&mut self) {
        let Some(mut row) = self.row.take() else {
            return;
        };
        row.latency_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let gw = &self.gw;
        gw.metrics.observe(self.route, &row, self.provider_kind);
        gw.metrics.in_flight(-1);
        // Settling with the actual cost (0 for a failure) returns the unused reservation;
        // every exit path records the row, so no reservation outlives its request.
        if let Some(r) = self.reservation.take()
            && let Some(s) = gw.budgets.settle(&r, row.effective_cost)
            && (s.excess.nanos() > 0 || s.late)
        {
            tracing::warn!(
                request_id = %row.request_id,
                excess = %s.excess,
                late = s.late,
                "actual cost exceeded the budget reservation"
            );
        }
        // Same for the rate limits' token estimate (a failed call usually used 0).
        if let Some(h) = self.rate.take() {
            gw.rate_limits.settle(h, row.usage.total_tokens());
        }
        if row.effective_cost.nanos() > 0
            && let Some(model) = row.requested_model.as_deref()
        {
            // Burn-rate triggers read settled spend per policy scope.
            gw.policies.record_spend(
                &row.attribution,
                model,
                row.effective_cost,
                row.started_at_ms,
            );
        }
        if let (Some(mut t), Some(tel)) = (self.trace.take(), &gw.telemetry) {
            let end = tollgate_telemetry::unix_nanos();
            // A stream's attempt runs until the stream ends, with the request's fate.
            if let Some(mut open) = t.open.take() {
                open.end_unix_nanos = end;
                open.error = (row.status >= 400)
                    .then(|| row.error_code.clone())
                    .flatten();
                t.attempts.push(open);
            }
            tel.exporter.record(tollgate_telemetry::RequestSpan {
                context: t.context,
                span_id: t.span_id,
                start_unix_nanos: t.start_unix_nanos,
                end_unix_nanos: end,
                provider_kind: t.provider_kind,
                attempts: t.attempts,
                row: row.clone(),
            });
        }
        match &self.strict {
            Some(slot) => {
                *slot.0.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(gw.ledger.record_durable(row));
            }
            None => gw.ledger.record(row),
        }
    }
}

/// A response body under `strict` durability: nothing more goes out — not the first frame of
/// a complete answer, not the last event of a stream — while the row's final write is pending.
/// A stream's row is recorded while the meter produces its last frame, so that frame waits.
struct Strict {
    inner: Body,
    slot: Arc<Slot>,
    waiting: Option<Durable>,
    /// What the body produced together with the row (a frame, the end, an error), passed on
    /// once the row is on disk.
    held: Option<Option<Result<Frame<Bytes>, axum::Error>>>,
}

impl Strict {
    /// Waits for a pending row write, if any.
    fn settle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.waiting.is_none() {
            self.waiting = self.slot.take();
        }
        if let Some(d) = self.waiting.as_mut() {
            if let Err(e) = ready!(Pin::new(d).poll(cx)) {
                tracing::error!(error = %e, "strict durability: the row is not on disk yet");
            }
            self.waiting = None;
        }
        Poll::Ready(())
    }
}

impl http_body::Body for Strict {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            ready!(this.settle(cx));
            if let Some(next) = this.held.take() {
                return Poll::Ready(next);
            }
            let next = ready!(Pin::new(&mut this.inner).poll_frame(cx));
            this.waiting = this.slot.take();
            if this.waiting.is_none() {
                return Poll::Ready(next);
            }
            // The row was recorded while this frame (or the end) was produced: it waits.
            this.held = Some(next);
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Marks a row as abandoned by its client.
pub(crate) fn client_closed(row: &mut LedgerRow) {
    let code = ErrorCode::ClientClosedRequest;
    row.outcome = Outcome::Cancelled;
    row.status = code.status();
    row.error_code = Some(code.as_str().into());
    row.error_origin = Some(code.origin().as_str().into());
}

/// Marks a row as ended by a panic in Tollgate (the client got the catch-panic layer's 500,
/// or a broken stream).
fn panicked(row: &mut LedgerRow) {
    let code = ErrorCode::InternalError;
    row.outcome = Outcome::Failed;
    row.status = code.status();
    row.error_code = Some(code.as_str().into());
    row.error_origin = Some(code.origin().as_str().into());
}

impl Drop for PendingRow {
    fn drop(&mut self) {
        if let Some(row) = self.row.as_mut() {
            // Dropped unfinished: either the client went away (the future was dropped) or
            // this thread is unwinding from a panic — a bug of ours, not a cancellation.
            if std::thread::panicking() {
                tracing::error!(request_id = %row.request_id, "request ended by a panic");
                panicked(row);
            } else {
                client_closed(row);
            }
        }
        self.record();
    }
}
