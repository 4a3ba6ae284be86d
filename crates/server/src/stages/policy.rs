//! Stage 5, spend policies: graded actions before overspend (`docs/contracts.md` §1, "Policy").
//!
//! Every policy whose scope matches is evaluated (`tollgate_policy::rules::Policies::evaluate`):
//! a ladder of triggers (budget utilisation, forecast, burn rate, revenue share) and actions.
//! Applied actions change the request — `downgrade` / `reroute` pick another logical model,
//! `cap_max_tokens` lowers the output cap, `block` refuses it (`429 policy_blocked`) — and are
//! recorded as [`PolicyAction::Policy`] (shown in `x-tollgate-policy`), and in the decision
//! log. Shadow policies are computed and recorded, never applied. Alerts go to a bounded queue
//! drained by `crate::background`: never delivered on the request path.

use tollgate_policy::rules::{AppliedAction, EvalContext};
use tollgate_types::{ApiError, ErrorCode, LedgerRow, PolicyAction};

use crate::gateway::Gateway;

/// What the policies leave of a request.
pub(crate) struct Steer {
    /// The logical model to serve: the requested one, or a downgrade / reroute target.
    pub(crate) model: String,
    /// An output cap a policy imposed.
    pub(crate) cap: Option<u32>,
}

fn action(a: &AppliedAction, shadow: bool) -> PolicyAction {
    PolicyAction::Policy {
        policy: a.policy.clone(),
        step: a.step,
        effect: a.action.to_string(),
        shadow,
    }
}

pub(crate) fn evaluate(
    gw: &Gateway,
    row: &mut LedgerRow,
    requested: &str,
) -> Result<Steer, ApiError> {
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
        row.policy_actions.push(action(a, true));
    }
    for a in &decision.actions {
        row.policy_actions.push(action(a, false));
    }
    if let Some(b) = decision.blocked() {
        return Err(ApiError::new(
            ErrorCode::PolicyBlocked,
            format!("paused by spend policy: {}", b.reason),
        ));
    }
    Ok(Steer {
        model: decision.model().unwrap_or(requested).to_string(),
        cap: decision.max_tokens(),
    })
}

/// Refills every burn-rate tracker from the ledger's minute sums of its scope, so a restart
/// does not reset a burn-rate trigger. Blocking (SQL): call at start-up, after the ledger has
/// replayed its spill file and recorded interrupted requests. Returns how many were seeded.
pub fn seed_burn_from_ledger(
    policies: &tollgate_policy::rules::Policies,
    store: &tollgate_store::Store,
    now_ms: i64,
) -> Result<usize, tollgate_store::StoreError> {
    let seeds = policies.burn_seeds(now_ms);
    for (name, scope, from_ms) in &seeds {
        let filter = super::budget::scope_filter(scope, *from_ms, now_ms.saturating_add(1));
        policies.seed_burn(name, &store.cost_buckets(&filter, 60_000)?);
    }
    Ok(seeds.len())
}
