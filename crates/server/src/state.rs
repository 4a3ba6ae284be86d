//! The gateway's shared state, built once at start-up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollgate_attribution::KeyIndex;
use tollgate_ledger::Ledger;
use tollgate_pricing::PriceTable;
use tollgate_router::Router;
use tollgate_store::Store;

use crate::metrics::Metrics;

/// Server knobs (from `server:` in config).
#[derive(Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Bearer token for `/admin/v1/…`; `None` disables the admin API.
    pub master_key: Option<String>,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    /// How often the key index checks the store for out-of-process changes.
    pub key_poll_interval: Duration,
}

impl std::fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSettings")
            .field("listen", &self.listen)
            .field("master_key", &self.master_key.as_ref().map(|_| "********"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("shutdown_grace", &self.shutdown_grace)
            .finish()
    }
}

/// Everything the gateway is assembled from.
pub struct GatewayParts {
    pub settings: ServerSettings,
    pub router: Router,
    pub prices: PriceTable,
    pub store: Store,
    pub ledger: Ledger,
    /// Provider credentials, scrubbed from any provider text relayed to clients.
    pub secrets: Vec<String>,
    /// The budget engine, definitions installed and counters seeded from the ledger.
    pub budgets: Arc<tollgate_policy::Budgets>,
    /// Spend policies, definitions installed.
    pub policies: Arc<tollgate_policy::rules::Policies>,
    /// Rate limits (`rate_limits`), rules installed; `RateLimits::disabled()` for none.
    pub rate_limits: Arc<tollgate_policy::RateLimits>,
    /// The response cache; `None` when no model has caching on.
    pub cache: Option<Arc<tollgate_cache::ResponseCache>>,
}

pub(crate) struct Inner {
    pub settings: ServerSettings,
    pub router: Router,
    pub prices: PriceTable,
    pub keys: KeyIndex,
    pub store: Store,
    pub ledger: Ledger,
    pub secrets: Arc<[String]>,
    pub budgets: Arc<tollgate_policy::Budgets>,
    pub policies: Arc<tollgate_policy::rules::Policies>,
    pub rate_limits: Arc<tollgate_policy::RateLimits>,
    pub cache: Option<Arc<tollgate_cache::ResponseCache>>,
    pub alerts: tokio::sync::mpsc::Sender<tollgate_policy::rules::Alert>,
    pub alert_rx:
        std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<tollgate_policy::rules::Alert>>>,
    pub metrics: Metrics,
    pub tasks: TaskTracker,
    pub draining: CancellationToken,
    /// Cancelled when the shutdown grace period is over: streams still running end at once
    /// (see `chat::CutOnShutdown`) so their rows are recorded before the ledger closes.
    pub cut: CancellationToken,
}

/// Cheap-to-clone handle on the gateway state.
#[derive(Clone)]
pub struct Gateway(pub(crate) Arc<Inner>);

impl Gateway {
    /// Assembles the gateway; loads the key index from the store.
    pub fn new(parts: GatewayParts) -> Result<Gateway, tollgate_store::StoreError> {
        let keys = KeyIndex::load(&parts.store, now_ms())?;
        let (alerts, alert_rx) = crate::policy::alert_channel();
        Ok(Gateway(Arc::new(Inner {
            settings: parts.settings,
            router: parts.router,
            prices: parts.prices,
            keys,
            store: parts.store,
            ledger: parts.ledger,
            secrets: Arc::from(parts.secrets),
            budgets: parts.budgets,
            policies: parts.policies,
            rate_limits: parts.rate_limits,
            cache: parts.cache,
            alerts,
            alert_rx: std::sync::Mutex::new(Some(alert_rx)),
            metrics: Metrics::default(),
            tasks: TaskTracker::new(),
            draining: CancellationToken::new(),
            cut: CancellationToken::new(),
        })))
    }

    pub fn settings(&self) -> &ServerSettings {
        &self.0.settings
    }

    pub fn ledger(&self) -> &Ledger {
        &self.0.ledger
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    pub fn budgets(&self) -> &Arc<tollgate_policy::Budgets> {
        &self.0.budgets
    }

    pub fn policies(&self) -> &Arc<tollgate_policy::rules::Policies> {
        &self.0.policies
    }

    /// Starts the alert delivery task (once).
    pub(crate) fn spawn_alert_delivery(&self) -> Option<tokio::task::JoinHandle<()>> {
        let rx = self.0.alert_rx.lock().ok()?.take()?;
        Some(tokio::spawn(crate::policy::deliver_alerts(rx)))
    }

    /// Releases reservations whose request died without settling, once a second; every ten
    /// seconds also drops idle rate-limit counters.
    pub(crate) fn spawn_reservation_sweeper(&self) -> tokio::task::JoinHandle<()> {
        let gw = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut ticks: u64 = 0;
            loop {
                tick.tick().await;
                ticks += 1;
                if ticks.is_multiple_of(10) {
                    // Rate-limit counters of keys/users gone quiet for a minute.
                    gw.0.rate_limits.sweep(now_ms());
                }
                let expired = gw.0.budgets.expire(now_ms());
                if expired > 0 {
                    tracing::warn!(
                        expired,
                        "released budget reservations of requests that never settled"
                    );
                }
            }
        })
    }

    pub(crate) fn tasks(&self) -> TaskTracker {
        self.0.tasks.clone()
    }

    pub(crate) fn draining_token(&self) -> CancellationToken {
        self.0.draining.clone()
    }

    /// Reloads the key index now (after an admin change).
    pub(crate) async fn reload_keys(&self) {
        let gw = self.clone();
        let res =
            tokio::task::spawn_blocking(move || gw.0.keys.reload(&gw.0.store, now_ms())).await;
        if !matches!(res, Ok(Ok(()))) {
            tracing::error!("reloading the key index failed; the poller will retry");
        }
    }

    /// Polls the store's key version so CLI changes (another process) reach this one.
    pub(crate) fn spawn_key_poller(&self) -> tokio::task::JoinHandle<()> {
        let gw = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(gw.0.settings.key_poll_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let g = gw.clone();
                let res = tokio::task::spawn_blocking(move || {
                    g.0.keys.refresh_if_changed(&g.0.store, now_ms())
                })
                .await;
                if let Ok(Err(e)) = res {
                    tracing::warn!(error = %e, "key index refresh failed");
                }
            }
        })
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
