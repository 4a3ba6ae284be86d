//! The gateway's background loops, started by [`crate::serve`] and aborted by it at shutdown:
//! the store poller (keys, admin tokens and ledger imports), the reservation sweeper, the anomaly watch and
//! alert delivery. None of them is on the request path; all run on the gateway's task tracker.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tollgate_policy::rules::Alert;

use crate::gateway::{Gateway, now_ms};

const ALERT_ATTEMPTS: u32 = 4;

/// Releases reservations whose request died without settling, once a second; every ten
/// seconds also drops idle rate-limit counters.
pub(crate) fn reservation_sweeper(gw: &Gateway) -> JoinHandle<()> {
    let g = gw.clone();
    gw.0.tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            tick.tick().await;
            ticks += 1;
            if ticks.is_multiple_of(10) {
                // Rate-limit counters of keys/users gone quiet for a minute.
                g.0.rate_limits.sweep(now_ms());
            }
            let expired = g.0.budgets.expire(now_ms());
            if expired > 0 {
                tracing::warn!(
                    expired,
                    "released budget reservations of requests that never settled"
                );
            }
        }
    })
}

/// Publishes the open spend anomalies (found in this hour or the last) to the policy engine
/// every `anomalies.check_every_secs`, while some policy has an `anomaly` step. Off the
/// request path: the request path only reads the published set.
pub(crate) fn anomaly_watch(gw: &Gateway) -> JoinHandle<()> {
    let g = gw.clone();
    gw.0.tasks.spawn(async move {
        let mut tick = tokio::time::interval(g.0.anomalies.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !g.0.policies.uses_anomalies() {
                continue;
            }
            let now = now_ms();
            let hour = tollgate_finance::HOUR_MS;
            let from = now.div_euclid(hour) * hour - hour;
            match crate::admin::finance::find_anomalies(&g, from, now + 1).await {
                Ok(found) => {
                    let mut open: Vec<_> = found.into_iter().map(|(_, labels, _)| labels).collect();
                    open.sort();
                    open.dedup();
                    g.0.policies.set_open_anomalies(open);
                }
                Err(e) => {
                    tracing::warn!(error = %e.message, "anomaly watch: reading the ledger failed")
                }
            }
        }
    })
}

/// Polls the store for what other processes (the CLI, another gateway on the same database)
/// changed: the key and admin-token versions, so key and token changes and revocations reach
/// this process, and the import counter, so spend loaded by `tollgate ledger import` reaches
/// the budgets without a restart.
pub(crate) fn store_poller(gw: &Gateway) -> JoinHandle<()> {
    let g = gw.clone();
    gw.0.tasks.spawn(async move {
        let mut tick = tokio::time::interval(g.0.settings.key_poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The start-up seed counted every import made before it; one made between that seed
        // and the first poll is caught by re-seeding once when any import exists.
        let mut imports: Option<i64> = None;
        loop {
            tick.tick().await;
            let g2 = g.clone();
            let seen = imports;
            let res = tokio::task::spawn_blocking(move || {
                g2.0.keys
                    .refresh_if_changed(&g2.0.store, now_ms())
                    .map_err(|e| format!("key index refresh failed: {e}"))?;
                g2.0.admin_tokens
                    .refresh_if_changed(&g2.0.store, now_ms())
                    .map_err(|e| format!("admin token index refresh failed: {e}"))?;
                let version = g2.0.store.imports_version().map_err(|e| e.to_string())?;
                if version != seen.unwrap_or(0) {
                    let n = crate::stages::budget::reseed_after_import(
                        &g2.0.budgets,
                        &g2.0.store,
                        now_ms(),
                    )?;
                    tracing::info!(budgets = n, "ledger import seen: budgets re-seeded");
                }
                Ok::<i64, String>(version)
            })
            .await;
            match res {
                Ok(Ok(version)) => imports = Some(version),
                Ok(Err(e)) => tracing::warn!(error = %e, "store poll failed"),
                Err(e) => tracing::warn!(error = %e, "store poll task failed"),
            }
        }
    })
}

/// Starts alert delivery (once: the receiver is taken).
pub(crate) fn alert_delivery(gw: &Gateway) -> Option<JoinHandle<()>> {
    let rx = gw.0.alert_rx.lock().ok()?.take()?;
    Some(gw.0.tasks.spawn(deliver_alerts(rx)))
}

/// Delivers alerts: POST the JSON payload to the webhook, retrying with exponential backoff.
async fn deliver_alerts(mut rx: mpsc::Receiver<Alert>) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "alert delivery disabled: no HTTP client");
            return;
        }
    };
    while let Some(alert) = rx.recv().await {
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=ALERT_ATTEMPTS {
            let sent = client
                .post(&alert.webhook)
                .json(&alert.payload)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => {
                    tracing::warn!(policy = %alert.policy, status = r.status().as_u16(), attempt, "alert webhook refused")
                }
                Err(e) => {
                    tracing::warn!(policy = %alert.policy, error = %e, attempt, "alert webhook unreachable")
                }
            }
            if attempt < ALERT_ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

/// The OpenTelemetry exporter, when `telemetry` is on: runs until `stop`, then flushes what is
/// queued. Not on the task tracker: `serve` stops it only after every request has recorded its
/// row (and so queued its span), then waits for the last flush.
pub(crate) fn telemetry_exporter(
    gw: &Gateway,
) -> Option<(JoinHandle<()>, tokio_util::sync::CancellationToken)> {
    let t = gw.0.telemetry.as_ref()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let client = reqwest::Client::new();
    #[expect(
        clippy::disallowed_methods,
        reason = "awaited by serve after the tracker drained; it records no rows"
    )]
    let handle = tokio::spawn(t.exporter.clone().run(client, stop.clone()));
    Some((handle, stop))
}
