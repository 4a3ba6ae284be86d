//! From a validated [`Config`] to a running gateway's parts: store, ledger, provider adapters,
//! router, price table.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tollgate_config::{Config, LedgerUrl};
use tollgate_ledger::{Ledger, LedgerOptions};
use tollgate_policy::rules::{Policies, PolicyDef};
use tollgate_policy::{BudgetDef, Budgets, SystemClock};
use tollgate_providers::{AwsCredentials, ProviderSettings, Timeouts};
use tollgate_router::{Deployment, LogicalModel, Router};
use tollgate_server::{GatewayParts, ServerSettings};
use tollgate_store::{Definitions, Store};

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
        };
        secrets.extend(settings.secrets());
        let adapter =
            tollgate_providers::build(settings).with_context(|| format!("providers.{name}"))?;
        adapters.insert(name.clone(), adapter);
    }
    let mut models = Vec::new();
    for (name, m) in &cfg.models {
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
                    })
                })
                .collect::<Result<Vec<_>>>()?;
        let lm = LogicalModel::new(name.clone(), deployments)
            .with_context(|| format!("models.{name}: no deployment with a positive weight"))?
            .with_max_output_tokens(m.max_output_tokens);
        models.push(lm);
    }
    Ok((Router::new(models), secrets))
}

/// Everything `tollgate serve` needs, started (the ledger writer thread runs from here on).
pub fn gateway_parts(cfg: &Config) -> Result<GatewayParts> {
    let store = open_store(cfg)?;
    let ledger = Ledger::start(store.clone(), LedgerOptions::new(spill_path(cfg)))
        .context("starting the ledger writer")?;
    let (router, secrets) = router(cfg)?;
    let prices = cfg.price_table().context("pricing")?;
    let budgets = budgets(cfg, &store)?;
    let policies = policies(cfg, &store)?;
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
            key_poll_interval: Duration::from_secs(1),
        },
        router,
        prices,
        store,
        ledger,
        secrets,
        budgets,
        policies,
        cache: response_cache(cfg),
    })
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
                        tollgate_config::CacheScope::Tenant => tollgate_cache::Scope::Tenant,
                        tollgate_config::CacheScope::Global => tollgate_cache::Scope::Global,
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
