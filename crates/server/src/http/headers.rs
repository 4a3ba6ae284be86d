//! Every header Tollgate reads or writes beyond HTTP's own, in one place (the names are public
//! contracts: `docs/contracts.md` §4).

use axum::http::{HeaderMap, HeaderValue, header};
use tollgate_policy::Quotas;
use tollgate_policy::ratelimit::format_reset;
use tollgate_types::{ApiError, ErrorCode, NanoUsd, PolicyActions};

/// The request's id: the `request_id` of its ledger row.
pub(crate) const REQUEST_ID: &str = "x-tollgate-request-id";
/// What a non-streaming answer cost (USD, exact decimal).
pub(crate) const COST: &str = "x-tollgate-cost-usd";
/// The upstream model that answered.
pub(crate) const SERVED_MODEL: &str = "x-tollgate-served-model";
/// The provider (config name) that answered.
pub(crate) const PROVIDER: &str = "x-tollgate-provider";
/// The policy actions applied to the request.
pub(crate) const POLICY: &str = "x-tollgate-policy";
/// `hit|miss|bypass` on the response when caching is on; `bypass` on the request opts out.
pub(crate) const CACHE: &str = "x-tollgate-cache";
/// Request header pinning a deployment (`provider/model` label) or a provider, for keys with
/// `allow_route_override`.
pub(crate) const DEPLOYMENT: &str = "x-tollgate-deployment";

pub(crate) const JSON: &str = "application/json";
pub(crate) const CSV: &str = "text/csv; charset=utf-8";
pub(crate) const PARQUET: &str = "application/vnd.apache.parquet";

/// A JSON body.
pub(crate) fn json_body(h: &mut HeaderMap) {
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
}

/// A server-sent event stream, which no intermediary may cache or buffer
/// (`x-accel-buffering: no` for nginx-style proxies).
pub(crate) fn event_stream(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
}

/// A file to save as `file_name` (a name the server built: no quotes or control bytes).
pub(crate) fn attachment(h: &mut HeaderMap, content_type: &'static str, file_name: &str) {
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
}

/// `[limit, remaining, reset]` rate-limit header names per dimension (OpenAI's).
const REQUEST_QUOTA: [&str; 3] = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
];
const TOKEN_QUOTA: [&str; 3] = [
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
];

/// The request id under Tollgate's name and under the names the official SDKs expose
/// (`x-request-id` for OpenAI's, `request-id` for Anthropic's).
pub(crate) fn request_id(h: &mut HeaderMap, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert("x-request-id", v.clone());
        h.insert("request-id", v.clone());
        h.insert(REQUEST_ID, v);
    }
}

/// Who answered: the upstream model and the provider.
pub(crate) fn served(h: &mut HeaderMap, model: &str, provider: &str) {
    if let Ok(v) = HeaderValue::from_str(model) {
        h.insert(SERVED_MODEL, v);
    }
    if let Ok(v) = HeaderValue::from_str(provider) {
        h.insert(PROVIDER, v);
    }
}

/// `x-tollgate-policy`, when an action was applied (soft and shadow notes never show).
pub(crate) fn policy(h: &mut HeaderMap, actions: &PolicyActions) {
    if let Some(v) = actions
        .header_value()
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        h.insert(POLICY, v);
    }
}

/// `x-tollgate-cache`, when caching is on for the model.
pub(crate) fn cache(h: &mut HeaderMap, status: Option<&str>) {
    if let Some(v) = status.and_then(|s| HeaderValue::from_str(s).ok()) {
        h.insert(CACHE, v);
    }
}

pub(crate) fn cost(h: &mut HeaderMap, cost: NanoUsd) {
    if let Ok(v) = HeaderValue::from_str(&cost.to_usd_string()) {
        h.insert(COST, v);
    }
}

/// OpenAI's six `x-ratelimit-*` headers for the tightest rule of each dimension.
pub(crate) fn quotas(h: &mut HeaderMap, q: &Quotas) {
    for (names, q) in [(REQUEST_QUOTA, &q.requests), (TOKEN_QUOTA, &q.tokens)] {
        let Some(q) = q else { continue };
        h.insert(names[0], HeaderValue::from(q.limit));
        h.insert(names[1], HeaderValue::from(q.remaining));
        if let Ok(v) = HeaderValue::from_str(&format_reset(q.reset_ms)) {
            h.insert(names[2], v);
        }
    }
}

/// `Retry-After` when the error knows a wait, and `x-should-retry: false` where retrying cannot
/// help (the SDKs retry 429 and 5xx by default).
pub(crate) fn retry_advice(h: &mut HeaderMap, error: &ApiError) {
    if let Some(secs) = error.retry_after_secs {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if matches!(
        error.code,
        ErrorCode::BudgetExceeded | ErrorCode::PolicyBlocked | ErrorCode::ShuttingDown
    ) {
        h.insert("x-should-retry", HeaderValue::from_static("false"));
    }
}

/// Whether the client asked not to use the response cache (`Cache-Control: no-cache` or
/// `no-store`, or `x-tollgate-cache: bypass`).
pub(crate) fn cache_opt_out(h: &HeaderMap) -> bool {
    let cc = h
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|d| d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("no-store"));
    cc || h
        .get(CACHE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("bypass"))
}
