//! Burn-rate tracking: settled spend per policy scope in one-minute buckets.
//!
//! Each policy with a `burn_rate` trigger owns one ring of `max(minutes)` buckets (at most
//! [`MAX_BURN_MINUTES`](super::def::MAX_BURN_MINUTES) = 1 440, 16 bytes each): memory is bounded
//! by configuration, never by traffic. A bucket remembers which minute it holds, so a stale
//! bucket is recognised and reset lazily — no sweeper.
//!
//! Rate over `N` minutes = spend in the `N` minute buckets ending with the current (partial)
//! minute × 60 ÷ `N`, in nano-USD per hour. The current minute being partial means the window
//! covers between `N − 1` and `N` minutes of history: a burst is seen at once, and ages out
//! exactly `N` minutes after the minute it landed in.

use std::sync::Mutex;

use tollgate_types::NanoUsd;

const MINUTE_MS: i64 = 60_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    minute: i64,
    nanos: i64,
}

/// Minute buckets for one policy scope.
#[derive(Debug)]
pub(crate) struct BurnTracker {
    ring: Mutex<Vec<Bucket>>,
}

impl BurnTracker {
    pub(crate) fn new(minutes: u32) -> Self {
        let len = minutes.max(1) as usize;
        BurnTracker {
            ring: Mutex::new(vec![
                Bucket {
                    minute: i64::MIN,
                    nanos: 0,
                };
                len
            ]),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Bucket>> {
        // A panic elsewhere while holding the lock cannot leave the ring inconsistent (every
        // write is one assignment), so a poisoned lock is simply reused.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds settled spend at `at_ms`. Non-positive amounts and spend older than the ring
    /// (already aged out of every window) are ignored.
    pub(crate) fn record(&self, amount: NanoUsd, at_ms: i64) {
        if amount.0 <= 0 {
            return;
        }
        let m = at_ms.div_euclid(MINUTE_MS);
        let mut ring = self.lock();
        let len = ring.len() as i64;
        let b = &mut ring[m.rem_euclid(len) as usize];
        if b.minute == m {
            b.nanos = b.nanos.saturating_add(amount.0);
        } else if b.minute < m {
            *b = Bucket {
                minute: m,
                nanos: amount.0,
            };
        }
        // b.minute > m: the slot already holds a newer minute, so `m` is older than the ring.
    }

    /// Spend over the last `minutes` (see the module docs), extrapolated per hour.
    pub(crate) fn per_hour(&self, now_ms: i64, minutes: u32) -> NanoUsd {
        let minutes = minutes.max(1);
        let now_m = now_ms.div_euclid(MINUTE_MS);
        let ring = self.lock();
        let len = ring.len() as i64;
        let span = i64::from(minutes).min(len);
        let mut sum: i128 = 0;
        for k in 0..span {
            let m = now_m - k;
            let b = ring[m.rem_euclid(len) as usize];
            if b.minute == m {
                sum += i128::from(b.nanos);
            }
        }
        let per_hour = sum * 60 / i128::from(minutes);
        NanoUsd(i64::try_from(per_hour).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_rises_and_ages_out() {
        let t = BurnTracker::new(10);
        let t0 = 1_000 * MINUTE_MS;
        t.record(NanoUsd(1_000), t0);
        t.record(NanoUsd(1_000), t0 + 30_000);
        // $2000n over a 10-minute window → ×6 per hour.
        assert_eq!(t.per_hour(t0 + 59_000, 10), NanoUsd(12_000));
        // Only 5 minutes looked at: ×12.
        assert_eq!(t.per_hour(t0 + 59_000, 5), NanoUsd(24_000));
        // Still inside at minute +9, gone at minute +10.
        assert_eq!(t.per_hour(t0 + 9 * MINUTE_MS, 10), NanoUsd(12_000));
        assert_eq!(t.per_hour(t0 + 10 * MINUTE_MS, 10), NanoUsd::ZERO);
        // A bucket is reused after a wrap, not added to.
        t.record(NanoUsd(500), t0 + 10 * MINUTE_MS);
        assert_eq!(t.per_hour(t0 + 10 * MINUTE_MS, 10), NanoUsd(3_000));
        // Spend older than the ring is dropped; negative ignored.
        t.record(NanoUsd(7), t0);
        t.record(NanoUsd(-7), t0 + 10 * MINUTE_MS);
        assert_eq!(t.per_hour(t0 + 10 * MINUTE_MS, 10), NanoUsd(3_000));
        assert_eq!(t.len(), 10);
    }
}
