//! Stage 6, target: which logical model serves the request and which of its deployments may.
//!
//! After the spend policies ([`super::policy`]) the logical model is known: the requested one,
//! or a downgrade / reroute target. This stage resolves it (`404 model_not_found`), checks the
//! key may use it (`403 model_not_allowed`; a model chosen by policy is the operator's choice
//! and bypasses the key's list so a downgrade cannot be defeated by the key that triggered
//! it), reads the `x-tollgate-deployment` pin (`403 route_override_not_allowed` for keys
//! without `allow_route_override`) and computes the prompt-prefix stickiness key. The walk over
//! the ranked candidates is the exchange's (`exchange::attempts`); [`price`] turns one
//! candidate into a [`Candidate`] with its price, failing closed (`400 model_not_priced`).

use std::sync::Arc;

use axum::http::HeaderMap;
use serde_json::{Map, Value};
use tollgate_pricing::{DeploymentRef, ModelPrice, Resolution};
use tollgate_store::StoredKey;
use tollgate_types::{ApiError, ErrorCode, LedgerRow, UnitPrices, Usage, UsageSource};

use crate::gateway::{Deployment, Gateway, LogicalModel};
use crate::http::headers::DEPLOYMENT;
use crate::stages::auth;
use crate::stages::policy::Steer;

/// The logical model a request is served by, and what it asks of routing.
pub(crate) struct Target {
    pub(crate) model: Arc<LogicalModel>,
    /// An output cap a spend policy imposed.
    pub(crate) policy_cap: Option<u32>,
    /// A deployment label or provider name the key pinned.
    pub(crate) pinned: Option<String>,
    /// The prompt-prefix key for stickiness, when the model has it on and the prompt is long.
    pub(crate) sticky: Option<u64>,
    pub(crate) stream: bool,
}

/// What routing needs of the request beyond its model name.
pub(crate) struct Hints<'a> {
    pub(crate) headers: &'a HeaderMap,
    /// The canonical (OpenAI-shaped) chat body, for the stickiness key; `None` when the
    /// endpoint has no conversation (embeddings).
    pub(crate) conversation: Option<&'a Map<String, Value>>,
    pub(crate) stream: bool,
}

pub(crate) fn resolve(
    gw: &Gateway,
    key: &StoredKey,
    row: &LedgerRow,
    requested: &str,
    steer: Steer,
    hints: Hints<'_>,
) -> Result<Target, ApiError> {
    let by_policy = steer.model != requested;
    let name = steer.model.as_str();
    let Some(lm) = gw.0.router.get(name) else {
        return Err(auth::model_not_found(name));
    };
    if !by_policy && !auth::allows_model(key, name) {
        return Err(auth::model_not_allowed(name));
    }
    let pinned = match hints.headers.get(DEPLOYMENT) {
        None => None,
        Some(_) if !key.allow_route_override => {
            return Err(ApiError::new(
                ErrorCode::RouteOverrideNotAllowed,
                format!(
                    "this key may not choose the deployment ({DEPLOYMENT}); create it with \
                     allow_route_override"
                ),
            )
            .with_param(DEPLOYMENT));
        }
        Some(v) => {
            let p = v.to_str().map_err(|_| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("{DEPLOYMENT} is not valid text"),
                )
                .with_param(DEPLOYMENT)
            })?;
            if !lm
                .deployments
                .iter()
                .any(|d| d.label == p || d.provider_name == p)
            {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "{DEPLOYMENT}: the model '{name}' has no deployment or provider named \
                         '{p}'"
                    ),
                )
                .with_param(DEPLOYMENT));
            }
            Some(p.to_string())
        }
    };
    let sticky = match (lm.sticky_min_prefix_chars, hints.conversation) {
        (Some(min), Some(body)) => {
            let a = &row.attribution;
            let ns = a.tenant.as_deref().or(a.key_id.as_deref()).unwrap_or("");
            sticky_key(body, ns, name, min)
        }
        _ => None,
    };
    Ok(Target {
        model: lm.clone(),
        policy_cap: steer.cap,
        pinned,
        sticky,
        stream: hints.stream,
    })
}

/// One deployment chosen for an attempt, with what it costs.
pub(crate) struct Candidate {
    /// The logical model served: the requested one, one a spend policy chose, or a fallback.
    pub(crate) logical: String,
    /// An output cap a spend policy imposed (`cap_max_tokens`).
    pub(crate) policy_cap: Option<u32>,
    /// The logical model's configured default output cap.
    pub(crate) default_cap: Option<u32>,
    pub(crate) deployment: Deployment,
    /// `None` when the model is unpriced and `pricing.unknown_model: allow`.
    pub(crate) price: Option<(ModelPrice, Arc<str>)>,
    /// The logical model the deployment belongs to, and its index there (breakers, stickiness).
    pub(crate) model: Arc<LogicalModel>,
    pub(crate) index: usize,
}

impl Candidate {
    /// Fills the routing columns of the row: the deployment the request is (about to be)
    /// sent to, and the price table that prices it.
    pub(crate) fn note(&self, row: &mut LedgerRow) {
        row.served_model = Some(self.deployment.model.clone());
        row.provider = Some(self.deployment.provider_name.clone());
        row.deployment = Some(self.deployment.label.clone());
        match &self.price {
            Some((price, version)) => {
                row.price_version = Some(version.to_string());
                row.unpriced = false;
                row.unit_prices = Some(UnitPrices {
                    input: price.input,
                    cached_input: price.cached_input_or_input(),
                    cache_write: price.cache_write_or_input(),
                    output: price.output,
                });
            }
            None => {
                row.price_version = None;
                row.unpriced = true;
                row.unit_prices = None;
            }
        }
    }

    /// Counts an upstream call about to be made in the row (`attempts`, `attempted`).
    pub(crate) fn count_attempt(&self, row: &mut LedgerRow) {
        row.attempts += 1;
        if !row.attempted.is_empty() {
            row.attempted.push(',');
        }
        row.attempted.push_str(&self.deployment.label);
    }

    /// Fills usage and its cost at this deployment's price into the row.
    pub(crate) fn bill(&self, row: &mut LedgerRow, usage: Usage, source: UsageSource) {
        row.usage = usage;
        row.usage_source = source;
        if let Some((price, _)) = &self.price {
            let c = tollgate_pricing::cost(&usage, price);
            row.list_cost = c;
            row.effective_cost = c;
        }
    }
}

/// Prices deployment `di` of `model` (fail-closed) into a [`Candidate`].
pub(crate) fn price(
    gw: &Gateway,
    model: &Arc<LogicalModel>,
    di: usize,
    policy_cap: Option<u32>,
) -> Result<Candidate, ApiError> {
    let Some(deployment) = model.deployments.get(di).cloned() else {
        return Err(ApiError::internal(format!(
            "model '{}' has no deployment {di}",
            model.name
        )));
    };
    let name = &model.name;
    let price = match gw.0.prices.resolve(
        name,
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
                    "the model '{name}' (deployment '{}') has no price; add one under \
                     models.{name}.price or set pricing.unknown_model: allow",
                    deployment.label
                ),
            )
            .with_param("model"));
        }
    };
    Ok(Candidate {
        logical: name.clone(),
        policy_cap,
        default_cap: model.max_output_tokens,
        deployment,
        price,
        model: model.clone(),
        index: di,
    })
}

/// The prompt-prefix key of a chat request for stickiness: the conversation's opening (tools,
/// system messages and the first user turn), namespaced by tenant (or key) and model. `None`
/// when the prompt is too short for providers to cache.
pub(crate) fn sticky_key(
    body: &Map<String, Value>,
    namespace: &str,
    model: &str,
    min_chars: usize,
) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let messages = body.get("messages")?.as_array()?;
    let total: usize = messages.iter().map(content_len).sum();
    if total < min_chars {
        return None;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    namespace.hash(&mut h);
    model.hash(&mut h);
    if let Some(t) = body.get("tools") {
        t.to_string().hash(&mut h);
    }
    for m in messages {
        m.to_string().hash(&mut h);
        if m.get("role").and_then(|r| r.as_str()) == Some("user") {
            return Some(h.finish());
        }
    }
    None
}

fn content_len(m: &Value) -> usize {
    match m.get("content") {
        Some(Value::String(s)) => s.len(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
            .map(str::len)
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sticky_key_follows_the_conversation_opening() {
        let long = "x".repeat(5000);
        let turn1 = json!({"messages": [
            {"role": "system", "content": long},
            {"role": "user", "content": "hi"}
        ]});
        let turn2 = json!({"messages": [
            {"role": "system", "content": long},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "more"}
        ]});
        let k1 = sticky_key(turn1.as_object().unwrap(), "acme", "m", 4096);
        let k2 = sticky_key(turn2.as_object().unwrap(), "acme", "m", 4096);
        assert!(k1.is_some());
        assert_eq!(k1, k2);
        // Other tenants and other models never share a key.
        assert_ne!(
            k1,
            sticky_key(turn1.as_object().unwrap(), "other", "m", 4096)
        );
        assert_ne!(
            k1,
            sticky_key(turn1.as_object().unwrap(), "acme", "m2", 4096)
        );
        // Short prompts are not worth sticking.
        let short = json!({"messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(
            sticky_key(short.as_object().unwrap(), "acme", "m", 4096),
            None
        );
    }
}
