//! Tollgate's integration tests over real HTTP: a simulated provider and the gateway run
//! in-process on ephemeral loopback ports (see [`harness`]); every test has its own ledger.

mod harness;

mod admin;
mod attribution;
mod azure;
mod budgets;
mod cache;
mod chat;
mod cli;
mod endpoints;
mod errors;
mod ledger;
mod policies;
mod providers;
mod ratelimits;
mod routing;
mod sticky_cache;
mod streaming;
mod upstream;
