//! # tollgate-ledger — the batched writer that never drops a row
//!
//! ## Contract (docs/contracts.md §2 invariants 1, 4, 5)
//! Every request leaves exactly one [`LedgerRow`]. [`Ledger::record`] never blocks on the
//! database and never discards: a row is either queued for the writer thread, or appended to
//! the spill file, which is replayed into the store. Restarts lose nothing: a new
//! [`Ledger::start`] replays whatever a previous process left in the spill file before it
//! accepts rows. Money is written as the integer nano-USD the row carries, so the sum of
//! ledger rows equals the sum recorded (idempotent inserts mean replays never double count).
//!
//! ## Design
//! ```text
//!  record() ──try_send──► bounded channel ──► writer OS thread ──► Store::insert_rows
//!     │  (full / closed)                        │ batches: ≤ max_batch rows or linger,
//!     └──append JSON line──► spill file ◄───────┘ one transaction each; after each batch
//!                               │                  it drains the spill file back
//!                               └── replayed at start (crash recovery)
//! ```
//! - **Hot path**: `record` = one uncontended `RwLock` read + `try_send`. Non-blocking, so it
//!   is safe in `Drop` impls and async code.
//! - **Overload path**: when the channel is full (the writer is behind), `record` appends the
//!   row to the spill file under a mutex. That is blocking file I/O, but only taken under
//!   overload; it bounds memory instead of discarding. The writer drains the file when it
//!   catches up (the `spill` module documents the rename-then-replay protocol that keeps
//!   recorders from waiting on database writes, and its crash safety).
//! - **Database failures**: a failing batch stays in memory and is retried with backoff; if
//!   the failure outlasts `retry_window` (a few seconds) the batch is spilled and the writer
//!   moves on, so the channel keeps flowing. Spilled rows are retried on later drains.
//! - **Barrier**: [`Ledger::flush`] resolves once every row recorded before the call is
//!   committed (channel drained, spill file replayed) — admin reads call it first to be
//!   read-your-writes consistent.
//! - **Shutdown**: [`Ledger::shutdown`] stops accepting (the channel's only sender is dropped,
//!   so later `record`s go to the spill file, replayed by the next start), lets the writer
//!   drain everything buffered, write, drain the spill file, and joins the thread.
//!
//! ## Failure modes
//! | failure | effect |
//! |---|---|
//! | writer slower than traffic | rows spill to disk; memory stays bounded |
//! | database down ≤ `retry_window` | batch retried in memory; channel backs up, rows spill |
//! | database down longer | batch spilled; writer continues; `flush` reports `NotCommitted` |
//! | spill file unwritable | `record` falls back to a blocking send (backpressure) |
//! | spill unwritable *and* writer gone | row lost: logged with its id, counted in `rows_lost` |
//! | database *and* disk failing | the writer keeps the batch and retries forever; `flush` and `shutdown` wait |
//! | a row the database rejects for good (none known) | it stays in the spill file, retried every second; `flush` reports `NotCommitted`; other rows keep flowing |
//! | corrupt spill line | skipped with an error log, counted, copied to `PATH.corrupt` |
//! | process crash | rows still in the channel are lost (in-flight requests, invariant 4); spilled rows are replayed |
//!
//! One spill file belongs to one ledger (one process); two gateways must not share a path.

mod spill;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::oneshot;
use tollgate_store::{Store, StoreError};
use tollgate_types::LedgerRow;

use crate::spill::Spill;

/// Why a ledger operation failed. None of these means a row was dropped.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The store failed (e.g. while replaying the spill file at start).
    #[error("ledger store: {0}")]
    Store(#[from] StoreError),
    /// The spill file (or its directory) cannot be opened, read or rotated.
    #[error("ledger spill file {}: {source}", path.display())]
    Spill {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid ledger options: {0}")]
    InvalidOptions(String),
    #[error("cannot start the ledger writer thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// `flush` after `shutdown`: later rows go to the spill file for the next start.
    #[error("the ledger is shut down")]
    Closed,
    /// The writer thread ended unexpectedly (a bug); rows recorded since go to the spill file.
    #[error("the ledger writer thread is gone")]
    WriterGone,
    /// The writer thread panicked (reported by `shutdown`).
    #[error("the ledger writer thread panicked")]
    WriterPanicked,
    /// `flush` could not commit everything: the rows are safe in the spill file but the
    /// database is failing; the reason is the last error.
    #[error("ledger rows are spilled to disk but not yet in the database: {0}")]
    NotCommitted(String),
}

/// Tuning for [`Ledger::start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerOptions {
    /// The spill file (JSON lines). Its directory is created if missing.
    pub spill_path: PathBuf,
    /// Rows the channel holds before `record` spills (default 16384).
    pub channel_capacity: usize,
    /// Rows per database transaction at most (default 512).
    pub max_batch: usize,
    /// How long the writer waits for more rows to fill a batch (default 5 ms).
    pub linger: Duration,
    /// How long a failing batch is retried in memory before it is spilled (default 0: the
    /// first failed write spills, so an answered row waits in memory no longer than one write).
    pub retry_window: Duration,
    /// How long one batch write waits for another process's database lock before it counts as
    /// failed (default 100 ms; the CLI and admin reads keep the store's 5 s).
    pub write_wait: Duration,
    /// `strict`: rows are acknowledged only once on disk, the writer commits without lingering
    /// and spill appends are fsynced (`storage.durability`).
    pub durability: Durability,
    /// How old a provisional row must be before it is written (default 100 ms; `strict`: at
    /// once). Most requests end sooner and cost the database nothing for their intent; a
    /// crash can leave without a row only the requests dispatched within this window.
    pub intent_delay: Duration,
}

/// How durable a recorded row is before the gateway moves on (`storage.durability`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// Rows are committed in groups every `linger` (5 ms); a crash loses what was answered
    /// but not yet committed — at most one linger plus one write.
    #[default]
    Batched,
    /// A row is committed (or spilled and fsynced) before the response completes, and a
    /// request's provisional row before its provider call.
    Strict,
}

impl LedgerOptions {
    pub fn new(spill_path: impl Into<PathBuf>) -> Self {
        LedgerOptions {
            spill_path: spill_path.into(),
            channel_capacity: 16_384,
            max_batch: 512,
            linger: Duration::from_millis(5),
            retry_window: Duration::ZERO,
            write_wait: Duration::from_millis(100),
            durability: Durability::Batched,
            intent_delay: Duration::from_millis(100),
        }
    }
}

/// Counters for `/metrics`. Monotonic except `queue_depth`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LedgerStats {
    /// `record` calls.
    pub rows_recorded: u64,
    /// Rows newly inserted into the database (spill replays included, duplicates not).
    pub rows_written: u64,
    /// Rows appended to the spill file (overload, writer gone, persistent DB failure).
    pub rows_spilled: u64,
    /// Rows waiting in the channel.
    pub queue_depth: u64,
    /// Failed database write attempts (each retry counts).
    pub write_errors: u64,
    /// Spill lines skipped as unparseable.
    pub spill_corrupt_lines: u64,
    /// Rows that could be neither queued nor spilled (disk failing and writer gone). Should
    /// always be 0; anything else is logged with the request id.
    pub rows_lost: u64,
    /// Provisional rows received (one per dispatched request, more for retries).
    pub intents_recorded: u64,
    /// Provisional rows that could not be kept (queue full, database failing): a crash would
    /// leave those requests without an `interrupted` row. Final rows are never affected.
    pub intents_dropped: u64,
    /// `interrupted` rows recorded at start from the intents a previous process left.
    pub rows_interrupted: u64,
}

/// What [`Ledger::shutdown`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ShutdownReport {
    /// Rows this ledger inserted into the database over its lifetime.
    pub rows_written: u64,
    /// Rows this ledger appended to the spill file over its lifetime.
    pub rows_spilled: u64,
    /// Rows left in the spill file at shutdown, to be replayed by the next start.
    pub rows_pending_in_spill: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub rows_recorded: AtomicU64,
    pub rows_written: AtomicU64,
    pub rows_spilled: AtomicU64,
    pub queue_depth: AtomicI64,
    pub write_errors: AtomicU64,
    pub spill_corrupt_lines: AtomicU64,
    pub rows_lost: AtomicU64,
    pub intents_recorded: AtomicU64,
    pub intents_dropped: AtomicU64,
    pub rows_interrupted: AtomicU64,
}

/// A flush waiter: answered with `Err(reason)` when rows could only be spilled.
pub(crate) type FlushWaiter = oneshot::Sender<Result<(), String>>;

/// Told when a row is on disk (committed or spilled), or why it is not.
pub(crate) type Ack = oneshot::Sender<Result<(), String>>;

pub(crate) enum Msg {
    /// A final row. Boxed so the channel's slots stay small (a row is several hundred bytes).
    Row(Box<LedgerRow>, Option<Ack>),
    /// A provisional row: what the ledger should say if the process dies before the final one.
    Intent(Box<LedgerRow>, Option<Ack>),
    /// Wakes the writer to look at pending flushes.
    Wake,
}

/// Resolves when a row is on disk (`storage.durability: strict` awaits it): committed to the
/// database, or appended to the spill file. An error says why not (the row itself is still
/// never dropped; a provisional row may be).
pub struct Durable(DurableState);

enum DurableState {
    Ready(Option<Result<(), String>>),
    Waiting(oneshot::Receiver<Result<(), String>>),
}

impl Durable {
    fn ready(r: Result<(), String>) -> Durable {
        Durable(DurableState::Ready(Some(r)))
    }
}

impl std::future::Future for Durable {
    type Output = Result<(), LedgerError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let r = match &mut self.0 {
            DurableState::Ready(r) => r.take().unwrap_or(Ok(())),
            DurableState::Waiting(rx) => match std::pin::Pin::new(rx).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(r)) => r,
                Poll::Ready(Err(_)) => return Poll::Ready(Err(LedgerError::WriterGone)),
            },
        };
        Poll::Ready(r.map_err(LedgerError::NotCommitted))
    }
}

/// State shared by the handles and the writer thread. It holds no `Sender`, so the writer's
/// reference to it cannot keep the channel open.
pub(crate) struct Shared {
    pub store: Store,
    pub spill: Spill,
    pub counters: Counters,
    pub flush_waiters: Mutex<Vec<FlushWaiter>>,
    pub opts: LedgerOptions,
    /// This ledger's name in the intent log: its spill path, which one process owns.
    pub owner: String,
}

struct Handle {
    shared: Arc<Shared>,
    /// The channel's only sender. `None` after shutdown. `record` holds a read lock across
    /// `try_send`, so once `shutdown` has taken the write lock and dropped the sender, every
    /// row is either in the channel (and the writer will see it before `Disconnected`) or
    /// goes to the spill file — no row can slip into a channel nobody reads.
    sender: RwLock<Option<SyncSender<Msg>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The ledger writer handle. Cheap to clone; `Send + Sync`.
///
/// Call [`Ledger::shutdown`] before exiting. Dropping the last clone without it still writes
/// everything queued, but blocks the dropping thread until the writer has finished.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Handle>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("store", &self.inner.shared.store)
            .field("spill_path", &self.inner.shared.spill.path())
            .finish()
    }
}

/// Recover from poisoning: the protected data (a file handle, a list, a sender) is still
/// valid, and a panic elsewhere must not make the ledger panic too.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Ledger {
    /// Replays any spill file left by a previous run into `store` (then removes it), and
    /// starts the writer thread.
    pub fn start(store: Store, opts: LedgerOptions) -> Result<Ledger, LedgerError> {
        if opts.channel_capacity == 0 || opts.max_batch == 0 {
            return Err(LedgerError::InvalidOptions(
                "channel_capacity and max_batch must be at least 1".into(),
            ));
        }
        let spill = Spill::open(&opts.spill_path, opts.durability == Durability::Strict)?;
        let replay = spill.drain_into(&store, opts.max_batch)?;
        if replay.replayed > 0 || replay.corrupt > 0 {
            tracing::info!(
                path = %opts.spill_path.display(),
                replayed = replay.replayed,
                inserted = replay.inserted,
                corrupt = replay.corrupt,
                "replayed ledger spill file from a previous run"
            );
        }
        let owner = opts.spill_path.display().to_string();
        let interrupted = recover_intents(&store, &owner, opts.max_batch)?;
        let counters = Counters::default();
        counters
            .rows_written
            .store(replay.inserted + interrupted, Ordering::Relaxed);
        counters
            .rows_interrupted
            .store(interrupted, Ordering::Relaxed);
        counters
            .spill_corrupt_lines
            .store(replay.corrupt, Ordering::Relaxed);
        let (tx, rx) = mpsc::sync_channel(opts.channel_capacity);
        let shared = Arc::new(Shared {
            store,
            spill,
            counters,
            flush_waiters: Mutex::new(Vec::new()),
            opts,
            owner,
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("tollgate-ledger".into())
                .spawn(move || writer::run(shared, rx))
                .map_err(LedgerError::Spawn)?
        };
        Ok(Ledger {
            inner: Arc::new(Handle {
                shared,
                sender: RwLock::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// The store, for readers (reports, listings). Call [`Ledger::flush`] first to see every
    /// row recorded so far.
    pub fn store(&self) -> &Store {
        &self.inner.shared.store
    }

    /// True while the writer thread is alive and accepting rows (false after `shutdown`, or if
    /// the thread died). Readiness probes use it: rows still never get lost when it is false —
    /// they spill — but a gateway without a writer should not take new traffic.
    pub fn is_running(&self) -> bool {
        lock(&self.inner.thread)
            .as_ref()
            .is_some_and(|h| !h.is_finished())
    }

    /// `storage.durability`.
    pub fn durability(&self) -> Durability {
        self.inner.shared.opts.durability
    }

    /// The spill file path.
    pub fn spill_path(&self) -> &Path {
        self.inner.shared.spill.path()
    }

    /// Records one row. Never blocks on the database and never discards: the row is queued,
    /// or — when the queue is full or the ledger is shut down — appended to the spill file
    /// (blocking file I/O, overload only). Safe to call from `Drop` and async code.
    pub fn record(&self, row: LedgerRow) {
        self.record_with(row, None);
    }

    /// [`Ledger::record`], and a future that resolves once the row is on disk — committed, or
    /// spilled (fsynced under `strict`). The row is recorded whether or not it is awaited.
    pub fn record_durable(&self, row: LedgerRow) -> Durable {
        let (tx, rx) = oneshot::channel();
        match self.record_with(row, Some(tx)) {
            Some(r) => Durable::ready(r),
            None => Durable(DurableState::Waiting(rx)),
        }
    }

    /// Queues or spills a final row. Returns the answer for `ack` when it is known at once
    /// (the row went to the spill file), `None` when the writer will answer.
    fn record_with(&self, row: LedgerRow, ack: Option<Ack>) -> Option<Result<(), String>> {
        let c = &self.inner.shared.counters;
        c.rows_recorded.fetch_add(1, Ordering::Relaxed);
        let (row, ack) = match self.try_enqueue(Msg::Row(Box::new(row), ack)) {
            Ok(()) => return None,
            Err(Msg::Row(row, ack)) => (row, ack),
            Err(_) => return Some(Ok(())),
        };
        match self.inner.shared.spill.append(std::slice::from_ref(&*row)) {
            Ok(()) => {
                c.rows_spilled.fetch_add(1, Ordering::Relaxed);
                Some(Ok(()))
            }
            Err(e) => {
                tracing::error!(error = %e, request_id = %row.request_id,
                    "cannot spill a ledger row; falling back to a blocking enqueue");
                self.enqueue_blocking(row, ack);
                None
            }
        }
    }

    /// Records the provisional row of a request about to call a provider: what the ledger
    /// says if the process dies before [`Ledger::record`] brings the final row (the intent is
    /// then written at the next start as it stands). Best effort and never blocking: under
    /// overload the intent is dropped (counted in `intents_dropped`), never a final row.
    pub fn intend(&self, row: LedgerRow) {
        self.intend_with(row, None);
    }

    /// [`Ledger::intend`], resolving once the provisional row is committed (`strict`), or with
    /// the reason it was dropped.
    pub fn intend_durable(&self, row: LedgerRow) -> Durable {
        let (tx, rx) = oneshot::channel();
        match self.intend_with(row, Some(tx)) {
            Some(r) => Durable::ready(r),
            None => Durable(DurableState::Waiting(rx)),
        }
    }

    fn intend_with(&self, row: LedgerRow, ack: Option<Ack>) -> Option<Result<(), String>> {
        let c = &self.inner.shared.counters;
        c.intents_recorded.fetch_add(1, Ordering::Relaxed);
        match self.try_enqueue(Msg::Intent(Box::new(row), ack)) {
            Ok(()) => None,
            Err(_) => {
                c.intents_dropped.fetch_add(1, Ordering::Relaxed);
                Some(Err("the ledger queue is full".into()))
            }
        }
    }

    /// `try_send`; gives the message back when the channel is full or closed.
    fn try_enqueue(&self, msg: Msg) -> Result<(), Msg> {
        let c = &self.inner.shared.counters;
        let guard = self.inner.sender.read().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = guard.as_ref() else {
            return Err(msg);
        };
        // Counted before the send so the writer's decrement can never run first.
        c.queue_depth.fetch_add(1, Ordering::Relaxed);
        tx.try_send(msg).map_err(|e| {
            c.queue_depth.fetch_sub(1, Ordering::Relaxed);
            match e {
                TrySendError::Full(msg) | TrySendError::Disconnected(msg) => msg,
            }
        })
    }

    /// Last resort when the spill file cannot be written: wait for room in the channel.
    fn enqueue_blocking(&self, row: Box<LedgerRow>, ack: Option<Ack>) {
        let c = &self.inner.shared.counters;
        let guard = self.inner.sender.read().unwrap_or_else(|e| e.into_inner());
        let request_id = row.request_id.clone();
        if let Some(tx) = guard.as_ref() {
            c.queue_depth.fetch_add(1, Ordering::Relaxed);
            if tx.send(Msg::Row(row, ack)).is_ok() {
                return;
            }
            c.queue_depth.fetch_sub(1, Ordering::Relaxed);
        }
        c.rows_lost.fetch_add(1, Ordering::Relaxed);
        tracing::error!(request_id = %request_id,
            "LEDGER ROW LOST: the spill file is unwritable and the writer is gone");
    }

    /// Barrier: resolves when every row recorded before this call is committed to the
    /// database (queued rows written, spill file replayed).
    ///
    /// Errors: [`LedgerError::Closed`] after shutdown, [`LedgerError::NotCommitted`] when the
    /// database is failing (rows are safe in the spill file), [`LedgerError::WriterGone`].
    pub async fn flush(&self) -> Result<(), LedgerError> {
        let rx = {
            let guard = self.inner.sender.read().unwrap_or_else(|e| e.into_inner());
            let Some(tx) = guard.as_ref() else {
                return Err(LedgerError::Closed);
            };
            let (waiter, rx) = oneshot::channel();
            lock(&self.inner.shared.flush_waiters).push(waiter);
            // A full channel needs no wake-up: the writer is busy and checks waiters after
            // every batch. The waiter was registered first, so it cannot be missed.
            if let Err(TrySendError::Disconnected(_)) = tx.try_send(Msg::Wake) {
                return Err(LedgerError::WriterGone);
            }
            rx
        };
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(LedgerError::NotCommitted(reason)),
            Err(_) => Err(LedgerError::WriterGone),
        }
    }

    /// Stops accepting rows, writes everything queued, drains the spill file and joins the
    /// writer thread. Blocking (use `spawn_blocking` from async code). Idempotent. Rows
    /// recorded afterwards go to the spill file and are replayed by the next start.
    pub fn shutdown(&self) -> Result<ShutdownReport, LedgerError> {
        self.inner.close()?;
        let c = &self.inner.shared.counters;
        let report = ShutdownReport {
            rows_written: c.rows_written.load(Ordering::Relaxed),
            rows_spilled: c.rows_spilled.load(Ordering::Relaxed),
            rows_pending_in_spill: self.inner.shared.spill.pending_lines(),
        };
        tracing::info!(
            rows_written = report.rows_written,
            rows_spilled = report.rows_spilled,
            rows_pending_in_spill = report.rows_pending_in_spill,
            "ledger shut down"
        );
        Ok(report)
    }

    /// Current counters.
    pub fn stats(&self) -> LedgerStats {
        let c = &self.inner.shared.counters;
        LedgerStats {
            rows_recorded: c.rows_recorded.load(Ordering::Relaxed),
            rows_written: c.rows_written.load(Ordering::Relaxed),
            rows_spilled: c.rows_spilled.load(Ordering::Relaxed),
            queue_depth: u64::try_from(c.queue_depth.load(Ordering::Relaxed)).unwrap_or(0),
            write_errors: c.write_errors.load(Ordering::Relaxed),
            spill_corrupt_lines: c.spill_corrupt_lines.load(Ordering::Relaxed),
            rows_lost: c.rows_lost.load(Ordering::Relaxed),
            intents_recorded: c.intents_recorded.load(Ordering::Relaxed),
            intents_dropped: c.intents_dropped.load(Ordering::Relaxed),
            rows_interrupted: c.rows_interrupted.load(Ordering::Relaxed),
        }
    }
}

/// Writes the provisional rows `owner`'s previous process left — requests it was serving when
/// it died — into the ledger as they stand, then clears them. Idempotent: a request whose final
/// row did reach the database keeps it (inserts skip known ids), and a crash in between only
/// repeats the work. Returns how many rows were new.
fn recover_intents(store: &Store, owner: &str, batch: usize) -> Result<u64, LedgerError> {
    let left = store.intents(owner)?;
    if left.is_empty() {
        return Ok(0);
    }
    let mut inserted = 0;
    for chunk in left.chunks(batch) {
        inserted += store.insert_rows(chunk)? as u64;
    }
    let ids: Vec<String> = left.iter().map(|r| r.request_id.clone()).collect();
    store.clear_intents(owner, &ids)?;
    tracing::warn!(
        intents = left.len(),
        recorded = inserted,
        "recorded requests the previous process was serving when it died as interrupted"
    );
    Ok(inserted)
}

impl Handle {
    /// Drops the sender (the writer then drains and exits) and joins the writer.
    fn close(&self) -> Result<(), LedgerError> {
        drop(
            self.sender
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        // Held while joining so a concurrent `shutdown` returns only after the drain.
        let mut thread = lock(&self.thread);
        if let Some(handle) = thread.take() {
            handle.join().map_err(|_| LedgerError::WriterPanicked)?;
        }
        Ok(())
    }
}

/// Dropping the last handle without `shutdown` still writes everything queued: it closes the
/// channel and waits for the writer (blocking).
impl Drop for Handle {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "ledger writer ended badly");
        }
    }
}
