//! The HTTP server: where a request enters and its row leaves.
//!
//! The module tree is the architecture; each layer uses only the ones above it in this list
//! (`tests/module_graph.rs` keeps the graph acyclic):
//!
//! - [`gateway`], `metrics` — the shared state built at start-up, and the counters;
//! - `http` — plumbing every layer shares: error shapes, headers, body reading, SSE;
//! - `stages` — one file per stage of a data-plane request (authenticate, attribute, spend
//!   policies, target, rate limits, cache, budget admission);
//! - `exchange` — runs the stages in order for any endpoint (the numbered list of stages is
//!   its module doc), owns the attempt loop, the provider call, metering and the one ledger
//!   row of every request;
//! - `endpoints` — the data-plane endpoints, each only its wire format;
//! - `admin` — the admin API: one guard, one list shape, one delete shape;
//! - `ui` — the dashboard at `/ui/`: sessions, sign-in, HTML pages rendered from the admin
//!   API's own value functions;
//! - `ops` (health, readiness, metrics), `background` (loops `serve` runs), `routes` (the
//!   route table), `listener` (accepting connections under `server.limits`), and [`serve`]
//!   itself.
//!
//! Admin routes (`/admin/v1/…`) need the master key or an admin token; dashboard pages
//! (`/ui/…`) a session opened with either. `/healthz`, `/readyz` and `/metrics` are open. Every error, including unknown routes and panics, is OpenAI-shaped (Anthropic-shaped
//! on `/v1/messages`).

mod admin;
mod background;
mod endpoints;
mod exchange;
mod gateway;
mod http;
mod listener;
mod metrics;
mod ops;
mod routes;
mod stages;
mod ui;

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

pub use admin::{allocation_pools, key_view, parse_time, rotation_grace, validate_new_key_models};
pub use gateway::{
    Adapter, AnomalyWatch, Deployment, Gateway, GatewayParts, Limits, LogicalModel, Router,
    ServerSettings, Telemetry,
};
pub use stages::budget::seed_from_ledger;
pub use stages::policy::seed_burn_from_ledger;

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
    let draining = gateway.0.draining.clone();
    let app = routes::app(gateway.clone());
    let poller = background::store_poller(&gateway);
    let sweeper = background::reservation_sweeper(&gateway);
    let alerts = background::alert_delivery(&gateway);
    let anomalies = background::anomaly_watch(&gateway);
    let exporter = background::telemetry_exporter(&gateway);

    let drain_signal = draining.clone();
    #[expect(
        clippy::disallowed_methods,
        reason = "waits for the shutdown signal only; records nothing"
    )]
    tokio::spawn(async move {
        shutdown.await;
        info!("shutdown requested: draining in-flight requests");
        drain_signal.cancel();
    });
    let server = listener::run(listener, app, gateway.clone(), draining.clone());

    let cut = tokio::select! {
        r = server => { r?; false }
        () = async { draining.cancelled().await; tokio::time::sleep(grace).await } => {
            warn!(grace_secs = grace.as_secs(), "grace period over: cutting remaining requests");
            // Dropping the listener future does not stop the connection tasks it spawned, so
            // running streams must be told to end; each then records its row.
            gateway.0.cut.cancel();
            true
        }
    };
    poller.abort();
    sweeper.abort();
    anomalies.abort();
    if let Some(a) = alerts {
        a.abort();
    }
    // Every pending row holds a token of this tracker (as do detached billing tasks), so this
    // waits until every request still in flight has recorded its row.
    let tasks = gateway.0.tasks.clone();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .is_err()
    {
        warn!("in-flight requests did not finish in 5s; their rows go to the spill file");
    }
    // Every finished request has queued its span: flush them and the last metrics.
    if let Some((handle, stop)) = exporter {
        stop.cancel();
        if tokio::time::timeout(Duration::from_secs(15), handle)
            .await
            .is_err()
        {
            warn!("the OpenTelemetry exporter did not flush within 15 s");
        }
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
