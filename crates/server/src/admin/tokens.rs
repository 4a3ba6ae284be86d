//! `/admin/v1/tokens`: admin tokens, the admin API's credentials besides the master key.
//!
//! `POST` with `{"name", "role": "admin" | "viewer", "expires_in_secs"?}` issues a token
//! (`tga-…`), shown once in that answer; every other view has its prefix only, never the hash.
//! A `viewer` reads every admin route and changes nothing (the guard refuses it every method
//! but `GET`); an `admin` may do what the master key does, including creating and revoking
//! tokens — an admin token may create another admin token, and the audit trail records which
//! token did (`{"kind": "token", "id"}`). `DELETE` revokes (the row stays, for the audit
//! trail); a revoked or expired token is refused at once in this process and within the store
//! poller's tick (250 ms) in any other gateway on the same database.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Map, Value, json};
use tollgate_attribution::tokens;
use tollgate_store::{AdminToken, TokenAudit, TokenRole};
use tollgate_types::{ApiError, ErrorCode};

use crate::admin::list::{self, PageQuery};
use crate::admin::{AdminResult, Caller, blocking, deleted, rfc3339};
use crate::gateway::{Gateway, now_ms};
use crate::http::body;

/// The longest lifetime a token may be given (ten years); without `expires_in_secs` it does
/// not expire.
pub(crate) const MAX_EXPIRES_IN_SECS: u64 = 10 * 365 * 24 * 3600;
/// The longest name, in characters.
const MAX_NAME_CHARS: usize = 200;

/// The public view of a token: never the hash, never the token itself. The audit trail
/// records tokens in this view too.
pub(crate) fn token_view(t: &AdminToken) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "role": t.role.as_str(),
        "token_prefix": t.token_prefix,
        "created_at": rfc3339(t.created_at_ms),
        "expires_at": t.expires_at_ms.map(rfc3339),
        "revoked_at": t.revoked_at_ms.map(rfc3339),
    })
}

fn audited(caller: &Caller, at_ms: i64) -> TokenAudit {
    TokenAudit {
        audit: caller.audit(at_ms),
        view: token_view,
    }
}

/// A validated creation request.
#[derive(Debug, PartialEq)]
struct NewToken {
    name: String,
    role: TokenRole,
    expires_in_secs: Option<u64>,
}

fn invalid(param: &str, message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message).with_param(param)
}

/// The creation body, each bad field refused naming it.
fn parse_new(bytes: &[u8]) -> Result<NewToken, ApiError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("invalid token request: {e}"),
        )
    })?;
    let Value::Object(m) = v else {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "the token request must be a JSON object such as {\"name\": \"dashboard\", \"role\": \"viewer\"}",
        ));
    };
    if let Some(other) = m
        .keys()
        .find(|k| !matches!(k.as_str(), "name" | "role" | "expires_in_secs"))
    {
        return Err(invalid(
            other,
            format!(
                "unknown field '{other}' in the token request; expected 'name', 'role' and optionally 'expires_in_secs'"
            ),
        ));
    }
    Ok(NewToken {
        name: name(&m)?,
        role: role(&m)?,
        expires_in_secs: expires_in(&m)?,
    })
}

fn name(m: &Map<String, Value>) -> Result<String, ApiError> {
    let n = m.get("name").and_then(Value::as_str).map(str::trim);
    match n {
        Some(n) if !n.is_empty() && n.chars().count() <= MAX_NAME_CHARS => Ok(n.to_string()),
        _ => Err(invalid(
            "name",
            format!("'name' must be a non-empty string of at most {MAX_NAME_CHARS} characters"),
        )),
    }
}

fn role(m: &Map<String, Value>) -> Result<TokenRole, ApiError> {
    m.get("role")
        .and_then(Value::as_str)
        .and_then(TokenRole::parse)
        .ok_or_else(|| {
            let got = m
                .get("role")
                .map_or("nothing".to_string(), Value::to_string);
            invalid(
                "role",
                format!("'role' must be \"admin\" or \"viewer\", got {got}"),
            )
        })
}

fn expires_in(m: &Map<String, Value>) -> Result<Option<u64>, ApiError> {
    match m.get("expires_in_secs") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_EXPIRES_IN_SECS).contains(n))
            .map(Some)
            .ok_or_else(|| {
                invalid(
                    "expires_in_secs",
                    format!(
                        "'expires_in_secs' must be an integer from 1 to {MAX_EXPIRES_IN_SECS} (ten years), got {v}"
                    ),
                )
            }),
    }
}

/// Issues a token: `201` with its view and the token (shown once).
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
    let new = parse_new(&bytes)?;
    let now = now_ms();
    let expires_at = new
        .expires_in_secs
        .map(|s| now.saturating_add(i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)));
    let issued = tokens::issue(&new.name, new.role, expires_at, now);
    let record = issued.record.clone();
    let store = gw.store().clone();
    let audit = audited(&caller, now);
    blocking(move || store.insert_admin_token(&record, Some(&audit))).await?;
    gw.reload_admin_tokens().await;
    let mut v = token_view(&issued.record);
    if let Value::Object(m) = &mut v {
        m.insert("token".into(), Value::String(issued.token));
    }
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// Oldest first (`?include_revoked=true` for revoked ones too).
pub(crate) async fn list(
    State(gw): State<Gateway>,
    Query(q): Query<HashMap<String, String>>,
) -> AdminResult {
    let page = PageQuery::from_query(&q)?;
    let include = list::include_revoked(&q);
    let store = gw.store().clone();
    let all = blocking(move || store.list_admin_tokens(include)).await?;
    let (items, next) = list::page(all, |t| list::by_creation(t.created_at_ms, &t.id), &page)?;
    Ok(list::respond(items.iter().map(token_view).collect(), next))
}

pub(crate) async fn get(State(gw): State<Gateway>, Path(id): Path<String>) -> AdminResult {
    let store = gw.store().clone();
    let t = blocking(move || store.get_admin_token(&id)).await?;
    Ok(Json(token_view(&t)).into_response())
}

/// Revokes the token (the row stays: the audit trail names it).
pub(crate) async fn delete(
    State(gw): State<Gateway>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> AdminResult {
    let store = gw.store().clone();
    let id2 = id.clone();
    let now = now_ms();
    let audit = audited(&caller, now);
    let revoked = blocking(move || store.revoke_admin_token(&id2, now, Some(&audit))).await?;
    if !revoked {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no active admin token with id '{id}'"),
        )
        .into());
    }
    gw.reload_admin_tokens().await;
    Ok(deleted("token", &id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_bodies_parse_and_bad_ones_name_their_param() {
        assert_eq!(
            parse_new(br#"{"name": " dash ", "role": "viewer"}"#).unwrap(),
            NewToken {
                name: "dash".into(),
                role: TokenRole::Viewer,
                expires_in_secs: None
            }
        );
        assert_eq!(
            parse_new(br#"{"name": "ops", "role": "admin", "expires_in_secs": 60}"#)
                .unwrap()
                .expires_in_secs,
            Some(60)
        );
        assert_eq!(
            parse_new(br#"{"name": "ops", "role": "admin", "expires_in_secs": null}"#)
                .unwrap()
                .expires_in_secs,
            None
        );
        for (body, param) in [
            (r#"{"role": "admin"}"#, "name"),
            (r#"{"name": "  ", "role": "admin"}"#, "name"),
            (r#"{"name": 7, "role": "admin"}"#, "name"),
            (r#"{"name": "x"}"#, "role"),
            (r#"{"name": "x", "role": "root"}"#, "role"),
            (r#"{"name": "x", "role": "Admin"}"#, "role"),
            (
                r#"{"name": "x", "role": "admin", "expires_in_secs": 0}"#,
                "expires_in_secs",
            ),
            (
                r#"{"name": "x", "role": "admin", "expires_in_secs": -5}"#,
                "expires_in_secs",
            ),
            (
                r#"{"name": "x", "role": "admin", "expires_in_secs": 1.5}"#,
                "expires_in_secs",
            ),
            (
                r#"{"name": "x", "role": "admin", "expires_in_secs": "60"}"#,
                "expires_in_secs",
            ),
            (
                r#"{"name": "x", "role": "admin", "expires_in_secs": 315360001}"#,
                "expires_in_secs",
            ),
            (r#"{"name": "x", "role": "admin", "scope": "all"}"#, "scope"),
        ] {
            let e = parse_new(body.as_bytes()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
        let long = format!(r#"{{"name": "{}", "role": "admin"}}"#, "n".repeat(201));
        assert_eq!(
            parse_new(long.as_bytes()).unwrap_err().param.as_deref(),
            Some("name")
        );
        assert_eq!(
            parse_new(b"[]").unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        assert_eq!(parse_new(b"{").unwrap_err().code, ErrorCode::InvalidJson);
        assert_eq!(parse_new(b"").unwrap_err().code, ErrorCode::InvalidJson);
    }
}
