//! `GET /ui/budgets`: every budget as `GET /admin/v1/budgets/{name}` shows it — limit, spent,
//! reserved, remaining, utilisation (bar and number), forecast, window — with the spend
//! policies that read it beside it (their ladder and level) and each policy's last
//! decisions (`GET /admin/v1/policies/decisions?policy=`).

use std::collections::HashMap;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use crate::admin::budgets::Budgets;
use crate::admin::definitions::Resource;
use crate::admin::policies::{Policies, decisions_value};
use crate::gateway::Gateway;
use crate::ui::chart::utilization;
use crate::ui::html::{self, Col, Nav, compact, esc, table, text, time, usd};
use crate::ui::range;
use crate::ui::session::Session;

/// Decisions shown per policy.
const LAST_DECISIONS: usize = 5;

pub(crate) async fn page(
    State(gw): State<Gateway>,
    Extension(session): Extension<Session>,
) -> Response {
    let chrome = session.chrome();
    match body(&gw) {
        Ok(body) => html::respond(
            StatusCode::OK,
            html::page("Budgets", Nav::Budgets, Some(&chrome), &body),
        ),
        Err(e) => {
            let (status, msg) = range::shown(&e);
            html::error_page(status, Some(&chrome), html::status_title(status), &msg)
        }
    }
}

fn body(gw: &Gateway) -> Result<String, tollgate_types::ApiError> {
    let mut names: Vec<String> = Budgets::all(gw).iter().map(|d| d.name.clone()).collect();
    names.sort();
    let policies: Vec<Value> = {
        let mut p: Vec<String> = Policies::all(gw).iter().map(|d| d.name.clone()).collect();
        p.sort();
        p.iter()
            .map(|n| Policies::view(gw, n))
            .collect::<Result<_, _>>()?
    };
    let mut h = String::new();
    if names.is_empty() {
        h.push_str("<p class=\"empty\">No budgets: define them under <code>budgets:</code> in the config or with <code>POST /admin/v1/budgets</code>.</p>");
    }
    for name in &names {
        let b = Budgets::view(gw, name)?;
        h.push_str(&format!(
            "<section class=\"card budget\" id=\"budget-{}\" data-budget=\"{}\"><h2>{} <span class=\"pill muted\">{}</span></h2><div class=\"columns\"><div>",
            esc(name),
            esc(name),
            esc(name),
            text(&b["mode"])
        ));
        h.push_str(&facts(&b));
        h.push_str("</div><div>");
        let mine: Vec<&Value> = policies
            .iter()
            .filter(|p| p["budget"].as_str() == Some(name.as_str()))
            .collect();
        if mine.is_empty() {
            h.push_str("<p class=\"empty\">No spend policy reads this budget.</p>");
        }
        for p in mine {
            h.push_str(&ladder(gw, p)?);
        }
        h.push_str("</div></div></section>");
    }
    Ok(h)
}

/// A budget's figures as a definition list (each figure named for tests: `data-figure`).
fn facts(b: &Value) -> String {
    let row = |label: &str, figure: &str, value: String| {
        format!(
            "<dt>{}</dt><dd data-figure=\"{figure}\">{value}</dd>",
            esc(label)
        )
    };
    let mut h = String::from("<dl class=\"facts\">");
    h.push_str(&row("Scope", "scope", esc(&compact(&b["scope"]))));
    h.push_str(&row("Limit", "limit", usd(&b["limit"])));
    h.push_str(&row("Spent", "spent", usd(&b["spent"])));
    h.push_str(&row("Reserved", "reserved", usd(&b["reserved"])));
    h.push_str(&row("Remaining", "remaining", usd(&b["remaining"])));
    h.push_str(&format!(
        "<dt>Utilisation</dt><dd>{}</dd>",
        utilization(b["utilization_pct"].as_str().unwrap_or("0"))
    ));
    h.push_str(&row(
        "Forecast at window end",
        "forecast",
        usd(&b["forecast_at_window_end"]),
    ));
    let tz = b["timezone"].as_str().unwrap_or("UTC");
    h.push_str(&row(
        "Window",
        "window",
        format!(
            "{} ({}) · {} → {}",
            text(&b["window"]),
            esc(tz),
            time(&b["window_start"]),
            time(&b["window_end"])
        ),
    ));
    h.push_str("</dl>");
    h
}

/// A policy's ladder (steps, the level in force) and its last decisions.
fn ladder(gw: &Gateway, p: &Value) -> Result<String, tollgate_types::ApiError> {
    let name = p["name"].as_str().unwrap_or("");
    let level = p["state"]["level"].as_u64().unwrap_or(0);
    let mut h = format!(
        "<h3>Policy {} <span class=\"pill muted\">{}</span></h3><p>Level in force: <strong data-figure=\"level\">{level}</strong> of {}</p><ol class=\"steps\">",
        esc(name),
        text(&p["mode"]),
        p["steps"].as_array().map_or(0, Vec::len)
    );
    for (i, step) in p["steps"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        let marker = if i as u64 + 1 == level {
            " <strong>(in force)</strong>"
        } else {
            ""
        };
        h.push_str(&format!(
            "<li>when {} → {}{marker}</li>",
            esc(&compact(&step["when"])),
            esc(&compact(&step["then"]))
        ));
    }
    h.push_str("</ol>");
    let q = HashMap::from([
        ("policy".to_string(), name.to_string()),
        ("limit".to_string(), LAST_DECISIONS.to_string()),
    ]);
    let d = decisions_value(gw, &q)?;
    let rows: Vec<Vec<String>> = d["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|e| {
            vec![
                e["at_ms"]
                    .as_i64()
                    .map_or_else(|| "—".into(), html::time_ms),
                format!("{} → {}", text(&e["from_level"]), text(&e["to_level"])),
                text(&e["reason"]),
            ]
        })
        .collect();
    h.push_str(&table(
        &format!("decisions-{name}"),
        &[
            Col("Time", false),
            Col("Level", false),
            Col("Reason", false),
        ],
        &rows,
        "No decisions yet.",
    ));
    Ok(h)
}
