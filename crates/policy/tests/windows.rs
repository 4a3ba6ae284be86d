//! Windows with an injected clock: calendar boundaries in non-UTC time zones (DST days
//! included), resets to zero, rolling-window ageing, and `Retry-After` for both kinds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may panic

use std::sync::Arc;

use tollgate_policy::{
    Admission, Ask, BudgetDef, Budgets, Clock, ManualClock, MemoryStore, Window,
};
use tollgate_types::{Attribution, NanoUsd};

fn ms(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

fn usd(s: &str) -> NanoUsd {
    NanoUsd::parse_usd(s).unwrap()
}

fn setup(json: &str, now: i64) -> (Budgets, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(now));
    let e = Budgets::new(Arc::new(MemoryStore::new()), clock.clone());
    e.replace_all(vec![BudgetDef::from_json(json).unwrap()])
        .unwrap();
    (e, clock)
}

fn acme() -> Attribution {
    Attribution {
        tenant: Some("acme".into()),
        ..Attribution::default()
    }
}

fn admit(e: &Budgets, now: i64, worst: NanoUsd) -> Admission {
    e.admit(&Ask {
        attribution: &acme(),
        model: "gpt-4o",
        worst_case: worst,
        minimum: worst,
        now_ms: now,
        ttl_ms: 600_000,
    })
}

/// Admits and settles `amount` at `now`.
fn spend(e: &Budgets, now: i64, amount: NanoUsd) {
    let a = admit(e, now, amount);
    let r = a.reservation().unwrap_or_else(|| panic!("{a:?}"));
    e.settle(r, amount).unwrap();
}

fn bounds(e: &Budgets, name: &str, now: i64) -> (i64, i64) {
    let st = e.status(name, now).unwrap();
    (st.window_start_ms, st.window_end_ms)
}

#[test]
fn berlin_day_windows_on_dst_days_are_23_and_25_hours() {
    let json = r#"{"name":"d","scope":{"tenant":"acme"},"limit_usd":"10","window":"day","mode":"hard","timezone":"Europe/Berlin"}"#;
    // Spring forward: 2026-03-29 02:00 CET → 03:00 CEST.
    let noon = ms("2026-03-29T10:00:00Z");
    let (e, _) = setup(json, noon);
    let (start, end) = bounds(&e, "d", noon);
    assert_eq!(start, ms("2026-03-28T23:00:00Z")); // local midnight, CET
    assert_eq!(end, ms("2026-03-29T22:00:00Z")); // next local midnight, CEST
    assert_eq!(end - start, 23 * 3_600_000);
    // Fall back: 2026-10-25 03:00 CEST → 02:00 CET.
    let noon = ms("2026-10-25T11:00:00Z");
    let (start, end) = bounds(&e, "d", noon);
    assert_eq!(start, ms("2026-10-24T22:00:00Z"));
    assert_eq!(end, ms("2026-10-25T23:00:00Z"));
    assert_eq!(end - start, 25 * 3_600_000);
}

#[test]
fn a_day_whose_midnight_does_not_exist_starts_at_its_first_instant() {
    // Chile springs forward at 24:00: 2026-09-06 00:00 -04 does not exist, the day starts at
    // 01:00 -03 (04:00Z) and is 23 hours long.
    let json = r#"{"name":"d","scope":{},"limit_usd":"1","window":"day","mode":"hard","timezone":"America/Santiago"}"#;
    let now = ms("2026-09-06T15:00:00Z");
    let (e, _) = setup(json, now);
    assert_eq!(
        bounds(&e, "d", now),
        (ms("2026-09-06T04:00:00Z"), ms("2026-09-07T03:00:00Z"))
    );
}

#[test]
fn berlin_week_and_month_windows() {
    let week = r#"{"name":"w","scope":{},"limit_usd":"1","window":"week","mode":"hard","timezone":"Europe/Berlin"}"#;
    // Sunday 2026-03-29 (DST day) belongs to the week of Monday 2026-03-23, which is 167 h long.
    let now = ms("2026-03-29T20:00:00Z");
    let (e, _) = setup(week, now);
    let (start, end) = bounds(&e, "w", now);
    assert_eq!(start, ms("2026-03-22T23:00:00Z"));
    assert_eq!(end, ms("2026-03-29T22:00:00Z"));
    assert_eq!(end - start, 167 * 3_600_000);
    // 22:30Z on that Sunday is already Monday 00:30 CEST: the next week.
    assert_eq!(bounds(&e, "w", ms("2026-03-29T22:30:00Z")).0, end);

    let month = r#"{"name":"m","scope":{},"limit_usd":"1","window":"month","mode":"hard","timezone":"Europe/Berlin"}"#;
    let (e, _) = setup(month, now);
    assert_eq!(
        bounds(&e, "m", now),
        (ms("2026-02-28T23:00:00Z"), ms("2026-03-31T22:00:00Z"))
    );
    // 2026-03-31T22:30Z is April 1st 00:30 in Berlin, still March in UTC.
    assert_eq!(
        bounds(&e, "m", ms("2026-03-31T22:30:00Z")).0,
        ms("2026-03-31T22:00:00Z")
    );
}

#[test]
fn calendar_reset_starts_the_new_window_at_zero() {
    let json = r#"{"name":"acme-monthly","scope":{"tenant":"acme"},"limit_usd":"50.00","window":"month","mode":"hard","timezone":"America/New_York"}"#;
    let now = ms("2026-07-31T12:00:00Z");
    let (e, clock) = setup(json, now);
    spend(&e, now, usd("50"));
    let st = e.status("acme-monthly", now).unwrap();
    assert_eq!((st.spent, st.remaining), (usd("50"), NanoUsd::ZERO));
    // Exhausted: denied, Retry-After = seconds to local midnight of August 1st (04:00Z).
    let end = ms("2026-08-01T04:00:00Z");
    match admit(&e, now, usd("0.01")) {
        Admission::Denied {
            budget,
            window,
            window_end_ms,
            retry_after_secs,
            remaining,
            limit,
            ..
        } => {
            assert_eq!(&*budget, "acme-monthly");
            assert_eq!(window, Window::Month);
            assert_eq!(window_end_ms, end);
            assert_eq!(retry_after_secs, ((end - now) / 1000) as u64);
            assert_eq!((remaining, limit), (NanoUsd::ZERO, usd("50")));
        }
        other => panic!("{other:?}"),
    }
    // One millisecond before the reset: still denied, Retry-After rounds up to 1 s.
    match admit(&e, end - 1, usd("0.01")) {
        Admission::Denied {
            retry_after_secs, ..
        } => assert_eq!(retry_after_secs, 1),
        other => panic!("{other:?}"),
    }
    // The new window starts from zero.
    clock.set(end);
    let st = e.status("acme-monthly", end).unwrap();
    assert_eq!(
        (st.spent, st.reserved, st.remaining),
        (NanoUsd::ZERO, NanoUsd::ZERO, usd("50"))
    );
    assert!(matches!(
        admit(&e, end, usd("0.01")),
        Admission::Admitted { .. }
    ));
    // Old windows are swept once they have ended with nothing held.
    e.expire(end);
}

#[test]
fn a_reservation_straddling_the_reset_settles_into_its_own_window() {
    let json =
        r#"{"name":"d","scope":{"tenant":"acme"},"limit_usd":"1","window":"day","mode":"hard"}"#;
    let before = ms("2026-07-06T23:59:59Z");
    let after = ms("2026-07-07T00:00:01Z");
    let (e, _) = setup(json, before);
    let a = admit(&e, before, usd("0.4"));
    let r = a.reservation().unwrap();
    e.settle(r, usd("0.3")).unwrap();
    // Charged to the window it was admitted in (the ledger row's date), not the new one.
    assert_eq!(e.status("d", before).unwrap().spent, usd("0.3"));
    assert_eq!(e.status("d", after).unwrap().spent, NanoUsd::ZERO);
}

#[test]
fn rolling_window_spend_ages_out_by_whole_buckets() {
    let json =
        r#"{"name":"r","scope":{"tenant":"acme"},"limit_usd":"1","window":"1h","mode":"hard"}"#;
    let t = ms("2026-07-06T10:00:30Z"); // 30 s into a one-minute bucket
    let (e, clock) = setup(json, t);
    spend(&e, t, usd("0.6"));
    spend(&e, t + 20 * 60_000, usd("0.3"));
    let st = e.status("r", t + 30 * 60_000).unwrap();
    assert_eq!(st.spent, usd("0.9"));
    assert_eq!(st.window_end_ms - st.window_start_ms, 3_600_000);

    // 0.2 does not fit. Room for it appears when the 0.6 bucket [10:00, 10:01) has wholly
    // left the window: at 11:01:00, i.e. 30 min 30 s after 10:30:30.
    let now = t + 30 * 60_000;
    match admit(&e, now, usd("0.2")) {
        Admission::Denied {
            window_end_ms,
            retry_after_secs,
            ..
        } => {
            assert_eq!(window_end_ms, ms("2026-07-06T11:01:00Z"));
            assert_eq!(retry_after_secs, 30 * 60 + 30);
        }
        other => panic!("{other:?}"),
    }
    // Exact age is 1 h at 11:00:30, but the bucket still counts until 11:01:00 (stricter).
    assert_eq!(
        e.status("r", ms("2026-07-06T11:00:59.999Z")).unwrap().spent,
        usd("0.9")
    );
    assert_eq!(
        e.status("r", ms("2026-07-06T11:01:00Z")).unwrap().spent,
        usd("0.3")
    );
    clock.set(ms("2026-07-06T11:01:00Z"));
    assert!(matches!(
        admit(&e, clock.now_ms(), usd("0.2")),
        Admission::Admitted { .. }
    ));
    // Everything ages out eventually.
    assert_eq!(
        e.status("r", ms("2026-07-06T11:21:00Z")).unwrap().spent,
        NanoUsd::ZERO
    );
}

#[test]
fn rolling_denial_held_by_reservations_waits_a_full_window() {
    let json = r#"{"name":"r","scope":{},"limit_usd":"1","window":"24h","mode":"hard"}"#;
    let t = ms("2026-07-06T10:00:00Z");
    let (e, _) = setup(json, t);
    let held = admit(&e, t, usd("1"));
    assert!(held.reservation().is_some());
    match admit(&e, t, usd("0.5")) {
        Admission::Denied {
            retry_after_secs,
            window_end_ms,
            ..
        } => {
            // Nothing settled can age out; the held reservation decides. A full window is
            // the safe answer.
            assert_eq!(retry_after_secs, 86_400);
            assert_eq!(window_end_ms, t + 86_400_000);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn forecasts_extrapolate_linearly() {
    let json = r#"{"name":"m","scope":{},"limit_usd":"100","window":"day","mode":"soft"}"#;
    let start = ms("2026-07-06T00:00:00Z");
    let (e, _) = setup(json, start);
    spend(&e, start + 3_600_000, usd("2.5"));
    // A quarter of the day elapsed with 2.5 spent → 10.
    let st = e.status("m", start + 6 * 3_600_000).unwrap();
    assert_eq!(st.forecast_at_window_end, usd("10"));
    // Extrapolation never divides by less than a minute of elapsed time (here: a status read
    // 1 ms into the window that already holds 2.5 → 2.5 × 1440 minutes).
    let st = e.status("m", start + 1).unwrap();
    assert_eq!(st.forecast_at_window_end, usd("3600"));
    // Halfway with nothing more spent: the rate has halved.
    let st = e.status("m", start + 12 * 3_600_000).unwrap();
    assert_eq!(st.forecast_at_window_end, usd("5"));

    // Rolling, not seeded, observed for 6 of 24 hours: rate × length.
    let json = r#"{"name":"r","scope":{},"limit_usd":"100","window":"24h","mode":"soft"}"#;
    let (e, _) = setup(json, start);
    spend(&e, start + 60_000, usd("3"));
    let st = e.status("r", start + 6 * 3_600_000).unwrap();
    assert_eq!(st.forecast_at_window_end, usd("12"));
    // Once seeded, the whole window is observed: the forecast is the window's spend.
    for q in e.seed_plan(start) {
        e.seed(&q, tollgate_policy::SeedSpend::Buckets(vec![]))
            .unwrap();
    }
    let st = e.status("r", start + 6 * 3_600_000).unwrap();
    assert_eq!(st.forecast_at_window_end, usd("3"));
}
