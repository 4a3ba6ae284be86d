//! The intent log `intents`: the provisional row of every request that is calling a provider,
//! keyed by `request_id` and tagged with its gateway's `owner` (the ledger's spill path, which
//! one process owns).
//!
//! The ledger writer upserts a provisional row when a request is dispatched and deletes it in
//! the transaction that inserts the request's final row ([`Store::write_batch`]); a request
//! that finishes within one batch never touches this table. Whatever an owner finds here at
//! start-up ([`Store::intents`]) belongs to requests its previous process was serving when it
//! died; the ledger inserts those rows (idempotent: a request whose final row did make it is
//! unchanged) and then clears them ([`Store::clear_intents`]).

use std::time::Duration;

use rusqlite::TransactionBehavior;
use tollgate_types::LedgerRow;

use crate::requests::insert_in;
use crate::{BUSY_TIMEOUT, Store, StoreError};

/// One batch of the ledger writer.
#[derive(Debug, Default, Clone, Copy)]
pub struct Batch<'a> {
    /// Final rows (inserted, idempotent on `request_id`).
    pub rows: &'a [LedgerRow],
    /// Provisional rows of requests in flight (inserted or replaced).
    pub intents: &'a [LedgerRow],
    /// Request ids whose stored intents are settled (their final rows are in `rows` or were
    /// written before).
    pub settled: &'a [String],
}

impl Store {
    /// Writes one ledger batch in one transaction: final rows, provisional rows of `owner`, and
    /// the deletion of settled intents. `busy` caps how long the write waits for another
    /// process's lock (the writer prefers spilling to disk over waiting). Returns how many
    /// final rows were newly inserted.
    pub fn write_batch(
        &self,
        owner: &str,
        batch: Batch<'_>,
        busy: Option<Duration>,
    ) -> Result<usize, StoreError> {
        if batch.rows.is_empty() && batch.intents.is_empty() && batch.settled.is_empty() {
            return Ok(0);
        }
        self.with_conn(|conn| {
            if let Some(b) = busy {
                conn.busy_timeout(b)?;
            }
            let result = (|| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let inserted = insert_in(&tx, batch.rows, false)?;
                {
                    let mut up = tx.prepare_cached(
                        "INSERT INTO intents (request_id, owner, started_at_ms, row) \
                         VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT (request_id) DO UPDATE SET row = excluded.row",
                    )?;
                    for r in batch.intents {
                        let json = serde_json::to_string(r).map_err(|e| {
                            StoreError::InvalidInput(format!("intent {}: {e}", r.request_id))
                        })?;
                        up.execute(rusqlite::params![
                            r.request_id,
                            owner,
                            r.started_at_ms,
                            json
                        ])?;
                    }
                    let mut del = tx.prepare_cached("DELETE FROM intents WHERE request_id = ?1")?;
                    for id in batch.settled {
                        del.execute([id])?;
                    }
                }
                tx.commit()?;
                Ok(inserted)
            })();
            if busy.is_some() {
                conn.busy_timeout(BUSY_TIMEOUT)?;
            }
            result
        })
    }

    /// Every provisional row `owner` left, oldest first. A line that no longer parses is
    /// reported as [`StoreError::Corrupt`] rather than skipped.
    pub fn intents(&self, owner: &str) -> Result<Vec<LedgerRow>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT request_id, row FROM intents WHERE owner = ?1 ORDER BY started_at_ms",
            )?;
            let rows = stmt.query_map([owner], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut out = Vec::new();
            for r in rows {
                let (id, json) = r?;
                out.push(
                    serde_json::from_str(&json)
                        .map_err(|e| StoreError::Corrupt(format!("intent {id}: {e}")))?,
                );
            }
            Ok(out)
        })
    }

    /// Deletes `owner`'s intents with these ids.
    pub fn clear_intents(&self, owner: &str, ids: &[String]) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut del =
                    tx.prepare_cached("DELETE FROM intents WHERE owner = ?1 AND request_id = ?2")?;
                for id in ids {
                    del.execute([owner, id])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Deletes `owner`'s intents whose final row is already in the ledger (rows that reached it
    /// through the spill file) and returns their ids.
    pub fn prune_intents(&self, owner: &str) -> Result<Vec<String>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "DELETE FROM intents WHERE owner = ?1 \
                 AND request_id IN (SELECT request_id FROM requests) RETURNING request_id",
            )?;
            let ids = stmt.query_map([owner], |r| r.get::<_, String>(0))?;
            Ok(ids.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// How many intents are stored (all owners).
    pub fn intent_count(&self) -> Result<u64, StoreError> {
        self.with_conn(|conn| {
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM intents", [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }
}
