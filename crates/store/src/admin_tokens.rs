//! Admin tokens (`tga-…`): credentials for the admin API, each with a [`TokenRole`], and the
//! `admin_tokens_version` change counter.
//!
//! Stored like virtual keys (`keys.rs`): only the SHA-256 hash of a token and a short display
//! prefix, never the token; every change bumps `meta.admin_tokens_version` in the **same
//! transaction** and writes its audit entry (`token.create`, `token.revoke`) there too, so a
//! running gateway polling [`Store::admin_tokens_version`] sees every change with its entry.
//! A revoked token's row stays (the audit trail names it as an actor). Names are labels and
//! need not be unique.

use rusqlite::{Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::audit::{self, TokenAudit};
use crate::keys::{bump_version, is_sha256_hex, read_version};
use crate::{Store, StoreError};

const VERSION: &str = "admin_tokens_version";

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    /// Reads and changes everything.
    Admin,
    /// Reads everything, changes nothing.
    Viewer,
}

impl TokenRole {
    /// `admin` or `viewer`, as stored and as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Admin => "admin",
            TokenRole::Viewer => "viewer",
        }
    }

    /// The role a stored or requested spelling names.
    pub fn parse(s: &str) -> Option<TokenRole> {
        match s {
            "admin" => Some(TokenRole::Admin),
            "viewer" => Some(TokenRole::Viewer),
            _ => None,
        }
    }
}

/// An admin token as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminToken {
    /// `tok_…`.
    pub id: String,
    /// A label for people (not unique).
    pub name: String,
    pub role: TokenRole,
    /// Lower-case hex SHA-256 of the full token.
    pub token_hash: String,
    /// The token's first characters, for display (`tga-ab12c`).
    pub token_prefix: String,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
}

const COLUMNS: &str =
    "id, name, role, token_hash, token_prefix, created_at_ms, expires_at_ms, revoked_at_ms";

fn validate(t: &AdminToken) -> Result<(), StoreError> {
    let bad = |m: String| Err(StoreError::InvalidInput(m));
    if !t.id.starts_with("tok_") || t.id.len() <= 4 {
        return bad(format!("admin token id '{}' must look like tok_…", t.id));
    }
    if t.name.trim().is_empty() {
        return bad("admin token name must not be empty".into());
    }
    if !is_sha256_hex(&t.token_hash) {
        return bad("token_hash must be 64 lower-case hex characters (SHA-256)".into());
    }
    Ok(())
}

fn decode(r: &rusqlite::Row<'_>) -> Result<AdminToken, StoreError> {
    let id: String = r.get(0)?;
    let role: String = r.get(2)?;
    let role = TokenRole::parse(&role)
        .ok_or_else(|| StoreError::Corrupt(format!("admin token {id}: role '{role}'")))?;
    Ok(AdminToken {
        name: r.get(1)?,
        role,
        token_hash: r.get(3)?,
        token_prefix: r.get(4)?,
        created_at_ms: r.get(5)?,
        expires_at_ms: r.get(6)?,
        revoked_at_ms: r.get(7)?,
        id,
    })
}

fn get_in(tx: &Transaction<'_>, id: &str) -> Result<Option<AdminToken>, StoreError> {
    let mut stmt =
        tx.prepare_cached(&format!("SELECT {COLUMNS} FROM admin_tokens WHERE id = ?1"))?;
    let mut rows = stmt.query([id])?;
    match rows.next()? {
        Some(r) => Ok(Some(decode(r)?)),
        None => Ok(None),
    }
}

impl Store {
    /// Stores a new admin token (and its `token.create` audit entry, in the same transaction).
    /// [`StoreError::Conflict`] if the id or hash is already stored;
    /// [`StoreError::InvalidInput`] for a malformed id, name or hash.
    pub fn insert_admin_token(
        &self,
        token: &AdminToken,
        audit: Option<&TokenAudit>,
    ) -> Result<(), StoreError> {
        validate(token)?;
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                &format!(
                    "INSERT INTO admin_tokens ({COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                ),
                rusqlite::params![
                    token.id,
                    token.name,
                    token.role.as_str(),
                    token.token_hash,
                    token.token_prefix,
                    token.created_at_ms,
                    token.expires_at_ms,
                    token.revoked_at_ms,
                ],
            )
            .map_err(|e| StoreError::from_sqlite(e, "insert admin token (duplicate id or hash)"))?;
            let entry = audit.map(|a| a.change("token.create", &token.id, None, token));
            audit::record_opt(&tx, entry.as_ref())?;
            bump_version(&tx, VERSION)?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Every admin token, oldest first; revoked ones only when asked.
    pub fn list_admin_tokens(&self, include_revoked: bool) -> Result<Vec<AdminToken>, StoreError> {
        let filter = if include_revoked {
            ""
        } else {
            "WHERE revoked_at_ms IS NULL"
        };
        self.query_tokens(
            &format!("SELECT {COLUMNS} FROM admin_tokens {filter} ORDER BY created_at_ms, id"),
            &[],
        )
    }

    /// The tokens an authenticating index holds: those neither revoked nor expired before
    /// `since_ms` (so a recently revoked or expired token can be told apart from an unknown
    /// one), oldest first.
    pub fn load_admin_tokens(&self, since_ms: i64) -> Result<Vec<AdminToken>, StoreError> {
        self.query_tokens(
            &format!(
                "SELECT {COLUMNS} FROM admin_tokens \
                 WHERE (revoked_at_ms IS NULL OR revoked_at_ms > ?1) \
                 AND (expires_at_ms IS NULL OR expires_at_ms > ?1) \
                 ORDER BY created_at_ms, id"
            ),
            &[&since_ms],
        )
    }

    /// One admin token by id (revoked or not); [`StoreError::NotFound`] if unknown.
    pub fn get_admin_token(&self, id: &str) -> Result<AdminToken, StoreError> {
        self.query_tokens(
            &format!("SELECT {COLUMNS} FROM admin_tokens WHERE id = ?1"),
            &[&id],
        )?
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::NotFound(format!("no admin token with id '{id}'")))
    }

    /// Revokes an admin token at `now_ms` (and writes its `token.revoke` audit entry).
    /// `Ok(false)` if the id is unknown or already revoked: nothing changes, nothing is
    /// audited, the version does not move.
    pub fn revoke_admin_token(
        &self,
        id: &str,
        now_ms: i64,
        audit: Option<&TokenAudit>,
    ) -> Result<bool, StoreError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(before) = get_in(&tx, id)?.filter(|t| t.revoked_at_ms.is_none()) else {
                return Ok(false);
            };
            tx.execute(
                "UPDATE admin_tokens SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
                rusqlite::params![id, now_ms],
            )?;
            let after = AdminToken {
                revoked_at_ms: Some(now_ms),
                ..before.clone()
            };
            let entry = audit.map(|a| a.change("token.revoke", id, Some(&before), &after));
            audit::record_opt(&tx, entry.as_ref())?;
            bump_version(&tx, VERSION)?;
            tx.commit()?;
            Ok(true)
        })
    }

    /// The admin-token change counter: strictly increases with every committed change.
    pub fn admin_tokens_version(&self) -> Result<i64, StoreError> {
        self.with_conn(|conn| read_version(conn, VERSION))
    }

    fn query_tokens(
        &self,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<AdminToken>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(sql)?;
            let mut rows = stmt.query(params)?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(decode(r)?);
            }
            Ok(out)
        })
    }
}
