//! The spill file: rows the channel could not take, as JSON lines, replayed into the store.
//!
//! ## Files
//! - `PATH` — the live spill file. [`Spill::append`] writes here (`O_APPEND`, under a mutex).
//! - `PATH.draining` — a spill file being replayed. Draining first *renames* the live file
//!   (under the mutex, microseconds) and reopens a fresh one, then replays the renamed file
//!   without holding the mutex, so recorders that spill meanwhile are never blocked behind
//!   database writes.
//! - `PATH.corrupt` — lines that could not be parsed, copied here for forensics (best effort;
//!   may hold duplicates when a replay is retried).
//!
//! ## Crash safety
//! Replay *inserts* before it *deletes*: rows go into the store first (idempotent on
//! `request_id`), and only then is the draining file removed. A crash at any point leaves either
//! the live file, the draining file, or both, and the next [`Spill::drain_into`] (run by
//! `Ledger::start` before anything else) replays them; rows already inserted are skipped by the
//! primary key. A torn last line (crash mid-write) is counted as corrupt, never a panic.
//!
//! Lines are written with `write(2)` but not fsynced: a *process* crash loses nothing (the
//! data is in the OS page cache), an OS crash may lose the tail — the same durability as the
//! database's `synchronous=NORMAL`.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tollgate_store::Store;
use tollgate_types::LedgerRow;

use crate::{LedgerError, lock};

pub(crate) struct Spill {
    path: PathBuf,
    draining: PathBuf,
    corrupt: PathBuf,
    state: Mutex<SpillState>,
    /// Serialises drains (the writer thread normally is the only drainer; this makes it a
    /// guarantee rather than a convention).
    drain_lock: Mutex<()>,
    /// fsync every append (`storage.durability: strict`): a spilled row then survives power
    /// loss, not only a process crash.
    sync: bool,
}

struct SpillState {
    /// The live file, `None` after a failed reopen (retried on the next append).
    file: Option<File>,
    /// The live file may hold lines (unknown at open, so `true` then).
    dirty: bool,
    /// A draining file may exist (left by a failed replay or a crash).
    draining_left: bool,
    /// Rows appended to the live file since it was last rotated (0 at open: unknown content
    /// is replayed by `Ledger::start` before this matters).
    lines: u64,
    /// The last write failed part-way, so the file may end with half a line; the next append
    /// starts with a newline so its own row stays parseable.
    torn: bool,
}

/// What one drain did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct DrainReport {
    /// Lines parsed into rows and handed to the store.
    pub replayed: u64,
    /// Rows newly inserted (the rest were already in the store).
    pub inserted: u64,
    /// Lines skipped because they were not a valid row.
    pub corrupt: u64,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Spill {
    pub(crate) fn open(path: &Path, sync: bool) -> Result<Spill, LedgerError> {
        let err = |source| LedgerError::Spill {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(err)?;
        }
        let file = open_append(path).map_err(err)?;
        Ok(Spill {
            path: path.to_path_buf(),
            draining: with_suffix(path, ".draining"),
            corrupt: with_suffix(path, ".corrupt"),
            state: Mutex::new(SpillState {
                file: Some(file),
                dirty: true,
                draining_left: true,
                lines: 0,
                torn: false,
            }),
            drain_lock: Mutex::new(()),
            sync,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Rows appended since the live file was last rotated: what the next start would replay
    /// if nothing drains it before.
    pub(crate) fn pending_lines(&self) -> u64 {
        lock(&self.state).lines
    }

    /// Appends rows as JSON lines in one `write`. Blocking file I/O: reached only when the
    /// channel is full (overload), the writer is gone, or a batch could not be written to the
    /// database for the whole retry window.
    pub(crate) fn append(&self, rows: &[LedgerRow]) -> io::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        // Serialise outside the lock.
        let mut buf = Vec::with_capacity(rows.len() * 768);
        for r in rows {
            serde_json::to_writer(&mut buf, r).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        let mut st = lock(&self.state);
        if st.file.is_none() {
            st.file = Some(open_append(&self.path)?);
        }
        let torn = st.torn;
        let Some(file) = st.file.as_mut() else {
            return Err(io::Error::other("spill file unavailable"));
        };
        let result = if torn {
            file.write_all(b"\n").and_then(|()| file.write_all(&buf))
        } else {
            file.write_all(&buf)
        }
        .and_then(|()| if self.sync { file.sync_data() } else { Ok(()) });
        match result {
            Ok(()) => {
                st.torn = false;
                st.dirty = true;
                st.lines += rows.len() as u64;
                Ok(())
            }
            Err(e) => {
                st.torn = true;
                st.dirty = true;
                Err(e)
            }
        }
    }

    /// Replays every spilled row into `store`, in batches of `batch`, then removes what was
    /// replayed. Cheap (one uncontended lock) when nothing was spilled. On error the files
    /// stay in place and a later call (or the next start) retries; re-inserting is harmless.
    pub(crate) fn drain_into(
        &self,
        store: &Store,
        batch: usize,
    ) -> Result<DrainReport, LedgerError> {
        let _one_drainer = lock(&self.drain_lock);
        let mut report = DrainReport::default();
        let draining_left = lock(&self.state).draining_left;
        if draining_left {
            self.replay_and_remove(store, batch, &mut report)?;
            lock(&self.state).draining_left = false;
        }
        {
            let mut st = lock(&self.state);
            if !st.dirty {
                return Ok(report);
            }
            let len = match fs::metadata(&self.path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(e) => return Err(self.err(&self.path, e)),
            };
            if len == 0 {
                st.dirty = false;
                st.lines = 0;
                return Ok(report);
            }
            // Rotate: after the rename the old handle points at the draining file, so it must
            // never be written again; drop it and start a fresh live file.
            fs::rename(&self.path, &self.draining).map_err(|e| self.err(&self.path, e))?;
            st.file = None;
            st.draining_left = true;
            st.dirty = false;
            st.lines = 0;
            st.torn = false;
            match open_append(&self.path) {
                Ok(f) => st.file = Some(f),
                // `append` retries the open; log now so the cause is visible.
                Err(e) => tracing::error!(path = %self.path.display(), error = %e,
                    "cannot reopen the ledger spill file"),
            }
        }
        self.replay_and_remove(store, batch, &mut report)?;
        lock(&self.state).draining_left = false;
        Ok(report)
    }

    fn err(&self, path: &Path, source: io::Error) -> LedgerError {
        LedgerError::Spill {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Replays `PATH.draining` (if present) and deletes it after every row is in the store.
    fn replay_and_remove(
        &self,
        store: &Store,
        batch: usize,
        report: &mut DrainReport,
    ) -> Result<(), LedgerError> {
        let file = match File::open(&self.draining) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.err(&self.draining, e)),
        };
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        let mut rows = Vec::with_capacity(batch);
        let mut line_no: u64 = 0;
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| self.err(&self.draining, e))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let text = line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            match serde_json::from_slice::<LedgerRow>(text) {
                Ok(row) => {
                    rows.push(row);
                    if rows.len() >= batch {
                        report.inserted += store.insert_rows(&rows)? as u64;
                        report.replayed += rows.len() as u64;
                        rows.clear();
                    }
                }
                Err(e) => {
                    report.corrupt += 1;
                    tracing::error!(path = %self.draining.display(), line = line_no, error = %e,
                        "skipping corrupt ledger spill line (copied to {})", self.corrupt.display());
                    self.quarantine(text);
                }
            }
        }
        if !rows.is_empty() {
            report.inserted += store.insert_rows(&rows)? as u64;
            report.replayed += rows.len() as u64;
        }
        // Only now, with every row committed, is the file removed.
        fs::remove_file(&self.draining).map_err(|e| self.err(&self.draining, e))?;
        Ok(())
    }

    fn quarantine(&self, line: &[u8]) {
        let r = open_append(&self.corrupt).and_then(|mut f| {
            let mut buf = line.to_vec();
            buf.push(b'\n');
            f.write_all(&buf)
        });
        if let Err(e) = r {
            tracing::error!(path = %self.corrupt.display(), error = %e,
                "cannot copy a corrupt spill line aside");
        }
    }
}
