//! The writer thread: receives rows, commits them in batches, drains the spill file, answers
//! flush barriers.
//!
//! Provisional rows (intents) ride the same channel. They wait in memory until they are
//! `intent_delay` old (100 ms; no wait under `strict`); one whose final row arrives first is
//! never written, and one that was committed is deleted in the transaction that inserts its
//! final row. So a request shorter than the delay costs the database nothing extra, and a long
//! one costs one upsert and one delete.
//!
//! A dedicated OS thread, not a tokio task: SQLite calls block, and a blocked runtime worker
//! would stall unrelated requests. The loop exits only when the channel reports
//! `Disconnected`, which `std::sync::mpsc` does only after every buffered message has been
//! received — so shutdown drains the channel by construction.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

/// Tells every waiter how its row fared.
fn answer(acks: &mut Vec<Ack>, r: Result<(), String>) {
    for a in acks.drain(..) {
        // The request may be gone; that is fine.
        let _ = a.send(r.clone());
    }
}

/// Sleep step while a batch lingers.
const LINGER_STEP: Duration = Duration::from_millis(1);

use tollgate_store::Batch;
use tollgate_types::LedgerRow;

use crate::{Ack, Durability, Msg, Shared, lock};

/// How often an idle writer wakes up to retry a failed spill drain.
const IDLE_TICK: Duration = Duration::from_millis(250);
/// Wait before retrying a failed spill drain (flushes retry immediately).
const DRAIN_RETRY: Duration = Duration::from_secs(1);
const BACKOFF_START: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

pub(crate) fn run(shared: Arc<Shared>, rx: Receiver<Msg>) {
    let _guard = FailWaitersOnExit(shared.clone());
    let mut w = Writer {
        batch: Vec::with_capacity(shared.opts.max_batch),
        acks: Vec::new(),
        intents: HashMap::new(),
        intent_acks: Vec::new(),
        stored_intents: HashSet::new(),
        settled: Vec::new(),
        shared,
        rx,
        open: true,
        next_drain: None,
        last_error: None,
    };
    w.run();
}

/// If the thread ever unwinds, pending flushes must not hang: dropping their senders makes
/// them fail with `WriterGone`. On a normal exit the list is already empty.
struct FailWaitersOnExit(Arc<Shared>);

impl Drop for FailWaitersOnExit {
    fn drop(&mut self) {
        lock(&self.0.flush_waiters).clear();
    }
}

struct Writer {
    shared: Arc<Shared>,
    rx: Receiver<Msg>,
    batch: Vec<LedgerRow>,
    /// Waiting for the batch's final rows to be on disk.
    acks: Vec<Ack>,
    /// Provisional rows not written yet, by request id (a retry replaces its request's earlier
    /// one), with when the first of them arrived.
    intents: HashMap<String, (Instant, LedgerRow)>,
    /// Waiting for the batch's provisional rows to be committed.
    intent_acks: Vec<Ack>,
    /// Ids of committed provisional rows whose final row has not arrived yet.
    stored_intents: HashSet<String>,
    /// Committed provisional rows to delete with the next commit (their final rows arrived).
    settled: Vec<String>,
    /// False once the channel reported `Disconnected`.
    open: bool,
    /// Earliest time to retry a failed spill drain.
    next_drain: Option<Instant>,
    /// Why the last batch or drain could not reach the database (reported to flushes).
    last_error: Option<String>,
}

impl Writer {
    fn run(&mut self) {
        while self.open {
            match self.rx.recv_timeout(self.idle_wait()) {
                Ok(msg) => {
                    self.accept(msg);
                    self.fill_batch();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.open = false,
            }
            self.commit_batch();
            self.drain_spill(false);
            self.answer_flushes();
        }
        // Shutdown: the channel is empty and closed. Write the rest, replay the spill file.
        self.commit_batch();
        self.drain_spill(true);
        self.answer_flushes();
    }

    fn accept(&mut self, msg: Msg) {
        let depth = &self.shared.counters.queue_depth;
        match msg {
            Msg::Row(row, ack) => {
                depth.fetch_sub(1, Ordering::Relaxed);
                // Its provisional row, if any, is no longer needed: never written when it is
                // still in memory, deleted with this batch when it was.
                if self.intents.remove(&row.request_id).is_none()
                    && self.stored_intents.remove(&row.request_id)
                {
                    self.settled.push(row.request_id.clone());
                }
                self.batch.push(*row);
                self.acks.extend(ack);
            }
            Msg::Intent(row, ack) => {
                depth.fetch_sub(1, Ordering::Relaxed);
                let since = self
                    .intents
                    .get(&row.request_id)
                    .map_or_else(Instant::now, |(t, _)| *t);
                self.intents.insert(row.request_id.clone(), (since, *row));
                self.intent_acks.extend(ack);
            }
            // Only wakes the loop; waiters are checked after every batch.
            Msg::Wake => {}
        }
    }

    /// Messages held for the next commit.
    fn pending(&self) -> usize {
        self.batch.len() + self.intents.len()
    }

    /// `intent_delay`, or none under `strict` (a provisional row is committed before the call).
    fn intent_delay(&self) -> Duration {
        match self.shared.opts.durability {
            Durability::Batched => self.shared.opts.intent_delay,
            Durability::Strict => Duration::ZERO,
        }
    }

    /// Provisional rows old enough to be written, taken out of memory.
    fn due_intents(&mut self) -> Vec<LedgerRow> {
        let delay = self.intent_delay();
        if delay.is_zero() || self.intents.is_empty() {
            return self.intents.drain().map(|(_, (_, r))| r).collect();
        }
        let now = Instant::now();
        let due: Vec<String> = self
            .intents
            .iter()
            .filter(|(_, (t, _))| now.saturating_duration_since(*t) >= delay)
            .map(|(id, _)| id.clone())
            .collect();
        due.iter()
            .filter_map(|id| self.intents.remove(id).map(|(_, r)| r))
            .collect()
    }

    /// How long the loop may sleep: until the oldest waiting intent is due, at most a tick.
    fn idle_wait(&self) -> Duration {
        let delay = self.intent_delay();
        let now = Instant::now();
        self.intents
            .values()
            .map(|(t, _)| (*t + delay).saturating_duration_since(now))
            .min()
            .map_or(IDLE_TICK, |d| d.clamp(LINGER_STEP, IDLE_TICK))
    }

    /// Collects rows until the batch is full or `linger` has passed since the first one.
    ///
    /// It sleeps between non-blocking drains instead of blocking on the channel: a receiver
    /// parked in `recv` is woken by every `send`, which on a busy gateway is one context switch
    /// per request on the request path's core. Sleeping in 1 ms steps lets rows accumulate and
    /// costs a handful of wake-ups per batch whatever the request rate.
    fn fill_batch(&mut self) {
        let max = self.shared.opts.max_batch;
        // Strict durability acknowledges rows only once committed: group whatever arrived
        // during the last commit, but never wait for more.
        let linger = match self.shared.opts.durability {
            Durability::Batched => self.shared.opts.linger,
            Durability::Strict => Duration::ZERO,
        };
        let deadline = Instant::now() + linger;
        loop {
            while self.pending() < max {
                match self.rx.try_recv() {
                    Ok(msg) => self.accept(msg),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.open = false;
                        return;
                    }
                }
            }
            let now = Instant::now();
            if self.pending() >= max || self.pending() == 0 || now >= deadline {
                return;
            }
            std::thread::sleep((deadline - now).min(LINGER_STEP));
        }
    }

    /// Writes the batch. On failure: retry with backoff, keeping the rows in memory; after
    /// `retry_window` spill them and move on. If even the spill fails, keep retrying both —
    /// the rows are never discarded. Returns whether the rows reached the database.
    fn commit_batch(&mut self) -> bool {
        let intents = self.due_intents();
        if self.batch.is_empty() && intents.is_empty() && self.settled.is_empty() {
            // Intents still waiting for their delay have nothing to acknowledge yet; under
            // `strict` (no delay) there are none.
            return true;
        }
        let started = Instant::now();
        let mut backoff = BACKOFF_START;
        let c = &self.shared.counters;
        loop {
            let batch = Batch {
                rows: &self.batch,
                intents: &intents,
                settled: &self.settled,
            };
            let written = self.shared.store.write_batch(
                &self.shared.owner,
                batch,
                Some(self.shared.opts.write_wait),
            );
            match written {
                Ok(inserted) => {
                    c.rows_written.fetch_add(inserted as u64, Ordering::Relaxed);
                    self.batch.clear();
                    self.settled.clear();
                    self.stored_intents
                        .extend(intents.into_iter().map(|r| r.request_id));
                    answer(&mut self.acks, Ok(()));
                    answer(&mut self.intent_acks, Ok(()));
                    return true;
                }
                Err(e) => {
                    c.write_errors.fetch_add(1, Ordering::Relaxed);
                    self.last_error = Some(e.to_string());
                    if started.elapsed() >= self.shared.opts.retry_window {
                        match self.shared.spill.append(&self.batch) {
                            Ok(()) => {
                                tracing::error!(error = %e, rows = self.batch.len(),
                                    "ledger database write failed; batch spilled to disk");
                                c.rows_spilled
                                    .fetch_add(self.batch.len() as u64, Ordering::Relaxed);
                                self.batch.clear();
                                answer(&mut self.acks, Ok(()));
                                // Provisional rows have no spill file: they are insurance,
                                // and the final rows they stand for are safe. Settled ids stay
                                // for the next commit.
                                c.intents_dropped
                                    .fetch_add(intents.len() as u64, Ordering::Relaxed);
                                answer(&mut self.intent_acks, Err(e.to_string()));
                                // Do not hammer a failing database with a drain right away.
                                self.next_drain = Some(Instant::now() + DRAIN_RETRY);
                                return false;
                            }
                            Err(se) => tracing::error!(error = %e, spill_error = %se,
                                rows = self.batch.len(),
                                "ledger cannot write to the database or the spill file; \
                                 keeping the batch in memory and retrying"),
                        }
                    } else {
                        tracing::warn!(error = %e, rows = self.batch.len(),
                            retry_in_ms = backoff.as_millis() as u64,
                            "ledger batch write failed; retrying");
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Replays the spill file into the database. `force` ignores the retry delay after a
    /// failure (flush and shutdown want a fresh attempt). Returns whether the spill file is
    /// now empty.
    fn drain_spill(&mut self, force: bool) -> bool {
        if !force && self.next_drain.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        let c = &self.shared.counters;
        match self
            .shared
            .spill
            .drain_into(&self.shared.store, self.shared.opts.max_batch)
        {
            Ok(r) => {
                c.rows_written.fetch_add(r.inserted, Ordering::Relaxed);
                c.spill_corrupt_lines
                    .fetch_add(r.corrupt, Ordering::Relaxed);
                if r.replayed > 0 {
                    // Final rows that came through the spill file settle their intents here.
                    match self.shared.store.prune_intents(&self.shared.owner) {
                        Ok(ids) => ids.iter().for_each(|id| {
                            self.stored_intents.remove(id);
                        }),
                        Err(e) => tracing::warn!(error = %e, "cannot prune the intent log"),
                    }
                    tracing::debug!(
                        replayed = r.replayed,
                        inserted = r.inserted,
                        "drained the ledger spill file"
                    );
                }
                self.next_drain = None;
                true
            }
            Err(e) => {
                c.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot drain the ledger spill file yet; will retry");
                self.last_error = Some(e.to_string());
                self.next_drain = Some(Instant::now() + DRAIN_RETRY);
                false
            }
        }
    }

    /// Answers pending flush barriers. Every row recorded before a waiter registered is, at
    /// this point, already handled, in the spill file, or among the next `channel_capacity`
    /// messages in the channel (FIFO, never more than that many buffered) — so take at most
    /// that many, write them, replay the spill file, then answer.
    fn answer_flushes(&mut self) {
        let waiters = std::mem::take(&mut *lock(&self.shared.flush_waiters));
        if waiters.is_empty() {
            return;
        }
        let mut committed = true;
        let mut budget = self.shared.opts.channel_capacity;
        while budget > 0 && self.open {
            match self.rx.try_recv() {
                Ok(msg) => {
                    budget -= 1;
                    self.accept(msg);
                    if self.pending() >= self.shared.opts.max_batch {
                        committed &= self.commit_batch();
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => self.open = false,
            }
        }
        committed &= self.commit_batch();
        committed &= self.drain_spill(true);
        let answer = if committed {
            Ok(())
        } else {
            Err(self
                .last_error
                .clone()
                .unwrap_or_else(|| "database write failed".into()))
        };
        for w in waiters {
            // The caller may have given up waiting; that is fine.
            let _ = w.send(answer.clone());
        }
    }
}
