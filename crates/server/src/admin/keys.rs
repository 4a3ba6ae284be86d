//! `/admin/v1/keys`: virtual keys. A key is shown once, in the answer that creates it; every
//! other view has its prefix only, never the hash.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use tollgate_attribution::keys::{self, NewKey};
use tollgate_store::StoredKey;
use tollgate_types::{ApiError, ErrorCode};

use crate::admin::list::{self, PageQuery};
use crate::admin::{AdminResult, blocking, deleted, rfc3339};
use crate::gateway::{Gateway, now_ms};
use crate::http::body;

/// The public view of a key: never the hash, never the key itself.
fn view(k: &StoredKey) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "key_prefix": k.key_prefix,
        "tenant": k.tenant,
        "team": k.team,
        "models": k.models,
        "allow_tenant_header": k.allow_tenant_header,
        "allowed_tenants": k.allowed_tenants,
        "allow_route_override": k.allow_route_override,
        "created_at": rfc3339(k.created_at_ms),
        "expires_at": k.expires_at_ms.map(rfc3339),
        "revoked_at": k.revoked_at_ms.map(rfc3339),
        "metadata": k.metadata,
    })
}

pub(crate) async fn create(State(gw): State<Gateway>, body: Body) -> AdminResult {
    let bytes = body::read(
        body,
        gw.settings().max_body_bytes,
        gw.settings().limits.body_read_timeout,
    )
    .await?;
    let new: NewKey = serde_json::from_slice(&bytes).map_err(|e| {
        let code = if e.is_syntax() || e.is_eof() {
            ErrorCode::InvalidJson
        } else {
            ErrorCode::InvalidRequest
        };
        ApiError::new(code, format!("invalid key request: {e}"))
    })?;
    validate_new_key_models(&|m| gw.0.router.get(m).is_some(), &new)?;
    let issued = keys::issue(new, now_ms());
    let record = issued.record.clone();
    let store = gw.store().clone();
    blocking(move || store.insert_key(&record)).await?;
    gw.reload_keys().await;
    let mut v = view(&issued.record);
    if let Value::Object(m) = &mut v {
        m.insert("key".into(), Value::String(issued.key));
    }
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// Checks shared by the admin API and the CLI.
pub fn validate_new_key_models(known: &dyn Fn(&str) -> bool, new: &NewKey) -> Result<(), ApiError> {
    if new.name.trim().is_empty() {
        return Err(
            ApiError::new(ErrorCode::InvalidRequest, "'name' must not be empty").with_param("name"),
        );
    }
    if let Some(m) = new.models.iter().find(|m| !known(m)) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("unknown model '{m}' in 'models'"),
        )
        .with_param("models"));
    }
    Ok(())
}

/// Oldest first (`?include_revoked=true` for revoked ones too).
pub(crate) async fn list(
    State(gw): State<Gateway>,
    Query(q): Query<HashMap<String, String>>,
) -> AdminResult {
    let page = PageQuery::from_query(&q)?;
    let include = q
        .get("include_revoked")
        .is_some_and(|v| v == "true" || v == "1");
    let store = gw.store().clone();
    let all = blocking(move || store.list_keys(include)).await?;
    // Creation time, zero-padded so the text order is the time order, then the id.
    let (keys, next) = list::page(all, |k| format!("{:020}/{}", k.created_at_ms, k.id), &page)?;
    Ok(list::respond(keys.iter().map(view).collect(), next))
}

pub(crate) async fn get(State(gw): State<Gateway>, Path(id): Path<String>) -> AdminResult {
    let store = gw.store().clone();
    let k = blocking(move || store.get_key(&id)).await?;
    Ok(Json(view(&k)).into_response())
}

/// Revokes the key (the row stays, for the ledger's attribution).
pub(crate) async fn delete(State(gw): State<Gateway>, Path(id): Path<String>) -> AdminResult {
    let store = gw.store().clone();
    let id2 = id.clone();
    let revoked = blocking(move || store.revoke_key(&id2, now_ms())).await?;
    if !revoked {
        return Err(
            ApiError::new(ErrorCode::NotFound, format!("no active key with id '{id}'")).into(),
        );
    }
    gw.reload_keys().await;
    Ok(deleted("key", &id))
}
