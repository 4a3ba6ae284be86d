//! Stream metering: the stage between the provider adapter and the ledger.
//!
//! It owns two things:
//! - [`tokens`]: local token counting (exact BPE for OpenAI-tokenised models, a documented
//!   estimate otherwise), used when a provider reports no usage;
//! - [`meter`]: a wrapper around a response chunk stream that relays each chunk as it arrives,
//!   captures provider usage, counts relayed output, and emits exactly one [`meter::Settlement`]
//!   when the stream ends, fails or is dropped by a departing client.

pub mod anthropic;
pub mod meter;
pub mod tokens;

pub use meter::{MeterOptions, MeteredStream, OpenAiRenderer, Renderer, Settlement};
