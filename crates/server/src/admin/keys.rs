//! `/admin/v1/keys`: virtual keys. A key is shown once, in the answer that creates it (or
//! rotates it); every other view has its prefix only, never the hash.
//!
//! **Rotation** (`POST /admin/v1/keys/{id}/rotate`, body `{"grace_secs": N}` optional) issues
//! a new secret under a new id for the same definition and lets the old key work for the grace
//! period (default 24 h, at most 30 days, 0 = stops at once): its expiry becomes now + grace,
//! never later than an expiry it already had.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use tollgate_attribution::keys::{self, NewKey};
use tollgate_store::{KeyAudit, StoredKey};
use tollgate_types::{ApiError, ErrorCode};

use crate::admin::list::{self, PageQuery};
use crate::admin::{AdminResult, Caller, blocking, deleted, rfc3339};
use crate::gateway::{Gateway, now_ms};
use crate::http::body;

/// Grace period of a rotated key when the request names none.
const DEFAULT_GRACE_SECS: u64 = 24 * 3600;
/// The longest grace period a rotation may give.
const MAX_GRACE_SECS: u64 = 30 * 24 * 3600;

/// The public view of a key: never the hash, never the key itself. The audit trail records
/// keys in this view too.
pub fn key_view(k: &StoredKey) -> Value {
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
        "rotated_to": k.rotated_to,
        "metadata": k.metadata,
    })
}

fn audited(caller: &Caller, at_ms: i64) -> KeyAudit {
    KeyAudit {
        audit: caller.audit(at_ms),
        view: key_view,
    }
}

/// A key's view with its plain text, for the one answer that shows it.
fn shown_once(record: &StoredKey, key: String) -> Value {
    let mut v = key_view(record);
    if let Value::Object(m) = &mut v {
        m.insert("key".into(), Value::String(key));
    }
    v
}

pub(crate) async fn create(
    State(gw): State<Gateway>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> AdminResult {
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
    let created = create_key(&gw, &caller, new).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Validates, issues, stores (audited as `caller`) and installs a key; returns its view with
/// the key itself, the one time it is shown. The admin API and the dashboard create keys here.
pub(crate) async fn create_key(
    gw: &Gateway,
    caller: &Caller,
    new: NewKey,
) -> Result<Value, ApiError> {
    validate_new_key_models(&|m| gw.0.router.get(m).is_some(), &new)?;
    let now = now_ms();
    let issued = keys::issue(new, now);
    let record = issued.record.clone();
    let store = gw.store().clone();
    let audit = audited(caller, now);
    blocking(move || store.insert_key(&record, Some(&audit))).await?;
    gw.reload_keys().await;
    Ok(shown_once(&issued.record, issued.key))
}

/// Rotates the key: `201` with the successor's view and its key (shown once) and the old
/// key's view as `previous`; `404` for an unknown id, `409` for a revoked, expired or already
/// rotated key, `400` for a bad `grace_secs`.
pub(crate) async fn rotate(
    State(gw): State<Gateway>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Body,
) -> AdminResult {
    let bytes = body::read(
        body,
        gw.settings().max_body_bytes,
        gw.settings().limits.body_read_timeout,
    )
    .await?;
    let grace_secs = grace_secs(&bytes)?;
    let store = gw.store().clone();
    let old = blocking({
        let (store, id) = (store.clone(), id.clone());
        move || store.get_key(&id)
    })
    .await
    .map_err(|e| match e.code {
        ErrorCode::NotFound => ApiError::new(ErrorCode::NotFound, format!("no key with id '{id}'")),
        _ => e,
    })?;
    let now = now_ms();
    let next = keys::successor(&old, now);
    let grace_ms = i64::try_from(grace_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let record = next.record.clone();
    let audit = audited(&caller, now);
    let previous = blocking(move || {
        store.rotate_key(
            &id,
            &record,
            now.saturating_add(grace_ms),
            now,
            Some(&audit),
        )
    })
    .await?;
    gw.reload_keys().await;
    let mut v = shown_once(&next.record, next.key);
    if let Value::Object(m) = &mut v {
        m.insert("previous".into(), key_view(&previous));
    }
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// The rotation body: empty, or `{"grace_secs": N}` with `0 <= N <= 30 days`.
fn grace_secs(bytes: &[u8]) -> Result<u64, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(DEFAULT_GRACE_SECS);
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("invalid rotation request: {e}"),
        )
    })?;
    let Value::Object(m) = v else {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "the rotation request must be a JSON object such as {\"grace_secs\": 3600}",
        ));
    };
    if let Some(other) = m.keys().find(|k| k.as_str() != "grace_secs") {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("unknown field '{other}' in the rotation request; expected 'grace_secs'"),
        )
        .with_param(other.as_str()));
    }
    match m.get("grace_secs") {
        None | Some(Value::Null) => rotation_grace(None),
        Some(g) => g
            .as_u64()
            .ok_or_else(|| bad_grace(&g.to_string()))
            .and_then(|n| rotation_grace(Some(n))),
    }
}

/// A rotation's grace period in seconds: the default (24 h) for `None`, refused past 30 days.
/// Shared by the admin API and the CLI.
pub fn rotation_grace(secs: Option<u64>) -> Result<u64, ApiError> {
    match secs {
        None => Ok(DEFAULT_GRACE_SECS),
        Some(n) if n <= MAX_GRACE_SECS => Ok(n),
        Some(n) => Err(bad_grace(&n.to_string())),
    }
}

fn bad_grace(got: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidRequest,
        format!("'grace_secs' must be an integer from 0 to {MAX_GRACE_SECS} (30 days), got {got}"),
    )
    .with_param("grace_secs")
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
    Ok(Json(list_value(&gw, &q).await?).into_response())
}

/// The answer of `GET /admin/v1/keys` for the query parameters `q`.
pub(crate) async fn list_value(
    gw: &Gateway,
    q: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let page = PageQuery::from_query(q)?;
    let include = list::include_revoked(q);
    let store = gw.store().clone();
    let all = blocking(move || store.list_keys(include)).await?;
    let (keys, next) = list::page(all, |k| list::by_creation(k.created_at_ms, &k.id), &page)?;
    Ok(list::body(keys.iter().map(key_view).collect(), next))
}

pub(crate) async fn get(State(gw): State<Gateway>, Path(id): Path<String>) -> AdminResult {
    let store = gw.store().clone();
    let k = blocking(move || store.get_key(&id)).await?;
    Ok(Json(key_view(&k)).into_response())
}

/// Revokes the key (the row stays, for the ledger's attribution).
pub(crate) async fn delete(
    State(gw): State<Gateway>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> AdminResult {
    revoke_key(&gw, &caller, &id).await?;
    Ok(deleted("key", &id))
}

/// Revokes key `id` (audited as `caller`) and reloads the index; `404` when no active key has
/// that id. The admin API and the dashboard revoke keys here.
pub(crate) async fn revoke_key(gw: &Gateway, caller: &Caller, id: &str) -> Result<(), ApiError> {
    let store = gw.store().clone();
    let id2 = id.to_string();
    let now = now_ms();
    let audit = audited(caller, now);
    let revoked = blocking(move || store.revoke_key(&id2, now, Some(&audit))).await?;
    if !revoked {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no active key with id '{id}'"),
        ));
    }
    gw.reload_keys().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_secs_defaults_bounds_and_names_its_param() {
        assert_eq!(grace_secs(b"").unwrap(), DEFAULT_GRACE_SECS);
        assert_eq!(grace_secs(b" {} ").unwrap(), DEFAULT_GRACE_SECS);
        assert_eq!(
            grace_secs(br#"{"grace_secs": null}"#).unwrap(),
            DEFAULT_GRACE_SECS
        );
        assert_eq!(grace_secs(br#"{"grace_secs": 0}"#).unwrap(), 0);
        assert_eq!(
            grace_secs(format!(r#"{{"grace_secs": {MAX_GRACE_SECS}}}"#).as_bytes()).unwrap(),
            MAX_GRACE_SECS
        );
        for bad in [
            r#"{"grace_secs": -1}"#,
            r#"{"grace_secs": 1.5}"#,
            r#"{"grace_secs": "60"}"#,
            r#"{"grace_secs": 2592001}"#,
        ] {
            let e = grace_secs(bad.as_bytes()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{bad}");
            assert_eq!(e.param.as_deref(), Some("grace_secs"), "{bad}");
        }
        let e = grace_secs(br#"{"grace": 1}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("grace"));
        assert_eq!(
            grace_secs(b"[1]").unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        assert_eq!(grace_secs(b"{").unwrap_err().code, ErrorCode::InvalidJson);
    }
}
