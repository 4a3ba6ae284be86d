//! The `tollgate` binary's library half: start-up wiring ([`assemble`]), the CLI ([`cli`]),
//! the demo and report rendering. Kept as a library so integration tests assemble a gateway
//! exactly the way `tollgate serve` does.

pub mod assemble;
pub mod cli;
pub mod demo;
pub mod export;
pub mod ledger_io;
pub mod report;
