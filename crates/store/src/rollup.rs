//! The daily rollup `rollup_daily`: exact sums of the ledger per UTC day and combination of
//! the low-cardinality dimensions (tenant, team, feature, requested and served model,
//! provider, deployment, endpoint, outcome, cache status, imported), and where aggregate
//! queries read their rows from.
//!
//! Why: a month of a busy ledger is a million rows, and reading a million rows through the
//! time index costs SQLite about half a second per query; the dashboard's month pages run
//! several. The rollup holds one line per day and combination seen, so whole days are read
//! from it and only the partial days at a range's ends from `requests`
//! ([`source`]). Answers are the same to the nano-dollar, because every sum is an exact
//! integer sum either way (invariant 5), and the rollup is written in the transaction that
//! inserts the rows it sums, so it can never lag or lead the ledger.
//!
//! What it cannot answer goes to the rows: per key or per user (their cardinality would make
//! the rollup as large as the ledger), by status code, by hour, and percentiles (`stats.rs`
//! reads those from the covering index `requests_served`).

use std::collections::BTreeMap;

use rusqlite::types::Value;
use tollgate_types::{LedgerRow, UsageSource};

use crate::requests::{RowFilter, Where, sat_i64 as sat};
use crate::{Store, StoreError};

/// One UTC day.
pub const DAY_MS: i64 = 86_400_000;

/// The columns an aggregate reads, in this order from either table: the dimensions under
/// the ledger's names, then the sums. A ledger row is a group of one.
const RAW_SELECT: &str = r#"started_at_ms, tenant, team, feature, "user", key_id, key_name,
    requested_model, served_model, provider, deployment, endpoint, outcome, cache_status,
    1 AS requests, input_tokens, cached_input_tokens, cache_write_input_tokens, output_tokens,
    reasoning_tokens, list_cost, effective_cost, saved_cost,
    usage_source = 'estimated' AS estimated_rows"#;

const ROLLUP_SELECT: &str = r#"started_at_ms, tenant, team, feature, NULL AS "user",
    NULL AS key_id, NULL AS key_name,
    requested_model, served_model, provider, deployment, endpoint, outcome, cache_status,
    requests, input_tokens, cached_input_tokens, cache_write_input_tokens, output_tokens,
    reasoning_tokens, list_cost, effective_cost, saved_cost, estimated_rows"#;

const UPDATE_SQL: &str = "UPDATE rollup_daily SET requests = requests + ?13, \
    input_tokens = input_tokens + ?14, cached_input_tokens = cached_input_tokens + ?15, \
    cache_write_input_tokens = cache_write_input_tokens + ?16, \
    output_tokens = output_tokens + ?17, reasoning_tokens = reasoning_tokens + ?18, \
    list_cost = list_cost + ?19, effective_cost = effective_cost + ?20, \
    saved_cost = saved_cost + ?21, estimated_rows = estimated_rows + ?22 \
    WHERE started_at_ms = ?1 AND tenant IS ?2 AND team IS ?3 AND feature IS ?4 \
    AND requested_model IS ?5 AND served_model IS ?6 AND provider IS ?7 AND deployment IS ?8 \
    AND endpoint = ?9 AND outcome = ?10 AND cache_status IS ?11 AND imported = ?12";

const INSERT_SQL: &str = "INSERT INTO rollup_daily (started_at_ms, tenant, team, feature, \
    requested_model, served_model, provider, deployment, endpoint, outcome, cache_status, \
    imported, requests, input_tokens, cached_input_tokens, cache_write_input_tokens, \
    output_tokens, reasoning_tokens, list_cost, effective_cost, saved_cost, estimated_rows) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
    ?19, ?20, ?21, ?22)";

/// A rollup line's dimensions.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key<'a> {
    day: i64,
    tenant: Option<&'a str>,
    team: Option<&'a str>,
    feature: Option<&'a str>,
    requested_model: Option<&'a str>,
    served_model: Option<&'a str>,
    provider: Option<&'a str>,
    deployment: Option<&'a str>,
    endpoint: &'a str,
    outcome: &'static str,
    cache_status: Option<&'a str>,
}

/// The start of the UTC day holding `ms` (floor, so instants before 1970 land right).
pub(crate) fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS) * DAY_MS
}

/// The start of the first UTC day that begins at or after `ms`.
fn day_ceil(ms: i64) -> i64 {
    day_of(ms.saturating_add(DAY_MS - 1))
}

/// The whole UTC days inside `[from_ms, to_ms)`, as `[first day's start, end)`; `None` when
/// the range holds no whole day. What the rollup can answer for a range.
pub fn whole_days(from_ms: i64, to_ms: i64) -> Option<(i64, i64)> {
    let (lo, hi) = (day_ceil(from_ms), day_of(to_ms));
    (lo < hi).then_some((lo, hi))
}

/// Adds `rows` (just inserted into `requests` in `tx`) to the rollup. The batch is summed in
/// memory first, so a batch costs one statement per line it touches, not per row.
pub(crate) fn add<'a>(
    tx: &rusqlite::Transaction<'_>,
    rows: impl Iterator<Item = &'a LedgerRow>,
    imported: bool,
) -> Result<(), StoreError> {
    let mut lines: BTreeMap<Key<'a>, [i64; 10]> = BTreeMap::new();
    for r in rows {
        let a = &r.attribution;
        let u = &r.usage;
        let key = Key {
            day: day_of(r.started_at_ms),
            tenant: a.tenant.as_deref(),
            team: a.team.as_deref(),
            feature: a.feature.as_deref(),
            requested_model: r.requested_model.as_deref(),
            served_model: r.served_model.as_deref(),
            provider: r.provider.as_deref(),
            deployment: r.deployment.as_deref(),
            endpoint: &r.endpoint,
            outcome: r.outcome.as_str(),
            cache_status: r.cache_status.as_deref(),
        };
        // The same values, saturated the same way, as the row's own columns.
        let add = [
            1,
            sat(u.input_tokens),
            sat(u.cached_input_tokens),
            sat(u.cache_write_input_tokens),
            sat(u.output_tokens),
            sat(u.reasoning_tokens),
            r.list_cost.nanos(),
            r.effective_cost.nanos(),
            r.saved_cost.nanos(),
            i64::from(r.usage_source == UsageSource::Estimated),
        ];
        let line = lines.entry(key).or_insert([0; 10]);
        for (sum, v) in line.iter_mut().zip(add) {
            *sum = sum
                .checked_add(v)
                .ok_or_else(|| StoreError::Overflow("the daily rollup".into()))?;
        }
    }
    if lines.is_empty() {
        return Ok(());
    }
    let mut update = tx.prepare_cached(UPDATE_SQL)?;
    let mut insert = tx.prepare_cached(INSERT_SQL)?;
    for (k, s) in &lines {
        let params = rusqlite::params![
            k.day,
            k.tenant,
            k.team,
            k.feature,
            k.requested_model,
            k.served_model,
            k.provider,
            k.deployment,
            k.endpoint,
            k.outcome,
            k.cache_status,
            imported,
            s[0],
            s[1],
            s[2],
            s[3],
            s[4],
            s[5],
            s[6],
            s[7],
            s[8],
            s[9],
        ];
        let changed = update
            .execute(params)
            .map_err(|e| StoreError::from_sqlite(e, "the daily rollup"))?;
        if changed == 0 {
            insert
                .execute(params)
                .map_err(|e| StoreError::from_sqlite(e, "the daily rollup"))?;
        }
    }
    Ok(())
}

/// A `FROM` source for an aggregate: a parenthesised subquery with the columns of
/// [`RAW_SELECT`], and its parameters.
pub(crate) struct Source {
    pub(crate) sql: String,
    pub(crate) params: Vec<Value>,
}

/// The rows matching `filter` started in `[from_ms, to_ms)` (intersected with the filter's
/// own bounds), as groups to sum: whole UTC days from the rollup and the rest from
/// `requests` — or all from `requests` when `rows_only` (the query needs a dimension the
/// rollup does not keep) or the filter names one.
pub(crate) fn source(
    filter: &RowFilter,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    rows_only: bool,
) -> Source {
    let from = max_opt(filter.from_ms, from_ms);
    let to = min_opt(filter.to_ms, to_ms);
    let f = RowFilter {
        from_ms: None,
        to_ms: None,
        ..filter.clone()
    };
    let rollup_ok = !rows_only && f.key_id.is_none() && f.user.is_none() && f.status.is_none();
    // Whole days: [lo, hi). `None` is unbounded.
    let lo = from.map(day_ceil);
    let hi = to.map(day_of);
    let whole_days = rollup_ok && !matches!((lo, hi), (Some(l), Some(h)) if l >= h);
    let mut legs: Vec<(String, Vec<Value>)> = Vec::new();
    let mut leg = |table: &str, select: &str, a: Option<i64>, b: Option<i64>| {
        let mut w = Where::default();
        w.filter(&f);
        w.range(a, b);
        legs.push((format!("SELECT {select} FROM {table}{}", w.sql()), w.params));
    };
    if whole_days {
        if let (Some(start), Some(l)) = (from, lo)
            && start < l
        {
            leg("requests", RAW_SELECT, Some(start), Some(l));
        }
        leg("rollup_daily", ROLLUP_SELECT, lo, hi);
        if let (Some(t), Some(h)) = (to, hi)
            && h < t
        {
            leg("requests", RAW_SELECT, Some(h), Some(t));
        }
    } else {
        leg("requests", RAW_SELECT, from, to);
    }
    let mut sql = String::from("(");
    let mut params = Vec::new();
    for (i, (leg_sql, leg_params)) in legs.into_iter().enumerate() {
        if i > 0 {
            sql.push_str(" UNION ALL ");
        }
        sql.push_str(&leg_sql);
        params.extend(leg_params);
    }
    sql.push(')');
    Source { sql, params }
}

impl Store {
    /// Ledger rows per UTC day over the whole days in `[from_ms, to_ms)` (both day starts),
    /// days without rows left out: read from the rollup. The ledger only ever gains rows, so
    /// a day whose count is unchanged holds the same rows (what per-day memos check).
    pub fn rows_per_day(&self, from_ms: i64, to_ms: i64) -> Result<Vec<(i64, u64)>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT started_at_ms, SUM(requests) FROM rollup_daily \
                 WHERE started_at_ms >= ?1 AND started_at_ms < ?2 GROUP BY 1 ORDER BY 1",
            )?;
            let mut q = stmt.query([from_ms, to_ms])?;
            let mut out = Vec::new();
            while let Some(r) = q.next()? {
                let n: i64 = r.get(1)?;
                let n = u64::try_from(n)
                    .map_err(|_| StoreError::Corrupt(format!("negative day count {n}")))?;
                out.push((r.get(0)?, n));
            }
            Ok(out)
        })
    }
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_days_inside_ranges() {
        assert_eq!(whole_days(0, DAY_MS), Some((0, DAY_MS)));
        assert_eq!(whole_days(1, 2 * DAY_MS + 1), Some((DAY_MS, 2 * DAY_MS)));
        assert_eq!(whole_days(1, 2 * DAY_MS - 1), None);
        assert_eq!(whole_days(-DAY_MS - 1, 0), Some((-DAY_MS, 0)));
        assert_eq!(whole_days(-DAY_MS + 1, 0), None);
        assert_eq!(whole_days(-DAY_MS, 0), Some((-DAY_MS, 0)));
    }

    #[test]
    fn days_floor_before_the_epoch() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(DAY_MS - 1), 0);
        assert_eq!(day_of(DAY_MS), DAY_MS);
        assert_eq!(day_of(-1), -DAY_MS);
        assert_eq!(day_of(-DAY_MS), -DAY_MS);
    }

    #[test]
    fn ranges_split_into_whole_days_and_edges() {
        let legs = |from, to| {
            let s = source(&RowFilter::default(), from, to, false);
            (
                s.sql.matches("FROM requests").count(),
                s.sql.matches("FROM rollup_daily").count(),
            )
        };
        assert_eq!(legs(None, None), (0, 1));
        assert_eq!(legs(Some(0), Some(2 * DAY_MS)), (0, 1));
        assert_eq!(legs(Some(5), Some(2 * DAY_MS + 5)), (2, 1));
        // Less than a whole day: rows only.
        assert_eq!(legs(Some(5), Some(DAY_MS + 5)), (1, 0));
        assert_eq!(legs(Some(5), Some(6)), (1, 0));
        let keyed = RowFilter {
            key_id: Some("key_1".into()),
            ..Default::default()
        };
        let s = source(&keyed, None, None, false);
        assert!(!s.sql.contains("rollup_daily"), "{}", s.sql);
        let s = source(&RowFilter::default(), None, None, true);
        assert!(!s.sql.contains("rollup_daily"), "{}", s.sql);
    }
}
