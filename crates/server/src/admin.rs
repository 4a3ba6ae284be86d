//! The admin API (`/admin/v1/…`): virtual keys, spend reports, ledger rows.
//!
//! Every route needs `Authorization: Bearer <master key>`, compared in constant time. Without a
//! configured master key the admin API answers 401 to everything. Reads first flush the ledger
//! so a report includes every request that finished before it was asked for.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tollgate_attribution::keys::{self, NewKey};
use tollgate_store::{Dim, Page, RowFilter, SpendQuery, StoreError, StoredKey};
use tollgate_types::{ApiError, ErrorCode, Outcome};

use crate::Gateway;
use crate::error::ErrorResponse;
use crate::pipeline;
use crate::state::now_ms;

type AdminResult = Result<Response, ErrorResponse>;

fn check_master(gw: &Gateway, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(master) = gw.settings().master_key.as_deref() else {
        return Err(ApiError::new(
            ErrorCode::InvalidApiKey,
            "the admin API is disabled: set server.master_key (e.g. master_key: ${TOLLGATE_MASTER_KEY})",
        ));
    };
    let presented = keys::presented_key(headers);
    if presented.is_empty() || !bool::from(presented.as_bytes().ct_eq(master.as_bytes())) {
        return Err(ApiError::new(
            ErrorCode::InvalidApiKey,
            "invalid master key",
        ));
    }
    Ok(())
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound(what) => ApiError::new(ErrorCode::NotFound, what),
        StoreError::Conflict(what) => ApiError::new(ErrorCode::Conflict, what),
        StoreError::InvalidInput(what) => ApiError::new(ErrorCode::InvalidRequest, what),
        other => {
            tracing::error!(error = %other, "store error");
            ApiError::new(
                ErrorCode::InternalError,
                "database error; see the gateway log",
            )
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::new(ErrorCode::InternalError, "internal error"))?
        .map_err(store_error)
}

fn rfc3339(ms: i64) -> Value {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| Value::String(t.to_string()))
        .unwrap_or(Value::Null)
}

/// The public view of a key: never the hash, never the key itself.
fn key_view(k: &StoredKey) -> Value {
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

pub async fn create_key(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> AdminResult {
    check_master(&gw, &headers)?;
    let bytes = pipeline::read_body(body, gw.settings().max_body_bytes).await?;
    let new: NewKey = serde_json::from_slice(&bytes).map_err(|e| {
        let code = if e.is_syntax() || e.is_eof() {
            ErrorCode::InvalidJson
        } else {
            ErrorCode::InvalidRequest
        };
        ApiError::new(code, format!("invalid key request: {e}"))
    })?;
    validate_new_key(&gw, &new)?;
    let issued = keys::issue(new, now_ms());
    let record = issued.record.clone();
    let store = gw.store().clone();
    blocking(move || store.insert_key(&record)).await?;
    gw.reload_keys().await;
    let mut view = key_view(&issued.record);
    if let Value::Object(m) = &mut view {
        m.insert("key".into(), Value::String(issued.key));
    }
    Ok((StatusCode::CREATED, Json(view)).into_response())
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

fn validate_new_key(gw: &Gateway, new: &NewKey) -> Result<(), ApiError> {
    validate_new_key_models(&|m| gw.0.router.get(m).is_some(), new)
}

pub async fn list_keys(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> AdminResult {
    check_master(&gw, &headers)?;
    let include = q
        .get("include_revoked")
        .is_some_and(|v| v == "true" || v == "1");
    let store = gw.store().clone();
    let keys = blocking(move || store.list_keys(include)).await?;
    Ok(
        Json(json!({"object": "list", "data": keys.iter().map(key_view).collect::<Vec<_>>()}))
            .into_response(),
    )
}

pub async fn get_key(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> AdminResult {
    check_master(&gw, &headers)?;
    let store = gw.store().clone();
    let k = blocking(move || store.get_key(&id)).await?;
    Ok(Json(key_view(&k)).into_response())
}

pub async fn revoke_key(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> AdminResult {
    check_master(&gw, &headers)?;
    let store = gw.store().clone();
    let id2 = id.clone();
    let revoked = blocking(move || store.revoke_key(&id2, now_ms())).await?;
    if !revoked {
        return Err(
            ApiError::new(ErrorCode::NotFound, format!("no active key with id '{id}'")).into(),
        );
    }
    gw.reload_keys().await;
    Ok(Json(json!({"id": id, "revoked": true})).into_response())
}

/// Parses `from`/`to`: RFC 3339 timestamp, `YYYY-MM-DD` (UTC midnight), or Unix milliseconds.
pub fn parse_time(param: &str, s: &str) -> Result<i64, ApiError> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>()
        && let Ok(z) = d.to_zoned(jiff::tz::TimeZone::UTC)
    {
        return Ok(z.timestamp().as_millisecond());
    }
    Err(ApiError::new(
        ErrorCode::InvalidRequest,
        format!("'{param}' must be an RFC 3339 timestamp, a YYYY-MM-DD date or Unix milliseconds"),
    )
    .with_param(param))
}

/// Builds a row filter from query parameters shared by `spend` and `requests`.
fn row_filter(q: &HashMap<String, String>) -> Result<RowFilter, ApiError> {
    let get = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    let outcome = match get("outcome") {
        Some(o) => Some(Outcome::parse(&o.to_ascii_lowercase()).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                "'outcome' must be ok, rejected, failed or cancelled",
            )
            .with_param("outcome")
        })?),
        None => None,
    };
    let status = match get("status") {
        Some(s) => Some(s.parse::<u16>().map_err(|_| {
            ApiError::new(ErrorCode::InvalidRequest, "'status' must be an HTTP status")
                .with_param("status")
        })?),
        None => None,
    };
    Ok(RowFilter {
        key_id: get("key_id"),
        team: get("team"),
        tenant: get("tenant"),
        feature: get("feature"),
        user: get("user"),
        model: get("model"),
        provider: get("provider"),
        outcome,
        status,
        from_ms: get("from").map(|v| parse_time("from", &v)).transpose()?,
        to_ms: get("to").map(|v| parse_time("to", &v)).transpose()?,
    })
}

async fn flush(gw: &Gateway) -> Result<(), ApiError> {
    gw.ledger().flush().await.map_err(|e| {
        tracing::error!(error = %e, "ledger flush failed");
        ApiError::new(ErrorCode::InternalError, "the ledger could not be flushed")
    })
}

pub async fn spend(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> AdminResult {
    check_master(&gw, &headers)?;
    let group_by = match q.get("group_by").filter(|s| !s.is_empty()) {
        Some(s) => {
            let mut dims = Dim::parse_list(s).map_err(|e| {
                ApiError::new(ErrorCode::InvalidRequest, e.to_string()).with_param("group_by")
            })?;
            let mut seen = Vec::new();
            dims.retain(|d| {
                let first = !seen.contains(d);
                seen.push(*d);
                first
            });
            dims
        }
        None => Vec::new(),
    };
    let filter = row_filter(&q)?;
    let query = SpendQuery {
        group_by: group_by.clone(),
        from_ms: filter.from_ms,
        to_ms: filter.to_ms,
        filter,
    };
    flush(&gw).await?;
    let store = gw.store().clone();
    let rows = blocking(move || store.spend(&query)).await?;
    let total_cost: tollgate_types::NanoUsd = rows.iter().map(|r| r.effective_cost).sum();
    let total_requests: u64 = rows.iter().map(|r| r.requests).sum();
    let data: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut m = serde_json::Map::new();
            for (k, v) in &r.dims {
                m.insert(k.clone(), Value::String(v.clone()));
            }
            m.insert("requests".into(), r.requests.into());
            m.insert("input_tokens".into(), r.input_tokens.into());
            m.insert("cached_input_tokens".into(), r.cached_input_tokens.into());
            m.insert(
                "cache_write_input_tokens".into(),
                r.cache_write_input_tokens.into(),
            );
            m.insert("output_tokens".into(), r.output_tokens.into());
            m.insert("reasoning_tokens".into(), r.reasoning_tokens.into());
            m.insert("list_cost_usd".into(), r.list_cost.to_usd_string().into());
            m.insert("cost_usd".into(), r.effective_cost.to_usd_string().into());
            m.insert("estimated_rows".into(), r.estimated_rows.into());
            Value::Object(m)
        })
        .collect();
    Ok(Json(json!({
        "object": "spend_report",
        "group_by": group_by.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
        "data": data,
        "total": {"requests": total_requests, "cost_usd": total_cost.to_usd_string()},
    }))
    .into_response())
}

pub async fn requests(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> AdminResult {
    check_master(&gw, &headers)?;
    let filter = row_filter(&q)?;
    let limit = match q.get("limit").filter(|l| !l.is_empty()) {
        Some(l) => l.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                "'limit' must be a positive integer (at most 1000 rows are returned per page)",
            )
            .with_param("limit")
        })?,
        None => 100,
    };
    let page = Page {
        limit,
        cursor: q.get("cursor").filter(|c| !c.is_empty()).cloned(),
    };
    flush(&gw).await?;
    let store = gw.store().clone();
    let (rows, next) = blocking(move || store.list_requests(&filter, page)).await?;
    Ok(Json(json!({"object": "list", "data": rows, "next_cursor": next})).into_response())
}

// ---- budgets ----------------------------------------------------------------------------

fn def_error(e: tollgate_policy::DefError) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, e.to_string()).with_param(e.field)
}

fn budget_view(gw: &Gateway, name: &str) -> Result<Value, ApiError> {
    let status = gw
        .budgets()
        .status(name, now_ms())
        .map_err(|_| ApiError::new(ErrorCode::NotFound, format!("no budget named '{name}'")))?;
    let mut v = serde_json::to_value(&status)
        .map_err(|_| ApiError::new(ErrorCode::InternalError, "internal error"))?;
    if let Value::Object(m) = &mut v {
        m.insert("window_start".into(), rfc3339(status.window_start_ms));
        m.insert("window_end".into(), rfc3339(status.window_end_ms));
    }
    Ok(v)
}

/// Installs a definition, persists it, and seeds a new counter from the ledger.
async fn install_budget(gw: &Gateway, def: tollgate_policy::BudgetDef) -> Result<bool, ApiError> {
    let json = serde_json::to_string(&def)
        .map_err(|_| ApiError::new(ErrorCode::InternalError, "internal error"))?;
    let name = def.name.clone();
    let up = gw.budgets().upsert(def).map_err(def_error)?;
    if up.needs_seed {
        // The seed sums committed rows only, and rows are written asynchronously: without this
        // barrier, spend recorded just before the budget was created (settled before it
        // existed, so not counted live) would be missing from its counter for good.
        flush(gw).await?;
    }
    let store = gw.store().clone();
    let budgets = gw.budgets().clone();
    let needs_seed = up.needs_seed;
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        store
            .put_budget(&name, &json, now_ms())
            .map_err(|e| e.to_string())?;
        if needs_seed {
            crate::budget::seed_from_ledger(&budgets, &store, now_ms())?;
        }
        Ok(())
    })
    .await
    .map_err(|_| ApiError::new(ErrorCode::InternalError, "internal error"))?
    .map_err(|e| {
        tracing::error!(error = %e, "persisting or seeding a budget failed");
        ApiError::new(
            ErrorCode::InternalError,
            "the budget could not be stored or seeded",
        )
    })?;
    Ok(up.created)
}

/// Reads a definition body (budget or policy): UTF-8 JSON, syntax errors as `invalid_json`.
async fn read_definition(gw: &Gateway, body: Body) -> Result<String, ApiError> {
    let bytes = pipeline::read_body(body, gw.settings().max_body_bytes).await?;
    let text = String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::new(ErrorCode::InvalidJson, "the body is not UTF-8"))?;
    serde_json::from_str::<Value>(&text)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("invalid JSON: {e}")))?;
    Ok(text)
}

/// Applies a JSON merge patch (RFC 7396) read from `body` to `current`, refusing a rename.
/// Returns the merged definition as JSON text, for the definition's own parser to validate.
async fn patched_definition(
    gw: &Gateway,
    what: &str,
    name: &str,
    current: &impl serde::Serialize,
    body: Body,
) -> Result<String, ApiError> {
    let patch: Value = serde_json::from_str(&read_definition(gw, body).await?)
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
    let mut merged = serde_json::to_value(current)
        .map_err(|_| ApiError::new(ErrorCode::InternalError, "internal error"))?;
    merge_patch(&mut merged, &patch);
    Ok(merged.to_string())
}

pub async fn create_budget(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    body: Body,
) -> AdminResult {
    check_master(&gw, &headers)?;
    let text = read_definition(&gw, body).await?;
    let def = tollgate_policy::BudgetDef::from_json(&text).map_err(def_error)?;
    if gw.budgets().get(&def.name).is_some() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("a budget named '{}' exists; PATCH it instead", def.name),
        )
        .into());
    }
    let name = def.name.clone();
    install_budget(&gw, def).await?;
    Ok((StatusCode::CREATED, Json(budget_view(&gw, &name)?)).into_response())
}

/// `GET /admin/v1/deployments`: every deployment of every logical model with its live health —
/// breaker state, requests in flight, latency EWMAs, failure counts — and each model's routing
/// settings and stickiness table.
pub async fn deployments(State(gw): State<Gateway>, headers: HeaderMap) -> AdminResult {
    check_master(&gw, &headers)?;
    let now = std::time::Instant::now();
    let router = &gw.0.router;
    let mut data = Vec::new();
    for name in router.names() {
        let Some(m) = router.get(name) else { continue };
        for d in &m.deployments {
            data.push(json!({
                "model": name,
                "deployment": d.label,
                "provider": d.provider_name,
                "upstream_model": d.model,
                "weight": d.weight,
                "strategy": m.strategy.as_str(),
                "health": d.health.snapshot(now),
            }));
        }
    }
    let models: Vec<Value> = router
        .names()
        .filter_map(|name| {
            let m = router.get(name)?;
            let st = m.sticky_stats();
            Some(json!({
                "model": name,
                "strategy": m.strategy.as_str(),
                "fallbacks": m.fallbacks,
                "context_window_fallback": m.context_window_fallback,
                "sticky": {"entries": st.entries, "hits": st.hits, "moves": st.moves},
            }))
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data, "models": models})).into_response())
}

pub async fn list_budgets(State(gw): State<Gateway>, headers: HeaderMap) -> AdminResult {
    check_master(&gw, &headers)?;
    let data: Vec<Value> = gw
        .budgets()
        .defs()
        .iter()
        .filter_map(|d| budget_view(&gw, &d.name).ok())
        .collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

pub async fn get_budget(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> AdminResult {
    check_master(&gw, &headers)?;
    Ok(Json(budget_view(&gw, &name)?).into_response())
}

/// JSON merge patch (RFC 7396) over the current definition; the name cannot change.
pub async fn patch_budget(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> AdminResult {
    check_master(&gw, &headers)?;
    let Some(current) = gw.budgets().get(&name) else {
        return Err(ApiError::new(ErrorCode::NotFound, format!("no budget named '{name}'")).into());
    };
    let text = patched_definition(&gw, "budget", &name, &current, body).await?;
    let def = tollgate_policy::BudgetDef::from_json(&text).map_err(def_error)?;
    install_budget(&gw, def).await?;
    Ok(Json(budget_view(&gw, &name)?).into_response())
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

pub async fn delete_budget(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> AdminResult {
    check_master(&gw, &headers)?;
    if gw.budgets().remove(&name).is_none() {
        return Err(ApiError::new(ErrorCode::NotFound, format!("no budget named '{name}'")).into());
    }
    let store = gw.store().clone();
    let n = name.clone();
    blocking(move || store.delete_budget(&n)).await?;
    Ok(Json(json!({"name": name, "deleted": true})).into_response())
}

// ---- policies ---------------------------------------------------------------------------

fn policy_view(gw: &Gateway, name: &str) -> Result<Value, ApiError> {
    let def = gw
        .policies()
        .get(name)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no policy named '{name}'")))?;
    let mut v = serde_json::to_value(&def)
        .map_err(|_| ApiError::new(ErrorCode::InternalError, "internal error"))?;
    if let (Value::Object(m), Some(state)) = (&mut v, gw.policies().state(name)) {
        m.insert(
            "state".into(),
            json!({"instance": state.instance, "level": state.level, "steps": state.steps}),
        );
    }
    Ok(v)
}

async fn store_policy(gw: &Gateway, name: String, json: Option<String>) -> Result<(), ApiError> {
    let store = gw.store().clone();
    blocking(move || match json {
        Some(j) => store.put_definition(tollgate_store::Definitions::Policies, &name, &j, now_ms()),
        None => store
            .delete_definition(tollgate_store::Definitions::Policies, &name)
            .map(|_| ()),
    })
    .await
}

pub async fn create_policy(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    body: Body,
) -> AdminResult {
    check_master(&gw, &headers)?;
    let text = read_definition(&gw, body).await?;
    let def = tollgate_policy::rules::PolicyDef::from_json(&text).map_err(def_error)?;
    if gw.policies().get(&def.name).is_some() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("a policy named '{}' exists; PATCH it instead", def.name),
        )
        .into());
    }
    let name = def.name.clone();
    let json = serde_json::to_string(&def)
        .map_err(|_| ApiError::new(ErrorCode::InternalError, "internal error"))?;
    gw.policies().upsert(def).map_err(def_error)?;
    store_policy(&gw, name.clone(), Some(json)).await?;
    Ok((StatusCode::CREATED, Json(policy_view(&gw, &name)?)).into_response())
}

pub async fn list_policies(State(gw): State<Gateway>, headers: HeaderMap) -> AdminResult {
    check_master(&gw, &headers)?;
    let data: Vec<Value> = gw
        .policies()
        .defs()
        .iter()
        .filter_map(|d| policy_view(&gw, &d.name).ok())
        .collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

pub async fn get_policy(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> AdminResult {
    check_master(&gw, &headers)?;
    Ok(Json(policy_view(&gw, &name)?).into_response())
}

/// JSON merge patch over the current definition (e.g. `{"mode": "enforce"}` to turn a shadow
/// policy on); the name cannot change.
pub async fn patch_policy(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> AdminResult {
    check_master(&gw, &headers)?;
    let Some(current) = gw.policies().get(&name) else {
        return Err(ApiError::new(ErrorCode::NotFound, format!("no policy named '{name}'")).into());
    };
    let text = patched_definition(&gw, "policy", &name, &current, body).await?;
    let def = tollgate_policy::rules::PolicyDef::from_json(&text).map_err(def_error)?;
    gw.policies().upsert(def).map_err(def_error)?;
    store_policy(&gw, name.clone(), Some(text)).await?;
    Ok(Json(policy_view(&gw, &name)?).into_response())
}

pub async fn delete_policy(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> AdminResult {
    check_master(&gw, &headers)?;
    if gw.policies().remove(&name).is_none() {
        return Err(ApiError::new(ErrorCode::NotFound, format!("no policy named '{name}'")).into());
    }
    store_policy(&gw, name.clone(), None).await?;
    Ok(Json(json!({"name": name, "deleted": true})).into_response())
}

/// The decision log, newest first: `?policy=&limit=`.
pub async fn policy_decisions(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> AdminResult {
    check_master(&gw, &headers)?;
    let filter = tollgate_policy::rules::DecisionFilter {
        policy: q.get("policy").filter(|p| !p.is_empty()).cloned(),
        ..Default::default()
    };
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, 1000);
    let data = gw.policies().decisions(&filter, limit);
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}
