//! Spend anomalies: an hour whose spend in one scope (a tenant, a tenant's feature, a model…)
//! is far above what that scope usually spends in that hour.
//!
//! The baseline is seasonal: the same hour of the week over the last `weeks` weeks, so a
//! Monday-morning batch job is expected on Mondays. While a scope has fewer than three such
//! weeks of history, the last 24 hours stand in. The statistic is robust — the median, and
//! the median absolute deviation scaled to a standard deviation (× 1.4826), floored at 10 %
//! of the median and one nano-dollar so a perfectly flat history does not turn every cent
//! into an infinite score. An hour is flagged when it exceeds the expected spend by at least
//! `min_usd` **and** by at least `threshold` of those deviations. The current, partial hour is
//! judged on what it has spent so far, so a spike is caught as soon as it is large enough.

use std::collections::BTreeMap;

use tollgate_types::NanoUsd;

/// A watched scope's spend over time: its labels (dimension → value) → hour start (Unix ms)
/// → nano-USD.
pub type Series = BTreeMap<Vec<(String, String)>, BTreeMap<i64, i64>>;

use crate::HOUR_MS;
const WEEK_HOURS: i64 = 168;

/// `anomalies` settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Weeks of same-hour history in the baseline.
    pub weeks: u32,
    /// The least excess over the expected spend that is worth an alert.
    pub min_usd: NanoUsd,
    /// How many robust deviations above the expected spend.
    pub threshold: f64,
}

/// One flagged hour.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Start of the hour, Unix ms.
    pub hour_ms: i64,
    pub actual: NanoUsd,
    pub expected: NanoUsd,
    /// Deviations above the expected spend.
    pub score: f64,
    /// `seasonal` (same hour of the week) or `recent` (the last 24 hours).
    pub baseline: &'static str,
}

/// Judges `hour_ms` of a scope's hourly spend (`series`: hour start → nano-USD; hours absent
/// spent nothing). History before `first_ms` (the scope's first spend) is not counted as
/// zero: the scope did not exist yet.
pub fn judge(
    series: &BTreeMap<i64, i64>,
    first_ms: i64,
    hour_ms: i64,
    s: &Settings,
) -> Option<Finding> {
    let actual = *series.get(&hour_ms).unwrap_or(&0);
    let at = |h: i64| (h >= first_ms).then(|| *series.get(&h).unwrap_or(&0));
    let seasonal: Vec<i64> = (1..=i64::from(s.weeks))
        .filter_map(|w| at(hour_ms - w * WEEK_HOURS * HOUR_MS))
        .collect();
    let (samples, baseline) = if seasonal.len() >= 3 {
        (seasonal, "seasonal")
    } else {
        let recent: Vec<i64> = (1..=24).filter_map(|h| at(hour_ms - h * HOUR_MS)).collect();
        if recent.len() < 6 {
            return None;
        }
        (recent, "recent")
    };
    let expected = median(&samples);
    let deviations: Vec<i64> = samples.iter().map(|x| (x - expected).abs()).collect();
    let mad = median(&deviations) as f64 * 1.4826;
    let scale = mad.max(expected as f64 * 0.1).max(1.0);
    let excess = actual - expected;
    let score = excess as f64 / scale;
    (excess >= s.min_usd.nanos() && score >= s.threshold).then_some(Finding {
        hour_ms,
        actual: NanoUsd(actual),
        expected: NanoUsd(expected),
        score,
        baseline,
    })
}

/// The median (the lower middle for an even count; values are nano-USD, so no averaging).
fn median(xs: &[i64]) -> i64 {
    let mut v = xs.to_vec();
    v.sort_unstable();
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_780_272_000_000; // 2026-06-01T00:00:00Z, a Monday
    const USD: i64 = 1_000_000_000;

    fn settings() -> Settings {
        Settings {
            weeks: 4,
            min_usd: NanoUsd(USD),
            threshold: 4.0,
        }
    }

    fn flagged(series: &BTreeMap<i64, i64>, from: i64, to: i64) -> Vec<i64> {
        let first = *series.keys().next().unwrap();
        (from..to)
            .step_by(HOUR_MS as usize)
            .filter(|&h| judge(series, first, h, &settings()).is_some())
            .collect()
    }

    #[test]
    fn a_spike_on_a_flat_baseline_is_flagged_once() {
        // Five weeks at ~$2/hour with noise, then one $40 hour.
        let mut s: BTreeMap<i64, i64> = (0..5 * 168)
            .map(|h| (T0 + h * HOUR_MS, 2 * USD + (h % 7) * USD / 10))
            .collect();
        let spike = T0 + (4 * 168 + 30) * HOUR_MS;
        s.insert(spike, 40 * USD);
        let last_week = T0 + 4 * 168 * HOUR_MS;
        assert_eq!(flagged(&s, last_week, T0 + 5 * 168 * HOUR_MS), vec![spike]);
    }

    #[test]
    fn a_weekly_pattern_is_expected() {
        // $1/hour, except Mondays 09:00–12:00 at $30/hour, for five weeks.
        let s: BTreeMap<i64, i64> = (0..5 * 168)
            .map(|h| {
                let how = h % 168;
                let cost = if (9..12).contains(&how) {
                    30 * USD
                } else {
                    USD
                };
                (T0 + h * HOUR_MS, cost)
            })
            .collect();
        let last_week = T0 + 4 * 168 * HOUR_MS;
        assert!(flagged(&s, last_week, T0 + 5 * 168 * HOUR_MS).is_empty());
    }

    #[test]
    fn young_scopes_use_the_last_day_and_small_excesses_are_ignored() {
        let s: BTreeMap<i64, i64> = (0..30).map(|h| (T0 + h * HOUR_MS, USD)).collect();
        let mut s2 = s.clone();
        s2.insert(T0 + 30 * HOUR_MS, 12 * USD);
        let f = judge(&s2, T0, T0 + 30 * HOUR_MS, &settings()).unwrap();
        assert_eq!(f.baseline, "recent");
        assert_eq!(f.expected, NanoUsd(USD));
        // Over by less than min_usd: not worth an alert, however large the score.
        let mut s3 = s;
        s3.insert(T0 + 30 * HOUR_MS, USD + USD / 2);
        assert!(judge(&s3, T0, T0 + 30 * HOUR_MS, &settings()).is_none());
        // Too little history: nothing is judged.
        assert!(judge(&s2, T0 + 28 * HOUR_MS, T0 + 30 * HOUR_MS, &settings()).is_none());
    }
}
