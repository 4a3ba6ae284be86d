//! Definitions managed at runtime — budgets, spend policies — through one set of handlers:
//! `POST` (201, 409 on a duplicate name), `GET` one or a page of all (by name), `PATCH` as a
//! JSON merge patch (RFC 7396) over the current definition (the name cannot change), `DELETE`.
//! Definitions are JSON bodies whose errors name their field; each kind says how it is stored
//! and installed ([`Resource`]). Every change is audited as `<object>.create|update|delete`
//! with the definition before and after ([`entry`]), in the store write's transaction.

use std::collections::HashMap;
use std::future::Future;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::Value;
use tollgate_policy::DefError;
use tollgate_store::{Audit, AuditEntry};
use tollgate_types::{ApiError, ErrorCode};

use crate::admin::list::{self, PageQuery};
use crate::admin::{AdminResult, Caller, deleted, to_json};
use crate::gateway::Gateway;
use crate::gateway::now_ms;
use crate::http::body;

/// One kind of runtime definition.
pub(crate) trait Resource: Send + Sync + 'static {
    type Def: serde::Serialize + Send + Sync + 'static;
    /// The kind's name: the `object` of delete answers and the word in messages.
    const OBJECT: &'static str;

    /// Parses and validates a definition.
    fn parse(text: &str) -> Result<Self::Def, DefError>;
    fn name(def: &Self::Def) -> &str;
    fn get(gw: &Gateway, name: &str) -> Option<Self::Def>;
    fn all(gw: &Gateway) -> Vec<Self::Def>;
    /// The definition with its live state.
    fn view(gw: &Gateway, name: &str) -> Result<Value, ApiError>;
    /// The definition as the audit trail records it (kept forever, so with nothing that
    /// could be a credential): its JSON unless a kind says otherwise.
    fn audit_view(def: &Self::Def) -> Result<Value, ApiError> {
        to_json(Self::OBJECT, def)
    }
    /// Stores the definition with its audit entry, then installs it; a failure puts both back
    /// as they were (and audits putting the stored one back).
    fn install(
        gw: &Gateway,
        def: Self::Def,
        audit: &Audit,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// Deletes the stored definition (audited), then the installed one.
    fn remove(
        gw: &Gateway,
        name: &str,
        audit: &Audit,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
}

/// The audit entry of a change from `before` to `after` (`None`: absent), named
/// `<object>.create`, `.update` or `.delete` by which of the two exist.
pub(crate) fn entry<R: Resource>(
    audit: &Audit,
    name: &str,
    before: Option<&R::Def>,
    after: Option<&R::Def>,
) -> Result<AuditEntry, ApiError> {
    let verb = match (before, after) {
        (None, _) => "create",
        (Some(_), Some(_)) => "update",
        (Some(_), None) => "delete",
    };
    Ok(audit.entry(
        &format!("{}.{verb}", R::OBJECT),
        name,
        before.map(R::audit_view).transpose()?,
        after.map(R::audit_view).transpose()?,
    ))
}

pub(crate) fn not_found<R: Resource>(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no {} named '{name}'", R::OBJECT),
    )
}

pub(crate) async fn create<R: Resource>(
    State(gw): State<Gateway>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> AdminResult {
    let text = read(&gw, body).await?;
    let def = R::parse(&text).map_err(def_error)?;
    let name = R::name(&def).to_string();
    if R::get(&gw, &name).is_some() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("a {} named '{name}' exists; PATCH it instead", R::OBJECT),
        )
        .into());
    }
    R::install(&gw, def, &caller.audit(now_ms())).await?;
    Ok((StatusCode::CREATED, Json(R::view(&gw, &name)?)).into_response())
}

/// By name.
pub(crate) async fn list<R: Resource>(
    State(gw): State<Gateway>,
    Query(q): Query<HashMap<String, String>>,
) -> AdminResult {
    let page = PageQuery::from_query(&q)?;
    let (defs, next) = list::page(R::all(&gw), |d| R::name(d).to_string(), &page)?;
    let data = defs
        .iter()
        .map(|d| R::view(&gw, R::name(d)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(list::respond(data, next))
}

pub(crate) async fn get<R: Resource>(
    State(gw): State<Gateway>,
    Path(name): Path<String>,
) -> AdminResult {
    Ok(Json(R::view(&gw, &name)?).into_response())
}

pub(crate) async fn patch<R: Resource>(
    State(gw): State<Gateway>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Body,
) -> AdminResult {
    let Some(current) = R::get(&gw, &name) else {
        return Err(not_found::<R>(&name).into());
    };
    let text = patched(&gw, R::OBJECT, &name, &current, body).await?;
    let def = R::parse(&text).map_err(def_error)?;
    R::install(&gw, def, &caller.audit(now_ms())).await?;
    Ok(Json(R::view(&gw, &name)?).into_response())
}

pub(crate) async fn delete<R: Resource>(
    State(gw): State<Gateway>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> AdminResult {
    if R::get(&gw, &name).is_none() {
        return Err(not_found::<R>(&name).into());
    }
    R::remove(&gw, &name, &caller.audit(now_ms())).await?;
    Ok(deleted(R::OBJECT, &name))
}

pub(crate) fn def_error(e: DefError) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, e.to_string()).with_param(e.field)
}

/// Reads a definition body: UTF-8 JSON, syntax errors as `invalid_json`.
async fn read(gw: &Gateway, body: Body) -> Result<String, ApiError> {
    let bytes = body::read(
        body,
        gw.settings().max_body_bytes,
        gw.settings().limits.body_read_timeout,
    )
    .await?;
    let text = String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::new(ErrorCode::InvalidJson, "the body is not UTF-8"))?;
    serde_json::from_str::<Value>(&text)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("invalid JSON: {e}")))?;
    Ok(text)
}

/// Applies a JSON merge patch read from `body` to `current`, refusing a rename. Returns the
/// merged definition as JSON text, for the definition's own parser to validate.
async fn patched(
    gw: &Gateway,
    what: &str,
    name: &str,
    current: &impl serde::Serialize,
    body: Body,
) -> Result<String, ApiError> {
    let patch: Value = serde_json::from_str(&read(gw, body).await?)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("invalid JSON: {e}")))?;
    if !patch.is_object() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "the patch must be a JSON object",
        ));
    }
    if patch.get("name").is_some_and(|n| n.as_str() != Some(name)) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("a {what} cannot be renamed"),
        )
        .with_param("name"));
    }
    let mut merged = to_json(what, current)?;
    merge_patch(&mut merged, &patch);
    Ok(merged.to_string())
}

fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut v = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut v, &json!({"a": null, "b": {"c": 5}, "e": [1]}));
        assert_eq!(v, json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }
}
