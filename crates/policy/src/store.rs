//! Budget counters: the [`CounterStore`] trait and its in-process implementation
//! [`MemoryStore`].
//!
//! A counter belongs to one budget's window ([`CounterKey`]) and holds two numbers: `spent`
//! (settled) and `reserved` (admitted, not yet settled). The trait is shaped around **one
//! atomic multi-key operation**, [`CounterStore::try_reserve`]: check every enforced entry,
//! and reserve on all entries or on none. That is exactly what one Redis Lua script (all of a
//! tenant's keys in one hash slot) or one PostgreSQL transaction (`UPDATE … WHERE spent +
//! reserved + $amount <= limit`, keys locked in a fixed order) can do, so a shared store can
//! replace [`MemoryStore`] without changing the engine.
//!
//! # Overspend bound (store level)
//! `try_reserve` never leaves an enforced counter with `spent + reserved > limit` because of
//! the reservation it grants. Spend can pass a limit only through [`CounterStore::commit`] with
//! `actual > reserved` (the caller under-estimated) or a commit after the reservation was
//! released — the engine reports both (see the crate docs for the full bound).
//!
//! # Fail-closed / fail-open
//! [`MemoryStore`] cannot fail. A remote store reports [`Refusal::Unavailable`] from
//! `try_reserve` when it cannot answer; the engine then refuses requests that match a hard
//! budget (fail closed) and admits untracked requests that match only soft/shadow budgets
//! (fail open). `commit` and `release` are infallible at this interface: a remote
//! implementation must retry or queue internally, and the ledger — which the server writes
//! independently — stays the source of truth for the next rebuild.
//!
//! # Rolling windows
//! Rolling counters keep settled spend in time buckets (width from
//! [`crate::window::bucket_ms`]). Spend is dated by the reservation's admission time (the
//! ledger row's `started_at_ms`), so a rebuild from the ledger lands in the same buckets.
//! A bucket counts while any part of it is inside `[now − length, now)`: the granularity can
//! only make the budget stricter. Buckets that have left the window are dropped on the next
//! access. `reserved` is not bucketed: a reservation holds room until it is settled or
//! released, whatever its age.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use tollgate_types::NanoUsd;

use crate::window::bucket_start;

/// Which window of which budget a counter belongs to.
///
/// The key carries its own hash, computed once when it is built: admission looks counters up
/// a dozen times per request, and re-hashing the budget's name with SipHash each time was
/// most of the in-memory store's cost (measured). Keys come from budget definitions (admin
/// input), never from request data, so a fast non-keyed hash is no flooding risk.
#[derive(Debug, Clone)]
pub struct CounterKey {
    budget: Arc<str>,
    slot: Slot,
    hash: u64,
}

impl CounterKey {
    /// The key of `slot` of the counter identity `budget`: the budget's name plus a
    /// fingerprint of scope, window and time zone (see [`crate::Budgets`]). Changing the limit
    /// or mode keeps the identity; changing what the budget counts gives a new, empty counter.
    pub fn new(budget: Arc<str>, slot: Slot) -> Self {
        let h = fnv1a(budget.as_bytes());
        CounterKey::with_budget_hash(budget, h, slot)
    }

    /// As [`CounterKey::new`] with `budget_hash = fnv1a(budget)` already computed.
    pub(crate) fn with_budget_hash(budget: Arc<str>, budget_hash: u64, slot: Slot) -> Self {
        let (tag, a, b) = match slot {
            Slot::Calendar { start_ms, end_ms } => (1u64, start_ms, end_ms),
            Slot::Rolling { len_ms, bucket_ms } => (2u64, len_ms, bucket_ms),
        };
        let hash = mix(budget_hash ^ mix(tag ^ mix(a as u64) ^ mix(b as u64).rotate_left(17)));
        CounterKey { budget, slot, hash }
    }

    /// The counter identity.
    pub fn budget(&self) -> &Arc<str> {
        &self.budget
    }

    pub fn slot(&self) -> Slot {
        self.slot
    }
}

impl PartialEq for CounterKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
            && self.slot == other.slot
            && (Arc::ptr_eq(&self.budget, &other.budget) || *self.budget == *other.budget)
    }
}

impl Eq for CounterKey {}

impl Hash for CounterKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// FNV-1a, 64 bit: stable across processes and Rust versions.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The splitmix64 finaliser: spreads every input bit over the output, so the hash table's
/// bucket and tag bits are both well mixed.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Passes a [`CounterKey`]'s precomputed hash through. (Anything else written to it is
/// folded with FNV-1a, so it stays a correct, if slow, hasher for other types.)
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv1a(bytes) ^ self.0.rotate_left(5);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The window part of a [`CounterKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// One calendar window `[start_ms, end_ms)`. The next window is a different key, so a
    /// reset needs no sweeper: the new key starts at zero.
    Calendar { start_ms: i64, end_ms: i64 },
    /// A rolling window of `len_ms`, bucketed by `bucket_ms`. One key for all time.
    Rolling { len_ms: i64, bucket_ms: i64 },
}

/// One counter a reservation touches, with its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: CounterKey,
    pub limit: NanoUsd,
    /// `true` for hard budgets: the reservation fails unless this counter has room.
    /// `false` (soft, shadow): the counter is charged but never blocks; how far it is over is
    /// reported in [`Grant::over`].
    pub enforce: bool,
}

/// A successful reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// What was reserved on every entry: `amount`, or less when fitted to the room left.
    pub amount: NanoUsd,
    /// Non-enforced entries whose room (before this reservation) was below the requested
    /// `amount`, with that room. Empty (no allocation) in the common case.
    pub over: Vec<Room>,
}

/// Room left on one entry: `limit − spent − reserved`, possibly negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Index into the `entries` slice.
    pub entry: usize,
    pub room: NanoUsd,
}

/// Why nothing was reserved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// An enforced entry had less room than `minimum`; `room` names the tightest one.
    #[error("budget counter {} has {} USD of room", .0.entry, .0.room)]
    Shortfall(Room),
    /// The store could not answer (remote store down). Never returned by [`MemoryStore`].
    #[error("counter store unavailable: {0}")]
    Unavailable(String),
}

/// A counter's numbers at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Settled spend in the window (rolling: in the buckets still inside it), seed included.
    pub spent: NanoUsd,
    pub reserved: NanoUsd,
}

/// Spend from the ledger to seed a counter with (see [`crate::Budgets::seed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedSpend {
    /// Calendar window: the sum of the window's ledger rows before the counter existed.
    Total(NanoUsd),
    /// Rolling window: sums per bucket, keyed by any instant inside the bucket (normally its
    /// start, `floor(started_at_ms / bucket_ms) * bucket_ms`).
    Buckets(Vec<(i64, NanoUsd)>),
}

/// Live budget counters. See the module docs for the contract; every method must be safe to
/// call concurrently from many threads.
pub trait CounterStore: Send + Sync {
    /// Atomically: let `room` = min over enforced entries of `limit − spent − reserved`
    /// (unbounded when there are none). If `room ≥ minimum`, add `min(amount, room)` to
    /// `reserved` of **every** entry and return it; otherwise change nothing and return the
    /// tightest enforced entry. `minimum ≤ amount`; both are ≥ 0. `now_ms` ages rolling
    /// windows.
    fn try_reserve(
        &self,
        entries: &[Entry],
        amount: NanoUsd,
        minimum: NanoUsd,
        now_ms: i64,
    ) -> Result<Grant, Refusal>;

    /// Atomically reserve a **different** amount on each entry, all or nothing: `amounts[i]`
    /// on `entries[i]` (paired by index; entries without an amount are not touched). If every
    /// enforced entry has `limit − spent − reserved ≥ amounts[i]`, add each amount to its
    /// entry's `reserved` and return the room each entry had **before** this reservation;
    /// otherwise change nothing and return the entry that fell shortest. No fitting.
    ///
    /// Rate limits need this: one request reserves 1 on a requests-per-minute counter and its
    /// token estimate on a tokens-per-minute counter, in one step, so two concurrent requests
    /// can never both see the same room. (Budgets reserve one amount everywhere and use
    /// [`CounterStore::try_reserve`].) Settle with [`CounterStore::commit`] per amount.
    fn try_reserve_each(
        &self,
        entries: &[Entry],
        amounts: &[NanoUsd],
        now_ms: i64,
    ) -> Result<Vec<NanoUsd>, Refusal>;

    /// Settle: subtract `reserved` from each entry's reserved and add `actual` to its spend
    /// (rolling: in the bucket of `at_ms`). Called at most once per reservation; `reserved` is
    /// 0 for a settle that arrives after the reservation was released by expiry.
    fn commit(&self, entries: &[Entry], reserved: NanoUsd, actual: NanoUsd, at_ms: i64);

    /// Give a reservation back. Called at most once per reservation.
    fn release(&self, entries: &[Entry], reserved: NanoUsd);

    /// A counter's numbers now; zero for a counter never touched.
    fn snapshot(&self, key: &CounterKey, now_ms: i64) -> Counts;

    /// Set (not add) the ledger-derived base spend of a counter. Seeding twice with the same
    /// sums is a no-op; spend settled live is kept separately and never overwritten.
    fn seed(&self, key: &CounterKey, spend: &SeedSpend);

    /// For a rolling counter, the earliest time ≥ `now_ms` at which enough settled spend will
    /// have aged out for `limit − spent − reserved ≥ need`, assuming nothing else changes;
    /// `None` when ageing alone can never make room (reservations hold it) or for calendar
    /// counters.
    fn room_at(&self, key: &CounterKey, limit: NanoUsd, need: NanoUsd, now_ms: i64) -> Option<i64>;

    /// Housekeeping: drop counters that can no longer matter at `now_ms` (calendar windows
    /// that ended with nothing reserved, rolling counters with nothing left).
    fn sweep(&self, now_ms: i64);
}

/// In-process counters: one `HashMap` behind one `Mutex`.
///
/// Why a single lock: a reservation touches several counters (org, tenant, tenant+feature, …)
/// and must be all-or-nothing; one lock makes that trivially atomic and deadlock-free, and the
/// critical section is a few hash lookups (measured in `benches/admission.rs`: well under a
/// microsecond per reserve+commit, so the lock is not the bottleneck of a gateway that spends
/// milliseconds upstream). Sharding would need ordered multi-shard locking for no measured gain.
#[derive(Debug, Default)]
pub struct MemoryStore {
    counters: Mutex<Counters>,
}

type Counters = HashMap<CounterKey, Counter, BuildHasherDefault<KeyHasher>>;

#[derive(Debug, Default)]
struct Counter {
    reserved: i64,
    /// Calendar: seeded base spend (from the ledger).
    base: i64,
    /// Calendar: spend settled live.
    live: i64,
    /// Rolling: bucket start → (seeded base, live spend). Only buckets still in the window.
    buckets: BTreeMap<i64, (i64, i64)>,
    /// Rolling: sum of all of `buckets` (both halves).
    bucket_total: i64,
}

impl Counter {
    /// Drops rolling buckets that have wholly left `[now − len, now)`.
    fn age(&mut self, slot: Slot, now_ms: i64) {
        if let Slot::Rolling { len_ms, bucket_ms } = slot {
            let horizon = now_ms.saturating_sub(len_ms);
            while let Some(entry) = self.buckets.first_entry() {
                if entry.key().saturating_add(bucket_ms) > horizon {
                    break;
                }
                let (base, live) = entry.remove();
                self.bucket_total = self.bucket_total.saturating_sub(base.saturating_add(live));
            }
        }
    }

    fn spent(&self, slot: Slot) -> i64 {
        match slot {
            Slot::Calendar { .. } => self.base.saturating_add(self.live),
            Slot::Rolling { .. } => self.bucket_total,
        }
    }

    fn room(&self, slot: Slot, limit: NanoUsd) -> i128 {
        i128::from(limit.nanos()) - i128::from(self.spent(slot)) - i128::from(self.reserved)
    }

    fn is_idle(&self) -> bool {
        self.reserved == 0 && self.buckets.is_empty()
    }
}

fn clamp_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of counters held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Counters> {
        // A panic while holding the lock cannot leave a counter half-updated in a way that
        // matters more than refusing all traffic would, so recover the guard.
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl CounterStore for MemoryStore {
    fn try_reserve(
        &self,
        entries: &[Entry],
        amount: NanoUsd,
        minimum: NanoUsd,
        now_ms: i64,
    ) -> Result<Grant, Refusal> {
        let amount = amount.nanos().max(0);
        let minimum = minimum.nanos().clamp(0, amount);
        let mut map = self.lock();
        // Pass 1: read every room. Nothing is modified until every enforced entry passed.
        let mut tightest: Option<Room> = None;
        let mut over = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let room = match map.get_mut(&e.key) {
                Some(c) => {
                    c.age(e.key.slot(), now_ms);
                    c.room(e.key.slot(), e.limit)
                }
                None => i128::from(e.limit.nanos()),
            };
            let room = NanoUsd(clamp_i64(room));
            if e.enforce {
                if tightest.is_none_or(|t| room < t.room) {
                    tightest = Some(Room { entry: i, room });
                }
            } else if room.nanos() < amount {
                over.push(Room { entry: i, room });
            }
        }
        let grant = match tightest {
            None => amount,
            Some(t) if t.room.nanos() >= amount => amount,
            Some(t) if t.room.nanos() >= minimum => t.room.nanos(),
            Some(t) => return Err(Refusal::Shortfall(t)),
        };
        // Pass 2: apply to all.
        for e in entries {
            let c = match map.get_mut(&e.key) {
                Some(c) => c,
                None => map.entry(e.key.clone()).or_default(),
            };
            c.reserved = c.reserved.saturating_add(grant);
        }
        Ok(Grant {
            amount: NanoUsd(grant),
            over,
        })
    }

    fn try_reserve_each(
        &self,
        entries: &[Entry],
        amounts: &[NanoUsd],
        now_ms: i64,
    ) -> Result<Vec<NanoUsd>, Refusal> {
        let mut map = self.lock();
        let mut rooms = Vec::with_capacity(entries.len().min(amounts.len()));
        // The enforced entry with the largest shortfall (amount − room), if any.
        let mut short: Option<(i128, Room)> = None;
        for (i, (e, amount)) in entries.iter().zip(amounts).enumerate() {
            let room = match map.get_mut(&e.key) {
                Some(c) => {
                    c.age(e.key.slot(), now_ms);
                    c.room(e.key.slot(), e.limit)
                }
                None => i128::from(e.limit.nanos()),
            };
            let missing = i128::from(amount.nanos().max(0)) - room;
            let room = NanoUsd(clamp_i64(room));
            rooms.push(room);
            if e.enforce && missing > 0 && short.is_none_or(|(m, _)| missing > m) {
                short = Some((missing, Room { entry: i, room }));
            }
        }
        if let Some((_, room)) = short {
            return Err(Refusal::Shortfall(room));
        }
        for (e, amount) in entries.iter().zip(amounts) {
            let c = match map.get_mut(&e.key) {
                Some(c) => c,
                None => map.entry(e.key.clone()).or_default(),
            };
            c.reserved = c.reserved.saturating_add(amount.nanos().max(0));
        }
        Ok(rooms)
    }

    fn commit(&self, entries: &[Entry], reserved: NanoUsd, actual: NanoUsd, at_ms: i64) {
        let reserved = reserved.nanos().max(0);
        let actual = actual.nanos().max(0);
        let mut map = self.lock();
        for e in entries {
            let c = match map.get_mut(&e.key) {
                Some(c) => c,
                None => map.entry(e.key.clone()).or_default(),
            };
            c.reserved = c.reserved.saturating_sub(reserved).max(0);
            match e.key.slot() {
                Slot::Calendar { .. } => c.live = c.live.saturating_add(actual),
                Slot::Rolling { bucket_ms, .. } => {
                    // Dated by admission, like the ledger row. A settle arriving more than a
                    // window after its admission lands in a bucket the next `age` drops —
                    // exactly what a rebuild from the ledger would count.
                    let b = c.buckets.entry(bucket_start(at_ms, bucket_ms)).or_default();
                    b.1 = b.1.saturating_add(actual);
                    c.bucket_total = c.bucket_total.saturating_add(actual);
                }
            }
        }
    }

    fn release(&self, entries: &[Entry], reserved: NanoUsd) {
        let reserved = reserved.nanos().max(0);
        let mut map = self.lock();
        for e in entries {
            if let Some(c) = map.get_mut(&e.key) {
                c.reserved = c.reserved.saturating_sub(reserved).max(0);
            }
        }
    }

    fn snapshot(&self, key: &CounterKey, now_ms: i64) -> Counts {
        let mut map = self.lock();
        match map.get_mut(key) {
            Some(c) => {
                c.age(key.slot(), now_ms);
                Counts {
                    spent: NanoUsd(c.spent(key.slot())),
                    reserved: NanoUsd(c.reserved),
                }
            }
            None => Counts::default(),
        }
    }

    fn seed(&self, key: &CounterKey, spend: &SeedSpend) {
        let mut map = self.lock();
        let c = map.entry(key.clone()).or_default();
        match (key.slot(), spend) {
            (Slot::Calendar { .. }, SeedSpend::Total(t)) => c.base = t.nanos().max(0),
            (Slot::Calendar { .. }, SeedSpend::Buckets(b)) => {
                c.base = b
                    .iter()
                    .fold(0i64, |acc, (_, v)| acc.saturating_add(v.nanos().max(0)));
            }
            (Slot::Rolling { bucket_ms, .. }, spend) => {
                // Replace every bucket's base half, keep the live half.
                for (base, _) in c.buckets.values_mut() {
                    *base = 0;
                }
                let items: Vec<(i64, NanoUsd)> = match spend {
                    SeedSpend::Buckets(b) => b.clone(),
                    // A total without a date cannot be aged; it is not accepted for rolling
                    // windows by the engine. Dating it "now" would be the strict choice.
                    SeedSpend::Total(_) => Vec::new(),
                };
                for (t, v) in items {
                    let b = c.buckets.entry(bucket_start(t, bucket_ms)).or_default();
                    b.0 = b.0.saturating_add(v.nanos().max(0));
                }
                c.buckets.retain(|_, (base, live)| *base != 0 || *live != 0);
                c.bucket_total = c.buckets.values().fold(0i64, |acc, (b, l)| {
                    acc.saturating_add(*b).saturating_add(*l)
                });
            }
        }
    }

    fn room_at(&self, key: &CounterKey, limit: NanoUsd, need: NanoUsd, now_ms: i64) -> Option<i64> {
        let Slot::Rolling { len_ms, bucket_ms } = key.slot() else {
            return None;
        };
        let mut map = self.lock();
        let Some(c) = map.get_mut(key) else {
            // Nothing spent, nothing reserved: room is the limit, now or never.
            return (limit >= need).then_some(now_ms);
        };
        c.age(key.slot(), now_ms);
        let mut room = c.room(key.slot(), limit);
        let need = i128::from(need.nanos());
        if room >= need {
            return Some(now_ms);
        }
        for (start, (base, live)) in &c.buckets {
            room += i128::from(*base) + i128::from(*live);
            if room >= need {
                // The bucket stops counting once it has wholly left the window.
                return Some(start.saturating_add(bucket_ms).saturating_add(len_ms));
            }
        }
        None
    }

    fn sweep(&self, now_ms: i64) {
        let mut map = self.lock();
        map.retain(|key, c| match key.slot() {
            // A counter holding nothing reads as a missing one: dropping it keeps counters
            // without a window (rate-limit concurrency) from accumulating per value.
            Slot::Calendar { end_ms, .. } => {
                c.reserved != 0 || (end_ms > now_ms && (c.base != 0 || c.live != 0))
            }
            Slot::Rolling { .. } => {
                c.age(key.slot(), now_ms);
                !c.is_idle()
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, slot: Slot) -> CounterKey {
        CounterKey::new(Arc::from(name), slot)
    }

    const CAL: Slot = Slot::Calendar {
        start_ms: 0,
        end_ms: 1_000_000,
    };

    fn entry(name: &str, limit: i64, enforce: bool) -> Entry {
        Entry {
            key: key(name, CAL),
            limit: NanoUsd(limit),
            enforce,
        }
    }

    #[test]
    fn keys_hash_once_and_compare_by_value() {
        let a = key("acme#1", CAL);
        let b = CounterKey::with_budget_hash(Arc::from("acme#1"), fnv1a(b"acme#1"), CAL);
        assert_eq!(a, b);
        assert_eq!(a.hash, b.hash);
        assert_ne!(a, key("acme#2", CAL));
        assert_ne!(
            a,
            key(
                "acme#1",
                Slot::Calendar {
                    start_ms: 1_000_000,
                    end_ms: 2_000_000
                }
            )
        );
        // Two distinct allocations of the same identity find the same counter.
        let s = MemoryStore::new();
        let es = [Entry {
            key: a,
            limit: NanoUsd(10),
            enforce: true,
        }];
        s.try_reserve(&es, NanoUsd(4), NanoUsd(4), 0).unwrap();
        assert_eq!(s.snapshot(&b, 0).reserved, NanoUsd(4));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn all_or_nothing() {
        let s = MemoryStore::new();
        let es = [entry("a", 100, true), entry("b", 50, true)];
        assert_eq!(
            s.try_reserve(&es, NanoUsd(40), NanoUsd(40), 0)
                .unwrap()
                .amount,
            NanoUsd(40)
        );
        // b has 10 left: nothing is reserved anywhere.
        let err = s.try_reserve(&es, NanoUsd(40), NanoUsd(40), 0).unwrap_err();
        assert_eq!(
            err,
            Refusal::Shortfall(Room {
                entry: 1,
                room: NanoUsd(10)
            })
        );
        assert_eq!(s.snapshot(&es[0].key, 0).reserved, NanoUsd(40));
        // Fitting: reserve what is left when it is ≥ the minimum.
        let g = s.try_reserve(&es, NanoUsd(40), NanoUsd(5), 0).unwrap();
        assert_eq!(g.amount, NanoUsd(10));
        assert_eq!(s.snapshot(&es[0].key, 0).reserved, NanoUsd(50));
        assert_eq!(s.snapshot(&es[1].key, 0).reserved, NanoUsd(50));
    }

    #[test]
    fn reserve_each_is_all_or_nothing_with_its_own_amounts() {
        let s = MemoryStore::new();
        let es = [entry("rpm", 2, true), entry("tpm", 100, true)];
        let rooms = s
            .try_reserve_each(&es, &[NanoUsd(1), NanoUsd(60)], 0)
            .unwrap();
        assert_eq!(rooms, vec![NanoUsd(2), NanoUsd(100)]);
        // The request counter has room, the token counter does not: nothing is reserved.
        let err = s
            .try_reserve_each(&es, &[NanoUsd(1), NanoUsd(60)], 0)
            .unwrap_err();
        assert_eq!(
            err,
            Refusal::Shortfall(Room {
                entry: 1,
                room: NanoUsd(40)
            })
        );
        assert_eq!(s.snapshot(&es[0].key, 0).reserved, NanoUsd(1));
        assert_eq!(s.snapshot(&es[1].key, 0).reserved, NanoUsd(60));
        // Exactly the room left fits.
        s.try_reserve_each(&es, &[NanoUsd(1), NanoUsd(40)], 0)
            .unwrap();
        assert!(
            s.try_reserve_each(&es, &[NanoUsd(1), NanoUsd(0)], 0)
                .is_err()
        );
        // An unenforced entry is charged but never blocks.
        let soft = [entry("soft", 1, false)];
        s.try_reserve_each(&soft, &[NanoUsd(5)], 0).unwrap();
        assert_eq!(s.snapshot(&soft[0].key, 0).reserved, NanoUsd(5));
    }

    #[test]
    fn unenforced_entries_never_block_but_report() {
        let s = MemoryStore::new();
        let es = [entry("soft", 10, false)];
        let g = s.try_reserve(&es, NanoUsd(40), NanoUsd(40), 0).unwrap();
        assert_eq!(g.amount, NanoUsd(40));
        assert_eq!(
            g.over,
            vec![Room {
                entry: 0,
                room: NanoUsd(10)
            }]
        );
        s.commit(&es, NanoUsd(40), NanoUsd(35), 0);
        assert_eq!(
            s.snapshot(&es[0].key, 0),
            Counts {
                spent: NanoUsd(35),
                reserved: NanoUsd(0)
            }
        );
    }

    #[test]
    fn rolling_buckets_age_out_whole() {
        let s = MemoryStore::new();
        let slot = Slot::Rolling {
            len_ms: 600_000,
            bucket_ms: 60_000,
        };
        let es = [Entry {
            key: key("r", slot),
            limit: NanoUsd(100),
            enforce: true,
        }];
        s.try_reserve(&es, NanoUsd(70), NanoUsd(70), 30_000)
            .unwrap();
        s.commit(&es, NanoUsd(70), NanoUsd(70), 30_000); // bucket [0, 60_000)
        assert!(
            s.try_reserve(&es, NanoUsd(70), NanoUsd(70), 100_000)
                .is_err()
        );
        // Room for 70 appears when bucket [0, 60s) has wholly left [now − 600s, now):
        // 60s + 600s = 660s.
        assert_eq!(
            s.room_at(&es[0].key, NanoUsd(100), NanoUsd(70), 100_000),
            Some(660_000)
        );
        assert_eq!(s.snapshot(&es[0].key, 659_999).spent, NanoUsd(70));
        assert_eq!(s.snapshot(&es[0].key, 660_000).spent, NanoUsd(0));
        s.sweep(660_000);
        assert!(s.is_empty());
    }

    #[test]
    fn seeding_sets_and_keeps_live_spend() {
        let s = MemoryStore::new();
        let es = [entry("a", 100, true)];
        s.try_reserve(&es, NanoUsd(10), NanoUsd(10), 0).unwrap();
        s.commit(&es, NanoUsd(10), NanoUsd(10), 0);
        s.seed(&es[0].key, &SeedSpend::Total(NanoUsd(30)));
        s.seed(&es[0].key, &SeedSpend::Total(NanoUsd(30)));
        assert_eq!(s.snapshot(&es[0].key, 0).spent, NanoUsd(40));
        s.seed(&es[0].key, &SeedSpend::Total(NanoUsd(5)));
        assert_eq!(s.snapshot(&es[0].key, 0).spent, NanoUsd(15));
    }
}
