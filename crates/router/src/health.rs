//! Live state of one deployment: requests in flight, latency EWMAs, and its circuit breaker.
//!
//! One [`Health`] per deployment, shared as `Arc<Health>` by every request routed to it. All
//! state sits behind one small mutex (held for a handful of arithmetic operations, never across
//! I/O); the in-flight count is an atomic so strategies can read it without the lock.
//!
//! Breaker: `closed` → `open` after `consecutive_failures` failures in a row, or when the error
//! rate over the last `window` reaches `error_rate` with at least `min_requests` requests in it,
//! or at once on [`Failure::RateLimited`] (for its `retry_after`, or the cooldown).
//! `open` → `half_open` when the cooldown has passed (evaluated lazily on the next call, so no
//! timer is needed). `half_open` admits `half_open_probes` concurrent probe attempts: a probe
//! success closes the breaker (and clears the window and the failure streak, so old failures
//! cannot re-open it at once); a probe failure re-opens it with a fresh cooldown. Results of
//! attempts that started before the breaker opened do not decide half-open probes (only
//! rate limits still extend an open period). Time is always passed in as `now`, which makes
//! every transition testable without sleeping.
//!
//! The error-rate window is a ring of [`WINDOW_BUCKETS`] time buckets of `window / 6`: the
//! rate covers between 5/6 of the window and the whole of it, in constant memory.
//!
//! EWMAs use α = [`EWMA_ALPHA`] (0.3: the last ~3 samples carry ~2/3 of the weight, so a slow
//! deployment is noticed within a few requests while one outlier moves the mean by only 30 %).
//! They only move on samples; a deployment that stops being picked keeps its last EWMA. The
//! latency strategy's ε-exploration (see `strategy`) keeps sampling such deployments, so a
//! stale bad EWMA cannot pin a recovered deployment to the back forever.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Weight of the newest sample in the latency EWMAs.
pub const EWMA_ALPHA: f64 = 0.3;
/// Samples an EWMA needs before the latency strategy trusts it (fewer = explore first).
pub const MIN_SAMPLES: u32 = 3;
/// Time buckets in the error-rate window.
pub const WINDOW_BUCKETS: usize = 6;
/// Longest a breaker stays open for one rate limit, whatever `Retry-After` said (a day): keeps
/// `now + retry_after` far from `Instant` overflow.
const MAX_OPEN: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    /// `false`: the breaker never opens (health is still tracked for routing and metrics).
    pub enabled: bool,
    /// Open after this many failures in a row.
    pub consecutive_failures: u32,
    /// ...or when failures / requests over `window` reach this.
    pub error_rate: f64,
    /// ...with at least this many requests in the window.
    pub min_requests: u32,
    pub window: Duration,
    /// Open → half-open after this.
    pub cooldown: Duration,
    /// Concurrent probe attempts allowed while half-open (0 is treated as 1: a breaker that
    /// admits no probe could never close).
    pub half_open_probes: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            enabled: true,
            consecutive_failures: 5,
            error_rate: 0.5,
            min_requests: 10,
            window: Duration::from_secs(30),
            cooldown: Duration::from_secs(15),
            half_open_probes: 1,
        }
    }
}

/// Why an attempt failed, as far as the breaker cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Connect error, timeout, reset, 5xx.
    Transient,
    /// 429 / Anthropic 529: open at once for `retry_after` (or the cooldown), whatever the
    /// thresholds say.
    RateLimited { retry_after: Option<Duration> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// Point-in-time view for the admin API and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct HealthSnapshot {
    pub state: BreakerState,
    pub in_flight: u32,
    pub ewma_ttft_ms: Option<f64>,
    pub ewma_latency_ms: Option<f64>,
    /// Completed attempts since start.
    pub requests: u64,
    pub failures: u64,
    pub consecutive_failures: u32,
    /// `None` with no requests in the window.
    pub window_error_rate: Option<f64>,
    /// While open: milliseconds until half-open.
    pub retry_in_ms: Option<u64>,
    /// Times the breaker opened.
    pub opened_total: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Ewma {
    value: f64,
    samples: u32,
}

impl Ewma {
    fn observe(&mut self, x: f64) {
        self.value = if self.samples == 0 {
            x
        } else {
            EWMA_ALPHA * x + (1.0 - EWMA_ALPHA) * self.value
        };
        self.samples = self.samples.saturating_add(1);
    }

    fn get(&self) -> Option<f64> {
        (self.samples > 0).then_some(self.value)
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probes: u32 },
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Bucket number + 1; 0 = never used.
    stamp: u64,
    requests: u32,
    failures: u32,
}

/// Requests and failures per time bucket, relative to the first recorded instant.
#[derive(Debug)]
struct Window {
    origin: Option<Instant>,
    bucket: Duration,
    slots: [Bucket; WINDOW_BUCKETS],
}

impl Window {
    fn new(window: Duration) -> Window {
        Window {
            origin: None,
            bucket: (window / WINDOW_BUCKETS as u32).max(Duration::from_millis(1)),
            slots: [Bucket::default(); WINDOW_BUCKETS],
        }
    }

    fn stamp(&self, origin: Instant, now: Instant) -> u64 {
        let n = now.saturating_duration_since(origin).as_nanos() / self.bucket.as_nanos();
        u64::try_from(n).unwrap_or(u64::MAX - 1) + 1
    }

    fn record(&mut self, now: Instant, failed: bool) {
        let origin = *self.origin.get_or_insert(now);
        let stamp = self.stamp(origin, now);
        let slot = &mut self.slots[(stamp % WINDOW_BUCKETS as u64) as usize];
        if slot.stamp != stamp {
            *slot = Bucket {
                stamp,
                requests: 0,
                failures: 0,
            };
        }
        slot.requests = slot.requests.saturating_add(1);
        if failed {
            slot.failures = slot.failures.saturating_add(1);
        }
    }

    /// (requests, failures) in the buckets still inside the window.
    fn totals(&self, now: Instant) -> (u64, u64) {
        let Some(origin) = self.origin else {
            return (0, 0);
        };
        let current = self.stamp(origin, now);
        self.slots
            .iter()
            .filter(|b| {
                b.stamp != 0 && b.stamp <= current && current - b.stamp < WINDOW_BUCKETS as u64
            })
            .fold((0, 0), |(r, f), b| {
                (r + u64::from(b.requests), f + u64::from(b.failures))
            })
    }

    fn clear(&mut self) {
        self.slots = [Bucket::default(); WINDOW_BUCKETS];
    }
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Bumped on every entry into half-open, so a probe from an earlier half-open period
    /// cannot close (or free a slot of) a later one.
    generation: u64,
    consecutive: u32,
    requests: u64,
    failures: u64,
    opened_total: u64,
    ttft: Ewma,
    latency: Ewma,
    window: Window,
}

impl Inner {
    /// Lazy open → half-open transition.
    fn refresh(&mut self, now: Instant) {
        if let State::Open { until } = self.state
            && now >= until
        {
            self.state = State::HalfOpen { probes: 0 };
            self.generation += 1;
        }
    }

    fn open_for(&mut self, now: Instant, d: Duration) {
        self.state = State::Open {
            until: now + d.min(MAX_OPEN),
        };
        self.opened_total += 1;
    }

    fn release_probe(&mut self, generation: u64) {
        if let State::HalfOpen { probes } = &mut self.state
            && generation == self.generation
        {
            *probes = probes.saturating_sub(1);
        }
    }

    /// Whether `probe` is a probe of the current half-open period.
    fn is_current_probe(&self, probe: Option<u64>) -> bool {
        matches!(self.state, State::HalfOpen { .. }) && probe == Some(self.generation)
    }
}

/// What the router needs from one deployment, read under one lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RouteView {
    pub available: bool,
    pub in_flight: u32,
    /// (EWMA ms, samples) of TTFT for streams, total latency otherwise.
    pub ewma: (f64, u32),
}

pub struct Health {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
    in_flight: AtomicU32,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl Health {
    pub fn new(settings: BreakerSettings) -> Health {
        Health {
            inner: Mutex::new(Inner {
                state: State::Closed,
                generation: 0,
                consecutive: 0,
                requests: 0,
                failures: 0,
                opened_total: 0,
                ttft: Ewma::default(),
                latency: Ewma::default(),
                window: Window::new(settings.window),
            }),
            settings,
            in_flight: AtomicU32::new(0),
        }
    }

    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing under the lock can panic halfway through an update, so a poisoned lock
        // still holds consistent state.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn max_probes(&self) -> u32 {
        self.settings.half_open_probes.max(1)
    }

    fn admits(&self, inner: &Inner) -> bool {
        match inner.state {
            State::Closed => true,
            State::Open { .. } => false,
            State::HalfOpen { probes } => probes < self.max_probes(),
        }
    }

    /// Whether a request could be sent now (closed, or half-open with a free probe slot).
    /// Does not take a slot.
    pub fn available(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        inner.refresh(now);
        self.admits(&inner)
    }

    pub(crate) fn route_view(&self, now: Instant, stream: bool) -> RouteView {
        let mut inner = self.lock();
        inner.refresh(now);
        let e = if stream { inner.ttft } else { inner.latency };
        RouteView {
            available: self.admits(&inner),
            in_flight: self.in_flight(),
            ewma: (e.value, e.samples),
        }
    }

    /// Starts an attempt: `None` when the breaker is open (or half-open with no free probe
    /// slot). The guard counts the attempt in flight until it is reported or dropped; a
    /// dropped, unreported guard (request cancelled) counts as neither success nor failure and
    /// frees its probe slot.
    #[must_use]
    pub fn start(self: &Arc<Self>, now: Instant) -> Option<Attempt> {
        let mut inner = self.lock();
        inner.refresh(now);
        let probe = match &mut inner.state {
            State::Closed => None,
            State::Open { .. } => return None,
            State::HalfOpen { probes } => {
                if *probes >= self.max_probes() {
                    return None;
                }
                *probes += 1;
                Some(inner.generation)
            }
        };
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Attempt {
            health: Arc::clone(self),
            probe,
        })
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self, now: Instant) -> HealthSnapshot {
        let mut inner = self.lock();
        inner.refresh(now);
        let (win_requests, win_failures) = inner.window.totals(now);
        let (state, retry_in_ms) = match inner.state {
            State::Closed => (BreakerState::Closed, None),
            State::HalfOpen { .. } => (BreakerState::HalfOpen, None),
            State::Open { until } => {
                let left = until.saturating_duration_since(now).as_millis();
                (
                    BreakerState::Open,
                    Some(u64::try_from(left).unwrap_or(u64::MAX)),
                )
            }
        };
        HealthSnapshot {
            state,
            in_flight: self.in_flight(),
            ewma_ttft_ms: inner.ttft.get(),
            ewma_latency_ms: inner.latency.get(),
            requests: inner.requests,
            failures: inner.failures,
            consecutive_failures: inner.consecutive,
            window_error_rate: (win_requests > 0)
                .then(|| win_failures as f64 / win_requests as f64),
            retry_in_ms,
            opened_total: inner.opened_total,
        }
    }

    fn on_success(
        &self,
        probe: Option<u64>,
        ttft: Option<Duration>,
        total: Duration,
        now: Instant,
    ) {
        let mut inner = self.lock();
        inner.refresh(now);
        inner.requests += 1;
        inner.consecutive = 0;
        inner.window.record(now, false);
        if let Some(t) = ttft {
            inner.ttft.observe(t.as_secs_f64() * 1000.0);
        }
        inner.latency.observe(total.as_secs_f64() * 1000.0);
        if inner.is_current_probe(probe) {
            inner.state = State::Closed;
            inner.window.clear();
        }
    }

    fn on_failure(&self, probe: Option<u64>, f: Failure, now: Instant) {
        let mut inner = self.lock();
        inner.refresh(now);
        inner.requests += 1;
        inner.failures += 1;
        inner.consecutive = inner.consecutive.saturating_add(1);
        inner.window.record(now, true);
        let open_for = match f {
            Failure::Transient => self.settings.cooldown,
            Failure::RateLimited { retry_after } => retry_after.unwrap_or(self.settings.cooldown),
        };
        let rate_limited = matches!(f, Failure::RateLimited { .. });
        if !self.settings.enabled {
            return;
        }
        match inner.state {
            State::HalfOpen { .. } if inner.is_current_probe(probe) || rate_limited => {
                inner.open_for(now, open_for);
            }
            // A late transient failure from before the breaker opened says nothing new.
            State::HalfOpen { .. } => {}
            State::Closed => {
                let (req, fail) = inner.window.totals(now);
                let tripped = rate_limited
                    || inner.consecutive >= self.settings.consecutive_failures.max(1)
                    || (req >= u64::from(self.settings.min_requests)
                        && fail as f64 >= self.settings.error_rate * req as f64);
                if tripped {
                    inner.open_for(now, open_for);
                }
            }
            State::Open { until } => {
                // A rate limit while open can only lengthen the open period.
                if rate_limited {
                    let later = now + open_for.min(MAX_OPEN);
                    if later > until {
                        inner.state = State::Open { until: later };
                    }
                }
            }
        }
    }
}

/// One attempt in flight on a deployment; report it with [`Attempt::success`] or
/// [`Attempt::failure`], or drop it (cancelled: neither).
#[derive(Debug)]
pub struct Attempt {
    health: Arc<Health>,
    /// Half-open generation when this attempt holds a probe slot.
    probe: Option<u64>,
}

impl Attempt {
    /// Updates the EWMAs (TTFT only when given); a half-open probe success closes the breaker.
    pub fn success(mut self, ttft: Option<Duration>, total: Duration, now: Instant) {
        let probe = self.probe.take();
        self.health.on_success(probe, ttft, total, now);
    }

    /// Counts a failure; a half-open probe failure re-opens the breaker with a fresh cooldown.
    pub fn failure(mut self, f: Failure, now: Instant) {
        let probe = self.probe.take();
        self.health.on_failure(probe, f, now);
    }

    /// Whether this attempt was admitted as a half-open probe (its slot may belong to a
    /// half-open period that has since ended).
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        // A reported attempt already resolved its probe slot (closing or re-opening the
        // breaker); an unreported one only gives the slot back.
        if let Some(generation) = self.probe.take() {
            self.health.lock().release_probe(generation);
        }
        self.health.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
