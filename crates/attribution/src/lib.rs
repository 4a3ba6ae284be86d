//! Attribution: who is calling, and who pays.
//!
//! - [`keys`]: virtual keys — issued once in plain text (`tg-…`), stored only as a SHA-256
//!   hash, authenticated against an in-memory index that a running gateway reloads whenever the
//!   store's key version changes (so a CLI revocation takes effect on the next request).
//! - [`tokens`]: admin tokens (`tga-…`, role `admin` or `viewer`) for the admin API, issued and
//!   looked up the same way, in their own table and index.
//! - [`resolve`]: turns the authenticated key, the request headers and the body's `user` /
//!   `metadata` into an [`Attribution`](tollgate_types::Attribution).

pub mod keys;
pub mod resolve;
pub mod tokens;

pub use keys::{AuthFailure, IssuedKey, KeyIndex, NewKey};
pub use resolve::resolve;
pub use tokens::{IssuedToken, TokenFailure, TokenIndex};
