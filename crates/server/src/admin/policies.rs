//! `/admin/v1/policies`: spend policies at runtime (stored in the ledger database, overriding
//! the config file's by name), and the decision log.

use std::collections::HashMap;

use axum::extract::{Query, State};
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

    async fn install(gw: &Gateway, def: PolicyDef, audit: &Audit) -> Result<(), ApiError> {
        install(gw, def, audit).await
    }

    async fn remove(gw: &Gateway, name: &str, audit: &Audit) -> Result<(), ApiError> {
        let current = gw.policies().get(name);
        let change = entry(audit, Policies::OBJECT, name, current.as_ref(), None)?;
        put(gw, name, None, Some(change)).await?;
        gw.policies().remove(name);
        Ok(())
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
    let change = entry(
        audit,
        Policies::OBJECT,
        &name,
        previous.as_ref(),
        Some(&def),
    )?;
    let undo = entry(
        audit,
        Policies::OBJECT,
        &name,
        Some(&def),
        previous.as_ref(),
    )?;
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
    let page = PageQuery::from_query(&q)?;
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
    Ok(list::respond(data, next))
}
