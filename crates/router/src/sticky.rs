//! Prompt-cache stickiness: a prompt-prefix key → the deployment that last answered it, until
//! that deployment's prompt cache has gone cold.
//!
//! Providers cache prompt prefixes per deployment for a few minutes; sending the next request
//! with the same prefix to the same deployment turns full-price input tokens into cached ones.
//! The caller computes the key (already namespaced by tenant) and calls
//! [`LogicalModel::stick`](crate::LogicalModel::stick) after every successful answer, which
//! refreshes the expiry; [`LogicalModel::plan`](crate::LogicalModel::plan) puts the stuck
//! deployment first while it is unexpired and available.
//!
//! The table is bounded by `max_entries`. When full, expired entries go first; if that frees
//! less than an eighth of the table, the entries closest to expiry (the coldest caches) are
//! evicted down to 7/8 full, so the O(n) sweep runs at most once per n/8 inserts. Expired
//! entries otherwise stay until swept, which is what lets a re-stick to another deployment be
//! counted as a move.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;

#[derive(Debug, Clone)]
pub struct StickySettings {
    /// Most keys remembered (default 100 000); 0 remembers none.
    pub max_entries: usize,
}

impl Default for StickySettings {
    fn default() -> Self {
        StickySettings {
            max_entries: 100_000,
        }
    }
}

/// Sticky table counters for metrics and the demo.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StickyStats {
    /// Keys currently held (expired ones included until swept).
    pub entries: usize,
    /// Plans that put a stuck (unexpired, available) deployment first.
    pub hits: u64,
    /// Keys that re-stuck to a different deployment (after expiry, or because the stuck one
    /// was unavailable or failed).
    pub moves: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    deployment: usize,
    expires: Instant,
}

#[derive(Debug)]
pub(crate) struct StickyTable {
    max_entries: usize,
    map: Mutex<HashMap<u64, Entry>>,
    hits: AtomicU64,
    moves: AtomicU64,
}

impl StickyTable {
    pub(crate) fn new(settings: &StickySettings) -> StickyTable {
        StickyTable {
            max_entries: settings.max_entries,
            map: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            moves: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The deployment `key` is stuck to, unless expired.
    pub(crate) fn lookup(&self, key: u64, now: Instant) -> Option<usize> {
        self.lock()
            .get(&key)
            .filter(|e| e.expires > now)
            .map(|e| e.deployment)
    }

    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stick(&self, key: u64, deployment: usize, expires: Instant, now: Instant) {
        if self.max_entries == 0 {
            return;
        }
        let mut map = self.lock();
        if let Some(e) = map.get_mut(&key) {
            if e.deployment != deployment {
                self.moves.fetch_add(1, Ordering::Relaxed);
            }
            *e = Entry {
                deployment,
                expires,
            };
            return;
        }
        if map.len() >= self.max_entries {
            self.make_room(&mut map, now);
        }
        map.insert(
            key,
            Entry {
                deployment,
                expires,
            },
        );
    }

    fn make_room(&self, map: &mut HashMap<u64, Entry>, now: Instant) {
        map.retain(|_, e| e.expires > now);
        let keep = self.max_entries - (self.max_entries / 8).max(1);
        if map.len() <= keep {
            return;
        }
        let evict = map.len() - keep;
        let mut expiries: Vec<Instant> = map.values().map(|e| e.expires).collect();
        let (_, cutoff, _) = expiries.select_nth_unstable(evict - 1);
        let cutoff = *cutoff;
        // Ties at the cutoff may evict a few more than `evict`; never fewer.
        map.retain(|_, e| e.expires > cutoff);
    }

    pub(crate) fn stats(&self) -> StickyStats {
        StickyStats {
            entries: self.lock().len(),
            hits: self.hits.load(Ordering::Relaxed),
            moves: self.moves.load(Ordering::Relaxed),
        }
    }
}
