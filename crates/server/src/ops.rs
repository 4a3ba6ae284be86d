//! Liveness, readiness and metrics (unauthenticated).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::gateway::Gateway;
use crate::http::headers::JSON;

/// The process is up.
pub(crate) async fn healthz() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, JSON)],
        r#"{"status":"ok"}"#,
    )
        .into_response()
}

/// Ready to take traffic: not draining, and the ledger writer is alive.
pub(crate) async fn readyz(State(gw): State<Gateway>) -> Response {
    let (status, body) = if gw.0.draining.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"draining"}"#)
    } else if !gw.0.ledger.is_running() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"ledger_unavailable"}"#,
        )
    } else {
        (StatusCode::OK, r#"{"status":"ready"}"#)
    };
    (status, [(header::CONTENT_TYPE, JSON)], body).into_response()
}

/// Prometheus text: request counters, deployments' health, the cache, the ledger writer.
pub(crate) async fn metrics(State(gw): State<Gateway>) -> Response {
    let mut text = gw.0.metrics.render(&gw.0.ledger.stats());
    crate::metrics::render_deployments(&gw.0.router, &mut text);
    if let Some(cache) = &gw.0.cache {
        crate::metrics::render_cache(cache, &mut text);
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}
