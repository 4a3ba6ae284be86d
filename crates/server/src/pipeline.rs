//! The admission steps shared by every data-plane route: authenticate, read the body, resolve
//! the model and deployment, resolve the price (fail-closed), and settle usage into the row.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::BodyExt;
use tollgate_attribution::keys::{AuthFailure, presented_key};
use tollgate_pricing::{DeploymentRef, ModelPrice, Resolution};
use tollgate_router::Deployment;
use tollgate_store::StoredKey;
use tollgate_types::{ApiError, ErrorCode, LedgerRow, Usage, UsageSource};

use crate::Gateway;
use crate::error::REQUEST_ID_HEADER;
use crate::state::now_ms;

pub const COST_HEADER: &str = "x-tollgate-cost-usd";
pub const SERVED_MODEL_HEADER: &str = "x-tollgate-served-model";
pub const PROVIDER_HEADER: &str = "x-tollgate-provider";

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

/// The deployment chosen for a request and what it costs.
pub struct Routed {
    pub deployment: Deployment,
    /// `None` when the model is unpriced and `pricing.unknown_model: allow`.
    pub price: Option<(ModelPrice, Arc<str>)>,
}

/// Resolves a logical model for `key`, picks a deployment and its price.
pub fn route(gw: &Gateway, key: &StoredKey, model: &str) -> Result<Routed, ApiError> {
    let Some(lm) = gw.0.router.get(model) else {
        return Err(ApiError::new(
            ErrorCode::ModelNotFound,
            format!("the model '{model}' does not exist or is not configured"),
        )
        .with_param("model"));
    };
    if !key.models.is_empty() && !key.models.iter().any(|m| m == model) {
        return Err(ApiError::new(
            ErrorCode::ModelNotAllowed,
            format!("this key may not use the model '{model}'"),
        )
        .with_param("model"));
    }
    let deployment = lm.pick().clone();
    let price = match gw.0.prices.resolve(
        model,
        &DeploymentRef {
            provider: &deployment.provider_name,
            model: &deployment.model,
        },
    ) {
        Resolution::Priced { price, version, .. } => Some((price, version)),
        Resolution::Unpriced { allowed: true } => None,
        Resolution::Unpriced { allowed: false } => {
            return Err(ApiError::new(
                ErrorCode::ModelNotPriced,
                format!(
                    "the model '{model}' (deployment '{}') has no price; add one under \
                     models.{model}.price or set pricing.unknown_model: allow",
                    deployment.label
                ),
            )
            .with_param("model"));
        }
    };
    Ok(Routed { deployment, price })
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

/// Fills the routing columns of a row.
pub fn note_route(row: &mut LedgerRow, routed: &Routed) {
    row.served_model = Some(routed.deployment.model.clone());
    row.provider = Some(routed.deployment.provider_name.clone());
    row.deployment = Some(routed.deployment.label.clone());
    row.attempts = 1;
    match &routed.price {
        Some((_, version)) => row.price_version = Some(version.to_string()),
        None => row.unpriced = true,
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
pub fn routed_headers(headers: &mut HeaderMap, request_id: &str, routed: &Routed) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
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
    routed_headers(h, request_id, routed);
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
