//! Pure domain types shared by every stage of the request path.
//!
//! Nothing here does I/O or knows about tokio, axum or SQL: money ([`NanoUsd`]), token usage
//! ([`Usage`]), request ids, [`Attribution`], the provider kinds, and the table of stable
//! error codes ([`ErrorCode`]) every client-facing error is built from.

pub mod actions;
pub mod attribution;
pub mod canonical;
pub mod error;
pub mod ids;
pub mod money;
pub mod provider;
pub mod record;
pub mod usage;

pub use actions::{PolicyAction, PolicyActions};
pub use attribution::{Attribution, UNATTRIBUTED};
pub use error::{ApiError, ErrorCode, ErrorOrigin};
pub use ids::RequestId;
pub use money::{MoneyParseError, NanoUsd};
pub use provider::ProviderKind;
pub use record::{LedgerRow, Outcome, UnitPrices};
pub use usage::{Usage, UsageSource};
