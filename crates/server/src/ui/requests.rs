//! `GET /ui/requests`: the ledger, newest first, with the filters and keyset pages of
//! `GET /admin/v1/requests` (same parameters, same validation, same cursor); and
//! `GET /ui/requests/{id}`: one row as `GET /admin/v1/requests/{id}` answers it.

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use crate::admin::reports::{request_row, requests_page};
use crate::gateway::Gateway;
use crate::ui::html::{self, Col, Nav, esc, message, query, table, text, usd};
use crate::ui::range;
use crate::ui::session::Session;

/// Rows per page unless `?limit=` says otherwise.
pub(crate) const PAGE_ROWS: usize = 50;

/// The text filters, in form order: (parameter, label).
const TEXT_FILTERS: [(&str, &str); 5] = [
    ("tenant", "Tenant"),
    ("feature", "Feature"),
    ("key_id", "Key id"),
    ("model", "Model"),
    ("provider", "Provider"),
];
const OUTCOMES: [&str; 4] = ["ok", "rejected", "failed", "cancelled"];
const CACHE: [&str; 4] = ["hit", "miss", "bypass", "none"];
/// Every parameter the page passes on to the API.
const PARAMS: [&str; 10] = [
    "tenant",
    "feature",
    "key_id",
    "model",
    "provider",
    "outcome",
    "cache_status",
    "from",
    "to",
    "limit",
];

pub(crate) async fn list(
    State(gw): State<Gateway>,
    Extension(session): Extension<Session>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let chrome = session.chrome();
    let get = |k: &str| param(&q, k);
    let mut api_q: HashMap<String, String> = PARAMS
        .iter()
        .filter(|k| !get(k).is_empty())
        .map(|k| (k.to_string(), get(k).to_string()))
        .collect();
    api_q
        .entry("limit".into())
        .or_insert_with(|| PAGE_ROWS.to_string());
    if !get("cursor").is_empty() {
        api_q.insert("cursor".into(), get("cursor").to_string());
    }
    let mut body = filters(&q);
    let page = match requests_page(&gw, &api_q).await {
        Ok(p) => p,
        Err(e) => {
            let (status, msg) = range::shown(&e);
            body.push_str(&message("error", &esc(&msg)));
            return html::respond(
                status,
                html::page("Requests", Nav::Requests, Some(&chrome), &body),
            );
        }
    };
    let rows: Vec<Vec<String>> = page["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(row)
        .collect();
    body.push_str(&table(
        "requests",
        &[
            Col("Time (UTC)", false),
            Col("Request", false),
            Col("Tenant", false),
            Col("Feature", false),
            Col("Key", false),
            Col("Model → served", false),
            Col("Provider", false),
            Col("Outcome", false),
            Col("Cache", false),
            Col("Tokens in / out", true),
            Col("Cost", true),
            Col("Latency", true),
        ],
        &rows,
        "No requests match these filters.",
    ));
    // Keyset pages: forward with the API's cursor, back to the first page.
    let keep: Vec<(&str, &str)> = PARAMS
        .iter()
        .filter(|k| **k != "limit" || !get("limit").is_empty())
        .map(|k| (*k, get(k)))
        .collect();
    body.push_str("<nav class=\"pager\" aria-label=\"Pages\">");
    if !get("cursor").is_empty() {
        body.push_str(&format!(
            "<a href=\"/ui/requests{}\" id=\"first-page\">← Newest</a>",
            esc(&query(&keep))
        ));
    }
    if let Some(next) = page["next_cursor"].as_str() {
        let mut pairs = keep.clone();
        pairs.push(("cursor", next));
        body.push_str(&format!(
            "<a href=\"/ui/requests{}\" id=\"next-page\">Older →</a>",
            esc(&query(&pairs))
        ));
    }
    body.push_str("</nav>");
    html::respond(
        StatusCode::OK,
        html::page("Requests", Nav::Requests, Some(&chrome), &body),
    )
}

/// A query parameter, trimmed (empty when absent).
fn param<'a>(q: &'a HashMap<String, String>, k: &str) -> &'a str {
    q.get(k).map_or("", |v| v.trim())
}

/// The filter form, showing what was asked (even a value the API refused).
fn filters(q: &HashMap<String, String>) -> String {
    let get = |k: &str| param(q, k);
    let mut h = String::from(
        "<form class=\"filters\" method=\"get\" action=\"/ui/requests\" id=\"filters\">",
    );
    for (k, label) in TEXT_FILTERS {
        h.push_str(&format!(
            "<label>{label} <input type=\"text\" name=\"{k}\" value=\"{}\"></label>",
            esc(get(k))
        ));
    }
    let select = |name: &str, label: &str, options: &[&str]| {
        let current = get(name);
        let mut s =
            format!("<label>{label} <select name=\"{name}\"><option value=\"\">any</option>");
        let mut known = current.is_empty();
        for o in options {
            let sel = if *o == current {
                known = true;
                " selected"
            } else {
                ""
            };
            s.push_str(&format!("<option value=\"{o}\"{sel}>{o}</option>"));
        }
        if !known {
            s.push_str(&format!(
                "<option value=\"{}\" selected>{}</option>",
                esc(current),
                esc(current)
            ));
        }
        s.push_str("</select></label>");
        s
    };
    h.push_str(&select("outcome", "Outcome", &OUTCOMES));
    h.push_str(&select("cache_status", "Cache", &CACHE));
    for (k, label) in [("from", "From"), ("to", "To")] {
        h.push_str(&format!(
            "<label>{label} <input type=\"text\" name=\"{k}\" value=\"{}\" placeholder=\"YYYY-MM-DD or RFC 3339\"></label>",
            esc(get(k))
        ));
    }
    if !get("limit").is_empty() {
        h.push_str(&format!(
            "<input type=\"hidden\" name=\"limit\" value=\"{}\">",
            esc(get("limit"))
        ));
    }
    h.push_str("<button type=\"submit\" id=\"apply-filters\">Filter</button> <a href=\"/ui/requests\">Clear</a></form>");
    h
}

fn outcome(r: &Value) -> String {
    let o = r["outcome"].as_str().unwrap_or("");
    let class = match o {
        "ok" => "ok",
        "rejected" => "warn",
        _ => "bad",
    };
    format!(
        "<span class=\"pill {class}\">{}</span> {}",
        esc(o),
        text(&r["status"])
    )
}

/// One ledger row of the list.
fn row(r: &Value) -> Vec<String> {
    let id = r["request_id"].as_str().unwrap_or("");
    let served = match (r["requested_model"].as_str(), r["served_model"].as_str()) {
        (Some(a), Some(b)) if a != b => format!("{} → {}", esc(a), esc(b)),
        (Some(a), _) => esc(a),
        (None, Some(b)) => format!("— → {}", esc(b)),
        (None, None) => "—".to_string(),
    };
    // The id's last 12 characters (its random part) are enough to tell rows apart; the link
    // and its title carry the whole id.
    let short: String = id
        .chars()
        .skip(id.chars().count().saturating_sub(12))
        .collect();
    vec![
        format!(
            "<span class=\"nowrap\">{}</span>",
            r["started_at_ms"]
                .as_i64()
                .map_or_else(|| "—".into(), html::time_ms)
        ),
        format!(
            "<a class=\"mono\" href=\"/ui/requests/{}\" title=\"{}\">…{}</a>",
            html::url_encode(id),
            esc(id),
            esc(&short)
        ),
        text(&r["tenant"]),
        text(&r["feature"]),
        text(&r["key_name"]),
        served,
        text(&r["provider"]),
        outcome(r),
        text(&r["cache_status"]),
        format!(
            "{} / {}",
            text(&r["input_tokens"]),
            text(&r["output_tokens"])
        ),
        usd(&r["effective_cost"]),
        micros(&r["latency_us"]),
    ]
}

/// Microseconds from the ledger as milliseconds with three decimals.
fn micros(v: &Value) -> String {
    match v.as_u64() {
        Some(us) => format!("{}.{:03} ms", us / 1000, us % 1000),
        None => "—".to_string(),
    }
}

/// `GET /ui/requests/{id}`.
pub(crate) async fn one(
    State(gw): State<Gateway>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let chrome = session.chrome();
    let r = match request_row(&gw, &id).await {
        Ok(r) => r,
        Err(e) => {
            let (status, msg) = range::shown(&e);
            return html::error_page(status, Some(&chrome), html::status_title(status), &msg);
        }
    };
    let fact = |label: &str, field: &str, value: String| {
        format!(
            "<dt>{}</dt><dd data-field=\"{field}\">{value}</dd>",
            esc(label)
        )
    };
    let f = |field: &str| text(&r[field]);
    let mut h =
        String::from("<p><a href=\"/ui/requests\">← All requests</a></p><div class=\"columns\">");
    h.push_str("<section class=\"card\"><h2>Request</h2><dl class=\"facts\">");
    h.push_str(&fact(
        "Request id",
        "request_id",
        format!("<span class=\"mono\">{}</span>", f("request_id")),
    ));
    h.push_str(&fact(
        "Started (UTC)",
        "started_at_ms",
        r["started_at_ms"]
            .as_i64()
            .map_or_else(|| "—".into(), html::time_ms),
    ));
    h.push_str(&fact("Endpoint", "endpoint", f("endpoint")));
    h.push_str(&fact("Stream", "stream", f("stream")));
    h.push_str(&fact("Outcome", "outcome", outcome(&r)));
    h.push_str(&fact("Error code", "error_code", f("error_code")));
    h.push_str(&fact("Error origin", "error_origin", f("error_origin")));
    h.push_str(&fact("Latency", "latency_us", micros(&r["latency_us"])));
    h.push_str(&fact(
        "Time to first byte",
        "ttft_us",
        micros(&r["ttft_us"]),
    ));
    h.push_str("</dl></section><section class=\"card\"><h2>Attribution</h2><dl class=\"facts\">");
    h.push_str(&fact("Tenant", "tenant", f("tenant")));
    h.push_str(&fact("Feature", "feature", f("feature")));
    h.push_str(&fact("Team", "team", f("team")));
    h.push_str(&fact("User", "user", f("user")));
    h.push_str(&fact(
        "Key",
        "key_name",
        if r["key_id"].is_null() {
            "— (no key resolved)".to_string()
        } else {
            format!(
                "{} <span class=\"mono\">{}</span>",
                f("key_name"),
                f("key_id")
            )
        },
    ));
    let tags = match r["tags"].as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("<span class=\"pill muted\">{}={}</span>", esc(k), text(v)))
            .collect::<Vec<_>>()
            .join(" "),
        _ => "—".to_string(),
    };
    h.push_str(&fact("Tags", "tags", tags));
    h.push_str("</dl></section><section class=\"card\"><h2>Routing</h2><dl class=\"facts\">");
    h.push_str(&fact(
        "Requested model",
        "requested_model",
        f("requested_model"),
    ));
    h.push_str(&fact("Served model", "served_model", f("served_model")));
    h.push_str(&fact("Provider", "provider", f("provider")));
    h.push_str(&fact("Deployment", "deployment", f("deployment")));
    h.push_str(&fact("Attempts", "attempts", f("attempts")));
    let tried = r["attempted"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map_or_else(
            || "—".to_string(),
            |s| {
                let items: Vec<String> = s
                    .split(',')
                    .map(|d| format!("<li>{}</li>", esc(d)))
                    .collect();
                format!("<ol>{}</ol>", items.join(""))
            },
        );
    h.push_str(&fact("Deployments tried", "attempted", tried));
    h.push_str(&fact(
        "Policy actions",
        "policy_actions",
        match r["policy_actions"].as_str() {
            Some("") | None => "none".to_string(),
            Some(a) => esc(a),
        },
    ));
    h.push_str(&fact("Cache", "cache_status", f("cache_status")));
    h.push_str(
        "</dl></section><section class=\"card\"><h2>Tokens and cost</h2><dl class=\"facts\">",
    );
    h.push_str(&fact("Input tokens", "input_tokens", f("input_tokens")));
    h.push_str(&fact(
        "of which cached",
        "cached_input_tokens",
        f("cached_input_tokens"),
    ));
    h.push_str(&fact(
        "of which cache writes",
        "cache_write_input_tokens",
        f("cache_write_input_tokens"),
    ));
    h.push_str(&fact("Output tokens", "output_tokens", f("output_tokens")));
    h.push_str(&fact(
        "of which reasoning",
        "reasoning_tokens",
        f("reasoning_tokens"),
    ));
    h.push_str(&fact("Usage from", "usage_source", f("usage_source")));
    h.push_str(&fact("List cost", "list_cost", usd(&r["list_cost"])));
    h.push_str(&fact("Cost", "effective_cost", usd(&r["effective_cost"])));
    h.push_str(&fact(
        "Saved by the cache",
        "saved_cost",
        usd(&r["saved_cost"]),
    ));
    h.push_str(&fact("Price table", "price_version", f("price_version")));
    h.push_str(&fact("Unpriced", "unpriced", f("unpriced")));
    if let Some(p) = r["unit_prices"].as_object() {
        let per = |k: &str| usd(p.get(k).unwrap_or(&Value::Null));
        h.push_str(&fact(
            "Unit prices per 1M tokens",
            "unit_prices",
            format!(
                "input {} · cached {} · cache write {} · output {}",
                per("input"),
                per("cached_input"),
                per("cache_write"),
                per("output")
            ),
        ));
    }
    h.push_str("</dl></section></div>");
    let title = format!("Request {id}");
    html::respond(
        StatusCode::OK,
        html::page(&title, Nav::Requests, Some(&chrome), &h),
    )
}
