//! The audit trail: one append-only entry per admin change — who, when, what, on which
//! resource, its public view before and after, and from which address.
//!
//! - **Append-only in the database.** Triggers on `audit` refuse every `UPDATE` and `DELETE`
//!   (schema v9), so not even a bug in this crate can rewrite history; entries are only ever
//!   inserted, and `INTEGER PRIMARY KEY` ids grow with each insert, which gives the list its
//!   order (newest first) and its keyset cursor.
//! - **In the same transaction as the change.** The store functions that change keys
//!   ([`Store::insert_key`], [`Store::revoke_key`], [`Store::rotate_key`]), admin tokens
//!   ([`Store::insert_admin_token`], [`Store::revoke_admin_token`]) and runtime
//!   definitions ([`Store::put_definition`], [`Store::delete_definition`]) take an optional
//!   entry and write it in the transaction that makes the change: a change is committed with
//!   its entry or not at all. (`None` is for tests and for internal writes that are no admin
//!   change.) When the admin API has to put a stored definition back because the engine
//!   refused it, that compensating write is recorded too, so replaying the log gives the
//!   stored state.
//! - **Never a secret.** `before` and `after` are the resource's public view, rendered by the
//!   caller — for keys and admin tokens the admin API's view ([`Audited::view`]): no key or
//!   token, no hash; for policies the definition with alert webhook URLs masked. The store
//!   never sees a key's or a token's plain text in the first place.

use rusqlite::Transaction;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::admin_tokens::AdminToken;
use crate::keys::StoredKey;
use crate::{Store, StoreError};

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Actor {
    /// The admin API with the master key.
    Master,
    /// The admin API with an admin token (by the token's id).
    Token { id: String },
    /// The `tollgate` CLI on the database file, by the OS user (`$USER`) when known.
    Cli {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
}

impl Actor {
    /// `master`, `token` or `cli`: the `actor` filter's first part.
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::Master => "master",
            Actor::Token { .. } => "token",
            Actor::Cli { .. } => "cli",
        }
    }

    /// The token id or the OS user.
    pub fn id(&self) -> Option<&str> {
        match self {
            Actor::Master => None,
            Actor::Token { id } => Some(id),
            Actor::Cli { user } => user.as_deref(),
        }
    }

    fn from_columns(kind: &str, id: Option<String>) -> Result<Actor, StoreError> {
        match (kind, id) {
            ("master", _) => Ok(Actor::Master),
            ("token", Some(id)) => Ok(Actor::Token { id }),
            ("cli", user) => Ok(Actor::Cli { user }),
            (k, _) => Err(StoreError::Corrupt(format!("audit actor kind '{k}'"))),
        }
    }
}

/// Who is changing something, from where and when: the part of an audit entry known before
/// the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    pub actor: Actor,
    /// The client's socket address (`ip:port`); `None` for the CLI.
    pub address: Option<String>,
    pub at_ms: i64,
}

impl Audit {
    /// The entry for one change.
    pub fn entry(
        &self,
        action: &str,
        resource_id: &str,
        before: Option<Value>,
        after: Option<Value>,
    ) -> AuditEntry {
        AuditEntry {
            at_ms: self.at_ms,
            actor: self.actor.clone(),
            action: action.to_string(),
            resource_id: resource_id.to_string(),
            before,
            after,
            address: self.address.clone(),
        }
    }
}

/// How changes to a credential are audited: who, and the public view (the admin API's, never
/// a secret or its hash) that the store renders `before` and `after` with, inside the
/// transaction. [`KeyAudit`] for virtual keys, [`TokenAudit`] for admin tokens.
#[derive(Clone)]
pub struct Audited<T> {
    pub audit: Audit,
    pub view: fn(&T) -> Value,
}

/// How key changes are audited.
pub type KeyAudit = Audited<StoredKey>;
/// How admin-token changes are audited.
pub type TokenAudit = Audited<AdminToken>;

impl<T> Audited<T> {
    /// The entry of one change to `after` (its id is the resource id), rendered in the view.
    pub(crate) fn change(
        &self,
        action: &str,
        resource_id: &str,
        before: Option<&T>,
        after: &T,
    ) -> AuditEntry {
        self.audit.entry(
            action,
            resource_id,
            before.map(self.view),
            Some((self.view)(after)),
        )
    }
}

impl<T> std::fmt::Debug for Audited<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audited")
            .field("audit", &self.audit)
            .finish_non_exhaustive()
    }
}

/// One change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at_ms: i64,
    pub actor: Actor,
    /// `key.create`, `key.revoke`, `key.rotate`, `token.create`, `token.revoke`,
    /// `budget.create|update|delete`, `policy.create|update|delete`.
    pub action: String,
    /// The key or token id, or the budget's or policy's name.
    pub resource_id: String,
    /// The public view before the change (`None`: it did not exist).
    pub before: Option<Value>,
    /// The public view after the change (`None`: it no longer exists).
    pub after: Option<Value>,
    pub address: Option<String>,
}

/// A stored entry with its id (its position in the log).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub id: i64,
    pub entry: AuditEntry,
}

/// Which entries to list (every field optional; all set ones must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// `master`, `token` or `cli`.
    pub actor_kind: Option<String>,
    /// The token id or CLI user (with `actor_kind`).
    pub actor_id: Option<String>,
    pub action: Option<String>,
    pub resource_id: Option<String>,
    /// Entries at or after (Unix ms).
    pub from_ms: Option<i64>,
    /// Entries before (Unix ms, exclusive).
    pub to_ms: Option<i64>,
    /// Keyset cursor: only entries older than this id.
    pub before_id: Option<i64>,
}

/// The longest action name stored (they are ours, short; a bound keeps a bug from storing
/// anything large).
const MAX_ACTION: usize = 64;

/// Writes `entry` inside the caller's transaction.
pub(crate) fn record(tx: &Transaction<'_>, entry: &AuditEntry) -> Result<i64, StoreError> {
    if entry.action.is_empty() || entry.action.len() > MAX_ACTION {
        return Err(StoreError::InvalidInput(format!(
            "audit action must be 1 to {MAX_ACTION} bytes"
        )));
    }
    let json = |v: &Option<Value>| v.as_ref().map(Value::to_string);
    tx.prepare_cached(
        "INSERT INTO audit (at_ms, actor_kind, actor_id, action, resource_id, before_json, \
         after_json, address) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(rusqlite::params![
        entry.at_ms,
        entry.actor.kind(),
        entry.actor.id(),
        entry.action,
        entry.resource_id,
        json(&entry.before),
        json(&entry.after),
        entry.address,
    ])?;
    Ok(tx.last_insert_rowid())
}

/// Writes the entry if there is one.
pub(crate) fn record_opt(
    tx: &Transaction<'_>,
    entry: Option<&AuditEntry>,
) -> Result<(), StoreError> {
    if let Some(e) = entry {
        record(tx, e)?;
    }
    Ok(())
}

fn decode(r: &rusqlite::Row<'_>) -> Result<AuditRecord, StoreError> {
    let id: i64 = r.get(0)?;
    let json = |i: usize| -> Result<Option<Value>, StoreError> {
        let text: Option<String> = r.get(i)?;
        text.map(|t| {
            serde_json::from_str(&t)
                .map_err(|e| StoreError::Corrupt(format!("audit entry {id}: {e}")))
        })
        .transpose()
    };
    let kind: String = r.get(2)?;
    Ok(AuditRecord {
        id,
        entry: AuditEntry {
            at_ms: r.get(1)?,
            actor: Actor::from_columns(&kind, r.get(3)?)?,
            action: r.get(4)?,
            resource_id: r.get(5)?,
            before: json(6)?,
            after: json(7)?,
            address: r.get(8)?,
        },
    })
}

impl Store {
    /// Appends one entry on its own (for a change that is not a store write in this crate).
    pub fn record_audit(&self, entry: &AuditEntry) -> Result<i64, StoreError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let id = record(&tx, entry)?;
            tx.commit()?;
            Ok(id)
        })
    }

    /// Up to `limit` entries matching `filter`, newest first.
    pub fn list_audit(
        &self,
        filter: &AuditFilter,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut sql = String::from(
            "SELECT id, at_ms, actor_kind, actor_id, action, resource_id, before_json, \
             after_json, address FROM audit WHERE 1 = 1",
        );
        let mut params: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
        let mut cond = |sql: &mut String, clause: &str, v: Box<dyn rusqlite::ToSql>| {
            params.push(v);
            sql.push_str(&format!(" AND {clause} ?{}", params.len()));
        };
        if let Some(k) = &filter.actor_kind {
            cond(&mut sql, "actor_kind =", Box::new(k.clone()));
        }
        if let Some(i) = &filter.actor_id {
            cond(&mut sql, "actor_id =", Box::new(i.clone()));
        }
        if let Some(a) = &filter.action {
            cond(&mut sql, "action =", Box::new(a.clone()));
        }
        if let Some(r) = &filter.resource_id {
            cond(&mut sql, "resource_id =", Box::new(r.clone()));
        }
        if let Some(f) = filter.from_ms {
            cond(&mut sql, "at_ms >=", Box::new(f));
        }
        if let Some(t) = filter.to_ms {
            cond(&mut sql, "at_ms <", Box::new(t));
        }
        if let Some(b) = filter.before_id {
            cond(&mut sql, "id <", Box::new(b));
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}"));
        self.with_conn(|conn| {
            let mut stmt = conn.prepare(&sql)?;
            let refs: Vec<&dyn rusqlite::ToSql> = params.iter().map(|p| p.as_ref()).collect();
            let mut rows = stmt.query(refs.as_slice())?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(decode(r)?);
            }
            Ok(out)
        })
    }
}
