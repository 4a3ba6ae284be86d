//! `GET /ui/finance?from=&to=`: showback (`GET /admin/v1/showback`), margins
//! (`GET /admin/v1/margins`) and anomalies (`GET /admin/v1/anomalies`) over a range (the
//! month so far by default), and links to the FOCUS export; `GET /ui/finance/focus` streams
//! it through the admin API's own handler (`admin::finance::focus`).

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use crate::admin::finance::{anomalies_value, focus, margins_value, showback_value};
use crate::gateway::{Gateway, now_ms};
use crate::ui::html::{self, Col, Nav, compact, esc, message, query, table, text, time, usd};
use crate::ui::range::{self, DefaultRange, Range};
use crate::ui::session::Session;

pub(crate) async fn page(
    State(gw): State<Gateway>,
    Extension(session): Extension<Session>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let now = now_ms();
    let chrome = session.chrome();
    let r = Range::of(
        &q,
        DefaultRange::MonthToDate,
        gw.settings().max_report_range,
        now,
    );
    let mut body = range::form("/ui/finance", &r, &[], now);
    match sections(&gw, &r).await {
        Ok(s) => {
            body.push_str(&s);
            html::respond(
                StatusCode::OK,
                html::page("Finance", Nav::Finance, Some(&chrome), &body),
            )
        }
        Err(e) => {
            let (status, msg) = range::shown(&e);
            body.push_str(&message("error", &esc(&msg)));
            html::respond(
                status,
                html::page("Finance", Nav::Finance, Some(&chrome), &body),
            )
        }
    }
}

fn lines(v: &Value) -> &[Value] {
    v["data"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

async fn sections(gw: &Gateway, r: &Range) -> Result<String, tollgate_types::ApiError> {
    r.valid.clone()?;
    let q: HashMap<String, String> = r
        .pairs()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // Independent reads, on blocking threads at once.
    let (showback, margins, anomalies) = tokio::try_join!(
        showback_value(gw, &q),
        margins_value(gw, &q),
        anomalies_value(gw, &q)
    )?;
    let mut h = String::from("<h2>FOCUS export</h2><p class=\"downloads\">");
    for (label, version, dataset, format) in [
        ("FOCUS 1.2 CSV", "1.2", "cost", "csv"),
        ("FOCUS 1.0 CSV", "1.0", "cost", "csv"),
        ("FOCUS 1.2 Parquet", "1.2", "cost", "parquet"),
        ("Chargeback CSV", "1.2", "chargeback", "csv"),
    ] {
        let href = format!(
            "/ui/finance/focus{}",
            query(&[
                ("from", &r.from),
                ("to", &r.to),
                ("version", version),
                ("dataset", dataset),
                ("format", format),
            ])
        );
        h.push_str(&format!(
            "<a class=\"button\" href=\"{}\" download>{label}</a> ",
            esc(&href)
        ));
    }
    h.push_str("</p>");

    h.push_str("<h2>Showback</h2><p class=\"hint\">Direct spend plus each tenant's share of shared spend (the <code>allocations</code> rules).</p>");
    let mut rows: Vec<Vec<String>> = lines(&showback)
        .iter()
        .map(|l| {
            vec![
                text(&l["tenant"]),
                usd(&l["direct_usd"]),
                usd(&l["allocated_usd"]),
                usd(&l["total_usd"]),
            ]
        })
        .collect();
    if !rows.is_empty() {
        let t = &showback["total"];
        rows.push(vec![
            "<strong>Total</strong>".into(),
            usd(&t["direct_usd"]),
            usd(&t["allocated_usd"]),
            format!(
                "<strong data-figure=\"showback-total\">{}</strong>",
                usd(&t["total_usd"])
            ),
        ]);
    }
    h.push_str(&table(
        "showback",
        &[
            Col("Tenant", false),
            Col("Direct", true),
            Col("Allocated", true),
            Col("Total", true),
        ],
        &rows,
        "No spend in this range.",
    ));
    h.push_str(&format!(
        "<p>Ledger total over the range: <strong data-figure=\"ledger-total\">{}</strong></p>",
        usd(&showback["ledger_total_usd"])
    ));

    h.push_str("<h2>Margins</h2><p class=\"hint\">What each tenant is billed (its price list, else cost plus markup) against the upstream AI cost, and its configured revenue prorated over the range.</p>");
    let margin_row = |l: &Value, name: String| {
        vec![
            name,
            text(&l["requests"]),
            usd(&l["revenue_usd"]),
            usd(&l["ai_cost_usd"]),
            usd(&l["billed_usd"]),
            usd(&l["margin_usd"]),
            l["margin_pct"]
                .as_str()
                .map_or_else(|| "—".into(), |p| format!("{}%", esc(p))),
        ]
    };
    let mut rows: Vec<Vec<String>> = lines(&margins)
        .iter()
        .map(|l| margin_row(l, text(&l["tenant"])))
        .collect();
    if !rows.is_empty() {
        rows.push(margin_row(
            &margins["total"],
            "<strong>Total</strong>".into(),
        ));
    }
    h.push_str(&table(
        "margins",
        &[
            Col("Tenant", false),
            Col("Requests", true),
            Col("Revenue", true),
            Col("AI cost", true),
            Col("Billed", true),
            Col("Margin", true),
            Col("Margin %", true),
        ],
        &rows,
        "No spend in this range.",
    ));

    h.push_str("<h2>Anomalies</h2><p class=\"hint\">Hours whose spend in a watched scope is far above its seasonal baseline.</p>");
    let rows: Vec<Vec<String>> = lines(&anomalies)
        .iter()
        .map(|a| {
            vec![
                time(&a["hour"]),
                esc(&compact(&a["scope"])),
                usd(&a["actual_usd"]),
                usd(&a["expected_usd"]),
                text(&a["score"]),
                text(&a["status"]),
            ]
        })
        .collect();
    h.push_str(&table(
        "anomalies",
        &[
            Col("Hour (UTC)", false),
            Col("Scope", false),
            Col("Actual", true),
            Col("Expected", true),
            Col("Score", true),
            Col("Status", false),
        ],
        &rows,
        "No anomalies in this range.",
    ));
    Ok(h)
}

/// `GET /ui/finance/focus?from=&to=&version=&dataset=&format=`: the admin API's export
/// handler itself, so the file is the API's byte for byte; a refusal is a page.
pub(crate) async fn export(
    State(gw): State<Gateway>,
    Extension(session): Extension<Session>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    match focus(State(gw), Query(q)).await {
        Ok(resp) => resp,
        Err(e) => {
            let (status, msg) = range::shown(&e.0);
            html::error_page(
                status,
                Some(&session.chrome()),
                html::status_title(status),
                &msg,
            )
        }
    }
}
