//! `GET /admin/v1/audit`: the audit trail of admin changes, newest first, in the one list
//! shape. Filters: `actor` (`master`, `token`, `token:ID`, `cli`, `cli:USER`), `action`
//! (`key.rotate`, …), `resource_id` (a key id, a budget's or policy's name), `from`
//! (inclusive) and `to` (exclusive) in the reports' time forms. The cursor is the id of the
//! last entry shown. Entries are written by the store in each change's transaction
//! (`tollgate_store`'s `audit.rs`); this module only reads them.

use std::collections::HashMap;

use axum::extract::{Query, State};
use serde_json::{Value, json};
use tollgate_store::{AuditFilter, AuditRecord};
use tollgate_types::{ApiError, ErrorCode};

use crate::admin::list::{self, PageQuery};
use crate::admin::reports::parse_time;
use crate::admin::{AdminResult, blocking, rfc3339};
use crate::gateway::Gateway;

pub(crate) async fn list(
    State(gw): State<Gateway>,
    Query(q): Query<HashMap<String, String>>,
) -> AdminResult {
    let page = PageQuery::from_query(&q)?;
    let mut filter = filter(&q)?;
    filter.before_id = match page.after()? {
        Some(id) => Some(id.parse::<i64>().map_err(|_| {
            ApiError::new(ErrorCode::InvalidRequest, "invalid page cursor").with_param("cursor")
        })?),
        None => None,
    };
    let limit = page.limit;
    let store = gw.store().clone();
    let mut entries = blocking(move || store.list_audit(&filter, limit + 1)).await?;
    let next = if entries.len() > limit {
        entries.truncate(limit);
        entries.last().map(|e| list::encode(&e.id.to_string()))
    } else {
        None
    };
    Ok(list::respond(entries.iter().map(view).collect(), next))
}

fn view(r: &AuditRecord) -> Value {
    let e = &r.entry;
    json!({
        "id": r.id,
        "object": "audit_entry",
        "at": rfc3339(e.at_ms),
        "at_ms": e.at_ms,
        "actor": e.actor,
        "action": e.action,
        "resource_id": e.resource_id,
        "before": e.before,
        "after": e.after,
        "address": e.address,
    })
}

fn filter(q: &HashMap<String, String>) -> Result<AuditFilter, ApiError> {
    let get = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    let (actor_kind, actor_id) = match get("actor") {
        Some(a) => {
            let (kind, id) = match a.split_once(':') {
                Some((k, id)) => (k.to_string(), Some(id.to_string())),
                None => (a.clone(), None),
            };
            let valid = match kind.as_str() {
                "master" => id.is_none(),
                "token" | "cli" => id.as_deref().is_none_or(|i| !i.is_empty()),
                _ => false,
            };
            if !valid {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("'actor' must be master, token, token:ID, cli or cli:USER (got '{a}')"),
                )
                .with_param("actor"));
            }
            (Some(kind), id)
        }
        None => (None, None),
    };
    let from_ms = get("from").map(|v| parse_time("from", &v)).transpose()?;
    let to_ms = get("to").map(|v| parse_time("to", &v)).transpose()?;
    Ok(AuditFilter {
        actor_kind,
        actor_id,
        action: get("action"),
        resource_id: get("resource_id"),
        from_ms,
        to_ms,
        before_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn actor_filters_parse_and_bad_ones_name_the_param() {
        let f = filter(&q(&[("actor", "token:tok_1"), ("action", "key.create")])).unwrap();
        assert_eq!(f.actor_kind.as_deref(), Some("token"));
        assert_eq!(f.actor_id.as_deref(), Some("tok_1"));
        assert_eq!(f.action.as_deref(), Some("key.create"));
        let f = filter(&q(&[("actor", "master"), ("from", "2025-01-01")])).unwrap();
        assert_eq!(f.actor_kind.as_deref(), Some("master"));
        assert_eq!(f.from_ms, Some(1_735_689_600_000));
        for bad in ["root", "master:x", "cli:", "token:"] {
            let e = filter(&q(&[("actor", bad)])).unwrap_err();
            assert_eq!(e.param.as_deref(), Some("actor"), "{bad}");
        }
        let e = filter(&q(&[("to", "yesterday")])).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("to"));
    }
}
