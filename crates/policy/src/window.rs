//! Window arithmetic: which `[start, end)` (Unix ms) a calendar budget's current window is, and
//! how a rolling window is bucketed.
//!
//! Calendar windows use `jiff` with the budget's IANA time zone, so "day" is the local day
//! (23 or 25 hours on a DST change), "week" starts on local Monday, "month" on the local 1st.
//!
//! Rolling windows keep settled spend in buckets of [`bucket_ms`]: one minute for windows up to
//! 24 hours, longer windows `length / 1440` rounded up to whole minutes (7d → 7 min,
//! 30d → 30 min), so a rolling budget never holds more than ~1,441 buckets whatever its length.
//! A settled amount counts for as long as *any part* of its bucket is inside the window, i.e.
//! up to one bucket longer than its exact age would allow. The granularity can therefore only
//! make a rolling budget stricter, never looser.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::def::Window;

/// Smallest rolling bucket: one minute.
pub const MIN_BUCKET_MS: i64 = 60_000;
/// Target number of buckets in a rolling window.
const BUCKETS_PER_WINDOW: i64 = 1_440;

/// The bucket width for a rolling window of `len_ms` (see the module docs).
pub fn bucket_ms(len_ms: i64) -> i64 {
    // Ceiling divisions on positive values (`i64::div_ceil` is not stable).
    let per = len_ms.max(1).saturating_add(BUCKETS_PER_WINDOW - 1) / BUCKETS_PER_WINDOW;
    let minutes = (per.saturating_add(MIN_BUCKET_MS - 1) / MIN_BUCKET_MS).max(1);
    minutes.saturating_mul(MIN_BUCKET_MS)
}

/// Start of the bucket holding `t_ms` (floor, also for times before 1970). A non-positive
/// `bucket_ms` is treated as 1 ms.
pub fn bucket_start(t_ms: i64, bucket_ms: i64) -> i64 {
    let b = bucket_ms.max(1);
    t_ms.div_euclid(b).saturating_mul(b)
}

/// A window that could not be computed: `now` outside the range `jiff` supports
/// (years −9999..=9999). Only an absurd clock gets here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot compute the {window} window at {now_ms} ms: {reason}")]
pub struct WindowError {
    pub window: String,
    pub now_ms: i64,
    pub reason: String,
}

/// `[start, end)` of the calendar window of kind `window` holding `now_ms` in `tz`.
/// For a rolling window, `[now − length, now)`.
pub fn bounds(window: Window, tz: &TimeZone, now_ms: i64) -> Result<(i64, i64), WindowError> {
    let err = |reason: String| WindowError {
        window: window.to_string(),
        now_ms,
        reason,
    };
    let today = || -> Result<Date, WindowError> {
        let now = Timestamp::from_millisecond(now_ms).map_err(|e| err(e.to_string()))?;
        Ok(now.to_zoned(tz.clone()).date())
    };
    let (first, next): (Date, Date) = match window {
        Window::Rolling { .. } => {
            let len = window.rolling_ms().unwrap_or(0);
            return Ok((now_ms.saturating_sub(len), now_ms));
        }
        Window::Day => {
            let today = today()?;
            (today, today.tomorrow().map_err(|e| err(e.to_string()))?)
        }
        Window::Week => {
            let today = today()?;
            let back = i64::from(today.weekday().to_monday_zero_offset());
            let monday = today
                .checked_sub(back.days())
                .map_err(|e| err(e.to_string()))?;
            let next = monday
                .checked_add(7.days())
                .map_err(|e| err(e.to_string()))?;
            (monday, next)
        }
        Window::Month => {
            let first = today()?.first_of_month();
            let next = first
                .last_of_month()
                .tomorrow()
                .map_err(|e| err(e.to_string()))?;
            (first, next)
        }
    };
    Ok((
        local_day_start_ms(first, tz).map_err(err)?,
        local_day_start_ms(next, tz).map_err(err)?,
    ))
}

/// The first instant of local day `d` in `tz`. `Date::to_zoned` resolves midnight with the
/// "compatible" rule: a midnight that falls in a DST gap becomes the first instant after the
/// gap, an ambiguous midnight the earlier of the two — in both cases the first instant of the
/// day.
fn local_day_start_ms(d: Date, tz: &TimeZone) -> Result<i64, String> {
    d.to_zoned(tz.clone())
        .map(|z| z.timestamp().as_millisecond())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn bucket_sizes() {
        assert_eq!(bucket_ms(60_000), 60_000);
        assert_eq!(bucket_ms(3_600_000), 60_000);
        assert_eq!(bucket_ms(86_400_000), 60_000);
        assert_eq!(bucket_ms(7 * 86_400_000), 7 * 60_000);
        assert_eq!(bucket_ms(30 * 86_400_000), 30 * 60_000);
        // 100h = 6000 min → 4.17 min per bucket → 5 min.
        assert_eq!(bucket_ms(100 * 3_600_000), 5 * 60_000);
        assert_eq!(bucket_start(-1, 60_000), -60_000);
        assert_eq!(bucket_start(119_999, 60_000), 60_000);
    }

    #[test]
    fn utc_calendar_windows() {
        let utc = TimeZone::UTC;
        let now = ms("2026-07-15T13:45:00Z"); // a Wednesday
        assert_eq!(
            bounds(Window::Day, &utc, now).unwrap(),
            (ms("2026-07-15T00:00:00Z"), ms("2026-07-16T00:00:00Z"))
        );
        assert_eq!(
            bounds(Window::Week, &utc, now).unwrap(),
            (ms("2026-07-13T00:00:00Z"), ms("2026-07-20T00:00:00Z"))
        );
        assert_eq!(
            bounds(Window::Month, &utc, now).unwrap(),
            (ms("2026-07-01T00:00:00Z"), ms("2026-08-01T00:00:00Z"))
        );
        // December rolls into the next year; a Monday is its own week's start.
        assert_eq!(
            bounds(Window::Month, &utc, ms("2026-12-31T23:59:59.999Z")).unwrap(),
            (ms("2026-12-01T00:00:00Z"), ms("2027-01-01T00:00:00Z"))
        );
        assert_eq!(
            bounds(Window::Week, &utc, ms("2026-07-20T00:00:00Z"))
                .unwrap()
                .0,
            ms("2026-07-20T00:00:00Z")
        );
    }

    #[test]
    fn out_of_range_time_is_an_error_not_a_panic() {
        assert!(bounds(Window::Day, &TimeZone::UTC, i64::MAX).is_err());
        assert!(bounds(Window::Month, &TimeZone::UTC, i64::MIN).is_err());
    }
}
