//! [`Policies`]: the installed policies, their ladder state, burn trackers and decision log,
//! and [`Policies::evaluate`] — the request-path call.
//!
//! # Evaluation, per matching policy
//! 1. **Readings.** Each step's trigger is read once: utilisation / forecast / window from the
//!    named budget's [`BudgetStatus`] (asked through [`BudgetSource`], once per budget name per
//!    evaluation), burn rate from the policy's own tracker, revenue from [`Policies::set_revenue`].
//!    A reading that cannot be made (budget unknown, no revenue configured) does not hold:
//!    policies fail **open** — a missing input never blocks traffic.
//! 2. **Level.** `top` = the highest step whose trigger holds. If `top ≥ previous level` the
//!    level becomes `top` (going up is immediate). Otherwise the level becomes the highest
//!    step `s ≤ previous` that still *holds with hysteresis* (`max` with `top`): for `%`
//!    triggers, value ≥ threshold − `hysteresis_pct` percentage points; for `burn_rate`,
//!    rate ≥ threshold × (100 − `hysteresis_pct`)%; boolean `forecast_exceeds` has no margin
//!    (it holds with hysteresis exactly when it holds on re-check). With 5 % hysteresis a
//!    budget oscillating 84–86 % stays at the 85 % step and leaves it below 80 %.
//! 3. **Actions are cumulative**: a ladder adds severity, it does not lift earlier measures —
//!    at level 3 the non-alert actions of steps 1–3 are in force. Every action carries the
//!    reason of the *level* (`acme-ladder step 3: utilization 96.2% ≥ 95% of acme-monthly`) and
//!    its own step number.
//! 4. **Alerts** fire when their step is in force and has not fired in the current budget
//!    window (calendar budgets: keyed by `window_start_ms`, so a step held across a reset fires
//!    again in the new window). Without a calendar budget (no budget, or a rolling one whose
//!    start moves every instant) an alert fires once per *entry*: it re-arms when the level
//!    drops below its step. Decided under the ladder's lock, so concurrent requests cannot
//!    both fire it. Shadow policies log alerts but never return them for delivery.
//!
//! # Combining enforce-mode policies (deterministic)
//! Policies are visited in **name order**.
//! - **Block wins**: if any action is `block`, `actions` holds only the block(s).
//! - **Smallest cap wins** (ties: the first policy by name).
//! - **One model rewrite**, never chained: the first applicable `downgrade` (the requested
//!   model is in its map) or `reroute` (to a different model), by policy name, then by step
//!   from most to least severe within a policy. `reroute` and `downgrade` compete as equals.
//!
//! Shadow policies' actions are listed in `shadow`, uncombined (each shows what it alone
//! would do) and never in `actions`.
//!
//! # Scope instances
//! A policy's scope is a set of fixed values, so each policy has one scope instance, named by
//! its scope (`tenant=acme`, `*` for `{}`); ladder state and burn buckets are per policy.
//! Replacing a definition keeps its state when scope, budget and steps are unchanged (a mode
//! or hysteresis change keeps the level; shadow → enforce re-arms alerts, which shadow never
//! delivered), else starts from level 0. A new policy's burn tracker starts empty: spend
//! settled before it existed does not count — except at start-up, when every tracker is
//! refilled from the ledger ([`Policies::burn_seeds`], [`Policies::seed_burn`]), so a restart
//! does not reset a burn-rate trigger.
//!
//! # Revenue proration
//! Revenue is configured per tenant per month (`NanoUsd`). For a `month` budget the window's
//! revenue is that figure; for other windows it is `monthly × window length ÷ average
//! Gregorian month (30.436875 days)` — day and week windows use their actual length (23/25 h
//! on DST days), rolling windows their configured length. Cost is the budget's settled `spent`
//! (reservations are not cost yet). No or zero revenue → the trigger does not hold.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use serde::Serialize;
use serde_json::json;
use tollgate_types::{Attribution, NanoUsd};

use super::burn::BurnTracker;
use super::def::{Action, PolicyDef, PolicyMode, Trigger, fmt_bp};
use super::log::{
    DEFAULT_LOG_CAPACITY, DecisionEntry, DecisionFilter, DecisionLog, EntryKind, LoggedAction,
};
use crate::clock::Clock;
use crate::def::{DefError, Window};
use crate::engine::{BudgetStatus, Budgets};
use crate::index::ScopeIndex;

/// Average Gregorian month (365.2425 / 12 days) in ms, for prorating monthly revenue.
pub const AVG_MONTH_MS: i64 = 2_629_746_000;

/// Where [`Policies::evaluate`] reads budget status from. Implemented by [`Budgets`] and by any
/// `Fn(&str, i64) -> Option<BudgetStatus>` closure.
pub trait BudgetSource {
    fn budget_status(&self, name: &str, now_ms: i64) -> Option<BudgetStatus>;
}

impl BudgetSource for Budgets {
    fn budget_status(&self, name: &str, now_ms: i64) -> Option<BudgetStatus> {
        self.status(name, now_ms).ok()
    }
}

impl<F: Fn(&str, i64) -> Option<BudgetStatus>> BudgetSource for F {
    fn budget_status(&self, name: &str, now_ms: i64) -> Option<BudgetStatus> {
        self(name, now_ms)
    }
}

/// One request as policies see it.
pub struct EvalContext<'a> {
    pub attribution: &'a Attribution,
    /// The logical model the client asked for.
    pub model: &'a str,
    pub now_ms: i64,
    pub budgets: &'a dyn BudgetSource,
}

/// What an applied action does to the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Block,
    CapMaxTokens(u32),
    Downgrade { from: String, to: String },
    Reroute { from: String, to: String },
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Effect::Block => f.write_str("block"),
            Effect::CapMaxTokens(n) => write!(f, "cap_max_tokens={n}"),
            Effect::Downgrade { from, to } => write!(f, "downgrade={from}->{to}"),
            Effect::Reroute { from, to } => write!(f, "reroute={from}->{to}"),
        }
    }
}

/// An action applied to (or, in `shadow`, computed for) one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppliedAction {
    pub policy: String,
    /// 1-based step the action belongs to.
    pub step: usize,
    pub action: Effect,
    /// Why the policy is at its level, e.g. `acme-ladder step 3: utilization 96.2% ≥ 95% of
    /// acme-monthly`.
    pub reason: String,
}

/// A notification to deliver off the request path. Returned exactly once.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub policy: String,
    pub step: usize,
    pub webhook: String,
    pub payload: serde_json::Value,
}

/// The outcome of [`Policies::evaluate`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Decision {
    /// Enforce-mode actions after combining (see the module docs): apply all of them.
    pub actions: Vec<AppliedAction>,
    /// Shadow-mode actions: log / report only, never apply.
    pub shadow: Vec<AppliedAction>,
    /// Alerts to deliver (enforce-mode policies only).
    pub alerts: Vec<Alert>,
}

impl Decision {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty() && self.shadow.is_empty() && self.alerts.is_empty()
    }

    /// The request must be refused.
    pub fn blocked(&self) -> Option<&AppliedAction> {
        self.actions.iter().find(|a| a.action == Effect::Block)
    }

    /// Clamp for `max_tokens`, if any.
    pub fn max_tokens(&self) -> Option<u32> {
        self.actions.iter().find_map(|a| match a.action {
            Effect::CapMaxTokens(n) => Some(n),
            _ => None,
        })
    }

    /// The model to serve instead of the requested one, if any.
    pub fn model(&self) -> Option<&str> {
        self.actions.iter().find_map(|a| match &a.action {
            Effect::Downgrade { to, .. } | Effect::Reroute { to, .. } => Some(to.as_str()),
            _ => None,
        })
    }

    /// Value for the `x-tollgate-policy` response header: `policy/step:effect` joined by `, `
    /// (`acme-ladder/2:downgrade=gpt-4o->gpt-4o-mini, acme-ladder/3:cap_max_tokens=256`);
    /// `None` when nothing was applied.
    pub fn header_value(&self) -> Option<String> {
        if self.actions.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .actions
            .iter()
            .map(|a| format!("{}/{}:{}", a.policy, a.step, a.action))
            .collect();
        Some(parts.join(", "))
    }
}

/// A policy's current ladder position (admin `GET /admin/v1/policies/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyState {
    pub name: String,
    pub instance: String,
    pub mode: PolicyMode,
    /// 0 = no step in force.
    pub level: usize,
    pub steps: usize,
}

// ---- compiled form ----------------------------------------------------------------------

#[derive(Debug, Default)]
struct Ladder {
    level: usize,
    /// Per-action application counters of the current level's log entry.
    counts: Option<Arc<[AtomicU64]>>,
    /// Per step: the alert key it last fired for (`None` = armed).
    alerted: Vec<Option<i64>>,
}

#[derive(Debug)]
struct Compiled {
    def: PolicyDef,
    instance: String,
    /// `levels[l]` = the non-alert actions in force at level `l`, as (step index, action index).
    levels: Vec<Vec<(usize, usize)>>,
    ladder: Arc<Mutex<Ladder>>,
    burn: Option<Arc<BurnTracker>>,
}

impl Compiled {
    fn ladder(&self) -> MutexGuard<'_, Ladder> {
        // Every ladder update is a few assignments that leave it consistent.
        self.ladder.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn same_state_shape(&self, def: &PolicyDef) -> bool {
        self.def.scope == def.scope && self.def.budget == def.budget && self.def.steps == def.steps
    }
}

fn instance_of(def: &PolicyDef) -> String {
    let parts: Vec<String> = def
        .scope
        .fields()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if parts.is_empty() {
        "*".to_string()
    } else {
        parts.join(",")
    }
}

fn compile(def: PolicyDef, old: Option<&Arc<Compiled>>) -> Compiled {
    let mut levels = vec![Vec::new()];
    for (si, step) in def.steps.iter().enumerate() {
        let mut l = levels[si].clone();
        for (ai, a) in step.then.iter().enumerate() {
            if !matches!(a, Action::Alert(_)) {
                l.push((si, ai));
            }
        }
        levels.push(l);
    }
    let n = def.steps.len();
    let ladder = match old {
        Some(o) if o.same_state_shape(&def) => {
            if o.def.mode == PolicyMode::Shadow && def.mode == PolicyMode::Enforce {
                // Alerts computed in shadow were never delivered: re-arm them so turning the
                // policy on notifies for the steps already in force.
                let mut l = o.ladder.lock().unwrap_or_else(|p| p.into_inner());
                l.alerted.iter_mut().for_each(|a| *a = None);
            }
            o.ladder.clone()
        }
        _ => Arc::new(Mutex::new(Ladder {
            alerted: vec![None; n],
            ..Ladder::default()
        })),
    };
    let minutes = def.max_burn_minutes();
    let burn = (minutes > 0).then(|| match old.and_then(|o| o.burn.clone()) {
        Some(b) if old.is_some_and(|o| o.def.scope == def.scope) && b.len() == minutes as usize => {
            b
        }
        _ => Arc::new(BurnTracker::new(minutes)),
    });
    Compiled {
        instance: instance_of(&def),
        def,
        levels,
        ladder,
        burn,
    }
}

#[derive(Debug, Default)]
struct Catalog {
    /// Sorted by name: evaluation order is name order.
    policies: Vec<Arc<Compiled>>,
    by_name: HashMap<String, usize>,
    index: ScopeIndex,
}

impl Catalog {
    fn build(mut policies: Vec<Arc<Compiled>>) -> Catalog {
        policies.sort_by(|a, b| a.def.name.cmp(&b.def.name));
        let by_name = policies
            .iter()
            .enumerate()
            .map(|(i, p)| (p.def.name.clone(), i))
            .collect();
        let index = ScopeIndex::build(policies.iter().map(|p| &p.def.scope));
        Catalog {
            policies,
            by_name,
            index,
        }
    }

    fn get(&self, name: &str) -> Option<&Arc<Compiled>> {
        self.by_name.get(name).map(|&i| &self.policies[i])
    }
}

// ---- readings ---------------------------------------------------------------------------

/// A trigger's value at evaluation time.
#[derive(Debug, Clone, Copy)]
enum Reading {
    /// Basis points (`i64::MAX` = unbounded: a zero limit / revenue with spend).
    Bp(i64),
    Bool(bool),
    /// Nano-USD per hour.
    Rate(i64),
    Missing(&'static str),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Test {
    Holds,
    Held,
}

pub(crate) fn ratio_bp(num: i64, den: i64) -> i64 {
    if den <= 0 {
        return if num > 0 { i64::MAX } else { 0 };
    }
    let v = i128::from(num) * 10_000 / i128::from(den);
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn window_revenue(monthly: NanoUsd, st: &BudgetStatus) -> i64 {
    let len = match st.window {
        Window::Month => return monthly.0,
        Window::Rolling { .. } => st.window.rolling_ms().unwrap_or(0),
        _ => st.window_end_ms.saturating_sub(st.window_start_ms),
    };
    let v = i128::from(monthly.0) * i128::from(len) / i128::from(AVG_MONTH_MS);
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Whether an open anomaly's scope (its dimension labels, as `anomalies.by` reports them)
/// falls inside a policy's scope: every dimension the policy's scope sets is a label of the
/// anomaly, with the same value. A policy over everything sees every anomaly.
fn anomaly_in_scope(scope: &crate::Scope, labels: &BTreeMap<String, String>) -> bool {
    [
        ("tenant", &scope.tenant),
        ("feature", &scope.feature),
        ("user", &scope.user),
        ("key_id", &scope.key),
        ("team", &scope.team),
        ("model", &scope.model),
    ]
    .iter()
    .all(|(k, want)| {
        want.as_ref()
            .is_none_or(|w| labels.get(*k).is_some_and(|v| v == w))
    })
}

/// What triggers read besides budgets: published by the gateway, loaded once per request.
struct Facts<'a> {
    revenue: &'a HashMap<String, NanoUsd>,
    anomalies: &'a [BTreeMap<String, String>],
}

fn read(
    t: &Trigger,
    p: &Compiled,
    st: Option<&BudgetStatus>,
    facts: &Facts<'_>,
    now_ms: i64,
) -> Reading {
    let revenue = facts.revenue;
    match t {
        Trigger::Anomaly(_) => Reading::Bool(
            facts
                .anomalies
                .iter()
                .any(|a| anomaly_in_scope(&p.def.scope, a)),
        ),
        Trigger::UtilizationPct(_) => match st {
            Some(s) => Reading::Bp(ratio_bp(s.spent.0.saturating_add(s.reserved.0), s.limit.0)),
            None => Reading::Missing("budget unavailable"),
        },
        Trigger::ForecastExceeds(_) => match st {
            Some(s) => Reading::Bool(s.forecast_at_window_end > s.limit),
            None => Reading::Missing("budget unavailable"),
        },
        Trigger::BurnRate(b) => match &p.burn {
            Some(tr) => Reading::Rate(tr.per_hour(now_ms, b.minutes).0),
            None => Reading::Missing("no burn tracker"),
        },
        Trigger::RevenueSharePct(_) => {
            let Some(s) = st else {
                return Reading::Missing("budget unavailable");
            };
            let tenant = p.def.scope.tenant.as_deref().unwrap_or_default();
            match revenue.get(tenant) {
                Some(r) if r.0 > 0 => {
                    let rev = window_revenue(*r, s);
                    if rev <= 0 {
                        Reading::Missing("no revenue for the window")
                    } else {
                        Reading::Bp(ratio_bp(s.spent.0, rev))
                    }
                }
                _ => Reading::Missing("no revenue configured for the tenant"),
            }
        }
    }
}

fn test(t: &Trigger, r: Reading, hysteresis_bp: i64, kind: Test) -> bool {
    let h = if kind == Test::Held { hysteresis_bp } else { 0 };
    match (t, r) {
        (Trigger::UtilizationPct(p) | Trigger::RevenueSharePct(p), Reading::Bp(v)) => {
            v >= p.0.saturating_sub(h)
        }
        (Trigger::ForecastExceeds(_) | Trigger::Anomaly(_), Reading::Bool(b)) => b,
        (Trigger::BurnRate(b), Reading::Rate(v)) => {
            i128::from(v) * 10_000 >= i128::from(b.usd_per_hour.0) * i128::from(10_000 - h)
        }
        _ => false,
    }
}

/// `utilization 96.2% ≥ 95% of acme-monthly` and friends. `held` describes the hysteresis
/// margin; `holds = false` renders the failing comparison.
fn explain(p: &Compiled, si: usize, r: Reading, st: Option<&BudgetStatus>, kind: Test) -> String {
    let t = &p.def.steps[si].when;
    let h = p.def.hysteresis_pct.0;
    let holds = test(t, r, h, kind);
    let budget = p.def.budget.as_deref().unwrap_or("-");
    let pct_threshold = |thr: i64| {
        if kind == Test::Held && h > 0 {
            format!(
                "{}% ({}% less {}% hysteresis)",
                fmt_bp(thr.saturating_sub(h)),
                fmt_bp(thr),
                fmt_bp(h)
            )
        } else {
            format!("{}%", fmt_bp(thr))
        }
    };
    let op = if holds { "≥" } else { "<" };
    match (t, r) {
        (_, Reading::Missing(why)) => format!("{} not evaluated: {why}", t.kind()),
        (Trigger::UtilizationPct(thr), Reading::Bp(v)) => format!(
            "utilization {}% {op} {} of {budget}",
            fmt_bp(v),
            pct_threshold(thr.0)
        ),
        (Trigger::RevenueSharePct(thr), Reading::Bp(v)) => format!(
            "AI cost {}% of tenant {}'s revenue in the window of {budget} {op} {}",
            fmt_bp(v),
            p.def.scope.tenant.as_deref().unwrap_or("?"),
            pct_threshold(thr.0)
        ),
        (Trigger::Anomaly(_), Reading::Bool(b)) => {
            if b {
                "an open spend anomaly in the policy's scope".to_string()
            } else {
                "no open spend anomaly in the policy's scope".to_string()
            }
        }
        (Trigger::ForecastExceeds(_), Reading::Bool(b)) => {
            let (f, l) = st
                .map(|s| (s.forecast_at_window_end, s.limit))
                .unwrap_or_default();
            format!(
                "forecast {} USD at window end {} limit {} USD of {budget}",
                f,
                if b { ">" } else { "≤" },
                l
            )
        }
        (Trigger::BurnRate(b), Reading::Rate(v)) => {
            let thr = if kind == Test::Held && h > 0 {
                let t = i128::from(b.usd_per_hour.0) * i128::from(10_000 - h) / 10_000;
                format!(
                    "{} USD/h ({} less {}% hysteresis)",
                    NanoUsd(i64::try_from(t).unwrap_or(i64::MAX)),
                    b.usd_per_hour,
                    fmt_bp(h)
                )
            } else {
                format!("{} USD/h", b.usd_per_hour)
            };
            format!(
                "burn rate {} USD/h over {} min {op} {thr}",
                NanoUsd(v),
                b.minutes
            )
        }
        _ => format!("{} not evaluated", t.kind()),
    }
}

fn reading_json(r: Reading) -> serde_json::Value {
    match r {
        Reading::Bp(v) if v == i64::MAX => json!({"pct": "inf"}),
        Reading::Bp(v) => json!({ "pct": fmt_bp(v) }),
        Reading::Bool(b) => json!({ "value": b }),
        Reading::Rate(v) => json!({ "usd_per_hour": NanoUsd(v) }),
        Reading::Missing(why) => json!({ "missing": why }),
    }
}

// ---- the engine -------------------------------------------------------------------------

/// Installed policies and their state. Cheap to share (`Arc<Policies>`); every method takes
/// `&self`. Definitions are swapped atomically (readers never lock the catalog).
pub struct Policies {
    catalog: ArcSwap<Catalog>,
    /// Serialises definition writers so two admin edits cannot lose one another.
    writer: Mutex<()>,
    clock: Arc<dyn Clock>,
    revenue: ArcSwap<HashMap<String, NanoUsd>>,
    /// Scopes with an open spend anomaly, published by the gateway's anomaly watch.
    anomalies: ArcSwap<Vec<BTreeMap<String, String>>>,
    log: DecisionLog,
}

impl fmt::Debug for Policies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policies")
            .field("policies", &self.catalog.load().policies.len())
            .field("log_entries", &self.log.len())
            .finish()
    }
}

/// A candidate enforce-mode action before combining.
struct Cand {
    applied: AppliedAction,
    counter: Option<(Arc<[AtomicU64]>, usize)>,
}

fn bump(c: &Option<(Arc<[AtomicU64]>, usize)>) {
    if let Some((counts, i)) = c
        && let Some(a) = counts.get(*i)
    {
        a.fetch_add(1, Ordering::Relaxed);
    }
}

impl Policies {
    /// No policies; decision log of [`DEFAULT_LOG_CAPACITY`] entries.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Policies::with_log_capacity(clock, DEFAULT_LOG_CAPACITY)
    }

    pub fn with_log_capacity(clock: Arc<dyn Clock>, log_capacity: usize) -> Self {
        Policies {
            catalog: ArcSwap::from_pointee(Catalog::default()),
            writer: Mutex::new(()),
            clock,
            revenue: ArcSwap::from_pointee(HashMap::new()),
            anomalies: ArcSwap::from_pointee(Vec::new()),
            log: DecisionLog::new(log_capacity),
        }
    }

    /// The engine's clock, Unix ms (for callers building an [`EvalContext`]).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- definitions -------------------------------------------------------------------

    /// Replaces every definition (start-up, config reload). All-or-nothing; errors are
    /// prefixed with the definition's position (`[3].steps[0].then: …`).
    pub fn replace_all(&self, defs: Vec<PolicyDef>) -> Result<(), DefError> {
        let mut seen = HashMap::new();
        for (i, d) in defs.iter().enumerate() {
            d.validate()
                .map_err(|e| DefError::new(format!("[{i}].{}", e.field), e.reason))?;
            if let Some(j) = seen.insert(d.name.as_str(), i) {
                return Err(DefError::new(
                    format!("[{i}].name"),
                    format!("duplicate policy name '{}' (also at [{j}])", d.name),
                ));
            }
        }
        let _w = self.write_lock();
        let old = self.catalog.load_full();
        let compiled = defs
            .into_iter()
            .map(|d| {
                let o = old.get(&d.name);
                Arc::new(compile(d, o))
            })
            .collect();
        self.catalog.store(Arc::new(Catalog::build(compiled)));
        Ok(())
    }

    /// Adds a policy or replaces the one with the same name; `Ok(true)` when created.
    pub fn upsert(&self, def: PolicyDef) -> Result<bool, DefError> {
        def.validate()?;
        let _w = self.write_lock();
        let old = self.catalog.load_full();
        let prev = old.get(&def.name);
        let created = prev.is_none();
        let c = Arc::new(compile(def, prev));
        let mut list: Vec<Arc<Compiled>> = old
            .policies
            .iter()
            .filter(|p| p.def.name != c.def.name)
            .cloned()
            .collect();
        list.push(c);
        self.catalog.store(Arc::new(Catalog::build(list)));
        Ok(created)
    }

    /// Deletes a policy (and its state), returning its definition.
    pub fn remove(&self, name: &str) -> Option<PolicyDef> {
        let _w = self.write_lock();
        let old = self.catalog.load_full();
        let removed = old.get(name)?.def.clone();
        let list = old
            .policies
            .iter()
            .filter(|p| p.def.name != name)
            .cloned()
            .collect();
        self.catalog.store(Arc::new(Catalog::build(list)));
        Some(removed)
    }

    pub fn get(&self, name: &str) -> Option<PolicyDef> {
        self.catalog.load().get(name).map(|c| c.def.clone())
    }

    /// Every definition, in name order.
    pub fn defs(&self) -> Vec<PolicyDef> {
        self.catalog
            .load()
            .policies
            .iter()
            .map(|c| c.def.clone())
            .collect()
    }

    /// Current level of every policy, in name order.
    pub fn states(&self) -> Vec<PolicyState> {
        self.catalog
            .load()
            .policies
            .iter()
            .map(|c| PolicyState {
                name: c.def.name.clone(),
                instance: c.instance.clone(),
                mode: c.def.mode,
                level: c.ladder().level,
                steps: c.def.steps.len(),
            })
            .collect()
    }

    /// Current level of one policy.
    pub fn state(&self, name: &str) -> Option<PolicyState> {
        let cat = self.catalog.load();
        let c = cat.get(name)?;
        Some(PolicyState {
            name: c.def.name.clone(),
            instance: c.instance.clone(),
            mode: c.def.mode,
            level: c.ladder().level,
            steps: c.def.steps.len(),
        })
    }

    /// Whether any installed policy has an `anomaly` step (so the gateway need only watch
    /// for anomalies when someone acts on them).
    pub fn uses_anomalies(&self) -> bool {
        self.catalog.load().policies.iter().any(|p| {
            p.def
                .steps
                .iter()
                .any(|s| matches!(s.when, Trigger::Anomaly(_)))
        })
    }

    /// Replaces the set of open spend anomalies (each a scope's labels, e.g.
    /// `{tenant: acme}`), which `anomaly` triggers read.
    pub fn set_open_anomalies(&self, open: Vec<BTreeMap<String, String>>) {
        self.anomalies.store(Arc::new(open));
    }

    /// Replaces the tenants' revenue (config `tenants`), in nano-USD **per month**.
    pub fn set_revenue(&self, monthly: HashMap<String, NanoUsd>) {
        self.revenue.store(Arc::new(monthly));
    }

    // ---- restart -----------------------------------------------------------------------

    /// What to read from the ledger so burn-rate triggers survive a restart: for every policy
    /// with a burn tracker, its name, scope and the start of the longest window it reads
    /// (`now_ms` − its longest `burn_rate` window). Feed the minute sums to
    /// [`Policies::seed_burn`].
    pub fn burn_seeds(&self, now_ms: i64) -> Vec<(String, crate::Scope, i64)> {
        let cat = self.catalog.load();
        cat.policies
            .iter()
            .filter(|p| p.burn.is_some())
            .map(|p| {
                let minutes = i64::from(p.def.max_burn_minutes());
                (
                    p.def.name.clone(),
                    p.def.scope.clone(),
                    now_ms - minutes * 60_000,
                )
            })
            .collect()
    }

    /// Adds spend the ledger holds (`(minute start ms, amount)`) to policy `name`'s burn
    /// tracker; a name without one is ignored.
    pub fn seed_burn(&self, name: &str, minutes: &[(i64, NanoUsd)]) {
        let cat = self.catalog.load();
        if let Some(b) = cat
            .policies
            .iter()
            .find(|p| p.def.name == name)
            .and_then(|p| p.burn.as_ref())
        {
            for &(at_ms, amount) in minutes {
                b.record(amount, at_ms);
            }
        }
    }

    // ---- inputs ------------------------------------------------------------------------

    /// Feeds settled spend to the burn trackers of every policy whose scope matches (call it
    /// where budgets are settled). Cheap: an index lookup and one short lock per matching
    /// policy with a burn trigger.
    pub fn record_spend(&self, a: &Attribution, model: &str, amount: NanoUsd, at_ms: i64) {
        let cat = self.catalog.load();
        cat.index.candidates(a, model, |i| {
            if let Some(p) = cat.policies.get(i)
                && let Some(b) = &p.burn
                && p.def.scope.matches(a, model)
            {
                b.record(amount, at_ms);
            }
        });
    }

    // ---- evaluation --------------------------------------------------------------------

    /// Evaluates every matching policy for one request: updates ladder levels, logs level
    /// changes and alerts, and returns the combined decision. See the module docs.
    pub fn evaluate(&self, ctx: &EvalContext<'_>) -> Decision {
        let cat = self.catalog.load();
        let mut matched: Vec<usize> = Vec::new();
        cat.index.candidates(ctx.attribution, ctx.model, |i| {
            if cat
                .policies
                .get(i)
                .is_some_and(|p| p.def.scope.matches(ctx.attribution, ctx.model))
            {
                matched.push(i);
            }
        });
        let mut decision = Decision::default();
        if matched.is_empty() {
            return decision;
        }
        // Catalog order is name order: sorting indices gives the documented precedence.
        matched.sort_unstable();
        let revenue = self.revenue.load();
        let anomalies = self.anomalies.load();
        let facts = Facts {
            revenue: &revenue,
            anomalies: &anomalies,
        };
        let mut statuses: Vec<(&str, Option<BudgetStatus>)> = Vec::new();
        let mut cands: Vec<Cand> = Vec::new();

        for &pi in &matched {
            let p = &cat.policies[pi];
            let st_idx =
                p.def
                    .budget
                    .as_deref()
                    .map(|b| match statuses.iter().position(|(n, _)| *n == b) {
                        Some(i) => i,
                        None => {
                            statuses.push((b, ctx.budgets.budget_status(b, ctx.now_ms)));
                            statuses.len() - 1
                        }
                    });
            let st = st_idx.and_then(|i| statuses[i].1.as_ref());
            self.evaluate_one(p, st, &facts, ctx, &mut cands, &mut decision);
        }
        combine(cands, &mut decision);
        decision
    }

    fn evaluate_one(
        &self,
        p: &Compiled,
        st: Option<&BudgetStatus>,
        facts: &Facts<'_>,
        ctx: &EvalContext<'_>,
        cands: &mut Vec<Cand>,
        decision: &mut Decision,
    ) {
        let steps = &p.def.steps;
        let n = steps.len();
        let h = p.def.hysteresis_pct.0;
        // Up to MAX_STEPS readings on the stack.
        let mut readings = [Reading::Missing(""); super::def::MAX_STEPS];
        for (r, s) in readings.iter_mut().zip(steps) {
            *r = read(&s.when, p, st, facts, ctx.now_ms);
        }
        let holds = |s: usize| test(&steps[s - 1].when, readings[s - 1], h, Test::Holds);
        let held = |s: usize| test(&steps[s - 1].when, readings[s - 1], h, Test::Held);
        let top = (1..=n).rev().find(|&s| holds(s)).unwrap_or(0);
        let shadow = p.def.mode == PolicyMode::Shadow;

        let mut lad = p.ladder();
        if lad.alerted.len() != n {
            lad.alerted = vec![None; n];
        }
        let prev = lad.level.min(n);
        let level = if top >= prev {
            top
        } else {
            ((top + 1)..=prev).rev().find(|&s| held(s)).unwrap_or(top)
        };
        if level == 0 && prev == 0 {
            return; // the common case: nothing in force, nothing to log
        }
        let level_reason = if level == 0 {
            String::new()
        } else {
            let kind = if holds(level) {
                Test::Holds
            } else {
                Test::Held
            };
            format!(
                "{} step {level}: {}",
                p.def.name,
                explain(p, level - 1, readings[level - 1], st, kind)
            )
        };

        if level != prev {
            let reason = if level > prev {
                level_reason.clone()
            } else {
                let left = format!(
                    "{} left step {prev}: {}",
                    p.def.name,
                    explain(p, prev - 1, readings[prev - 1], st, Test::Held)
                );
                if level == 0 {
                    left
                } else {
                    format!("{left}; now {level_reason}")
                }
            };
            let in_force = &p.levels[level];
            let counts: Arc<[AtomicU64]> = in_force.iter().map(|_| AtomicU64::new(0)).collect();
            let actions = in_force
                .iter()
                .map(|&(si, ai)| LoggedAction {
                    step: si + 1,
                    action: steps[si].then[ai].clone(),
                    applied: 0,
                })
                .collect();
            self.log.push(
                DecisionEntry {
                    seq: 0,
                    at_ms: ctx.now_ms,
                    policy: p.def.name.clone(),
                    instance: p.instance.clone(),
                    kind: EntryKind::LevelChange,
                    from_level: prev,
                    to_level: level,
                    reason,
                    shadow,
                    actions,
                },
                counts.clone(),
            );
            lad.counts = (level > 0).then_some(counts);
            lad.level = level;
        }

        // Alerts: keyed by the calendar window, else re-armed when the level drops below.
        let calendar_key = st
            .filter(|s| s.window.is_calendar())
            .map(|s| s.window_start_ms);
        let key = calendar_key.unwrap_or(i64::MIN);
        if calendar_key.is_none() {
            for a in lad.alerted.iter_mut().skip(level) {
                *a = None;
            }
        }
        for si in 0..level {
            if lad.alerted[si] == Some(key) {
                continue;
            }
            let mut fired = false;
            for a in &steps[si].then {
                let Action::Alert(target) = a else { continue };
                fired = true;
                let payload = json!({
                    "policy": p.def.name,
                    "step": si + 1,
                    "level": level,
                    "mode": p.def.mode,
                    "scope_instance": p.instance,
                    "scope": p.def.scope,
                    "trigger": p.def.steps[si].when,
                    "reading": reading_json(readings[si]),
                    "reason": level_reason,
                    "budget": st,
                    "at_ms": ctx.now_ms,
                    "at": jiff::Timestamp::from_millisecond(ctx.now_ms)
                        .map(|t| t.to_string())
                        .unwrap_or_default(),
                    "shadow": shadow,
                });
                let counts: Arc<[AtomicU64]> = Arc::from(vec![AtomicU64::new(u64::from(!shadow))]);
                self.log.push(
                    DecisionEntry {
                        seq: 0,
                        at_ms: ctx.now_ms,
                        policy: p.def.name.clone(),
                        instance: p.instance.clone(),
                        kind: EntryKind::Alert,
                        from_level: prev,
                        to_level: level,
                        reason: level_reason.clone(),
                        shadow,
                        actions: vec![LoggedAction {
                            step: si + 1,
                            action: a.clone(),
                            applied: 0,
                        }],
                    },
                    counts,
                );
                if !shadow {
                    decision.alerts.push(Alert {
                        policy: p.def.name.clone(),
                        step: si + 1,
                        webhook: target.webhook.clone(),
                        payload,
                    });
                }
            }
            if fired {
                lad.alerted[si] = Some(key);
            }
        }

        let counts = lad.counts.clone();
        drop(lad);
        if level == 0 {
            return;
        }
        for (k, &(si, ai)) in p.levels[level].iter().enumerate() {
            let effect = match &steps[si].then[ai] {
                Action::Block => Effect::Block,
                Action::CapMaxTokens(n) => Effect::CapMaxTokens(*n),
                Action::Downgrade(map) => match map.get(ctx.model) {
                    Some(to) => Effect::Downgrade {
                        from: ctx.model.to_string(),
                        to: to.clone(),
                    },
                    None => continue,
                },
                Action::Reroute(r) if r.model != ctx.model => Effect::Reroute {
                    from: ctx.model.to_string(),
                    to: r.model.clone(),
                },
                Action::Reroute(_) | Action::Alert(_) => continue,
            };
            let applied = AppliedAction {
                policy: p.def.name.clone(),
                step: si + 1,
                action: effect,
                reason: level_reason.clone(),
            };
            let counter = counts.clone().map(|c| (c, k));
            if shadow {
                bump(&counter);
                decision.shadow.push(applied);
            } else {
                // Pushed in policy-name order (the caller visits policies in that order);
                // `combine` relies on it.
                cands.push(Cand { applied, counter });
            }
        }
    }

    // ---- reporting ---------------------------------------------------------------------

    /// Decision-log entries matching `filter`, newest first, at most `limit`.
    pub fn decisions(&self, filter: &DecisionFilter, limit: usize) -> Vec<DecisionEntry> {
        self.log.query(filter, limit)
    }
}

/// Applies the combining rules of the module docs to enforce-mode candidates.
fn combine(cands: Vec<Cand>, decision: &mut Decision) {
    if cands.is_empty() {
        return;
    }
    if cands.iter().any(|c| c.applied.action == Effect::Block) {
        for c in cands {
            if c.applied.action == Effect::Block {
                bump(&c.counter);
                decision.actions.push(c.applied);
            }
        }
        return;
    }
    // Model rewrite: first policy (candidates are pushed in policy order), then most severe
    // step within it.
    let mut model: Option<&Cand> = None;
    let mut cap: Option<&Cand> = None;
    for c in &cands {
        match c.applied.action {
            Effect::Downgrade { .. } | Effect::Reroute { .. } => {
                let better = match model {
                    None => true,
                    Some(m) => {
                        m.applied.policy == c.applied.policy && c.applied.step > m.applied.step
                    }
                };
                if better {
                    model = Some(c);
                }
            }
            Effect::CapMaxTokens(n) => {
                if cap.is_none_or(|k| matches!(k.applied.action, Effect::CapMaxTokens(m) if n < m))
                {
                    cap = Some(c);
                }
            }
            Effect::Block => {}
        }
    }
    for c in [model, cap].into_iter().flatten() {
        bump(&c.counter);
        decision.actions.push(c.applied.clone());
    }
}
