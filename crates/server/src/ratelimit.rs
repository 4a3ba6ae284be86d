//! The rate-limit stage: requests and tokens per minute (`rate_limits` in the config), after
//! routing and attribution, before budget admission (`crate::budget`).
//!
//! The engine is `tollgate_policy::RateLimits` (one atomic reserve across every matching rule;
//! see its docs). This module turns the request into a `RateAsk` — the token estimate is the
//! one budget admission uses ([`budget::estimate`]: prompt + output cap × `n`), counted only
//! when a TPM rule applies — and the engine's answer into HTTP:
//! - admitted: the token hold rides on the `PendingRow` (settled with the row's actual input +
//!   output tokens on every exit, `Drop` included) and the response gets OpenAI's six
//!   `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers for the tightest rule;
//! - refused: `429 rate_limit_exceeded` with `Retry-After` (whole seconds until the binding
//!   rule has room for this request, ≥ 1) and the same headers; the row is recorded as
//!   `rejected` with `rate_limited=<rule>` in its policy actions.
//!
//! A counter store that cannot answer (only possible with a remote store) fails open: the
//! request is admitted untracked and a warning is logged.

use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use serde_json::{Map, Value};
use tollgate_policy::ratelimit::{WINDOW_MS, format_reset};
use tollgate_policy::{Dimension, Quotas, RateAdmission, RateAsk};
use tollgate_types::{ApiError, ErrorCode, Outcome};

use crate::Gateway;
use crate::budget::{self, Shape};
use crate::pipeline::{Format, Routed, reject};
use crate::record::PendingRow;

/// The quotas an admitted request reports in its response headers (none when no rule applied).
#[derive(Debug, Default)]
#[must_use = "apply the rate-limit headers to the response"]
pub struct Limits(Quotas);

impl Limits {
    /// Adds the `x-ratelimit-*` headers to a response (before its body is sent: streams too).
    pub fn apply(&self, mut resp: Response) -> Response {
        put_headers(resp.headers_mut(), &self.0);
        resp
    }
}

/// A refused request: answer it with [`Limited::reject`].
#[derive(Debug)]
pub struct Limited(Box<(ApiError, Quotas)>);

impl Limited {
    /// Records the row (`rejected`) and answers `429` in the client's format, with headers.
    pub fn reject(self, rec: PendingRow, request_id: String, format: Format) -> Response {
        let (error, quotas) = *self.0;
        let mut resp = reject(rec, error, request_id, Outcome::Rejected, format);
        put_headers(resp.headers_mut(), &quotas);
        resp
    }
}

/// [`admit`] on the routing the first attempt will get ([`crate::dispatch::Dispatch::preview`]);
/// nothing to count when no candidate is priced (the request then fails `model_not_priced`).
pub fn admit_first(
    gw: &Gateway,
    rec: &mut PendingRow,
    first: Option<&Routed>,
    body: &Map<String, Value>,
    shape: Shape,
) -> Result<Limits, Limited> {
    match first {
        Some(routed) => admit(gw, rec, routed, body, shape),
        None => Ok(Limits::default()),
    }
}

/// Checks and counts the request on every matching rate limit. `body` is the upstream body
/// before budget admission.
pub fn admit(
    gw: &Gateway,
    rec: &mut PendingRow,
    routed: &Routed,
    body: &Map<String, Value>,
    shape: Shape,
) -> Result<Limits, Limited> {
    let limits = &gw.0.rate_limits;
    if limits.is_empty() {
        return Ok(Limits::default());
    }
    let model = routed.logical.as_str();
    let row = rec.row();
    let tokens = if limits.wants_tokens(&row.attribution, model) {
        let mut e = budget::estimate(gw, routed, body, shape);
        // A spend policy's cap is written into the body later, by budget admission.
        if let (Some(cap), Shape::Chat) = (routed.policy_cap, shape) {
            e.out_cap = e.out_cap.min(u64::from(cap));
        }
        e.tokens()
    } else {
        0
    };
    let ask = RateAsk {
        attribution: &row.attribution,
        model,
        tokens,
        now_ms: row.started_at_ms,
    };
    match limits.admit(&ask) {
        RateAdmission::Unlimited => Ok(Limits::default()),
        RateAdmission::Admitted { hold, quotas } => {
            if let Some(h) = hold {
                rec.hold_rate(h);
            }
            Ok(Limits(quotas))
        }
        RateAdmission::Unavailable { reason } => {
            tracing::warn!(%reason, "rate-limit counters unavailable; admitting untracked");
            Ok(Limits::default())
        }
        RateAdmission::Limited {
            rule,
            dimension,
            asked,
            limit,
            retry_after_ms,
            quotas,
        } => {
            let row = rec.row();
            if !row.policy_actions.is_empty() {
                row.policy_actions.push(',');
            }
            row.policy_actions.push_str(&format!("rate_limited={rule}"));
            let message = match (dimension, retry_after_ms) {
                (Dimension::Requests, _) => format!(
                    "rate limit '{rule}' allows {limit} requests per minute and is exhausted; \
                     retry after the Retry-After delay"
                ),
                (Dimension::Tokens, Some(_)) => format!(
                    "rate limit '{rule}' allows {limit} tokens per minute; this request needs up \
                     to {asked} (prompt + output cap) and that much is not free yet; retry after \
                     the Retry-After delay"
                ),
                (Dimension::Tokens, None) => format!(
                    "this request needs up to {asked} tokens (prompt + output cap), more than \
                     rate limit '{rule}' allows in a minute ({limit}); lower max_tokens or \
                     shorten the prompt"
                ),
            };
            // A request that can never fit gets the window length: retrying will not help,
            // but a client honouring Retry-After should not hammer either.
            let wait_ms = retry_after_ms.unwrap_or(WINDOW_MS);
            let secs = u64::try_from((wait_ms + 999) / 1_000).unwrap_or(1).max(1);
            let error = ApiError::new(ErrorCode::RateLimitExceeded, message).with_retry_after(secs);
            Err(Limited(Box::new((error, quotas))))
        }
    }
}

/// `[limit, remaining, reset]` header names per dimension.
const REQUEST_HEADERS: [&str; 3] = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
];
const TOKEN_HEADERS: [&str; 3] = [
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
];

fn put_headers(h: &mut HeaderMap, q: &Quotas) {
    for (names, q) in [(REQUEST_HEADERS, &q.requests), (TOKEN_HEADERS, &q.tokens)] {
        let Some(q) = q else { continue };
        h.insert(names[0], HeaderValue::from(q.limit));
        h.insert(names[1], HeaderValue::from(q.remaining));
        if let Ok(v) = HeaderValue::from_str(&format_reset(q.reset_ms)) {
            h.insert(names[2], v);
        }
    }
}
