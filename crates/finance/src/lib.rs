//! Finance output computed from ledger rows, outside the request path.
//!
//! - [`focus`]: FOCUS 1.2 and 1.0 cost-and-usage exports — ledger rows aggregated per charge
//!   hour × billing account × sub-account × provider × served model × feature × token class,
//!   with exact decimal costs that reconcile to the ledger to the nano-dollar.
//! - [`anomalies`]: hours whose spend in a scope is far above its seasonal baseline.
//! - [`showback`]: direct spend plus shares of shared costs, per tenant, exactly.
//! - [`margins`]: revenue proration and margin percentages for the margins report.
//! - [`decimal`]: the fixed-point decimal those columns are written in.

pub mod anomalies;
pub mod decimal;
pub mod focus;
pub mod margins;
pub mod showback;

/// One hour in milliseconds: the charge period of exports and the bucket of anomalies.
pub const HOUR_MS: i64 = 3_600_000;

/// The UTC calendar month holding `ms`, as `[start, end)` in Unix milliseconds (billing
/// periods, revenue proration).
pub(crate) fn utc_month(ms: i64) -> Option<(i64, i64)> {
    use jiff::civil::DateTime;
    use jiff::tz::TimeZone;
    let dt = jiff::Timestamp::from_millisecond(ms)
        .ok()?
        .to_zoned(TimeZone::UTC)
        .datetime();
    let start = DateTime::new(dt.year(), dt.month(), 1, 0, 0, 0, 0).ok()?;
    let end = start.checked_add(jiff::Span::new().months(1)).ok()?;
    let ms = |d: DateTime| {
        d.to_zoned(TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp().as_millisecond())
    };
    Some((ms(start)?, ms(end)?))
}
