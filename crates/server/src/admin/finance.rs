//! Finance reads of the ledger: `GET /admin/v1/exports/focus` (the FOCUS export of `tollgate
//! export focus`, streamed), `GET /admin/v1/margins` (the chargeback export's totals per
//! tenant), `GET /admin/v1/showback` (direct plus allocated shared cost per tenant) and
//! `GET /admin/v1/anomalies` (hours of unusual spend per watched scope).
//!
//! The ledger is scanned on a blocking thread and the CSV goes out in chunks as each charge
//! hour closes, so a month's export needs no more memory than an hour of groups. A client
//! that goes away stops the scan (the next chunk cannot be sent); a store error mid-way ends
//! the body with an error, so the client sees a broken transfer, never a short file that
//! looks complete.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tollgate_finance::HOUR_MS;
use tollgate_finance::anomalies::{Finding, Series, judge};
use tollgate_finance::focus::{Dataset, Exporter, Format, Summary, TenantTotals, Version};
use tollgate_finance::margins::{percent, prorated};
use tollgate_finance::showback;
use tollgate_store::{Dim, RowFilter, SpendQuery};
use tollgate_types::{ApiError, ErrorCode, NanoUsd};

use crate::admin::reports::range;
use crate::admin::{AdminResult, blocking, flush, rfc3339};
use crate::gateway::Gateway;
use crate::gateway::memo::{DayMemo, Days};
use crate::http::headers;

/// Chunks in flight between the scan and the socket.
const CHUNKS: usize = 8;
/// Bytes per chunk.
const CHUNK_BYTES: usize = 64 * 1024;

pub(crate) async fn focus(
    State(gw): State<Gateway>,
    Query(q): Query<HashMap<String, String>>,
) -> AdminResult {
    let (from_ms, to_ms) = range(&q, gw.settings().max_report_range)?;
    let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let version = match get("version") {
        None => Version::V1_2,
        Some(v) => Version::parse(v).ok_or_else(|| {
            ApiError::new(ErrorCode::InvalidRequest, "'version' must be 1.2 or 1.0")
                .with_param("version")
        })?,
    };
    let dataset = match get("dataset") {
        None => Dataset::Cost,
        Some(d) => Dataset::parse(d)
            .ok_or_else(|| unsupported("dataset", "'dataset' must be cost or chargeback"))?,
    };
    let format = match get("format") {
        None => Format::Csv,
        Some(f) => Format::parse(f)
            .ok_or_else(|| unsupported("format", "'format' must be csv or parquet"))?,
    };
    // Rows recorded before this request are in the file.
    flush(&gw).await?;

    let mut opts = gw.0.focus.clone();
    opts.version = version;
    opts.dataset = dataset;
    opts.format = format;
    let store = gw.0.store.clone();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHUNKS);
    let errors = tx.clone();
    // Blocking: SQLite reads and CSV formatting; the channel paces it to the client.
    let _scan = tokio::task::spawn_blocking(move || {
        let out = std::io::BufWriter::with_capacity(CHUNK_BYTES, Chunks(tx));
        let result = export(&store, from_ms, to_ms, opts, out, false)
            .and_then(|(_, mut w)| w.flush().map_err(|e| e.to_string()));
        if let Err(e) = result {
            tracing::warn!(error = %e, "FOCUS export stopped");
            let _ = errors.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    let name = format!(
        "focus-{}-{}-{}-{}.{}",
        version.as_str(),
        dataset.as_str(),
        day(from_ms),
        day(to_ms),
        format.extension()
    );
    let mut resp = body.into_response();
    let content_type = match format {
        Format::Csv => headers::CSV,
        Format::Parquet => headers::PARQUET,
    };
    headers::attachment(resp.headers_mut(), content_type, &name);
    Ok(resp)
}

/// `GET /admin/v1/margins?from=&to=`: per tenant, the upstream AI cost, what the operator
/// bills it (the chargeback dataset's total: its price list, else cost plus markup), the
/// margin, and its configured revenue prorated over the range.
pub(crate) async fn margins(
    State(gw): State<Gateway>,
    Query(q): Query<HashMap<String, String>>,
) -> AdminResult {
    Ok(Json(margins_value(&gw, &q).await?).into_response())
}

/// The answer of `GET /admin/v1/margins` for the query parameters `q`.
pub(crate) async fn margins_value(
    gw: &Gateway,
    q: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let (from_ms, to_ms) = range(q, gw.settings().max_report_range)?;
    flush(gw).await?;
    let mut opts = gw.0.focus.clone();
    opts.dataset = Dataset::Chargeback;
    // Totals only: no pool to mark or apportion, so no showback read first.
    opts.allocations.clear();
    let terms = opts.tenants.clone();
    let gw2 = gw.clone();
    // The chargeback export's own grouping and rounding, with no file built: the margins are
    // its totals, so the two can never disagree.
    let summary = tokio::task::spawn_blocking(move || {
        margins_summary(&gw2.0.store, &gw2.0.margin_days, from_ms, to_ms, &opts)
    })
    .await
    .map_err(|e| ApiError::internal(format!("margins task: {e}")))?
    .map_err(|e| ApiError::internal(format!("margins: {e}")))?;

    let mut tenants = summary.tenants.clone();
    for (name, t) in &terms {
        if t.revenue_per_month.is_some() {
            tenants.entry(name.clone()).or_default();
        }
    }
    let line = |name: Option<&str>, t: &TenantTotals, revenue: Option<NanoUsd>| {
        let margin = NanoUsd(t.billed.nanos() - t.upstream.nanos());
        json!({
            "tenant": name,
            "requests": t.requests,
            "revenue_usd": revenue,
            "ai_cost_usd": t.upstream,
            "billed_usd": t.billed,
            "margin_usd": margin,
            "margin_pct": percent(margin, t.billed).map(|p| p.to_string()),
            "revenue_margin_usd": revenue.map(|r| NanoUsd(r.nanos() - t.upstream.nanos())),
        })
    };
    let mut total_revenue: Option<NanoUsd> = None;
    let data: Vec<_> = tenants
        .iter()
        .map(|(name, t)| {
            let revenue = terms
                .get(name)
                .and_then(|x| x.revenue_per_month)
                .map(|r| prorated(r, from_ms, to_ms));
            if let Some(r) = revenue {
                total_revenue = Some(NanoUsd(total_revenue.map_or(0, |x| x.nanos()) + r.nanos()));
            }
            line(Some(name), t, revenue)
        })
        .collect();
    let all = TenantTotals {
        requests: summary.ledger_rows,
        upstream: summary.upstream,
        billed: summary.billed,
    };
    Ok(json!({
        "object": "margins",
        "from": rfc3339(from_ms),
        "to": rfc3339(to_ms),
        "data": data,
        "total": line(None, &all, total_revenue),
    }))
}

/// The chargeback totals of `[from_ms, to_ms)` (blocking), summed from per-day pieces
/// (`memo.rs`): the same groups and rounding as one export of the range.
fn margins_summary(
    store: &tollgate_store::Store,
    memo: &DayMemo<Summary>,
    from_ms: i64,
    to_ms: i64,
    opts: &tollgate_finance::focus::Options,
) -> Result<Summary, String> {
    let days = Days::read(store, from_ms, to_ms)?;
    let pieces = memo.pieces(&days, 0, |a, b| {
        export(store, a, b, opts.clone(), std::io::sink(), true).map(|(s, _)| s)
    })?;
    let mut sum = Summary::default();
    for p in &pieces {
        sum.absorb(p);
    }
    Ok(sum)
}

/// `GET /admin/v1/showback?from=&to=&by=tenant[,feature]`: per tenant (and feature), its
/// direct spend, its share of the `allocations` pools, and the total; plus each pool.
pub(crate) async fn showback(
    State(gw): State<Gateway>,
    Query(q): Query<HashMap<String, String>>,
) -> AdminResult {
    Ok(Json(showback_value(&gw, &q).await?).into_response())
}

/// The answer of `GET /admin/v1/showback` for the query parameters `q`.
pub(crate) async fn showback_value(
    gw: &Gateway,
    q: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let (from_ms, to_ms) = range(q, gw.settings().max_report_range)?;
    let by_feature = match q.get("by").map(String::as_str).filter(|v| !v.is_empty()) {
        None | Some("tenant") => false,
        Some("tenant,feature") => true,
        Some(_) => {
            return Err(unsupported("by", "'by' must be tenant or tenant,feature").0);
        }
    };
    flush(gw).await?;
    let store = gw.0.store.clone();
    let spend = blocking(move || showback_spend(&store, from_ms, to_ms)).await?;
    let ledger_total = NanoUsd(spend.iter().map(|(_, c)| c.nanos()).sum());
    let rules = &gw.0.allocations;
    let fixed = fixed_amounts(rules, from_ms, to_ms);
    let (lines, pools) = showback::showback(&spend, rules, &fixed, by_feature);
    let mut total = showback::Line::default();
    let data: Vec<_> = lines
        .iter()
        .map(|((tenant, feature), l)| {
            total.direct = NanoUsd(total.direct.nanos() + l.direct.nanos());
            total.allocated = NanoUsd(total.allocated.nanos() + l.allocated.nanos());
            total.total = NanoUsd(total.total.nanos() + l.total.nanos());
            let mut v = json!({
                "tenant": tenant,
                "direct_usd": l.direct,
                "allocated_usd": l.allocated,
                "total_usd": l.total,
            });
            if let Some(f) = feature {
                v["feature"] = json!(f);
            }
            v
        })
        .collect();
    let allocations: Vec<_> = pools
        .iter()
        .map(|p| {
            json!({
                "name": p.rule,
                "from_ledger_usd": p.from_ledger,
                "fixed_usd": p.fixed,
                "shares": p.shares,
                "ledger_shares": p.ledger_shares,
            })
        })
        .collect();
    Ok(json!({
        "object": "showback",
        "from": rfc3339(from_ms),
        "to": rfc3339(to_ms),
        "by": if by_feature { json!(["tenant", "feature"]) } else { json!(["tenant"]) },
        "data": data,
        "allocations": allocations,
        "total": {
            "direct_usd": total.direct,
            "allocated_usd": total.allocated,
            "total_usd": total.total,
        },
        "ledger_total_usd": ledger_total,
    }))
}

/// The range's spend by every label an allocation rule can match, as showback reads it.
fn showback_spend(
    store: &tollgate_store::Store,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(showback::Attribution, NanoUsd)>, tollgate_store::StoreError> {
    let query = SpendQuery {
        group_by: vec![
            Dim::Tenant,
            Dim::Team,
            Dim::Feature,
            Dim::Model,
            Dim::Provider,
        ],
        from_ms: Some(from_ms),
        to_ms: Some(to_ms),
        ..Default::default()
    };
    let rows = store.spend(&query)?;
    let dim = |r: &tollgate_store::SpendRow, k: &str| r.dims.get(k).cloned().unwrap_or_default();
    Ok(rows
        .iter()
        .map(|r| {
            let a = showback::Attribution {
                tenant: dim(r, "tenant"),
                team: dim(r, "team"),
                feature: dim(r, "feature"),
                model: dim(r, "model"),
                provider: dim(r, "provider"),
            };
            (a, r.effective_cost)
        })
        .collect())
}

/// Each rule's fixed monthly amount prorated over the range, by rule name.
fn fixed_amounts(rules: &[showback::Rule], from_ms: i64, to_ms: i64) -> BTreeMap<String, NanoUsd> {
    rules
        .iter()
        .filter_map(|r| {
            let amount = r.amount_per_month?;
            Some((r.name.clone(), prorated(amount, from_ms, to_ms)))
        })
        .collect()
}

/// The range's showback pools under `rules` — who carries each and by what weights — for a
/// FOCUS export to apportion shared rows by (blocking). No rules: no read.
pub fn allocation_pools(
    store: &tollgate_store::Store,
    rules: &[showback::Rule],
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<showback::Pool>, tollgate_store::StoreError> {
    if rules.is_empty() {
        return Ok(Vec::new());
    }
    let spend = showback_spend(store, from_ms, to_ms)?;
    let fixed = fixed_amounts(rules, from_ms, to_ms);
    Ok(showback::showback(&spend, rules, &fixed, false).1)
}

/// `GET /admin/v1/anomalies?from=&to=`: the hours in the range whose spend in a watched
/// scope (`anomalies.by`) is far above its seasonal baseline, oldest first. Computed from the
/// ledger when asked (off the request path), so restarts lose nothing; the current hour is
/// judged on its spend so far and reported `open`.
pub(crate) async fn anomalies(
    State(gw): State<Gateway>,
    Query(q): Query<HashMap<String, String>>,
) -> AdminResult {
    Ok(Json(anomalies_value(&gw, &q).await?).into_response())
}

/// The answer of `GET /admin/v1/anomalies` for the query parameters `q`.
pub(crate) async fn anomalies_value(
    gw: &Gateway,
    q: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let (from_ms, to_ms) = range(q, gw.settings().max_report_range)?;
    flush(gw).await?;
    let mut found = find_anomalies(gw, from_ms, to_ms).await?;
    let now = jiff::Timestamp::now().as_millisecond();
    found.sort_by_key(|(h, _, _)| *h);
    let data = found
        .into_iter()
        .map(|(h, labels, f)| {
            json!({
                "scope": labels,
                "hour": rfc3339(h),
                "actual_usd": f.actual,
                "expected_usd": f.expected,
                "score": (f.score * 100.0).round() / 100.0,
                "baseline": f.baseline,
                "status": if h + HOUR_MS > now { "open" } else { "closed" },
            })
        })
        .collect();
    Ok(crate::admin::list::body(data, None))
}

/// The hourly spend of `[from_ms, to_ms)` by `dims` (blocking).
fn hourly_spend(
    store: &tollgate_store::Store,
    dims: &[Dim],
    from_ms: i64,
    to_ms: i64,
) -> Result<Series, tollgate_store::StoreError> {
    let mut group_by = dims.to_vec();
    group_by.push(Dim::Hour);
    let rows = store.spend(&SpendQuery {
        group_by,
        from_ms: Some(from_ms),
        to_ms: Some(to_ms),
        ..Default::default()
    })?;
    let mut by_scope = Series::new();
    for r in rows {
        let Some(hour) = r
            .dims
            .get("hour")
            .and_then(|h| h.parse::<jiff::Timestamp>().ok())
        else {
            continue;
        };
        let labels: Vec<(String, String)> = r
            .dims
            .iter()
            .filter(|(k, _)| k.as_str() != "hour")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        *by_scope
            .entry(labels)
            .or_default()
            .entry(hour.as_millisecond())
            .or_default() += r.effective_cost.nanos();
    }
    Ok(by_scope)
}

/// The anomalies of every watched scope in the hours of `[from_ms, to_ms)`, unsorted: (hour
/// start, the scope's labels, the finding). Reads the ledger on a blocking thread.
pub(crate) async fn find_anomalies(
    gw: &Gateway,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(i64, BTreeMap<String, String>, Finding)>, ApiError> {
    let watch = gw.0.anomalies.clone();
    let first_hour = from_ms.div_euclid(HOUR_MS) * HOUR_MS;
    let history_from = first_hour - i64::from(watch.settings.weeks) * 168 * HOUR_MS;
    let scopes = watch.scopes.clone();
    let gw2 = gw.clone();
    // Per scope: its labels → hourly spend (hour start → nano-USD), summed from per-day
    // pieces (`memo.rs`), so the weeks of history are read once, not on every call.
    let series = tokio::task::spawn_blocking(move || -> Result<Vec<Series>, String> {
        let store = &gw2.0.store;
        let days = Days::read(store, history_from, to_ms)?;
        let mut out = Vec::new();
        for (slot, dims) in scopes.iter().enumerate() {
            let pieces = gw2.0.anomaly_days.pieces(&days, slot, |a, b| {
                hourly_spend(store, dims, a, b).map_err(|e| e.to_string())
            })?;
            let mut by_scope = Series::new();
            for piece in &pieces {
                for (labels, hours) in piece.iter() {
                    let mine = by_scope.entry(labels.clone()).or_default();
                    for (h, v) in hours {
                        *mine.entry(*h).or_default() += v;
                    }
                }
            }
            out.push(by_scope);
        }
        Ok(out)
    })
    .await
    .map_err(|e| ApiError::internal(format!("anomalies task: {e}")))?
    .map_err(|e| ApiError::internal(format!("anomalies: {e}")))?;
    let mut found = Vec::new();
    for by_scope in &series {
        for (labels, hours) in by_scope {
            let Some(&first) = hours.keys().next() else {
                continue;
            };
            let mut h = first_hour;
            while h < to_ms {
                if let Some(f) = judge(hours, first, h, &watch.settings) {
                    found.push((f.hour_ms, labels.iter().cloned().collect(), f));
                }
                h += HOUR_MS;
            }
        }
    }
    Ok(found)
}

/// `GET /admin/v1/allocations`: the shared-cost rules in force (config `allocations`), in the
/// order they are tried.
pub(crate) async fn allocations(State(gw): State<Gateway>) -> AdminResult {
    let data =
        gw.0.allocations
            .iter()
            .map(|r| {
                let take = r.take.as_ref().map(|m| {
                    let mut o = serde_json::Map::new();
                    for (k, v) in [
                        ("tenant", &m.tenant),
                        ("team", &m.team),
                        ("feature", &m.feature),
                        ("model", &m.model),
                        ("provider", &m.provider),
                    ] {
                        if let Some(v) = v {
                            o.insert(k.into(), json!(v));
                        }
                    }
                    o
                });
                let (method, weights) = match &r.method {
                    showback::Method::Proportional => ("proportional", None),
                    showback::Method::Even => ("even", None),
                    showback::Method::Weights(w) => ("weights", Some(w)),
                };
                json!({
                    "object": "allocation",
                    "name": r.name,
                    "match": take,
                    "amount_usd_per_month": r.amount_per_month,
                    "method": method,
                    "weights": weights,
                    "tenants": r.tenants,
                })
            })
            .collect();
    Ok(crate::admin::list::respond(data, None))
}

/// The ledger rows started in `[from_ms, to_ms)` through an exporter into `out`, or only
/// summed when `totals_only` (blocking: call it on a blocking thread).
fn export<W: Write + Send>(
    store: &tollgate_store::Store,
    from_ms: i64,
    to_ms: i64,
    opts: tollgate_finance::focus::Options,
    out: W,
    totals_only: bool,
) -> Result<(Summary, W), String> {
    let filter = RowFilter {
        from_ms: Some(from_ms),
        to_ms: Some(to_ms),
        ..Default::default()
    };
    let mut opts = opts;
    opts.pools =
        allocation_pools(store, &opts.allocations, from_ms, to_ms).map_err(|e| e.to_string())?;
    let mut exporter = if totals_only {
        Exporter::totals(opts, out)
    } else {
        Exporter::new(opts, out).map_err(|e| e.to_string())?
    };
    store
        .scan_rows(&filter, |row| exporter.push(&row))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    exporter.finish().map_err(|e| e.to_string())
}

fn unsupported(param: &str, msg: &str) -> crate::http::error::ErrorResponse {
    ApiError::new(ErrorCode::InvalidRequest, msg)
        .with_param(param)
        .into()
}

/// `YYYY-MM-DD` (or the full time when not midnight) for the file name.
fn day(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| {
            let s = t.strftime("%Y-%m-%dT%H%M%SZ").to_string();
            s.strip_suffix("T000000Z").map(str::to_string).unwrap_or(s)
        })
        .unwrap_or_else(|_| ms.to_string())
}

/// A `Write` that hands each buffer to the response body; fails once the client is gone.
struct Chunks(mpsc::Sender<Result<Bytes, std::io::Error>>);

impl Write for Chunks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
