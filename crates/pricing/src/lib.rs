//! Prices and cost. (Being written: see ARCHITECTURE.md.)

use serde::{Deserialize, Serialize};
use tollgate_types::NanoUsd;

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
