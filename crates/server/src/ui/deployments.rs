//! `GET /ui/deployments`: every deployment with its live health as
//! `GET /admin/v1/deployments` reports it — breaker state, requests in flight, TTFT and
//! latency EWMAs, failures and the windowed error rate — and its model's routing.

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use crate::admin::deployments::list_value;
use crate::admin::list::MAX_LIMIT;
use crate::gateway::Gateway;
use crate::ui::html::{self, Col, Nav, esc, millis, percent, query, table, text};
use crate::ui::range;
use crate::ui::session::Session;

pub(crate) async fn page(
    State(gw): State<Gateway>,
    Extension(session): Extension<Session>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let chrome = session.chrome();
    let mut api_q = HashMap::from([("limit".to_string(), MAX_LIMIT.to_string())]);
    if let Some(c) = q.get("cursor").filter(|c| !c.is_empty()) {
        api_q.insert("cursor".into(), c.clone());
    }
    let list = match list_value(&gw, &api_q) {
        Ok(v) => v,
        Err(e) => {
            let (status, msg) = range::shown(&e);
            return html::error_page(status, Some(&chrome), html::status_title(status), &msg);
        }
    };
    let rows: Vec<Vec<String>> = list["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(row)
        .collect();
    let mut body = String::from(
        "<p class=\"hint\">Live, in this process: EWMAs (α 0.3) of time to first byte and total latency per upstream attempt; the error rate is the breaker's window.</p>",
    );
    body.push_str(&table(
        "deployments",
        &[
            Col("Model", false),
            Col("Deployment", false),
            Col("Provider", false),
            Col("Weight", true),
            Col("Strategy", false),
            Col("Breaker", false),
            Col("In flight", true),
            Col("TTFT EWMA", true),
            Col("Latency EWMA", true),
            Col("Attempts", true),
            Col("Failures", true),
            Col("Error rate (window)", true),
            Col("Opened", true),
        ],
        &rows,
        "No deployments configured.",
    ));
    if let Some(next) = list["next_cursor"].as_str() {
        body.push_str(&format!(
            "<nav class=\"pager\"><a href=\"/ui/deployments{}\">More →</a></nav>",
            esc(&query(&[("cursor", next)]))
        ));
    }
    html::respond(
        StatusCode::OK,
        html::page("Deployments", Nav::Deployments, Some(&chrome), &body),
    )
}

fn row(d: &Value) -> Vec<String> {
    let h = &d["health"];
    let state = h["state"].as_str().unwrap_or("");
    let class = match state {
        "closed" => "ok",
        "half_open" => "warn",
        _ => "bad",
    };
    let retry = h["retry_in_ms"]
        .as_u64()
        .map(|ms| format!(" (probe in {} s)", ms.div_ceil(1000)))
        .unwrap_or_default();
    vec![
        text(&d["model"]),
        format!(
            "{} <span class=\"hint\">{}</span>",
            text(&d["deployment"]),
            text(&d["upstream_model"])
        ),
        text(&d["provider"]),
        text(&d["weight"]),
        text(&d["strategy"]),
        format!(
            "<span class=\"pill {class}\" data-figure=\"breaker\">{}</span>{retry}",
            esc(&state.replace('_', "-"))
        ),
        text(&h["in_flight"]),
        millis(&h["ewma_ttft_ms"]),
        millis(&h["ewma_latency_ms"]),
        text(&h["requests"]),
        text(&h["failures"]),
        percent(&h["window_error_rate"]),
        text(&h["opened_total"]),
    ]
}
