//! The validated configuration: what the rest of Tollgate reads.
//!
//! These docs are the config reference: each field names its YAML key, default and
//! constraints. Values here are already checked (see the `validate` module), defaults are filled
//! in, and secrets are [`Secret`]s.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use tollgate_pricing::{ModelPrice, UnknownModel};
use tollgate_types::ProviderKind;

use crate::Secret;

/// The whole configuration (docs/contracts.md §6 Config).
///
/// Top-level YAML sections: `server`, `storage`, `providers`, `models`, `pricing`, `tenants`,
/// `budgets`, `policies`, `rate_limits`, `cache`. The contract's `guardrails` is rejected by
/// this build ("section 'guardrails' is not supported by this build yet").
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    /// `providers`: upstream API accounts by name (`[A-Za-z0-9_-]+`).
    pub providers: BTreeMap<String, ProviderConfig>,
    /// `models`: logical model names clients send, each mapped to deployments.
    pub models: BTreeMap<String, ModelConfig>,
    pub pricing: PricingConfig,
    /// `tenants`: per-tenant facts the policies read (revenue, for margin triggers).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tenants: BTreeMap<String, TenantConfig>,
    /// `allocations`: shared-cost rules for showback, tried in order (see
    /// [`AllocationConfig`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allocations: Vec<AllocationConfig>,
    /// `anomalies`: spend-anomaly detection (see [`AnomalyConfig`]).
    pub anomalies: AnomalyConfig,
    /// `budgets`: spend limits enforced in the request path, e.g.
    /// `{name: acme-monthly, scope: {tenant: acme}, limit_usd: "50.00", window: month, mode: hard}`.
    /// Windows: `day`, `week`, `month` (calendar, in `timezone`, UTC by default) or rolling
    /// `24h`, `7d`, `30d`. Modes: `hard` (enforced), `soft` (never blocks, reported),
    /// `shadow` (decisions computed and logged, never applied). Budgets created through
    /// `/admin/v1/budgets` are stored in the ledger database and override these by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<tollgate_policy::BudgetDef>,
    /// `policies`: graded spend policies — a ladder of steps, each `when` a trigger
    /// (`utilization_pct`, `forecast_exceeds`, `burn_rate`, `revenue_share_pct`) holds `then`
    /// actions (`alert`, `downgrade`, `cap_max_tokens`, `reroute`, `block`); `mode: shadow`
    /// computes and logs decisions without applying them; `hysteresis_pct` keeps a level from
    /// flapping. Policies created through `/admin/v1/policies` are stored and override these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<tollgate_policy::rules::PolicyDef>,
    /// `rate_limits`: requests and tokens per minute, checked before budget admission on
    /// `/v1/chat/completions`, `/v1/messages` and `/v1/embeddings`. Each rule:
    ///
    /// ```yaml
    /// rate_limits:
    ///   - name: per-key        # required, unique; ASCII letters, digits and - _ . : @
    ///     per: key             # key | tenant | user | model: one counter per distinct value;
    ///                          # omit for one counter shared by every request the rule matches
    ///     match: {tenant: acme, model: gpt-4o-mini}  # optional filters, ANDed: key (name or
    ///                          # id), team, tenant, feature, user, model (logical)
    ///     rpm: 600             # requests per minute (optional)
    ///     tpm: 200000          # input + output tokens per minute (optional)
    ///     max_concurrent: 20   # requests in flight at once (optional; streams hold a place
    ///                          # until they end)
    /// ```
    /// At least one of `rpm`/`tpm`/`max_concurrent`, each a whole number `> 0` (at most 10¹²).
    /// Windows are a
    /// rolling 60 s. A request counts against every rule that matches it, all or nothing; a
    /// rule whose `per` value the request lacks (no user, say) does not limit it. TPM reserves
    /// the request's estimate (prompt tokens + output cap) at admission and settles to the
    /// actual input + output tokens when the request ends; a failed request still counts one
    /// request. Refusals are `429 rate_limit_exceeded` with `Retry-After`; responses carry
    /// OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for the tightest rule.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<tollgate_policy::RateLimitDef>,
    /// `cache`: the exact-match response cache (see [`CacheConfig`]). Absent: caching off.
    pub cache: CacheConfig,
    /// `telemetry`: OpenTelemetry export (see [`TelemetryConfig`]). Absent or
    /// `enabled: false`: off, and nothing is built per request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TelemetryConfig>,
}

/// `telemetry`: GenAI traces and metrics over OTLP/HTTP protobuf.
///
/// ```yaml
/// telemetry:
///   endpoint: http://127.0.0.1:4318   # required; /v1/traces and /v1/metrics are appended
///   headers: {authorization: "Bearer ${OTLP_TOKEN}"}   # optional, values are secrets
///   sampling_ratio: 1.0               # share of new traces exported (0–1); a client's
///                                     # traceparent sampled flag wins
///   service_name: tollgate
///   metrics_interval_secs: 60         # 1–3600
///   queue: 8192                       # requests waiting for the exporter; past it they are
///                                     # dropped and counted (tollgate_telemetry_dropped_total)
///   propagate_to_upstream: false      # send each attempt's traceparent to the provider
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct TelemetryConfig {
    pub endpoint: String,
    pub headers: BTreeMap<String, Secret>,
    pub sampling_ratio: f64,
    pub service_name: String,
    pub metrics_interval_secs: u64,
    pub queue: usize,
    pub propagate_to_upstream: bool,
}

/// Default `cache.max_bytes`: 256 MiB.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Default `ttl_secs` of a cache rule.
pub const DEFAULT_CACHE_TTL_SECS: u64 = 300;
/// Default `max_bytes` of a cache rule: 64 MiB.
pub const DEFAULT_CACHE_MODEL_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// `cache`: the exact-match response cache, in memory.
///
/// ```yaml
/// cache:
///   max_bytes: 268435456        # global memory bound (default 256 MiB)
///   default:                    # every model unless overridden; absent = caching off
///     ttl_secs: 300
///     max_bytes: 67108864
///     scope: tenant             # tenant (default) | global
///     cache_nondeterministic: false
///   models:
///     gpt-4o-mini: { ttl_secs: 3600 }   # per-model override; `enabled: false` turns it off
/// ```
///
/// A request is answered from the cache when an earlier one with the same key succeeded within
/// the TTL. The key covers the model asked for and the one serving, the messages, tools,
/// `tool_choice`, `response_format` and every sampling/output parameter — every body field
/// but `stream`, `stream_options`, `user` and `metadata` — and the tenant (or, without a
/// tenant, the virtual key) unless `scope: global`. Requests that sample (`temperature`
/// absent — OpenAI's default is 1 — or above 0) bypass the cache unless
/// `cache_nondeterministic: true`; so do requests with `Cache-Control: no-cache`/`no-store` or
/// `x-tollgate-cache: bypass`.
#[derive(Debug, Clone, Serialize)]
pub struct CacheConfig {
    /// `max_bytes`: bound on the memory all cached answers take together (payload plus a fixed
    /// per-entry overhead). When the models' own bounds add up to more, each is scaled down in
    /// proportion. Default 256 MiB; must be > 0.
    pub max_bytes: u64,
    /// `default`: the rule for every configured model without its own; `None`: caching is off
    /// except for models listed under `models`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<CacheRule>,
    /// `models.<logical model>`: per-model overrides of `default` (fields left out are taken
    /// from `default`, then from the defaults). The name must be a configured model.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, CacheRule>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: DEFAULT_CACHE_MAX_BYTES,
            default: None,
            models: BTreeMap::new(),
        }
    }
}

impl CacheConfig {
    /// The rule in force for a logical model, `None` when caching is off for it.
    pub fn rule_for(&self, model: &str) -> Option<&CacheRule> {
        self.models
            .get(model)
            .or(self.default.as_ref())
            .filter(|r| r.enabled)
    }
}

/// One model's caching rule (`cache.default` or `cache.models.<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheRule {
    /// `enabled`: default true; `false` turns caching off for the model.
    pub enabled: bool,
    /// `ttl_secs`: how long an answer is served from the cache. Default 300; 1 to 30 days.
    pub ttl_secs: u64,
    /// `max_bytes`: memory bound of this model's answers. Default 64 MiB; must be > 0.
    pub max_bytes: u64,
    /// `scope`: `tenant` (default) — answers are only replayed to the same tenant (or, for
    /// requests without a tenant, the same virtual key) — or `global`: shared by every caller.
    pub scope: CacheScope,
    /// `cache_nondeterministic`: also cache requests that sample (`temperature` absent or
    /// above 0). Default false.
    pub cache_nondeterministic: bool,
}

/// `scope` of a cache rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheScope {
    #[default]
    Tenant,
    Global,
}

/// `anomalies`: which scopes are watched for hours of unusual spend, and how unusual.
#[derive(Debug, Clone, Serialize)]
pub struct AnomalyConfig {
    /// `by`: scopes, each a list of dimensions (`[[tenant], [tenant, feature], [model]]`).
    /// Default `[[tenant]]`. Dimensions: key, team, tenant, feature, user, model,
    /// served_model, provider, deployment, endpoint.
    pub by: Vec<Vec<String>>,
    /// `min_usd`: the least excess over the expected hourly spend that is flagged. Default 1.
    pub min_usd: tollgate_types::NanoUsd,
    /// `threshold`: robust deviations (scaled MAD) above the expected spend. Default 4.
    pub threshold: f64,
    /// `weeks`: weeks of same-hour history in the baseline, 1 to 52. Default 4.
    pub weeks: u32,
    /// `check_every_secs`: how often open anomalies are published to `anomaly` policy
    /// triggers (only while some policy has one), 1 to 3600. Default 60.
    pub check_every_secs: u32,
}

/// The dimensions an anomaly scope may use.
pub const ANOMALY_DIMENSIONS: &[&str] = &[
    "key",
    "team",
    "tenant",
    "feature",
    "user",
    "model",
    "served_model",
    "provider",
    "deployment",
    "endpoint",
];

/// `allocations[i]`: take a pool of shared cost and spread it over tenants.
#[derive(Debug, Clone, Serialize)]
pub struct AllocationConfig {
    /// `name`: unique, shown in the showback report.
    pub name: String,
    /// `match`: ledger spend moved into the pool (no one's direct spend any more). Every set
    /// field must be equal; `tenant: "(unattributed)"` takes spend with no tenant.
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub take: Option<AllocationMatch>,
    /// `amount_usd_per_month`: a fixed amount (a provider commitment) added to the pool,
    /// prorated over the report's range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount_usd_per_month: Option<tollgate_types::NanoUsd>,
    /// `method`: `proportional` (to direct spend; the default), `even`, or `weights`.
    pub method: AllocationMethod,
    /// `weights`: tenant → positive integer, with `method: weights` (and only then); the
    /// targets are exactly these tenants.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: BTreeMap<String, u64>,
    /// `tenants`: who shares the pool (default: every tenant with direct spend).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
}

/// `allocations[i].match`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocationMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// `allocations[i].method`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocationMethod {
    #[default]
    Proportional,
    Even,
    Weights,
}

/// `tenants.<name>`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TenantConfig {
    /// `revenue_usd_per_month`: what the tenant pays, for margin triggers and reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revenue_usd_per_month: Option<tollgate_types::NanoUsd>,
    /// `markup_pct`: what the operator adds to the upstream cost when it bills this tenant
    /// (the chargeback dataset), in basis points (`markup_pct: 12.5` → 1250). 0 to 1000 %,
    /// at most two decimals; default 0.
    pub markup_bp: u32,
    /// `price_list`: per logical model, the prices (USD per 1M tokens) this tenant is billed
    /// at instead of cost plus markup.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub price_list: BTreeMap<String, ModelPrice>,
}

/// Default `server.listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4000";
/// Default `server.max_body_bytes`: 8 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;
/// Default `server.shutdown_grace_secs`.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;

/// `server`: the listening gateway.
#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    /// `listen`: address of the data plane, admin API and ops endpoints, `IP:PORT`
    /// (`localhost:PORT` is accepted as `127.0.0.1:PORT`). Default `127.0.0.1:4000`.
    pub listen: SocketAddr,
    /// `master_key`: the admin credential (`Authorization: Bearer <master key>` on
    /// `/admin/v1/…`). Optional: without it the admin API is disabled. Usually
    /// `${TOLLGATE_MASTER_KEY}`. An empty string counts as unset; surrounding whitespace is
    /// an error (a pasted newline would lock the operator out); shorter than 16 characters
    /// draws a warning.
    pub master_key: Option<Secret>,
    /// `max_body_bytes`: largest request body accepted; bigger ones get 413. Default 8 MiB
    /// (8388608); 1 byte to 1 GiB.
    pub max_body_bytes: u64,
    /// `shutdown_grace_secs`: on SIGTERM/SIGINT, how long in-flight requests (streams included)
    /// may run before they are cut. Default 30; at most 3600; 0 cuts at once.
    pub shutdown_grace_secs: u64,
    /// `request_timeout_secs`: optional cap on a whole request, all upstream attempts included.
    /// Unset: each provider's `timeouts.total_ms` governs each attempt. Must be > 0.
    pub request_timeout_secs: Option<u64>,
    /// `retry_budget`: see [`crate::RetryBudgetConfig`].
    pub retry_budget: crate::RetryBudgetConfig,
    /// `organization`: the operator's name, as finance exports show it (FOCUS
    /// `InvoiceIssuerName` and `ProviderName`). Default `Tollgate`; 1–200 characters.
    pub organization: String,
    /// `max_report_days`: the longest range a finance export or report (FOCUS, margins,
    /// showback) may cover, in days. Default 400; 1 to 3660.
    pub max_report_days: u32,
    /// `limits`: see [`LimitsConfig`].
    pub limits: LimitsConfig,
    /// `metrics_auth`: a bearer token `/metrics` requires (`Authorization: Bearer …`, as
    /// Prometheus's `authorization.credentials` sends it). Unset: `/metrics` is open, as
    /// Prometheus expects by default — but it shows spend totals, so set it wherever the
    /// listener is reachable by anyone but the scraper. Usually `${TOLLGATE_METRICS_TOKEN}`.
    pub metrics_auth: Option<Secret>,
}

/// `server.limits`: what one client, or many, may hold of the gateway — so slow, idle or
/// too many connections cannot lock everyone else out.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LimitsConfig {
    /// `header_read_timeout_secs`: a connection that has started a request must deliver its
    /// headers within this (slowloris). Default 15; 1 to 3600.
    pub header_read_timeout_secs: u64,
    /// `body_read_timeout_secs`: the whole request body must arrive within this after the
    /// headers, else `408 request_timeout`. Default 60; 1 to 3600.
    pub body_read_timeout_secs: u64,
    /// `idle_timeout_secs`: a connection with no request in flight and no bytes either way
    /// for this long is closed (idle keep-alive). Default 60; 1 to 86400.
    pub idle_timeout_secs: u64,
    /// `max_connections`: client connections open at once; past it a new connection gets a
    /// `503 overloaded` and is closed. Default: half the file-descriptor limit (after raising
    /// it to the hard limit at start-up). 1 to 1,000,000.
    pub max_connections: Option<u64>,
    /// `max_in_flight`: data-plane requests in progress at once; past it a request is shed
    /// with `503 overloaded` (recorded in the ledger). Default: a quarter of the
    /// file-descriptor limit, since each may hold an upstream socket. 1 to 1,000,000.
    pub max_in_flight: Option<u64>,
}

impl ServerConfig {
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    pub fn request_timeout(&self) -> Option<Duration> {
        self.request_timeout_secs.map(Duration::from_secs)
    }
}

/// `storage`: where the ledger lives.
#[derive(Debug, Clone, Serialize)]
pub struct StorageConfig {
    /// `ledger`: `sqlite://PATH` (relative paths are relative to the working directory;
    /// `sqlite:///abs/path` for absolute ones) or `"sqlite::memory:"` (tests; lost on exit;
    /// quote it, since a plain YAML scalar cannot end with `:`).
    /// `postgres://…` is part of the contract but not supported by this build yet.
    /// Default `sqlite://./tollgate.db`.
    pub ledger: LedgerUrl,
    /// `spill_path`: file the ledger writer appends rows to when the database is slow or down,
    /// replayed on recovery (rows are never dropped). Default: the ledger file path plus
    /// `.spill` (`./tollgate.db.spill`); none for an in-memory ledger unless set.
    pub spill_path: Option<PathBuf>,
    /// `counters`: where live budget counters are kept. `memory` (default). `redis://…` is
    /// part of the contract but not supported by this build yet.
    pub counters: Counters,
    /// `durability`: `batched` (default: rows committed every 5 ms; a crash loses at most the
    /// rows answered in the last few milliseconds) or `strict` (a response completes only once
    /// its row is on disk, fsynced, and a request's provisional row is committed before its
    /// provider call). See docs/durability.md.
    pub durability: Durability,
}

/// `storage.durability`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    #[default]
    Batched,
    Strict,
}

/// A ledger location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerUrl {
    /// `sqlite://PATH`.
    Sqlite { path: PathBuf },
    /// `sqlite::memory:`.
    SqliteMemory,
}

impl fmt::Display for LedgerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerUrl::Sqlite { path } => write!(f, "sqlite://{}", path.display()),
            LedgerUrl::SqliteMemory => f.write_str("sqlite::memory:"),
        }
    }
}

impl Serialize for LedgerUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where budget counters live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Counters {
    /// In process, rebuilt from the ledger at start (single replica).
    #[default]
    Memory,
}

/// Default `timeouts.connect_ms`.
pub const DEFAULT_CONNECT_MS: u64 = 5_000;
/// Default `timeouts.first_byte_ms`.
pub const DEFAULT_FIRST_BYTE_MS: u64 = 60_000;
/// Default `timeouts.idle_ms`.
pub const DEFAULT_IDLE_MS: u64 = 60_000;
/// Default `timeouts.total_ms`.
pub const DEFAULT_TOTAL_MS: u64 = 600_000;
/// Default `base_url` of kind `openai`.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// Default `base_url` of kind `anthropic`.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// Default `base_url` of kind `gemini`.
pub const GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com";

/// `providers.<name>`: one upstream API account.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderConfig {
    /// `kind`: `openai` (OpenAI or any OpenAI-compatible server), `azure`, `anthropic`,
    /// `gemini`, `bedrock`.
    pub kind: ProviderKind,
    /// `base_url`: API root, `http` or `https`, no credentials, query or fragment; stored
    /// without a trailing `/`. It follows the convention of each provider's official SDK (no
    /// version suffix except OpenAI's `/v1`), so it can point at the simulated provider or a
    /// corporate proxy. Defaults: `openai` `https://api.openai.com/v1`; `anthropic`
    /// `https://api.anthropic.com`; `gemini` `https://generativelanguage.googleapis.com`;
    /// `bedrock` `https://bedrock-runtime.{region}.amazonaws.com`. Kind `azure`: required,
    /// the resource URL `https://{resource}.openai.azure.com`.
    pub base_url: String,
    /// `api_key`: the provider credential, usually `${OPENAI_API_KEY}`. An empty string counts
    /// as unset. Required for `azure` and for the official OpenAI, Anthropic and Gemini
    /// endpoints; optional for other servers. Bedrock: a Bedrock API key (sent as a bearer
    /// token) instead of AWS access keys.
    pub api_key: Option<Secret>,
    /// `api_version`: Azure `api-version` query parameter (e.g. `2024-10-21`). Required for
    /// `azure`, rejected for other kinds.
    pub api_version: Option<String>,
    /// `headers`: extra static headers sent upstream on every request (names lower-cased,
    /// values treated as secrets). `host`, `content-length`, `transfer-encoding` and
    /// `connection` are managed by the gateway and rejected; `authorization`, `api-key` and
    /// `x-api-key` are rejected when `api_key` is set.
    pub headers: BTreeMap<String, Secret>,
    /// `timeouts`: upstream time limits.
    pub timeouts: Timeouts,
    /// `region`: AWS region of a `bedrock` provider (e.g. `us-east-1`); required there,
    /// rejected elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `aws_access_key_id` / `aws_secret_access_key` / `aws_session_token`: SigV4 credentials of
    /// a `bedrock` provider, usually `${AWS_ACCESS_KEY_ID}` etc. The key id and secret go
    /// together; either they or `api_key` are required for kind `bedrock`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_access_key_id: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_secret_access_key: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_session_token: Option<Secret>,
}

/// `providers.<name>.timeouts`, all in milliseconds, all > 0 and none above `total_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    /// `connect_ms`: TCP + TLS connect. Default 5000.
    pub connect_ms: u64,
    /// `first_byte_ms`: from sending the request to the first response byte (for streams, the
    /// first event). Default 60000.
    pub first_byte_ms: u64,
    /// `idle_ms`: longest gap between two chunks of a streamed response. Default 60000.
    pub idle_ms: u64,
    /// `total_ms`: one upstream attempt, start to last byte. Default 600000.
    pub total_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_ms: DEFAULT_CONNECT_MS,
            first_byte_ms: DEFAULT_FIRST_BYTE_MS,
            idle_ms: DEFAULT_IDLE_MS,
            total_ms: DEFAULT_TOTAL_MS,
        }
    }
}

impl Timeouts {
    pub fn connect(&self) -> Duration {
        Duration::from_millis(self.connect_ms)
    }
    pub fn first_byte(&self) -> Duration {
        Duration::from_millis(self.first_byte_ms)
    }
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms)
    }
    pub fn total(&self) -> Duration {
        Duration::from_millis(self.total_ms)
    }
}

/// How a model's deployments share traffic (`models.<name>.strategy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Random choice in proportion to `weight` (the default).
    #[default]
    Weighted,
    /// Lowest EWMA of time to first token (streams) or total latency (otherwise), scaled by
    /// requests in flight, with a little random exploration.
    Latency,
    /// The cheapest healthy deployment (input + output price per token).
    Cost,
    /// The deployment with the fewest requests in flight.
    LeastInflight,
}

/// `models.<name>`: a logical model (the name clients send).
///
/// Names: 1–256 characters, no whitespace or control characters (`/`, `.`, `:` allowed).
#[derive(Debug, Clone, Serialize)]
pub struct ModelConfig {
    /// `deployments`: where requests for this model go; at least one.
    pub deployments: Vec<DeploymentConfig>,
    /// `price`: price override for this logical model, USD per 1M tokens
    /// (`{input, cached_input?, cache_write?, output}`). Beats the built-in table, loses to a
    /// deployment's own `price`. Setting it both here and in `pricing.models` is an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<ModelPrice>,
    /// `max_output_tokens`: default output cap applied when a request sets none. > 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// `strategy`: `weighted` (default), `latency`, `cost` or `least_inflight`.
    pub strategy: Strategy,
    /// `fallbacks`: other logical models tried, in order, when every deployment of this one
    /// failed with a retryable error (connect, timeout, 429, 5xx, overloaded). Must name
    /// configured models other than this one. Fallbacks are not transitive: a fallback
    /// model's own `fallbacks` are not followed.
    pub fallbacks: Vec<String>,
    /// `context_window_fallback`: the model tried when a provider says the prompt exceeds the
    /// context window (retrying the same model would fail the same way).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_window_fallback: Option<String>,
    /// `retry`: see [`crate::RetryConfig`].
    pub retry: crate::RetryConfig,
    /// `breaker`: see [`crate::BreakerConfig`].
    pub breaker: crate::BreakerConfig,
    /// `sticky`: see [`crate::StickyConfig`].
    pub sticky: crate::StickyConfig,
}

/// `models.<name>.deployments[i]`: one provider + upstream model.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentConfig {
    /// `provider`: a name from `providers`.
    pub provider: String,
    /// `model`: upstream model name (for Azure, the deployment name). Non-empty, no
    /// whitespace. The pair `provider/model` must be unique within a logical model.
    pub model: String,
    /// `weight`: share of traffic under `weighted`. Default 1; > 0.
    pub weight: u32,
    /// `price`: price override for this deployment only; beats everything else.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<ModelPrice>,
}

impl DeploymentConfig {
    /// `provider/model`, the label the ledger records and price overrides are keyed by.
    pub fn label(&self) -> String {
        format!("{}/{}", self.provider, self.model)
    }
}

/// `pricing`: price overrides and the unknown-model rule.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PricingConfig {
    /// `unknown_model`: `reject` (default: requests for a model with no price fail with
    /// `model_not_priced`) or `allow` (served, cost 0, ledger row flagged `unpriced`).
    pub unknown_model: UnknownModel,
    /// `models`: logical model name → price, the same as `models.<name>.price` (use one or the
    /// other). Every name must be a model in `models`.
    pub models: BTreeMap<String, ModelPrice>,
}
