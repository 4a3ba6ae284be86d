//! Admission cost with 1,000 budgets configured, a handful matching.
//!
//! `cargo bench -p tollgate-policy --bench admission` (add `-- --quick` for a short run).
//! Target (issue): attribution + budget reservation + policy evaluation ≤ 20 µs p50 per
//! request. Besides criterion's means, the bench prints p50/p99 of single admit+settle pairs
//! timed one by one, since the target is a percentile — for admit+settle alone and for
//! admit + policy evaluation (100 policies) + settle + burn recording — and for the rate-limit
//! check (admit + settle over 4 rules, 6 counters, 1,000 keys and users).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmarks may panic

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate_policy::rules::{Decision, EvalContext, Policies, PolicyDef};
use tollgate_policy::{
    Admission, Ask, BudgetDef, Budgets, CounterKey, CounterStore, Entry, ManualClock, MemoryStore,
    RateAdmission, RateAsk, RateLimitDef, RateLimits, Slot,
};
use tollgate_types::{Attribution, NanoUsd};

const T0: i64 = 1_783_296_000_000;
const TENANTS: usize = 500;

/// 1,000 budgets: org, 500 tenants, 300 tenant+feature, 100 keys (rolling 24h),
/// 50 users (soft), 49 models (shadow, Berlin weeks). A request matches 4 of them.
fn budgets() -> Vec<BudgetDef> {
    let mut v = Vec::with_capacity(1_000);
    let mut push = |name: String, scope: String, window: &str, mode: &str, tz: &str| {
        v.push(
            BudgetDef::from_json(&format!(
                r#"{{"name":"{name}","scope":{scope},"limit_usd":"1000000","window":"{window}","mode":"{mode}"{tz}}}"#
            ))
            .unwrap(),
        );
    };
    push("org".into(), "{}".into(), "month", "hard", "");
    for i in 0..TENANTS {
        push(
            format!("t{i}"),
            format!(r#"{{"tenant":"t{i}"}}"#),
            "month",
            "hard",
            "",
        );
    }
    for i in 0..300 {
        push(
            format!("t{i}-search"),
            format!(r#"{{"tenant":"t{i}","feature":"search"}}"#),
            "day",
            "hard",
            "",
        );
    }
    for i in 0..100 {
        push(
            format!("k{i}"),
            format!(r#"{{"key":"k{i}"}}"#),
            "24h",
            "hard",
            "",
        );
    }
    for i in 0..50 {
        push(
            format!("u{i}"),
            format!(r#"{{"user":"u{i}"}}"#),
            "month",
            "soft",
            "",
        );
    }
    for i in 0..49 {
        push(
            format!("m{i}"),
            format!(r#"{{"model":"m{i}"}}"#),
            "week",
            "shadow",
            r#","timezone":"Europe/Berlin""#,
        );
    }
    assert_eq!(v.len(), 1_000);
    v
}

fn engine() -> Arc<Budgets> {
    let e = Budgets::new(Arc::new(MemoryStore::new()), Arc::new(ManualClock::new(T0)));
    e.replace_all(budgets()).unwrap();
    Arc::new(e)
}

fn attributions() -> Vec<Attribution> {
    (0..TENANTS)
        .map(|i| Attribution {
            key_id: Some(format!("k{}", i % 100)),
            tenant: Some(format!("t{}", i % 300)),
            feature: Some("search".into()),
            ..Attribution::default()
        })
        .collect()
}

fn admit_settle(e: &Budgets, a: &Attribution, now: i64) {
    let adm = e.admit(&Ask {
        attribution: a,
        model: "gpt-4o",
        worst_case: NanoUsd(2_000),
        minimum: NanoUsd(100),
        now_ms: now,
        ttl_ms: 60_000,
    });
    match adm {
        Admission::Admitted { reservation, .. } | Admission::Fitted { reservation, .. } => {
            debug_assert_eq!(reservation.entries().len(), 4);
            black_box(e.settle(&reservation, NanoUsd(1_000)));
        }
        other => panic!("{other:?}"),
    }
}

/// p50 / p99 of single admit+settle pairs, each timed on its own.
fn percentiles(e: &Budgets, attrs: &[Attribution]) {
    let n = 200_000;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let a = &attrs[i % attrs.len()];
        let t = Instant::now();
        admit_settle(e, a, T0 + (i as i64));
        samples.push(t.elapsed());
    }
    samples.sort();
    let p = |q: f64| samples[((n as f64) * q) as usize];
    println!(
        "admit+settle, 1000 budgets, 4 matching, single thread: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        p(0.50),
        p(0.90),
        p(0.99),
        samples[n - 1]
    );
}

/// 100 policies: 50 tenant ladders on the tenant budgets (utilisation ≈ 0, so out of force),
/// 49 per-tenant burn guards with a tiny threshold (always in force: a downgrade and a cap,
/// reasons formatted on every request) and one org-wide burn alert.
fn policies() -> Policies {
    let p = Policies::new(Arc::new(ManualClock::new(T0)));
    let mut v = Vec::with_capacity(100);
    for i in 0..50 {
        v.push(PolicyDef::from_json(&format!(
            r#"{{"name":"t{i}-ladder","scope":{{"tenant":"t{i}"}},"budget":"t{i}","mode":"enforce","hysteresis_pct":5,"steps":[
              {{"when":{{"utilization_pct":70}},"then":[{{"alert":{{"webhook":"https://hooks.example/t{i}"}}}}]}},
              {{"when":{{"utilization_pct":85}},"then":[{{"downgrade":{{"gpt-4o":"gpt-4o-mini"}}}}]}},
              {{"when":{{"utilization_pct":95}},"then":[{{"cap_max_tokens":256}}]}},
              {{"when":{{"utilization_pct":100}},"then":["block"]}}]}}"#
        )).unwrap());
    }
    for i in 50..99 {
        v.push(PolicyDef::from_json(&format!(
            r#"{{"name":"t{i}-burn","scope":{{"tenant":"t{i}"}},"mode":"enforce","steps":[
              {{"when":{{"burn_rate":{{"usd_per_hour":"0.000001","minutes":15}}}},"then":[{{"downgrade":{{"gpt-4o":"gpt-4o-mini"}}}},{{"cap_max_tokens":512}}]}}]}}"#
        )).unwrap());
    }
    v.push(PolicyDef::from_json(
        r#"{"name":"org-burn","scope":{},"mode":"enforce","steps":[
          {"when":{"burn_rate":{"usd_per_hour":100000,"minutes":60}},"then":[{"alert":{"webhook":"https://hooks.example/org"}}]}]}"#,
    ).unwrap());
    p.replace_all(v).unwrap();
    p
}

/// Admission, policy evaluation, settle and burn-rate recording: the request path's share of
/// the budget and policy engines.
fn admit_evaluate(e: &Budgets, p: &Policies, a: &Attribution, now: i64) -> Decision {
    let adm = e.admit(&Ask {
        attribution: a,
        model: "gpt-4o",
        worst_case: NanoUsd(2_000),
        minimum: NanoUsd(100),
        now_ms: now,
        ttl_ms: 60_000,
    });
    let d = p.evaluate(&EvalContext {
        attribution: a,
        model: "gpt-4o",
        now_ms: now,
        budgets: e,
    });
    if let Some(r) = adm.reservation() {
        black_box(e.settle(r, NanoUsd(1_000)));
    }
    p.record_spend(a, "gpt-4o", NanoUsd(1_000), now);
    d
}

/// p50 / p99 of single admit+evaluate+settle runs, each timed on its own.
fn percentiles_policies(e: &Budgets, p: &Policies, attrs: &[Attribution]) {
    let n = 200_000;
    let mut samples = Vec::with_capacity(n);
    let mut in_force = 0usize;
    for i in 0..n {
        let a = &attrs[i % attrs.len()];
        let t = Instant::now();
        let d = admit_evaluate(e, p, a, T0 + (i as i64));
        samples.push(t.elapsed());
        in_force += usize::from(!d.actions.is_empty());
    }
    samples.sort();
    let q = |q: f64| samples[((n as f64) * q) as usize];
    println!(
        "admit+evaluate+settle, 1000 budgets, 100 policies ({}% of requests with actions): \
         p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        in_force * 100 / n,
        q(0.50),
        q(0.90),
        q(0.99),
        samples[n - 1]
    );
}

/// Requests spread over tenants t0..t99: half hit a ladder, half a burn guard in force.
fn policy_attributions() -> Vec<Attribution> {
    (0..100)
        .map(|i| Attribution {
            key_id: Some(format!("k{i}")),
            tenant: Some(format!("t{i}")),
            feature: Some("search".into()),
            ..Attribution::default()
        })
        .collect()
}

/// 4 rules, 6 counters per request: per key (RPM + TPM), per tenant (TPM), per user of the
/// tenants (RPM, filtered on a model), one org-wide RPM. Limits far above the load, so every
/// request is admitted and the cost measured is the check itself.
fn rate_limits() -> RateLimits {
    let defs: Vec<RateLimitDef> = [
        "{name: per-key, per: key, rpm: 1000000000, tpm: 1000000000000}",
        "{name: per-tenant, per: tenant, tpm: 1000000000000}",
        "{name: per-user, per: user, match: {model: gpt-4o}, rpm: 1000000000}",
        "{name: org, rpm: 1000000000}",
    ]
    .iter()
    .map(|y| serde_yaml_ng::from_str(y).unwrap())
    .collect();
    RateLimits::new(defs, Arc::new(MemoryStore::new())).unwrap()
}

fn rate_attributions() -> Vec<Attribution> {
    (0..1_000)
        .map(|i| Attribution {
            key_id: Some(format!("k{i}")),
            tenant: Some(format!("t{}", i % 300)),
            user: Some(format!("u{i}")),
            ..Attribution::default()
        })
        .collect()
}

fn rate_check(rl: &RateLimits, a: &Attribution, now: i64) {
    let ask = RateAsk {
        attribution: a,
        model: "gpt-4o",
        tokens: 2_000,
        now_ms: now,
    };
    match rl.admit(&ask) {
        RateAdmission::Admitted {
            hold: Some(hold), ..
        } => rl.settle(hold, 1_000),
        other => panic!("{other:?}"),
    }
}

/// p50 / p99 of single rate-limit admit+settle pairs, each timed on its own.
fn percentiles_rate(rl: &RateLimits, attrs: &[Attribution]) {
    let n = 200_000;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let a = &attrs[i % attrs.len()];
        let t = Instant::now();
        rate_check(rl, a, T0 + (i as i64));
        samples.push(t.elapsed());
    }
    samples.sort();
    let q = |q: f64| samples[((n as f64) * q) as usize];
    println!(
        "rate limit admit+settle, 4 rules (6 counters), 1000 keys, single thread: \
         p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        q(0.50),
        q(0.90),
        q(0.99),
        samples[n - 1]
    );
}

fn bench(c: &mut Criterion) {
    let rl = rate_limits();
    let rattrs = rate_attributions();
    percentiles_rate(&rl, &rattrs);
    let e = engine();
    let attrs = attributions();
    percentiles(&e, &attrs);
    let pol = policies();
    let pattrs = policy_attributions();
    percentiles_policies(&e, &pol, &pattrs);

    let mut g = c.benchmark_group("admission");
    let mut i = 0usize;
    g.bench_function("admit+settle/1000 budgets, 4 match", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            admit_settle(&e, &attrs[i % attrs.len()], T0 + (i as i64 % 3_600_000));
        })
    });

    g.bench_function("admit + evaluate/1000 budgets, 100 policies", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(admit_evaluate(
                &e,
                &pol,
                &pattrs[i % pattrs.len()],
                T0 + (i as i64 % 3_600_000),
            ));
        })
    });

    // Fresh counters and time that only moves forward, as in a server (the percentile run
    // above left buckets behind that a clock jumping back would keep alive).
    let rl = rate_limits();
    let mut t = 0i64;
    g.bench_function("ratelimit admit+settle/4 rules, 6 counters", |b| {
        b.iter(|| {
            t += 1;
            rate_check(&rl, &rattrs[t as usize % rattrs.len()], T0 + t);
        })
    });

    // The alternative the index replaces: a linear `Scope::matches` scan of all 1,000.
    let defs = budgets();
    g.bench_function("linear scope scan of 1000 (baseline, matching only)", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let a = &attrs[i % attrs.len()];
            black_box(defs.iter().filter(|d| d.scope.matches(a, "gpt-4o")).count())
        })
    });

    // The store's critical section alone: one atomic reserve + commit over 4 counters.
    let store = MemoryStore::new();
    let entries: Vec<Entry> = (0..4)
        .map(|k| Entry {
            key: CounterKey::new(
                Arc::from(format!("b{k}#0#1")),
                Slot::Calendar {
                    start_ms: 0,
                    end_ms: i64::MAX,
                },
            ),
            limit: NanoUsd(i64::MAX / 2),
            enforce: k < 3,
        })
        .collect();
    g.bench_function("store reserve+commit, 4 counters", |b| {
        b.iter(|| {
            let grant = store
                .try_reserve(&entries, NanoUsd(2_000), NanoUsd(100), T0)
                .unwrap();
            store.commit(&entries, grant.amount, NanoUsd(1_000), T0);
        })
    });

    // Contention: 2 threads (the machine's cores) admitting and settling on the same
    // budgets (same tenant, so the same counters) — the worst case for the single lock.
    for threads in [2usize, 4] {
        g.bench_function(
            format!("admit+settle, {threads} threads, same tenant"),
            |b| b.iter_custom(|iters| contended(&e, threads, iters)),
        );
    }
    g.finish();
}

/// Wall time for `iters` admit+settle pairs spread over `threads` threads, all on one tenant.
fn contended(e: &Arc<Budgets>, threads: usize, iters: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let per = iters.div_ceil(threads as u64);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let e = e.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let a = Attribution {
                    key_id: Some("k1".into()),
                    tenant: Some("t1".into()),
                    feature: Some("search".into()),
                    ..Attribution::default()
                };
                barrier.wait();
                for i in 0..per {
                    admit_settle(&e, &a, T0 + i as i64);
                }
            })
        })
        .collect();
    barrier.wait();
    let t = Instant::now();
    for h in handles {
        h.join().unwrap();
    }
    t.elapsed()
}

criterion_group!(benches, bench);
criterion_main!(benches);
