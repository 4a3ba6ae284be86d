//! Traffic statistics over ledger rows: counts by outcome and cache status, exact cost and
//! saved-cost sums, and latency / time-to-first-token percentiles — what the dashboard's
//! overview and `GET /admin/v1/stats` show.
//!
//! Percentiles are **nearest-rank** over the served rows (`outcome = 'ok'`, cache hits
//! included): the p-th percentile of `n` values is the value at rank `⌈p·n/100⌉` in ascending
//! order, so it is always a latency some request actually had. Each is one `ORDER BY … LIMIT 1
//! OFFSET rank − 1` over the matching rows (the time range narrows them through the
//! `requests_started_at` index); exact, no sketch.

use rusqlite::types::Value;
use tollgate_types::NanoUsd;

use crate::requests::{RowFilter, Where};
use crate::{Store, StoreError};

/// The percentiles reported, in percent.
pub const PERCENTILES: [u32; 2] = [50, 95];

/// What [`Store::traffic_stats`] counts. Sums are exact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrafficStats {
    pub requests: u64,
    pub ok: u64,
    pub rejected: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_bypass: u64,
    /// Σ `effective_cost`.
    pub cost: NanoUsd,
    /// Σ `saved_cost` (what cache hits would have cost).
    pub saved: NanoUsd,
    /// Total latency of served rows at each of [`PERCENTILES`], microseconds (`None`: no
    /// served row).
    pub latency_us: [Option<u64>; 2],
    /// Time to first byte of served rows that have one, at each of [`PERCENTILES`].
    pub ttft_us: [Option<u64>; 2],
}

/// The 0-based offset of the nearest-rank `pct`-th percentile among `n` values.
fn rank_offset(pct: u32, n: u64) -> u64 {
    (u64::from(pct) * n).div_ceil(100).max(1) - 1
}

impl Store {
    /// Counts, sums and percentiles of the rows matching `filter`.
    pub fn traffic_stats(&self, filter: &RowFilter) -> Result<TrafficStats, StoreError> {
        let mut w = Where::default();
        w.filter(filter);
        let sql = format!(
            "SELECT COUNT(*), \
             COALESCE(SUM(outcome = 'ok'), 0), COALESCE(SUM(outcome = 'rejected'), 0), \
             COALESCE(SUM(outcome = 'failed'), 0), COALESCE(SUM(outcome = 'cancelled'), 0), \
             COALESCE(SUM(cache_status = 'hit'), 0), COALESCE(SUM(cache_status = 'miss'), 0), \
             COALESCE(SUM(cache_status = 'bypass'), 0), \
             COALESCE(SUM(effective_cost), 0), COALESCE(SUM(saved_cost), 0), \
             COALESCE(SUM(outcome = 'ok' AND ttft_us IS NOT NULL), 0) \
             FROM requests{}",
            w.sql()
        );
        let (mut stats, with_ttft) = self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut q = stmt
                .query(rusqlite::params_from_iter(w.params.iter()))
                .map_err(|e| StoreError::from_sqlite(e, "traffic stats"))?;
            let Some(r) = q
                .next()
                .map_err(|e| StoreError::from_sqlite(e, "traffic stats"))?
            else {
                return Ok((TrafficStats::default(), 0));
            };
            let n = |i: usize| -> Result<u64, StoreError> {
                let v: i64 = r.get(i)?;
                u64::try_from(v)
                    .map_err(|_| StoreError::Corrupt(format!("negative count in stats: {v}")))
            };
            Ok((
                TrafficStats {
                    requests: n(0)?,
                    ok: n(1)?,
                    rejected: n(2)?,
                    failed: n(3)?,
                    cancelled: n(4)?,
                    cache_hits: n(5)?,
                    cache_misses: n(6)?,
                    cache_bypass: n(7)?,
                    cost: NanoUsd(r.get(8)?),
                    saved: NanoUsd(r.get(9)?),
                    latency_us: [None; 2],
                    ttft_us: [None; 2],
                },
                n(10)?,
            ))
        })?;
        for (i, pct) in PERCENTILES.iter().enumerate() {
            stats.latency_us[i] = self.percentile(filter, "latency_us", *pct, stats.ok)?;
            stats.ttft_us[i] = self.percentile(filter, "ttft_us", *pct, with_ttft)?;
        }
        Ok(stats)
    }

    /// The nearest-rank `pct`-th percentile of `column` (a fixed column name, never user
    /// input) over the `n` served rows matching `filter` that have it.
    fn percentile(
        &self,
        filter: &RowFilter,
        column: &'static str,
        pct: u32,
        n: u64,
    ) -> Result<Option<u64>, StoreError> {
        if n == 0 {
            return Ok(None);
        }
        let mut w = Where::default();
        w.filter(filter);
        w.literal("outcome = 'ok'");
        w.literal(&format!("{column} IS NOT NULL"));
        let sql = format!(
            "SELECT {column} FROM requests{} ORDER BY {column} LIMIT 1 OFFSET ?",
            w.sql()
        );
        let offset = i64::try_from(rank_offset(pct, n)).unwrap_or(i64::MAX);
        w.params.push(Value::Integer(offset));
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut q = stmt.query(rusqlite::params_from_iter(w.params.iter()))?;
            match q.next()? {
                Some(r) => {
                    let v: i64 = r.get(0)?;
                    Ok(Some(u64::try_from(v).map_err(|_| {
                        StoreError::Corrupt(format!("negative {column} {v}"))
                    })?))
                }
                None => Ok(None),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_offsets() {
        assert_eq!(rank_offset(50, 1), 0);
        assert_eq!(rank_offset(95, 1), 0);
        assert_eq!(rank_offset(50, 2), 0);
        assert_eq!(rank_offset(50, 3), 1);
        assert_eq!(rank_offset(50, 4), 1);
        assert_eq!(rank_offset(95, 20), 18);
        assert_eq!(rank_offset(95, 21), 19);
        assert_eq!(rank_offset(95, 100), 94);
    }
}
