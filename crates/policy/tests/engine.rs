//! Engine behaviour: matching, modes, fitting, the reservation life cycle, definition changes at
//! runtime, rebuild from the ledger, and fail-closed/fail-open with a failing store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may panic

use std::sync::Arc;

use proptest::prelude::*;
use tollgate_policy::{
    Admission, Ask, BudgetDef, BudgetError, Budgets, CounterKey, CounterStore, Counts, Entry,
    Grant, ManualClock, MemoryStore, Refusal, ReservationState, SeedSpend,
};
use tollgate_types::{Attribution, NanoUsd};

const T0: i64 = 1_783_296_000_000; // Monday 2026-07-06 00:00 UTC

fn usd(s: &str) -> NanoUsd {
    NanoUsd::parse_usd(s).unwrap()
}

fn def(json: &str) -> BudgetDef {
    BudgetDef::from_json(json).unwrap()
}

fn engine(defs: &[&str]) -> (Budgets, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let e = Budgets::new(Arc::new(MemoryStore::new()), clock.clone());
    e.replace_all(defs.iter().map(|j| def(j)).collect())
        .unwrap();
    (e, clock)
}

fn attr(tenant: Option<&str>, feature: Option<&str>) -> Attribution {
    Attribution {
        tenant: tenant.map(Into::into),
        feature: feature.map(Into::into),
        key_id: Some("key-1".into()),
        ..Attribution::default()
    }
}

fn ask<'a>(a: &'a Attribution, worst: &str, minimum: &str) -> Ask<'a> {
    Ask {
        attribution: a,
        model: "gpt-4o",
        worst_case: usd(worst),
        minimum: usd(minimum),
        now_ms: T0,
        ttl_ms: 60_000,
    }
}

const ORG: &str = r#"{"name":"org","scope":{},"limit_usd":"100","window":"month","mode":"hard"}"#;
const ACME: &str =
    r#"{"name":"acme","scope":{"tenant":"acme"},"limit_usd":"10","window":"month","mode":"hard"}"#;
const ACME_SEARCH: &str = r#"{"name":"acme-search","scope":{"tenant":"acme","feature":"search"},"limit_usd":"1","window":"day","mode":"hard"}"#;

#[test]
fn reserves_on_every_matching_budget_and_nothing_else() {
    let (e, _) = engine(&[ORG, ACME, ACME_SEARCH]);
    let a = attr(Some("acme"), Some("search"));
    let adm = e.admit(&ask(&a, "0.5", "0.5"));
    let r = adm.reservation().unwrap();
    let mut names: Vec<&str> = r.budgets().iter().map(|b| &**b).collect();
    names.sort();
    assert_eq!(names, ["acme", "acme-search", "org"]);
    let b = attr(Some("beta"), Some("search"));
    let adm = e.admit(&ask(&b, "0.5", "0.5"));
    let names: Vec<&str> = adm
        .reservation()
        .unwrap()
        .budgets()
        .iter()
        .map(|b| &**b)
        .collect();
    assert_eq!(names, ["org"]);
    assert_eq!(e.status("org", T0).unwrap().reserved, usd("1"));
    assert_eq!(e.status("acme", T0).unwrap().reserved, usd("0.5"));
}

#[test]
fn no_matching_budget_admits_without_holding_anything() {
    let (e, _) = engine(&[ACME]);
    let a = attr(None, None);
    let adm = e.admit(&ask(&a, "5", "5"));
    let r = adm.reservation().unwrap();
    assert!(r.entries().is_empty());
    assert_eq!(e.live_count(), 0);
    assert!(e.settle(r, usd("5")).is_some());
    assert!(e.settle(r, usd("5")).is_none());
}

#[test]
fn the_tightest_hard_budget_denies_and_nothing_is_reserved() {
    let (e, _) = engine(&[ORG, ACME, ACME_SEARCH]);
    let a = attr(Some("acme"), Some("search"));
    match e.admit(&ask(&a, "1.5", "1.5")) {
        Admission::Denied {
            budget, remaining, ..
        } => {
            assert_eq!(&*budget, "acme-search");
            assert_eq!(remaining, usd("1"));
        }
        other => panic!("{other:?}"),
    }
    for n in ["org", "acme", "acme-search"] {
        assert_eq!(e.status(n, T0).unwrap().reserved, NanoUsd::ZERO, "{n}");
    }
}

#[test]
fn fitting_reserves_what_remains_when_it_covers_the_minimum() {
    let (e, _) = engine(&[ORG, ACME, ACME_SEARCH]);
    let a = attr(Some("acme"), Some("search"));
    let first = e.admit(&ask(&a, "0.7", "0.7"));
    assert!(matches!(first, Admission::Admitted { .. }));
    match e.admit(&ask(&a, "0.7", "0.1")) {
        Admission::Fitted {
            reservation,
            allowed,
            ..
        } => {
            assert_eq!(allowed, usd("0.3"));
            assert_eq!(reservation.amount(), usd("0.3"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        e.status("acme-search", T0).unwrap().remaining,
        NanoUsd::ZERO
    );
    // Below the minimum: denied.
    assert!(matches!(
        e.admit(&ask(&a, "0.7", "0.1")),
        Admission::Denied { .. }
    ));
}

#[test]
fn soft_and_shadow_budgets_never_deny_but_are_tracked_and_reported() {
    let soft = r#"{"name":"acme-soft","scope":{"tenant":"acme"},"limit_usd":"1","window":"month","mode":"soft"}"#;
    let shadow = r#"{"name":"acme-shadow","scope":{"tenant":"acme"},"limit_usd":"2","window":"month","mode":"shadow"}"#;
    let (e, _) = engine(&[soft, shadow]);
    let a = attr(Some("acme"), None);
    let adm = e.admit(&ask(&a, "0.8", "0.1"));
    assert!(adm.advisory().unwrap().is_empty());
    e.settle(adm.reservation().unwrap(), usd("0.8")).unwrap();

    // Soft: 0.8 + 0.5 > 1 → exceeded. Shadow: room 1.2 ≥ 0.5 → fine.
    let adm = e.admit(&ask(&a, "0.5", "0.1"));
    let adv = adm.advisory().unwrap();
    assert!(matches!(adm, Admission::Admitted { .. }));
    assert_eq!(adv.soft_exceeded, vec![Arc::from("acme-soft")]);
    assert!(adv.would_deny.is_empty() && adv.would_fit.is_empty());

    // Shadow room is now 0.7: a 1.0 worst case with a 0.5 minimum would have been fitted,
    // with a 0.9 minimum denied. Neither is applied.
    let adm = e.admit(&ask(&a, "1", "0.5"));
    assert_eq!(
        adm.advisory().unwrap().would_fit,
        vec![Arc::from("acme-shadow")]
    );
    assert_eq!(adm.reservation().unwrap().amount(), usd("1"));
    let adm = e.admit(&ask(&a, "1", "0.9"));
    assert!(matches!(adm, Admission::Admitted { .. }));
    assert_eq!(
        adm.advisory().unwrap().would_deny,
        vec![Arc::from("acme-shadow")]
    );
    // Both track everything held.
    assert_eq!(e.status("acme-shadow", T0).unwrap().reserved, usd("2.5"));
    assert_eq!(e.status("acme-soft", T0).unwrap().spent, usd("0.8"));
}

#[test]
fn settle_charges_the_actual_even_above_the_reservation_and_reports_it() {
    let (e, _) = engine(&[ACME]);
    let a = attr(Some("acme"), None);
    let adm = e.admit(&ask(&a, "1", "1"));
    let r = adm.reservation().unwrap();
    let s = e.settle(r, usd("1.25")).unwrap();
    assert_eq!(
        (s.released, s.charged, s.excess, s.late),
        (usd("1"), usd("1.25"), usd("0.25"), false)
    );
    assert_eq!(e.status("acme", T0).unwrap().spent, usd("1.25"));
    // Idempotent: a second settle or a release changes nothing.
    assert!(e.settle(r, usd("1.25")).is_none());
    assert!(!e.release(r));
    assert_eq!(r.state(), ReservationState::Settled);
    let st = e.status("acme", T0).unwrap();
    assert_eq!((st.spent, st.reserved), (usd("1.25"), NanoUsd::ZERO));
    // A negative actual counts as zero, never as a credit.
    let r2 = e.admit(&ask(&a, "1", "1"));
    assert_eq!(
        e.settle(r2.reservation().unwrap(), NanoUsd(-5))
            .unwrap()
            .charged,
        NanoUsd::ZERO
    );
}

#[test]
fn release_is_idempotent() {
    let (e, _) = engine(&[ACME]);
    let a = attr(Some("acme"), None);
    let adm = e.admit(&ask(&a, "3", "3"));
    let r = adm.reservation().unwrap();
    assert!(e.release(r));
    assert!(!e.release(r));
    assert!(e.settle(r, usd("3")).is_none());
    let st = e.status("acme", T0).unwrap();
    assert_eq!((st.spent, st.reserved), (NanoUsd::ZERO, NanoUsd::ZERO));
    assert_eq!(e.live_count(), 0);
}

#[test]
fn expire_releases_dead_requests_and_late_settles_are_still_charged() {
    let (e, _) = engine(&[ACME]);
    let a = attr(Some("acme"), None);
    let short = e.admit(&Ask {
        ttl_ms: 1_000,
        ..ask(&a, "4", "4")
    });
    let long = e.admit(&Ask {
        ttl_ms: 10_000,
        ..ask(&a, "4", "4")
    });
    assert_eq!(e.expire(T0 + 999), 0);
    assert_eq!(e.expire(T0 + 1_000), 1);
    assert_eq!(e.expire(T0 + 1_000), 0);
    assert_eq!(e.status("acme", T0).unwrap().reserved, usd("4"));
    let r = short.reservation().unwrap();
    assert_eq!(r.state(), ReservationState::Expired);
    // The request did finish after all: its cost is real, charged, and flagged late.
    let s = e.settle(r, usd("2")).unwrap();
    assert_eq!(
        (s.released, s.charged, s.excess, s.late),
        (NanoUsd::ZERO, usd("2"), usd("2"), true)
    );
    assert!(e.settle(r, usd("2")).is_none());
    assert_eq!(e.expire(T0 + 10_000), 1);
    // Released after expiry: nothing to give back, and a later settle is a no-op.
    let r = long.reservation().unwrap();
    assert!(!e.release(r));
    assert!(e.settle(r, usd("1")).is_none());
    let st = e.status("acme", T0).unwrap();
    assert_eq!((st.spent, st.reserved), (usd("2"), NanoUsd::ZERO));
}

#[test]
fn limit_and_mode_edits_keep_counters_scope_edits_start_new_ones() {
    let (e, _) = engine(&[ACME]);
    let a = attr(Some("acme"), None);
    let adm = e.admit(&ask(&a, "4", "4"));
    e.settle(adm.reservation().unwrap(), usd("4")).unwrap();

    let up = e
        .upsert(def(r#"{"name":"acme","scope":{"tenant":"acme"},"limit_usd":"5","window":"month","mode":"hard"}"#))
        .unwrap();
    assert!(!up.created && !up.needs_seed);
    let st = e.status("acme", T0).unwrap();
    assert_eq!(
        (st.spent, st.limit, st.remaining),
        (usd("4"), usd("5"), usd("1"))
    );
    assert!(matches!(
        e.admit(&ask(&a, "2", "2")),
        Admission::Denied { .. }
    ));

    let up = e
        .upsert(def(r#"{"name":"acme","scope":{"tenant":"acme","feature":"chat"},"limit_usd":"5","window":"month","mode":"hard"}"#))
        .unwrap();
    assert!(!up.created && up.needs_seed);
    assert_eq!(e.status("acme", T0).unwrap().spent, NanoUsd::ZERO);
    let plan = e.seed_plan(T0);
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].scope.feature.as_deref(), Some("chat"));

    // Deleted budgets stop matching at once; re-created ones start a fresh counter.
    assert!(e.remove("acme").is_some());
    assert!(e.remove("acme").is_none());
    assert!(e.status("acme", T0).is_err());
    let adm = e.admit(&ask(&a, "100", "100"));
    assert!(adm.reservation().unwrap().entries().is_empty());
    let up = e.upsert(def(ACME)).unwrap();
    assert!(up.created && up.needs_seed);
    assert_eq!(e.status("acme", T0).unwrap().spent, NanoUsd::ZERO);
    assert_eq!(e.defs().len(), 1);
}

#[test]
fn replace_all_is_all_or_nothing_and_names_the_bad_definition() {
    let (e, _) = engine(&[ACME]);
    let mut bad = def(ORG);
    bad.limit_usd = NanoUsd(-1);
    let err = e.replace_all(vec![def(ORG), bad]).unwrap_err();
    assert_eq!(err.field, "[1].limit_usd");
    let err = e.replace_all(vec![def(ORG), def(ORG)]).unwrap_err();
    assert_eq!(err.field, "[1].name");
    assert!(err.reason.contains("duplicate"));
    assert_eq!(e.defs(), vec![def(ACME)]);
}

#[test]
fn a_restart_rebuilds_counters_from_the_ledger() {
    let rolling = r#"{"name":"acme-24h","scope":{"tenant":"acme"},"limit_usd":"1","window":"24h","mode":"hard"}"#;
    // Start-up at T0 + 12 h: every budget's counter is new and needs the ledger.
    let now = T0 + 12 * 3_600_000;
    let clock = Arc::new(ManualClock::new(now));
    let e = Budgets::new(Arc::new(MemoryStore::new()), clock.clone());
    let fresh = e.replace_all(vec![def(ACME), def(rolling)]).unwrap();
    assert_eq!(fresh, ["acme", "acme-24h"]);

    let plan = e.seed_plan(now);
    assert_eq!(plan.len(), 2);
    let monthly = plan.iter().find(|q| q.budget == "acme").unwrap();
    assert_eq!(monthly.from_ms, T0 - 5 * 86_400_000); // July 1st
    assert_eq!(monthly.to_ms, now);
    assert_eq!(monthly.bucket_ms, None);
    assert_eq!(monthly.scope.tenant.as_deref(), Some("acme"));
    let daily = plan.iter().find(|q| q.budget == "acme-24h").unwrap();
    assert_eq!(
        (daily.from_ms, daily.to_ms, daily.bucket_ms),
        (now - 86_400_000, now, Some(60_000))
    );

    // The "ledger": 9.5 this month, of which 0.7 in the last 24 h (0.3 of it 23.5 h ago).
    e.seed(monthly, SeedSpend::Total(usd("9.5"))).unwrap();
    let rows = vec![
        (now - 23 * 3_600_000 - 1_800_000, usd("0.3")),
        (now - 60_000, usd("0.4")),
    ];
    e.seed(daily, SeedSpend::Buckets(rows.clone())).unwrap();
    // Seeding is idempotent (set, not add) — re-running a plan cannot inflate a counter.
    e.seed(daily, SeedSpend::Buckets(rows)).unwrap();
    assert!(e.seed_plan(now).is_empty());
    assert_eq!(e.status("acme", now).unwrap().spent, usd("9.5"));
    assert_eq!(e.status("acme-24h", now).unwrap().spent, usd("0.7"));

    // Live spend adds to the seed; the seeded 0.3 ages out like live spend would.
    let a = attr(Some("acme"), None);
    let adm = e.admit(&Ask {
        now_ms: now,
        ..ask(&a, "0.2", "0.2")
    });
    e.settle(adm.reservation().unwrap(), usd("0.2")).unwrap();
    assert_eq!(e.status("acme", now).unwrap().spent, usd("9.7"));
    assert_eq!(e.status("acme-24h", now).unwrap().spent, usd("0.9"));
    assert_eq!(
        e.status("acme-24h", now + 3_600_000).unwrap().spent,
        usd("0.6")
    );

    // Wrong shapes are refused.
    assert!(matches!(
        e.seed(daily, SeedSpend::Total(usd("1"))),
        Err(BudgetError::SeedNeedsBuckets(_))
    ));
    let mut stale = monthly.clone();
    stale.counter.push('x');
    assert!(matches!(
        e.seed(&stale, SeedSpend::Total(usd("1"))),
        Err(BudgetError::StaleSeed(_))
    ));
    e.seed_spent("acme", T0, usd("1")).unwrap();
    assert_eq!(e.status("acme", now).unwrap().spent, usd("1.2"));
}

/// A remote store that is down.
struct DownStore;

impl CounterStore for DownStore {
    fn try_reserve(&self, _: &[Entry], _: NanoUsd, _: NanoUsd, _: i64) -> Result<Grant, Refusal> {
        Err(Refusal::Unavailable("connection refused".into()))
    }
    fn try_reserve_each(
        &self,
        _: &[Entry],
        _: &[NanoUsd],
        _: i64,
    ) -> Result<Vec<NanoUsd>, Refusal> {
        Err(Refusal::Unavailable("connection refused".into()))
    }
    fn commit(&self, _: &[Entry], _: NanoUsd, _: NanoUsd, _: i64) {}
    fn release(&self, _: &[Entry], _: NanoUsd) {}
    fn snapshot(&self, _: &CounterKey, _: i64) -> Counts {
        Counts::default()
    }
    fn seed(&self, _: &CounterKey, _: &SeedSpend) {}
    fn room_at(&self, _: &CounterKey, _: NanoUsd, _: NanoUsd, _: i64) -> Option<i64> {
        None
    }
    fn sweep(&self, _: i64) {}
}

#[test]
fn store_outage_fails_closed_for_hard_and_open_for_soft() {
    let soft = r#"{"name":"beta-soft","scope":{"tenant":"beta"},"limit_usd":"1","window":"month","mode":"soft"}"#;
    let e = Budgets::new(Arc::new(DownStore), Arc::new(ManualClock::new(T0)));
    e.replace_all(vec![def(ACME), def(soft)]).unwrap();
    let a = attr(Some("acme"), None);
    match e.admit(&ask(&a, "1", "1")) {
        Admission::Unavailable { budget, reason } => {
            assert_eq!(&*budget, "acme");
            assert!(reason.contains("connection refused"));
        }
        other => panic!("{other:?}"),
    }
    let b = attr(Some("beta"), None);
    let adm = e.admit(&ask(&b, "1", "1"));
    assert!(matches!(adm, Admission::Admitted { .. }));
    assert!(adm.advisory().unwrap().store_error.is_some());
}

#[test]
fn zero_cost_requests_pass_even_an_exhausted_budget() {
    let (e, _) = engine(&[ACME]);
    e.seed_spent("acme", T0, usd("12")).unwrap();
    let a = attr(Some("acme"), None);
    assert!(matches!(
        e.admit(&ask(&a, "0.01", "0.01")),
        Admission::Denied { .. }
    ));
    let adm = e.admit(&ask(&a, "0", "0"));
    let r = adm.reservation().unwrap();
    assert_eq!(r.amount(), NanoUsd::ZERO);
    // A mis-estimated free request is still charged what it cost.
    assert_eq!(e.settle(r, usd("0.5")).unwrap().excess, usd("0.5"));
    assert_eq!(e.status("acme", T0).unwrap().spent, usd("12.5"));
}

#[test]
fn counters_of_finished_windows_are_swept() {
    let store = Arc::new(MemoryStore::new());
    let e = Budgets::new(store.clone(), Arc::new(ManualClock::new(T0)));
    e.replace_all(vec![def(ACME_SEARCH)]).unwrap();
    let a = attr(Some("acme"), Some("search"));
    let adm = e.admit(&ask(&a, "0.5", "0.5"));
    e.settle(adm.reservation().unwrap(), usd("0.5")).unwrap();
    assert_eq!(store.len(), 1);
    e.expire(T0 + 3_600_000);
    assert_eq!(store.len(), 1);
    e.expire(T0 + 86_400_000);
    assert!(store.is_empty());
}

// ---- matching through the index equals a linear scan ---------------------------------------

const VALUES: [&str; 3] = ["a", "b", "c"];

fn opt_value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        2 => Just(None),
        1 => prop::sample::select(&VALUES[..]).prop_map(|v| Some(v.to_string())),
    ]
}

fn scope_json() -> impl Strategy<Value = String> {
    prop::collection::vec(opt_value(), 6).prop_map(|v| {
        let fields = ["tenant", "feature", "user", "key", "team", "model"];
        let parts: Vec<String> = fields
            .iter()
            .zip(v)
            .filter_map(|(f, v)| v.map(|v| format!(r#""{f}":"{v}""#)))
            .collect();
        format!("{{{}}}", parts.join(","))
    })
}

proptest! {
    #[test]
    fn index_matching_equals_a_linear_scan(
        scopes in prop::collection::vec(scope_json(), 0..40),
        who in prop::collection::vec(opt_value(), 6),
    ) {
        let defs: Vec<BudgetDef> = scopes
            .iter()
            .enumerate()
            .map(|(i, s)| def(&format!(
                r#"{{"name":"b{i}","scope":{s},"limit_usd":"1000","window":"month","mode":"soft"}}"#
            )))
            .collect();
        let e = Budgets::new(Arc::new(MemoryStore::new()), Arc::new(ManualClock::new(T0)));
        e.replace_all(defs.clone()).unwrap();
        let a = Attribution {
            tenant: who[0].clone(),
            feature: who[1].clone(),
            user: who[2].clone(),
            key_id: who[3].clone(),
            team: who[4].clone(),
            ..Attribution::default()
        };
        let model = who[5].clone().unwrap_or_default();
        let adm = e.admit(&Ask {
            attribution: &a,
            model: &model,
            worst_case: NanoUsd(1),
            minimum: NanoUsd(1),
            now_ms: T0,
            ttl_ms: 1,
        });
        let mut got: Vec<String> =
            adm.reservation().unwrap().budgets().iter().map(|b| b.to_string()).collect();
        let mut want: Vec<String> = defs
            .iter()
            .filter(|d| d.scope.matches(&a, &model))
            .map(|d| d.name.clone())
            .collect();
        got.sort();
        want.sort();
        prop_assert_eq!(got, want);
    }
}
