//! `/admin/v1/budgets`: budgets at runtime. A definition is stored in the ledger database
//! (overriding the config file's by name), then installed in the engine; a budget whose
//! counter starts fresh is seeded from the ledger so spend already recorded in its window
//! counts.

use serde_json::Value;
use tollgate_policy::{BudgetDef, DefError};
use tollgate_store::{Audit, AuditEntry};
use tollgate_types::ApiError;

use crate::admin::definitions::{Resource, def_error, entry, not_found};
use crate::admin::{blocking, flush, rfc3339, to_json};
use crate::gateway::{Gateway, now_ms};

pub(crate) struct Budgets;

impl Resource for Budgets {
    type Def = BudgetDef;
    const OBJECT: &'static str = "budget";

    fn parse(text: &str) -> Result<BudgetDef, DefError> {
        BudgetDef::from_json(text)
    }

    fn name(def: &BudgetDef) -> &str {
        &def.name
    }

    fn get(gw: &Gateway, name: &str) -> Option<BudgetDef> {
        gw.budgets().get(name)
    }

    fn all(gw: &Gateway) -> Vec<BudgetDef> {
        gw.budgets().defs()
    }

    fn view(gw: &Gateway, name: &str) -> Result<Value, ApiError> {
        view(gw, name)
    }

    async fn install(gw: &Gateway, def: BudgetDef, audit: &Audit) -> Result<(), ApiError> {
        install(gw, def, audit).await
    }

    async fn remove(gw: &Gateway, name: &str, audit: &Audit) -> Result<(), ApiError> {
        let current = gw.budgets().get(name);
        let change = entry::<Budgets>(audit, name, current.as_ref(), None)?;
        put(gw, name, None, Some(change)).await?;
        gw.budgets().remove(name);
        Ok(())
    }
}

/// Definition, limit, spent, reserved, remaining, window and forecast.
fn view(gw: &Gateway, name: &str) -> Result<Value, ApiError> {
    let status = gw
        .budgets()
        .status(name, now_ms())
        .map_err(|_| not_found::<Budgets>(name))?;
    let mut v = to_json("a budget", &status)?;
    if let Value::Object(m) = &mut v {
        m.insert("window_start".into(), rfc3339(status.window_start_ms));
        m.insert("window_end".into(), rfc3339(status.window_end_ms));
    }
    Ok(v)
}

/// Stores the definition (audited), installs it, and seeds a fresh counter from the ledger.
/// Any failure puts back what was there (store and engine), so the two never disagree.
async fn install(gw: &Gateway, def: BudgetDef, audit: &Audit) -> Result<(), ApiError> {
    let name = def.name.clone();
    let previous = gw.budgets().get(&name);
    let json = serde_json::to_string(&def)
        .map_err(|e| ApiError::internal(format!("rendering budget '{name}': {e}")))?;
    let change = entry::<Budgets>(audit, &name, previous.as_ref(), Some(&def))?;
    // What putting the previous definition back would record.
    let undo = entry::<Budgets>(audit, &name, Some(&def), previous.as_ref())?;
    put(gw, &name, Some(json), Some(change)).await?;
    let up = match gw.budgets().upsert(def) {
        Ok(up) => up,
        Err(e) => {
            restore(gw, &name, previous, undo).await;
            return Err(def_error(e));
        }
    };
    if up.needs_seed {
        // The seed sums committed rows only, and rows are written asynchronously: without
        // this barrier, spend recorded just before the budget was created (settled before it
        // existed, so not counted live) would be missing from its counter for good.
        let seeded = match flush(gw).await {
            Ok(()) => {
                let (store, budgets) = (gw.store().clone(), gw.budgets().clone());
                tokio::task::spawn_blocking(move || {
                    crate::stages::budget::seed_from_ledger(&budgets, &store, now_ms())
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map(|_| ()))
            }
            Err(e) => Err(e.cause.unwrap_or(e.message)),
        };
        if let Err(cause) = seeded {
            restore(gw, &name, previous, undo).await;
            return Err(ApiError::internal(format!(
                "seeding budget '{name}' from the ledger: {cause}"
            )));
        }
    }
    Ok(())
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
        Some(j) => store.put_budget(&name, &j, now_ms(), audit.as_ref()),
        None => store.delete_budget(&name, audit.as_ref()).map(|_| ()),
    })
    .await
}

/// Puts back the definition a failed install replaced (best effort; logged), recording
/// `undo` in the audit trail.
async fn restore(gw: &Gateway, name: &str, previous: Option<BudgetDef>, undo: AuditEntry) {
    let json = previous
        .as_ref()
        .and_then(|d| serde_json::to_string(d).ok());
    match previous {
        Some(d) => {
            if let Err(e) = gw.budgets().upsert(d) {
                tracing::error!(budget = name, error = %e, "restoring a budget failed");
            }
        }
        None => {
            gw.budgets().remove(name);
        }
    }
    if let Err(e) = put(gw, name, json, Some(undo)).await {
        tracing::error!(budget = name, error = %e, cause = ?e.cause, "restoring a stored budget failed");
    }
}
