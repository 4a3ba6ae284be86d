//! The ledger row: the append-only record one request leaves behind (docs/contracts.md §1
//! "Ledger row").
//!
//! Every request that reaches a data-plane route produces exactly one [`LedgerRow`], whatever
//! its outcome. The row is plain data; `tollgate-ledger` writes it and `tollgate-store` persists
//! it.

use serde::{Deserialize, Serialize};

use crate::{Attribution, NanoUsd, PolicyActions, Usage, UsageSource};

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Served (fully streamed or answered).
    Ok,
    /// Refused before any upstream call (auth, validation, pricing, budget, rate limit).
    Rejected,
    /// An upstream call was made and failed (error status, timeout, reset, cut stream).
    Failed,
    /// The client went away before the response was complete.
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "ok" => Some(Outcome::Ok),
            "rejected" => Some(Outcome::Rejected),
            "failed" => Some(Outcome::Failed),
            "cancelled" => Some(Outcome::Cancelled),
            _ => None,
        }
    }
}

/// One ledger row. Field names are the column names of the `requests` table and the keys of
/// `GET /admin/v1/requests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRow {
    /// `req_…` UUIDv7; primary key, so replaying a spill file twice is harmless.
    pub request_id: String,
    /// Request start, Unix milliseconds (UTC).
    pub started_at_ms: i64,
    /// Route, e.g. `/v1/chat/completions`.
    pub endpoint: String,
    pub stream: bool,
    #[serde(flatten)]
    pub attribution: Attribution,
    /// The logical model the client asked for (`None` when the body had none).
    pub requested_model: Option<String>,
    /// The upstream model name actually called.
    pub served_model: Option<String>,
    /// Provider name from config (`providers.<name>`).
    pub provider: Option<String>,
    /// Deployment label `provider/model`.
    pub deployment: Option<String>,
    /// Upstream attempts made (0 when rejected before the upstream).
    pub attempts: u32,
    #[serde(flatten)]
    pub usage: Usage,
    pub usage_source: UsageSource,
    /// Cost at list prices.
    pub list_cost: NanoUsd,
    /// Cost after discounts and cache savings actually applied (equal to list cost until
    /// negotiated rates exist); budgets settle on this.
    pub effective_cost: NanoUsd,
    /// Version of the price table used (`builtin-YYYY-MM-DD` or with `+config` overrides).
    pub price_version: Option<String>,
    /// True when the model had no price and `pricing.unknown_model: allow` let it through.
    pub unpriced: bool,
    /// What budgets, spend policies and rate limits did, in order; stored and shown
    /// comma-separated (`cap_max_tokens=120`), empty when none.
    pub policy_actions: PolicyActions,
    /// `hit`, `miss`, `bypass`, or `None` when caching is off.
    pub cache_status: Option<String>,
    /// HTTP status returned to the client (200 for streams that started, whatever followed).
    pub status: u16,
    pub outcome: Outcome,
    /// Stable error code when the request failed or was rejected.
    pub error_code: Option<String>,
    /// `client`, `gateway` or `upstream` when failed.
    pub error_origin: Option<String>,
    /// Total time in the gateway, microseconds.
    pub latency_us: u64,
    /// Time to the first byte sent to the client, microseconds (streams and non-streams).
    pub ttft_us: Option<u64>,
    /// What the provider would have billed for an answer served from the response cache (the
    /// row's own cost is then zero); zero otherwise.
    #[serde(default)]
    pub saved_cost: NanoUsd,
    /// Every deployment label tried, in order, comma-separated (`openai/gpt-4o,anthropic/…`);
    /// the last one is `deployment`. Empty when no upstream call was made.
    #[serde(default)]
    pub attempted: String,
    /// The prices the row was costed at, per 1M tokens of each class (`None` when unpriced or
    /// never routed). Kept with the row so finance exports show the price actually applied,
    /// whatever the price table says by the time they run.
    #[serde(default)]
    pub unit_prices: Option<UnitPrices>,
}

/// Nano-USD per 1M tokens of each token class, as applied (a class without its own price
/// carries the input price, as the cost did).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitPrices {
    pub input: NanoUsd,
    pub cached_input: NanoUsd,
    pub cache_write: NanoUsd,
    pub output: NanoUsd,
}

impl LedgerRow {
    /// What a row from outside (an import) must satisfy to be stored: an id, a time, no
    /// negative money, and token counts that add up (cached and cache-write input are part of
    /// input; reasoning is part of output). The first violation, naming the field.
    pub fn check(&self) -> Result<(), String> {
        if self.request_id.trim().is_empty() {
            return Err("request_id: must not be empty".into());
        }
        if self.started_at_ms <= 0 {
            return Err(format!(
                "started_at_ms: must be a positive Unix time in milliseconds, got {}",
                self.started_at_ms
            ));
        }
        let money = [
            ("list_cost", self.list_cost),
            ("effective_cost", self.effective_cost),
            ("saved_cost", self.saved_cost),
        ];
        let prices = self.unit_prices.map(|p| {
            [
                ("unit_prices.input", p.input),
                ("unit_prices.cached_input", p.cached_input),
                ("unit_prices.cache_write", p.cache_write),
                ("unit_prices.output", p.output),
            ]
        });
        for (field, v) in money.into_iter().chain(prices.into_iter().flatten()) {
            if v.nanos() < 0 {
                return Err(format!("{field}: must not be negative, got {v}"));
            }
        }
        let u = &self.usage;
        if u.cached_input_tokens
            .saturating_add(u.cache_write_input_tokens)
            > u.input_tokens
        {
            return Err(format!(
                "cached_input_tokens + cache_write_input_tokens ({} + {}) exceed input_tokens ({})",
                u.cached_input_tokens, u.cache_write_input_tokens, u.input_tokens
            ));
        }
        if u.reasoning_tokens > u.output_tokens {
            return Err(format!(
                "reasoning_tokens ({}) exceed output_tokens ({})",
                u.reasoning_tokens, u.output_tokens
            ));
        }
        Ok(())
    }

    /// A row for a request that just arrived: nothing known yet but id, time and route.
    pub fn start(request_id: String, started_at_ms: i64, endpoint: &str) -> Self {
        LedgerRow {
            request_id,
            started_at_ms,
            endpoint: endpoint.to_string(),
            stream: false,
            attribution: Attribution::default(),
            requested_model: None,
            served_model: None,
            provider: None,
            deployment: None,
            attempts: 0,
            usage: Usage::default(),
            usage_source: UsageSource::None,
            list_cost: NanoUsd::ZERO,
            effective_cost: NanoUsd::ZERO,
            price_version: None,
            unpriced: false,
            policy_actions: PolicyActions::default(),
            cache_status: None,
            status: 0,
            outcome: Outcome::Ok,
            error_code: None,
            error_origin: None,
            latency_us: 0,
            ttft_us: None,
            saved_cost: NanoUsd::ZERO,
            attempted: String::new(),
            unit_prices: None,
        }
    }
}
