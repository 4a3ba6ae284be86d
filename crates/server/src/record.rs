//! The pending ledger row of one request.
//!
//! **Invariant: one request, one row.** A [`PendingRow`] is opened before anything else
//! happens and consumed by exactly one of its finishing methods; if it is dropped unfinished —
//! the client disconnected and axum dropped the handler future — its `Drop` records the row as
//! `cancelled`. There is no path that leaves a request without a row.

use std::time::Instant;

use tokio_util::task::task_tracker::TaskTrackerToken;
use tollgate_ledger::Ledger;
use tollgate_types::{ApiError, LedgerRow, Outcome, RequestId};

use crate::metrics::{Endpoint, Metrics};
use crate::state::now_ms;

/// Status recorded for requests whose client went away (nginx's convention).
pub const CLIENT_CLOSED: u16 = 499;

pub struct PendingRow {
    row: Option<LedgerRow>,
    ledger: Ledger,
    started: Instant,
    endpoint: Endpoint,
    gw: std::sync::Arc<crate::state::Inner>,
    /// Counts this request as in flight for `serve`'s final wait; dropped with the row.
    _in_flight: TaskTrackerToken,
    /// The budget reservation admission took, settled with the row's cost when it is recorded.
    reservation: Option<tollgate_policy::Reservation>,
    /// The rate-limit token reservation (`crate::ratelimit`), settled with the row's actual
    /// input + output tokens when it is recorded.
    rate: Option<tollgate_policy::RateHold>,
}

impl PendingRow {
    pub(crate) fn open(gw: &crate::Gateway, endpoint: Endpoint) -> PendingRow {
        gw.0.metrics.in_flight(1);
        PendingRow {
            row: Some(LedgerRow::start(
                RequestId::new().to_string(),
                now_ms(),
                endpoint.path(),
            )),
            ledger: gw.0.ledger.clone(),
            started: Instant::now(),
            endpoint,
            gw: gw.0.clone(),
            _in_flight: gw.0.tasks.token(),
            reservation: None,
            rate: None,
        }
    }

    pub fn request_id(&self) -> &str {
        self.row.as_ref().map_or("", |r| r.request_id.as_str())
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// Mutable access to the row being built.
    pub fn row(&mut self) -> &mut LedgerRow {
        // The row is only taken by `finish`, which consumes `self`.
        self.row
            .get_or_insert_with(|| LedgerRow::start(String::new(), 0, ""))
    }

    /// Holds a budget reservation until the row is recorded.
    pub fn hold(&mut self, reservation: tollgate_policy::Reservation) {
        self.reservation = Some(reservation);
    }

    /// Returns a held budget reservation unused (an attempt failed before costing anything;
    /// the next attempt reserves for its own deployment's price).
    pub fn release(&mut self) {
        if let Some(r) = self.reservation.take() {
            self.gw.budgets.settle(&r, tollgate_types::NanoUsd::ZERO);
        }
    }

    /// Holds a rate-limit token reservation until the row is recorded.
    pub fn hold_rate(&mut self, hold: tollgate_policy::RateHold) {
        self.rate = Some(hold);
    }

    /// Records a request refused or failed with `error`.
    pub fn fail(mut self, error: &ApiError, outcome: Outcome) {
        let row = self.row();
        row.status = error.status();
        row.outcome = outcome;
        row.error_code = Some(error.code.as_str().to_string());
        row.error_origin = Some(error.code.origin().as_str().to_string());
        self.finish();
    }

    /// Records the row as it stands (status and outcome already set by the caller).
    pub fn finish(mut self) {
        self.record();
    }

    fn record(&mut self) {
        if let Some(mut row) = self.row.take() {
            row.latency_us = self.started.elapsed().as_micros() as u64;
            let m: &Metrics = &self.gw.metrics;
            m.observe(self.endpoint, &row);
            m.in_flight(-1);
            // Settling with the actual cost (0 for a failure) returns the unused reservation;
            // every exit path records the row, so no reservation outlives its request.
            if let Some(r) = self.reservation.take()
                && let Some(s) = self.gw.budgets.settle(&r, row.effective_cost)
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
                self.gw.rate_limits.settle(h, row.usage.total_tokens());
            }
            if row.effective_cost.nanos() > 0
                && let Some(model) = row.requested_model.as_deref()
            {
                // Burn-rate triggers read settled spend per policy scope.
                self.gw.policies.record_spend(
                    &row.attribution,
                    model,
                    row.effective_cost,
                    row.started_at_ms,
                );
            }
            self.ledger.record(row);
        }
    }
}

impl Drop for PendingRow {
    fn drop(&mut self) {
        if let Some(row) = self.row.as_mut() {
            row.outcome = Outcome::Cancelled;
            row.status = CLIENT_CLOSED;
            row.error_code = Some("client_closed_request".into());
            row.error_origin = Some("client".into());
        }
        self.record();
    }
}
