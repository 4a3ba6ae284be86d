//! Cost of `LogicalModel::plan` per strategy, 4 deployments with live health.
//!
//! `cargo bench -p tollgate-router --bench plan -- --quick`. `plan` runs on every request, so
//! besides criterion's means this prints p50/p99 of single calls timed one by one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmarks may panic

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate_router::{BreakerSettings, Deployment, Health, LogicalModel, PlanRequest, Strategy};

// `plan` never touches the provider handle, so the bench carries none.
fn model(strategy: Strategy) -> LogicalModel<()> {
    let now = Instant::now();
    let deployments = (0..4u32)
        .map(|i| {
            let provider = format!("p{i}");
            let health = Arc::new(Health::new(BreakerSettings::default()));
            for _ in 0..5 {
                let ms = Duration::from_millis(u64::from(20 * (i + 1)));
                health.start(now).unwrap().success(Some(ms / 4), ms, now);
            }
            Deployment {
                provider: (),
                provider_name: provider.clone(),
                model: format!("m{i}"),
                label: format!("{provider}/m{i}"),
                weight: i + 1,
                health,
                unit_cost: Some(1_000 * u64::from(4 - i)),
                prompt_cache_ttl: Duration::from_secs(300),
            }
        })
        .collect();
    LogicalModel::new("m".into(), deployments)
        .unwrap()
        .with_strategy(strategy)
}

fn percentiles(name: &str, m: &LogicalModel<()>, req: &PlanRequest<'_>) {
    let mut samples: Vec<u128> = (0..50_000)
        .map(|_| {
            let t = Instant::now();
            black_box(m.plan(black_box(req), t));
            t.elapsed().as_nanos()
        })
        .collect();
    samples.sort_unstable();
    let p = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "{name}: p50 {} ns, p99 {} ns (single calls, incl. timer)",
        p(0.5),
        p(0.99)
    );
}

fn bench(c: &mut Criterion) {
    let plain = PlanRequest::default();
    for strategy in Strategy::ALL {
        let m = model(strategy);
        c.bench_function(&format!("plan/{strategy}"), |b| {
            b.iter(|| m.plan(black_box(&plain), Instant::now()))
        });
        percentiles(&format!("plan/{strategy}"), &m, &plain);
    }
    // Pin + sticky hit + stream: the most work a plan does.
    let m = model(Strategy::Latency);
    m.stick(7, 2, Instant::now());
    let full = PlanRequest {
        pinned: Some("p1"),
        sticky: Some(7),
        stream: true,
    };
    c.bench_function("plan/latency+pinned+sticky", |b| {
        b.iter(|| m.plan(black_box(&full), Instant::now()))
    });
    percentiles("plan/latency+pinned+sticky", &m, &full);
}

criterion_group!(benches, bench);
criterion_main!(benches);
