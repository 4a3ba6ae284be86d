//! Spend policies (docs/contracts.md §1 "Policy"): graded ladders of `when → then` steps over
//! budget utilisation, forecast, burn rate and revenue share, with hysteresis, shadow mode,
//! once-per-window alerts and a decision log in which every decision carries its reason.
//!
//! Pure and synchronous, for the request path: the server calls [`Policies::evaluate`] at
//! admission (after [`Budgets::admit`](crate::Budgets::admit)), applies
//! [`Decision::actions`] (block → refuse, cap → clamp `max_tokens`, downgrade/reroute → serve
//! [`Decision::model`]), puts [`Decision::header_value`] in `x-tollgate-policy`, hands
//! [`Decision::alerts`] to a background webhook sender, calls [`Policies::record_spend`] where
//! it settles, and serves `/admin/v1/policies` from [`Policies::upsert`] / `remove` / `get` /
//! `defs` / `states` / [`Policies::decisions`].
//!
//! | file | owns |
//! |---|---|
//! | [`def`] | [`PolicyDef`], [`Step`], [`Trigger`], [`Action`], [`Pct`]: parsing and validation |
//! | [`engine`] | [`Policies`]: catalog, ladder state, evaluation, combining, alerts |
//! | `burn` | per-policy minute buckets for `burn_rate` triggers (bounded by config) |
//! | [`log`] | the bounded decision log ([`DecisionEntry`], [`DecisionFilter`]) |
//!
//! Semantics (ladder, hysteresis, alerts, combining, revenue proration) are documented on
//! [`engine`]. Money is [`NanoUsd`](tollgate_types::NanoUsd), percentages are integer basis
//! points; no floats.

mod burn;
pub mod def;
pub mod engine;
pub mod log;

#[cfg(test)]
mod tests;

pub use def::{
    Action, AlertTarget, BurnRate, MAX_ACTIONS_PER_STEP, MAX_BURN_MINUTES, MAX_STEPS, Pct,
    PolicyDef, PolicyMode, RerouteTarget, Step, Trigger,
};
pub use engine::{
    AVG_MONTH_MS, Alert, AppliedAction, BudgetSource, Decision, Effect, EvalContext, Policies,
    PolicyState,
};
pub use log::{DEFAULT_LOG_CAPACITY, DecisionEntry, DecisionFilter, EntryKind, LoggedAction};
