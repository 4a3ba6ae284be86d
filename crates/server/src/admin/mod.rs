//! The admin API (`/admin/v1/…`): one shape for every resource.
//!
//! - **Auth** is a layer ([`guard`]) over every admin route, not a call in each handler: it
//!   authenticates the caller — the master key (compared in constant time) or a live admin
//!   token (`tga-…`, [`tokens`]: looked up by its hash, hashes compared in constant time);
//!   without a master key configured the admin API answers `401` to everything, tokens
//!   included — and checks the caller's [`Role`] against the method in one line: a viewer may
//!   `GET`, only an admin may change anything (creating and revoking tokens included). An
//!   admin token may create another admin token; the audit trail names which token did.
//!   Virtual keys are no admin credential. Handlers that need to know who called take the
//!   [`Caller`] extension.
//! - **Lists** are `{"object": "list", "data": [...], "next_cursor": …}` with keyset
//!   pagination (`?limit=&cursor=`, [`list`]); an item that cannot be rendered is an error,
//!   never silently dropped.
//! - **Deletes** answer `{"id", "object", "deleted": true}` ([`deleted`]).
//! - **Changes** are written to the store first, then to memory, so a store error leaves both
//!   as they were. Each leaves one audit entry (who: the [`Caller`]'s actor, from its socket
//!   address; what, before and after), written in the store change's own transaction and
//!   listed at `GET /admin/v1/audit` ([`audit`]).
//! - **Errors** come from the error table; a store failure is `500 internal_error` with its
//!   cause in the log.
//!
//! Reads of the ledger first flush it, so a report includes every request that finished before
//! it was asked for.

pub(crate) mod audit;
pub(crate) mod budgets;
pub(crate) mod definitions;
pub(crate) mod deployments;
pub(crate) mod finance;
pub(crate) mod keys;
pub(crate) mod list;
pub(crate) mod policies;
pub(crate) mod reports;
pub(crate) mod stats;
pub(crate) mod tokens;

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tollgate_attribution::keys::{KEY_PREFIX, presented_key};
use tollgate_attribution::tokens::TokenFailure;
use tollgate_store::{Actor, Audit, StoreError, TokenRole};
use tollgate_types::{ApiError, ErrorCode};

use crate::gateway::{Gateway, now_ms};
use crate::http::error::ErrorResponse;

pub use finance::allocation_pools;
pub use keys::{key_view, rotation_grace, validate_new_key_models};
pub use reports::parse_time;

pub(crate) type AdminResult = Result<Response, ErrorResponse>;

/// What an admin caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Reads everything, changes everything.
    Admin,
    /// Reads everything, changes nothing.
    Viewer,
}

impl From<TokenRole> for Role {
    fn from(r: TokenRole) -> Role {
        match r {
            TokenRole::Admin => Role::Admin,
            TokenRole::Viewer => Role::Viewer,
        }
    }
}

impl Role {
    pub(crate) fn may(self, method: &Method) -> bool {
        match self {
            Role::Admin => true,
            Role::Viewer => matches!(*method, Method::GET | Method::HEAD),
        }
    }
}

/// The authenticated admin caller, in the request's extensions.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) role: Role,
    /// Who, for the audit trail: the master key, or an admin token by its id.
    pub(crate) actor: Actor,
    /// The client's socket address (absent only when the app is called without the
    /// listener, as in unit tests).
    pub(crate) address: Option<SocketAddr>,
}

impl Caller {
    /// Who changes something from where, at `at_ms`: the start of an audit entry.
    pub(crate) fn audit(&self, at_ms: i64) -> Audit {
        Audit {
            actor: self.actor.clone(),
            address: self.address.map(|a| a.to_string()),
            at_ms,
        }
    }
}

/// Who is calling, from the request's `Authorization` (or `x-api-key`) header.
fn authenticate(gw: &Gateway, headers: &HeaderMap) -> Result<(Role, Actor), ApiError> {
    authenticate_credential(gw, presented_key(headers))
}

/// Who a presented credential is: the master key is an admin; an admin token has its role.
/// Every refusal is `401 invalid_api_key`, saying only whether the token was revoked or
/// expired or the credential is invalid (never which part of a wrong one failed). The admin
/// guard and the dashboard's sign-in (`ui::auth`) both authenticate here.
pub(crate) fn authenticate_credential(
    gw: &Gateway,
    presented: &str,
) -> Result<(Role, Actor), ApiError> {
    let Some(master) = gw.settings().master_key.as_deref() else {
        return Err(ApiError::new(
            ErrorCode::InvalidApiKey,
            "the admin API is disabled: set server.master_key (e.g. master_key: ${TOLLGATE_MASTER_KEY})",
        ));
    };
    if presented.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidApiKey,
            "no admin credential: send 'Authorization: Bearer <master key or admin token>'",
        ));
    }
    if bool::from(presented.as_bytes().ct_eq(master.as_bytes())) {
        return Ok((Role::Admin, Actor::Master));
    }
    match gw.0.admin_tokens.authenticate(presented, now_ms()) {
        Ok(t) => Ok((t.role.into(), Actor::Token { id: t.id.clone() })),
        Err(f @ (TokenFailure::Revoked | TokenFailure::Expired)) => {
            Err(ApiError::new(ErrorCode::InvalidApiKey, f.to_string()))
        }
        Err(TokenFailure::Unknown) => {
            let hint = if presented.starts_with(KEY_PREFIX) {
                " (virtual keys are for /v1/…; the admin API takes the master key or an admin token)"
            } else {
                ""
            };
            Err(ApiError::new(
                ErrorCode::InvalidApiKey,
                format!(
                    "invalid admin credential: neither the master key nor a live admin token{hint}"
                ),
            ))
        }
    }
}

/// The admin routes' layer: authenticate, check the role against the method, pass the caller
/// on.
pub(crate) async fn guard(State(gw): State<Gateway>, mut req: Request, next: Next) -> Response {
    let caller = match authenticate(&gw, req.headers()) {
        Ok((role, actor)) => Caller {
            role,
            actor,
            address: req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        },
        Err(e) => return ErrorResponse(e).into_response(),
    };
    if !caller.role.may(req.method()) {
        return ErrorResponse(ApiError::new(
            ErrorCode::PermissionDenied,
            format!("a {:?} may read but not change anything", caller.role).to_lowercase(),
        ))
        .into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

pub(crate) fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound(what) => ApiError::new(ErrorCode::NotFound, what),
        StoreError::Conflict(what) => ApiError::new(ErrorCode::Conflict, what),
        StoreError::InvalidInput(what) => ApiError::new(ErrorCode::InvalidRequest, what),
        other => ApiError::internal(format!("store: {other}")),
    }
}

/// Runs a store call off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("store task: {e}")))?
        .map_err(store_error)
}

/// Waits until every row recorded so far is in the store.
pub(crate) async fn flush(gw: &Gateway) -> Result<(), ApiError> {
    gw.ledger()
        .flush()
        .await
        .map_err(|e| ApiError::internal(format!("ledger flush: {e}")))
}

pub(crate) fn rfc3339(ms: i64) -> Value {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| Value::String(t.to_string()))
        .unwrap_or(Value::Null)
}

/// A value's JSON, or an internal error naming what could not be rendered.
pub(crate) fn to_json(what: &str, v: &impl serde::Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::internal(format!("rendering {what}: {e}")))
}

/// The one delete answer: `{"id", "object", "deleted": true}`.
pub(crate) fn deleted(object: &str, id: &str) -> Response {
    Json(json!({"id": id, "object": object, "deleted": true})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_viewer_reads_and_changes_nothing() {
        for m in [Method::GET, Method::HEAD] {
            assert!(Role::Viewer.may(&m));
        }
        for m in [Method::POST, Method::PATCH, Method::DELETE, Method::PUT] {
            assert!(!Role::Viewer.may(&m));
            assert!(Role::Admin.may(&m));
        }
    }
}
