//! Invariant 2 under real concurrency: many threads admitting against one hard budget at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may panic

use std::sync::{Arc, Barrier};
use std::thread;

use tollgate_policy::{Admission, Ask, BudgetDef, Budgets, ManualClock, MemoryStore};
use tollgate_types::{Attribution, NanoUsd};

const T0: i64 = 1_783_296_000_000;
const WORST: i64 = 1_000_000; // $0.001 per request
const THREADS: usize = 8;
const REQUESTS: usize = 1_000;
const _: () = assert!(REQUESTS.is_multiple_of(THREADS));

fn engine(limit: NanoUsd) -> Arc<Budgets> {
    let e = Budgets::new(Arc::new(MemoryStore::new()), Arc::new(ManualClock::new(T0)));
    let mut defs = Vec::new();
    for (name, scope) in [
        ("org", r#"{}"#),
        ("acme", r#"{"tenant":"acme"}"#),
        ("acme-search", r#"{"tenant":"acme","feature":"search"}"#),
    ] {
        // The tightest (tenant + feature) is the one that binds; the others have 10× room.
        let l = if name == "acme-search" {
            limit
        } else {
            NanoUsd(limit.nanos() * 10)
        };
        defs.push(
            BudgetDef::from_json(&format!(
                r#"{{"name":"{name}","scope":{scope},"limit_usd":"{l}","window":"month","mode":"hard"}}"#
            ))
            .unwrap(),
        );
    }
    e.replace_all(defs).unwrap();
    Arc::new(e)
}

/// Runs `REQUESTS` admissions from `THREADS` threads released together; returns the outcomes.
fn storm(e: &Arc<Budgets>, minimum: NanoUsd) -> Vec<Admission> {
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let e = e.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let attribution = Attribution {
                    tenant: Some("acme".into()),
                    feature: Some("search".into()),
                    ..Attribution::default()
                };
                barrier.wait();
                (0..REQUESTS / THREADS)
                    .map(|_| {
                        e.admit(&Ask {
                            attribution: &attribution,
                            model: "gpt-4o",
                            worst_case: NanoUsd(WORST),
                            minimum,
                            now_ms: T0,
                            ttl_ms: 60_000,
                        })
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

#[test]
fn thousand_concurrent_admissions_hold_the_limit_exactly() {
    // Affords exactly 100 worst cases.
    let limit = NanoUsd(100 * WORST);
    let e = engine(limit);
    let out = storm(&e, NanoUsd(WORST));
    assert_eq!(out.len(), REQUESTS);
    let admitted: Vec<_> = out.iter().filter_map(Admission::reservation).collect();
    assert_eq!(admitted.len(), 100);
    assert!(
        out.iter()
            .all(|a| matches!(a, Admission::Admitted { .. } | Admission::Denied { .. }))
    );
    let st = e.status("acme-search", T0).unwrap();
    assert_eq!(
        st.reserved,
        NanoUsd(100 * WORST),
        "exactly the admitted count is held"
    );
    // Settle everything concurrently at the worst case.
    thread::scope(|s| {
        for chunk in admitted.chunks(13) {
            let e = &e;
            s.spawn(move || {
                for r in chunk {
                    e.settle(r, NanoUsd(WORST)).unwrap();
                }
            });
        }
    });
    for name in ["acme-search", "acme", "org"] {
        let st = e.status(name, T0).unwrap();
        assert_eq!(st.spent, NanoUsd(100 * WORST), "{name}");
        assert_eq!(st.reserved, NanoUsd::ZERO, "{name}");
    }
    assert!(e.status("acme-search", T0).unwrap().spent <= limit);
    assert_eq!(e.live_count(), 0);
}

#[test]
fn with_fitting_the_last_admissions_are_fitted() {
    // Room for 100 full requests and a half; the minimum is a quarter of the worst case.
    let limit = NanoUsd(100 * WORST + WORST / 2);
    let e = engine(limit);
    let out = storm(&e, NanoUsd(WORST / 4));
    let full = out
        .iter()
        .filter(|a| matches!(a, Admission::Admitted { .. }))
        .count();
    let fitted: Vec<NanoUsd> = out
        .iter()
        .filter_map(|a| match a {
            Admission::Fitted { allowed, .. } => Some(*allowed),
            _ => None,
        })
        .collect();
    let denied = out
        .iter()
        .filter(|a| matches!(a, Admission::Denied { .. }))
        .count();
    assert_eq!(full, 100);
    // Whatever the interleaving, the half left over goes to exactly one fitted request.
    assert_eq!(fitted, vec![NanoUsd(WORST / 2)]);
    assert_eq!(denied, REQUESTS - 101);
    let st = e.status("acme-search", T0).unwrap();
    assert_eq!(st.reserved, limit, "the budget is exactly full, never over");
    for a in &out {
        if let Some(r) = a.reservation() {
            e.settle(r, r.amount()).unwrap();
        }
    }
    let st = e.status("acme-search", T0).unwrap();
    assert_eq!((st.spent, st.reserved), (limit, NanoUsd::ZERO));
}

#[test]
fn concurrent_settle_release_and_expire_change_counters_once() {
    let limit = NanoUsd(1_000 * WORST);
    let e = engine(limit);
    let out = storm(&e, NanoUsd(WORST));
    let rs: Vec<_> = out
        .iter()
        .filter_map(Admission::reservation)
        .cloned()
        .collect();
    assert_eq!(rs.len(), REQUESTS);
    // Four threads race on every reservation: two settle, one releases, one expires.
    thread::scope(|s| {
        for k in 0..4 {
            let (e, rs) = (&e, &rs);
            s.spawn(move || {
                for r in rs {
                    match k {
                        0 | 1 => {
                            e.settle(r, NanoUsd(WORST / 2));
                        }
                        2 => {
                            e.release(r);
                        }
                        _ => {
                            e.expire(T0 + 60_000);
                        }
                    }
                }
            });
        }
    });
    e.expire(T0 + 60_000);
    let st = e.status("acme-search", T0).unwrap();
    assert_eq!(st.reserved, NanoUsd::ZERO);
    // Every reservation that ended settled was charged exactly once (possibly late, after
    // expiry); released and expired ones not at all.
    let settled = rs
        .iter()
        .filter(|r| r.state() == tollgate_policy::ReservationState::Settled)
        .count() as i64;
    // The releasing thread visits every reservation, so each ends settled or released —
    // how many of each depends on the interleaving (all released is possible when the
    // settling threads are descheduled), the charge does not.
    assert!(rs.iter().all(|r| matches!(
        r.state(),
        tollgate_policy::ReservationState::Settled | tollgate_policy::ReservationState::Released
    )));
    assert_eq!(st.spent, NanoUsd(settled * (WORST / 2)));
    assert_eq!(e.live_count(), 0);
}
