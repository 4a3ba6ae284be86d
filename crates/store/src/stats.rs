//! Traffic statistics over ledger rows: counts by outcome and cache status, exact cost and
//! saved-cost sums, and latency / time-to-first-token percentiles — what the dashboard's
//! overview and `GET /admin/v1/stats` show.
//!
//! Percentiles are **nearest-rank** over the served rows (`outcome = 'ok'`, cache hits
//! included): the p-th percentile of `n` values is the value at rank `⌈p·n/100⌉` in ascending
//! order, so it is always a latency some request actually had: exact, no sketch. The timings
//! of the range's served rows are read in one pass (from the covering partial index
//! `requests_served` alone when only the range filters) and each percentile is a linear-time
//! selection over them. Counts and sums come from the daily rollup for whole days
//! (`rollup.rs`).

use tollgate_types::NanoUsd;

use crate::requests::{RowFilter, Where};
use crate::{Store, StoreError, rollup};

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
        let src = rollup::source(filter, None, None, false);
        let sql = format!(
            "SELECT COALESCE(SUM(requests), 0), \
             COALESCE(SUM(requests * (outcome = 'ok')), 0), \
             COALESCE(SUM(requests * (outcome = 'rejected')), 0), \
             COALESCE(SUM(requests * (outcome = 'failed')), 0), \
             COALESCE(SUM(requests * (outcome = 'cancelled')), 0), \
             COALESCE(SUM(requests * (cache_status = 'hit')), 0), \
             COALESCE(SUM(requests * (cache_status = 'miss')), 0), \
             COALESCE(SUM(requests * (cache_status = 'bypass')), 0), \
             COALESCE(SUM(effective_cost), 0), COALESCE(SUM(saved_cost), 0) \
             FROM {}",
            src.sql
        );
        let mut stats = self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut q = stmt
                .query(rusqlite::params_from_iter(src.params.iter()))
                .map_err(|e| StoreError::from_sqlite(e, "traffic stats"))?;
            let Some(r) = q
                .next()
                .map_err(|e| StoreError::from_sqlite(e, "traffic stats"))?
            else {
                return Ok(TrafficStats::default());
            };
            let n = |i: usize| -> Result<u64, StoreError> {
                let v: i64 = r.get(i)?;
                u64::try_from(v)
                    .map_err(|_| StoreError::Corrupt(format!("negative count in stats: {v}")))
            };
            Ok(TrafficStats {
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
            })
        })?;
        if stats.ok > 0 {
            let (mut latency, mut ttft) = self.served_timings(filter)?;
            for (i, pct) in PERCENTILES.iter().enumerate() {
                stats.latency_us[i] = nearest_rank(&mut latency, *pct);
                stats.ttft_us[i] = nearest_rank(&mut ttft, *pct);
            }
        }
        Ok(stats)
    }

    /// Latency and time to first byte (where recorded) of the served rows matching `filter`:
    /// one pass, which without row filters reads only the covering index `requests_served`.
    fn served_timings(&self, filter: &RowFilter) -> Result<(Vec<u64>, Vec<u64>), StoreError> {
        let mut w = Where::default();
        w.filter(filter);
        w.literal("outcome = 'ok'");
        let sql = format!("SELECT latency_us, ttft_us FROM requests{}", w.sql());
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut q = stmt.query(rusqlite::params_from_iter(w.params.iter()))?;
            let (mut latency, mut ttft) = (Vec::new(), Vec::new());
            let us = |v: i64| {
                u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative timing {v}")))
            };
            while let Some(r) = q.next()? {
                latency.push(us(r.get(0)?)?);
                if let Some(t) = r.get::<_, Option<i64>>(1)? {
                    ttft.push(us(t)?);
                }
            }
            Ok((latency, ttft))
        })
    }
}

/// The nearest-rank `pct`-th percentile of `values` (reordered in place; linear time).
fn nearest_rank(values: &mut [u64], pct: u32) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let rank = usize::try_from(rank_offset(pct, values.len() as u64)).unwrap_or(usize::MAX);
    let rank = rank.min(values.len() - 1);
    Some(*values.select_nth_unstable(rank).1)
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

    #[test]
    fn nearest_rank_selects() {
        assert_eq!(nearest_rank(&mut [], 50), None);
        let mut v: Vec<u64> = (1..=20).rev().collect();
        assert_eq!(nearest_rank(&mut v, 50), Some(10));
        assert_eq!(nearest_rank(&mut v, 95), Some(19));
        assert_eq!(nearest_rank(&mut [7], 95), Some(7));
    }
}
