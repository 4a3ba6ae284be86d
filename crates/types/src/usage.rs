//! Token usage, normalised to one set of semantics whatever the provider reported.
//!
//! Canonical semantics (those of OpenAI Chat Completions):
//! - `input_tokens` is the **total** prompt size and *includes* `cached_input_tokens` and
//!   `cache_write_input_tokens`. Providers that report these exclusively (Anthropic, Bedrock) are
//!   converted by their adapter before a [`Usage`] is built.
//! - `output_tokens` *includes* `reasoning_tokens`.
//!
//! Pricing relies on these subset relations; [`Usage::uncached_input_tokens`] is the only place
//! that subtracts them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Input tokens billed at the full input price.
    pub fn uncached_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_sub(self.cached_input_tokens)
            .saturating_sub(self.cache_write_input_tokens)
    }

    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }
}

/// Where a ledger row's token counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// The provider reported usage; it is authoritative.
    Provider,
    /// Counted by Tollgate from what was sent and relayed (stream cut, client cancelled,
    /// upstream omitted usage). Never recorded as zero when tokens were relayed.
    Estimated,
    /// No model call was made (rejected before the upstream, or failed before any output).
    None,
    /// A provider was called and may have billed, but said nothing Tollgate could count: the
    /// call timed out, or the gateway died while it ran (`gateway_interrupted`). The tokens and
    /// cost are Tollgate's stated estimate (the prompt for a timeout; the reserved worst case
    /// for an interrupted request), to be reconciled with the provider's invoice.
    Unknown,
}

impl UsageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Provider => "provider",
            UsageSource::Estimated => "estimated",
            UsageSource::None => "none",
            UsageSource::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "provider" => Some(UsageSource::Provider),
            "estimated" => Some(UsageSource::Estimated),
            "none" => Some(UsageSource::None),
            "unknown" => Some(UsageSource::Unknown),
            _ => None,
        }
    }
}
