//! Ledger tests on real SQLite files: never-drop under overload, shutdown, crash replay,
//! database failures, exact money.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may panic

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_ledger::*;
use tollgate_store::{NanoUsd, RowFilter, Store};
use tollgate_types::LedgerRow;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("ledger.db").display())
    }
    fn store(&self) -> Store {
        Store::open(&self.url()).unwrap()
    }
    fn spill(&self) -> std::path::PathBuf {
        self.dir.path().join("spill").join("ledger.spill.jsonl")
    }
    fn opts(&self) -> LedgerOptions {
        LedgerOptions::new(self.spill())
    }
}

fn row(thread: u64, i: u64) -> LedgerRow {
    let mut r = LedgerRow::start(
        format!("req_{thread:04x}{i:028x}"),
        1_735_689_600_000 + i as i64,
        "/v1/chat/completions",
    );
    r.attribution.tenant = Some(format!("tenant-{}", i % 7));
    r.usage.input_tokens = 100 + i;
    r.usage.output_tokens = 10 + thread;
    // Odd amounts so any rounding or double counting shows.
    r.list_cost = NanoUsd((i as i64 * 7_919 + thread as i64 * 104_729) % 9_999_991 + 1);
    r.effective_cost = NanoUsd((i as i64 * 6_007 + thread as i64 * 3_001) % 7_777_777 + 3);
    r
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn overload_spills_and_loses_nothing() {
    let env = Env::new();
    let mut opts = env.opts();
    opts.channel_capacity = 16;
    let ledger = Ledger::start(env.store(), opts).unwrap();
    let threads = 8u64;
    let per_thread = 5_000u64;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let l = ledger.clone();
            std::thread::spawn(move || {
                let mut sum = 0i64;
                for i in 0..per_thread {
                    let r = row(t, i);
                    sum += r.effective_cost.0;
                    l.record(r);
                }
                sum
            })
        })
        .collect();
    let recorded_sum: i64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    rt().block_on(ledger.flush()).unwrap();

    let stats = ledger.stats();
    assert_eq!(stats.rows_recorded, threads * per_thread);
    assert!(
        stats.rows_spilled > 0,
        "the spill path must be exercised: {stats:?}"
    );
    assert_eq!(stats.rows_written, threads * per_thread, "{stats:?}");
    assert_eq!(stats.rows_lost, 0);
    assert_eq!(stats.queue_depth, 0);
    let (n, sum) = ledger.store().totals(&RowFilter::default()).unwrap();
    assert_eq!(n, threads * per_thread);
    // Invariant 5: the ledger's sum equals the sum of what was recorded, to the nano-dollar.
    assert_eq!(sum, NanoUsd(recorded_sum));
    // The spill file was drained.
    assert_eq!(file_len(&env.spill()), 0);

    let report = ledger.shutdown().unwrap();
    assert_eq!(report.rows_written, threads * per_thread);
    assert_eq!(report.rows_spilled, stats.rows_spilled);
    assert_eq!(report.rows_pending_in_spill, 0);
}

#[test]
fn shutdown_writes_everything_queued() {
    let env = Env::new();
    let ledger = Ledger::start(env.store(), env.opts()).unwrap();
    for i in 0..3_000 {
        ledger.record(row(1, i));
    }
    // No flush: shutdown alone must drain the channel.
    let report = ledger.shutdown().unwrap();
    assert_eq!(report.rows_written, 3_000);
    assert_eq!(env.store().totals(&RowFilter::default()).unwrap().0, 3_000);
    // Idempotent.
    assert_eq!(ledger.shutdown().unwrap().rows_written, 3_000);
}

#[test]
fn record_after_shutdown_is_replayed_by_the_next_start() {
    let env = Env::new();
    let ledger = Ledger::start(env.store(), env.opts()).unwrap();
    for i in 0..10 {
        ledger.record(row(2, i));
    }
    ledger.shutdown().unwrap();
    // Late rows (e.g. a request finishing during shutdown) go to the spill file.
    for i in 10..25 {
        ledger.record(row(2, i));
    }
    assert_eq!(ledger.stats().rows_spilled, 15);
    assert!(file_len(&env.spill()) > 0);
    assert!(matches!(
        rt().block_on(ledger.flush()),
        Err(LedgerError::Closed)
    ));
    assert_eq!(env.store().totals(&RowFilter::default()).unwrap().0, 10);
    drop(ledger);

    let restarted = Ledger::start(env.store(), env.opts()).unwrap();
    assert_eq!(
        restarted.store().totals(&RowFilter::default()).unwrap().0,
        25
    );
    assert_eq!(restarted.stats().rows_written, 15);
    assert_eq!(
        file_len(&env.spill()),
        0,
        "spill file truncated after replay"
    );
    restarted.shutdown().unwrap();
}

#[test]
fn crash_spill_file_is_replayed_at_start() {
    let env = Env::new();
    let store = env.store();
    // Rows 0..5 made it to the database before the "crash"; all 0..20 are in the spill file,
    // as happens when a crash strikes between "insert" and "truncate".
    store
        .insert_rows(&(0..5).map(|i| row(3, i)).collect::<Vec<_>>())
        .unwrap();
    std::fs::create_dir_all(env.spill().parent().unwrap()).unwrap();
    let mut f = std::fs::File::create(env.spill()).unwrap();
    for i in 0..20 {
        serde_json::to_writer(&mut f, &row(3, i)).unwrap();
        f.write_all(b"\n").unwrap();
    }
    f.write_all(b"this is not json\n\n").unwrap();
    // A rotated file whose replay was interrupted.
    let mut d = std::fs::File::create(env.spill().with_extension("jsonl.draining")).unwrap();
    for i in 20..30 {
        serde_json::to_writer(&mut d, &row(3, i)).unwrap();
        d.write_all(b"\n").unwrap();
    }
    // A torn last line: the process died mid-write.
    let torn = serde_json::to_string(&row(3, 99)).unwrap();
    f.write_all(&torn.as_bytes()[..torn.len() / 2]).unwrap();
    drop((f, d));

    let ledger = Ledger::start(store.clone(), env.opts()).unwrap();
    let stats = ledger.stats();
    assert_eq!(stats.spill_corrupt_lines, 2, "{stats:?}");
    assert_eq!(stats.rows_written, 25, "duplicates skipped: {stats:?}");
    let (n, sum) = store.totals(&RowFilter::default()).unwrap();
    assert_eq!(n, 30);
    assert_eq!(
        sum,
        (0..30).map(|i| row(3, i).effective_cost).sum::<NanoUsd>()
    );
    assert_eq!(file_len(&env.spill()), 0);
    assert!(!env.spill().with_extension("jsonl.draining").exists());
    // Corrupt lines are kept for inspection.
    let corrupt = std::fs::read_to_string(env.spill().with_extension("jsonl.corrupt")).unwrap();
    assert!(corrupt.contains("this is not json"));

    // The ledger keeps working after recovery.
    ledger.record(row(3, 100));
    rt().block_on(ledger.flush()).unwrap();
    assert_eq!(store.totals(&RowFilter::default()).unwrap().0, 31);
    ledger.shutdown().unwrap();
}

#[test]
fn database_failure_spills_then_recovers() {
    let env = Env::new();
    let store = env.store();
    let mut opts = env.opts();
    opts.retry_window = Duration::from_millis(100);
    let ledger = Ledger::start(store.clone(), opts).unwrap();
    ledger.record(row(4, 0));
    rt().block_on(ledger.flush()).unwrap();

    // Break the database from another connection: the table disappears.
    let admin = rusqlite::Connection::open(env.dir.path().join("ledger.db")).unwrap();
    admin
        .execute_batch("ALTER TABLE requests RENAME TO requests_hidden")
        .unwrap();
    for i in 1..50 {
        ledger.record(row(4, i));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while ledger.stats().rows_spilled < 49 {
        assert!(
            Instant::now() < deadline,
            "batch never spilled: {:?}",
            ledger.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ledger.stats().write_errors > 0);
    // While the database is broken, the barrier reports it instead of lying.
    assert!(matches!(
        rt().block_on(ledger.flush()),
        Err(LedgerError::NotCommitted(_))
    ));

    admin
        .execute_batch("ALTER TABLE requests_hidden RENAME TO requests")
        .unwrap();
    rt().block_on(ledger.flush()).unwrap();
    let (n, sum) = store.totals(&RowFilter::default()).unwrap();
    assert_eq!(n, 50);
    assert_eq!(
        sum,
        (0..50).map(|i| row(4, i).effective_cost).sum::<NanoUsd>()
    );
    assert_eq!(ledger.stats().rows_lost, 0);
    ledger.shutdown().unwrap();
}

#[test]
fn flush_is_a_barrier_from_async_code() {
    let env = Env::new();
    let ledger = Ledger::start(env.store(), env.opts()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for round in 0..20u64 {
            for i in 0..100 {
                ledger.record(row(5, round * 100 + i));
            }
            ledger.flush().await.unwrap();
            let l = ledger.clone();
            let (n, _) =
                tokio::task::spawn_blocking(move || l.store().totals(&RowFilter::default()))
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(n, (round + 1) * 100, "read-your-writes after flush");
        }
    });
    let l = ledger.clone();
    let report = rt
        .block_on(rt.spawn_blocking(move || l.shutdown()))
        .unwrap()
        .unwrap();
    assert_eq!(report.rows_written, 2_000);
}

#[test]
fn concurrent_flushes_under_load() {
    let env = Env::new();
    let mut opts = env.opts();
    opts.channel_capacity = 64;
    let ledger = Ledger::start(env.store(), opts).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producers: Vec<_> = (0..3u64)
        .map(|t| {
            let l = ledger.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 20_000 {
                    l.record(row(10 + t, i));
                    i += 1;
                }
                i
            })
        })
        .collect();
    let rt = rt();
    for _ in 0..10 {
        let before = ledger.stats().rows_recorded;
        rt.block_on(ledger.flush()).unwrap();
        let (n, _) = ledger.store().totals(&RowFilter::default()).unwrap();
        assert!(n >= before, "flush barrier: {n} < {before}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total: u64 = producers.into_iter().map(|h| h.join().unwrap()).sum();
    rt.block_on(ledger.flush()).unwrap();
    assert_eq!(
        ledger.store().totals(&RowFilter::default()).unwrap().0,
        total
    );
    ledger.shutdown().unwrap();
}

#[test]
fn dropping_the_last_handle_still_writes() {
    let env = Env::new();
    {
        let ledger = Ledger::start(env.store(), env.opts()).unwrap();
        for i in 0..500 {
            ledger.record(row(6, i));
        }
    }
    assert_eq!(env.store().totals(&RowFilter::default()).unwrap().0, 500);
}

#[test]
fn rejects_zero_capacity() {
    let env = Env::new();
    let mut opts = env.opts();
    opts.channel_capacity = 0;
    assert!(matches!(
        Ledger::start(env.store(), opts),
        Err(LedgerError::InvalidOptions(_))
    ));
}

#[test]
fn ledger_is_send_sync_clone() {
    fn assert<T: Send + Sync + Clone + 'static>() {}
    assert::<Ledger>();
}

/// Provisional rows written as soon as they arrive (the default waits 100 ms).
fn eager(mut opts: LedgerOptions) -> LedgerOptions {
    opts.intent_delay = Duration::ZERO;
    opts
}

/// A provisional row younger than `intent_delay` stays in memory: a request that ends sooner
/// never touches the intent log; one that outlives it is written.
#[test]
fn an_intent_is_written_only_once_it_is_older_than_the_delay() {
    let env = Env::new();
    let store = env.store();
    let mut opts = env.opts();
    opts.intent_delay = Duration::from_millis(300);
    let ledger = Ledger::start(store.clone(), opts).unwrap();
    ledger.intend(interrupted(row(7, 1)));
    ledger.intend(interrupted(row(7, 2)));
    rt().block_on(ledger.flush()).unwrap();
    assert_eq!(store.intent_count().unwrap(), 0);
    ledger.record(row(7, 1));
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.intent_count().unwrap() == 0 {
        assert!(
            Instant::now() < deadline,
            "the due intent was never written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Only the request still running has one.
    assert_eq!(store.intent_count().unwrap(), 1);
    ledger.record(row(7, 2));
    rt().block_on(ledger.flush()).unwrap();
    assert_eq!(store.intent_count().unwrap(), 0);
    ledger.shutdown().unwrap();
}

fn interrupted(mut r: LedgerRow) -> LedgerRow {
    r.outcome = tollgate_types::Outcome::Failed;
    r.error_code = Some("gateway_interrupted".into());
    r.status = 500;
    r
}

#[test]
fn an_intent_settled_within_its_batch_is_never_written() {
    let env = Env::new();
    let store = env.store();
    let ledger = Ledger::start(store.clone(), env.opts()).unwrap();
    for i in 0..50 {
        ledger.intend(interrupted(row(1, i)));
        ledger.record(row(1, i));
    }
    rt().block_on(ledger.flush()).unwrap();
    assert_eq!(store.intent_count().unwrap(), 0);
    assert_eq!(store.totals(&RowFilter::default()).unwrap().0, 50);
    assert_eq!(ledger.stats().intents_recorded, 50);
    ledger.shutdown().unwrap();
}

#[test]
fn a_committed_intent_is_deleted_with_its_final_row() {
    let env = Env::new();
    let store = env.store();
    let ledger = Ledger::start(store.clone(), eager(env.opts())).unwrap();
    ledger.intend(interrupted(row(2, 1)));
    rt().block_on(ledger.flush()).unwrap();
    assert_eq!(store.intent_count().unwrap(), 1);
    ledger.record(row(2, 1));
    rt().block_on(ledger.flush()).unwrap();
    assert_eq!(store.intent_count().unwrap(), 0);
    let (n, cost) = store.totals(&RowFilter::default()).unwrap();
    assert_eq!((n, cost), (1, row(2, 1).effective_cost));
    ledger.shutdown().unwrap();
}

/// A process that dies with requests in flight: their provisional rows become ledger rows at
/// the next start, once, and only for the ledger that owned them.
#[test]
fn intents_left_by_a_dead_process_become_interrupted_rows_once() {
    let env = Env::new();
    let store = env.store();
    {
        let ledger = Ledger::start(store.clone(), eager(env.opts())).unwrap();
        for i in 0..5 {
            ledger.intend(interrupted(row(3, i)));
        }
        // One of them finished before the "crash".
        ledger.record(row(3, 0));
        rt().block_on(ledger.flush()).unwrap();
        // Another gateway sharing the database has its own in flight.
        let other = Ledger::start(
            store.clone(),
            eager(LedgerOptions::new(env.dir.path().join("other.spill"))),
        )
        .unwrap();
        other.intend(interrupted(row(4, 0)));
        rt().block_on(other.flush()).unwrap();
        // No shutdown is what a crash looks like to the intent log: dropping the handle only
        // drains the channel, and no final rows exist for the other four.
        std::mem::forget(other);
    }
    assert_eq!(store.intent_count().unwrap(), 5);
    let restarted = Ledger::start(store.clone(), env.opts()).unwrap();
    assert_eq!(restarted.stats().rows_interrupted, 4);
    // The other owner's intent is untouched.
    assert_eq!(store.intent_count().unwrap(), 1);
    let rows = store
        .totals(&RowFilter {
            outcome: Some(tollgate_types::Outcome::Failed),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(rows.0, 4);
    let expected: i64 =
        (1..5).map(|i| row(3, i).effective_cost.0).sum::<i64>() + row(3, 0).effective_cost.0;
    assert_eq!(
        store.totals(&RowFilter::default()).unwrap(),
        (5, NanoUsd(expected))
    );
    restarted.shutdown().unwrap();
    // Starting again finds nothing more to do.
    let again = Ledger::start(store.clone(), env.opts()).unwrap();
    assert_eq!(again.stats().rows_interrupted, 0);
    assert_eq!(store.totals(&RowFilter::default()).unwrap().0, 5);
    again.shutdown().unwrap();
}

#[test]
fn strict_acknowledges_rows_once_they_are_committed() {
    let env = Env::new();
    let store = env.store();
    let mut opts = env.opts();
    opts.durability = Durability::Strict;
    let ledger = Ledger::start(store.clone(), opts).unwrap();
    rt().block_on(async {
        ledger.intend_durable(interrupted(row(5, 1))).await.unwrap();
        assert_eq!(store.intent_count().unwrap(), 1);
        ledger.record_durable(row(5, 1)).await.unwrap();
        assert_eq!(store.totals(&RowFilter::default()).unwrap().0, 1);
        assert_eq!(store.intent_count().unwrap(), 0);
    });
    ledger.shutdown().unwrap();
}

/// A database locked by another process: the batch waits `write_wait`, not the store's 5 s
/// busy timeout, then goes to the spill file, so an answered row is on disk within about one
/// write; it reaches the database once the lock is gone.
#[test]
fn a_locked_database_spills_within_one_write() {
    let env = Env::new();
    let store = env.store();
    let ledger = Ledger::start(store.clone(), env.opts()).unwrap();
    let blocker = rusqlite::Connection::open(env.dir.path().join("ledger.db")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let t0 = Instant::now();
    let done = rt().block_on(ledger.record_durable(row(6, 1)));
    let took = t0.elapsed();
    done.unwrap();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(ledger.stats().rows_spilled >= 1);
    blocker.execute_batch("ROLLBACK").unwrap();
    rt().block_on(ledger.flush()).unwrap();
    assert_eq!(store.totals(&RowFilter::default()).unwrap().0, 1);
    ledger.shutdown().unwrap();
}
