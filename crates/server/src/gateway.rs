//! The gateway's shared state, built once at start-up: what every stage reads.

pub(crate) mod memo;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollgate_attribution::{KeyIndex, TokenIndex};
use tollgate_ledger::Ledger;
use tollgate_pricing::PriceTable;
use tollgate_store::Store;

use crate::metrics::Metrics;

/// What a deployment carries to call its provider: the adapter, shared by every deployment of
/// that provider. The router is generic over it and never looks inside.
pub type Adapter = Arc<dyn tollgate_providers::Provider>;
pub type Router = tollgate_router::Router<Adapter>;
pub type LogicalModel = tollgate_router::LogicalModel<Adapter>;
pub type Deployment = tollgate_router::Deployment<Adapter>;

/// Alerts waiting for delivery at most; beyond that new ones are dropped with a warning (an
/// alert is a notification, not a ledger row: the decision log keeps the record).
const ALERT_QUEUE: usize = 1024;

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
    /// The longest range a finance export or report may cover (`server.max_report_days`).
    pub max_report_range: Duration,
    /// What connections and requests may hold (`server.limits`, resolved).
    pub limits: Limits,
    /// Bearer token `/metrics` requires (`server.metrics_auth`); `None`: open.
    pub metrics_token: Option<String>,
}

/// `server.limits` with the defaults that depend on the machine resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_in_flight: usize,
    /// The process's file-descriptor limit after start-up raised it (`None`: unknown).
    pub fd_limit: Option<u64>,
}

impl std::fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSettings")
            .field("listen", &self.listen)
            .field("master_key", &self.master_key.as_ref().map(|_| "********"))
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "********"),
            )
            .field("max_body_bytes", &self.max_body_bytes)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("limits", &self.limits)
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
    /// Who issues and who publishes, for FOCUS exports (`version` is set per export).
    pub focus: tollgate_finance::focus::Options,
    /// Shared-cost allocation rules (`allocations`), for showback.
    pub allocations: Vec<tollgate_finance::showback::Rule>,
    /// Which scopes are watched for spend anomalies, and how.
    pub anomalies: AnomalyWatch,
    /// OpenTelemetry export (`telemetry`); `None`: off, nothing is built per request.
    pub telemetry: Option<Telemetry>,
}

/// `telemetry` in server terms.
#[derive(Debug, Clone)]
pub struct Telemetry {
    pub exporter: Arc<tollgate_telemetry::Telemetry>,
    /// Send each attempt's `traceparent` to the provider (`propagate_to_upstream`).
    pub propagate: bool,
}

/// `anomalies` in store and detector terms.
#[derive(Debug, Clone)]
pub struct AnomalyWatch {
    pub scopes: Vec<Vec<tollgate_store::Dim>>,
    pub settings: tollgate_finance::anomalies::Settings,
    /// How often open anomalies are published to the policy engine.
    pub interval: Duration,
}

pub(crate) struct Inner {
    pub(crate) settings: ServerSettings,
    pub(crate) router: Router,
    pub(crate) prices: PriceTable,
    pub(crate) keys: KeyIndex,
    /// Admin tokens (`POST /admin/v1/tokens`), for the admin guard.
    pub(crate) admin_tokens: TokenIndex,
    pub(crate) store: Store,
    pub(crate) ledger: Ledger,
    pub(crate) secrets: Arc<[String]>,
    pub(crate) budgets: Arc<tollgate_policy::Budgets>,
    pub(crate) policies: Arc<tollgate_policy::rules::Policies>,
    pub(crate) rate_limits: Arc<tollgate_policy::RateLimits>,
    pub(crate) cache: Option<Arc<tollgate_cache::ResponseCache>>,
    pub(crate) focus: tollgate_finance::focus::Options,
    pub(crate) allocations: Vec<tollgate_finance::showback::Rule>,
    pub(crate) anomalies: AnomalyWatch,
    /// Margins and anomaly series of whole days already summed (`gateway/memo.rs`).
    pub(crate) margin_days: memo::DayMemo<tollgate_finance::focus::Summary>,
    pub(crate) anomaly_days: memo::DayMemo<tollgate_finance::anomalies::Series>,
    pub(crate) telemetry: Option<Telemetry>,
    pub(crate) alerts: mpsc::Sender<tollgate_policy::rules::Alert>,
    pub(crate) alert_rx: std::sync::Mutex<Option<mpsc::Receiver<tollgate_policy::rules::Alert>>>,
    pub(crate) metrics: Metrics,
    /// Every pending row and detached billing task holds a token: shutdown waits on it.
    pub(crate) tasks: TaskTracker,
    /// Cancelled when shutdown begins: new requests are refused with `shutting_down`.
    pub(crate) draining: CancellationToken,
    /// Cancelled when the shutdown grace period is over: streams still running end at once
    /// (`http::sse`) so their rows are recorded before the ledger closes.
    pub(crate) cut: CancellationToken,
}

/// Cheap-to-clone handle on the gateway state.
#[derive(Clone)]
pub struct Gateway(pub(crate) Arc<Inner>);

impl Gateway {
    /// Assembles the gateway; loads the key and admin-token indexes from the store.
    pub fn new(parts: GatewayParts) -> Result<Gateway, tollgate_store::StoreError> {
        let keys = KeyIndex::load(&parts.store, now_ms())?;
        let admin_tokens = TokenIndex::load(&parts.store, now_ms())?;
        let (alerts, alert_rx) = mpsc::channel(ALERT_QUEUE);
        let genai = parts
            .telemetry
            .as_ref()
            .map(|t| t.exporter.aggregates().clone())
            .unwrap_or_default();
        Ok(Gateway(Arc::new(Inner {
            settings: parts.settings,
            router: parts.router,
            prices: parts.prices,
            keys,
            admin_tokens,
            store: parts.store,
            ledger: parts.ledger,
            secrets: Arc::from(parts.secrets),
            budgets: parts.budgets,
            policies: parts.policies,
            rate_limits: parts.rate_limits,
            cache: parts.cache,
            focus: parts.focus,
            allocations: parts.allocations,
            anomalies: parts.anomalies,
            margin_days: Default::default(),
            anomaly_days: Default::default(),
            telemetry: parts.telemetry,
            alerts,
            alert_rx: std::sync::Mutex::new(Some(alert_rx)),
            metrics: Metrics::new(genai),
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

    /// The configured provider adapters' credentials (to scrub from relayed provider text).
    pub(crate) fn secrets(&self) -> &Arc<[String]> {
        &self.0.secrets
    }

    /// Reloads the key index now (after an admin change).
    pub(crate) async fn reload_keys(&self) {
        let gw = self.clone();
        let res =
            tokio::task::spawn_blocking(move || gw.0.keys.reload(&gw.0.store, now_ms())).await;
        reload_outcome("key index", res);
    }

    /// Reloads the admin-token index now (after an admin change).
    pub(crate) async fn reload_admin_tokens(&self) {
        let gw = self.clone();
        let res =
            tokio::task::spawn_blocking(move || gw.0.admin_tokens.reload(&gw.0.store, now_ms()))
                .await;
        reload_outcome("admin token index", res);
    }
}

/// Logs a failed reload: the store poller retries it.
fn reload_outcome(
    what: &str,
    res: Result<Result<(), tollgate_store::StoreError>, tokio::task::JoinError>,
) {
    match res {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "reloading the {what} failed; the poller will retry")
        }
        Err(e) => {
            tracing::error!(error = %e, "reloading the {what} failed; the poller will retry")
        }
    }
}

/// An upstream failure as the client sees it: its message scrubbed of every provider secret.
pub(crate) fn scrubbed(
    gw: &Gateway,
    e: &tollgate_providers::UpstreamError,
) -> tollgate_types::ApiError {
    let secrets: Vec<&str> = gw.secrets().iter().map(String::as_str).collect();
    e.to_api_error(&secrets)
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
