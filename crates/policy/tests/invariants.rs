//! Invariant 2 (hard budgets hold) and 5 (money is exact) as properties: random interleavings
//! of admit / settle / release / expire / time passing across nested budgets, checked against
//! a model after every step.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may panic

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use tollgate_policy::{
    Admission, Ask, BudgetDef, Budgets, Clock, ManualClock, MemoryStore, Mode, Reservation,
    ReservationState,
};
use tollgate_types::{Attribution, NanoUsd};

/// Monday 2026-07-06 00:00:00 UTC. Runs advance at most 5 h, so no window (UTC day and
/// month, Berlin week, rolling 7d and 30d) changes or ages during a run; windows are tested on
/// their own in `windows.rs`.
const T0: i64 = 1_783_296_000_000;

fn def(json: &str) -> BudgetDef {
    BudgetDef::from_json(json).unwrap()
}

fn defs(limits: &[i64; 5]) -> Vec<BudgetDef> {
    vec![
        def(&format!(
            r#"{{"name":"org","scope":{{}},"limit_usd":"{}","window":"month","mode":"hard"}}"#,
            NanoUsd(limits[0])
        )),
        def(&format!(
            r#"{{"name":"acme","scope":{{"tenant":"acme"}},"limit_usd":"{}","window":"month","mode":"hard"}}"#,
            NanoUsd(limits[1])
        )),
        def(&format!(
            r#"{{"name":"acme-search","scope":{{"tenant":"acme","feature":"search"}},"limit_usd":"{}","window":"day","mode":"hard"}}"#,
            NanoUsd(limits[2])
        )),
        def(&format!(
            r#"{{"name":"beta-30d","scope":{{"tenant":"beta"}},"limit_usd":"{}","window":"30d","mode":"hard"}}"#,
            NanoUsd(limits[3])
        )),
        def(&format!(
            r#"{{"name":"gpt4o-week","scope":{{"model":"gpt-4o"}},"limit_usd":"{}","window":"week","mode":"hard","timezone":"Europe/Berlin"}}"#,
            NanoUsd(limits[4])
        )),
        def(
            r#"{"name":"acme-soft","scope":{"tenant":"acme"},"limit_usd":"0.000002","window":"month","mode":"soft"}"#,
        ),
        def(
            r#"{"name":"org-shadow","scope":{},"limit_usd":"0.000005","window":"7d","mode":"shadow"}"#,
        ),
    ]
}

fn who(i: usize) -> Attribution {
    let (tenant, feature) = match i {
        0 => (Some("acme"), Some("search")),
        1 => (Some("acme"), Some("chat")),
        2 => (Some("beta"), Some("search")),
        _ => (None, None),
    };
    Attribution {
        tenant: tenant.map(str::to_string),
        feature: feature.map(str::to_string),
        ..Attribution::default()
    }
}

const MODELS: [&str; 2] = ["gpt-4o", "gpt-4o-mini"];

#[derive(Debug, Clone)]
enum Op {
    Admit {
        who: usize,
        model: usize,
        worst: i64,
        min_pct: i64,
        ttl_ms: i64,
    },
    /// Settle a live reservation with `actual = reserved × pct / 100` (never above it).
    Settle {
        pick: usize,
        pct: i64,
    },
    Release {
        pick: usize,
    },
    /// Settle or release any reservation ever made: exercises idempotence and late settles.
    Again {
        pick: usize,
        settle: bool,
        pct: i64,
    },
    Advance {
        ms: i64,
    },
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0usize..4, 0usize..2, 1i64..4_000, 1i64..=100, 1_000i64..600_000).prop_map(
            |(who, model, worst, min_pct, ttl_ms)| Op::Admit { who, model, worst, min_pct, ttl_ms }
        ),
        3 => (any::<usize>(), 0i64..=100).prop_map(|(pick, pct)| Op::Settle { pick, pct }),
        1 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        1 => (any::<usize>(), any::<bool>(), 0i64..=100)
            .prop_map(|(pick, settle, pct)| Op::Again { pick, settle, pct }),
        1 => (0i64..60_000).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Expire),
    ]
}

/// How often each path was taken, to show the property is not vacuous.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    admitted: usize,
    fitted: usize,
    denied: usize,
    expired: usize,
    late: usize,
    repeated: usize,
}

#[derive(Default)]
struct Model {
    spent: HashMap<String, i64>,
    /// Spend charged by settles that arrived after expiry (the documented bound's `L`).
    late: HashMap<String, i64>,
    all: Vec<Reservation>,
}

impl Model {
    fn charge(&mut self, r: &Reservation, actual: i64, late: bool) {
        for b in r.budgets() {
            *self.spent.entry(b.to_string()).or_default() += actual;
            if late {
                *self.late.entry(b.to_string()).or_default() += actual;
            }
        }
    }

    fn live(&self) -> Vec<&Reservation> {
        self.all
            .iter()
            .filter(|r| r.state() == ReservationState::Live)
            .collect()
    }

    fn reserved(&self, budget: &str) -> i64 {
        self.live()
            .iter()
            .filter(|r| r.budgets().iter().any(|b| &**b == budget))
            .map(|r| r.amount().nanos())
            .sum()
    }
}

fn check(engine: &Budgets, model: &Model, now: i64) -> Result<(), TestCaseError> {
    for d in engine.defs() {
        let st = engine.status(&d.name, now).unwrap();
        let spent = model.spent.get(&d.name).copied().unwrap_or(0);
        prop_assert_eq!(st.spent.nanos(), spent, "spent of {}", d.name);
        prop_assert_eq!(
            st.reserved.nanos(),
            model.reserved(&d.name),
            "reserved of {}",
            d.name
        );
        if d.mode == Mode::Hard {
            let late = model.late.get(&d.name).copied().unwrap_or(0);
            prop_assert!(
                st.spent.nanos() + st.reserved.nanos() <= d.limit_usd.nanos() + late,
                "{}: spent {} + reserved {} > limit {} + late {}",
                d.name,
                st.spent,
                st.reserved,
                d.limit_usd,
                late
            );
        }
    }
    Ok(())
}

fn run(limits: [i64; 5], ops: Vec<Op>) -> Result<Tally, TestCaseError> {
    let mut tally = Tally::default();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = Budgets::new(Arc::new(MemoryStore::new()), clock.clone());
    engine.replace_all(defs(&limits)).unwrap();
    let mut model = Model::default();

    for op in ops {
        let now = clock.now_ms();
        match op {
            Op::Admit {
                who: w,
                model: m,
                worst,
                min_pct,
                ttl_ms,
            } => {
                let attribution = who(w);
                let minimum = (worst * min_pct / 100).max(1);
                // What the model expects: the tightest matching hard budget decides.
                let mut tightest: Option<(i64, String)> = None;
                for d in engine.defs() {
                    if d.mode == Mode::Hard && d.scope.matches(&attribution, MODELS[m]) {
                        let room = d.limit_usd.nanos()
                            - model.spent.get(&d.name).copied().unwrap_or(0)
                            - model.reserved(&d.name);
                        if tightest.as_ref().is_none_or(|(r, _)| room < *r) {
                            tightest = Some((room, d.name.clone()));
                        }
                    }
                }
                let a = engine.admit(&Ask {
                    attribution: &attribution,
                    model: MODELS[m],
                    worst_case: NanoUsd(worst),
                    minimum: NanoUsd(minimum),
                    now_ms: now,
                    ttl_ms,
                });
                match (&a, &tightest) {
                    (Admission::Admitted { reservation, .. }, t) => {
                        prop_assert!(t.as_ref().is_none_or(|(room, _)| *room >= worst));
                        prop_assert_eq!(reservation.amount().nanos(), worst);
                    }
                    (Admission::Fitted { allowed, .. }, Some((room, _))) => {
                        prop_assert!(*room < worst && *room >= minimum);
                        prop_assert_eq!(allowed.nanos(), *room);
                    }
                    (
                        Admission::Denied {
                            budget, remaining, ..
                        },
                        Some((room, name)),
                    ) => {
                        prop_assert!(*room < minimum);
                        prop_assert_eq!(&**budget, name.as_str());
                        prop_assert_eq!(remaining.nanos(), (*room).max(0));
                    }
                    (other, t) => prop_assert!(false, "unexpected {other:?} with {t:?}"),
                }
                match &a {
                    Admission::Admitted { .. } => tally.admitted += 1,
                    Admission::Fitted { .. } => tally.fitted += 1,
                    _ => tally.denied += 1,
                }
                if let Some(r) = a.reservation() {
                    model.all.push(r.clone());
                }
            }
            Op::Settle { pick, pct } => {
                let live = model.live();
                if !live.is_empty() {
                    let r = live[pick % live.len()].clone();
                    let actual = r.amount().nanos() * pct / 100;
                    let s = engine.settle(&r, NanoUsd(actual)).unwrap();
                    prop_assert!(!s.late);
                    prop_assert_eq!(s.excess, NanoUsd::ZERO);
                    model.charge(&r, actual, false);
                }
            }
            Op::Release { pick } => {
                let live = model.live();
                if !live.is_empty() {
                    let r = live[pick % live.len()].clone();
                    prop_assert!(engine.release(&r));
                }
            }
            Op::Again { pick, settle, pct } => {
                if !model.all.is_empty() {
                    let r = model.all[pick % model.all.len()].clone();
                    let before = r.state();
                    if settle {
                        let actual = r.amount().nanos() * pct / 100;
                        let s = engine.settle(&r, NanoUsd(actual));
                        match before {
                            ReservationState::Live => {
                                prop_assert!(s.is_some_and(|s| !s.late));
                                model.charge(&r, actual, false);
                            }
                            ReservationState::Expired => {
                                prop_assert!(s.is_some_and(|s| s.late));
                                model.charge(&r, actual, true);
                                tally.late += 1;
                            }
                            _ => {
                                prop_assert!(s.is_none(), "settled twice");
                                tally.repeated += 1;
                            }
                        }
                    } else {
                        let released = engine.release(&r);
                        prop_assert_eq!(released, before == ReservationState::Live);
                    }
                }
            }
            Op::Advance { ms } => {
                clock.set(now + ms);
            }
            Op::Expire => {
                let due = model
                    .live()
                    .iter()
                    .filter(|r| r.expires_at_ms() <= now)
                    .count();
                prop_assert_eq!(engine.expire(now), due);
                tally.expired += due;
            }
        }
        check(&engine, &model, clock.now_ms())?;
    }

    // Nothing leaks: once everything is settled or released, nothing is reserved, and spent is
    // exactly the sum of what was charged.
    for r in model.live() {
        prop_assert!(engine.release(r));
    }
    prop_assert_eq!(engine.live_count(), 0);
    let now = clock.now_ms();
    for d in engine.defs() {
        let st = engine.status(&d.name, now).unwrap();
        prop_assert_eq!(st.reserved, NanoUsd::ZERO, "{} leaked", d.name);
    }
    check(&engine, &model, now)?;
    Ok(tally)
}

fn limits() -> impl Strategy<Value = [i64; 5]> {
    [
        2_000i64..60_000,
        1_000i64..40_000,
        500i64..20_000,
        500i64..20_000,
        1_000i64..30_000,
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..300)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Integration tests have no lib.rs to anchor a regressions file; failures print the
        // minimal case instead.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn hard_budgets_hold_and_money_is_exact(limits in limits(), ops in ops()) {
        run(limits, ops)?;
    }
}

/// The property above is only worth something if its runs reach every path: fitting,
/// denial, expiry, late settles and repeated settles/releases.
#[test]
fn the_property_reaches_every_path() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let mut total = Tally::default();
    for _ in 0..64 {
        let l = limits().new_tree(&mut runner).unwrap().current();
        let o = ops().new_tree(&mut runner).unwrap().current();
        let t = run(l, o).unwrap();
        total.admitted += t.admitted;
        total.fitted += t.fitted;
        total.denied += t.denied;
        total.expired += t.expired;
        total.late += t.late;
        total.repeated += t.repeated;
    }
    eprintln!("{total:?}");
    assert!(
        total.admitted > 0 && total.fitted > 0 && total.denied > 0,
        "{total:?}"
    );
    assert!(
        total.expired > 0 && total.late > 0 && total.repeated > 0,
        "{total:?}"
    );
}
