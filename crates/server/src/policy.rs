//! The spend-policy stage: graded actions before overspend (PRODUCT.md §2 "Policy").
//!
//! Before a request is routed, every policy whose scope matches is evaluated
//! (`tollgate_policy::rules::Policies::evaluate`): a ladder of triggers (budget utilisation,
//! forecast, burn rate, revenue share) and actions. Applied actions change the request —
//! `downgrade` / `reroute` pick another logical model, `cap_max_tokens` lowers the output cap,
//! `block` refuses it (`429 policy_blocked`) — and are reported in `x-tollgate-policy`, the
//! ledger row's `policy_actions`, and the decision log (`GET /admin/v1/policies/decisions`).
//! Shadow policies are computed and logged, never applied. Alerts are handed to a background
//! task that POSTs them to their webhook with retries: never on the request path.

use std::time::Duration;

use tokio::sync::mpsc;
use tollgate_policy::rules::{Alert, EvalContext};
use tollgate_types::{ApiError, ErrorCode, LedgerRow};

use crate::Gateway;

/// Alerts waiting for delivery at most; beyond that new ones are dropped with a warning (an
/// alert is a notification, not a ledger row: the decision log keeps the record).
const ALERT_QUEUE: usize = 1024;
const ALERT_ATTEMPTS: u32 = 4;

/// What the policies leave of a request.
pub struct Outcome {
    /// The logical model to serve.
    pub model: String,
    pub cap: Option<u32>,
}

fn note(row: &mut LedgerRow, s: &str) {
    if row.policy_actions.is_empty() {
        row.policy_actions = s.to_string();
    } else {
        row.policy_actions.push(',');
        row.policy_actions.push_str(s);
    }
}

pub fn evaluate(gw: &Gateway, row: &mut LedgerRow, requested: &str) -> Result<Outcome, ApiError> {
    let decision = gw.0.policies.evaluate(&EvalContext {
        attribution: &row.attribution,
        model: requested,
        now_ms: row.started_at_ms,
        budgets: &*gw.0.budgets,
    });
    for alert in decision.alerts.iter().cloned() {
        if gw.0.alerts.try_send(alert).is_err() {
            tracing::warn!(
                "alert queue full: an alert was not delivered (it is in the decision log)"
            );
        }
    }
    for a in &decision.shadow {
        note(row, &format!("shadow:{}/{}:{}", a.policy, a.step, a.action));
    }
    for a in &decision.actions {
        note(row, &format!("{}/{}:{}", a.policy, a.step, a.action));
    }
    if let Some(b) = decision.blocked() {
        return Err(ApiError::new(
            ErrorCode::PolicyBlocked,
            format!("paused by spend policy: {}", b.reason),
        ));
    }
    Ok(Outcome {
        model: decision.model().unwrap_or(requested).to_string(),
        cap: decision.max_tokens(),
    })
}

/// The alert queue's sending half, and the task that delivers alerts.
pub fn alert_channel() -> (mpsc::Sender<Alert>, mpsc::Receiver<Alert>) {
    mpsc::channel(ALERT_QUEUE)
}

/// Delivers alerts: POST the JSON payload to the webhook, retrying with exponential backoff.
pub async fn deliver_alerts(mut rx: mpsc::Receiver<Alert>) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "alert delivery disabled: no HTTP client");
            return;
        }
    };
    while let Some(alert) = rx.recv().await {
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=ALERT_ATTEMPTS {
            let sent = client
                .post(&alert.webhook)
                .json(&alert.payload)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => {
                    tracing::warn!(policy = %alert.policy, status = r.status().as_u16(), attempt, "alert webhook refused")
                }
                Err(e) => {
                    tracing::warn!(policy = %alert.policy, error = %e, attempt, "alert webhook unreachable")
                }
            }
            if attempt < ALERT_ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}
