//! Stage 7, rate limits: requests and tokens per minute (`rate_limits` in the config), after
//! the target and before the cache and budget admission ([`super::budget`]).
//!
//! The engine is `tollgate_policy::RateLimits` (one atomic reserve across every matching rule;
//! see its docs). This module turns the request into a `RateAsk` — the token estimate is the
//! one budget admission uses ([`budget::token_bound`]: prompt + output cap × `n`), counted only
//! when a TPM rule applies — and the engine's answer into HTTP:
//! - admitted: the token hold is handed back to ride on the request's pending row (settled
//!   with the row's actual input + output tokens on every exit, `Drop` included) and the
//!   response gets OpenAI's six
//!   `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers for the tightest rule;
//! - refused: `429 rate_limit_exceeded` with `Retry-After` (whole seconds until the binding
//!   rule has room for this request, ≥ 1) and the same headers; the row is recorded as
//!   `rejected` with `rate_limited=<rule>` in its policy actions.
//!
//! A counter store that cannot answer (only possible with a remote store) fails open: the
//! request is admitted untracked and a warning is logged.

use axum::response::Response;
use serde_json::{Map, Value};
use tollgate_policy::ratelimit::WINDOW_MS;
use tollgate_policy::{Dimension, Quotas, RateAdmission, RateAsk, RateHold};
use tollgate_types::{ApiError, ErrorCode, LedgerRow, PolicyAction};

use crate::gateway::Gateway;
use crate::http::headers;
use crate::stages::budget::{self, Shape};
use crate::stages::target::Candidate;

/// The quotas an admitted request reports in its response headers (none when no rule applied).
#[derive(Debug, Default)]
#[must_use = "apply the rate-limit headers to the response"]
pub(crate) struct Limits(Quotas);

impl Limits {
    /// Adds the `x-ratelimit-*` headers to a response (before its body is sent: streams too).
    pub(crate) fn apply(&self, mut resp: Response) -> Response {
        headers::quotas(resp.headers_mut(), &self.0);
        resp
    }
}

/// An admitted request: its headers, and the token hold to settle when the row is recorded.
pub(crate) struct Admitted {
    pub(crate) limits: Limits,
    pub(crate) hold: Option<RateHold>,
}

/// A refused request: `429 rate_limit_exceeded`, answered with the same headers.
#[derive(Debug)]
pub(crate) struct Limited {
    pub(crate) error: ApiError,
    pub(crate) limits: Limits,
}

/// Checks and counts the request on every matching rate limit, on the routing the first
/// attempt will most likely get (`first`; nothing to count when no candidate is priced — the
/// request then fails `model_not_priced`). `body` is the canonical body before budget
/// admission.
pub(crate) fn admit(
    gw: &Gateway,
    row: &mut LedgerRow,
    first: Option<&Candidate>,
    body: &Map<String, Value>,
    shape: Shape,
) -> Result<Admitted, Box<Limited>> {
    let limits = &gw.0.rate_limits;
    let none = || Admitted {
        limits: Limits::default(),
        hold: None,
    };
    let Some(cand) = first else {
        return Ok(none());
    };
    if limits.is_empty() {
        return Ok(none());
    }
    let model = cand.logical.as_str();
    let tokens = if limits.wants_tokens(&row.attribution, model) {
        let mut b = budget::token_bound(gw, cand, body, shape);
        // A spend policy's cap is written into the body later, by budget admission.
        if let (Some(cap), Shape::Chat) = (cand.policy_cap, shape) {
            b.out_cap = b.out_cap.min(u64::from(cap));
        }
        b.tokens()
    } else {
        0
    };
    decide(gw, row, model, tokens)
}

/// Counts a request refused before stage 7 — an unknown model, a model the key may not use, a
/// body that does not parse — on the request-rate rules that match its attribution, so a
/// client cannot flood the gateway with requests that fail early for free. `Err` is the
/// `429` that then replaces the refusal.
pub(crate) fn count_refused(gw: &Gateway, row: &mut LedgerRow) -> Result<(), Box<Limited>> {
    if gw.0.rate_limits.is_empty() || row.attribution.key_id.is_none() {
        return Ok(());
    }
    let model = row.requested_model.clone().unwrap_or_default();
    if let Some(hold) = decide(gw, row, &model, 0)?.hold {
        gw.0.rate_limits.settle(hold, 0);
    }
    Ok(())
}

/// The engine's answer for `tokens` on `model`, in HTTP terms.
fn decide(
    gw: &Gateway,
    row: &mut LedgerRow,
    model: &str,
    tokens: u64,
) -> Result<Admitted, Box<Limited>> {
    let none = || Admitted {
        limits: Limits::default(),
        hold: None,
    };
    let ask = RateAsk {
        attribution: &row.attribution,
        model,
        tokens,
        now_ms: row.started_at_ms,
    };
    match gw.0.rate_limits.admit(&ask) {
        RateAdmission::Unlimited => Ok(none()),
        RateAdmission::Admitted { hold, quotas } => Ok(Admitted {
            limits: Limits(quotas),
            hold,
        }),
        RateAdmission::Unavailable { reason } => {
            tracing::warn!(%reason, "rate-limit counters unavailable; admitting untracked");
            Ok(none())
        }
        RateAdmission::Limited {
            rule,
            dimension,
            asked,
            limit,
            retry_after_ms,
            quotas,
        } => {
            row.policy_actions
                .push(PolicyAction::RateLimited(rule.to_string()));
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
                (Dimension::Concurrent, _) => format!(
                    "rate limit '{rule}' allows {limit} requests in flight at once and that \
                     many are running; retry when one has finished"
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
            Err(Box::new(Limited {
                error: ApiError::new(ErrorCode::RateLimitExceeded, message).with_retry_after(secs),
                limits: Limits(quotas),
            }))
        }
    }
}
