//! Per-day memos for finance reads over long ranges (margins, anomaly baselines).
//!
//! Those reports cannot be read from the daily rollup — margins round once per charge-hour
//! group, anomalies need hourly series — so over a month they would read every row each
//! time. But they split exactly by UTC day (their groups are hourly, and hours nest in
//! days), and the ledger only ever gains rows: a day whose row count (from the rollup) is
//! unchanged holds the same rows, so its piece is still right. Only days that gained rows —
//! normally just today — are read again. Pieces are remembered in memory only; a restart
//! recomputes them from the ledger.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tollgate_store::{DAY_MS, Store};

/// Pieces remembered, over all slots; the oldest days go first.
const CAPACITY: usize = 4_000;

/// A range split at UTC days, with each whole day's row count: read once per request and
/// shared by every memo lookup over that range.
pub(crate) struct Days {
    from_ms: i64,
    to_ms: i64,
    /// `[first whole day, end)`, when the range holds one.
    whole: Option<(i64, i64)>,
    /// (day start, rows) of the whole days that have rows, from the rollup.
    counts: Vec<(i64, u64)>,
}

impl Days {
    pub(crate) fn read(store: &Store, from_ms: i64, to_ms: i64) -> Result<Days, String> {
        let whole = tollgate_store::whole_days(from_ms, to_ms);
        let counts = match whole {
            Some((lo, hi)) => store.rows_per_day(lo, hi).map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        Ok(Days {
            from_ms,
            to_ms,
            whole,
            counts,
        })
    }
}

/// Remembered pieces by (day start, slot): each with the day's row count when computed.
type Pieces<T> = BTreeMap<(i64, usize), (u64, Arc<T>)>;

pub(crate) struct DayMemo<T>(Mutex<Pieces<T>>);

impl<T> Default for DayMemo<T> {
    fn default() -> Self {
        DayMemo(Mutex::new(BTreeMap::new()))
    }
}

impl<T> DayMemo<T> {
    /// The pieces of `days`' range in time order: the partial days at its ends from
    /// `compute(start, end)`, and each whole day that has rows from the memo under `slot`
    /// while its row count is unchanged, else computed and remembered. (Counted before
    /// computing, so a row landing in between makes the count stale, never the piece.)
    pub(crate) fn pieces(
        &self,
        days: &Days,
        slot: usize,
        compute: impl Fn(i64, i64) -> Result<T, String>,
    ) -> Result<Vec<Arc<T>>, String> {
        let Some((lo, hi)) = days.whole else {
            return Ok(vec![Arc::new(compute(days.from_ms, days.to_ms)?)]);
        };
        let mut out = Vec::new();
        if days.from_ms < lo {
            out.push(Arc::new(compute(days.from_ms, lo)?));
        }
        for &(day, rows) in &days.counts {
            let hit = self
                .lock()
                .get(&(day, slot))
                .filter(|(n, _)| *n == rows)
                .map(|(_, v)| Arc::clone(v));
            let piece = match hit {
                Some(v) => v,
                None => {
                    let v = Arc::new(compute(day, day + DAY_MS)?);
                    let mut memo = self.lock();
                    memo.insert((day, slot), (rows, Arc::clone(&v)));
                    while memo.len() > CAPACITY {
                        memo.pop_first();
                    }
                    v
                }
            };
            out.push(piece);
        }
        if hi < days.to_ms {
            out.push(Arc::new(compute(hi, days.to_ms)?));
        }
        Ok(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pieces<T>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
