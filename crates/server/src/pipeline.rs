//! The admission steps shared by every data-plane route: authenticate, read the body, resolve
//! the model and deployment, resolve the price (fail-closed), and settle usage into the row.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;
use axum::response::Response;
use bytes::Bytes;
use http_body_util::BodyExt;
use tollgate_attribution::keys::{AuthFailure, presented_key};
use tollgate_pricing::ModelPrice;
use tollgate_router::{Deployment, LogicalModel};
use tollgate_store::StoredKey;
use tollgate_types::{ApiError, ErrorCode, LedgerRow, Outcome, Usage, UsageSource};

use crate::record::{CLIENT_CLOSED, PendingRow};

use crate::Gateway;
use crate::dispatch::{DEPLOYMENT_HEADER, Dispatch, Wish, sticky_key};
use crate::error::REQUEST_ID_HEADER;
use crate::state::now_ms;

pub const COST_HEADER: &str = "x-tollgate-cost-usd";
pub const SERVED_MODEL_HEADER: &str = "x-tollgate-served-model";
pub const PROVIDER_HEADER: &str = "x-tollgate-provider";
pub const POLICY_HEADER: &str = "x-tollgate-policy";

/// Authenticates the virtual key on the request.
pub fn authenticate(gw: &Gateway, headers: &HeaderMap) -> Result<Arc<StoredKey>, ApiError> {
    if gw.0.draining.is_cancelled() {
        return Err(ApiError::new(
            ErrorCode::ShuttingDown,
            "the gateway is shutting down; retry on another instance",
        ));
    }
    gw.0.keys
        .authenticate(presented_key(headers), now_ms())
        .map_err(|f| {
            let msg = match f {
                AuthFailure::Missing => f.to_string(),
                AuthFailure::Unknown => "invalid API key: unknown or revoked".to_string(),
                AuthFailure::Expired => f.to_string(),
            };
            ApiError::new(ErrorCode::InvalidApiKey, msg)
        })
}

/// Reads the request body, refusing more than `limit` bytes with `413`.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            ErrorCode::RequestTooLarge,
            format!("the request body exceeds the limit of {limit} bytes"),
        )),
        Err(e) => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("could not read the request body: {e}"),
        )),
    }
}

/// One attempt's routing: the deployment it goes to and what that costs.
pub struct Routed {
    /// The logical model served: the requested one, one a spend policy chose, or a fallback.
    pub logical: String,
    /// An output cap a spend policy imposed (`cap_max_tokens`).
    pub policy_cap: Option<u32>,
    /// The logical model's configured default output cap.
    pub default_cap: Option<u32>,
    pub deployment: Deployment,
    /// `None` when the model is unpriced and `pricing.unknown_model: allow`.
    pub price: Option<(ModelPrice, Arc<str>)>,
    /// The logical model the deployment belongs to, and its index there (breakers, stickiness).
    pub model: Arc<LogicalModel>,
    pub index: usize,
}

/// What the router needs to know of a request beyond its model name.
pub struct RouteHints<'a> {
    pub headers: &'a HeaderMap,
    /// The canonical (OpenAI-shaped) body, for the prompt-prefix stickiness key.
    pub body: Option<&'a serde_json::Map<String, serde_json::Value>>,
    pub stream: bool,
}

/// Runs the spend policies for the request (see `crate::policy`), then resolves the logical
/// model they leave — the requested one, or a downgrade / reroute target — for `key`, and
/// prepares the walk over its deployments and fallbacks ([`Dispatch`]).
pub fn route(
    gw: &Gateway,
    key: &StoredKey,
    row: &mut LedgerRow,
    requested: &str,
    hints: RouteHints<'_>,
) -> Result<Dispatch, ApiError> {
    let outcome = crate::policy::evaluate(gw, row, requested)?;
    // By policy: the operator chose the model, so the key's model list does not apply (a
    // downgrade must not be defeated by the key that triggered it).
    let by_policy = outcome.model != requested;
    let model = outcome.model.as_str();
    let Some(lm) = gw.0.router.get(model) else {
        return Err(ApiError::new(
            ErrorCode::ModelNotFound,
            format!("the model '{model}' does not exist or is not configured"),
        )
        .with_param("model"));
    };
    if !by_policy && !key.models.is_empty() && !key.models.iter().any(|m| m == model) {
        return Err(ApiError::new(
            ErrorCode::ModelNotAllowed,
            format!("this key may not use the model '{model}'"),
        )
        .with_param("model"));
    }
    let pinned = match hints.headers.get(DEPLOYMENT_HEADER) {
        None => None,
        Some(_) if !key.allow_route_override => {
            return Err(ApiError::new(
                ErrorCode::RouteOverrideNotAllowed,
                format!(
                    "this key may not choose the deployment ({DEPLOYMENT_HEADER}); create it \
                     with allow_route_override"
                ),
            )
            .with_param(DEPLOYMENT_HEADER));
        }
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("{DEPLOYMENT_HEADER} is not valid text"),
            )
            .with_param(DEPLOYMENT_HEADER)
        })?),
    };
    let sticky = match (lm.sticky_min_prefix_chars, hints.body) {
        (Some(min), Some(body)) => {
            let a = &row.attribution;
            let ns = a.tenant.as_deref().or(a.key_id.as_deref()).unwrap_or("");
            sticky_key(body, ns, model, min)
        }
        _ => None,
    };
    Dispatch::new(
        gw,
        model,
        lm.clone(),
        outcome.cap,
        Wish {
            pinned,
            sticky,
            stream: hints.stream,
        },
    )
}

/// Fills the key's attribution defaults into a row as soon as the key is known, so even a
/// request rejected later is attributed to its key's tenant and team.
pub fn note_key(row: &mut LedgerRow, key: &StoredKey) {
    let a = &mut row.attribution;
    a.key_id = Some(key.id.clone());
    a.key_name = Some(key.name.clone());
    a.tenant = key.tenant.clone();
    a.team = key.team.clone();
}

/// Counts an upstream call about to be made in the row (`attempts`, `attempted`).
pub fn note_attempt(row: &mut LedgerRow, routed: &Routed) {
    row.attempts += 1;
    if !row.attempted.is_empty() {
        row.attempted.push(',');
    }
    row.attempted.push_str(&routed.deployment.label);
}

/// Fills the routing columns of a row: the deployment the request is (about to be) sent to.
pub fn note_route(row: &mut LedgerRow, routed: &Routed) {
    row.served_model = Some(routed.deployment.model.clone());
    row.provider = Some(routed.deployment.provider_name.clone());
    row.deployment = Some(routed.deployment.label.clone());
    match &routed.price {
        Some((_, version)) => {
            row.price_version = Some(version.to_string());
            row.unpriced = false;
        }
        None => {
            row.price_version = None;
            row.unpriced = true;
        }
    }
}

/// Fills usage and cost into a row.
pub fn settle_usage(row: &mut LedgerRow, usage: Usage, source: UsageSource, routed: &Routed) {
    row.usage = usage;
    row.usage_source = source;
    if let Some((price, _)) = &routed.price {
        let c = tollgate_pricing::cost(&usage, price);
        row.list_cost = c;
        row.effective_cost = c;
    }
}

/// Headers every routed response carries.
pub fn routed_headers(headers: &mut HeaderMap, request_id: &str, routed: &Routed, row: &LedgerRow) {
    if let Some(v) = crate::budget::header_value(&row.policy_actions)
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        headers.insert(POLICY_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        // The OpenAI SDKs expose `x-request-id`, the Anthropic SDKs `request-id`.
        headers.insert("x-request-id", v.clone());
        headers.insert("request-id", v.clone());
        headers.insert(REQUEST_ID_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&routed.deployment.model) {
        headers.insert(SERVED_MODEL_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&routed.deployment.provider_name) {
        headers.insert(PROVIDER_HEADER, v);
    }
}

/// A complete JSON response with the routing and cost headers.
pub fn json_response(body: Bytes, request_id: &str, routed: &Routed, row: &LedgerRow) -> Response {
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    routed_headers(h, request_id, routed, row);
    if let Ok(v) = HeaderValue::from_str(&row.effective_cost.to_usd_string()) {
        h.insert(COST_HEADER, v);
    }
    resp
}

/// The request body with `model` replaced by the deployment's upstream model.
pub fn upstream_body(
    mut body: serde_json::Map<String, serde_json::Value>,
    routed: &Routed,
) -> serde_json::Map<String, serde_json::Value> {
    body.insert(
        "model".into(),
        serde_json::Value::String(routed.deployment.model.clone()),
    );
    body
}

/// The client's wire format, which decides the shape of errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenAi,
    Anthropic,
}

impl Format {
    pub fn error(self, error: ApiError, request_id: String) -> Response {
        match self {
            Format::OpenAi => crate::error::ErrorResponse {
                error,
                request_id: Some(request_id),
            }
            .into_response(),
            Format::Anthropic => crate::error::AnthropicError {
                error,
                request_id: Some(request_id),
            }
            .into_response(),
        }
    }
}

/// Records a refused or failed request and answers it in the client's format.
pub fn reject(
    rec: PendingRow,
    e: ApiError,
    request_id: String,
    outcome: Outcome,
    format: Format,
) -> Response {
    rec.fail(&e, outcome);
    format.error(e, request_id)
}

/// The client-facing error for an upstream failure, scrubbed of provider credentials.
pub fn upstream_error(gw: &Gateway, e: &tollgate_providers::UpstreamError) -> ApiError {
    let secrets: Vec<&str> = gw.0.secrets.iter().map(String::as_str).collect();
    let api = e.to_api_error(&secrets);
    tracing::debug!(provider = %e.provider, error = %api, "upstream call failed");
    api
}

/// Sets a flag when dropped unless disarmed: tells a detached task that the client is gone.
struct ClientWatch(Arc<AtomicBool>, bool);

impl Drop for ClientWatch {
    fn drop(&mut self) {
        if !self.1 {
            self.0.store(true, Ordering::Release);
        }
    }
}

/// Runs a non-streaming upstream exchange on a tracked task, so its usage is captured and its
/// row recorded even if the client disconnects while the model is generating (the provider
/// bills the whole answer either way). `work` receives a flag that turns true when the client
/// has gone; shutdown waits for these tasks.
pub async fn detached<F, Fut>(gw: &Gateway, request_id: String, format: Format, work: F) -> Response
where
    F: FnOnce(Arc<AtomicBool>) -> Fut,
    Fut: std::future::Future<Output = Response> + Send + 'static,
{
    let gone = Arc::new(AtomicBool::new(false));
    let mut watch = ClientWatch(gone.clone(), false);
    let out = gw.tasks().spawn(work(gone)).await;
    watch.1 = true;
    match out {
        Ok(resp) => resp,
        Err(join) => {
            tracing::error!(error = %join, request_id, "upstream task failed");
            format.error(
                ApiError::new(ErrorCode::InternalError, "internal error"),
                request_id,
            )
        }
    }
}

/// Settles a complete (non-streaming) answer into the row: usage, cost, latency to the
/// answer, and `cancelled` when the client left before it arrived.
pub fn settle_complete(
    rec: &mut PendingRow,
    usage: Usage,
    source: UsageSource,
    routed: &Routed,
    gone: &AtomicBool,
) {
    let started = rec.started();
    let row = rec.row();
    settle_usage(row, usage, source, routed);
    row.ttft_us = Some(started.elapsed().as_micros() as u64);
    if gone.load(Ordering::Acquire) {
        row.status = CLIENT_CLOSED;
        row.outcome = Outcome::Cancelled;
        row.error_code = Some("client_closed_request".into());
        row.error_origin = Some("client".into());
    } else {
        row.status = 200;
        row.outcome = Outcome::Ok;
    }
}

/// Tells a streamed attempt's breaker how the stream went: served (with its time to first
/// chunk and total time), failed upstream, or neither (cancelled by the client or a cap).
pub fn report_stream(
    attempt: tollgate_router::Attempt,
    s: &tollgate_metering::Settlement,
    t0: std::time::Instant,
) {
    let now = std::time::Instant::now();
    match (s.outcome, &s.error) {
        (Outcome::Ok, _) => attempt.success(
            s.first_byte_at.map(|t| t.saturating_duration_since(t0)),
            now.saturating_duration_since(t0),
            now,
        ),
        (Outcome::Failed, Some(e)) if e.code.origin() == tollgate_types::ErrorOrigin::Upstream => {
            attempt.failure(tollgate_router::Failure::Transient, now)
        }
        _ => drop(attempt),
    }
}

/// Settles a finished, failed or abandoned stream into its row and records it.
pub fn settle_stream(
    mut rec: PendingRow,
    s: &tollgate_metering::Settlement,
    routed: &Routed,
    started: std::time::Instant,
    cut: &tokio_util::sync::CancellationToken,
) {
    let row = rec.row();
    settle_usage(row, s.usage, s.usage_source, routed);
    row.outcome = s.outcome;
    if s.cut_at_cap {
        let note = "stream_cut_at_budget_cap";
        row.policy_actions = if row.policy_actions.is_empty() {
            note.to_string()
        } else {
            format!("{},{note}", row.policy_actions)
        };
    }
    row.ttft_us = s
        .first_byte_at
        .map(|t| t.saturating_duration_since(started).as_micros() as u64);
    match (&s.error, s.outcome) {
        (Some(e), _) => {
            row.error_code = Some(e.code.as_str().into());
            row.error_origin = Some(e.code.origin().as_str().into());
        }
        (None, Outcome::Cancelled) if cut.is_cancelled() => {
            let code = ErrorCode::ShuttingDown;
            row.error_code = Some(code.as_str().into());
            row.error_origin = Some(code.origin().as_str().into());
        }
        (None, Outcome::Cancelled) => {
            row.error_code = Some("client_closed_request".into());
            row.error_origin = Some("client".into());
        }
        _ => {}
    }
    rec.finish();
}
