//! `GET /ui/policies?policy=&cursor=`: the spend policies (definition and level, as
//! `GET /admin/v1/policies/{name}` shows them) and the decision log, newest first, paged by
//! the cursor of `GET /admin/v1/policies/decisions`.

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use crate::admin::definitions::Resource;
use crate::admin::policies::{Policies, decisions_value};
use crate::gateway::Gateway;
use crate::ui::html::{self, Col, Nav, compact, esc, message, query, table, text};
use crate::ui::range;
use crate::ui::session::Session;

/// Decisions per page.
const PAGE_ROWS: usize = 50;

pub(crate) async fn page(
    State(gw): State<Gateway>,
    Extension(session): Extension<Session>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let chrome = session.chrome();
    let policy = q.get("policy").map(|p| p.trim()).unwrap_or("");
    let cursor = q.get("cursor").map(|c| c.trim()).unwrap_or("");
    let mut names: Vec<String> = Policies::all(&gw).iter().map(|d| d.name.clone()).collect();
    names.sort();
    let mut body = String::new();
    let mut rows = Vec::new();
    for n in &names {
        let p = match Policies::view(&gw, n) {
            Ok(p) => p,
            Err(e) => {
                let (status, msg) = range::shown(&e);
                return html::error_page(status, Some(&chrome), html::status_title(status), &msg);
            }
        };
        let steps: Vec<String> = p["steps"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .map(|s| {
                format!(
                    "<li>when {} → {}</li>",
                    esc(&compact(&s["when"])),
                    esc(&compact(&s["then"]))
                )
            })
            .collect();
        rows.push(vec![
            format!(
                "<a href=\"/ui/policies{}\">{}</a>",
                esc(&query(&[("policy", n)])),
                esc(n)
            ),
            text(&p["mode"]),
            esc(&compact(&p["scope"])),
            text(&p["budget"]),
            format!(
                "<span data-figure=\"level\">{}</span> of {}",
                p["state"]["level"].as_u64().unwrap_or(0),
                steps.len()
            ),
            format!("<ol>{}</ol>", steps.join("")),
        ]);
    }
    body.push_str("<h2>Policies</h2>");
    body.push_str(&table(
        "policies",
        &[
            Col("Policy", false),
            Col("Mode", false),
            Col("Scope", false),
            Col("Budget", false),
            Col("Level", false),
            Col("Ladder", false),
        ],
        &rows,
        "No spend policies: define them under policies: in the config or with POST /admin/v1/policies.",
    ));

    body.push_str("<h2>Decision log</h2>");
    let mut api_q = HashMap::from([("limit".to_string(), PAGE_ROWS.to_string())]);
    if !policy.is_empty() {
        api_q.insert("policy".into(), policy.to_string());
        body.push_str(&format!(
            "<p>Decisions of <strong>{}</strong> · <a href=\"/ui/policies\">all policies</a></p>",
            esc(policy)
        ));
    }
    if !cursor.is_empty() {
        api_q.insert("cursor".into(), cursor.to_string());
    }
    let log = match decisions_value(&gw, &api_q) {
        Ok(v) => v,
        Err(e) => {
            let (status, msg) = range::shown(&e);
            body.push_str(&message("error", &esc(&msg)));
            return html::respond(
                status,
                html::page("Policies", Nav::Policies, Some(&chrome), &body),
            );
        }
    };
    let rows: Vec<Vec<String>> = log["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(decision)
        .collect();
    body.push_str(&table(
        "decisions",
        &[
            Col("Time (UTC)", false),
            Col("Policy", false),
            Col("Instance", false),
            Col("Kind", false),
            Col("Level", false),
            Col("Reason", false),
            Col("Actions (requests applied to)", false),
        ],
        &rows,
        "No decisions yet.",
    ));
    body.push_str("<nav class=\"pager\">");
    if !cursor.is_empty() {
        body.push_str(&format!(
            "<a href=\"/ui/policies{}\">← Newest</a>",
            esc(&query(&[("policy", policy)]))
        ));
    }
    if let Some(next) = log["next_cursor"].as_str() {
        body.push_str(&format!(
            "<a href=\"/ui/policies{}\" id=\"next-page\">Older →</a>",
            esc(&query(&[("policy", policy), ("cursor", next)]))
        ));
    }
    body.push_str("</nav>");
    html::respond(
        StatusCode::OK,
        html::page("Policies", Nav::Policies, Some(&chrome), &body),
    )
}

fn decision(e: &Value) -> Vec<String> {
    let shadow = if e["shadow"].as_bool() == Some(true) {
        " <span class=\"pill muted\">shadow</span>"
    } else {
        ""
    };
    let actions: Vec<String> = e["actions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|a| {
            format!(
                "<li>step {}: {} ×{}</li>",
                text(&a["step"]),
                esc(&compact(&a["action"])),
                text(&a["applied"])
            )
        })
        .collect();
    vec![
        e["at_ms"]
            .as_i64()
            .map_or_else(|| "—".into(), html::time_ms),
        text(&e["policy"]),
        text(&e["instance"]),
        format!("{}{shadow}", text(&e["kind"])),
        format!("{} → {}", text(&e["from_level"]), text(&e["to_level"])),
        text(&e["reason"]),
        if actions.is_empty() {
            "—".to_string()
        } else {
            format!("<ul>{}</ul>", actions.join(""))
        },
    ]
}
