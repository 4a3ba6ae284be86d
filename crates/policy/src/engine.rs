//! The budget engine: [`Budgets`] holds the definitions, admits requests against every matching
//! budget, and settles, releases and expires their reservations.
//!
//! This module owns the reservation life cycle. A [`Reservation`] is born `Live` in
//! [`Budgets::admit`] and ends exactly once: `Settled` ([`Budgets::settle`]), `Released`
//! ([`Budgets::release`]) or `Expired` ([`Budgets::expire`], for requests that died without
//! either). The state is one atomic in the reservation itself, so every transition is a
//! compare-and-swap: settling or releasing twice, or racing the sweeper, changes the counters
//! once. A settle that arrives *after* expiry is still charged — the provider billed it and the
//! ledger will count it — and reported as `late`.
//!
//! See the crate docs for the overspend bound and fail-closed/fail-open behaviour.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use jiff::tz::TimeZone;
use serde::Serialize;
use tollgate_types::{Attribution, NanoUsd};

use crate::clock::{Clock, SystemClock};
use crate::def::{BudgetDef, DefError, Mode, Scope, Window, resolve_tz};
use crate::index::ScopeIndex;
use crate::store::{CounterKey, CounterStore, Entry, MemoryStore, Refusal, SeedSpend, Slot, fnv1a};
use crate::window::{self, WindowError, bucket_ms, bucket_start};

/// Forecasts never extrapolate from less than this much elapsed time (one minute), so the
/// first seconds of a window do not forecast absurd sums from one request.
const MIN_FORECAST_ELAPSED_MS: i64 = 60_000;

/// One admission request.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub attribution: &'a Attribution,
    /// The logical model the client asked for (what `scope.model` matches).
    pub model: &'a str,
    /// Worst-case cost of the request as sent (`tollgate_pricing::worst_case_cost` with the
    /// request's `max_tokens`, or the model's output limit).
    pub worst_case: NanoUsd,
    /// The least worth admitting: worst-case cost of the prompt plus a minimal answer. When a
    /// hard budget cannot take `worst_case` but can take at least this, the request is
    /// [`Admission::Fitted`]. Pass `worst_case` to disable fitting. Clamped to
    /// `1 nano-USD ..= worst_case`.
    pub minimum: NanoUsd,
    /// Admission time, Unix ms. Pass the ledger row's `started_at_ms`: spend is dated by it,
    /// so live counters and a rebuild from the ledger put it in the same window and bucket.
    pub now_ms: i64,
    /// How long the reservation may stay unsettled before [`Budgets::expire`] releases it.
    /// Longer than the longest request (total timeout plus margin).
    pub ttl_ms: i64,
}

/// The decision for one request.
#[derive(Debug)]
#[must_use = "a reservation must be settled or released"]
pub enum Admission {
    /// Every matching hard budget took the full `worst_case` (also when no hard budget
    /// matched). `reservation.amount()` is what is held: `worst_case`, or 0 when no budget
    /// matched at all or the request is free.
    Admitted {
        reservation: Reservation,
        advisory: Advisory,
    },
    /// A hard budget had less room than `worst_case` but at least `minimum`; `allowed` (=
    /// `reservation.amount()`) is reserved. The server clamps `max_tokens` so the request
    /// cannot cost more than `allowed`.
    Fitted {
        reservation: Reservation,
        allowed: NanoUsd,
        advisory: Advisory,
    },
    /// A hard budget cannot cover even `minimum`. Nothing was reserved anywhere.
    Denied {
        /// The tightest hard budget.
        budget: Arc<str>,
        window: Window,
        limit: NanoUsd,
        /// Room it had (`limit − spent − reserved`, at least 0).
        remaining: NanoUsd,
        window_start_ms: i64,
        /// Calendar: the window's end (when it resets). Rolling: the estimated time at which
        /// enough settled spend will have aged out to cover `minimum` (now + retry).
        window_end_ms: i64,
        /// Seconds until `window_end_ms`, at least 1 (`Retry-After`).
        retry_after_secs: u64,
    },
    /// A hard budget could not be evaluated (counter store unavailable, or the clock is outside
    /// the range calendar windows support). Fail closed: the server answers 503.
    Unavailable { budget: Arc<str>, reason: String },
}

impl Admission {
    /// The reservation to settle or release, when admitted.
    pub fn reservation(&self) -> Option<&Reservation> {
        match self {
            Admission::Admitted { reservation, .. } | Admission::Fitted { reservation, .. } => {
                Some(reservation)
            }
            _ => None,
        }
    }

    pub fn advisory(&self) -> Option<&Advisory> {
        match self {
            Admission::Admitted { advisory, .. } | Admission::Fitted { advisory, .. } => {
                Some(advisory)
            }
            _ => None,
        }
    }
}

/// What soft and shadow budgets said about an admitted request. Empty in the common case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advisory {
    /// Soft budgets this reservation took past their limit (spent + reserved > limit).
    pub soft_exceeded: Vec<Arc<str>>,
    /// Shadow budgets that, were they hard, would have denied the request (room < minimum).
    pub would_deny: Vec<Arc<str>>,
    /// Shadow budgets that, were they hard, would have fitted it (minimum ≤ room < worst case).
    pub would_fit: Vec<Arc<str>>,
    /// Set when only soft/shadow budgets matched and the counter store was unavailable: the
    /// request was admitted untracked (fail open).
    pub store_error: Option<String>,
}

impl Advisory {
    pub fn is_empty(&self) -> bool {
        *self == Advisory::default()
    }
}

const LIVE: u8 = 0;
const SETTLED: u8 = 1;
const RELEASED: u8 = 2;
const EXPIRED: u8 = 3;

/// Where a reservation is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationState {
    Live,
    Settled,
    Released,
    /// Released by [`Budgets::expire`]; a later settle is still charged (as `late`).
    Expired,
}

/// Money held against every budget a request matched. Cheap to clone (one `Arc`); all clones
/// are the same reservation.
#[derive(Clone)]
pub struct Reservation(Arc<ResInner>);

struct ResInner {
    id: u64,
    entries: Box<[Entry]>,
    names: Box<[Arc<str>]>,
    amount: NanoUsd,
    at_ms: i64,
    expires_at_ms: i64,
    state: AtomicU8,
}

impl Reservation {
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// What is held on every entry.
    pub fn amount(&self) -> NanoUsd {
        self.0.amount
    }

    /// The counters it holds, one per matching budget (hard, soft and shadow).
    pub fn entries(&self) -> &[Entry] {
        &self.0.entries
    }

    /// Names of the budgets it was reserved against, in `entries` order.
    pub fn budgets(&self) -> &[Arc<str>] {
        &self.0.names
    }

    /// Admission time (the date its spend carries).
    pub fn at_ms(&self) -> i64 {
        self.0.at_ms
    }

    pub fn expires_at_ms(&self) -> i64 {
        self.0.expires_at_ms
    }

    pub fn state(&self) -> ReservationState {
        match self.0.state.load(Ordering::Acquire) {
            LIVE => ReservationState::Live,
            SETTLED => ReservationState::Settled,
            RELEASED => ReservationState::Released,
            _ => ReservationState::Expired,
        }
    }

    fn transition(&self, from: u8, to: u8) -> bool {
        self.0
            .state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn live_key(&self) -> (i64, u64) {
        (self.0.expires_at_ms, self.0.id)
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("id", &self.0.id)
            .field("budgets", &self.0.names)
            .field("amount", &self.0.amount)
            .field("at_ms", &self.0.at_ms)
            .field("expires_at_ms", &self.0.expires_at_ms)
            .field("state", &self.state())
            .finish()
    }
}

/// What a settle did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    /// Reservation returned (0 for a late settle: expiry already returned it).
    pub released: NanoUsd,
    /// Spend charged to every budget of the reservation.
    pub charged: NanoUsd,
    /// Spend beyond what was held: `actual − reserved` when positive, all of `actual` when
    /// late. This is the only way a hard budget can pass its limit; log and alert on it.
    pub excess: NanoUsd,
    /// The reservation had expired before this settle.
    pub late: bool,
}

/// Result of [`Budgets::upsert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upserted {
    /// No budget of this name existed.
    pub created: bool,
    /// The budget counts from a new, empty counter (new budget, or scope / window / time zone
    /// changed): seed it from the ledger (see [`Budgets::seed_plan`]).
    pub needs_seed: bool,
}

/// Errors of status and seeding calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error("no budget named '{0}'")]
    Unknown(String),
    #[error(transparent)]
    Window(#[from] WindowError),
    #[error(
        "budget '{0}' changed (scope, window or time zone) since the seed query was made; \
         make a new seed plan"
    )]
    StaleSeed(String),
    #[error("budget '{0}' has a rolling window: seed it with per-bucket sums")]
    SeedNeedsBuckets(String),
}

/// A budget's state at one instant (admin API `GET /admin/v1/budgets/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetStatus {
    pub name: String,
    pub scope: Scope,
    pub mode: Mode,
    pub window: Window,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    pub limit: NanoUsd,
    /// Settled spend in the current window (rolling: in the buckets still inside it).
    pub spent: NanoUsd,
    /// Held by in-flight requests.
    pub reserved: NanoUsd,
    /// `limit − spent − reserved`, at least 0.
    pub remaining: NanoUsd,
    pub window_start_ms: i64,
    /// Calendar: when the window resets. Rolling: now.
    pub window_end_ms: i64,
    /// Linear forecast of settled spend at the window's end. Calendar: `spent × window length
    /// ÷ elapsed` (elapsed at least one minute: noisy early in a window). Rolling: the spend
    /// rate over the observed part of the window × its length — equal to `spent` once the
    /// window is fully observed (seeded, or the budget is older than its window).
    pub forecast_at_window_end: NanoUsd,
    /// `(spent + reserved) ÷ limit` as a percentage with at most two decimals (`"96.25"`),
    /// rounded down: the reading a spend policy's `utilization_pct` trigger compares.
    pub utilization_pct: String,
}

/// What the server must sum from the ledger to seed one budget (see [`Budgets::seed_plan`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeedQuery {
    pub budget: String,
    /// The counter identity the sums are for (checked by [`Budgets::seed`]).
    pub counter: String,
    /// Rows must match this scope (each set field equal to the row's column: `tenant`,
    /// `feature`, `user`, `key_id` for `key`, `team`, `requested_model` for `model`).
    pub scope: Scope,
    /// Rows with `from_ms ≤ started_at_ms < to_ms`. `to_ms` is the instant the budget's
    /// counter started counting live; later rows are already in it.
    pub from_ms: i64,
    pub to_ms: i64,
    /// Rolling windows: group the sums by `floor(started_at_ms / bucket_ms) * bucket_ms`.
    /// Calendar windows: `None`, one total.
    pub bucket_ms: Option<i64>,
}

/// Counter identity that survives edits of limit and mode but not of what is counted.
#[derive(Debug)]
struct CounterMeta {
    id: Arc<str>,
    /// `fnv1a(id)`, so building a counter key per admission hashes no strings.
    id_hash: u64,
    fingerprint: u64,
    since_ms: i64,
    seeded: AtomicBool,
}

struct Compiled {
    def: BudgetDef,
    name: Arc<str>,
    meta: Arc<CounterMeta>,
    tz: TimeZone,
    /// `(length, bucket)` for rolling windows.
    rolling: Option<(i64, i64)>,
    /// Last computed calendar bounds: recomputing them with time-zone rules on every
    /// admission would cost more than the rest of admission.
    bounds: Mutex<(i64, i64)>,
}

impl Compiled {
    fn slot(&self, now_ms: i64) -> Result<Slot, WindowError> {
        if let Some((len_ms, bucket_ms)) = self.rolling {
            return Ok(Slot::Rolling { len_ms, bucket_ms });
        }
        let mut cached = self.bounds.lock().unwrap_or_else(|p| p.into_inner());
        if !(cached.0 <= now_ms && now_ms < cached.1) {
            *cached = window::bounds(self.def.window, &self.tz, now_ms)?;
        }
        Ok(Slot::Calendar {
            start_ms: cached.0,
            end_ms: cached.1,
        })
    }

    fn key(&self, now_ms: i64) -> Result<CounterKey, WindowError> {
        Ok(CounterKey::with_budget_hash(
            self.meta.id.clone(),
            self.meta.id_hash,
            self.slot(now_ms)?,
        ))
    }
}

#[derive(Default)]
struct Catalog {
    budgets: Vec<Arc<Compiled>>,
    by_name: HashMap<Arc<str>, usize>,
    index: ScopeIndex,
}

impl Catalog {
    fn build(budgets: Vec<Arc<Compiled>>) -> Catalog {
        let by_name = budgets
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let index = ScopeIndex::build(budgets.iter().map(|c| &c.def.scope));
        Catalog {
            budgets,
            by_name,
            index,
        }
    }

    fn get(&self, name: &str) -> Option<&Arc<Compiled>> {
        self.by_name.get(name).and_then(|&i| self.budgets.get(i))
    }
}

/// The budget engine. One per gateway; share it behind an `Arc` (it is `Send + Sync`; every
/// method takes `&self`).
///
/// Time: admission, status and expiry take an explicit `now_ms` (for admission, the ledger
/// row's `started_at_ms`). The injected [`Clock`] only dates definition changes — the instant
/// a new counter starts counting live, which bounds its seed query — so it must be the same
/// clock the server stamps `started_at_ms` with ([`SystemClock`] in production,
/// [`ManualClock`](crate::ManualClock) in tests).
pub struct Budgets {
    catalog: ArcSwap<Catalog>,
    /// Serialises catalog writers (admin CRUD) so two edits cannot lose one another; readers
    /// (admission) never take it.
    writer: Mutex<()>,
    store: Arc<dyn CounterStore>,
    clock: Arc<dyn Clock>,
    /// Live reservations by `(expires_at_ms, id)`, for [`Budgets::expire`].
    live: Mutex<BTreeMap<(i64, u64), Reservation>>,
    next_id: AtomicU64,
    /// Incarnation number for new counter identities (see `compile`).
    next_counter: AtomicU64,
}

impl fmt::Debug for Budgets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budgets")
            .field("budgets", &self.catalog.load().budgets.len())
            .field("live_reservations", &self.live_count())
            .finish()
    }
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets::new(Arc::new(MemoryStore::new()), Arc::new(SystemClock))
    }
}

impl Budgets {
    /// An engine with no budgets over `store`, reading time from `clock`.
    pub fn new(store: Arc<dyn CounterStore>, clock: Arc<dyn Clock>) -> Self {
        Budgets {
            catalog: ArcSwap::from_pointee(Catalog::default()),
            writer: Mutex::new(()),
            store,
            clock,
            live: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            next_counter: AtomicU64::new(1),
        }
    }

    /// The engine's clock, Unix ms.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn store(&self) -> &Arc<dyn CounterStore> {
        &self.store
    }

    // ---- definitions -------------------------------------------------------------------

    /// Replaces every definition (start-up, config reload). All-or-nothing: on any invalid
    /// definition nothing changes; errors are prefixed with the definition's position
    /// (`[3].limit_usd: …`). Returns the names whose counters are new and need seeding.
    pub fn replace_all(&self, defs: Vec<BudgetDef>) -> Result<Vec<String>, DefError> {
        let mut seen = HashMap::new();
        for (i, d) in defs.iter().enumerate() {
            d.validate()
                .map_err(|e| DefError::new(format!("[{i}].{}", e.field), e.reason))?;
            if let Some(j) = seen.insert(d.name.as_str(), i) {
                return Err(DefError::new(
                    format!("[{i}].name"),
                    format!("duplicate budget name '{}' (also at [{j}])", d.name),
                ));
            }
        }
        let _w = self.write_lock();
        let old = self.catalog.load_full();
        let now = self.clock.now_ms();
        let mut needs_seed = Vec::new();
        let mut budgets = Vec::with_capacity(defs.len());
        for d in defs {
            let (c, fresh) = compile(d, &old, now, &self.next_counter)?;
            if fresh {
                needs_seed.push(c.def.name.clone());
            }
            budgets.push(Arc::new(c));
        }
        self.catalog.store(Arc::new(Catalog::build(budgets)));
        Ok(needs_seed)
    }

    /// Adds a budget or replaces the one with the same name (admin create/patch). Changing only
    /// `limit_usd` or `mode` keeps its counters; changing scope, window or time zone starts a
    /// new counter, which must be seeded.
    pub fn upsert(&self, def: BudgetDef) -> Result<Upserted, DefError> {
        def.validate()?;
        let _w = self.write_lock();
        let old = self.catalog.load_full();
        let created = old.get(&def.name).is_none();
        let (c, fresh) = compile(def, &old, self.clock.now_ms(), &self.next_counter)?;
        let c = Arc::new(c);
        let mut budgets: Vec<Arc<Compiled>> = old.budgets.clone();
        match old.by_name.get(&*c.name) {
            Some(&i) => budgets[i] = c,
            None => budgets.push(c),
        }
        self.catalog.store(Arc::new(Catalog::build(budgets)));
        Ok(Upserted {
            created,
            needs_seed: fresh,
        })
    }

    /// Deletes a budget, returning its definition. Reservations already holding it settle into
    /// its counters as usual; new requests no longer see it. Re-creating it later starts a new
    /// counter (to be seeded), so spend from its first life is never counted twice.
    pub fn remove(&self, name: &str) -> Option<BudgetDef> {
        let _w = self.write_lock();
        let old = self.catalog.load_full();
        let &i = old.by_name.get(name)?;
        let mut budgets = old.budgets.clone();
        let removed = budgets.remove(i);
        self.catalog.store(Arc::new(Catalog::build(budgets)));
        Some(removed.def.clone())
    }

    pub fn get(&self, name: &str) -> Option<BudgetDef> {
        self.catalog.load().get(name).map(|c| c.def.clone())
    }

    /// Every definition, in installation order.
    pub fn defs(&self) -> Vec<BudgetDef> {
        self.catalog
            .load()
            .budgets
            .iter()
            .map(|c| c.def.clone())
            .collect()
    }

    fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- admission ---------------------------------------------------------------------

    /// True when at least one budget (any mode) covers this request. Lets the server skip
    /// the worst-case estimate — a tokenizer pass over the prompt — for requests no budget
    /// watches.
    pub fn any_match(&self, attribution: &Attribution, model: &str) -> bool {
        let cat = self.catalog.load();
        let mut found = false;
        cat.index.candidates(attribution, model, |i| {
            if !found && let Some(c) = cat.budgets.get(i) {
                found = c.def.scope.matches(attribution, model);
            }
        });
        found
    }

    /// Admits a request: reserves its worst case on every matching budget at once, fits it to
    /// the tightest hard budget, or denies it. See [`Admission`].
    pub fn admit(&self, ask: &Ask<'_>) -> Admission {
        let cat = self.catalog.load();
        let now = ask.now_ms;
        let mut matched: Vec<&Arc<Compiled>> = Vec::new();
        cat.index.candidates(ask.attribution, ask.model, |i| {
            if let Some(c) = cat.budgets.get(i)
                && c.def.scope.matches(ask.attribution, ask.model)
            {
                matched.push(c);
            }
        });
        let mut entries = Vec::with_capacity(matched.len());
        let mut names = Vec::with_capacity(matched.len());
        let mut compiled = Vec::with_capacity(matched.len());
        for c in matched {
            match c.key(now) {
                Ok(key) => {
                    entries.push(Entry {
                        key,
                        limit: c.def.limit_usd,
                        enforce: c.def.mode == Mode::Hard,
                    });
                    names.push(c.name.clone());
                    compiled.push(c);
                }
                // Only an absurd `now` gets here. Hard: fail closed. Soft/shadow: skip.
                Err(e) if c.def.mode == Mode::Hard => {
                    return Admission::Unavailable {
                        budget: c.name.clone(),
                        reason: e.to_string(),
                    };
                }
                Err(_) => {}
            }
        }

        let amount = NanoUsd(ask.worst_case.nanos().max(0));
        if amount.is_zero() {
            // Nothing to hold: a free request cannot overspend. It still gets a reservation
            // over its budgets, so a (mis-estimated) non-zero actual is charged at settle.
            let r = self.reservation(entries, names, NanoUsd::ZERO, ask);
            return Admission::Admitted {
                reservation: r,
                advisory: Advisory::default(),
            };
        }
        let minimum = NanoUsd(ask.minimum.nanos().clamp(1, amount.nanos()));
        if entries.is_empty() {
            let r = self.reservation(entries, names, NanoUsd::ZERO, ask);
            return Admission::Admitted {
                reservation: r,
                advisory: Advisory::default(),
            };
        }

        match self.store.try_reserve(&entries, amount, minimum, now) {
            Ok(grant) => {
                let mut advisory = Advisory::default();
                for over in &grant.over {
                    let Some(c) = compiled.get(over.entry) else {
                        continue;
                    };
                    match c.def.mode {
                        Mode::Soft if over.room < grant.amount => {
                            advisory.soft_exceeded.push(c.name.clone())
                        }
                        Mode::Shadow if over.room < minimum => {
                            advisory.would_deny.push(c.name.clone())
                        }
                        Mode::Shadow if over.room < amount => {
                            advisory.would_fit.push(c.name.clone())
                        }
                        _ => {}
                    }
                }
                let r = self.reservation(entries, names, grant.amount, ask);
                self.lock_live().insert(r.live_key(), r.clone());
                if grant.amount >= amount {
                    Admission::Admitted {
                        reservation: r,
                        advisory,
                    }
                } else {
                    Admission::Fitted {
                        allowed: grant.amount,
                        reservation: r,
                        advisory,
                    }
                }
            }
            Err(Refusal::Shortfall(short)) => {
                let (Some(c), Some(entry)) = (compiled.get(short.entry), entries.get(short.entry))
                else {
                    // A store that names an entry we did not pass: refuse rather than guess.
                    return Admission::Unavailable {
                        budget: names.first().cloned().unwrap_or_else(|| Arc::from("")),
                        reason: format!("counter store named unknown entry {}", short.entry),
                    };
                };
                let (start, end) = match entry.key.slot() {
                    Slot::Calendar { start_ms, end_ms } => (start_ms, end_ms),
                    Slot::Rolling { len_ms, .. } => {
                        // Room appears as settled spend ages out. If ageing alone cannot make
                        // room (in-flight reservations hold it), a full window is the safe
                        // answer.
                        let at = self
                            .store
                            .room_at(&entry.key, entry.limit, minimum, now)
                            .unwrap_or(now.saturating_add(len_ms));
                        (now.saturating_sub(len_ms), at.max(now))
                    }
                };
                let wait_ms = end.saturating_sub(now).max(0);
                let retry = u64::try_from(wait_ms.saturating_add(999) / 1000)
                    .unwrap_or(0)
                    .max(1);
                Admission::Denied {
                    budget: c.name.clone(),
                    window: c.def.window,
                    limit: c.def.limit_usd,
                    remaining: NanoUsd(short.room.nanos().max(0)),
                    window_start_ms: start,
                    window_end_ms: end,
                    retry_after_secs: retry,
                }
            }
            Err(Refusal::Unavailable(reason)) => {
                if let Some(c) = compiled.iter().find(|c| c.def.mode == Mode::Hard) {
                    Admission::Unavailable {
                        budget: c.name.clone(),
                        reason,
                    }
                } else {
                    let r = self.reservation(Vec::new(), Vec::new(), NanoUsd::ZERO, ask);
                    Admission::Admitted {
                        reservation: r,
                        advisory: Advisory {
                            store_error: Some(reason),
                            ..Advisory::default()
                        },
                    }
                }
            }
        }
    }

    fn reservation(
        &self,
        entries: Vec<Entry>,
        names: Vec<Arc<str>>,
        amount: NanoUsd,
        ask: &Ask<'_>,
    ) -> Reservation {
        Reservation(Arc::new(ResInner {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            entries: entries.into_boxed_slice(),
            names: names.into_boxed_slice(),
            amount,
            at_ms: ask.now_ms,
            expires_at_ms: ask.now_ms.saturating_add(ask.ttl_ms.max(0)),
            state: AtomicU8::new(LIVE),
        }))
    }

    fn lock_live(&self) -> MutexGuard<'_, BTreeMap<(i64, u64), Reservation>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reservations currently live (admitted, not settled, released or expired).
    pub fn live_count(&self) -> usize {
        self.lock_live().len()
    }

    // ---- completion --------------------------------------------------------------------

    /// Replaces the reservation with the actual cost on every budget it holds. The actual is
    /// charged in full even when it exceeds the reservation (reported as `excess`). Returns
    /// `None`, changing nothing, when the reservation was already settled or released.
    /// A negative `actual` counts as 0.
    pub fn settle(&self, r: &Reservation, actual: NanoUsd) -> Option<Settlement> {
        let actual = NanoUsd(actual.nanos().max(0));
        if r.transition(LIVE, SETTLED) {
            self.lock_live().remove(&r.live_key());
            self.store
                .commit(&r.0.entries, r.0.amount, actual, r.0.at_ms);
            return Some(Settlement {
                released: r.0.amount,
                charged: actual,
                excess: actual.saturating_sub(r.0.amount).max(NanoUsd::ZERO),
                late: false,
            });
        }
        if r.transition(EXPIRED, SETTLED) {
            // The request outlived its TTL but did run: its cost is real and in the ledger.
            self.store
                .commit(&r.0.entries, NanoUsd::ZERO, actual, r.0.at_ms);
            return Some(Settlement {
                released: NanoUsd::ZERO,
                charged: actual,
                excess: actual,
                late: true,
            });
        }
        None
    }

    /// Returns the reservation unspent (the request failed before any billable output).
    /// `true` when this call gave it back; `false` when it was already settled, released or
    /// expired.
    pub fn release(&self, r: &Reservation) -> bool {
        if r.transition(LIVE, RELEASED) {
            self.lock_live().remove(&r.live_key());
            self.store.release(&r.0.entries, r.0.amount);
            return true;
        }
        // Expired then released: the room went back at expiry; mark it finished so a stray
        // settle afterwards is a no-op.
        r.transition(EXPIRED, RELEASED);
        false
    }

    /// Releases every live reservation whose TTL has passed at `now_ms` (requests that died
    /// without settling) and drops counters that can no longer matter. Returns how many
    /// reservations expired. The server calls it periodically (every few seconds).
    pub fn expire(&self, now_ms: i64) -> usize {
        let due: Vec<Reservation> = {
            let mut live = self.lock_live();
            let keep = live.split_off(&(now_ms.saturating_add(1), 0));
            std::mem::replace(&mut *live, keep).into_values().collect()
        };
        let mut n = 0;
        for r in due {
            if r.transition(LIVE, EXPIRED) {
                self.store.release(&r.0.entries, r.0.amount);
                n += 1;
            }
        }
        self.store.sweep(now_ms);
        n
    }

    // ---- reporting ---------------------------------------------------------------------

    /// A budget's numbers at `now_ms`.
    pub fn status(&self, name: &str, now_ms: i64) -> Result<BudgetStatus, BudgetError> {
        let cat = self.catalog.load();
        let c = cat
            .get(name)
            .ok_or_else(|| BudgetError::Unknown(name.to_string()))?;
        status_of(c, &*self.store, now_ms)
    }

    /// Every budget's status, in installation order (budgets whose window cannot be computed
    /// at `now_ms` are skipped).
    pub fn statuses(&self, now_ms: i64) -> Vec<BudgetStatus> {
        let cat = self.catalog.load();
        cat.budgets
            .iter()
            .filter_map(|c| status_of(c, &*self.store, now_ms).ok())
            .collect()
    }

    // ---- rebuild -----------------------------------------------------------------------

    /// The ledger sums needed to seed every budget whose counter has not been seeded yet:
    /// call it at start-up before serving, and after an `upsert` that returned `needs_seed`.
    ///
    /// For each [`SeedQuery`], the server sums `effective_cost` of the ledger rows that match
    /// `scope` with `from_ms ≤ started_at_ms < to_ms` — one total for calendar windows, or
    /// grouped by `floor(started_at_ms / bucket_ms) * bucket_ms` for rolling ones — and passes
    /// them to [`Budgets::seed`]. Rows of every outcome count (a failed or cancelled request
    /// that was billed has a non-zero cost; a rejected one has zero). Rows at or after `to_ms`
    /// are already counted live and must not be included.
    ///
    /// A request that started before `to_ms` but was admitted after it is counted by both
    /// (live and seed): seeding can over-count such straddling requests, which only makes a
    /// budget stricter. It never under-counts a row the ledger holds.
    pub fn seed_plan(&self, now_ms: i64) -> Vec<SeedQuery> {
        let cat = self.catalog.load();
        cat.budgets
            .iter()
            .filter(|c| !c.meta.seeded.load(Ordering::Acquire))
            .filter_map(|c| seed_query(c, now_ms).ok())
            .collect()
    }

    /// [`Budgets::seed_plan`] for every budget, seeded or not: for when the ledger gained
    /// rows this process did not settle (an import). Seeding sets, so re-running the sums is
    /// safe; the caller adds the foreign rows started at or after `to_ms` (which live spend
    /// cannot hold) to each query's sums.
    pub fn reseed_plan(&self, now_ms: i64) -> Vec<SeedQuery> {
        let cat = self.catalog.load();
        cat.budgets
            .iter()
            .filter_map(|c| seed_query(c, now_ms).ok())
            .collect()
    }

    /// Installs the ledger sums for one [`SeedQuery`]. Seeding sets the counter's seeded part
    /// (it does not add): running the same plan twice is harmless, and spend settled live since
    /// `to_ms` is kept.
    pub fn seed(&self, query: &SeedQuery, spend: SeedSpend) -> Result<(), BudgetError> {
        let cat = self.catalog.load();
        let c = cat
            .get(&query.budget)
            .ok_or_else(|| BudgetError::Unknown(query.budget.clone()))?;
        if *c.meta.id != *query.counter {
            return Err(BudgetError::StaleSeed(query.budget.clone()));
        }
        let key = match c.rolling {
            Some((len_ms, bucket_ms)) => {
                if matches!(spend, SeedSpend::Total(_)) {
                    return Err(BudgetError::SeedNeedsBuckets(query.budget.clone()));
                }
                CounterKey::new(c.meta.id.clone(), Slot::Rolling { len_ms, bucket_ms })
            }
            None => {
                let (start_ms, end_ms) = window::bounds(c.def.window, &c.tz, query.from_ms)?;
                CounterKey::new(c.meta.id.clone(), Slot::Calendar { start_ms, end_ms })
            }
        };
        self.store.seed(&key, &spend);
        c.meta.seeded.store(true, Ordering::Release);
        Ok(())
    }

    /// Shortcut for a calendar budget: seed the window holding `window_start_ms` with `spent`.
    pub fn seed_spent(
        &self,
        name: &str,
        window_start_ms: i64,
        spent: NanoUsd,
    ) -> Result<(), BudgetError> {
        let cat = self.catalog.load();
        let c = cat
            .get(name)
            .ok_or_else(|| BudgetError::Unknown(name.to_string()))?;
        if c.rolling.is_some() {
            return Err(BudgetError::SeedNeedsBuckets(name.to_string()));
        }
        let q = SeedQuery {
            budget: name.to_string(),
            counter: c.meta.id.to_string(),
            scope: c.def.scope.clone(),
            from_ms: window_start_ms,
            to_ms: c.meta.since_ms,
            bucket_ms: None,
        };
        drop(cat);
        self.seed(&q, SeedSpend::Total(spent))
    }
}

/// Compiles a (validated) definition. Reuses the counter identity of `old`'s budget of the
/// same name when scope, window and time zone are unchanged. Returns whether the counter is
/// new (needs seeding).
fn compile(
    def: BudgetDef,
    old: &Catalog,
    now_ms: i64,
    incarnations: &AtomicU64,
) -> Result<(Compiled, bool), DefError> {
    let tz = resolve_tz(def.timezone.as_deref())?;
    let fp = fingerprint(&def);
    let (meta, fresh) = match old.get(&def.name) {
        Some(prev) if prev.meta.fingerprint == fp => (prev.meta.clone(), false),
        _ => {
            let id: Arc<str> = Arc::from(format!(
                "{}#{fp:016x}#{}",
                def.name,
                incarnations.fetch_add(1, Ordering::Relaxed)
            ));
            (
                Arc::new(CounterMeta {
                    // An incarnation number is part of the identity, so a budget deleted and
                    // created again never inherits (and double counts) its first life's live
                    // spend: the new counter starts empty and is seeded from the ledger. (A shared
                    // store will need an incarnation agreed across replicas, e.g. the definition's
                    // version in the database.)
                    id: id.clone(),
                    id_hash: fnv1a(id.as_bytes()),
                    fingerprint: fp,
                    since_ms: now_ms,
                    seeded: AtomicBool::new(false),
                }),
                true,
            )
        }
    };
    let rolling = def.window.rolling_ms().map(|len| (len, bucket_ms(len)));
    Ok((
        Compiled {
            name: Arc::from(def.name.as_str()),
            meta,
            tz,
            rolling,
            bounds: Mutex::new((0, 0)),
            def,
        },
        fresh,
    ))
}

/// FNV-1a over what a counter counts: scope, window, time zone. Stable across processes and
/// versions (unlike `std`'s hasher), so it can name shared-store keys.
fn fingerprint(def: &BudgetDef) -> u64 {
    let mut text = String::new();
    for (k, v) in def.scope.fields() {
        text.push_str(k);
        text.push('=');
        text.push_str(v);
        text.push('\u{1f}');
    }
    text.push('|');
    text.push_str(&def.window.to_string());
    text.push('|');
    text.push_str(def.timezone.as_deref().unwrap_or("UTC"));
    fnv1a(text.as_bytes())
}

fn status_of(
    c: &Compiled,
    store: &dyn CounterStore,
    now_ms: i64,
) -> Result<BudgetStatus, BudgetError> {
    let key = c.key(now_ms)?;
    let counts = store.snapshot(&key, now_ms);
    let limit = c.def.limit_usd;
    let (start, end, forecast) = match key.slot() {
        Slot::Calendar { start_ms, end_ms } => (
            start_ms,
            end_ms,
            linear_forecast(counts.spent, start_ms, end_ms, now_ms),
        ),
        Slot::Rolling { len_ms, .. } => {
            let observed = if c.meta.seeded.load(Ordering::Acquire) {
                len_ms
            } else {
                now_ms
                    .saturating_sub(c.meta.since_ms)
                    .clamp(MIN_FORECAST_ELAPSED_MS.min(len_ms), len_ms)
            };
            (
                now_ms.saturating_sub(len_ms),
                now_ms,
                scale(counts.spent, len_ms, observed),
            )
        }
    };
    let remaining = i128::from(limit.nanos())
        - i128::from(counts.spent.nanos())
        - i128::from(counts.reserved.nanos());
    Ok(BudgetStatus {
        name: c.def.name.clone(),
        scope: c.def.scope.clone(),
        mode: c.def.mode,
        window: c.def.window,
        timezone: c.def.timezone.clone(),
        limit,
        spent: counts.spent,
        reserved: counts.reserved,
        remaining: NanoUsd(i64::try_from(remaining.max(0)).unwrap_or(i64::MAX)),
        window_start_ms: start,
        window_end_ms: end,
        forecast_at_window_end: forecast,
        utilization_pct: crate::rules::def::fmt_bp(crate::rules::engine::ratio_bp(
            counts.spent.nanos().saturating_add(counts.reserved.nanos()),
            limit.nanos(),
        )),
    })
}

/// The linear forecast of a calendar window `[start_ms, end_ms)` at `now_ms` from what was
/// spent so far: `spent × window length ÷ elapsed`, elapsed at least one minute (so the first
/// seconds of a window do not forecast absurd sums from one request) and at most the window.
/// What a calendar budget's `forecast_at_window_end` is, and the dashboard's month forecast.
pub fn linear_forecast(spent: NanoUsd, start_ms: i64, end_ms: i64, now_ms: i64) -> NanoUsd {
    let len = end_ms.saturating_sub(start_ms).max(1);
    let elapsed = now_ms
        .saturating_sub(start_ms)
        .clamp(MIN_FORECAST_ELAPSED_MS.min(len), len);
    scale(spent, len, elapsed)
}

/// `amount × num ÷ den` in `i128`, rounded down, saturating; `den ≤ 0` gives `amount`.
fn scale(amount: NanoUsd, num: i64, den: i64) -> NanoUsd {
    if den <= 0 {
        return amount;
    }
    let v = i128::from(amount.nanos()) * i128::from(num) / i128::from(den);
    NanoUsd(i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX }))
}

fn seed_query(c: &Compiled, now_ms: i64) -> Result<SeedQuery, WindowError> {
    let since = c.meta.since_ms;
    let (from, bucket) = match c.rolling {
        Some((len, b)) => (bucket_start(now_ms.saturating_sub(len), b), Some(b)),
        None => (window::bounds(c.def.window, &c.tz, now_ms)?.0, None),
    };
    Ok(SeedQuery {
        budget: c.def.name.clone(),
        counter: c.meta.id.to_string(),
        scope: c.def.scope.clone(),
        from_ms: from,
        to_ms: since.max(from),
        bucket_ms: bucket,
    })
}
