//! Liveness, readiness and metrics (unauthenticated).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Gateway;

/// The process is up.
pub async fn healthz() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
        .into_response()
}

/// Ready to take traffic: not draining, and the ledger writer is alive.
pub async fn readyz(State(gw): State<Gateway>) -> Response {
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
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub async fn metrics(State(gw): State<Gateway>) -> Response {
    let mut text = gw.0.metrics.render(&gw.0.ledger.stats());
    crate::metrics::render_deployments(&gw.0.router, &mut text);
    crate::cache::render_metrics(&gw, &mut text);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}
