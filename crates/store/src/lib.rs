//! # tollgate-store — the only crate that knows SQL
//!
//! ## What it owns
//! - The SQLite database file: opening it, connection settings, schema migrations.
//! - The **ledger table** `requests` (one row per request, docs/contracts.md §2 invariant 1):
//!   idempotent batched inserts ([`Store::insert_rows`]), exact spend reports ([`Store::spend`]),
//!   paginated listing ([`Store::list_requests`]), reconciliation totals ([`Store::totals`])
//!   and traffic statistics with latency percentiles ([`Store::traffic_stats`], `stats.rs`).
//! - The **intent log** `intents`: provisional rows of requests calling a provider, so a crash
//!   leaves a row for each ([`Store::write_batch`], [`Store::intents`]).
//! - The **virtual keys table** `keys` (hashes only, never the key) and the `keys_version`
//!   counter a running gateway polls to notice out-of-process key changes; key rotation.
//! - The **admin tokens table** `admin_tokens` (hashes only, a role each) and its
//!   `admin_tokens_version` counter, polled the same way (`admin_tokens.rs`).
//! - The **audit trail** `audit`: one append-only entry per admin change, written in the
//!   change's transaction ([`Store::list_audit`], `audit.rs`).
//!
//! Nothing else in the workspace writes SQL; other crates speak [`LedgerRow`], [`SpendQuery`],
//! [`StoredKey`].
//!
//! ## Design
//! - **Blocking API.** SQLite calls block; callers run them on a dedicated thread (the ledger
//!   writer) or in `spawn_blocking` (admin reads, CLI).
//! - **Money is exact** (invariant 5): costs are `INTEGER` nano-USD columns in `STRICT` tables,
//!   so a float can never be stored; sums use SQLite's integer `SUM()`, which raises an error on
//!   64-bit overflow rather than wrapping or silently switching to floating point. That error is
//!   reported as [`StoreError::Overflow`].
//! - **Idempotent ledger inserts.** `request_id` is the primary key and inserts use
//!   `ON CONFLICT(request_id) DO NOTHING`, so the ledger may replay a spill file any number of
//!   times (crash between "insert" and "truncate") without double counting.
//! - **Durability vs. speed.** WAL journal + `synchronous=NORMAL`: a committed transaction
//!   survives a process crash; an OS crash / power loss may roll back the last transactions
//!   (the WAL is fsynced at checkpoints). `busy_timeout` makes concurrent writers (the gateway's
//!   ledger thread and a CLI `tollgate keys create`) wait instead of failing; writes use
//!   `BEGIN IMMEDIATE` so a reader never has to upgrade to a writer mid-transaction (the one case
//!   `busy_timeout` cannot resolve).
//! - **Migrations** are an ordered list applied at open under `BEGIN IMMEDIATE`, tracked in
//!   `PRAGMA user_version`; re-opening is a no-op; a database from a newer build is refused.
//!
//! ## Connections
//! A [`Store`] is a cheap `Clone + Send + Sync` handle (an `Arc`). For files it keeps a small
//! pool of idle connections: opening a SQLite connection costs a file open, the pragmas and a
//! schema parse on first use, and pooled connections keep their prepared-statement caches warm
//! (the ledger writer's insert statement is prepared once). WAL lets readers on other pooled
//! connections run while the writer commits. `sqlite::memory:` (tests) uses exactly **one**
//! connection behind a mutex: an in-memory database exists per connection, and a shared-cache
//! URI would bring table-level locking that `busy_timeout` does not cover.

mod admin_tokens;
mod audit;
mod budgets;
mod error;
mod intents;
mod keys;
mod requests;
mod rollup;
mod schema;
mod spend;
mod stats;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use admin_tokens::{AdminToken, TokenRole};
pub use audit::{
    Actor, Audit, AuditEntry, AuditFilter, AuditRecord, Audited, KeyAudit, TokenAudit,
};
pub use budgets::Definitions;
pub use error::StoreError;
pub use intents::Batch;
pub use keys::StoredKey;
pub use requests::{CACHE_NONE, MAX_PAGE_LIMIT, Page, RowFilter};
pub use rollup::{DAY_MS, whole_days};
pub use spend::{Dim, NONE_LABEL, SpendQuery, SpendRow};
pub use stats::{PERCENTILES, TrafficStats};
pub use tollgate_types::{LedgerRow, NanoUsd, Outcome, UNATTRIBUTED};

/// How long a connection waits for another writer's lock before failing with `SQLITE_BUSY`.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections kept for reuse; more may be open at once, the surplus is closed on return.
const MAX_IDLE_CONNECTIONS: usize = 8;
/// Prepared statements cached per connection (inserts, the common queries).
const STATEMENT_CACHE: usize = 64;

/// Handle to the Tollgate database. Cheap to clone; all methods block.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    backend: Backend,
    /// `synchronous=FULL` on every connection (`storage.durability: strict`): a commit is
    /// fsynced, so it survives power loss, not only a process crash.
    full_sync: std::sync::atomic::AtomicBool,
}

enum Backend {
    File {
        path: PathBuf,
        idle: Mutex<Vec<Connection>>,
    },
    Memory {
        conn: Mutex<Connection>,
    },
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.inner.url)
            .finish()
    }
}

/// A poisoned mutex only means another thread panicked while holding it; the protected value
/// (a connection list, a connection) is still usable, so recover instead of propagating panics.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    /// Opens (creating if needed) the database at `url` and applies pending migrations.
    ///
    /// Accepted forms: `sqlite://PATH` (relative such as `sqlite://./tollgate.db` or
    /// `sqlite://tollgate.db`, or absolute `sqlite:///var/lib/tollgate.db`) and
    /// `sqlite::memory:` (a private in-memory database, for tests).
    pub fn open(url: &str) -> Result<Store, StoreError> {
        let url_trimmed = url.trim();
        let backend = if url_trimmed == "sqlite::memory:" || url_trimmed == "sqlite://:memory:" {
            let conn = Connection::open_in_memory()?;
            configure(&conn)?;
            Backend::Memory {
                conn: Mutex::new(conn),
            }
        } else if let Some(rest) = url_trimmed.strip_prefix("sqlite://") {
            if rest.is_empty() {
                return Err(StoreError::InvalidInput(format!(
                    "'{url}' has no path; expected sqlite://PATH or sqlite::memory:"
                )));
            }
            if rest.contains('?') {
                return Err(StoreError::InvalidInput(format!(
                    "'{url}': query parameters are not supported; expected sqlite://PATH"
                )));
            }
            Backend::File {
                path: PathBuf::from(rest),
                idle: Mutex::new(Vec::new()),
            }
        } else if url_trimmed.starts_with("postgres://") || url_trimmed.starts_with("postgresql://")
        {
            return Err(StoreError::InvalidInput(format!(
                "'{url}': PostgreSQL is not supported by this build; use sqlite://PATH"
            )));
        } else {
            return Err(StoreError::InvalidInput(format!(
                "unsupported storage URL '{url}'; expected sqlite://PATH or sqlite::memory:"
            )));
        };
        let store = Store {
            inner: Arc::new(Inner {
                url: url_trimmed.to_string(),
                backend,
                full_sync: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        store.with_conn(schema::migrate)?;
        Ok(store)
    }

    /// Makes every commit from now on fsync (`synchronous=FULL`) instead of relying on the
    /// WAL's checkpoint fsyncs (`NORMAL`, the default, which survives a process crash but may
    /// lose the last commits on power loss). Pooled connections are reopened.
    pub fn sync_every_commit(&self) {
        self.inner
            .full_sync
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Backend::File { idle, .. } = &self.inner.backend {
            lock(idle).clear();
        }
    }

    /// The URL this store was opened with.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The database file, or `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        match &self.inner.backend {
            Backend::File { path, .. } => Some(path),
            Backend::Memory { .. } => None,
        }
    }

    /// The schema version (`PRAGMA user_version`) of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.with_conn(|c| Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?))
    }

    /// Runs `f` on a connection: a pooled one for files, the only one for memory.
    pub(crate) fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &self.inner.backend {
            Backend::Memory { conn } => f(&mut lock(conn)),
            Backend::File { path, idle } => {
                let pooled = lock(idle).pop();
                let mut conn = match pooled {
                    Some(c) => c,
                    None => open_file(
                        path,
                        self.inner
                            .full_sync
                            .load(std::sync::atomic::Ordering::Relaxed),
                    )?,
                };
                let result = f(&mut conn);
                // A connection left inside a transaction (a failed commit) is not reused:
                // dropping it rolls the transaction back cleanly.
                if conn.is_autocommit() {
                    let mut idle = lock(idle);
                    if idle.len() < MAX_IDLE_CONNECTIONS {
                        idle.push(conn);
                    }
                }
                result
            }
        }
    }
}

fn open_file(path: &Path, full_sync: bool) -> Result<Connection, StoreError> {
    // No SQLITE_OPEN_URI: the path is taken literally, even if it starts with "file:".
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    configure(&conn)?;
    if full_sync {
        conn.pragma_update(None, "synchronous", "FULL")?;
    }
    Ok(conn)
}

/// Per-connection settings. `journal_mode=WAL` is persistent in the file but cheap to re-assert.
fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // In-memory databases answer "memory"; that is fine, they are per-process anyway.
    let _mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_send_sync_clone() {
        fn assert<T: Send + Sync + Clone + 'static>() {}
        assert::<Store>();
    }

    #[test]
    fn rejects_bad_urls() {
        for url in [
            "",
            "sqlite://",
            "mysql://x",
            "postgres://x/y",
            "sqlite://a.db?mode=rwc",
        ] {
            assert!(
                matches!(Store::open(url), Err(StoreError::InvalidInput(_))),
                "{url}"
            );
        }
    }
}
