//! The stages of a data-plane request, one file each. A stage reads the gateway state and the
//! request's facts, writes what it learned into the ledger row, and returns its decision; it
//! never calls another endpoint's code, never answers the client and never records the row —
//! [`crate::exchange`] runs the stages in order (the numbered list is there) and owns the row.
//!
//! A new stage is a new file here plus one line in `exchange::run`.

pub(crate) mod attribute;
pub(crate) mod auth;
pub(crate) mod budget;
pub(crate) mod cache;
pub(crate) mod policy;
pub(crate) mod ratelimit;
pub(crate) mod target;
