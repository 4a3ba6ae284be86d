//! The router: logical model name → the deployments that may serve this request, best first.
//!
//! A logical model (the name clients send) maps to one or more deployments — a provider plus
//! the upstream model name — each with a weight, a unit cost and live [`Health`] (in-flight
//! count, latency EWMAs, circuit breaker). [`LogicalModel::plan`] orders them for one request:
//! pinned deployments, then the prompt-cache-sticky one, then the model's [`Strategy`]
//! (`weighted`, `latency`, `cost`, `least_inflight`), with unavailable (breaker-open)
//! deployments last. The server's executor walks the plan: `Health::start` each candidate,
//! report the outcome on the `Attempt`, retry within a [`RetryBudget`] after a
//! [`backoff`], and move on to `fallbacks` (other logical models) when the plan is exhausted.
//! This crate is pure (std, rand, serde: no tokio, no I/O): every function that depends on
//! time takes `now`, so breakers, EWMAs, stickiness and budgets are tested without sleeping.
//!
//! - [`health`]: per-deployment state and the breaker;
//! - [`strategy`]: strategies and `plan`;
//! - [`sticky`]: the prompt-cache stickiness table;
//! - [`retry`]: retry budget and backoff.
//!
//! The set of deployments is immutable once built (a config reload builds a new router);
//! their health, and each model's sticky table, are the only mutable state.

pub mod health;
pub mod retry;
pub mod sticky;
pub mod strategy;

pub use health::{Attempt, BreakerSettings, BreakerState, Failure, Health, HealthSnapshot};
pub use retry::{RetryBudget, backoff};
pub use sticky::{StickySettings, StickyStats};
pub use strategy::{PlanRequest, Strategy};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sticky::StickyTable;

/// One way to serve a logical model. `P` is whatever calls the deployment's provider (the
/// server's adapter handle); the router never looks inside it, which keeps this crate free of
/// HTTP and provider code.
#[derive(Clone)]
pub struct Deployment<P> {
    pub provider: P,
    /// Provider name from config.
    pub provider_name: String,
    /// Upstream model (Azure: deployment) name.
    pub model: String,
    /// `provider/model`, the deployment's label in the ledger and in price overrides.
    pub label: String,
    pub weight: u32,
    /// Live in-flight count, EWMAs and breaker; shared by every request routed here.
    pub health: Arc<Health>,
    /// Nano-USD of 1M input + 1M output tokens at this deployment's price; `None` = unpriced
    /// (sorted last by the `cost` strategy).
    pub unit_cost: Option<u64>,
    /// How long the provider's prompt cache stays warm: a sticky key stays on this
    /// deployment until this long after its last successful use.
    pub prompt_cache_ttl: Duration,
}

impl<P> std::fmt::Debug for Deployment<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("label", &self.label)
            .field("weight", &self.weight)
            .field("unit_cost", &self.unit_cost)
            .field("in_flight", &self.health.in_flight())
            .finish()
    }
}

#[derive(Clone)]
pub struct LogicalModel<P> {
    pub name: String,
    pub deployments: Vec<Deployment<P>>,
    /// Output cap for requests that set none (`models.<name>.max_output_tokens`); budget
    /// admission reserves it and writes it into the request.
    pub max_output_tokens: Option<u32>,
    pub strategy: Strategy,
    /// Logical models to try, in order, when every deployment of this one failed.
    pub fallbacks: Vec<String>,
    /// Logical model to use instead when a request does not fit this one's context window.
    pub context_window_fallback: Option<String>,
    /// Prompt-cache stickiness; `None` = off. Clones of the model share the table.
    pub(crate) sticky: Option<Arc<StickyTable>>,
    /// Conversations whose messages total fewer characters than this are not stuck (`None`
    /// when stickiness is off): providers only cache long prompts.
    pub sticky_min_prefix_chars: Option<usize>,
    /// How failed attempts are retried.
    pub retry: RetrySettings,
    total_weight: u64,
}

// By hand, so `P` need not be `Debug` (adapter handles are not).
impl<P> std::fmt::Debug for LogicalModel<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogicalModel")
            .field("name", &self.name)
            .field("deployments", &self.deployments)
            .field("strategy", &self.strategy)
            .field("fallbacks", &self.fallbacks)
            .field("context_window_fallback", &self.context_window_fallback)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// `models.<name>.retry`, in router terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySettings {
    /// Upstream attempts per request, fallbacks included (1 = no retries).
    pub max_attempts: u32,
    /// Base and cap of the jittered exponential backoff before revisiting a deployment.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// The longest provider `Retry-After` (or breaker cool-down) waited out in the gateway.
    pub max_retry_after: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_attempts: 3,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(5),
        }
    }
}

impl<P> LogicalModel<P> {
    /// `None` when there are no deployments or every weight is zero.
    pub fn new(name: String, deployments: Vec<Deployment<P>>) -> Option<LogicalModel<P>> {
        let total_weight = deployments.iter().map(|d| u64::from(d.weight)).sum();
        if total_weight == 0 {
            return None;
        }
        Some(LogicalModel {
            name,
            deployments,
            max_output_tokens: None,
            strategy: Strategy::default(),
            fallbacks: Vec::new(),
            context_window_fallback: None,
            sticky: Some(Arc::new(StickyTable::new(&StickySettings::default()))),
            sticky_min_prefix_chars: Some(4096),
            retry: RetrySettings::default(),
            total_weight,
        })
    }

    pub fn with_retry(mut self, retry: RetrySettings) -> Self {
        self.retry = retry;
        self
    }

    /// Minimum conversation size for stickiness (see [`LogicalModel::sticky_min_prefix_chars`]).
    pub fn with_sticky_min_prefix_chars(mut self, chars: usize) -> Self {
        self.sticky_min_prefix_chars = self.sticky.as_ref().map(|_| chars);
        self
    }

    pub fn with_max_output_tokens(mut self, cap: Option<u32>) -> Self {
        self.max_output_tokens = cap;
        self
    }

    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    pub fn with_fallbacks(mut self, fallbacks: Vec<String>) -> Self {
        self.fallbacks = fallbacks;
        self
    }

    pub fn with_context_window_fallback(mut self, model: Option<String>) -> Self {
        self.context_window_fallback = model;
        self
    }

    /// Prompt-cache stickiness (on by default with [`StickySettings::default`]; `None` turns
    /// it off: `plan` ignores sticky keys and `stick` does nothing).
    pub fn with_stickiness(mut self, settings: Option<StickySettings>) -> Self {
        self.sticky = settings.map(|s| Arc::new(StickyTable::new(&s)));
        if self.sticky.is_none() {
            self.sticky_min_prefix_chars = None;
        } else if self.sticky_min_prefix_chars.is_none() {
            self.sticky_min_prefix_chars = Some(4096);
        }
        self
    }

    /// Sum of the deployments' weights (positive).
    pub fn total_weight(&self) -> u64 {
        self.total_weight
    }

    /// After a successful answer from `deployment` for a request with a sticky key: stick the
    /// key to it until `now` + that deployment's `prompt_cache_ttl` (refreshing on every use).
    pub fn stick(&self, key: u64, deployment: usize, now: Instant) {
        let (Some(table), Some(d)) = (&self.sticky, self.deployments.get(deployment)) else {
            return;
        };
        let expires = now.checked_add(d.prompt_cache_ttl).unwrap_or(now);
        table.stick(key, deployment, expires, now);
    }

    /// Sticky table stats for metrics and the demo (all zero when stickiness is off).
    pub fn sticky_stats(&self) -> StickyStats {
        self.sticky.as_ref().map(|t| t.stats()).unwrap_or_default()
    }
}

/// All logical models, by name.
#[derive(Clone)]
pub struct Router<P> {
    models: BTreeMap<String, Arc<LogicalModel<P>>>,
    /// Gateway-wide cap on retries and fallback attempts.
    retry_budget: Arc<RetryBudget>,
}

impl<P> std::fmt::Debug for Router<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.models.iter()).finish()
    }
}

impl<P> Router<P> {
    pub fn new(models: impl IntoIterator<Item = LogicalModel<P>>) -> Router<P> {
        Router {
            models: models
                .into_iter()
                .map(|m| (m.name.clone(), Arc::new(m)))
                .collect(),
            retry_budget: Arc::new(RetryBudget::new(0.2, 10, Duration::from_secs(10))),
        }
    }

    pub fn empty() -> Router<P> {
        Router::new([])
    }

    pub fn with_retry_budget(mut self, budget: RetryBudget) -> Router<P> {
        self.retry_budget = Arc::new(budget);
        self
    }

    pub fn retry_budget(&self) -> &RetryBudget {
        &self.retry_budget
    }

    pub fn get(&self, name: &str) -> Option<&Arc<LogicalModel<P>>> {
        self.models.get(name)
    }

    /// Logical model names in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests;
