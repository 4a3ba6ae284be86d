//! Engine tests against a real [`Budgets`] on a [`ManualClock`].

use std::collections::HashMap;
use std::sync::Arc;

use tollgate_types::{Attribution, NanoUsd};

use super::*;
use crate::{Ask, BudgetDef, Budgets, Clock, ManualClock, MemoryStore, Reservation};

const MIN: i64 = 60_000;
const DAY: i64 = 86_400_000;

fn t0() -> i64 {
    // 2026-07-01T00:00:00Z, the start of a 31-day month.
    "2026-07-01T00:00:00Z"
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond()
}

fn usd(x: &str) -> NanoUsd {
    NanoUsd::parse_usd(x).unwrap()
}

struct World {
    clock: Arc<ManualClock>,
    budgets: Budgets,
    policies: Policies,
}

impl World {
    fn new() -> World {
        let clock = Arc::new(ManualClock::new(t0() + DAY));
        let budgets = Budgets::new(Arc::new(MemoryStore::new()), clock.clone());
        let policies = Policies::new(clock.clone());
        World {
            clock,
            budgets,
            policies,
        }
    }

    fn budget(&self, json: &str) {
        self.budgets
            .upsert(BudgetDef::from_json(json).unwrap())
            .unwrap();
    }

    fn policy_yaml(&self, yaml: &str) {
        let d: PolicyDef = serde_yaml_ng::from_str(yaml).unwrap();
        self.policies.upsert(d).unwrap();
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Settled spend for `tenant`, also fed to the burn trackers.
    fn spend(&self, tenant: &str, amount: &str) {
        let a = attr(tenant);
        let r = self.reserve(&a, amount);
        // `None` when no budget matched (nothing was held): fine for policy-only tests.
        let _ = self.budgets.settle(&r, usd(amount));
        self.policies
            .record_spend(&a, "gpt-4o", usd(amount), self.now());
    }

    fn reserve(&self, a: &Attribution, amount: &str) -> Reservation {
        let adm = self.budgets.admit(&Ask {
            attribution: a,
            model: "gpt-4o",
            worst_case: usd(amount),
            minimum: usd(amount),
            now_ms: self.now(),
            ttl_ms: 60_000,
        });
        adm.reservation().cloned().expect("admitted")
    }

    fn eval_model(&self, tenant: &str, model: &str) -> Decision {
        let a = attr(tenant);
        self.policies.evaluate(&EvalContext {
            attribution: &a,
            model,
            now_ms: self.now(),
            budgets: &self.budgets,
        })
    }

    fn eval(&self, tenant: &str) -> Decision {
        self.eval_model(tenant, "gpt-4o")
    }

    fn level(&self, name: &str) -> usize {
        self.policies.state(name).unwrap().level
    }

    fn log(&self, policy: &str) -> Vec<DecisionEntry> {
        self.policies.decisions(
            &DecisionFilter {
                policy: Some(policy.into()),
                ..DecisionFilter::default()
            },
            1_000,
        )
    }
}

fn attr(tenant: &str) -> Attribution {
    Attribution {
        tenant: Some(tenant.into()),
        key_id: Some("k1".into()),
        ..Attribution::default()
    }
}

const ACME_MONTHLY: &str = r#"{"name":"acme-monthly","scope":{"tenant":"acme"},"limit_usd":"100","window":"month","mode":"soft"}"#;

fn ladder(mode: &str) -> String {
    format!(
        r#"
name: acme-ladder
scope: {{tenant: acme}}
budget: acme-monthly
mode: {mode}
hysteresis_pct: 5
steps:
  - when: {{utilization_pct: 70}}
    then: [{{alert: {{webhook: "https://hooks.example/acme"}}}}]
  - when: {{utilization_pct: 85}}
    then: [{{downgrade: {{"gpt-4o": "gpt-4o-mini"}}}}]
  - when: {{utilization_pct: 95}}
    then: [{{cap_max_tokens: 256}}]
  - when: {{utilization_pct: 100}}
    then: [block]
"#
    )
}

fn effects(d: &Decision) -> Vec<String> {
    d.actions.iter().map(|a| a.action.to_string()).collect()
}

#[test]
fn full_ladder_as_spend_rises() {
    let w = World::new();
    w.budget(ACME_MONTHLY);
    w.policy_yaml(&ladder("enforce"));

    w.spend("acme", "60");
    assert!(w.eval("acme").is_empty());
    assert_eq!(w.level("acme-ladder"), 0);

    // 70 %: alert only (not an action on the request).
    w.spend("acme", "10");
    let d = w.eval("acme");
    assert!(d.actions.is_empty());
    assert_eq!(d.alerts.len(), 1);
    assert_eq!(d.alerts[0].webhook, "https://hooks.example/acme");
    assert_eq!(d.alerts[0].step, 1);
    assert_eq!(d.alerts[0].payload["scope_instance"], "tenant=acme");
    assert_eq!(d.alerts[0].payload["reading"]["pct"], "70");
    assert_eq!(d.alerts[0].payload["budget"]["spent"], "70");
    assert_eq!(w.level("acme-ladder"), 1);

    // 85 %: downgrade; another model is left alone.
    w.spend("acme", "15");
    let d = w.eval("acme");
    assert_eq!(effects(&d), ["downgrade=gpt-4o->gpt-4o-mini"]);
    assert_eq!(d.model(), Some("gpt-4o-mini"));
    assert!(
        d.alerts.is_empty(),
        "step 1 alert already fired this window"
    );
    assert!(w.eval_model("acme", "claude").actions.is_empty());

    // 96.2 %: downgrade and cap (cumulative), reason names the level.
    w.spend("acme", "11.2");
    let d = w.eval("acme");
    assert_eq!(
        effects(&d),
        ["downgrade=gpt-4o->gpt-4o-mini", "cap_max_tokens=256"]
    );
    assert_eq!(d.max_tokens(), Some(256));
    assert_eq!(
        d.actions[1].reason,
        "acme-ladder step 3: utilization 96.2% ≥ 95% of acme-monthly"
    );
    assert_eq!(d.actions[0].step, 2);
    assert_eq!(d.actions[1].step, 3);
    assert_eq!(
        d.header_value().unwrap(),
        "acme-ladder/2:downgrade=gpt-4o->gpt-4o-mini, acme-ladder/3:cap_max_tokens=256"
    );

    // 100 %: block wins over everything.
    w.spend("acme", "3.8");
    let d = w.eval("acme");
    assert_eq!(effects(&d), ["block"]);
    assert!(d.blocked().is_some());
    assert_eq!(w.level("acme-ladder"), 4);

    // Other tenants are untouched.
    assert!(w.eval("globex").is_empty());

    // The log: one entry per level change + one alert, newest first.
    let log = w.log("acme-ladder");
    let levels: Vec<(usize, usize)> = log
        .iter()
        .filter(|e| e.kind == EntryKind::LevelChange)
        .map(|e| (e.from_level, e.to_level))
        .collect();
    assert_eq!(levels, [(3, 4), (2, 3), (1, 2), (0, 1)]);
    assert_eq!(log.iter().filter(|e| e.kind == EntryKind::Alert).count(), 1);
    // Entry 0→1 has no request actions; 3→4 lists the ones in force at level 4.
    assert_eq!(log[0].actions.len(), 3);
    assert_eq!(log[0].actions[2].action, Action::Block);
    assert_eq!(log[0].actions[2].applied, 1);
    // At level 4 the downgrade and cap were not applied (block won).
    assert_eq!(log[0].actions[0].applied, 0);
}

#[test]
fn hysteresis_prevents_flapping() {
    let w = World::new();
    w.budget(ACME_MONTHLY);
    w.policy_yaml(&ladder("enforce"));
    let a = attr("acme");

    w.spend("acme", "84");
    assert_eq!(w.level("acme-ladder"), 0);
    let _ = w.eval("acme");
    assert_eq!(w.level("acme-ladder"), 1);
    // Oscillate 84 → 86 → 84 → 86 … with a reservation coming and going.
    for _ in 0..5 {
        let r = w.reserve(&a, "2");
        let d = w.eval("acme");
        assert_eq!(w.level("acme-ladder"), 2);
        assert_eq!(d.model(), Some("gpt-4o-mini"));
        w.budgets.release(&r);
        let d = w.eval("acme");
        assert_eq!(w.level("acme-ladder"), 2, "84% stays at the 85% step");
        assert_eq!(d.model(), Some("gpt-4o-mini"));
        assert!(d.actions[0].reason.contains("80% (85% less 5% hysteresis)"));
    }
    let changes = |w: &World| {
        w.log("acme-ladder")
            .into_iter()
            .filter(|e| e.kind == EntryKind::LevelChange)
            .collect::<Vec<_>>()
    };
    assert_eq!(changes(&w).len(), 2, "0→1, 1→2 only");
    // Downgrade counted once per request that applied it.
    assert_eq!(changes(&w)[0].actions[0].applied, 10);

    // Exactly 80 % still holds; below 80 % steps down to step 1 (70 % still holds).
    w.budget(r#"{"name":"acme-monthly","scope":{"tenant":"acme"},"limit_usd":"105","window":"month","mode":"soft"}"#);
    let _ = w.eval("acme");
    assert_eq!(w.level("acme-ladder"), 2, "80% is not below 80%");
    w.budget(r#"{"name":"acme-monthly","scope":{"tenant":"acme"},"limit_usd":"106","window":"month","mode":"soft"}"#);
    let d = w.eval("acme");
    assert!(d.actions.is_empty());
    assert_eq!(w.level("acme-ladder"), 1);
    let last = &changes(&w)[0];
    assert_eq!((last.from_level, last.to_level), (2, 1));
    assert!(
        last.reason.starts_with(
            "acme-ladder left step 2: utilization 79.24% < 80% (85% less 5% hysteresis)"
        ),
        "{}",
        last.reason
    );
    // Back to 84 %: not enough to re-enter step 2 (needs 85 %).
    w.budget(ACME_MONTHLY);
    let _ = w.eval("acme");
    assert_eq!(w.level("acme-ladder"), 1);
}

#[test]
fn shadow_mode_computes_logs_never_applies() {
    let w = World::new();
    w.budget(ACME_MONTHLY);
    w.policy_yaml(&ladder("shadow"));
    w.spend("acme", "96");
    let d = w.eval("acme");
    assert!(d.actions.is_empty());
    assert!(d.alerts.is_empty(), "shadow alerts are not delivered");
    assert!(d.header_value().is_none());
    let shadow: Vec<String> = d.shadow.iter().map(|a| a.action.to_string()).collect();
    assert_eq!(
        shadow,
        ["downgrade=gpt-4o->gpt-4o-mini", "cap_max_tokens=256"]
    );
    let log = w.log("acme-ladder");
    assert!(log.iter().all(|e| e.shadow));
    let alert = log.iter().find(|e| e.kind == EntryKind::Alert).unwrap();
    assert_eq!(alert.actions[0].applied, 0);
    let change = log
        .iter()
        .find(|e| e.kind == EntryKind::LevelChange)
        .unwrap();
    assert_eq!((change.from_level, change.to_level), (0, 3));
    assert_eq!(change.actions[0].applied, 1);
    // Switching to enforce keeps the level (same steps) and starts applying.
    w.policy_yaml(&ladder("enforce"));
    assert_eq!(w.level("acme-ladder"), 3);
    let d = w.eval("acme");
    assert_eq!(d.actions.len(), 2);
    assert!(d.shadow.is_empty());
    assert_eq!(d.alerts.len(), 1, "shadow never delivered it: re-armed");
    assert!(w.eval("acme").alerts.is_empty());
}

#[test]
fn alerts_once_per_window_and_again_next_window() {
    let w = World::new();
    w.budget(ACME_MONTHLY);
    w.policy_yaml(&ladder("enforce"));
    w.spend("acme", "75");
    let mut fired = 0;
    for _ in 0..10 {
        fired += w.eval("acme").alerts.len();
    }
    assert_eq!(fired, 1);
    // Leaving and re-entering step 1 in the same window does not re-fire.
    w.budget(r#"{"name":"acme-monthly","scope":{"tenant":"acme"},"limit_usd":"200","window":"month","mode":"soft"}"#);
    assert!(w.eval("acme").alerts.is_empty());
    assert_eq!(w.level("acme-ladder"), 0);
    w.budget(ACME_MONTHLY);
    assert!(w.eval("acme").alerts.is_empty());
    assert_eq!(w.level("acme-ladder"), 1);

    // Next month: counters reset, the ladder drops, re-entering fires again.
    w.clock.set(t0() + 31 * DAY + MIN);
    assert!(w.eval("acme").is_empty());
    assert_eq!(w.level("acme-ladder"), 0);
    w.spend("acme", "71");
    let d = w.eval("acme");
    assert_eq!(d.alerts.len(), 1);
    assert!(w.eval("acme").alerts.is_empty());
    let n = w
        .policies
        .decisions(
            &DecisionFilter {
                kind: Some(EntryKind::Alert),
                ..DecisionFilter::default()
            },
            100,
        )
        .len();
    assert_eq!(n, 2);
}

#[test]
fn alert_held_across_window_reset_fires_in_the_new_window() {
    // A burn-rate step reading a calendar budget's window: still in force after the reset.
    let w = World::new();
    w.budget(ACME_MONTHLY);
    w.policy_yaml(
        r#"
name: burn-alert
scope: {tenant: acme}
budget: acme-monthly
mode: enforce
steps:
  - when: {burn_rate: {usd_per_hour: 1, minutes: 60}}
    then: [{alert: {webhook: "https://hooks.example/burn"}}]
"#,
    );
    w.clock.set(t0() + 31 * DAY - 10 * MIN);
    w.spend("acme", "5");
    assert_eq!(w.eval("acme").alerts.len(), 1);
    assert_eq!(w.eval("acme").alerts.len(), 0);
    w.clock.set(t0() + 31 * DAY + MIN);
    assert_eq!(w.eval("acme").alerts.len(), 1, "new budget window");
    assert_eq!(w.eval("acme").alerts.len(), 0);
}

#[test]
fn forecast_exceeds_reroutes() {
    let w = World::new();
    w.budget(ACME_MONTHLY);
    w.policy_yaml(
        r#"
name: acme-forecast
scope: {tenant: acme}
budget: acme-monthly
mode: enforce
steps:
  - when: {forecast_exceeds: true}
    then: [{reroute: {model: cheap-model}}]
"#,
    );
    // Day 10 of 31: $30 → forecast $93 ≤ $100.
    w.clock.set(t0() + 10 * DAY);
    w.spend("acme", "30");
    assert!(w.eval("acme").is_empty());
    // $40 → forecast $124 > $100.
    w.spend("acme", "10");
    let d = w.eval("acme");
    assert_eq!(effects(&d), ["reroute=gpt-4o->cheap-model"]);
    assert_eq!(d.model(), Some("cheap-model"));
    assert!(
        d.actions[0]
            .reason
            .starts_with("acme-forecast step 1: forecast 124 USD at window end > limit 100 USD"),
        "{}",
        d.actions[0].reason
    );
    // Asking for the target model already: no-op, nothing applied.
    assert!(w.eval_model("acme", "cheap-model").actions.is_empty());
    // Later in the month the forecast falls under the limit: stepped down (no margin).
    w.clock.set(t0() + 20 * DAY);
    assert!(w.eval("acme").actions.is_empty());
    assert_eq!(w.level("acme-forecast"), 0);
}

#[test]
fn burn_rate_rises_and_ages_out() {
    let w = World::new();
    w.budget(ACME_MONTHLY);
    w.policy_yaml(
        r#"
name: acme-burn
scope: {tenant: acme}
mode: enforce
hysteresis_pct: 10
steps:
  - when: {burn_rate: {usd_per_hour: 10, minutes: 10}}
    then: [block]
"#,
    );
    w.spend("acme", "1");
    assert!(w.eval("acme").is_empty(), "$6/h");
    w.spend("globex", "5"); // another scope: not counted
    assert!(w.eval("acme").is_empty());
    w.clock.advance(MIN);
    w.spend("acme", "0.8");
    let d = w.eval("acme");
    assert_eq!(effects(&d), ["block"]);
    assert_eq!(
        d.actions[0].reason,
        "acme-burn step 1: burn rate 10.8 USD/h over 10 min ≥ 10 USD/h"
    );
    // The first $1 ages out 10 minutes after its minute: $0.8 → $4.8/h < $9/h.
    w.clock.advance(8 * MIN);
    assert_eq!(effects(&w.eval("acme")), ["block"], "still inside");
    w.clock.advance(MIN);
    assert!(w.eval("acme").is_empty());
    assert_eq!(w.level("acme-burn"), 0);
}

#[test]
fn revenue_share_prorated_to_the_window() {
    let w = World::new();
    w.budget(ACME_MONTHLY);
    w.budget(r#"{"name":"acme-daily","scope":{"tenant":"acme"},"limit_usd":"1000","window":"day","mode":"soft"}"#);
    w.policy_yaml(
        r#"
name: acme-margin
scope: {tenant: acme}
budget: acme-monthly
mode: enforce
steps:
  - when: {revenue_share_pct: 5}
    then: [{cap_max_tokens: 100}]
"#,
    );
    w.policy_yaml(
        r#"
name: acme-margin-daily
scope: {tenant: acme}
budget: acme-daily
mode: shadow
steps:
  - when: {revenue_share_pct: 6}
    then: [block]
"#,
    );
    w.spend("acme", "2");
    // No revenue configured: fail open.
    assert!(w.eval("acme").is_empty());
    w.policies
        .set_revenue(HashMap::from([("acme".to_string(), usd("1000"))]));
    // Month: $2 of $1000 = 0.2 %. Day: $1000 × 1 day ÷ 30.436875 days = $32.855 → 6.08 %.
    let d = w.eval("acme");
    assert!(d.actions.is_empty());
    assert_eq!(d.shadow.len(), 1);
    assert!(
        d.shadow[0].reason.starts_with(
            "acme-margin-daily step 1: AI cost 6.08% of tenant acme's revenue in the window of acme-daily ≥ 6%"
        ),
        "{}",
        d.shadow[0].reason
    );
    w.spend("acme", "48");
    let d = w.eval("acme");
    assert_eq!(d.max_tokens(), Some(100));
}

#[test]
fn multiple_policies_combine_deterministically() {
    let w = World::new();
    let pol = |name: &str, then: &str| {
        format!(
            "name: {name}\nscope: {{tenant: acme}}\nmode: enforce\nsteps:\n  - when: {{burn_rate: {{usd_per_hour: 1, minutes: 60}}}}\n    then: {then}\n"
        )
    };
    // Inserted out of name order on purpose.
    w.policy_yaml(&pol("c-pol", "[{cap_max_tokens: 100}]"));
    w.policy_yaml(&pol(
        "b-pol",
        r#"[{downgrade: {"gpt-4o": "gpt-4o-nano"}}, {cap_max_tokens: 500}]"#,
    ));
    w.policy_yaml(&pol("a-pol", r#"[{downgrade: {"gpt-4o": "gpt-4o-mini"}}]"#));
    w.policy_yaml(&pol("a0-pol", r#"[{downgrade: {"claude": "haiku"}}]"#));
    w.spend("acme", "5");
    let d = w.eval("acme");
    assert_eq!(
        effects(&d),
        ["downgrade=gpt-4o->gpt-4o-mini", "cap_max_tokens=100"]
    );
    assert_eq!(d.actions[0].policy, "a-pol");
    assert_eq!(d.actions[1].policy, "c-pol");
    // Same again: deterministic.
    assert_eq!(w.eval("acme").actions, d.actions);
    // The other map applies to its own model only.
    assert_eq!(w.eval_model("acme", "claude").model(), Some("haiku"));
    // A block anywhere wins.
    w.policy_yaml(&pol("z-pol", "[block]"));
    // A new policy's burn tracker starts empty: only spend from now on counts.
    assert_eq!(effects(&w.eval("acme")).len(), 2);
    w.spend("acme", "5");
    let d = w.eval("acme");
    assert_eq!(effects(&d), ["block"]);
    assert_eq!(d.actions[0].policy, "z-pol");
    // Removing it restores the rest.
    assert!(w.policies.remove("z-pol").is_some());
    assert_eq!(effects(&w.eval("acme")).len(), 2);
}

#[test]
fn within_a_policy_the_most_severe_rewrite_wins() {
    let w = World::new();
    w.policy_yaml(
        r#"
name: p
scope: {}
mode: enforce
steps:
  - when: {burn_rate: {usd_per_hour: 1, minutes: 60}}
    then: [{downgrade: {"gpt-4o": "gpt-4o-mini"}}]
  - when: {burn_rate: {usd_per_hour: 2, minutes: 60}}
    then: [{reroute: {model: local}}]
"#,
    );
    w.spend("acme", "1.5");
    assert_eq!(w.eval("acme").model(), Some("gpt-4o-mini"));
    w.spend("x", "1"); // scope {} counts every tenant
    assert_eq!(w.eval("acme").model(), Some("local"));
}

#[test]
fn unknown_budget_fails_open() {
    let w = World::new();
    w.policy_yaml(&ladder("enforce"));
    assert!(w.eval("acme").is_empty());
    assert_eq!(w.level("acme-ladder"), 0);
}

#[test]
fn decision_log_is_bounded_and_filterable() {
    let clock = Arc::new(ManualClock::new(t0()));
    let p = Policies::with_log_capacity(clock.clone(), 3);
    p.upsert(
        PolicyDef::from_json(
            r#"{"name":"p","scope":{},"mode":"enforce","steps":[{"when":{"burn_rate":{"usd_per_hour":1,"minutes":1}},"then":["block"]}]}"#,
        )
        .unwrap(),
    )
    .unwrap();
    let a = attr("acme");
    let src = |_: &str, _: i64| None;
    for i in 0..5 {
        let now = t0() + i * 2 * MIN;
        p.record_spend(&a, "m", usd("1"), now);
        let _ = p.evaluate(&EvalContext {
            attribution: &a,
            model: "m",
            now_ms: now,
            budgets: &src,
        });
        let _ = p.evaluate(&EvalContext {
            attribution: &a,
            model: "m",
            now_ms: now + MIN,
            budgets: &src,
        });
    }
    let all = p.decisions(&DecisionFilter::default(), 100);
    assert_eq!(all.len(), 3, "bounded");
    assert_eq!(all[0].seq, 9, "10 level changes, newest first");
    assert_eq!(p.decisions(&DecisionFilter::default(), 1).len(), 1);
    let f: DecisionFilter = serde_json::from_str(r#"{"policy":"nope"}"#).unwrap();
    assert!(p.decisions(&f, 100).is_empty());
    let since = DecisionFilter {
        since_ms: Some(t0() + 9 * MIN),
        ..DecisionFilter::default()
    };
    assert_eq!(p.decisions(&since, 100).len(), 1);
}

#[test]
fn replace_all_validates_and_keeps_state() {
    let w = World::new();
    w.budget(ACME_MONTHLY);
    let d: PolicyDef = serde_yaml_ng::from_str(&ladder("enforce")).unwrap();
    w.policies.replace_all(vec![d.clone()]).unwrap();
    w.spend("acme", "90");
    let _ = w.eval("acme");
    assert_eq!(w.level("acme-ladder"), 2);
    // Same definition again: state kept. Duplicate names: rejected, nothing changes.
    w.policies.replace_all(vec![d.clone()]).unwrap();
    assert_eq!(w.level("acme-ladder"), 2);
    let e = w
        .policies
        .replace_all(vec![d.clone(), d.clone()])
        .unwrap_err();
    assert_eq!(e.field, "[1].name");
    assert_eq!(w.policies.defs().len(), 1);
    // Changed steps: fresh ladder.
    let mut d2 = d;
    d2.steps.pop();
    w.policies.replace_all(vec![d2]).unwrap();
    assert_eq!(w.level("acme-ladder"), 0);
    assert_eq!(w.policies.states().len(), 1);
}

#[test]
fn a_hundred_policies() {
    let w = World::new();
    let defs = hundred_policies();
    w.policies.replace_all(defs).unwrap();
    for i in 0..50 {
        w.budget(&format!(
            r#"{{"name":"t{i}-monthly","scope":{{"tenant":"t{i}"}},"limit_usd":"100","window":"month","mode":"soft"}}"#
        ));
    }
    w.spend("t7", "90");
    let d = w.eval("t7");
    assert_eq!(d.model(), Some("gpt-4o-mini"));
    assert!(w.eval("t8").is_empty());
}

/// 100 policies: 50 per-tenant ladders, 49 per-tenant burn guards, one org-wide burn alert.
pub(crate) fn hundred_policies() -> Vec<PolicyDef> {
    let mut v = Vec::new();
    for i in 0..50 {
        v.push(
            serde_yaml_ng::from_str(&ladder("enforce").replace("acme", &format!("t{i}"))).unwrap(),
        );
    }
    for i in 0..49 {
        v.push(
            PolicyDef::from_json(&format!(
                r#"{{"name":"burn-t{i}","scope":{{"tenant":"t{i}"}},"mode":"enforce","steps":[{{"when":{{"burn_rate":{{"usd_per_hour":1000,"minutes":15}}}},"then":["block"]}}]}}"#
            ))
            .unwrap(),
        );
    }
    v.push(
        PolicyDef::from_json(
            r#"{"name":"org-burn","scope":{},"mode":"enforce","steps":[{"when":{"burn_rate":{"usd_per_hour":100000,"minutes":60}},"then":[{"alert":{"webhook":"https://hooks.example/org"}}]}]}"#,
        )
        .unwrap(),
    );
    v
}

#[test]
fn alert_fires_exactly_once_under_concurrency() {
    let w = Arc::new(World::new());
    w.budget(ACME_MONTHLY);
    w.policy_yaml(&ladder("enforce"));
    w.spend("acme", "75");
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let w = w.clone();
            std::thread::spawn(move || (0..200).map(|_| w.eval("acme").alerts.len()).sum::<usize>())
        })
        .collect();
    let fired: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(fired, 1);
    let changes = w
        .log("acme-ladder")
        .into_iter()
        .filter(|e| e.kind == EntryKind::LevelChange)
        .count();
    assert_eq!(changes, 1);
}

#[test]
fn an_open_anomaly_in_scope_fires_its_step() {
    let w = World::new();
    w.policy_yaml(
        r#"
name: acme-spike
scope: {tenant: acme}
mode: enforce
steps:
  - when: {anomaly: {}}
    then: [block]
"#,
    );
    assert!(w.eval("acme").is_empty(), "no anomaly yet");
    let labels = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    // An anomaly of another tenant, or of a scope that does not say which tenant: not ours.
    w.policies.set_open_anomalies(vec![
        labels(&[("tenant", "globex")]),
        labels(&[("model", "gpt-4o")]),
    ]);
    assert!(w.eval("acme").is_empty());
    // One of acme's features spikes: acme's policy sees it.
    w.policies
        .set_open_anomalies(vec![labels(&[("tenant", "acme"), ("feature", "chat")])]);
    let d = w.eval("acme");
    assert!(d.blocked().is_some(), "{d:?}");
    assert!(
        d.actions[0]
            .reason
            .contains("an open spend anomaly in the policy's scope"),
        "{}",
        d.actions[0].reason
    );
    assert!(w.eval("globex").is_empty());
    // Closed again: the ladder steps down.
    w.policies.set_open_anomalies(Vec::new());
    assert!(w.eval("acme").is_empty());
}
