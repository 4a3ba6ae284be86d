//! Reading the ledger: `GET /admin/v1/spend` (exact sums grouped by attribution dimensions),
//! `GET /admin/v1/requests` (the rows themselves, newest first, keyset-paginated by the
//! store) and `GET /admin/v1/requests/{id}` (one row).
//!
//! Each handler is a thin wrapper over a function returning the answer's JSON value
//! ([`spend_report`], [`requests_page`], [`request_row`]): the dashboard renders those same
//! values, so a page and the API cannot disagree.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use serde_json::{Map, Value, json};
use tollgate_store::{CACHE_NONE, Dim, Page, RowFilter, SpendQuery};
use tollgate_types::{ApiError, ErrorCode, NanoUsd, Outcome};

use crate::admin::list::{self, PageQuery};
use crate::admin::{AdminResult, blocking, flush};
use crate::gateway::Gateway;

/// Parses `from`/`to`: RFC 3339 timestamp, `YYYY-MM-DD` (UTC midnight), or Unix milliseconds.
pub fn parse_time(param: &str, s: &str) -> Result<i64, ApiError> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>()
        && let Ok(z) = d.to_zoned(jiff::tz::TimeZone::UTC)
    {
        return Ok(z.timestamp().as_millisecond());
    }
    Err(ApiError::new(
        ErrorCode::InvalidRequest,
        format!("'{param}' must be an RFC 3339 timestamp, a YYYY-MM-DD date or Unix milliseconds"),
    )
    .with_param(param))
}

/// `from` and `to`, both required, `from` before `to`, at most `max` apart (finance reports,
/// the dashboard's ranges).
pub(crate) fn range(
    q: &HashMap<String, String>,
    max: std::time::Duration,
) -> Result<(i64, i64), ApiError> {
    let get = |k: &'static str| {
        q.get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                ApiError::new(ErrorCode::InvalidRequest, format!("'{k}' is required")).with_param(k)
            })
    };
    let from_ms = parse_time("from", get("from")?)?;
    let to_ms = parse_time("to", get("to")?)?;
    if from_ms >= to_ms {
        return Err(
            ApiError::new(ErrorCode::InvalidRequest, "'from' must be before 'to'")
                .with_param("from"),
        );
    }
    let max_ms = i64::try_from(max.as_millis()).unwrap_or(i64::MAX);
    if to_ms - from_ms > max_ms {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "the range is longer than server.max_report_days ({} days)",
                max.as_secs() / 86_400
            ),
        )
        .with_param("to"));
    }
    Ok((from_ms, to_ms))
}

/// The row filter of the query parameters `spend`, `requests` and `stats` share.
pub(crate) fn row_filter(q: &HashMap<String, String>) -> Result<RowFilter, ApiError> {
    let get = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    let outcome = match get("outcome") {
        Some(o) => Some(Outcome::parse(&o.to_ascii_lowercase()).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                "'outcome' must be ok, rejected, failed or cancelled",
            )
            .with_param("outcome")
        })?),
        None => None,
    };
    let status = match get("status") {
        Some(s) => Some(s.parse::<u16>().map_err(|_| {
            ApiError::new(ErrorCode::InvalidRequest, "'status' must be an HTTP status")
                .with_param("status")
        })?),
        None => None,
    };
    let cache_status = match get("cache_status") {
        Some(c) => {
            let c = c.to_ascii_lowercase();
            if !matches!(c.as_str(), "hit" | "miss" | "bypass" | CACHE_NONE) {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    "'cache_status' must be hit, miss, bypass or none",
                )
                .with_param("cache_status"));
            }
            Some(c)
        }
        None => None,
    };
    Ok(RowFilter {
        key_id: get("key_id"),
        team: get("team"),
        tenant: get("tenant"),
        feature: get("feature"),
        user: get("user"),
        model: get("model"),
        provider: get("provider"),
        outcome,
        status,
        cache_status,
        from_ms: get("from").map(|v| parse_time("from", &v)).transpose()?,
        to_ms: get("to").map(|v| parse_time("to", &v)).transpose()?,
        imported_only: false,
    })
}

/// A report, not a collection: one row per group and the exact total.
pub(crate) async fn spend(
    State(gw): State<Gateway>,
    Query(q): Query<HashMap<String, String>>,
) -> AdminResult {
    Ok(Json(spend_report(&gw, &q).await?).into_response())
}

/// The answer of `GET /admin/v1/spend` for the query parameters `q`.
pub(crate) async fn spend_report(
    gw: &Gateway,
    q: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let group_by = match q.get("group_by").filter(|s| !s.is_empty()) {
        Some(s) => {
            let mut dims = Dim::parse_list(s).map_err(|e| {
                ApiError::new(ErrorCode::InvalidRequest, e.to_string()).with_param("group_by")
            })?;
            let mut seen = Vec::new();
            dims.retain(|d| {
                let first = !seen.contains(d);
                seen.push(*d);
                first
            });
            dims
        }
        None => Vec::new(),
    };
    let filter = row_filter(q)?;
    let query = SpendQuery {
        group_by: group_by.clone(),
        from_ms: filter.from_ms,
        to_ms: filter.to_ms,
        filter,
    };
    flush(gw).await?;
    let store = gw.store().clone();
    let rows = blocking(move || store.spend(&query)).await?;
    let total_cost: NanoUsd = rows.iter().map(|r| r.effective_cost).sum();
    let total_requests: u64 = rows.iter().map(|r| r.requests).sum();
    let data: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut m = Map::new();
            for (k, v) in &r.dims {
                m.insert(k.clone(), Value::String(v.clone()));
            }
            m.insert("requests".into(), r.requests.into());
            m.insert("input_tokens".into(), r.input_tokens.into());
            m.insert("cached_input_tokens".into(), r.cached_input_tokens.into());
            m.insert(
                "cache_write_input_tokens".into(),
                r.cache_write_input_tokens.into(),
            );
            m.insert("output_tokens".into(), r.output_tokens.into());
            m.insert("reasoning_tokens".into(), r.reasoning_tokens.into());
            m.insert("list_cost_usd".into(), r.list_cost.to_usd_string().into());
            m.insert("cost_usd".into(), r.effective_cost.to_usd_string().into());
            m.insert("estimated_rows".into(), r.estimated_rows.into());
            Value::Object(m)
        })
        .collect();
    Ok(json!({
        "object": "spend_report",
        "group_by": group_by.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
        "data": data,
        "total": {"requests": total_requests, "cost_usd": total_cost.to_usd_string()},
    }))
}

/// Ledger rows, newest first.
pub(crate) async fn requests(
    State(gw): State<Gateway>,
    Query(q): Query<HashMap<String, String>>,
) -> AdminResult {
    Ok(Json(requests_page(&gw, &q).await?).into_response())
}

/// The answer of `GET /admin/v1/requests` for the query parameters `q`.
pub(crate) async fn requests_page(
    gw: &Gateway,
    q: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let filter = row_filter(q)?;
    let page = PageQuery::from_query(q)?;
    // The store's cursors are encoded like every list's: refuse a bad one here, naming it.
    page.after()?;
    let page = Page {
        limit: page.limit,
        cursor: page.cursor,
    };
    flush(gw).await?;
    let store = gw.store().clone();
    let (rows, next) = blocking(move || store.list_requests(&filter, page)).await?;
    let data = rows
        .iter()
        .map(|r| crate::admin::to_json("a ledger row", r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(list::body(data, next))
}

/// One ledger row, in the shape of the list's items.
pub(crate) async fn request(State(gw): State<Gateway>, Path(id): Path<String>) -> AdminResult {
    Ok(Json(request_row(&gw, &id).await?).into_response())
}

/// The row of request `id`; `404 not_found` when the ledger has none.
pub(crate) async fn request_row(gw: &Gateway, id: &str) -> Result<Value, ApiError> {
    flush(gw).await?;
    let store = gw.store().clone();
    let wanted = id.to_string();
    let row = blocking(move || store.get_request(&wanted)).await?;
    match row {
        Some(r) => crate::admin::to_json("a ledger row", &r),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no ledger row for request '{id}'"),
        )),
    }
}
