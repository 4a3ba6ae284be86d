//! The exact-match response cache (docs/contracts.md §6 `cache`, §4
//! `x-tollgate-cache`, §2 invariant 7).
//!
//! It owns three things, none of which knows about HTTP or the ledger:
//! - [`key`]: the cache key — SHA-256 over a canonical encoding of every request field that can
//!   change the answer, namespaced by tenant (or key) unless a model is configured
//!   `scope: global`, so no tenant can read another's answers;
//! - [`ResponseCache`]: the in-memory store — one [`quick_cache`] per model, each bounded by
//!   bytes, their bounds together within the global bound, entries expiring after the model's
//!   TTL;
//! - [`assemble`]: turning a streamed answer into the `chat.completion` body it stands for, and
//!   a stored body back into OpenAI SSE for streaming clients.
//!
//! **Memory bound:** every entry weighs its stored bytes (body, SSE rendering, labels) plus a
//! fixed per-entry overhead; a model's cache never holds more weight than its bound, and the
//! per-model bounds are scaled down at construction so that their sum never exceeds the global
//! bound. Expired entries are dropped when next looked up, and count against the bound until
//! then (so they can only make the cache smaller, never larger).

pub mod assemble;
pub mod key;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quick_cache::sync::{Cache, DefaultLifecycle};
use quick_cache::{OptionsBuilder, Weighter};
use tollgate_types::{NanoUsd, Usage};

pub use assemble::{SseReplay, StreamAssembler};
pub use key::{CacheKey, KeyInput, Namespace};

/// Bookkeeping an entry costs beyond its payload bytes (struct, `Arc`, map slot), counted in
/// its weight so that many tiny entries cannot escape the bound.
pub const ENTRY_OVERHEAD: u64 = 256;

/// Who shares a model's cached answers (not a budget or rate-limit `Scope`: those select
/// requests by attribution; this says how far an answer may travel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    /// Each tenant (or, without a tenant, each virtual key) has its own answers.
    Tenant,
    /// Every caller shares answers — only for models whose prompts carry no tenant data.
    Global,
}

/// One model's cache settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSettings {
    pub ttl: Duration,
    pub max_bytes: u64,
    pub scope: CacheScope,
    /// Cache sampled requests (temperature > 0 or absent) too.
    pub cache_nondeterministic: bool,
}

/// A cached answer.
#[derive(Debug)]
pub struct Entry {
    /// The complete OpenAI `chat.completion` body, replayed as-is to non-streaming clients.
    pub body: Bytes,
    /// The same answer as SSE, when it can be replayed to streaming clients.
    pub sse: Option<SseReplay>,
    /// What the provider reported (or Tollgate counted) when the answer was produced.
    pub usage: Usage,
    /// What the answer cost when it was produced: each hit saves this much.
    pub cost: NanoUsd,
    /// Upstream model, provider and deployment label that produced it.
    pub served_model: String,
    pub provider: String,
    pub deployment: String,
    expires_at: Instant,
}

impl Entry {
    pub fn new(
        body: Bytes,
        sse: Option<SseReplay>,
        usage: Usage,
        cost: NanoUsd,
        served: (String, String, String),
        ttl: Duration,
    ) -> Entry {
        Entry {
            body,
            sse,
            usage,
            cost,
            served_model: served.0,
            provider: served.1,
            deployment: served.2,
            expires_at: Instant::now() + ttl,
        }
    }

    fn weight(&self) -> u64 {
        let sse = self.sse.as_ref().map_or(0, |s| {
            s.chunks.len() + s.usage.as_ref().map_or(0, Bytes::len)
        });
        (self.body.len()
            + sse
            + self.served_model.len()
            + self.provider.len()
            + self.deployment.len()) as u64
            + ENTRY_OVERHEAD
    }
}

#[derive(Clone)]
struct EntryWeighter;

impl Weighter<CacheKey, Arc<Entry>> for EntryWeighter {
    fn weight(&self, _key: &CacheKey, val: &Arc<Entry>) -> u64 {
        val.weight()
    }
}

/// [`CacheKey`] hashes itself to its first eight bytes; the hasher only passes them on.
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Store = Cache<CacheKey, Arc<Entry>, EntryWeighter, BuildHasherDefault<KeyHasher>>;

struct ModelCache {
    settings: ModelSettings,
    /// The bound actually enforced (`settings.max_bytes`, scaled to fit the global bound).
    bound: u64,
    store: Store,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    bypasses: AtomicU64,
    inserts: AtomicU64,
    expired: AtomicU64,
}

/// A snapshot of the cache's size and counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Weight held now (payload bytes plus per-entry overhead), across models.
    pub bytes: u64,
    pub entries: u64,
    /// The global bound `bytes` never exceeds.
    pub max_bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub bypasses: u64,
    pub inserts: u64,
    pub expired: u64,
}

/// The response cache: per-model byte-bounded stores with TTLs. Cheap to share (`Arc`); reads
/// take one shard read lock.
pub struct ResponseCache {
    models: HashMap<String, ModelCache>,
    max_bytes: u64,
    counters: Counters,
}

/// Shards per model store: fewer for small bounds, so that a single large answer still fits
/// in its shard (quick_cache rejects an item heavier than a shard's hot-space target).
fn shards_for(bound: u64) -> usize {
    (bound / (4 << 20)).clamp(1, 16).next_power_of_two() as usize
}

impl ResponseCache {
    /// Builds the cache for the models with caching on. When their bounds add up to more than
    /// `max_bytes`, each is scaled down in proportion so that the sum fits.
    pub fn new(max_bytes: u64, models: impl IntoIterator<Item = (String, ModelSettings)>) -> Self {
        let models: Vec<(String, ModelSettings)> = models.into_iter().collect();
        let sum: u128 = models.iter().map(|(_, s)| u128::from(s.max_bytes)).sum();
        let models = models
            .into_iter()
            .map(|(name, settings)| {
                let bound = if sum > u128::from(max_bytes) {
                    (u128::from(settings.max_bytes) * u128::from(max_bytes) / sum) as u64
                } else {
                    settings.max_bytes
                };
                let shards = shards_for(bound);
                // Rounded down to a multiple of the shard count: quick_cache rounds each
                // shard's share up, which would otherwise let the total pass the bound.
                let capacity = bound / shards as u64 * shards as u64;
                let options = OptionsBuilder::new()
                    .shards(shards)
                    .estimated_items_capacity((capacity / 4096).max(64) as usize)
                    .weight_capacity(capacity)
                    .build();
                let store = match options {
                    Ok(o) => Cache::with_options(
                        o,
                        EntryWeighter,
                        BuildHasherDefault::default(),
                        DefaultLifecycle::default(),
                    ),
                    // Unreachable with the values above; an empty cache is the safe fallback.
                    Err(_) => Cache::with(
                        1,
                        0,
                        EntryWeighter,
                        BuildHasherDefault::default(),
                        DefaultLifecycle::default(),
                    ),
                };
                let mc = ModelCache {
                    settings,
                    bound: capacity,
                    store,
                };
                (name, mc)
            })
            .collect();
        ResponseCache {
            models,
            max_bytes,
            counters: Counters::default(),
        }
    }

    /// The settings of `model`, `None` when caching is off for it.
    pub fn settings(&self, model: &str) -> Option<&ModelSettings> {
        self.models.get(model).map(|m| &m.settings)
    }

    /// The bound enforced for `model` (its `max_bytes`, possibly scaled to the global bound).
    pub fn bound(&self, model: &str) -> Option<u64> {
        self.models.get(model).map(|m| m.bound)
    }

    /// Looks `key` up in `model`'s store; counts a hit or a miss. An expired entry is removed
    /// and is a miss.
    pub fn get(&self, model: &str, key: &CacheKey) -> Option<Arc<Entry>> {
        let found = self.models.get(model).and_then(|m| {
            let e = m.store.get(key)?;
            if e.expires_at <= Instant::now() {
                m.store.remove_if(key, |v| Arc::ptr_eq(v, &e));
                self.counters.expired.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Some(e)
        });
        let c = if found.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        c.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Counts a request that skipped the cache.
    pub fn note_bypass(&self) {
        self.counters.bypasses.fetch_add(1, Ordering::Relaxed);
    }

    /// Stores an answer (replacing any entry under `key`). An entry heavier than the model's
    /// bound is not stored.
    pub fn insert(&self, model: &str, key: CacheKey, entry: Entry) {
        let Some(m) = self.models.get(model) else {
            return;
        };
        if entry.weight() > m.bound {
            return;
        }
        m.store.insert(key, Arc::new(entry));
        self.counters.inserts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> CacheStats {
        let (bytes, entries) = self.models.values().fold((0, 0), |(b, n), m| {
            (b + m.store.weight(), n + m.store.len() as u64)
        });
        let c = &self.counters;
        CacheStats {
            bytes,
            entries,
            max_bytes: self.max_bytes,
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            bypasses: c.bypasses.load(Ordering::Relaxed),
            inserts: c.inserts.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_bytes: u64, ttl: Duration) -> ModelSettings {
        ModelSettings {
            ttl,
            max_bytes,
            scope: CacheScope::Tenant,
            cache_nondeterministic: false,
        }
    }

    fn entry(size: usize, ttl: Duration) -> Entry {
        Entry::new(
            Bytes::from(vec![b'x'; size]),
            None,
            Usage::default(),
            NanoUsd(5),
            ("m".into(), "p".into(), "p/m".into()),
            ttl,
        )
    }

    fn key(i: u64) -> CacheKey {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&i.to_le_bytes());
        k[8..16].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
        CacheKey(k)
    }

    #[test]
    fn hit_miss_and_ttl() {
        let c = ResponseCache::new(
            1 << 20,
            [(
                "m".to_string(),
                settings(1 << 20, Duration::from_millis(30)),
            )],
        );
        assert!(c.get("m", &key(1)).is_none());
        c.insert("m", key(1), entry(100, Duration::from_millis(30)));
        assert_eq!(c.get("m", &key(1)).unwrap().cost, NanoUsd(5));
        assert!(c.get("other", &key(1)).is_none());
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.get("m", &key(1)).is_none());
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.expired, s.entries), (1, 3, 1, 0));
    }

    #[test]
    fn byte_bound_holds_and_global_bound_scales_models() {
        let c = ResponseCache::new(
            100_000,
            [
                ("a".to_string(), settings(150_000, Duration::from_secs(60))),
                ("b".to_string(), settings(50_000, Duration::from_secs(60))),
            ],
        );
        assert!(c.bound("a").unwrap() + c.bound("b").unwrap() <= 100_000);
        for i in 0..2_000 {
            c.insert(
                "a",
                key(i),
                entry(1_000 + (i as usize % 7) * 300, Duration::from_secs(60)),
            );
            c.insert("b", key(i), entry(2_000, Duration::from_secs(60)));
            assert!(c.stats().bytes <= 100_000);
        }
        assert!(c.stats().entries > 10);
        // Too big for its model: refused, not stored.
        c.insert("b", key(99_999), entry(60_000, Duration::from_secs(60)));
        assert!(c.get("b", &key(99_999)).is_none());
    }
}
