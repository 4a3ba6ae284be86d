//! `/admin/v1/policies`: spend policies at runtime (stored in the ledger database, overriding
//! the config file's by name), and the decision log.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use tollgate_policy::DefError;
use tollgate_policy::rules::{DecisionFilter, PolicyDef};
use tollgate_store::{Audit, AuditEntry, Definitions};
use tollgate_types::{ApiError, ErrorCode};

use crate::admin::definitions::{Resource, def_error, entry, not_found};
use crate::admin::list::{self, PageQuery};
use crate::admin::{AdminResult, blocking, to_json};
use crate::gateway::{Gateway, now_ms};

pub(crate) struct Policies;

impl Resource for Policies {
    type Def = PolicyDef;
    const OBJECT: &'static str = "policy";

    fn parse(text: &str) -> Result<PolicyDef, DefError> {
        PolicyDef::from_json(text)
    }

    fn name(def: &PolicyDef) -> &str {
        &def.name
    }

    fn get(gw: &Gateway, name: &str) -> Option<PolicyDef> {
        gw.policies().get(name)
    }

    fn all(gw: &Gateway) -> Vec<PolicyDef> {
        gw.policies().defs()
    }

    fn view(gw: &Gateway, name: &str) -> Result<Value, ApiError> {
        view(gw, name)
    }

    /// Alert webhooks are often credentials themselves (a Slack or Teams incoming-webhook
    /// URL), and the audit trail is forever: it records a webhook's origin and a fingerprint.
    fn audit_view(def: &PolicyDef) -> Result<Value, ApiError> {
        let mut v = to_json("a policy", def)?;
        mask_webhooks(&mut v);
        Ok(v)
    }

    async fn install(gw: &Gateway, def: PolicyDef, audit: &Audit) -> Result<(), ApiError> {
        install(gw, def, audit).await
    }

    async fn remove(gw: &Gateway, name: &str, audit: &Audit) -> Result<(), ApiError> {
        let current = gw.policies().get(name);
        let change = entry::<Policies>(audit, name, current.as_ref(), None)?;
        put(gw, name, None, Some(change)).await?;
        gw.policies().remove(name);
        Ok(())
    }
}

/// Every `"webhook": URL` in `v` → `"scheme://host/… (sha256 abcd1234)"`: the origin says
/// where alerts go, the fingerprint (8 hex digits of the URL's SHA-256) tells two URLs apart,
/// and neither gives the URL back.
fn mask_webhooks(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match x {
                    Value::String(url) if k == "webhook" => *url = masked_url(url),
                    other => mask_webhooks(other),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask_webhooks),
        _ => {}
    }
}

fn masked_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    let fingerprint: String = tollgate_attribution::keys::hash_hex(url)
        .chars()
        .take(8)
        .collect();
    if scheme.is_empty() {
        format!("… (sha256 {fingerprint})")
    } else {
        format!("{scheme}://{host}/… (sha256 {fingerprint})")
    }
}

/// The definition and, once it has been evaluated, its ladder state.
fn view(gw: &Gateway, name: &str) -> Result<Value, ApiError> {
    let def = gw
        .policies()
        .get(name)
        .ok_or_else(|| not_found::<Policies>(name))?;
    let mut v = to_json("a policy", &def)?;
    if let (Value::Object(m), Some(state)) = (&mut v, gw.policies().state(name)) {
        m.insert(
            "state".into(),
            json!({"instance": state.instance, "level": state.level, "steps": state.steps}),
        );
    }
    Ok(v)
}

/// Writes (or deletes, `None`) a stored definition, with its audit entry.
async fn put(
    gw: &Gateway,
    name: &str,
    json: Option<String>,
    audit: Option<AuditEntry>,
) -> Result<(), ApiError> {
    let store = gw.store().clone();
    let name = name.to_string();
    blocking(move || match json {
        Some(j) => store.put_definition(Definitions::Policies, &name, &j, now_ms(), audit.as_ref()),
        None => store
            .delete_definition(Definitions::Policies, &name, audit.as_ref())
            .map(|_| ()),
    })
    .await
}

/// Stores the definition (audited), then installs it; a refusal by the engine puts the stored
/// one back (audited too).
async fn install(gw: &Gateway, def: PolicyDef, audit: &Audit) -> Result<(), ApiError> {
    let name = def.name.clone();
    let previous = gw.policies().get(&name);
    let json = serde_json::to_string(&def)
        .map_err(|e| ApiError::internal(format!("rendering policy '{name}': {e}")))?;
    let change = entry::<Policies>(audit, &name, previous.as_ref(), Some(&def))?;
    let undo = entry::<Policies>(audit, &name, Some(&def), previous.as_ref())?;
    put(gw, &name, Some(json), Some(change)).await?;
    if let Err(e) = gw.policies().upsert(def) {
        let back = previous
            .as_ref()
            .and_then(|d| serde_json::to_string(d).ok());
        if let Err(re) = put(gw, &name, back, Some(undo)).await {
            tracing::error!(policy = %name, error = %re, cause = ?re.cause, "restoring a stored policy failed");
        }
        return Err(def_error(e));
    }
    Ok(())
}

/// The decision log, newest first: `?policy=` and the list parameters. The cursor is the
/// sequence number of the last entry shown.
pub(crate) async fn decisions(
    State(gw): State<Gateway>,
    Query(q): Query<HashMap<String, String>>,
) -> AdminResult {
    Ok(Json(decisions_value(&gw, &q)?).into_response())
}

/// The answer of `GET /admin/v1/policies/decisions` for the query parameters `q`.
pub(crate) fn decisions_value(
    gw: &Gateway,
    q: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let page = PageQuery::from_query(q)?;
    let before_seq = match page.after()? {
        Some(s) => Some(s.parse::<u64>().map_err(|_| {
            ApiError::new(ErrorCode::InvalidRequest, "invalid page cursor").with_param("cursor")
        })?),
        None => None,
    };
    let filter = DecisionFilter {
        policy: q.get("policy").filter(|p| !p.is_empty()).cloned(),
        before_seq,
        ..Default::default()
    };
    let mut data = gw.policies().decisions(&filter, page.limit + 1);
    let next = if data.len() > page.limit {
        data.truncate(page.limit);
        data.last().map(|e| list::encode(&e.seq.to_string()))
    } else {
        None
    };
    let data = data
        .iter()
        .map(|e| to_json("a decision", e))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(list::body(data, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_are_masked_to_their_origin_and_a_fingerprint() {
        let url = "https://user:pw@hooks.example.com/services/T000/B000/SECRETtoken?x=1";
        let mut v = json!({"steps": [{"then": [{"alert": {"webhook": url}}, "block"]}],
                           "name": "webhook"});
        mask_webhooks(&mut v);
        let text = v.to_string();
        assert!(!text.contains("SECRET") && !text.contains("pw"), "{text}");
        let masked = v["steps"][0]["then"][0]["alert"]["webhook"]
            .as_str()
            .unwrap();
        assert!(
            masked.starts_with("https://hooks.example.com/… (sha256 "),
            "{masked}"
        );
        assert_ne!(
            masked,
            masked_url("https://hooks.example.com/services/other")
        );
        assert_eq!(v["name"], "webhook", "only webhook URLs are masked");
        assert!(!masked_url("no-scheme-secret").contains("secret"));
    }
}
