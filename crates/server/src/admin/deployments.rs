//! `GET /admin/v1/deployments`: every deployment of every logical model with its live health
//! — breaker state, requests in flight, latency EWMAs, failure counts — and its model's
//! routing (strategy, fallbacks, stickiness table).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use tollgate_types::ApiError;

use crate::admin::list::{self, PageQuery};
use crate::admin::{AdminResult, to_json};
use crate::gateway::Gateway;

/// By model, then deployment label.
pub(crate) async fn list(
    State(gw): State<Gateway>,
    Query(q): Query<HashMap<String, String>>,
) -> AdminResult {
    Ok(Json(list_value(&gw, &q)?).into_response())
}

/// The answer of `GET /admin/v1/deployments` for the query parameters `q` (the dashboard's
/// deployments page renders it).
pub(crate) fn list_value(gw: &Gateway, q: &HashMap<String, String>) -> Result<Value, ApiError> {
    let page = PageQuery::from_query(q)?;
    let now = std::time::Instant::now();
    let router = &gw.0.router;
    let mut items = Vec::new();
    for name in router.names() {
        let Some(m) = router.get(name) else { continue };
        let st = m.sticky_stats();
        let routing = json!({
            "strategy": m.strategy.as_str(),
            "fallbacks": m.fallbacks,
            "context_window_fallback": m.context_window_fallback,
            "sticky": {"entries": st.entries, "hits": st.hits, "moves": st.moves},
        });
        for d in &m.deployments {
            items.push((name.to_string(), d, routing.clone()));
        }
    }
    // A NUL cannot appear in a name, so the order is by model first.
    let (items, next) = list::page(items, |(m, d, _)| format!("{m}\0{}", d.label), &page)?;
    let data = items
        .into_iter()
        .map(|(model, d, routing)| {
            Ok(json!({
                "model": model,
                "deployment": d.label,
                "provider": d.provider_name,
                "upstream_model": d.model,
                "weight": d.weight,
                "strategy": routing["strategy"],
                "routing": routing,
                "health": to_json("deployment health", &d.health.snapshot(now))?,
            }))
        })
        .collect::<Result<Vec<Value>, ApiError>>()?;
    Ok(list::body(data, next))
}
