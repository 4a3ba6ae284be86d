//! Rate limits hold: random interleavings of admit / settle / time passing, checked against a
//! model after every step (never more than the limit inside any window, and never a refusal
//! the model says has room), and real threads racing for the last slots.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may panic

use std::sync::{Arc, Barrier};
use std::thread;

use proptest::prelude::*;
use tollgate_policy::ratelimit::{BUCKET_MS, WINDOW_MS};
use tollgate_policy::{MemoryStore, RateAdmission, RateAsk, RateHold, RateLimitDef, RateLimits};
use tollgate_types::Attribution;

const T0: i64 = 1_783_296_000_000;
const TENANTS: [&str; 2] = ["acme", "beta"];

fn limits(rpm: u64, tpm: u64) -> RateLimits {
    let defs: Vec<RateLimitDef> = [
        format!("{{name: rpm, per: tenant, rpm: {rpm}}}"),
        format!("{{name: tpm, per: tenant, tpm: {tpm}}}"),
    ]
    .iter()
    .map(|y| serde_yaml_ng::from_str(y).unwrap())
    .collect();
    RateLimits::new(defs, Arc::new(MemoryStore::new())).unwrap()
}

fn attr(tenant: &str) -> Attribution {
    Attribution {
        tenant: Some(tenant.into()),
        ..Attribution::default()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Admit {
        tenant: usize,
        tokens: u64,
    },
    /// Settle the `idx`-th (mod count) open hold with `pct`% of its estimate.
    Settle {
        idx: usize,
        pct: u64,
    },
    Advance {
        ms: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..TENANTS.len(), 0u64..400).prop_map(|(tenant, tokens)| Op::Admit { tenant, tokens }),
        2 => (any::<usize>(), 0u64..=100).prop_map(|(idx, pct)| Op::Settle { idx, pct }),
        1 => (0i64..25_000).prop_map(|ms| Op::Advance { ms }),
    ]
}

/// One admitted request in the model.
struct Admitted {
    tenant: usize,
    at_ms: i64,
    reserved: u64,
    settled: Option<u64>,
}

impl Admitted {
    fn tokens(&self) -> u64 {
        self.settled.unwrap_or(self.reserved)
    }
    /// Still counted by the limiter at `now`: its bucket has a part inside the window, or
    /// (tokens) it is unsettled.
    fn counted(&self, now: i64) -> bool {
        let bucket = self.at_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        bucket + BUCKET_MS + WINDOW_MS > now
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn never_more_than_the_limit_in_any_window(
        rpm in 1u64..12,
        tpm in 1u64..2_000,
        ops in proptest::collection::vec(op(), 1..150),
    ) {
        let rl = limits(rpm, tpm);
        let mut now = T0;
        let mut log: Vec<Admitted> = Vec::new();
        let mut holds: Vec<(usize, RateHold)> = Vec::new();
        for op in ops {
            match op {
                Op::Advance { ms } => now += ms,
                Op::Settle { idx, pct } => {
                    if !holds.is_empty() {
                        let (i, hold) = holds.swap_remove(idx % holds.len());
                        let actual = log[i].reserved * pct / 100;
                        rl.settle(hold, actual);
                        log[i].settled = Some(actual);
                    }
                }
                Op::Admit { tenant, tokens } => {
                    let a = attr(TENANTS[tenant]);
                    // What the model says is in use: requests in the window, tokens in the
                    // window plus unsettled reservations of any age.
                    let mine = || log.iter().filter(|r| r.tenant == tenant);
                    let reqs = mine().filter(|r| r.counted(now)).count() as u64;
                    let toks: u64 = mine()
                        .filter(|r| r.counted(now) || r.settled.is_none())
                        .map(Admitted::tokens)
                        .sum();
                    let room = reqs < rpm && toks + tokens <= tpm;
                    let ask = RateAsk { attribution: &a, model: "m", tokens, now_ms: now };
                    match rl.admit(&ask) {
                        RateAdmission::Admitted { hold, quotas } => {
                            prop_assert!(room, "admitted without room: {reqs}/{rpm} req, {toks}+{tokens}/{tpm} tok");
                            prop_assert_eq!(quotas.requests.unwrap().remaining, rpm - reqs - 1);
                            prop_assert_eq!(quotas.tokens.unwrap().remaining, tpm - toks - tokens);
                            log.push(Admitted { tenant, at_ms: now, reserved: tokens, settled: None });
                            holds.push((log.len() - 1, hold.unwrap()));
                        }
                        RateAdmission::Limited { retry_after_ms, .. } => {
                            prop_assert!(!room, "refused with room: {reqs}/{rpm} req, {toks}+{tokens}/{tpm} tok");
                            if tokens <= tpm {
                                let w = retry_after_ms.unwrap();
                                prop_assert!((0..=WINDOW_MS + BUCKET_MS).contains(&w));
                            }
                        }
                        other => prop_assert!(false, "{:?}", other),
                    }
                }
            }
            // The invariant proper, by exact age: in every 60 s ending now, per tenant.
            for t in 0..TENANTS.len() {
                let recent = || log.iter().filter(|r| r.tenant == t && r.at_ms > now - WINDOW_MS);
                prop_assert!(recent().count() as u64 <= rpm);
                prop_assert!(recent().map(Admitted::tokens).sum::<u64>() <= tpm);
            }
        }
    }
}

#[test]
fn threads_racing_for_the_last_slots_get_exactly_the_limit() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 125;
    let rl = Arc::new(limits(100, 1_000_000));
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let rl = rl.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let a = attr("acme");
                barrier.wait();
                let mut admitted = 0usize;
                for _ in 0..PER_THREAD {
                    let ask = RateAsk {
                        attribution: &a,
                        model: "m",
                        tokens: 10,
                        now_ms: T0,
                    };
                    if let RateAdmission::Admitted { hold, .. } = rl.admit(&ask) {
                        admitted += 1;
                        rl.settle(hold.unwrap(), 10);
                    }
                }
                admitted
            })
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(total, 100);
}

fn concurrency(n: u64) -> RateLimits {
    let def: RateLimitDef =
        serde_yaml_ng::from_str(&format!("{{name: conc, per: tenant, max_concurrent: {n}}}"))
            .unwrap();
    RateLimits::new(vec![def], Arc::new(MemoryStore::new())).unwrap()
}

proptest! {
    /// `max_concurrent`: a request is admitted exactly when fewer than the limit of its tenant's
    /// requests are in flight (admitted, not yet settled), whatever the order of admissions and
    /// settlements and however much time passes (no window ages a place out).
    #[test]
    fn in_flight_never_passes_the_limit_and_a_free_place_is_always_taken(
        limit in 1u64..5,
        ops in proptest::collection::vec((any::<bool>(), 0usize..8, 0i64..120_000), 1..200),
    ) {
        let rl = concurrency(limit);
        let a = attr("acme");
        let mut open: Vec<RateHold> = Vec::new();
        let mut now = T0;
        for (admit, idx, advance) in ops {
            now += advance;
            if admit {
                let ask = RateAsk { attribution: &a, model: "m", tokens: 0, now_ms: now };
                match rl.admit(&ask) {
                    RateAdmission::Admitted { hold, .. } => {
                        prop_assert!((open.len() as u64) < limit);
                        open.push(hold.unwrap());
                    }
                    RateAdmission::Limited { retry_after_ms, .. } => {
                        prop_assert_eq!(open.len() as u64, limit);
                        prop_assert_eq!(retry_after_ms, Some(1_000));
                    }
                    other => prop_assert!(false, "{other:?}"),
                }
            } else if !open.is_empty() {
                let h = open.swap_remove(idx % open.len());
                rl.settle(h, 0);
            }
            rl.sweep(now);
        }
    }
}

#[test]
fn threads_never_hold_more_places_than_the_limit() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const THREADS: usize = 8;
    let rl = Arc::new(concurrency(3));
    let held = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (rl, held, peak, barrier) =
                (rl.clone(), held.clone(), peak.clone(), barrier.clone());
            thread::spawn(move || {
                let a = attr("acme");
                barrier.wait();
                let mut admitted = 0;
                for _ in 0..2_000 {
                    let ask = RateAsk {
                        attribution: &a,
                        model: "m",
                        tokens: 0,
                        now_ms: T0,
                    };
                    if let RateAdmission::Admitted { hold, .. } = rl.admit(&ask) {
                        let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        admitted += 1;
                        thread::yield_now();
                        held.fetch_sub(1, Ordering::SeqCst);
                        rl.settle(hold.unwrap(), 0);
                    }
                }
                admitted
            })
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(total > 0);
    assert!(
        peak.load(Ordering::SeqCst) <= 3,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
}
