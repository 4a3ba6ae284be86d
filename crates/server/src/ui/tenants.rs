//! `GET /ui/tenants?from=&to=`: per tenant, its spend and requests
//! (`GET /admin/v1/spend?group_by=tenant`), the budgets scoped to it with their utilisation,
//! and its top models and features (`group_by=tenant,model` and `tenant,feature`). The range
//! defaults to the month so far.

use std::collections::{BTreeMap, HashMap};

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use crate::admin::budgets::Budgets;
use crate::admin::definitions::Resource;
use crate::admin::reports::spend_report;
use crate::gateway::{Gateway, now_ms};
use crate::ui::chart::utilization;
use crate::ui::html::{self, Col, Nav, esc, message, query, table, text, usd};
use crate::ui::range::{self, DefaultRange, Range};
use crate::ui::session::Session;

/// Models and features listed per tenant.
const TOP: usize = 3;

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
    let mut body = range::form("/ui/tenants", &r, &[], now);
    let result = match &r.valid {
        Ok(_) => rows(&gw, &r).await,
        Err(e) => Err(e.clone()),
    };
    match result {
        Ok(rows) => {
            body.push_str(&table(
                "tenants",
                &[
                    Col("Tenant", false),
                    Col("Requests", true),
                    Col("Spend", true),
                    Col("Budgets", false),
                    Col("Top models", false),
                    Col("Top features", false),
                ],
                &rows,
                "No spend in this range.",
            ));
            html::respond(
                StatusCode::OK,
                html::page("Tenants", Nav::Tenants, Some(&chrome), &body),
            )
        }
        Err(e) => {
            let (status, msg) = range::shown(&e);
            body.push_str(&message("error", &esc(&msg)));
            html::respond(
                status,
                html::page("Tenants", Nav::Tenants, Some(&chrome), &body),
            )
        }
    }
}

async fn rows(gw: &Gateway, r: &Range) -> Result<Vec<Vec<String>>, tollgate_types::ApiError> {
    let report = |group_by: &str| {
        let mut q: HashMap<String, String> = r
            .pairs()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        q.insert("group_by".into(), group_by.to_string());
        q
    };
    // Independent reads, on blocking threads at once.
    let (tenants_q, models_q, features_q) = (
        report("tenant"),
        report("tenant,model"),
        report("tenant,feature"),
    );
    let (tenants, models, features) = tokio::try_join!(
        spend_report(gw, &tenants_q),
        spend_report(gw, &models_q),
        spend_report(gw, &features_q)
    )?;
    // Lines of a two-dimension report per tenant, most expensive first (the report's order).
    let by_tenant = |v: &Value, dim: &str| {
        let mut m: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
        for l in v["data"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            if let (Some(t), Some(d)) = (l["tenant"].as_str(), l[dim].as_str()) {
                m.entry(t.to_string())
                    .or_default()
                    .push((d.to_string(), l["cost_usd"].clone()));
            }
        }
        m
    };
    let models = by_tenant(&models, "model");
    let features = by_tenant(&features, "feature");
    let mut budget_names: Vec<String> = Budgets::all(gw).iter().map(|d| d.name.clone()).collect();
    budget_names.sort();
    let budgets: Vec<Value> = budget_names
        .iter()
        .map(|n| Budgets::view(gw, n))
        .collect::<Result<_, _>>()?;
    let top = |lines: Option<&Vec<(String, Value)>>| match lines {
        Some(l) if !l.is_empty() => {
            let items: Vec<String> = l
                .iter()
                .take(TOP)
                .map(|(name, cost)| format!("<li>{} {}</li>", esc(name), usd(cost)))
                .collect();
            format!("<ul>{}</ul>", items.join(""))
        }
        _ => "—".to_string(),
    };
    Ok(tenants["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|l| {
            let t = l["tenant"].as_str().unwrap_or("");
            let mine: Vec<String> = budgets
                .iter()
                .filter(|b| b["scope"]["tenant"].as_str() == Some(t))
                .map(|b| {
                    format!(
                        "<li><a href=\"/ui/budgets#budget-{}\">{}</a> {} ({})</li>",
                        esc(b["name"].as_str().unwrap_or("")),
                        text(&b["name"]),
                        utilization(b["utilization_pct"].as_str().unwrap_or("0")),
                        text(&b["mode"])
                    )
                })
                .collect();
            let budgets_cell = if mine.is_empty() {
                "none".to_string()
            } else {
                format!("<ul>{}</ul>", mine.join(""))
            };
            let link = format!(
                "/ui/requests{}",
                query(&[("tenant", t), ("from", &r.from), ("to", &r.to)])
            );
            vec![
                format!(
                    "<a href=\"{}\" data-tenant=\"{}\">{}</a>",
                    esc(&link),
                    esc(t),
                    esc(t)
                ),
                text(&l["requests"]),
                usd(&l["cost_usd"]),
                budgets_cell,
                top(models.get(t)),
                top(features.get(t)),
            ]
        })
        .collect())
}
