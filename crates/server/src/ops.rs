//! Liveness, readiness and metrics (unauthenticated, except `/metrics` when
//! `server.metrics_auth` is set).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tollgate_types::{ApiError, ErrorCode};

use crate::gateway::Gateway;
use crate::http::error::ErrorResponse;
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

/// Ready to take traffic: not draining, and the ledger writer is alive. The body also says
/// how close the process is to its resource limits: connections and requests in flight
/// against `server.limits`, and open file descriptors against the (raised) limit.
pub(crate) async fn readyz(State(gw): State<Gateway>) -> Response {
    let (status, word) = if gw.0.draining.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if !gw.0.ledger.is_running() {
        (StatusCode::SERVICE_UNAVAILABLE, "ledger_unavailable")
    } else {
        (StatusCode::OK, "ready")
    };
    let limits = gw.settings().limits;
    // A directory listing of /proc: microseconds, but still file-system I/O, so off the
    // runtime's worker threads.
    let open_fds = tokio::task::spawn_blocking(open_fds).await.ok().flatten();
    let body = serde_json::json!({
        "status": word,
        "connections": {
            "open": gw.0.metrics.connections.open.load(std::sync::atomic::Ordering::Relaxed),
            "max": limits.max_connections,
        },
        "requests_in_flight": {
            "now": gw.0.metrics.in_flight_now(),
            "max": limits.max_in_flight,
        },
        "file_descriptors": {"open": open_fds, "limit": limits.fd_limit},
    });
    (status, [(header::CONTENT_TYPE, JSON)], body.to_string()).into_response()
}

/// Descriptors this process has open (Linux: entries of `/proc/self/fd`); `None` elsewhere.
fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(Iterator::count)
}

/// Prometheus text: request counters, deployments' health, the cache, the ledger writer.
/// With `server.metrics_auth` set, only for `Authorization: Bearer <that token>`.
pub(crate) async fn metrics(State(gw): State<Gateway>, headers: HeaderMap) -> Response {
    if let Some(token) = gw.settings().metrics_token.as_deref() {
        let presented = tollgate_attribution::keys::presented_key(&headers);
        if presented.is_empty() || !bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
            return ErrorResponse(ApiError::new(
                ErrorCode::InvalidApiKey,
                "/metrics needs the token set in server.metrics_auth (Authorization: Bearer …)",
            ))
            .into_response();
        }
    }
    let mut text = gw.0.metrics.render(&gw.0.ledger.stats());
    crate::metrics::render_deployments(&gw.0.router, &mut text);
    if let Some(t) = &gw.0.telemetry {
        crate::metrics::render_telemetry(&t.exporter.stats(), &mut text);
    }
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
