//! The decision log: a bounded in-memory ring of what policies decided and why, for
//! `GET /admin/v1/policies/decisions`.
//!
//! One entry per **level change** (with the actions the new level puts in force and the
//! reason) and one per **alert** fired — not one per request: a request at an unchanged level
//! only increments the `applied` counter of each action of the level's entry that it actually
//! applied (after combining across policies). Counters are shared atomics between the entry
//! and the policy's ladder state, so counting takes no log lock. When the ring is full the
//! oldest entry goes; counters of an evicted entry keep counting into nothing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::def::Action;

/// Default capacity of the ring.
pub const DEFAULT_LOG_CAPACITY: usize = 10_000;

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// The policy's level for a scope instance changed (`from_level → to_level`; 0 = none).
    LevelChange,
    /// An alert step fired (shadow: computed, not delivered).
    Alert,
}

/// One action listed in an entry, with how many requests it was applied to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoggedAction {
    /// 1-based step the action belongs to.
    pub step: usize,
    pub action: Action,
    /// Requests it was applied to (shadow: would have been) while this entry's level held.
    /// For an alert entry: 1 when handed out for delivery, 0 in shadow mode.
    pub applied: u64,
}

/// One decision-log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionEntry {
    /// Increasing sequence number (stable across evictions).
    pub seq: u64,
    pub at_ms: i64,
    pub policy: String,
    /// The scope instance (`tenant=acme`, `*` for `{}`).
    pub instance: String,
    pub kind: EntryKind,
    pub from_level: usize,
    pub to_level: usize,
    pub reason: String,
    pub shadow: bool,
    pub actions: Vec<LoggedAction>,
}

/// Which entries [`Policies::decisions`](super::Policies::decisions) returns (all set fields
/// must match). Deserializable from the admin query string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionFilter {
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub instance: Option<String>,
    #[serde(default)]
    pub kind: Option<EntryKind>,
    #[serde(default)]
    pub shadow: Option<bool>,
    /// Entries at or after this time.
    #[serde(default)]
    pub since_ms: Option<i64>,
    /// Entries older than this sequence number (keyset pagination, newest first).
    #[serde(default)]
    pub before_seq: Option<u64>,
}

#[derive(Debug)]
struct Stored {
    entry: DecisionEntry,
    counts: Arc<[AtomicU64]>,
}

#[derive(Debug)]
pub(crate) struct DecisionLog {
    cap: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    ring: VecDeque<Stored>,
    next_seq: u64,
}

impl DecisionLog {
    pub(crate) fn new(cap: usize) -> Self {
        DecisionLog {
            cap: cap.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Appends an entry; `counts` (one per action) are shared with the caller.
    pub(crate) fn push(&self, mut entry: DecisionEntry, counts: Arc<[AtomicU64]>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        entry.seq = g.next_seq;
        g.next_seq += 1;
        if g.ring.len() >= self.cap {
            g.ring.pop_front();
        }
        g.ring.push_back(Stored { entry, counts });
    }

    /// Newest first, at most `limit`.
    pub(crate) fn query(&self, f: &DecisionFilter, limit: usize) -> Vec<DecisionEntry> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.ring
            .iter()
            .rev()
            .filter(|s| {
                let e = &s.entry;
                f.policy.as_deref().is_none_or(|p| p == e.policy)
                    && f.instance.as_deref().is_none_or(|i| i == e.instance)
                    && f.kind.is_none_or(|k| k == e.kind)
                    && f.shadow.is_none_or(|sh| sh == e.shadow)
                    && f.since_ms.is_none_or(|t| e.at_ms >= t)
                    && f.before_seq.is_none_or(|s| e.seq < s)
            })
            .take(limit)
            .map(|s| {
                let mut e = s.entry.clone();
                for (a, c) in e.actions.iter_mut().zip(s.counts.iter()) {
                    a.applied = c.load(Ordering::Relaxed);
                }
                e
            })
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ring
            .len()
    }
}
