//! Prices and cost: the built-in dated price table, operator overrides, and exact cost
//! arithmetic in nano-USD.
//!
//! This crate is pure (no I/O, no async). It owns:
//! - [`ModelPrice`], the price of one model in USD per 1M tokens (the shape config files use);
//! - the built-in table ([`mod@builtin`]): a YAML file embedded in the binary, dated and versioned
//!   (`builtin-2026-07-24`), with the lookup rules that map a requested model id onto an entry
//!   ([`names`]);
//! - [`PriceTable`]: built-in table + config overrides, answering "what does this deployment of
//!   this logical model cost, and by which rule" ([`table`]);
//! - [`cost()`] / [`worst_case_cost`]: integer cost arithmetic with a single rounding ([`mod@cost`]);
//! - [`validate_price`]: the sanity rules every price passes, built-in or configured
//!   ([`validate`]).
//!
//! docs/contracts.md §2 invariant 6 (unknown prices fail closed) is expressed here as
//! [`Resolution::Unpriced`]: nothing in this crate ever invents a zero price.

pub mod builtin;
pub mod cost;
pub mod names;
pub mod table;
pub mod validate;

use serde::{Deserialize, Serialize};
use tollgate_types::NanoUsd;

pub use builtin::{
    BUILTIN_VERSION, BuiltinEntry, BuiltinTable, ModelLimits, Vendor, builtin, max_output_tokens,
};
pub use cost::{cost, worst_case_cost};
pub use table::{
    DeploymentPriceOverride, DeploymentRef, PriceOverrides, PriceSource, PriceTable, Resolution,
    UnknownModel,
};
pub use validate::{InvalidPrice, validate_price};

/// Prices of one model in USD per 1M tokens, held exactly as nano-USD per 1M tokens.
///
/// Config and the built-in table write them as decimals: `{input: 0.15, cached_input: 0.075,
/// output: 0.6}`. A missing `cached_input` / `cache_write` means those tokens cost the input price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input: NanoUsd,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<NanoUsd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<NanoUsd>,
    pub output: NanoUsd,
}

impl ModelPrice {
    /// Price of a cache-read input token: `cached_input`, or `input` when not set.
    pub fn cached_input_or_input(&self) -> NanoUsd {
        self.cached_input.unwrap_or(self.input)
    }

    /// Price of a cache-write input token: `cache_write`, or `input` when not set.
    pub fn cache_write_or_input(&self) -> NanoUsd {
        self.cache_write.unwrap_or(self.input)
    }
}

/// Why a price table could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    /// A price failed [`validate_price`]. `model` names the logical model, or
    /// `logical/provider/model` for a deployment override.
    #[error("price of '{model}': {field}: {reason}")]
    Invalid {
        model: String,
        field: &'static str,
        reason: String,
    },
    /// Two overrides for the same key.
    #[error("duplicate price override for {0}")]
    Duplicate(String),
    /// The embedded built-in table failed to parse or validate. A build defect, caught by the
    /// crate's tests; reported as an error rather than a panic all the same.
    #[error("built-in price table is invalid: {0}")]
    Builtin(String),
}

impl PriceError {
    fn invalid(model: &str, e: InvalidPrice) -> PriceError {
        PriceError::Invalid {
            model: model.to_string(),
            field: e.field,
            reason: e.reason,
        }
    }
}
