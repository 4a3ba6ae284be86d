//! From a validated [`Config`] to a running gateway's parts: store, ledger, provider adapters,
//! router, price table.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tollgate_config::{AllocationMethod, Config, LedgerUrl, Strategy as ConfigStrategy};
use tollgate_finance::focus::{Dataset, Format, Options, Publisher, Terms, Version};
use tollgate_finance::showback::{Match, Method, Rule};
use tollgate_ledger::{Durability, Ledger, LedgerOptions};
use tollgate_policy::rules::{Policies, PolicyDef};
use tollgate_policy::{BudgetDef, Budgets, MemoryStore, RateLimits, SystemClock};
use tollgate_providers::{AwsCredentials, OutputLimits, ProviderSettings, Timeouts};
use tollgate_router::{
    BreakerSettings, Health, RetryBudget, RetrySettings, StickySettings, Strategy,
};
use tollgate_server::{
    AnomalyWatch, Deployment, GatewayParts, LogicalModel, Router, ServerSettings,
};
use tollgate_store::{Definitions, Store};
use tollgate_types::ProviderKind;

/// Opens the ledger database named by the config.
pub fn open_store(cfg: &Config) -> Result<Store> {
    let url = cfg.storage.ledger.to_string();
    Store::open(&url).with_context(|| format!("opening the ledger database {url}"))
}

fn spill_path(cfg: &Config) -> PathBuf {
    if let Some(p) = &cfg.storage.spill_path {
        return p.clone();
    }
    match &cfg.storage.ledger {
        LedgerUrl::Sqlite { path } => {
            let mut s = path.clone().into_os_string();
            s.push(".spill");
            PathBuf::from(s)
        }
        LedgerUrl::SqliteMemory => {
            std::env::temp_dir().join(format!("tollgate-{}.spill", std::process::id()))
        }
    }
}

/// Builds the router: one adapter per provider, shared by every deployment that uses it.
pub fn router(cfg: &Config) -> Result<(Router, Vec<String>)> {
    let prices = cfg.price_table().context("pricing")?;
    let mut adapters = std::collections::BTreeMap::new();
    let mut secrets = Vec::new();
    for (name, p) in &cfg.providers {
        let settings = ProviderSettings {
            name: name.clone(),
            kind: p.kind,
            base_url: p.base_url.clone(),
            api_key: p.api_key.as_ref().map(|s| s.expose().to_string()),
            api_version: p.api_version.clone(),
            headers: p
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_string()))
                .collect(),
            timeouts: Timeouts {
                connect: p.timeouts.connect(),
                first_byte: p.timeouts.first_byte(),
                idle: p.timeouts.idle(),
                total: p.timeouts.total(),
            },
            region: p.region.clone(),
            aws: match (&p.aws_access_key_id, &p.aws_secret_access_key) {
                (Some(id), Some(secret)) => Some(AwsCredentials {
                    access_key_id: id.expose().to_string(),
                    secret_access_key: secret.expose().to_string(),
                    session_token: p.aws_session_token.as_ref().map(|t| t.expose().to_string()),
                }),
                _ => None,
            },
            output_limits: OutputLimits::new(tollgate_pricing::max_output_tokens),
        };
        secrets.extend(settings.secrets());
        let adapter =
            tollgate_providers::build(settings).with_context(|| format!("providers.{name}"))?;
        adapters.insert(name.clone(), adapter);
    }
    let mut models = Vec::new();
    // One health (breaker, EWMAs, in-flight count) per provider deployment, shared by every
    // logical model that routes to it with the same breaker settings: a provider that is down
    // is down for all of them.
    let mut healths: Vec<(String, BreakerSettings, Arc<Health>)> = Vec::new();
    for (name, m) in &cfg.models {
        let b = &m.breaker;
        let breaker = BreakerSettings {
            enabled: b.enabled,
            consecutive_failures: b.consecutive_failures,
            error_rate: b.error_rate,
            min_requests: b.min_requests,
            window: Duration::from_secs(b.window_secs),
            cooldown: Duration::from_secs(b.cooldown_secs),
            half_open_probes: b.half_open_probes,
        };
        let deployments =
            m.deployments
                .iter()
                .map(|d| {
                    let provider = adapters.get(&d.provider).cloned().with_context(|| {
                        format!("models.{name}: unknown provider '{}'", d.provider)
                    })?;
                    Ok(Deployment {
                        provider,
                        provider_name: d.provider.clone(),
                        model: d.model.clone(),
                        label: d.label(),
                        weight: d.weight,
                        health: shared_health(&mut healths, d.label(), &breaker),
                        unit_cost: unit_cost(&prices, name, &d.provider, &d.model),
                        prompt_cache_ttl: Duration::from_secs(
                            m.sticky.ttl_secs.unwrap_or(PROMPT_CACHE_TTL_SECS),
                        ),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
        let lm = LogicalModel::new(name.clone(), deployments)
            .with_context(|| format!("models.{name}: no deployment with a positive weight"))?
            .with_max_output_tokens(m.max_output_tokens)
            .with_strategy(match m.strategy {
                ConfigStrategy::Weighted => Strategy::Weighted,
                ConfigStrategy::Latency => Strategy::Latency,
                ConfigStrategy::Cost => Strategy::Cost,
                ConfigStrategy::LeastInflight => Strategy::LeastInflight,
            })
            .with_fallbacks(m.fallbacks.clone())
            .with_context_window_fallback(m.context_window_fallback.clone())
            .with_retry(RetrySettings {
                max_attempts: m.retry.max_attempts,
                backoff: Duration::from_millis(m.retry.backoff_ms),
                max_backoff: Duration::from_millis(m.retry.max_backoff_ms),
                max_retry_after: Duration::from_secs(m.retry.max_retry_after_secs),
            })
            .with_stickiness(m.sticky.enabled.then(StickySettings::default))
            .with_sticky_min_prefix_chars(m.sticky.min_prefix_chars);
        models.push(lm);
    }
    let rb = &cfg.server.retry_budget;
    let router = Router::new(models).with_retry_budget(RetryBudget::new(
        rb.ratio,
        rb.min_per_sec,
        Duration::from_secs(10),
    ));
    Ok((router, secrets))
}

/// The health of deployment `label` under `breaker` settings, created on first use.
fn shared_health(
    healths: &mut Vec<(String, BreakerSettings, Arc<Health>)>,
    label: String,
    breaker: &BreakerSettings,
) -> Arc<Health> {
    if let Some((_, _, h)) = healths.iter().find(|(l, b, _)| *l == label && b == breaker) {
        return h.clone();
    }
    let h = Arc::new(Health::new(breaker.clone()));
    healths.push((label, breaker.clone(), h.clone()));
    h
}

/// Nano-USD of one million input plus one million output tokens at a deployment's price: the
/// `cost` strategy's ranking. `None` when unpriced (ranked last).
fn unit_cost(
    prices: &tollgate_pricing::PriceTable,
    model: &str,
    provider: &str,
    upstream: &str,
) -> Option<u64> {
    match prices.resolve(
        model,
        &tollgate_pricing::DeploymentRef {
            provider,
            model: upstream,
        },
    ) {
        tollgate_pricing::Resolution::Priced { price, .. } => {
            let usage = tollgate_types::Usage {
                input_tokens: 1_000_000,
                output_tokens: 1_000_000,
                ..Default::default()
            };
            u64::try_from(tollgate_pricing::cost(&usage, &price).nanos()).ok()
        }
        tollgate_pricing::Resolution::Unpriced { .. } => None,
    }
}

/// How long a provider keeps a prompt prefix cached after its last use — the documented
/// minimum lifetimes agree: OpenAI and Azure 5–10 minutes, Anthropic's default 5 minutes,
/// Bedrock 5 minutes, Gemini's implicit cache of the same order — so one default serves all;
/// `models.<name>.sticky.ttl_secs` overrides it.
const PROMPT_CACHE_TTL_SECS: u64 = 300;

/// Raises the soft file-descriptor limit to the hard one (each connection and each upstream
/// call holds a descriptor; distributions often start processes at 1024) and returns it.
/// `None` where the platform has no such limit or it cannot be read.
pub fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the file-descriptor limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

/// `server.limits` resolved against the file-descriptor limit: by default client connections
/// may use half the descriptors and requests in flight (each possibly holding an upstream
/// socket) a quarter, leaving the rest for the ledger, the upstream pool and headroom.
pub fn limits(
    cfg: &tollgate_config::LimitsConfig,
    fd_limit: Option<u64>,
) -> tollgate_server::Limits {
    let fds = fd_limit.unwrap_or(4096).min(4_000_000);
    let pick = |set: Option<u64>, share: u64| -> usize {
        let n = set.unwrap_or_else(|| (fds / share).max(16));
        usize::try_from(n).unwrap_or(usize::MAX)
    };
    let max_connections = pick(cfg.max_connections, 2);
    let max_in_flight = pick(cfg.max_in_flight, 4);
    if let Some(limit) = fd_limit
        && (max_connections as u64).saturating_add(max_in_flight as u64) > limit
    {
        tracing::warn!(
            fd_limit = limit,
            max_connections,
            max_in_flight,
            "server.limits allow more sockets than the file-descriptor limit: new connections \
             may fail with EMFILE before load shedding starts"
        );
    }
    tollgate_server::Limits {
        header_read_timeout: Duration::from_secs(cfg.header_read_timeout_secs),
        body_read_timeout: Duration::from_secs(cfg.body_read_timeout_secs),
        idle_timeout: Duration::from_secs(cfg.idle_timeout_secs),
        max_connections,
        max_in_flight,
        fd_limit,
    }
}

/// Everything `tollgate serve` needs, started (the ledger writer thread runs from here on).
pub fn gateway_parts(cfg: &Config) -> Result<GatewayParts> {
    let store = open_store(cfg)?;
    let mut ledger_opts = LedgerOptions::new(spill_path(cfg));
    if cfg.storage.durability == tollgate_config::Durability::Strict {
        ledger_opts.durability = Durability::Strict;
        store.sync_every_commit();
    }
    let ledger = Ledger::start(store.clone(), ledger_opts).context("starting the ledger writer")?;
    let (router, secrets) = router(cfg)?;
    let prices = cfg.price_table().context("pricing")?;
    let budgets = budgets(cfg, &store)?;
    let policies = policies(cfg, &store)?;
    let rate_limits = rate_limits(cfg)?;
    Ok(GatewayParts {
        settings: ServerSettings {
            listen: cfg.server.listen,
            master_key: cfg
                .server
                .master_key
                .as_ref()
                .map(|s| s.expose().to_string()),
            max_body_bytes: usize::try_from(cfg.server.max_body_bytes).unwrap_or(usize::MAX),
            shutdown_grace: cfg.server.shutdown_grace(),
            // Two one-row reads per tick (keys version, imports counter): cheap enough to make a
            // CLI revocation reach a running gateway within a quarter second.
            key_poll_interval: Duration::from_millis(250),
            max_report_range: Duration::from_secs(86_400 * u64::from(cfg.server.max_report_days)),
            limits: limits(&cfg.server.limits, raise_fd_limit()),
            metrics_token: cfg
                .server
                .metrics_auth
                .as_ref()
                .map(|s| s.expose().to_string()),
        },
        router,
        prices,
        store,
        ledger,
        secrets,
        budgets,
        policies,
        rate_limits,
        cache: response_cache(cfg),
        focus: focus_options(cfg),
        allocations: allocation_rules(cfg),
        anomalies: anomaly_watch(cfg)?,
        telemetry: telemetry(cfg)?,
    })
}

/// `telemetry`: the OTLP exporter, when configured.
pub fn telemetry(cfg: &Config) -> Result<Option<tollgate_server::Telemetry>> {
    let Some(t) = &cfg.telemetry else {
        return Ok(None);
    };
    let exporter = tollgate_telemetry::Telemetry::new(tollgate_telemetry::TelemetryOptions {
        endpoint: t.endpoint.clone(),
        headers: t
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_string()))
            .collect(),
        sampling_ratio: t.sampling_ratio,
        service_name: t.service_name.clone(),
        metrics_interval: Duration::from_secs(t.metrics_interval_secs),
        queue: t.queue,
    })
    .context("telemetry")?;
    tracing::info!(endpoint = %t.endpoint, sampling_ratio = t.sampling_ratio, "OpenTelemetry export on");
    Ok(Some(tollgate_server::Telemetry {
        exporter,
        propagate: t.propagate_to_upstream,
    }))
}

/// `anomalies` in store and detector terms (dimension names were checked by the config).
pub fn anomaly_watch(cfg: &Config) -> Result<AnomalyWatch> {
    let a = &cfg.anomalies;
    let scopes =
        a.by.iter()
            .map(|dims| {
                dims.iter()
                    .map(|d| tollgate_store::Dim::parse(d).context("anomalies.by"))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
    Ok(AnomalyWatch {
        scopes,
        settings: tollgate_finance::anomalies::Settings {
            weeks: a.weeks,
            min_usd: a.min_usd,
            threshold: a.threshold,
        },
        interval: Duration::from_secs(u64::from(a.check_every_secs)),
    })
}

/// `allocations` in showback terms.
pub fn allocation_rules(cfg: &Config) -> Vec<Rule> {
    cfg.allocations
        .iter()
        .map(|a| Rule {
            name: a.name.clone(),
            take: a.take.as_ref().map(|m| Match {
                tenant: m.tenant.clone(),
                team: m.team.clone(),
                feature: m.feature.clone(),
                model: m.model.clone(),
                provider: m.provider.clone(),
            }),
            amount_per_month: a.amount_usd_per_month,
            method: match a.method {
                AllocationMethod::Proportional => Method::Proportional,
                AllocationMethod::Even => Method::Even,
                AllocationMethod::Weights => Method::Weights(a.weights.clone()),
            },
            tenants: a.tenants.clone(),
        })
        .collect()
}

/// FOCUS export settings from config: the operator issues, each provider's vendor publishes.
pub fn focus_options(cfg: &Config) -> Options {
    let tenants = cfg
        .tenants
        .iter()
        .map(|(name, t)| {
            let price_list = t
                .price_list
                .iter()
                .map(|(model, p)| {
                    let prices = [
                        p.input,
                        p.cached_input_or_input(),
                        p.cache_write_or_input(),
                        p.output,
                    ];
                    (model.clone(), prices.map(|n| n.nanos()))
                })
                .collect();
            let terms = Terms {
                markup_bp: t.markup_bp,
                price_list,
                revenue_per_month: t.revenue_usd_per_month,
            };
            (name.clone(), terms)
        })
        .collect();
    Options {
        version: Version::V1_2,
        dataset: Dataset::Cost,
        format: Format::Csv,
        tenants,
        allocations: allocation_rules(cfg),
        pools: Vec::new(),
        issuer: cfg.server.organization.clone(),
        currency: "USD".into(),
        publishers: publishers(cfg),
    }
}

/// Who publishes the models behind each configured provider (FOCUS `PublisherName`,
/// `ServiceName`). An OpenAI-kind provider that is not api.openai.com is a self-hosted or
/// third-party OpenAI-compatible server, published under its own name.
pub fn publishers(cfg: &Config) -> BTreeMap<String, Publisher> {
    cfg.providers
        .iter()
        .map(|(name, p)| {
            let (publisher, service) = match p.kind {
                ProviderKind::Openai if p.base_url.contains("api.openai.com") => {
                    ("OpenAI".to_string(), "OpenAI API".to_string())
                }
                ProviderKind::Openai => (name.clone(), format!("{name} (OpenAI-compatible API)")),
                ProviderKind::Azure => ("Microsoft".into(), "Azure OpenAI".into()),
                ProviderKind::Anthropic => ("Anthropic".into(), "Anthropic API".into()),
                ProviderKind::Gemini => ("Google".into(), "Gemini API".into()),
                ProviderKind::Bedrock => ("Amazon Web Services".into(), "Amazon Bedrock".into()),
            };
            (
                name.clone(),
                Publisher {
                    name: publisher,
                    service,
                },
            )
        })
        .collect()
}

/// The rate limits of `rate_limits`, on their own in-process counter store (the budgets' store
/// is rebuilt from the ledger; rate counters start empty, a minute is their whole memory).
pub fn rate_limits(cfg: &Config) -> Result<Arc<RateLimits>> {
    RateLimits::new(cfg.rate_limits.clone(), Arc::new(MemoryStore::new()))
        .map(Arc::new)
        .map_err(|(i, e)| anyhow::anyhow!("rate_limits[{i}].{}: {}", e.field, e.reason))
}

/// The response cache for the models with a cache rule; `None` when there are none.
pub fn response_cache(cfg: &Config) -> Option<Arc<tollgate_cache::ResponseCache>> {
    let models: Vec<(String, tollgate_cache::ModelSettings)> = cfg
        .models
        .keys()
        .filter_map(|name| {
            let r = cfg.cache.rule_for(name)?;
            Some((
                name.clone(),
                tollgate_cache::ModelSettings {
                    ttl: Duration::from_secs(r.ttl_secs),
                    max_bytes: r.max_bytes,
                    scope: match r.scope {
                        tollgate_config::CacheScope::Tenant => tollgate_cache::CacheScope::Tenant,
                        tollgate_config::CacheScope::Global => tollgate_cache::CacheScope::Global,
                    },
                    cache_nondeterministic: r.cache_nondeterministic,
                },
            ))
        })
        .collect();
    if models.is_empty() {
        return None;
    }
    let cache = tollgate_cache::ResponseCache::new(cfg.cache.max_bytes, models);
    tracing::info!(
        models = cfg
            .models
            .keys()
            .filter(|m| cache.settings(m).is_some())
            .count(),
        max_bytes = cfg.cache.max_bytes,
        "response cache on"
    );
    Some(Arc::new(cache))
}

/// Spend policies: the config's, overridden by name by those stored through the admin API,
/// with tenant revenue from `tenants` for margin triggers.
pub fn policies(cfg: &Config, store: &Store) -> Result<Arc<Policies>> {
    let mut defs: Vec<PolicyDef> = cfg.policies.clone();
    for (name, json) in store
        .list_definitions(Definitions::Policies)
        .context("reading stored policies")?
    {
        match PolicyDef::from_json(&json) {
            Ok(def) => match defs.iter_mut().find(|d| d.name == def.name) {
                Some(slot) => *slot = def,
                None => defs.push(def),
            },
            Err(e) => {
                tracing::error!(policy = %name, error = %e, "ignoring an unreadable stored policy")
            }
        }
    }
    let engine = Arc::new(Policies::new(Arc::new(SystemClock)));
    engine
        .replace_all(defs)
        .map_err(|e| anyhow::anyhow!("policies{e}"))?;
    // Burn-rate windows read the spend of the last minutes or hours: refill them, so a
    // restart does not reset a trigger.
    tollgate_server::seed_burn_from_ledger(&engine, store, jiff::Timestamp::now().as_millisecond())
        .context("seeding burn-rate triggers from the ledger")?;
    engine.set_revenue(
        cfg.tenants
            .iter()
            .filter_map(|(t, c)| c.revenue_usd_per_month.map(|r| (t.clone(), r)))
            .collect(),
    );
    Ok(engine)
}

/// The budget engine: the config's budgets, overridden by name by those created or changed
/// through the admin API (stored in the ledger database), with counters rebuilt from the
/// ledger so a restart never resets a budget. The ledger must have replayed its spill file
/// first (it does in `Ledger::start`), so every recorded row is counted.
pub fn budgets(cfg: &Config, store: &Store) -> Result<Arc<Budgets>> {
    let mut defs: Vec<BudgetDef> = cfg.budgets.clone();
    for (name, json) in store.list_budgets().context("reading stored budgets")? {
        match BudgetDef::from_json(&json) {
            Ok(def) => match defs.iter_mut().find(|d| d.name == def.name) {
                Some(slot) => *slot = def,
                None => defs.push(def),
            },
            Err(e) => {
                tracing::error!(budget = %name, error = %e, "ignoring an unreadable stored budget")
            }
        }
    }
    let engine = Arc::new(Budgets::default());
    engine
        .replace_all(defs)
        .map_err(|e| anyhow::anyhow!("budgets{e}"))?;
    let now = jiff::Timestamp::now().as_millisecond();
    let seeded = tollgate_server::seed_from_ledger(&engine, store, now)
        .map_err(|e| anyhow::anyhow!("rebuilding budget counters from the ledger: {e}"))?;
    if seeded > 0 {
        tracing::info!(budgets = seeded, "budget counters rebuilt from the ledger");
    }
    Ok(engine)
}
