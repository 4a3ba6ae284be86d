//! Per-tenant margins: what the operator billed (the chargeback dataset's totals), what the
//! models cost upstream, and the configured revenue for the same range.

use tollgate_types::NanoUsd;

/// `per_month` prorated over `[from_ms, to_ms)`: for each calendar month (UTC) the range
/// overlaps, the month's revenue × the overlapped share of its length, each rounded half up to
/// a nano-dollar. A whole month gives exactly `per_month`.
pub fn prorated(per_month: NanoUsd, from_ms: i64, to_ms: i64) -> NanoUsd {
    let mut total: i128 = 0;
    let mut cursor = from_ms;
    while cursor < to_ms {
        let Some((start, end)) = crate::utc_month(cursor) else {
            break;
        };
        let overlap = i128::from(end.min(to_ms) - cursor);
        let len = i128::from(end - start);
        total += (i128::from(per_month.nanos()) * overlap * 2 + len).div_euclid(2 * len);
        cursor = end;
    }
    NanoUsd(i64::try_from(total).unwrap_or(i64::MAX))
}

/// `part / whole` as a percentage with two decimals, rounded half away from zero; `None` when
/// `whole` is zero.
pub fn percent(part: NanoUsd, whole: NanoUsd) -> Option<crate::decimal::Decimal> {
    let (p, w) = (i128::from(part.nanos()), i128::from(whole.nanos()));
    if w == 0 {
        return None;
    }
    let scaled = p * 20_000 / w; // basis points × 2
    let bp = if scaled >= 0 {
        (scaled + 1) / 2
    } else {
        (scaled - 1) / 2
    };
    Some(crate::decimal::Decimal::new(bp, 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    const JUNE: i64 = 1_780_272_000_000; // 2026-06-01T00:00:00Z
    const JULY: i64 = JUNE + 30 * 86_400_000;

    #[test]
    fn a_whole_month_is_the_monthly_revenue() {
        assert_eq!(
            prorated(NanoUsd(1_000_000_000_000), JUNE, JULY),
            NanoUsd(1_000_000_000_000)
        );
        // Half of June, then all of July (31 days).
        let aug = JULY + 31 * 86_400_000;
        assert_eq!(
            prorated(NanoUsd(3_000_000_000), JUNE + 15 * 86_400_000, aug),
            NanoUsd(1_500_000_000 + 3_000_000_000)
        );
        assert_eq!(prorated(NanoUsd(5), JUNE, JUNE), NanoUsd(0));
    }

    #[test]
    fn percentages_round_half_away_from_zero() {
        assert_eq!(
            percent(NanoUsd(1), NanoUsd(3)).unwrap().to_string(),
            "33.33"
        );
        assert_eq!(
            percent(NanoUsd(2), NanoUsd(3)).unwrap().to_string(),
            "66.67"
        );
        assert_eq!(
            percent(NanoUsd(-1), NanoUsd(8)).unwrap().to_string(),
            "-12.5"
        );
        assert!(percent(NanoUsd(1), NanoUsd(0)).is_none());
    }
}
