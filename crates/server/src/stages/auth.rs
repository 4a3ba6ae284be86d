//! Stage 2, authenticate: the virtual key on the request (`Authorization: Bearer` or
//! `x-api-key`) → the stored key, or `401 invalid_api_key` (an admin token or the master key
//! is no virtual key); `503 shutting_down` once the gateway is draining.

use std::sync::Arc;

use axum::http::HeaderMap;
use tollgate_attribution::keys::{AuthFailure, presented_key};
use tollgate_attribution::tokens::TOKEN_PREFIX;
use tollgate_store::StoredKey;
use tollgate_types::{ApiError, ErrorCode, LedgerRow};

use crate::gateway::{Gateway, now_ms};

pub(crate) fn authenticate(gw: &Gateway, headers: &HeaderMap) -> Result<Arc<StoredKey>, ApiError> {
    if gw.0.draining.is_cancelled() {
        return Err(ApiError::new(
            ErrorCode::ShuttingDown,
            "the gateway is shutting down; retry on another instance",
        ));
    }
    let presented = presented_key(headers);
    gw.0.keys.authenticate(presented, now_ms()).map_err(|f| {
        let msg = match f {
            // Admin tokens are never data-plane credentials (a prefix check, on the
            // failure path only: it says nothing about whether the token is valid).
            AuthFailure::Unknown if presented.starts_with(TOKEN_PREFIX) => {
                "invalid API key: admin tokens (tga-…) are for /admin/v1 only; \
                     use a virtual key (tg-…)"
                    .to_string()
            }
            AuthFailure::Unknown => "invalid API key: unknown or revoked".to_string(),
            AuthFailure::Missing | AuthFailure::Expired => f.to_string(),
        };
        ApiError::new(ErrorCode::InvalidApiKey, msg)
    })
}

/// Fills the key's attribution defaults into the row as soon as the key is known, so even a
/// request rejected later is attributed to its key's tenant and team.
pub(crate) fn note_key(row: &mut LedgerRow, key: &StoredKey) {
    let a = &mut row.attribution;
    a.key_id = Some(key.id.clone());
    a.key_name = Some(key.name.clone());
    a.tenant = key.tenant.clone();
    a.team = key.team.clone();
}

/// Whether the key may use the logical model `model` (an empty list allows every model).
pub(crate) fn allows_model(key: &StoredKey, model: &str) -> bool {
    key.models.is_empty() || key.models.iter().any(|m| m == model)
}

pub(crate) fn model_not_allowed(model: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ModelNotAllowed,
        format!("this key may not use the model '{model}'"),
    )
    .with_param("model")
}

pub(crate) fn model_not_found(model: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ModelNotFound,
        format!("the model '{model}' does not exist or is not configured"),
    )
    .with_param("model")
}
