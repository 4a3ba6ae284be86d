//! The dashboard at `/ui/`: server-rendered HTML from the same functions the admin API
//! answers with, so every figure on a page equals the API's.
//!
//! - [`session`]: sessions (cookie, idle expiry, bounded table), the sign-in limiter, the
//!   layer every page sits behind (CSRF token, origin and role checks on changes);
//! - [`auth`]: sign-in with the master key or an admin token (the admin guard's
//!   `authenticate_credential`), sign-out;
//! - [`html`]: the one escaping function, layout, tables, formatting, error pages and
//!   headers; [`chart`]: inline SVG charts and bars; [`assets`]: the embedded stylesheet;
//! - one file per page, each reading the admin handlers' own value functions
//!   (`admin::reports::spend_report`, `admin::stats::stats_value`, …) and nothing else.
//!
//! No page runs a script, loads a font or reaches another origin; a viewer reads every page
//! and changes nothing.

pub(crate) mod assets;
pub(crate) mod auth;
pub(crate) mod budgets;
pub(crate) mod chart;
pub(crate) mod deployments;
pub(crate) mod fallback;
pub(crate) mod finance;
pub(crate) mod html;
pub(crate) mod keys;
pub(crate) mod overview;
pub(crate) mod policies;
pub(crate) mod range;
pub(crate) mod requests;
pub(crate) mod session;
pub(crate) mod tenants;
