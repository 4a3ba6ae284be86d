//! Resolving a request's attribution `{key, team, tenant, feature, user, tags}`.
//!
//! Precedence (docs/contracts.md §1 "Attribution"): headers where the key allows them, then
//! the OpenAI body's `user` and `metadata`, then the key's defaults.
//! - tenant: `x-tollgate-tenant` only if the key has `allow_tenant_header` (and, when the key
//!   lists `allowed_tenants`, only one of those); otherwise the key's tenant. A header the key
//!   may not use is an error, not silently ignored — a SaaS backend that believes it is
//!   attributing per customer must find out at once. An empty `allowed_tenants` means any
//!   tenant, deliberately: such a key is a backend's, trusted to name its customers, and is
//!   created that way explicitly (`allow_tenant_header`); listing tenants restricts it.
//! - team: the key's team.
//! - feature: `x-tollgate-feature`, else `metadata.feature` in the body.
//! - user: `x-tollgate-user`, else the body's `user`, else `safety_identifier`.
//! - tags: the body's `metadata` string pairs, overridden by `x-tollgate-tags: k=v,k2=v2`.
//!
//! Values are 1–128 printable characters; an invalid one is a 400 naming the header or field.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use tollgate_store::StoredKey;
use tollgate_types::{ApiError, Attribution, ErrorCode};

pub const TENANT_HEADER: &str = "x-tollgate-tenant";
pub const FEATURE_HEADER: &str = "x-tollgate-feature";
pub const USER_HEADER: &str = "x-tollgate-user";
pub const TAGS_HEADER: &str = "x-tollgate-tags";

const MAX_VALUE_LEN: usize = 128;
const MAX_TAGS: usize = 32;

fn invalid(param: &str, why: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, format!("invalid {param}: {why}")).with_param(param)
}

fn check_value(param: &str, v: &str) -> Result<String, ApiError> {
    let v = v.trim();
    if v.is_empty() {
        return Err(invalid(param, "must not be empty"));
    }
    if v.chars().count() > MAX_VALUE_LEN {
        return Err(invalid(param, "longer than 128 characters"));
    }
    if v.chars().any(char::is_control) {
        return Err(invalid(param, "contains control characters"));
    }
    Ok(v.to_string())
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| invalid(name, "not valid visible ASCII")),
    }
}

/// Resolves the attribution of a request made with `key`. `body` is the JSON body when the
/// route has one.
pub fn resolve(
    key: &StoredKey,
    headers: &http::HeaderMap,
    body: Option<&Map<String, Value>>,
) -> Result<Attribution, ApiError> {
    let mut a = Attribution {
        key_id: Some(key.id.clone()),
        key_name: Some(key.name.clone()),
        team: key.team.clone(),
        tenant: key.tenant.clone(),
        ..Attribution::default()
    };

    if let Some(t) = header(headers, TENANT_HEADER)? {
        let t = check_value(TENANT_HEADER, t)?;
        if !key.allow_tenant_header {
            if key.tenant.as_deref() != Some(t.as_str()) {
                return Err(invalid(
                    TENANT_HEADER,
                    "this key may not set the tenant per request (create it with allow_tenant_header)",
                ));
            }
        } else if !key.allowed_tenants.is_empty() && !key.allowed_tenants.contains(&t) {
            return Err(invalid(
                TENANT_HEADER,
                "tenant not in this key's allowed_tenants",
            ));
        }
        a.tenant = Some(t);
    }

    let metadata = body
        .and_then(|b| b.get("metadata"))
        .and_then(Value::as_object);
    if let Some(md) = metadata {
        for (k, v) in md {
            if let Value::String(s) = v {
                if a.tags.len() >= MAX_TAGS {
                    break;
                }
                a.tags.insert(k.clone(), s.clone());
            }
        }
    }

    a.feature = match header(headers, FEATURE_HEADER)? {
        Some(f) => Some(check_value(FEATURE_HEADER, f)?),
        None => match metadata
            .and_then(|m| m.get("feature"))
            .and_then(Value::as_str)
        {
            Some(f) => Some(check_value("metadata.feature", f)?),
            None => None,
        },
    };
    a.tags.remove("feature");

    a.user = match header(headers, USER_HEADER)? {
        Some(u) => Some(check_value(USER_HEADER, u)?),
        None => {
            let from_body = body.and_then(|b| {
                b.get("user")
                    .and_then(Value::as_str)
                    .map(|u| ("user", u))
                    .or_else(|| {
                        b.get("safety_identifier")
                            .and_then(Value::as_str)
                            .map(|u| ("safety_identifier", u))
                    })
            });
            match from_body {
                Some((field, u)) if !u.trim().is_empty() => Some(check_value(field, u)?),
                _ => None,
            }
        }
    };

    if let Some(tags) = header(headers, TAGS_HEADER)? {
        for (k, v) in parse_tags(tags)? {
            a.tags.insert(k, v);
        }
    }
    if a.tags.len() > MAX_TAGS {
        return Err(invalid(TAGS_HEADER, "more than 32 tags"));
    }
    Ok(a)
}

/// Parses `k=v,k2=v2`. A key without `=` gets the value `true` (FOCUS's convention for
/// valueless tags).
pub fn parse_tags(s: &str) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, "true"));
        let k = check_value(TAGS_HEADER, k)?;
        let v = check_value(TAGS_HEADER, v)?;
        out.insert(k, v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(allow: bool, allowed: &[&str]) -> StoredKey {
        StoredKey {
            id: "key_1".into(),
            name: "backend".into(),
            key_hash: String::new(),
            key_prefix: "tg-000000".into(),
            tenant: Some("acme".into()),
            team: Some("growth".into()),
            models: vec![],
            allow_tenant_header: allow,
            allowed_tenants: allowed.iter().map(|s| s.to_string()).collect(),
            allow_route_override: false,
            created_at_ms: 0,
            expires_at_ms: None,
            revoked_at_ms: None,
            metadata: Value::Null,
            rotated_to: None,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn defaults_from_key_and_body() {
        let body: Map<String, Value> =
            serde_json::from_str(r#"{"user":"u-1","metadata":{"feature":"search","env":"prod"}}"#)
                .unwrap();
        let a = resolve(&key(false, &[]), &headers(&[]), Some(&body)).unwrap();
        assert_eq!(a.tenant.as_deref(), Some("acme"));
        assert_eq!(a.team.as_deref(), Some("growth"));
        assert_eq!(a.feature.as_deref(), Some("search"));
        assert_eq!(a.user.as_deref(), Some("u-1"));
        assert_eq!(a.tags.get("env").map(String::as_str), Some("prod"));
        assert!(!a.tags.contains_key("feature"));
    }

    #[test]
    fn headers_win() {
        let body: Map<String, Value> = serde_json::from_str(r#"{"user":"u-1"}"#).unwrap();
        let h = headers(&[
            (TENANT_HEADER, "globex"),
            (FEATURE_HEADER, "chat"),
            (USER_HEADER, "u-2"),
            (TAGS_HEADER, "env=stage, beta"),
        ]);
        let a = resolve(&key(true, &[]), &h, Some(&body)).unwrap();
        assert_eq!(a.tenant.as_deref(), Some("globex"));
        assert_eq!(a.feature.as_deref(), Some("chat"));
        assert_eq!(a.user.as_deref(), Some("u-2"));
        assert_eq!(a.tags.get("beta").map(String::as_str), Some("true"));
    }

    #[test]
    fn tenant_header_refused_unless_allowed() {
        let h = headers(&[(TENANT_HEADER, "globex")]);
        let e = resolve(&key(false, &[]), &h, None).unwrap_err();
        assert_eq!(e.param.as_deref(), Some(TENANT_HEADER));
        assert_eq!(e.status(), 400);
        let e = resolve(&key(true, &["initech"]), &h, None).unwrap_err();
        assert_eq!(e.param.as_deref(), Some(TENANT_HEADER));
        assert!(resolve(&key(true, &["globex"]), &h, None).is_ok());
        // Repeating the key's own tenant is harmless.
        let same = headers(&[(TENANT_HEADER, "acme")]);
        assert!(resolve(&key(false, &[]), &same, None).is_ok());
    }
}
