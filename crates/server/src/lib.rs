//! The HTTP server: where a request enters and its row leaves.
//!
//! Life of a data-plane request (`POST /v1/chat/completions`):
//!
//! 1. [`record::PendingRow`] is opened: from here on, one ledger row is guaranteed — recorded
//!    explicitly on every exit, or by its `Drop` if the client vanishes mid-handler.
//! 2. authentication (virtual key → `StoredKey`) — `401 invalid_api_key`;
//! 3. body read under `server.max_body_bytes` (`413`) and validated by `tollgate-ingress`;
//! 4. attribution (`tollgate-attribution::resolve`);
//! 5. spend policies (`policy`), then model resolution and key permission (`404` / `403`) and
//!    the ranked candidates — deployments, then fallback models (`dispatch`, `tollgate-router`);
//! 6. rate limits (`ratelimit`) and the response cache (`cache`): a hit is answered here at zero
//!    cost, a miss may be stored at 8;
//! 7. the attempt loop (`dispatch::Attempts`): breaker check, pricing (fail-closed,
//!    `400 model_not_priced`), budget admission at that deployment's price (`budget`), the
//!    provider call (`tollgate-providers`); retryable failures move to the next candidate.
//!    Non-streaming calls run on a tracked task so a departing client cannot stop the bill
//!    from being recorded; streams are held until their first content (so they can still fail
//!    over), then wrapped in a [`tollgate_metering::MeteredStream`] and relayed chunk by chunk;
//! 8. settlement: cost from usage (`tollgate-pricing`), budget and rate-limit holds settled,
//!    the attempt reported to the deployment's breaker, row to the ledger (`tollgate-ledger`).
//!
//! Admin routes (`/admin/v1/…`) need the master key. `/healthz`, `/readyz` and `/metrics` are
//! open. Every error, including unknown routes and panics, is OpenAI-shaped.

mod admin;
mod budget;
mod cache;
mod chat;
mod dispatch;
mod embeddings;
mod error;
mod health;
mod messages;
mod metrics;
mod models;
mod pipeline;
mod policy;
mod ratelimit;
mod record;
mod relay;
mod routes;
mod state;

use std::future::Future;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tracing::{info, warn};

pub use admin::{parse_time, validate_new_key_models};
pub use budget::seed_from_ledger;
pub use error::ErrorResponse;
pub use state::{Gateway, GatewayParts, ServerSettings};

/// Serves until `shutdown` resolves, then drains: stops accepting, lets in-flight requests
/// (streams included) finish within `shutdown_grace`, waits for detached billing tasks, and
/// flushes the ledger. Requests still running when the grace period ends are cut; their rows
/// are recorded as cancelled.
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<ShutdownSummary> {
    let grace = gateway.settings().shutdown_grace;
    let draining = gateway.draining_token();
    let app = routes::app(gateway.clone());
    let poller = gateway.spawn_key_poller();
    let sweeper = gateway.spawn_reservation_sweeper();
    let alerts = gateway.spawn_alert_delivery();

    let drain_signal = draining.clone();
    // Without TCP_NODELAY, Nagle's algorithm holds small writes (one SSE chunk) until the
    // client's delayed ACK: tens of milliseconds of bunching on streams.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        info!("shutdown requested: draining in-flight requests");
        drain_signal.cancel();
    });

    let cut = tokio::select! {
        r = server => { r?; false }
        () = async { draining.cancelled().await; tokio::time::sleep(grace).await } => {
            warn!(grace_secs = grace.as_secs(), "grace period over: cutting remaining requests");
            // Dropping the `axum::serve` future does not stop the connections it spawned, so
            // running streams must be told to end; each then records its row.
            gateway.0.cut.cancel();
            true
        }
    };
    poller.abort();
    sweeper.abort();
    if let Some(a) = alerts {
        a.abort();
    }
    // Every pending row holds a token of this tracker (as do detached billing tasks), so this
    // waits until every request still in flight has recorded its row.
    let tasks = gateway.tasks();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .is_err()
    {
        warn!("in-flight requests did not finish in 5s; their rows go to the spill file");
    }
    let ledger = gateway.ledger().clone();
    drop(gateway);
    let report = tokio::task::spawn_blocking(move || ledger.shutdown())
        .await
        .map_err(std::io::Error::other)?
        .map_err(std::io::Error::other)?;
    info!(
        rows_written = report.rows_written,
        rows_spilled = report.rows_spilled,
        "ledger flushed"
    );
    Ok(ShutdownSummary {
        cut_in_flight: cut,
        rows_written: report.rows_written,
        rows_spilled: report.rows_spilled,
    })
}

/// What happened at shutdown.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownSummary {
    /// True when the grace period ended with requests still in flight.
    pub cut_in_flight: bool,
    pub rows_written: u64,
    pub rows_spilled: u64,
}
