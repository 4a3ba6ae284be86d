//! Finance output computed from ledger rows, outside the request path.
//!
//! - [`focus`]: FOCUS 1.2 and 1.0 cost-and-usage exports — ledger rows aggregated per charge
//!   hour × billing account × sub-account × provider × served model × feature × token class,
//!   with exact decimal costs that reconcile to the ledger to the nano-dollar.
//! - [`anomalies`]: hours whose spend in a scope is far above its seasonal baseline.
//! - [`showback`]: direct spend plus shares of shared costs, per tenant, exactly.
//! - [`margins`]: revenue proration and margin percentages for the margins report.
//! - [`decimal`]: the fixed-point decimal those columns are written in.

pub mod anomalies;
pub mod decimal;
pub mod focus;
pub mod margins;
pub mod showback;
