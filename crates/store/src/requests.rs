//! The ledger table `requests`: inserts, listing, totals, and the shared row filter.
//!
//! One column per [`LedgerRow`] field; attribution and usage are flattened, tags are JSON text,
//! costs are INTEGER nano-USD. Unsigned Rust integers are stored as SQLite's signed 64-bit
//! INTEGER; values above `i64::MAX` (never produced by real traffic) are saturated rather than
//! rejected, because the ledger must never refuse a row. Reads validate every value and report
//! [`StoreError::Corrupt`] instead of panicking on a hand-edited database.

use std::collections::BTreeMap;

use rusqlite::types::Value;
use rusqlite::{OptionalExtension, TransactionBehavior};
use tollgate_types::{
    Attribution, LedgerRow, NanoUsd, Outcome, PolicyActions, UNATTRIBUTED, UnitPrices, Usage,
    UsageSource,
};

use crate::{Store, StoreError};

/// The `cache_status` filter value selecting rows with no cache status.
pub const CACHE_NONE: &str = "none";

/// Largest page [`Store::list_requests`] returns.
pub const MAX_PAGE_LIMIT: usize = 1000;

/// Every column, in the order used by inserts and selects.
const COLUMNS: &str = r#"request_id, started_at_ms, endpoint, stream,
    key_id, key_name, team, tenant, feature, "user", tags,
    requested_model, served_model, provider, deployment, attempts,
    input_tokens, cached_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens,
    usage_source, list_cost, effective_cost, price_version, unpriced, policy_actions,
    cache_status, status, outcome, error_code, error_origin, latency_us, ttft_us,
    saved_cost, attempted, price_input, price_cached_input, price_cache_write, price_output"#;

/// `ON CONFLICT(request_id) DO NOTHING` rather than `INSERT OR IGNORE`: both make re-inserting a
/// row a no-op, but `OR IGNORE` would also silently swallow any *other* constraint failure,
/// i.e. drop a row. Here only the duplicate id is ignored; anything else is an error the ledger
/// retries or spills.
const INSERT_SQL: &str = r#"INSERT INTO requests (request_id, started_at_ms, endpoint, stream,
    key_id, key_name, team, tenant, feature, "user", tags,
    requested_model, served_model, provider, deployment, attempts,
    input_tokens, cached_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens,
    usage_source, list_cost, effective_cost, price_version, unpriced, policy_actions,
    cache_status, status, outcome, error_code, error_origin, latency_us, ttft_us,
    saved_cost, attempted, price_input, price_cached_input, price_cache_write, price_output,
    imported)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
            ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33, ?34,
            ?35, ?36, ?37, ?38, ?39, ?40, ?41)
    ON CONFLICT (request_id) DO NOTHING"#;

/// Which ledger rows a query covers. Every field is optional; set fields are ANDed.
///
/// `tenant: Some("(unattributed)")` selects rows with no tenant, so a spend-report line can be
/// drilled into with the label it was reported under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowFilter {
    pub key_id: Option<String>,
    pub team: Option<String>,
    pub tenant: Option<String>,
    pub feature: Option<String>,
    pub user: Option<String>,
    /// The requested (logical) model.
    pub model: Option<String>,
    pub provider: Option<String>,
    pub outcome: Option<Outcome>,
    pub status: Option<u16>,
    /// The response cache's verdict: `hit`, `miss` or `bypass`; [`CACHE_NONE`] selects rows
    /// with none (caching off for the model, or refused before the cache).
    pub cache_status: Option<String>,
    /// Inclusive lower bound on `started_at_ms`.
    pub from_ms: Option<i64>,
    /// Exclusive upper bound on `started_at_ms`.
    pub to_ms: Option<i64>,
    /// Only rows loaded by [`Store::import_rows`].
    pub imported_only: bool,
}

/// One page request for [`Store::list_requests`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Rows per page, clamped to `1..=MAX_PAGE_LIMIT`.
    pub limit: usize,
    /// The `next` cursor returned by the previous page; `None` for the first page.
    pub cursor: Option<String>,
}

impl Page {
    pub fn first(limit: usize) -> Page {
        Page {
            limit,
            cursor: None,
        }
    }
}

impl Default for Page {
    fn default() -> Self {
        Page::first(100)
    }
}

/// A WHERE clause under construction: SQL fragments ANDed, positional parameters in order.
#[derive(Default)]
pub(crate) struct Where {
    clauses: Vec<String>,
    pub(crate) params: Vec<Value>,
}

impl Where {
    pub(crate) fn push(&mut self, clause: &str, value: Value) {
        self.clauses.push(clause.to_string());
        self.params.push(value);
    }

    fn eq(&mut self, column: &str, value: &Option<String>) {
        if let Some(v) = value {
            self.push(&format!("{column} = ?"), Value::Text(v.clone()));
        }
    }

    pub(crate) fn filter(&mut self, f: &RowFilter) {
        self.eq("key_id", &f.key_id);
        self.eq("team", &f.team);
        if let Some(t) = &f.tenant {
            if t == UNATTRIBUTED {
                // Reports label NULL *and* a literal "(unattributed)" tenant the same way.
                self.push("(tenant IS NULL OR tenant = ?)", Value::Text(t.clone()));
            } else {
                self.push("tenant = ?", Value::Text(t.clone()));
            }
        }
        self.eq("feature", &f.feature);
        self.eq(r#""user""#, &f.user);
        self.eq("requested_model", &f.model);
        self.eq("provider", &f.provider);
        if let Some(o) = f.outcome {
            self.push("outcome = ?", Value::Text(o.as_str().to_string()));
        }
        if let Some(s) = f.status {
            self.push("status = ?", Value::Integer(i64::from(s)));
        }
        match f.cache_status.as_deref() {
            None => {}
            Some(CACHE_NONE) => self.clauses.push("cache_status IS NULL".into()),
            Some(c) => self.push("cache_status = ?", Value::Text(c.to_string())),
        }
        self.range(f.from_ms, f.to_ms);
        if f.imported_only {
            // A literal, not a parameter, so SQLite can use the partial index.
            self.clauses.push("imported = 1".into());
        }
    }

    /// A clause with no parameter (a fixed string, never user input).
    pub(crate) fn literal(&mut self, clause: &str) {
        self.clauses.push(clause.to_string());
    }

    pub(crate) fn range(&mut self, from_ms: Option<i64>, to_ms: Option<i64>) {
        if let Some(from) = from_ms {
            self.push("started_at_ms >= ?", Value::Integer(from));
        }
        if let Some(to) = to_ms {
            self.push("started_at_ms < ?", Value::Integer(to));
        }
    }

    /// ` WHERE a AND b` or the empty string.
    pub(crate) fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }
}

pub(crate) fn sat_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Inserts `rows` inside `tx`, skipping ids already stored; returns how many were new.
pub(crate) fn insert_in(
    tx: &rusqlite::Transaction<'_>,
    rows: &[LedgerRow],
    imported: bool,
) -> Result<usize, StoreError> {
    // Only rows new to the ledger are added to the rollup: a replayed row is a no-op in both.
    let mut fresh: Vec<&LedgerRow> = Vec::with_capacity(rows.len());
    let mut stmt = tx.prepare_cached(INSERT_SQL)?;
    for r in rows {
        let a = &r.attribution;
        let u = &r.usage;
        let tags = serde_json::to_string(&a.tags)
            .map_err(|e| StoreError::InvalidInput(format!("tags of {}: {e}", r.request_id)))?;
        let changed = stmt
            .execute(rusqlite::params![
                r.request_id,
                r.started_at_ms,
                r.endpoint,
                r.stream,
                a.key_id,
                a.key_name,
                a.team,
                a.tenant,
                a.feature,
                a.user,
                tags,
                r.requested_model,
                r.served_model,
                r.provider,
                r.deployment,
                r.attempts,
                sat_i64(u.input_tokens),
                sat_i64(u.cached_input_tokens),
                sat_i64(u.cache_write_input_tokens),
                sat_i64(u.output_tokens),
                sat_i64(u.reasoning_tokens),
                r.usage_source.as_str(),
                r.list_cost.nanos(),
                r.effective_cost.nanos(),
                r.price_version,
                r.unpriced,
                r.policy_actions.to_string(),
                r.cache_status,
                r.status,
                r.outcome.as_str(),
                r.error_code,
                r.error_origin,
                sat_i64(r.latency_us),
                r.ttft_us.map(sat_i64),
                r.saved_cost.nanos(),
                r.attempted,
                r.unit_prices.map(|p| p.input.nanos()),
                r.unit_prices.map(|p| p.cached_input.nanos()),
                r.unit_prices.map(|p| p.cache_write.nanos()),
                r.unit_prices.map(|p| p.output.nanos()),
                imported,
            ])
            .map_err(|e| StoreError::from_sqlite(e, "insert ledger row"))?;
        if changed == 1 {
            fresh.push(r);
        }
    }
    let inserted = fresh.len();
    crate::rollup::add(tx, fresh.into_iter(), imported)?;
    Ok(inserted)
}

impl Store {
    /// Inserts `rows` in one transaction. Rows whose `request_id` is already stored are skipped
    /// (idempotent replay). Returns how many rows were newly inserted.
    pub fn insert_rows(&self, rows: &[LedgerRow]) -> Result<usize, StoreError> {
        self.insert(rows, false)
    }

    /// [`Store::insert_rows`] for rows served elsewhere (`tollgate ledger import`): they are
    /// marked imported, and an import that stored any row bumps [`Store::imports_version`] in
    /// the same transaction, so a running gateway notices and adds their spend to its budgets.
    pub fn import_rows(&self, rows: &[LedgerRow]) -> Result<usize, StoreError> {
        self.insert(rows, true)
    }

    /// The import counter: increases with every committed import that stored rows.
    pub fn imports_version(&self) -> Result<i64, StoreError> {
        self.with_conn(|conn| {
            let v: Option<i64> = conn
                .prepare_cached("SELECT v FROM meta WHERE k = 'ledger_imports'")?
                .query_row([], |r| r.get(0))
                .optional()?;
            Ok(v.unwrap_or(0))
        })
    }

    fn insert(&self, rows: &[LedgerRow], imported: bool) -> Result<usize, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let inserted = insert_in(&tx, rows, imported)?;
            if imported && inserted > 0 {
                tx.execute(
                    "INSERT INTO meta (k, v) VALUES ('ledger_imports', 1) \
                     ON CONFLICT (k) DO UPDATE SET v = v + 1",
                    [],
                )?;
            }
            tx.commit()?;
            Ok(inserted)
        })
    }

    /// Ledger rows matching `filter`, newest first (by start time, then `request_id`), one
    /// page at a time. Returns the rows and the cursor of the next page, `None` on the last
    /// page. Keyset pagination: rows inserted while paging never shift pages.
    ///
    /// Start time first so the time indexes (`requests_started_at`, and `requests_tenant`
    /// and `requests_key` under a tenant or key filter) deliver the order: a page costs the
    /// rows walked to fill it, not a sort of every row in the range.
    pub fn list_requests(
        &self,
        filter: &RowFilter,
        page: Page,
    ) -> Result<(Vec<LedgerRow>, Option<String>), StoreError> {
        let limit = page.limit.clamp(1, MAX_PAGE_LIMIT);
        let mut w = Where::default();
        w.filter(filter);
        if let Some(c) = &page.cursor {
            let (at, id) = decode_cursor(c)?;
            // `<=` on its own so the index bounds the walk; the OR breaks ties by id.
            w.literal("started_at_ms <= ? AND (started_at_ms < ? OR request_id < ?)");
            w.params
                .extend([Value::Integer(at), Value::Integer(at), Value::Text(id)]);
        }
        // LIMIT as a parameter so the statement text (and its cache entry) does not vary.
        let sql = format!(
            "SELECT {COLUMNS} FROM requests{} ORDER BY started_at_ms DESC, request_id DESC \
             LIMIT ?",
            w.sql()
        );
        w.params.push(Value::Integer((limit + 1) as i64));
        let mut rows = self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut q = stmt.query(rusqlite::params_from_iter(w.params.iter()))?;
            let mut out = Vec::with_capacity(limit + 1);
            while let Some(r) = q.next()? {
                out.push(decode_row(r)?);
            }
            Ok(out)
        })?;
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(encode_cursor)
        } else {
            None
        };
        Ok((rows, next))
    }

    /// The row of one request, if it is stored.
    pub fn get_request(&self, request_id: &str) -> Result<Option<LedgerRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM requests WHERE request_id = ?1");
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut q = stmt.query([request_id])?;
            match q.next()? {
                Some(r) => Ok(Some(decode_row(r)?)),
                None => Ok(None),
            }
        })
    }

    /// Every row matching `filter`, oldest first (start time, then id), handed to `f` one at a
    /// time, so memory stays flat however many rows match (exports, backups). The outer error
    /// is the store's; the inner one is the first error `f` returned, which stops the scan.
    pub fn scan_rows<E>(
        &self,
        filter: &RowFilter,
        mut f: impl FnMut(LedgerRow) -> Result<(), E>,
    ) -> Result<Result<(), E>, StoreError> {
        let mut w = Where::default();
        w.filter(filter);
        let sql = format!(
            "SELECT {COLUMNS} FROM requests{} ORDER BY started_at_ms, request_id",
            w.sql()
        );
        let mut stopped = None;
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut q = stmt.query(rusqlite::params_from_iter(w.params.iter()))?;
            while let Some(r) = q.next()? {
                if let Err(e) = f(decode_row(r)?) {
                    stopped = Some(e);
                    break;
                }
            }
            Ok(())
        })?;
        Ok(stopped.map_or(Ok(()), Err))
    }

    /// Effective cost of the rows matching `filter`, summed per time bucket of `bucket_ms`
    /// (`floor(started_at_ms / bucket_ms) * bucket_ms`), oldest first. Used to seed rolling
    /// budget windows from the ledger at start-up.
    pub fn cost_buckets(
        &self,
        filter: &RowFilter,
        bucket_ms: i64,
    ) -> Result<Vec<(i64, NanoUsd)>, StoreError> {
        if bucket_ms <= 0 {
            return Err(StoreError::InvalidInput(
                "bucket_ms must be positive".into(),
            ));
        }
        let mut w = Where::default();
        w.filter(filter);
        let sql = format!(
            "SELECT (started_at_ms / {bucket_ms}) * {bucket_ms} AS b, COALESCE(SUM(effective_cost), 0) \
             FROM requests{} GROUP BY b ORDER BY b",
            w.sql()
        );
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(w.params.iter()), |r| {
                    Ok((r.get::<_, i64>(0)?, NanoUsd(r.get::<_, i64>(1)?)))
                })?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::from_sqlite(e, "effective_cost"))?;
            Ok(rows)
        })
    }

    /// Number of rows and exact sum of `effective_cost` matching `filter` (reconciliation:
    /// this equals every report and export total).
    pub fn totals(&self, filter: &RowFilter) -> Result<(u64, NanoUsd), StoreError> {
        let mut w = Where::default();
        w.filter(filter);
        let sql = format!(
            "SELECT COUNT(*), COALESCE(SUM(effective_cost), 0) FROM requests{}",
            w.sql()
        );
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let (n, sum): (i64, i64) = stmt
                .query_row(rusqlite::params_from_iter(w.params.iter()), |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(|e| StoreError::from_sqlite(e, "effective_cost"))?;
            Ok((u64::try_from(n).unwrap_or(0), NanoUsd(sum)))
        })
    }
}

/// The cursor is the hex of the last row's id: opaque to clients (they must not build one),
/// trivially validated here.
/// The cursor after `last`: its start time and id, hex-encoded (opaque to clients).
fn encode_cursor(last: &LedgerRow) -> String {
    hex::encode(format!("{}/{}", last.started_at_ms, last.request_id).as_bytes())
}

fn decode_cursor(cursor: &str) -> Result<(i64, String), StoreError> {
    hex::decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            let (at, id) = s.split_once('/')?;
            Some((at.parse().ok()?, id.to_string()))
        })
        .ok_or_else(|| StoreError::InvalidInput(format!("invalid page cursor '{cursor}'")))
}

fn corrupt(id: &str, what: &str) -> StoreError {
    StoreError::Corrupt(format!("request {id}: {what}"))
}

fn get_u64(r: &rusqlite::Row<'_>, i: usize, id: &str, col: &str) -> Result<u64, StoreError> {
    let v: i64 = r.get(i)?;
    u64::try_from(v).map_err(|_| corrupt(id, &format!("negative {col} {v}")))
}

/// Decodes one row selected with [`COLUMNS`].
fn decode_row(r: &rusqlite::Row<'_>) -> Result<LedgerRow, StoreError> {
    let id: String = r.get(0)?;
    let tags_json: String = r.get(10)?;
    let tags: BTreeMap<String, String> =
        serde_json::from_str(&tags_json).map_err(|e| corrupt(&id, &format!("tags: {e}")))?;
    let usage_source: String = r.get(21)?;
    let usage_source = UsageSource::parse(&usage_source)
        .ok_or_else(|| corrupt(&id, &format!("usage_source '{usage_source}'")))?;
    let outcome: String = r.get(29)?;
    let outcome =
        Outcome::parse(&outcome).ok_or_else(|| corrupt(&id, &format!("outcome '{outcome}'")))?;
    let attempts: i64 = r.get(15)?;
    let attempts =
        u32::try_from(attempts).map_err(|_| corrupt(&id, &format!("attempts {attempts}")))?;
    let status: i64 = r.get(28)?;
    let status = u16::try_from(status).map_err(|_| corrupt(&id, &format!("status {status}")))?;
    let ttft: Option<i64> = r.get(33)?;
    let ttft_us = match ttft {
        None => None,
        Some(v) => Some(u64::try_from(v).map_err(|_| corrupt(&id, &format!("ttft_us {v}")))?),
    };
    Ok(LedgerRow {
        started_at_ms: r.get(1)?,
        endpoint: r.get(2)?,
        stream: r.get(3)?,
        attribution: Attribution {
            key_id: r.get(4)?,
            key_name: r.get(5)?,
            team: r.get(6)?,
            tenant: r.get(7)?,
            feature: r.get(8)?,
            user: r.get(9)?,
            tags,
        },
        requested_model: r.get(11)?,
        served_model: r.get(12)?,
        provider: r.get(13)?,
        deployment: r.get(14)?,
        attempts,
        usage: Usage {
            input_tokens: get_u64(r, 16, &id, "input_tokens")?,
            cached_input_tokens: get_u64(r, 17, &id, "cached_input_tokens")?,
            cache_write_input_tokens: get_u64(r, 18, &id, "cache_write_input_tokens")?,
            output_tokens: get_u64(r, 19, &id, "output_tokens")?,
            reasoning_tokens: get_u64(r, 20, &id, "reasoning_tokens")?,
        },
        usage_source,
        list_cost: NanoUsd(r.get(22)?),
        effective_cost: NanoUsd(r.get(23)?),
        price_version: r.get(24)?,
        unpriced: r.get(25)?,
        policy_actions: PolicyActions::parse(&r.get::<_, String>(26)?),
        cache_status: r.get(27)?,
        status,
        outcome,
        error_code: r.get(30)?,
        error_origin: r.get(31)?,
        latency_us: get_u64(r, 32, &id, "latency_us")?,
        ttft_us,
        saved_cost: NanoUsd(r.get(34)?),
        attempted: r.get(35)?,
        unit_prices: unit_prices(r)?,
        request_id: id,
    })
}

/// The four price columns: all set, or all NULL (rows before schema v6, unpriced rows).
fn unit_prices(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<UnitPrices>> {
    let p: [Option<i64>; 4] = [r.get(36)?, r.get(37)?, r.get(38)?, r.get(39)?];
    Ok(match p {
        [
            Some(input),
            Some(cached_input),
            Some(cache_write),
            Some(output),
        ] => Some(UnitPrices {
            input: NanoUsd(input),
            cached_input: NanoUsd(cached_input),
            cache_write: NanoUsd(cache_write),
            output: NanoUsd(output),
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_rejects_garbage() {
        let row = LedgerRow::start("req_01/91".into(), -5, "/v1/chat/completions");
        let c = encode_cursor(&row);
        assert_eq!(decode_cursor(&c).unwrap(), (-5, "req_01/91".to_string()));
        for bad in ["zz", &hex::encode("no-slash"), &hex::encode("x/req_1")] {
            assert!(
                matches!(decode_cursor(bad), Err(StoreError::InvalidInput(_))),
                "{bad}"
            );
        }
    }
}
