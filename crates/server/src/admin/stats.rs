//! `GET /admin/v1/stats`: traffic over a range — requests by outcome, the error rate,
//! nearest-rank p50/p95 of latency and time to first byte over the served rows, the cache's
//! hits and what they saved, the range's cost — and the current UTC day's and month's spend
//! with the month's linear forecast (the dashboard's overview tiles).
//!
//! `from`/`to` default to the last 24 hours; the row filters of `/admin/v1/spend` apply
//! (`tenant`, `model`, `cache_status`, …), to the day and month figures too.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use jiff::tz::TimeZone;
use serde_json::{Value, json};
use tollgate_policy::Window;
use tollgate_store::{SpendQuery, TrafficStats};
use tollgate_types::{ApiError, NanoUsd};

use crate::admin::reports::{range, row_filter};
use crate::admin::{AdminResult, blocking, flush, rfc3339};
use crate::gateway::{Gateway, now_ms};

/// The default range: the last day.
pub(crate) const DEFAULT_RANGE_MS: i64 = 24 * 3_600_000;

pub(crate) async fn stats(
    State(gw): State<Gateway>,
    Query(q): Query<HashMap<String, String>>,
) -> AdminResult {
    Ok(Json(stats_value(&gw, &q, now_ms()).await?).into_response())
}

/// `q` with `from`/`to` filled in when absent or empty: `to` = now, `from` = `to` − 24 h
/// (as Unix milliseconds, which `parse_time` reads back exactly).
pub(crate) fn with_default_range(
    q: &HashMap<String, String>,
    now_ms: i64,
) -> HashMap<String, String> {
    let mut q = q.clone();
    let missing =
        |q: &HashMap<String, String>, k: &str| q.get(k).is_none_or(|v| v.trim().is_empty());
    if missing(&q, "to") {
        q.insert("to".into(), now_ms.to_string());
    }
    if missing(&q, "from") {
        let to = q
            .get("to")
            .and_then(|t| crate::admin::reports::parse_time("to", t).ok())
            .unwrap_or(now_ms);
        q.insert("from".into(), (to - DEFAULT_RANGE_MS).to_string());
    }
    q
}

/// A microsecond figure in milliseconds, one decimal.
fn ms(us: Option<u64>) -> Value {
    us.map_or(Value::Null, |us| json!((us as f64 / 100.0).round() / 10.0))
}

fn ratio(part: u64, whole: u64) -> Value {
    if whole == 0 {
        Value::Null
    } else {
        json!(part as f64 / whole as f64)
    }
}

/// The answer of `GET /admin/v1/stats` for the query parameters `q` at `now_ms`.
pub(crate) async fn stats_value(
    gw: &Gateway,
    q: &HashMap<String, String>,
    now_ms: i64,
) -> Result<Value, ApiError> {
    let q = with_default_range(q, now_ms);
    let (from_ms, to_ms) = range(&q, gw.settings().max_report_range)?;
    let filter = row_filter(&q)?;
    let utc = TimeZone::UTC;
    let day = tollgate_policy::window::bounds(Window::Day, &utc, now_ms)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let month = tollgate_policy::window::bounds(Window::Month, &utc, now_ms)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    flush(gw).await?;
    let store = gw.store().clone();
    let unbounded = tollgate_store::RowFilter {
        from_ms: None,
        to_ms: None,
        ..filter.clone()
    };
    let (s, day_usd, month_usd) = blocking(move || {
        let s: TrafficStats = store.traffic_stats(&filter)?;
        // The same query as `GET /admin/v1/spend?from=&to=` (one total line).
        let total = |(from, to): (i64, i64)| -> Result<NanoUsd, tollgate_store::StoreError> {
            let rows = store.spend(&SpendQuery {
                group_by: Vec::new(),
                from_ms: Some(from),
                to_ms: Some(to),
                filter: unbounded.clone(),
            })?;
            Ok(rows.iter().map(|r| r.effective_cost).sum())
        };
        Ok((s, total(day)?, total(month)?))
    })
    .await?;
    let forecast = tollgate_policy::linear_forecast(month_usd, month.0, month.1, now_ms);
    let p = |v: [Option<u64>; 2]| json!({"p50": ms(v[0]), "p95": ms(v[1])});
    Ok(json!({
        "object": "stats",
        "from": rfc3339(from_ms),
        "to": rfc3339(to_ms),
        "requests": s.requests,
        "outcomes": {
            "ok": s.ok,
            "rejected": s.rejected,
            "failed": s.failed,
            "cancelled": s.cancelled,
        },
        "error_rate": ratio(s.rejected + s.failed, s.requests),
        "latency_ms": p(s.latency_us),
        "ttft_ms": p(s.ttft_us),
        "cache": {
            "hits": s.cache_hits,
            "misses": s.cache_misses,
            "bypass": s.cache_bypass,
            "hit_rate": ratio(s.cache_hits, s.cache_hits + s.cache_misses),
            "saved_usd": s.saved,
        },
        "cost_usd": s.cost,
        "current": {
            "day_start": rfc3339(day.0),
            "day_usd": day_usd,
            "month_start": rfc3339(month.0),
            "month_end": rfc3339(month.1),
            "month_usd": month_usd,
            "month_forecast_usd": forecast,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_range_is_the_last_day_and_explicit_bounds_stay() {
        let now = 1_800_000_000_000;
        let q = with_default_range(&HashMap::new(), now);
        assert_eq!(q["to"], now.to_string());
        assert_eq!(q["from"], (now - DEFAULT_RANGE_MS).to_string());
        let given = HashMap::from([("to".to_string(), "2026-01-02".to_string())]);
        let q = with_default_range(&given, now);
        assert_eq!(q["to"], "2026-01-02");
        let to = crate::admin::reports::parse_time("to", "2026-01-02").unwrap();
        assert_eq!(q["from"], (to - DEFAULT_RANGE_MS).to_string());
        assert_eq!(ms(Some(12_345)), json!(12.3));
        assert_eq!(ms(Some(12_350)), json!(12.4));
        assert_eq!(ms(None), Value::Null);
        assert_eq!(ratio(1, 0), Value::Null);
    }
}
