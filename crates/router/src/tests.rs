//! Unit tests: time is injected through `now`, randomness through seeded RNGs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn health(settings: BreakerSettings) -> Arc<Health> {
    Arc::new(Health::new(settings))
}

/// The router never calls the provider, so tests carry no adapter.
type Deployment = crate::Deployment<()>;
type LogicalModel = crate::LogicalModel<()>;
type Router = crate::Router<()>;

fn dep(provider: &str, model: &str, weight: u32) -> Deployment {
    Deployment {
        provider: (),
        provider_name: provider.into(),
        model: model.into(),
        label: format!("{provider}/{model}"),
        weight,
        health: health(BreakerSettings::default()),
        unit_cost: None,
        prompt_cache_ttl: secs(300),
    }
}

fn model(deployments: Vec<Deployment>, strategy: Strategy) -> LogicalModel {
    LogicalModel::new("m".into(), deployments)
        .unwrap()
        .with_strategy(strategy)
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

/// Feeds `n` successes of `total` (and `ttft`) into a deployment.
fn samples(h: &Arc<Health>, n: usize, ttft: Option<Duration>, total: Duration, now: Instant) {
    for _ in 0..n {
        h.start(now).unwrap().success(ttft, total, now);
    }
}

fn fail(h: &Arc<Health>, f: Failure, now: Instant) {
    h.start(now).unwrap().failure(f, now);
}

mod breaker {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            enabled: true,
            consecutive_failures: 3,
            error_rate: 0.5,
            min_requests: 10,
            window: secs(30),
            cooldown: secs(15),
            half_open_probes: 1,
        }
    }

    #[test]
    fn a_disabled_breaker_never_opens() {
        let t = Instant::now();
        let h = health(BreakerSettings {
            enabled: false,
            consecutive_failures: 1,
            ..settings()
        });
        fail(&h, Failure::Transient, t);
        fail(
            &h,
            Failure::RateLimited {
                retry_after: Some(secs(60)),
            },
            t,
        );
        let s = h.snapshot(t);
        assert_eq!(s.state, BreakerState::Closed);
        assert_eq!(s.failures, 2);
        assert!(h.available(t));
    }

    /// A breaker opened at `t` by consecutive failures.
    fn opened(s: BreakerSettings, t: Instant) -> Arc<Health> {
        let h = health(BreakerSettings {
            consecutive_failures: 1,
            ..s
        });
        fail(&h, Failure::Transient, t);
        assert_eq!(h.snapshot(t).state, BreakerState::Open);
        h
    }

    #[test]
    fn opens_after_n_consecutive_failures() {
        let t = Instant::now();
        let h = health(settings());
        fail(&h, Failure::Transient, t);
        fail(&h, Failure::Transient, t);
        samples(&h, 1, None, ms(10), t); // a success resets the streak
        fail(&h, Failure::Transient, t);
        fail(&h, Failure::Transient, t);
        assert!(h.available(t));
        assert_eq!(h.snapshot(t).consecutive_failures, 2);
        fail(&h, Failure::Transient, t);
        assert!(!h.available(t));
        assert!(h.start(t).is_none());
        let s = h.snapshot(t);
        assert_eq!(s.state, BreakerState::Open);
        assert_eq!(s.retry_in_ms, Some(15_000));
        assert_eq!(s.opened_total, 1);
        assert_eq!((s.requests, s.failures), (6, 5));
        // Open until exactly the cooldown has passed.
        assert!(!h.available(t + secs(15) - ms(1)));
        assert!(h.available(t + secs(15)));
        assert_eq!(h.snapshot(t + secs(15)).state, BreakerState::HalfOpen);
    }

    #[test]
    fn opens_on_error_rate_only_with_min_requests() {
        let t = Instant::now();
        let h = health(BreakerSettings {
            consecutive_failures: 100,
            ..settings()
        });
        for _ in 0..4 {
            fail(&h, Failure::Transient, t);
        }
        samples(&h, 5, None, ms(10), t);
        // 4 of 9 failed: under min_requests, and under the rate anyway.
        assert!(h.available(t));
        assert_eq!(h.snapshot(t).window_error_rate, Some(4.0 / 9.0));
        fail(&h, Failure::Transient, t); // 5 of 10 = 0.5 ≥ 0.5
        assert_eq!(h.snapshot(t).state, BreakerState::Open);

        // 100 % failures but fewer than min_requests: stays closed.
        let h = health(BreakerSettings {
            consecutive_failures: 100,
            ..settings()
        });
        for _ in 0..9 {
            fail(&h, Failure::Transient, t);
        }
        assert!(h.available(t));
        assert_eq!(h.snapshot(t).window_error_rate, Some(1.0));
    }

    #[test]
    fn old_failures_leave_the_window() {
        let t = Instant::now();
        let h = health(BreakerSettings {
            consecutive_failures: 100,
            ..settings()
        });
        for _ in 0..9 {
            fail(&h, Failure::Transient, t);
        }
        // 31 s later the 9 failures are out of the 30 s window: one more is 1 of 1 < min.
        let later = t + secs(31);
        assert_eq!(h.snapshot(later).window_error_rate, None);
        fail(&h, Failure::Transient, later);
        assert!(h.available(later));
        assert_eq!(h.snapshot(later).window_error_rate, Some(1.0));
        // Within the window they still count.
        let h = health(BreakerSettings {
            consecutive_failures: 100,
            ..settings()
        });
        for _ in 0..9 {
            fail(&h, Failure::Transient, t);
        }
        fail(&h, Failure::Transient, t + secs(20));
        assert!(!h.available(t + secs(20)));
    }

    #[test]
    fn half_open_admits_exactly_the_probe_count() {
        let t = Instant::now();
        let h = opened(
            BreakerSettings {
                half_open_probes: 2,
                ..settings()
            },
            t,
        );
        let t1 = t + secs(15);
        assert!(h.available(t1));
        let p1 = h.start(t1).unwrap();
        assert!(h.available(t1));
        let p2 = h.start(t1).unwrap();
        assert!(p1.is_probe() && p2.is_probe());
        assert!(!h.available(t1));
        assert!(h.start(t1).is_none());
        assert_eq!(h.in_flight(), 2);
        drop((p1, p2));
    }

    #[test]
    fn probe_success_closes() {
        let t = Instant::now();
        let h = opened(settings(), t);
        let t1 = t + secs(16);
        h.start(t1).unwrap().success(None, ms(20), t1);
        let s = h.snapshot(t1);
        assert_eq!(s.state, BreakerState::Closed);
        assert_eq!(s.consecutive_failures, 0);
        // The window was cleared: the failure that opened the breaker no longer counts.
        assert_eq!(s.window_error_rate, None);
        let a = h.start(t1).unwrap();
        assert!(!a.is_probe());
        let b = h.start(t1).unwrap();
        drop((a, b));
    }

    #[test]
    fn probe_failure_reopens_with_a_fresh_cooldown() {
        let t = Instant::now();
        let h = opened(settings(), t);
        let t1 = t + secs(20);
        h.start(t1).unwrap().failure(Failure::Transient, t1);
        let s = h.snapshot(t1);
        assert_eq!(s.state, BreakerState::Open);
        assert_eq!(s.retry_in_ms, Some(15_000));
        assert_eq!(s.opened_total, 2);
        assert!(!h.available(t1 + secs(15) - ms(1)));
        assert!(h.available(t1 + secs(15)));
    }

    #[test]
    fn stale_probe_cannot_decide_a_later_half_open() {
        let t = Instant::now();
        let h = opened(
            BreakerSettings {
                half_open_probes: 2,
                ..settings()
            },
            t,
        );
        let t1 = t + secs(15);
        let p1 = h.start(t1).unwrap();
        let p2 = h.start(t1).unwrap();
        p1.failure(Failure::Transient, t1); // re-opens
        p2.success(None, ms(5), t1); // from the old half-open period: ignored
        assert_eq!(h.snapshot(t1).state, BreakerState::Open);
        // Next half-open: both slots free again.
        let t2 = t1 + secs(15);
        let a = h.start(t2).unwrap();
        let b = h.start(t2).unwrap();
        assert!(h.start(t2).is_none());
        drop((a, b));
    }

    #[test]
    fn rate_limited_opens_for_exactly_retry_after() {
        let t = Instant::now();
        let h = health(settings());
        fail(
            &h,
            Failure::RateLimited {
                retry_after: Some(secs(7)),
            },
            t,
        );
        let s = h.snapshot(t);
        assert_eq!(s.state, BreakerState::Open);
        assert_eq!(s.retry_in_ms, Some(7_000));
        assert!(!h.available(t + secs(7) - ms(1)));
        assert!(h.available(t + secs(7)));

        // Without Retry-After: the cooldown.
        let h = health(settings());
        fail(&h, Failure::RateLimited { retry_after: None }, t);
        assert!(!h.available(t + secs(15) - ms(1)));
        assert!(h.available(t + secs(15)));
    }

    #[test]
    fn late_rate_limit_extends_but_never_shortens_an_open_period() {
        let t = Instant::now();
        let h = health(settings());
        let late = h.start(t).unwrap();
        let later = h.start(t).unwrap();
        fail(
            &h,
            Failure::RateLimited {
                retry_after: Some(secs(10)),
            },
            t,
        );
        late.failure(
            Failure::RateLimited {
                retry_after: Some(secs(1)),
            },
            t + secs(1),
        );
        assert_eq!(h.snapshot(t + secs(1)).retry_in_ms, Some(9_000));
        later.failure(
            Failure::RateLimited {
                retry_after: Some(secs(30)),
            },
            t + secs(2),
        );
        assert_eq!(h.snapshot(t + secs(2)).retry_in_ms, Some(30_000));
        assert_eq!(h.snapshot(t).opened_total, 1);
    }

    #[test]
    fn dropped_attempt_frees_its_probe_slot_and_counts_nothing() {
        let t = Instant::now();
        let h = opened(settings(), t);
        let t1 = t + secs(15);
        let before = h.snapshot(t1);
        let p = h.start(t1).unwrap();
        assert!(h.start(t1).is_none());
        drop(p);
        let after = h.snapshot(t1);
        assert_eq!(after.state, BreakerState::HalfOpen);
        assert_eq!(
            (after.requests, after.failures),
            (before.requests, before.failures)
        );
        assert_eq!(h.in_flight(), 0);
        let p = h.start(t1).unwrap();
        assert!(p.is_probe());
        drop(p);
    }

    #[test]
    fn in_flight_counts_until_reported_or_dropped() {
        let t = Instant::now();
        let h = health(settings());
        let a = h.start(t).unwrap();
        let b = h.start(t).unwrap();
        let c = h.start(t).unwrap();
        assert_eq!(h.in_flight(), 3);
        assert_eq!(h.snapshot(t).in_flight, 3);
        a.success(None, ms(1), t);
        assert_eq!(h.in_flight(), 2);
        b.failure(Failure::Transient, t);
        assert_eq!(h.in_flight(), 1);
        drop(c);
        assert_eq!(h.in_flight(), 0);
    }

    #[test]
    fn ewma_maths() {
        let t = Instant::now();
        let h = health(settings());
        assert_eq!(h.snapshot(t).ewma_latency_ms, None);
        samples(&h, 1, None, ms(100), t);
        let s = h.snapshot(t);
        assert_eq!(s.ewma_latency_ms, Some(100.0));
        assert_eq!(s.ewma_ttft_ms, None);
        samples(&h, 1, Some(ms(40)), ms(200), t);
        samples(&h, 1, Some(ms(20)), ms(200), t);
        let s = h.snapshot(t);
        // 100 → 0.3·200 + 0.7·100 = 130 → 0.3·200 + 0.7·130 = 151
        assert!((s.ewma_latency_ms.unwrap() - 151.0).abs() < 1e-9);
        // First TTFT sample initialises: 40 → 0.3·20 + 0.7·40 = 34
        assert!((s.ewma_ttft_ms.unwrap() - 34.0).abs() < 1e-9);
        // Failures do not move the EWMAs.
        fail(&h, Failure::Transient, t);
        assert_eq!(h.snapshot(t).ewma_latency_ms, s.ewma_latency_ms);
    }

    #[test]
    fn snapshot_serialises_snake_case() {
        let t = Instant::now();
        let h = opened(settings(), t);
        let v = serde_json::to_value(h.snapshot(t)).unwrap();
        assert_eq!(v["state"], "open");
        assert_eq!(v["retry_in_ms"], 15_000);
        assert_eq!(v["opened_total"], 1);
        let v = serde_json::to_value(h.snapshot(t + secs(15))).unwrap();
        assert_eq!(v["state"], "half_open");
        assert_eq!(v["retry_in_ms"], serde_json::Value::Null);
    }

    mod prop {
        use super::*;
        use proptest::prelude::{Just, any, prop_assert, prop_assert_eq, prop_oneof, proptest};
        use proptest::strategy::Strategy as _;

        #[derive(Debug, Clone)]
        enum Op {
            Start,
            Success(usize),
            Failure(usize, bool),
            Drop(usize),
            Advance(u64),
        }

        fn op() -> impl proptest::strategy::Strategy<Value = Op> {
            prop_oneof![
                3 => Just(Op::Start),
                2 => any::<usize>().prop_map(Op::Success),
                2 => (any::<usize>(), any::<bool>()).prop_map(|(i, rl)| Op::Failure(i, rl)),
                1 => any::<usize>().prop_map(Op::Drop),
                1 => (0u64..20_000).prop_map(Op::Advance),
            ]
        }

        proptest! {
            #[test]
            fn in_flight_returns_to_zero(ops in proptest::collection::vec(op(), 0..200)) {
                let h = health(BreakerSettings {
                    consecutive_failures: 2,
                    min_requests: 3,
                    cooldown: secs(5),
                    half_open_probes: 2,
                    ..BreakerSettings::default()
                });
                let mut now = Instant::now();
                let mut live: Vec<Attempt> = Vec::new();
                for op in ops {
                    match op {
                        Op::Start => live.extend(h.start(now)),
                        Op::Success(i) if !live.is_empty() => {
                            live.swap_remove(i % live.len()).success(Some(ms(1)), ms(2), now)
                        }
                        Op::Failure(i, rl) if !live.is_empty() => {
                            let f = if rl {
                                Failure::RateLimited { retry_after: Some(ms(3_000)) }
                            } else {
                                Failure::Transient
                            };
                            live.swap_remove(i % live.len()).failure(f, now)
                        }
                        Op::Drop(i) if !live.is_empty() => drop(live.swap_remove(i % live.len())),
                        Op::Advance(d) => now += ms(d),
                        _ => {}
                    }
                    prop_assert_eq!(h.in_flight() as usize, live.len());
                }
                live.clear();
                prop_assert_eq!(h.in_flight(), 0);
                // No leaked probe slot: once the cooldown is over, a request is admitted.
                prop_assert!(h.available(now + secs(3_600)));
            }
        }
    }
}

mod strategies {
    use super::*;

    fn first_counts(m: &LogicalModel, req: &PlanRequest<'_>, runs: usize) -> Vec<usize> {
        let mut rng = rng();
        let now = Instant::now();
        let mut counts = vec![0; m.deployments.len()];
        for _ in 0..runs {
            counts[m.plan_with(req, now, &mut rng)[0]] += 1;
        }
        counts
    }

    #[test]
    fn weighted_draws_the_first_by_weight_then_descending_weight() {
        let m = model(
            vec![
                dep("p", "a", 1),
                dep("p", "b", 3),
                dep("p", "c", 2),
                dep("p", "z", 0),
            ],
            Strategy::Weighted,
        );
        let counts = first_counts(&m, &PlanRequest::default(), 6_000);
        assert_eq!(counts[3], 0, "weight 0 is never drawn first");
        for (i, w) in [(0, 1.0), (1, 3.0), (2, 2.0)] {
            let share = counts[i] as f64 / 6_000.0;
            assert!((share - w / 6.0).abs() < 0.03, "{i}: {share}");
        }
        let mut rng = rng();
        let now = Instant::now();
        for _ in 0..50 {
            let plan = m.plan_with(&PlanRequest::default(), now, &mut rng);
            let rest: Vec<usize> = [1, 2, 0, 3].into_iter().filter(|&i| i != plan[0]).collect();
            assert_eq!(plan[1..], rest[..]);
        }
    }

    #[test]
    fn weighted_ties_break_randomly() {
        let m = model(
            vec![dep("p", "a", 5), dep("p", "b", 1), dep("p", "c", 1)],
            Strategy::Weighted,
        );
        let mut rng = rng();
        let now = Instant::now();
        let (mut bc, mut cb) = (0, 0);
        for _ in 0..1_000 {
            match m.plan_with(&PlanRequest::default(), now, &mut rng)[..] {
                [0, 1, 2] => bc += 1,
                [0, 2, 1] => cb += 1,
                _ => {}
            }
        }
        assert!(bc > 250 && cb > 250, "{bc} {cb}");
    }

    #[test]
    fn a_zero_weight_deployment_is_never_first() {
        let m = model(vec![dep("p", "a", 0), dep("p", "b", 2)], Strategy::Weighted);
        for _ in 0..20 {
            let first = m.plan(&PlanRequest::default(), Instant::now())[0];
            assert_eq!(m.deployments[first].label, "p/b");
        }
        assert!(LogicalModel::new("z".into(), vec![dep("p", "a", 0)]).is_none());
        assert_eq!(m.total_weight(), 2);
        let r = Router::new([m]);
        assert!(r.get("m").is_some());
        assert_eq!(r.names().collect::<Vec<_>>(), vec!["m"]);
    }

    #[test]
    fn latency_explores_unknowns_then_ranks_by_score() {
        let now = Instant::now();
        let m = model(
            vec![dep("p", "a", 1), dep("p", "b", 1), dep("p", "c", 1)],
            Strategy::Latency,
        );
        let h = |i: usize| &m.deployments[i].health;
        samples(h(0), 3, Some(ms(10)), ms(100), now);
        samples(h(1), 3, Some(ms(40)), ms(50), now);
        samples(h(2), 2, Some(ms(1)), ms(1), now); // only 2 samples: still unknown
        let mut rng = rng();
        let runs = 2_000;
        let mut expected = 0;
        for _ in 0..runs {
            if m.plan_with(&PlanRequest::default(), now, &mut rng) == [2, 1, 0] {
                expected += 1;
            }
        }
        // Everything but ε-exploration (5 %, of which 1/3 lands on the same first anyway).
        assert!(expected as f64 / runs as f64 > 0.93, "{expected}");

        // Streams rank by TTFT: a (10 ms) before b (40 ms).
        let stream = PlanRequest {
            stream: true,
            ..PlanRequest::default()
        };
        let mut hits = 0;
        for _ in 0..runs {
            if m.plan_with(&stream, now, &mut rng) == [2, 0, 1] {
                hits += 1;
            }
        }
        assert!(hits as f64 / runs as f64 > 0.93, "{hits}");

        // Load: b at 50 ms with 2 in flight scores 150 > a's 100.
        samples(h(2), 1, Some(ms(1)), ms(1), now);
        let busy = [h(1).start(now).unwrap(), h(1).start(now).unwrap()];
        let mut hits = 0;
        for _ in 0..runs {
            if m.plan_with(&PlanRequest::default(), now, &mut rng) == [2, 0, 1] {
                hits += 1;
            }
        }
        assert!(hits as f64 / runs as f64 > 0.93, "{hits}");
        drop(busy);
    }

    #[test]
    fn latency_explores_about_five_percent() {
        let now = Instant::now();
        let m = model(
            vec![dep("p", "a", 1), dep("p", "b", 1), dep("p", "c", 1)],
            Strategy::Latency,
        );
        for (i, d) in m.deployments.iter().enumerate() {
            samples(&d.health, 3, None, ms(10 * (i as u64 + 1)), now);
        }
        let counts = first_counts(&m, &PlanRequest::default(), 20_000);
        // A random first is a non-best one 2/3 of the time: 5 % × 2/3 ≈ 3.3 %.
        let off = (counts[1] + counts[2]) as f64 / 20_000.0;
        assert!((0.025..0.045).contains(&off), "{off}");
        assert!(counts[1] > 0 && counts[2] > 0);
    }

    #[test]
    fn cost_orders_by_unit_cost_unpriced_last_ties_by_weight() {
        let mut ds = vec![
            dep("p", "a", 1),
            dep("p", "b", 1),
            dep("p", "c", 1),
            dep("p", "d", 5),
        ];
        for (d, c) in ds.iter_mut().zip([Some(300), None, Some(100), Some(100)]) {
            d.unit_cost = c;
        }
        let m = model(ds, Strategy::Cost);
        let mut rng = rng();
        for _ in 0..20 {
            assert_eq!(
                m.plan_with(&PlanRequest::default(), Instant::now(), &mut rng),
                [3, 2, 0, 1]
            );
        }
    }

    #[test]
    fn least_inflight_orders_by_load_with_random_ties() {
        let now = Instant::now();
        let m = model(
            vec![dep("p", "a", 1), dep("p", "b", 1), dep("p", "c", 1)],
            Strategy::LeastInflight,
        );
        let counts = first_counts(&m, &PlanRequest::default(), 3_000);
        assert!(counts.iter().all(|&c| c > 850), "{counts:?}");
        let h = |i: usize| &m.deployments[i].health;
        let busy = [
            h(0).start(now).unwrap(),
            h(0).start(now).unwrap(),
            h(2).start(now).unwrap(),
        ];
        assert_eq!(m.plan(&PlanRequest::default(), now), [1, 2, 0]);
        drop(busy);
        let counts = first_counts(&m, &PlanRequest::default(), 300);
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    }

    #[test]
    fn pinned_label_or_provider_comes_first() {
        let mut ds = vec![
            dep("p1", "a", 1),
            dep("p2", "b", 1),
            dep("p1", "c", 1),
            dep("p3", "d", 1),
        ];
        for (d, c) in ds.iter_mut().zip([10, 20, 30, 5]) {
            d.unit_cost = Some(c);
        }
        let m = model(ds, Strategy::Cost);
        let now = Instant::now();
        let pin = |p| PlanRequest {
            pinned: Some(p),
            ..PlanRequest::default()
        };
        assert_eq!(m.plan(&pin("p2/b"), now), [1, 3, 0, 2]);
        assert_eq!(m.plan(&pin("p1"), now), [0, 2, 3, 1]);
        assert_eq!(m.plan(&pin("nobody"), now), [3, 0, 1, 2]);
        // Weighted draws among the pinned ones only.
        let m = model(
            vec![dep("p1", "a", 100), dep("p2", "b", 1), dep("p2", "c", 1)],
            Strategy::Weighted,
        );
        let counts = first_counts(&m, &pin("p2"), 500);
        assert_eq!(counts[0], 0);
    }

    #[test]
    fn unavailable_deployments_go_last_even_when_pinned() {
        let now = Instant::now();
        let mut ds = vec![dep("p1", "a", 1), dep("p2", "b", 1), dep("p3", "c", 1)];
        for (d, c) in ds.iter_mut().zip([1, 2, 3]) {
            d.unit_cost = Some(c);
        }
        let m = model(ds, Strategy::Cost);
        fail(
            &m.deployments[0].health,
            Failure::RateLimited {
                retry_after: Some(secs(10)),
            },
            now,
        );
        assert_eq!(m.plan(&PlanRequest::default(), now), [1, 2, 0]);
        let pinned = PlanRequest {
            pinned: Some("p1"),
            ..PlanRequest::default()
        };
        assert_eq!(m.plan(&pinned, now), [1, 2, 0]);
        assert_eq!(m.plan(&pinned, now + secs(10)), [0, 1, 2]);
    }

    #[test]
    fn plans_beyond_the_inline_size() {
        let ds = (0..40u32)
            .map(|i| dep("p", &format!("m{i}"), i + 1))
            .collect();
        let m = model(ds, Strategy::LeastInflight);
        let mut plan = m.plan(&PlanRequest::default(), Instant::now());
        plan.sort_unstable();
        assert_eq!(plan, (0..40).collect::<Vec<_>>());
    }
}

mod stickiness {
    use super::*;

    fn priced() -> LogicalModel {
        let mut ds = vec![dep("p", "a", 1), dep("p", "b", 1), dep("p", "c", 1)];
        for (d, c) in ds.iter_mut().zip([1, 2, 3]) {
            d.unit_cost = Some(c);
        }
        ds[2].prompt_cache_ttl = secs(60);
        model(ds, Strategy::Cost)
    }

    fn key(k: u64) -> PlanRequest<'static> {
        PlanRequest {
            sticky: Some(k),
            ..PlanRequest::default()
        }
    }

    #[test]
    fn hit_expiry_refresh_and_move() {
        let t = Instant::now();
        let m = priced();
        m.stick(42, 2, t);
        assert_eq!(m.plan(&key(42), t + secs(59)), [2, 0, 1]);
        assert_eq!(m.plan(&key(7), t), [0, 1, 2], "another key is not stuck");
        assert_eq!(m.plan(&PlanRequest::default(), t), [0, 1, 2]);
        assert_eq!(m.sticky_stats().hits, 1);
        // Expired after the deployment's 60 s prompt-cache TTL.
        assert_eq!(m.plan(&key(42), t + secs(60)), [0, 1, 2]);
        // Each use refreshes.
        m.stick(42, 2, t + secs(50));
        assert_eq!(m.plan(&key(42), t + secs(100)), [2, 0, 1]);
        assert_eq!(m.sticky_stats().moves, 0);
        // After expiry the request went to `a`: a move.
        m.stick(42, 0, t + secs(200));
        let s = m.sticky_stats();
        assert_eq!((s.entries, s.hits, s.moves), (1, 2, 1));
        // `a` has a 300 s TTL.
        assert_eq!(m.plan(&key(42), t + secs(499)), [0, 1, 2]);
        assert_eq!(m.sticky_stats().hits, 3);
    }

    #[test]
    fn pinned_beats_sticky_and_sticky_leads_inside_the_pin() {
        let t = Instant::now();
        let m = priced();
        m.stick(1, 2, t);
        let req = |pinned| PlanRequest {
            pinned: Some(pinned),
            sticky: Some(1),
            stream: false,
        };
        assert_eq!(m.plan(&req("p/b"), t), [1, 2, 0]);
        assert_eq!(m.plan(&req("p"), t), [2, 0, 1]);
    }

    #[test]
    fn unavailable_sticky_deployment_is_not_a_hit() {
        let t = Instant::now();
        let m = priced();
        m.stick(1, 2, t);
        fail(
            &m.deployments[2].health,
            Failure::RateLimited { retry_after: None },
            t,
        );
        assert_eq!(m.plan(&key(1), t), [0, 1, 2]);
        assert_eq!(m.sticky_stats().hits, 0);
    }

    #[test]
    fn the_table_stays_bounded() {
        let t = Instant::now();
        let mut m = priced().with_stickiness(Some(StickySettings { max_entries: 16 }));
        // Equal TTLs, so the oldest entries are the ones closest to expiry.
        m.deployments[2].prompt_cache_ttl = secs(300);
        for k in 0..1_000u64 {
            m.stick(k, (k % 3) as usize, t + ms(k));
            assert!(m.sticky_stats().entries <= 16);
        }
        // The newest keys survive eviction; the oldest are gone.
        let now = t + ms(1_000);
        assert_eq!(m.plan(&key(998), now)[0], 2);
        assert_eq!(m.plan(&key(997), now)[0], 1);
        m.stick(0, 1, now);
        assert_eq!(
            m.sticky_stats().moves,
            0,
            "key 0 was evicted, so this is new"
        );
        // Expired entries are swept first.
        let m = priced().with_stickiness(Some(StickySettings { max_entries: 4 }));
        for k in 0..4 {
            m.stick(k, 0, t);
        }
        m.stick(100, 1, t + secs(400));
        assert_eq!(m.sticky_stats().entries, 1);
    }

    #[test]
    fn disabled_stickiness_does_nothing() {
        let t = Instant::now();
        let m = priced().with_stickiness(None);
        m.stick(1, 2, t);
        assert_eq!(m.plan(&key(1), t), [0, 1, 2]);
        assert_eq!(m.sticky_stats(), StickyStats::default());
        // Out-of-range deployments are ignored.
        let m = priced();
        m.stick(1, 99, t);
        assert_eq!(m.sticky_stats().entries, 0);
    }
}

mod retries {
    use super::*;
    use crate::retry::backoff_with;

    #[test]
    fn budget_allows_ratio_of_requests() {
        let t = Instant::now();
        let b = RetryBudget::new(0.2, 0, secs(10));
        assert!(!b.try_withdraw(t));
        for _ in 0..100 {
            b.deposit(t);
        }
        for i in 0..20 {
            assert!(b.try_withdraw(t + ms(i)), "{i}");
        }
        assert!(!b.try_withdraw(t + secs(1)));
        b.deposit(t + secs(2));
        b.deposit(t + secs(2));
        b.deposit(t + secs(2));
        b.deposit(t + secs(2));
        b.deposit(t + secs(2));
        assert!(b.try_withdraw(t + secs(2)));
        assert!(!b.try_withdraw(t + secs(2)));
        // The first 100 deposits and 20 withdrawals leave the window together.
        assert!(!b.try_withdraw(t + secs(10)));
        for _ in 0..5 {
            b.deposit(t + secs(11));
        }
        assert!(b.try_withdraw(t + secs(11)));
    }

    #[test]
    fn budget_floor_per_second() {
        let t = Instant::now();
        let b = RetryBudget::new(0.2, 10, secs(10));
        for i in 0..100 {
            assert!(b.try_withdraw(t + ms(i * 10)), "{i}");
        }
        assert!(!b.try_withdraw(t + secs(1)));
        // A window later the floor is back.
        assert!(b.try_withdraw(t + secs(10)));
        let never = RetryBudget::new(0.0, 0, secs(10));
        never.deposit(t);
        assert!(!never.try_withdraw(t));
    }

    #[test]
    fn backoff_bounds() {
        let mut rng = rng();
        let base = ms(100);
        let max = secs(10);
        for _ in 0..500 {
            assert!(backoff_with(&mut rng, 0, base, max, None) <= ms(100));
            assert!(backoff_with(&mut rng, 3, base, max, None) <= ms(800));
            assert!(backoff_with(&mut rng, 10, base, max, None) <= max);
            assert!(backoff_with(&mut rng, u32::MAX, base, max, None) <= max);
            assert!(backoff(3, base, max, None) <= ms(800));
        }
        // Full jitter: the mean is half the cap.
        let mean = (0..4_000)
            .map(|_| backoff_with(&mut rng, 3, base, max, None).as_secs_f64())
            .sum::<f64>()
            / 4_000.0;
        assert!((mean - 0.4).abs() < 0.03, "{mean}");
    }

    #[test]
    fn backoff_honours_retry_after() {
        let mut rng = rng();
        let (base, max) = (ms(100), secs(10));
        for _ in 0..200 {
            assert_eq!(backoff_with(&mut rng, 0, base, max, Some(secs(2))), secs(2));
            let d = backoff_with(&mut rng, 8, base, max, Some(ms(50)));
            assert!(d >= ms(50) && d <= max);
        }
        assert!(
            (0..200).any(|_| backoff_with(&mut rng, 8, base, max, Some(ms(50))) > ms(50)),
            "jitter above Retry-After wins"
        );
    }
}
