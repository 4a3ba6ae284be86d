//! Retry budget and backoff: how many retries the gateway may add, and how long each waits.
//!
//! Retries multiply load exactly when a provider is struggling. The budget (Finagle/linkerd
//! style) caps them at a fraction of the original traffic: every original request deposits,
//! every retry or fallback attempt withdraws one, and a withdrawal succeeds only while
//! `withdrawals ≤ ratio × deposits + min_per_sec × window` over the last `window`, so a retry
//! storm is bounded to `ratio` extra load, while a floor still lets low-traffic models retry.
//! Counts live in [`BUDGET_BUCKETS`] time buckets (constant memory; the effective window is
//! between 9/10 of `window` and all of it).

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng;

/// Time buckets in a retry budget's window.
pub const BUDGET_BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Bucket number + 1; 0 = never used.
    stamp: u64,
    deposits: u64,
    withdrawals: u64,
}

#[derive(Debug)]
struct Ring {
    origin: Option<Instant>,
    slots: [Bucket; BUDGET_BUCKETS],
}

#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    /// `min_per_sec × window`, precomputed.
    floor: f64,
    bucket: Duration,
    ring: Mutex<Ring>,
}

impl RetryBudget {
    /// Callers' defaults: `RetryBudget::new(0.2, 10, Duration::from_secs(10))`.
    pub fn new(ratio: f64, min_per_sec: u32, window: Duration) -> RetryBudget {
        RetryBudget {
            ratio: if ratio.is_finite() {
                ratio.max(0.0)
            } else {
                0.0
            },
            floor: f64::from(min_per_sec) * window.as_secs_f64(),
            bucket: (window / BUDGET_BUCKETS as u32).max(Duration::from_millis(1)),
            ring: Mutex::new(Ring {
                origin: None,
                slots: [Bucket::default(); BUDGET_BUCKETS],
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current bucket, reset if it held an older period.
    fn current<'r>(&self, ring: &'r mut Ring, now: Instant) -> &'r mut Bucket {
        let origin = *ring.origin.get_or_insert(now);
        let stamp = stamp(origin, now, self.bucket);
        let slot = &mut ring.slots[(stamp % BUDGET_BUCKETS as u64) as usize];
        if slot.stamp != stamp {
            *slot = Bucket {
                stamp,
                ..Bucket::default()
            };
        }
        slot
    }

    /// Records one original request.
    pub fn deposit(&self, now: Instant) {
        let mut ring = self.lock();
        let b = self.current(&mut ring, now);
        b.deposits = b.deposits.saturating_add(1);
    }

    /// Takes one retry from the budget; `false` (and nothing taken) when it is spent.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let mut ring = self.lock();
        let b = self.current(&mut ring, now);
        let current = b.stamp;
        let (deposits, withdrawals) = ring
            .slots
            .iter()
            .filter(|b| {
                b.stamp != 0 && b.stamp <= current && current - b.stamp < BUDGET_BUCKETS as u64
            })
            .fold((0u64, 0u64), |(d, w), b| {
                (d + b.deposits, w + b.withdrawals)
            });
        if (withdrawals + 1) as f64 > self.ratio * deposits as f64 + self.floor {
            return false;
        }
        let b = self.current(&mut ring, now);
        b.withdrawals = b.withdrawals.saturating_add(1);
        true
    }
}

fn stamp(origin: Instant, now: Instant, bucket: Duration) -> u64 {
    let n = now.saturating_duration_since(origin).as_nanos() / bucket.as_nanos();
    u64::try_from(n).unwrap_or(u64::MAX - 1) + 1
}

/// Exponential backoff with full jitter: uniform in `[0, min(max, base·2^retry)]`; when the
/// provider sent `Retry-After`, wait `max(retry_after, jitter)` (the caller decides whether a
/// `Retry-After` is too long to wait for at all).
pub fn backoff(
    retry: u32,
    base: Duration,
    max: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    backoff_with(&mut rand::rng(), retry, base, max, retry_after)
}

pub(crate) fn backoff_with<R: Rng + ?Sized>(
    rng: &mut R,
    retry: u32,
    base: Duration,
    max: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    let cap = base
        .checked_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(Duration::MAX)
        .min(max);
    let cap_nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    let jitter = Duration::from_nanos(rng.random_range(0..=cap_nanos));
    match retry_after {
        Some(ra) => ra.max(jitter),
        None => jitter,
    }
}
