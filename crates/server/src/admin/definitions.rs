//! What budgets and policies share in the admin API: definitions as JSON bodies, JSON merge
//! patches (RFC 7396) over the current definition, definition errors naming their field.

use axum::body::Body;
use serde_json::Value;
use tollgate_types::{ApiError, ErrorCode};

use crate::admin::to_json;
use crate::gateway::Gateway;
use crate::http::body;

pub(crate) fn def_error(e: tollgate_policy::DefError) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, e.to_string()).with_param(e.field)
}

/// Reads a definition body: UTF-8 JSON, syntax errors as `invalid_json`.
pub(crate) async fn read(gw: &Gateway, body: Body) -> Result<String, ApiError> {
    let bytes = body::read(body, gw.settings().max_body_bytes).await?;
    let text = String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::new(ErrorCode::InvalidJson, "the body is not UTF-8"))?;
    serde_json::from_str::<Value>(&text)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("invalid JSON: {e}")))?;
    Ok(text)
}

/// Applies a JSON merge patch read from `body` to `current`, refusing a rename. Returns the
/// merged definition as JSON text, for the definition's own parser to validate.
pub(crate) async fn patched(
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
