//! Tollgate's integration tests over real HTTP: a simulated provider and the gateway run
//! in-process on ephemeral loopback ports (see [`harness`]); every test has its own ledger.

// Tests may panic, their helpers are not an API, and the tasks they spawn (clients, the
// gateway under test) are awaited or die with the test's runtime.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    unreachable_pub
)]

mod harness;

// The FOCUS 1.2 requirements-model checker of crates/finance's tests, for exports of real traffic.
#[allow(dead_code)]
#[path = "../../../finance/tests/focus_model/mod.rs"]
mod focus_model;

mod admin;
mod attribution;
mod audit;
mod azure;
mod budgets;
mod cache;
mod chat;
mod cli;
mod endpoints;
mod errors;
mod finance;
mod hardening;
mod ledger;
mod policies;
mod providers;
mod ratelimits;
mod routing;
mod secrets;
mod sticky_cache;
mod streaming;
mod telemetry;
mod tokens;
mod ui;
mod upstream;
