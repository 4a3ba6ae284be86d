//! Routing strategies and the per-request plan: every deployment of a logical model, best first.
//!
//! A plan is built in four tiers, each keeping the strategy's order inside it:
//! 1. the pinned deployments (`PlanRequest::pinned` matched a label or a provider name);
//! 2. the sticky deployment (prompt-cache stickiness), if unexpired and available — first
//!    inside tier 1 when it is itself pinned;
//! 3. every other deployment;
//! 4. deployments whose breaker does not admit a request now, after all available ones (the
//!    executor's `start` skips them; they stay in the plan so a breaker that half-opens
//!    mid-request can still be tried).
//!
//! Strategies:
//! - `weighted`: the first is a cumulative-weight draw among the best tier; the rest follow in
//!   descending weight (random tie-break).
//! - `latency`: deployments with fewer than [`MIN_SAMPLES`](crate::health::MIN_SAMPLES)
//!   samples of the relevant EWMA (TTFT for streams, total latency otherwise) go first, in
//!   random order (explore the unknown); then ascending `EWMA × (in_flight + 1)` (peak-EWMA
//!   style: load pushes a fast deployment back before it gets slow). With probability
//!   [`EXPLORE_PROBABILITY`] a uniformly random member of the best tier goes first instead, so
//!   EWMAs of deployments that stopped being picked keep getting fresh samples and a stale bad
//!   EWMA cannot bury a recovered deployment forever.
//! - `cost`: ascending `unit_cost` (unpriced last), ties by descending weight, then random.
//! - `least_inflight`: ascending in-flight count, random tie-break.
//!
//! `plan` runs on every request: it reads each deployment's health once (one short lock),
//! sorts fixed-size keys on the stack (up to [`INLINE`] deployments), and allocates only the
//! returned `Vec`.

use std::time::Instant;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::LogicalModel;
use crate::health::MIN_SAMPLES;

/// Share of latency-strategy plans that put a random deployment first.
pub const EXPLORE_PROBABILITY: f64 = 0.05;
/// Deployments sorted on the stack; larger models fall back to one extra heap buffer.
pub const INLINE: usize = 16;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    #[default]
    Weighted,
    Latency,
    Cost,
    LeastInflight,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::Weighted,
        Strategy::Latency,
        Strategy::Cost,
        Strategy::LeastInflight,
    ];

    /// The config spelling: `weighted`, `latency`, `cost`, `least_inflight`.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Weighted => "weighted",
            Strategy::Latency => "latency",
            Strategy::Cost => "cost",
            Strategy::LeastInflight => "least_inflight",
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one request asks of the plan.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanRequest<'a> {
    /// A deployment label (`provider/model`) or a provider name: matching deployments come
    /// first (in strategy order), the rest follow only as failover.
    pub pinned: Option<&'a str>,
    /// Prompt-prefix key, computed by the caller and already namespaced by tenant.
    pub sticky: Option<u64>,
    /// The latency strategy ranks streams by TTFT EWMA, other requests by total latency.
    pub stream: bool,
}

/// Sort key of one deployment; compared as (tier, class, a, b, tie, idx).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Slot {
    /// Bit 2: unavailable; bit 1: not pinned; bit 0: not sticky.
    tier: u8,
    class: u8,
    a: u64,
    b: u64,
    tie: u64,
    idx: usize,
}

const UNAVAILABLE: u8 = 0b100;
const NOT_PINNED: u8 = 0b010;
const NOT_STICKY: u8 = 0b001;

impl<P> LogicalModel<P> {
    /// Every deployment index, best first: the pinned ones, then the sticky deployment (if its
    /// stickiness has not expired and it is available), then the strategy's order; deployments
    /// that are not `available` go after all available ones (the executor skips those whose
    /// `start` returns `None`).
    pub fn plan(&self, req: &PlanRequest<'_>, now: Instant) -> Vec<usize> {
        self.plan_with(req, now, &mut rand::rng())
    }

    pub(crate) fn plan_with<R: Rng + ?Sized>(
        &self,
        req: &PlanRequest<'_>,
        now: Instant,
        rng: &mut R,
    ) -> Vec<usize> {
        let n = self.deployments.len();
        if n <= INLINE {
            let mut slots = [Slot::default(); INLINE];
            self.plan_into(req, now, rng, &mut slots[..n])
        } else {
            let mut slots = vec![Slot::default(); n];
            self.plan_into(req, now, rng, &mut slots)
        }
    }

    fn plan_into<R: Rng + ?Sized>(
        &self,
        req: &PlanRequest<'_>,
        now: Instant,
        rng: &mut R,
        slots: &mut [Slot],
    ) -> Vec<usize> {
        let sticky = match (req.sticky, &self.sticky) {
            (Some(key), Some(table)) => table.lookup(key, now),
            _ => None,
        };
        let mut sticky_hit = false;
        for (idx, (d, slot)) in self.deployments.iter().zip(slots.iter_mut()).enumerate() {
            let view = d.health.route_view(now, req.stream);
            let pinned = req
                .pinned
                .is_some_and(|p| p == d.label || p == d.provider_name);
            let is_sticky = view.available && sticky == Some(idx);
            sticky_hit |= is_sticky;
            let mut tier = 0;
            if !view.available {
                tier |= UNAVAILABLE;
            }
            if !pinned {
                tier |= NOT_PINNED;
            }
            if !is_sticky {
                tier |= NOT_STICKY;
            }
            let by_weight = u64::MAX - u64::from(d.weight);
            let (class, a, b) = match self.strategy {
                Strategy::Weighted => (0, by_weight, 0),
                Strategy::Latency => {
                    let (ewma, samples) = view.ewma;
                    if samples < MIN_SAMPLES {
                        (0, 0, 0)
                    } else {
                        let score = ewma * (f64::from(view.in_flight) + 1.0);
                        // Non-negative finite floats order like their bit patterns.
                        let score = if score.is_finite() && score >= 0.0 {
                            score
                        } else {
                            f64::MAX
                        };
                        (1, score.to_bits(), 0)
                    }
                }
                Strategy::Cost => match d.unit_cost {
                    Some(c) => (0, c, by_weight),
                    None => (1, 0, by_weight),
                },
                Strategy::LeastInflight => (0, u64::from(view.in_flight), 0),
            };
            *slot = Slot {
                tier,
                class,
                a,
                b,
                tie: rng.random(),
                idx,
            };
        }
        if sticky_hit && let Some(table) = &self.sticky {
            table.hit();
        }
        slots.sort_unstable();

        // The best tier's first place is drawn for weighted, and sometimes for latency.
        let top_tier = slots.first().map_or(UNAVAILABLE, |s| s.tier);
        let top = slots.iter().take_while(|s| s.tier == top_tier).count();
        if top_tier & UNAVAILABLE == 0 && top > 1 {
            let first = match self.strategy {
                Strategy::Weighted => {
                    let weight = |s: &Slot| u64::from(self.deployments[s.idx].weight);
                    let total: u64 = slots[..top].iter().map(weight).sum();
                    if total == 0 {
                        None
                    } else {
                        let mut r = rng.random_range(0..total);
                        slots[..top].iter().position(|s| {
                            let w = weight(s);
                            if r < w {
                                true
                            } else {
                                r -= w;
                                false
                            }
                        })
                    }
                }
                Strategy::Latency if rng.random_bool(EXPLORE_PROBABILITY) => {
                    Some(rng.random_range(0..top))
                }
                _ => None,
            };
            if let Some(j) = first {
                // Keeps everyone else in order.
                slots[..=j].rotate_right(1);
            }
        }
        slots.iter().map(|s| s.idx).collect()
    }
}
