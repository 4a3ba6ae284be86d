//! Deterministic fault injection.
//!
//! Rates are exact rather than random so tests can assert counts: for a fault kind with rate
//! `r`, the `k`-th request (0-based) evaluated for that kind is faulted iff
//! `floor((k+1)·r) > floor(k·r)`. Over any run of `N` consecutive requests from the start,
//! exactly `floor(N·r)` are faulted (e.g. rate 0.3 over 10 requests: exactly 3, the 4th, 7th
//! and 10th).
//!
//! `fail_first: N` comes before every rate: the first `N` faultable requests after the
//! configuration was set fail, whatever the rates say, and are not counted by them. Kinds are
//! then evaluated in order reset, hang, fail, content filter (generation requests only), and
//! for streams cut, then stream error; a request faulted by one kind is not evaluated for the
//! later ones, so each kind's counter advances only over the requests that reached it.
//! Counters (and the `fail_first` allowance) restart when the configuration is replaced, so a
//! script that sets a rate sees the pattern from its first request.
//!
//! The arithmetic is integer (rates are rounded to parts per billion) so `0.29 × 100` is 29,
//! not 28 as float rounding could make it.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::SimConfig;

/// Fault decided for one request before it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    Reset,
    Hang,
    Fail,
    /// Refused with the route's content-policy answer.
    ContentFilter,
}

#[derive(Debug, Default)]
pub(crate) struct FaultCounters {
    reset: AtomicU64,
    hang: AtomicU64,
    fail: AtomicU64,
    content_filter: AtomicU64,
    cut: AtomicU64,
    stream_error: AtomicU64,
    /// Requests still to fail under `fail_first`.
    fail_first_left: AtomicU64,
}

const SCALE: u128 = 1_000_000_000;

fn rate_to_ppb(rate: f64) -> u128 {
    if rate.is_nan() || rate <= 0.0 {
        0
    } else if rate >= 1.0 {
        SCALE
    } else {
        (rate * SCALE as f64).round() as u128
    }
}

/// Whether request number `k` is faulted at `rate` (see the module doc).
pub(crate) fn is_hit(k: u64, rate: f64) -> bool {
    let ppb = rate_to_ppb(rate);
    let k = u128::from(k);
    ((k + 1) * ppb) / SCALE > (k * ppb) / SCALE
}

fn draw(counter: &AtomicU64, rate: f64) -> bool {
    // A zero rate does not advance the counter; equivalent, since counters restart with the
    // configuration, and avoids a contended atomic on the common no-fault path.
    if rate_to_ppb(rate) == 0 {
        return false;
    }
    is_hit(counter.fetch_add(1, Ordering::Relaxed), rate)
}

impl FaultCounters {
    /// Restarts every kind's sequence and re-arms `fail_first` (on configuration change).
    pub(crate) fn reset(&self, cfg: &SimConfig) {
        for c in [
            &self.reset,
            &self.hang,
            &self.fail,
            &self.content_filter,
            &self.cut,
            &self.stream_error,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.fail_first_left
            .store(u64::from(cfg.fail_first), Ordering::Relaxed);
    }

    /// Takes one request from the `fail_first` allowance, if any is left.
    fn take_fail_first(&self) -> bool {
        self.fail_first_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// The pre-answer fault for the next faultable request; `generation` is false for
    /// embeddings (never content-filtered).
    pub(crate) fn decide(&self, cfg: &SimConfig, generation: bool) -> Fault {
        if self.take_fail_first() {
            Fault::Fail
        } else if draw(&self.reset, cfg.reset_rate) {
            Fault::Reset
        } else if draw(&self.hang, cfg.hang_rate) {
            Fault::Hang
        } else if draw(&self.fail, cfg.fail_rate) {
            Fault::Fail
        } else if generation && draw(&self.content_filter, cfg.content_filter_rate) {
            Fault::ContentFilter
        } else {
            Fault::None
        }
    }

    /// Whether the next stream that was not cut ends with an in-stream error instead.
    pub(crate) fn stream_error(&self, cfg: &SimConfig) -> bool {
        draw(&self.stream_error, cfg.stream_error_rate)
    }

    /// Whether the next stream that got past [`FaultCounters::decide`] is cut.
    pub(crate) fn cut(&self, cfg: &SimConfig) -> bool {
        draw(&self.cut, cfg.cut_rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(rate: f64, n: u64) -> Vec<u64> {
        (0..n).filter(|k| is_hit(*k, rate)).collect()
    }

    #[test]
    fn exact_counts() {
        assert_eq!(hits(0.3, 10), vec![3, 6, 9]);
        assert_eq!(hits(0.29, 100).len(), 29);
        assert_eq!(hits(1.0, 7).len(), 7);
        assert_eq!(hits(0.0, 7).len(), 0);
        assert_eq!(hits(f64::NAN, 7).len(), 0);
        assert_eq!(hits(-1.0, 7).len(), 0);
        assert_eq!(hits(2.0, 7).len(), 7);
        assert_eq!(hits(0.5, 10), vec![1, 3, 5, 7, 9]);
        for n in 1..200u64 {
            assert_eq!(hits(0.37, n).len() as u64, n * 37 / 100);
        }
        assert!(!is_hit(u64::MAX, 0.5) || is_hit(u64::MAX, 0.5));
    }

    #[test]
    fn order_and_independent_counters() {
        let f = FaultCounters::default();
        let cfg = SimConfig {
            reset_rate: 0.5,
            fail_rate: 0.5,
            ..SimConfig::default()
        };
        let got: Vec<Fault> = (0..8).map(|_| f.decide(&cfg, true)).collect();
        // resets at 1,3,5,7; fail sees the other four and faults its 2nd and 4th.
        use Fault::*;
        assert_eq!(
            got,
            vec![None, Reset, Fail, Reset, None, Reset, Fail, Reset]
        );
        f.reset(&cfg);
        assert_eq!(f.decide(&cfg, true), None);
    }

    #[test]
    fn fail_first_comes_first_then_rates_resume() {
        let f = FaultCounters::default();
        let cfg = SimConfig {
            fail_first: 2,
            content_filter_rate: 0.5,
            ..SimConfig::default()
        };
        f.reset(&cfg);
        use Fault::*;
        let got: Vec<Fault> = (0..6).map(|_| f.decide(&cfg, true)).collect();
        assert_eq!(
            got,
            vec![Fail, Fail, None, ContentFilter, None, ContentFilter]
        );
        // Embeddings are never content-filtered and do not advance that sequence.
        assert_eq!(f.decide(&cfg, false), None);
        assert_eq!(f.decide(&cfg, true), None);
        // Setting the configuration again re-arms the allowance.
        f.reset(&cfg);
        assert_eq!(f.decide(&cfg, false), Fail);
    }
}
