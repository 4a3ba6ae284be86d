//! The config file as written: every field optional where it has a default, unknown fields
//! rejected. The `validate` module turns this into [`crate::Config`]; the field documentation for
//! users lives on the validated types.

use std::collections::BTreeMap;

use serde::Deserialize;
use tollgate_pricing::{ModelPrice, UnknownModel};
use tollgate_types::ProviderKind;

use crate::Secret;

/// Sections docs/contracts.md §6 names that this build does not implement (planned). Present →
/// validation error, never silently ignored.
pub(crate) const UNSUPPORTED_SECTIONS: &[&str] = &["guardrails"];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub server: Option<RawServer>,
    #[serde(default)]
    pub storage: Option<RawStorage>,
    #[serde(default)]
    pub providers: Option<BTreeMap<String, RawProvider>>,
    #[serde(default)]
    pub models: Option<BTreeMap<String, RawModel>>,
    #[serde(default)]
    pub pricing: Option<RawPricing>,
    #[serde(default)]
    pub tenants: Option<BTreeMap<String, RawTenant>>,
    #[serde(default)]
    pub allocations: Option<Vec<RawAllocation>>,
    #[serde(default)]
    pub anomalies: Option<RawAnomalies>,
    #[serde(default)]
    pub budgets: Option<Vec<tollgate_policy::BudgetDef>>,
    #[serde(default)]
    pub policies: Option<Vec<tollgate_policy::rules::PolicyDef>>,
    #[serde(default)]
    pub rate_limits: Option<Vec<tollgate_policy::RateLimitDef>>,
    pub cache: Option<RawCache>,
    #[serde(default)]
    pub telemetry: Option<RawTelemetry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTelemetry {
    pub enabled: Option<bool>,
    pub endpoint: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    pub sampling_ratio: Option<f64>,
    pub service_name: Option<String>,
    pub metrics_interval_secs: Option<u64>,
    pub queue: Option<u64>,
    pub propagate_to_upstream: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCache {
    pub max_bytes: Option<u64>,
    pub default: Option<RawCacheRule>,
    #[serde(default)]
    pub models: BTreeMap<String, RawCacheRule>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCacheRule {
    pub enabled: Option<bool>,
    pub ttl_secs: Option<u64>,
    pub max_bytes: Option<u64>,
    pub scope: Option<crate::CacheScope>,
    pub cache_nondeterministic: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAnomalies {
    pub by: Option<Vec<Vec<String>>>,
    pub min_usd: Option<tollgate_types::NanoUsd>,
    pub threshold: Option<f64>,
    pub weeks: Option<u32>,
    pub check_every_secs: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAllocation {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub take: Option<crate::AllocationMatch>,
    pub amount_usd_per_month: Option<tollgate_types::NanoUsd>,
    pub method: Option<crate::AllocationMethod>,
    pub weights: Option<BTreeMap<String, u64>>,
    pub tenants: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTenant {
    pub revenue_usd_per_month: Option<tollgate_types::NanoUsd>,
    /// Decimal text, checked in validation (so the error names the field).
    #[serde(default, deserialize_with = "decimal_text")]
    pub markup_pct: Option<String>,
    pub price_list: Option<BTreeMap<String, ModelPrice>>,
}

fn decimal_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    tollgate_types::money::deserialize_decimal_text(d).map(Some)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub listen: Option<String>,
    pub master_key: Option<Secret>,
    pub max_body_bytes: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
    pub request_timeout_secs: Option<u64>,
    pub retry_budget: Option<crate::routing::RawRetryBudget>,
    pub organization: Option<String>,
    pub max_report_days: Option<u32>,
    pub limits: Option<RawLimits>,
    pub metrics_auth: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub header_read_timeout_secs: Option<u64>,
    pub body_read_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub max_connections: Option<u64>,
    pub max_in_flight: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStorage {
    pub ledger: Option<String>,
    pub spill_path: Option<String>,
    pub counters: Option<String>,
    pub durability: Option<crate::model::Durability>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProvider {
    pub kind: ProviderKind,
    pub base_url: Option<String>,
    pub api_key: Option<Secret>,
    pub api_version: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    pub timeouts: Option<RawTimeouts>,
    pub region: Option<String>,
    pub aws_access_key_id: Option<Secret>,
    pub aws_secret_access_key: Option<Secret>,
    pub aws_session_token: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTimeouts {
    pub connect_ms: Option<u64>,
    pub first_byte_ms: Option<u64>,
    pub idle_ms: Option<u64>,
    pub total_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawModel {
    pub deployments: Vec<RawDeployment>,
    pub price: Option<ModelPrice>,
    pub max_output_tokens: Option<u32>,
    pub strategy: Option<crate::Strategy>,
    pub fallbacks: Option<Vec<String>>,
    pub context_window_fallback: Option<String>,
    pub retry: Option<crate::routing::RawRetry>,
    pub breaker: Option<crate::routing::RawBreaker>,
    pub sticky: Option<crate::routing::RawSticky>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDeployment {
    pub provider: String,
    pub model: String,
    pub weight: Option<u32>,
    pub price: Option<ModelPrice>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPricing {
    pub unknown_model: Option<UnknownModel>,
    #[serde(default)]
    pub models: BTreeMap<String, ModelPrice>,
}
