//! Virtual keys (`tg-…`) and the `keys_version` change counter.
//!
//! Only the SHA-256 hash of a key is stored (plus a short display prefix); the key itself is
//! shown once by whoever created it. Every change to `keys` bumps `meta.keys_version` in the
//! **same transaction**, so a running gateway can poll [`Store::keys_version`] (one indexed
//! read) and reload its in-memory key index when the CLI changed keys from another process:
//! if it sees the new version, it is guaranteed to see the change.
//!
//! Every change takes an optional [`KeyAudit`] and writes its audit entry in the same
//! transaction (see `audit.rs`).
//!
//! **Rotation** ([`Store::rotate_key`]) stores a successor — the same definition under a new
//! id and secret — and marks the old key `rotated_to` the successor with its expiry brought
//! forward to the end of the grace period. A name identifies one key that is neither revoked
//! nor rotated, so the successor keeps the name while its predecessor works out its grace.

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::audit::{self, KeyAudit};
use crate::{Store, StoreError};

/// A virtual key as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredKey {
    /// `key_…`.
    pub id: String,
    /// Unique among keys neither revoked nor rotated.
    pub name: String,
    /// Lower-case hex SHA-256 of the full key.
    pub key_hash: String,
    /// The key's first characters, for display (`tg-ab12c`).
    pub key_prefix: String,
    /// Default tenant for requests made with this key.
    pub tenant: Option<String>,
    /// Default team.
    pub team: Option<String>,
    /// Logical models the key may use; empty means all.
    pub models: Vec<String>,
    /// Whether the caller may set the tenant per request (`x-tollgate-tenant`).
    pub allow_tenant_header: bool,
    /// When non-empty, the only tenants the header may name.
    pub allowed_tenants: Vec<String>,
    /// Whether the caller may pin a deployment per request (`x-tollgate-deployment`).
    pub allow_route_override: bool,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    /// Free-form JSON supplied at creation.
    pub metadata: serde_json::Value,
    /// The successor's id once this key has been rotated (it then works until its expiry).
    #[serde(default)]
    pub rotated_to: Option<String>,
}

const KEY_COLUMNS: &str = "id, name, key_hash, key_prefix, tenant, team, models, \
    allow_tenant_header, allowed_tenants, created_at_ms, expires_at_ms, revoked_at_ms, metadata, \
    allow_route_override, rotated_to";

fn bump_keys_version(tx: &Transaction<'_>) -> Result<(), StoreError> {
    bump_version(tx, "keys_version")
}

/// Adds one to the change counter `meta.<name>` inside `tx`.
pub(crate) fn bump_version(tx: &Transaction<'_>, name: &str) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO meta (k, v) VALUES (?1, 1) ON CONFLICT (k) DO UPDATE SET v = v + 1",
    )?
    .execute([name])?;
    Ok(())
}

/// The change counter `meta.<name>` (0 before the first change).
pub(crate) fn read_version(conn: &rusqlite::Connection, name: &str) -> Result<i64, StoreError> {
    let v: Option<i64> = conn
        .prepare_cached("SELECT v FROM meta WHERE k = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    Ok(v.unwrap_or(0))
}

fn validate(k: &StoredKey) -> Result<(), StoreError> {
    let bad = |m: String| Err(StoreError::InvalidInput(m));
    if !k.id.starts_with("key_") || k.id.len() <= 4 {
        return bad(format!("key id '{}' must look like key_…", k.id));
    }
    if k.name.trim().is_empty() {
        return bad("key name must not be empty".into());
    }
    if !is_sha256_hex(&k.key_hash) {
        return bad("key_hash must be 64 lower-case hex characters (SHA-256)".into());
    }
    Ok(())
}

/// Whether `h` is the stored form of a SHA-256: 64 lower-case hex characters.
pub(crate) fn is_sha256_hex(h: &str) -> bool {
    h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn json_text<T: Serialize>(v: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::InvalidInput(format!("{what}: {e}")))
}

fn decode_key(r: &rusqlite::Row<'_>) -> Result<StoredKey, StoreError> {
    let id: String = r.get(0)?;
    let json = |i: usize, what: &str| -> Result<serde_json::Value, StoreError> {
        let text: String = r.get(i)?;
        serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("key {id}: {what}: {e}")))
    };
    let list = |v: serde_json::Value, what: &str| -> Result<Vec<String>, StoreError> {
        serde_json::from_value(v).map_err(|e| StoreError::Corrupt(format!("key {id}: {what}: {e}")))
    };
    Ok(StoredKey {
        name: r.get(1)?,
        key_hash: r.get(2)?,
        key_prefix: r.get(3)?,
        tenant: r.get(4)?,
        team: r.get(5)?,
        models: list(json(6, "models")?, "models")?,
        allow_tenant_header: r.get(7)?,
        allowed_tenants: list(json(8, "allowed_tenants")?, "allowed_tenants")?,
        created_at_ms: r.get(9)?,
        expires_at_ms: r.get(10)?,
        revoked_at_ms: r.get(11)?,
        metadata: json(12, "metadata")?,
        allow_route_override: r.get(13)?,
        rotated_to: r.get(14)?,
        id,
    })
}

/// Inserts a validated key inside `tx` (the name check first, for a clear message; the
/// partial unique index enforces it anyway).
fn insert_in(tx: &Transaction<'_>, key: &StoredKey) -> Result<(), StoreError> {
    validate(key)?;
    let models = json_text(&key.models, "models")?;
    let allowed = json_text(&key.allowed_tenants, "allowed_tenants")?;
    let metadata = json_text(&key.metadata, "metadata")?;
    let taken: Option<String> = tx
        .query_row(
            "SELECT id FROM keys WHERE name = ?1 AND revoked_at_ms IS NULL AND rotated_to IS NULL",
            [&key.name],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(other) = taken {
        return Err(StoreError::Conflict(format!(
            "an active key named '{}' already exists ({other})",
            key.name
        )));
    }
    tx.execute(
        &format!(
            "INSERT INTO keys ({KEY_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
        ),
        rusqlite::params![
            key.id,
            key.name,
            key.key_hash,
            key.key_prefix,
            key.tenant,
            key.team,
            models,
            key.allow_tenant_header,
            allowed,
            key.created_at_ms,
            key.expires_at_ms,
            key.revoked_at_ms,
            metadata,
            key.allow_route_override,
            key.rotated_to,
        ],
    )
    .map_err(|e| StoreError::from_sqlite(e, "insert key (duplicate id or key hash)"))?;
    Ok(())
}

fn get_in(tx: &Transaction<'_>, id: &str) -> Result<Option<StoredKey>, StoreError> {
    let mut stmt = tx.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM keys WHERE id = ?1"))?;
    let mut rows = stmt.query([id])?;
    match rows.next()? {
        Some(r) => Ok(Some(decode_key(r)?)),
        None => Ok(None),
    }
}

/// The audit entry of a key change, rendered with the caller's view.
fn key_entry(
    audit: Option<&KeyAudit>,
    action: &str,
    before: Option<&StoredKey>,
    after: &StoredKey,
) -> Option<audit::AuditEntry> {
    audit.map(|a| a.change(action, &after.id, before, after))
}

impl Store {
    /// Stores a new key (and its `key.create` audit entry, in the same transaction).
    /// [`StoreError::Conflict`] if an active key has the same name, or the id or hash is
    /// already stored; [`StoreError::InvalidInput`] for a malformed id/name/hash.
    pub fn insert_key(&self, key: &StoredKey, audit: Option<&KeyAudit>) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            insert_in(&tx, key)?;
            audit::record_opt(&tx, key_entry(audit, "key.create", None, key).as_ref())?;
            bump_keys_version(&tx)?;
            tx.commit()?;
            Ok(())
        })
    }

    /// All keys, oldest first; revoked ones only when asked.
    pub fn list_keys(&self, include_revoked: bool) -> Result<Vec<StoredKey>, StoreError> {
        let sql = if include_revoked {
            format!("SELECT {KEY_COLUMNS} FROM keys ORDER BY created_at_ms, id")
        } else {
            format!(
                "SELECT {KEY_COLUMNS} FROM keys WHERE revoked_at_ms IS NULL \
                 ORDER BY created_at_ms, id"
            )
        };
        self.query_keys(&sql, &[])
    }

    /// Keys usable at `now_ms`: not revoked and not expired.
    pub fn load_active_keys(&self, now_ms: i64) -> Result<Vec<StoredKey>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE revoked_at_ms IS NULL \
             AND (expires_at_ms IS NULL OR expires_at_ms > ?1) ORDER BY created_at_ms, id"
        );
        self.query_keys(&sql, &[&now_ms])
    }

    /// One key by id (revoked or not); [`StoreError::NotFound`] if unknown.
    pub fn get_key(&self, id: &str) -> Result<StoredKey, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE id = ?1");
        self.query_keys(&sql, &[&id])?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::NotFound(format!("key {id}")))
    }

    /// Revokes a key at `now_ms` (and writes its `key.revoke` audit entry). `Ok(false)` if the
    /// id is unknown or already revoked (nothing changes, nothing is audited and `keys_version`
    /// is not bumped).
    pub fn revoke_key(
        &self,
        id: &str,
        now_ms: i64,
        audit: Option<&KeyAudit>,
    ) -> Result<bool, StoreError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(before) = get_in(&tx, id)?.filter(|k| k.revoked_at_ms.is_none()) else {
                return Ok(false);
            };
            tx.execute(
                "UPDATE keys SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
                rusqlite::params![id, now_ms],
            )?;
            let after = StoredKey {
                revoked_at_ms: Some(now_ms),
                ..before.clone()
            };
            audit::record_opt(
                &tx,
                key_entry(audit, "key.revoke", Some(&before), &after).as_ref(),
            )?;
            bump_keys_version(&tx)?;
            tx.commit()?;
            Ok(true)
        })
    }

    /// Rotates key `old_id` to `successor` (a key issued from the same definition): stores
    /// the successor, marks the old key rotated to it and brings its expiry forward to
    /// `old_expires_at_ms` (never later than an expiry it already had), and writes the
    /// `key.rotate` audit entry (on the old key: its view before and after) — one
    /// transaction. Returns the old key as it is now.
    ///
    /// [`StoreError::NotFound`] for an unknown id; [`StoreError::Conflict`] when the old key
    /// is revoked, already rotated, or expired at `now_ms`.
    pub fn rotate_key(
        &self,
        old_id: &str,
        successor: &StoredKey,
        old_expires_at_ms: i64,
        now_ms: i64,
        audit: Option<&KeyAudit>,
    ) -> Result<StoredKey, StoreError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(before) = get_in(&tx, old_id)? else {
                return Err(StoreError::NotFound(format!("key {old_id}")));
            };
            if before.revoked_at_ms.is_some() {
                return Err(StoreError::Conflict(format!(
                    "key {old_id} is revoked; create a new key instead"
                )));
            }
            if let Some(next) = &before.rotated_to {
                return Err(StoreError::Conflict(format!(
                    "key {old_id} was already rotated to {next}; rotate that key instead"
                )));
            }
            if before.expires_at_ms.is_some_and(|e| e <= now_ms) {
                return Err(StoreError::Conflict(format!(
                    "key {old_id} has expired; create a new key instead"
                )));
            }
            let expires = before
                .expires_at_ms
                .map_or(old_expires_at_ms, |e| e.min(old_expires_at_ms));
            tx.execute(
                "UPDATE keys SET rotated_to = ?2, expires_at_ms = ?3 \
                 WHERE id = ?1 AND revoked_at_ms IS NULL AND rotated_to IS NULL",
                rusqlite::params![old_id, successor.id, expires],
            )?;
            insert_in(&tx, successor)?;
            let after = StoredKey {
                rotated_to: Some(successor.id.clone()),
                expires_at_ms: Some(expires),
                ..before.clone()
            };
            audit::record_opt(
                &tx,
                key_entry(audit, "key.rotate", Some(&before), &after).as_ref(),
            )?;
            bump_keys_version(&tx)?;
            tx.commit()?;
            Ok(after)
        })
    }

    /// The key-change counter: strictly increases with every committed key change.
    pub fn keys_version(&self) -> Result<i64, StoreError> {
        self.with_conn(|conn| read_version(conn, "keys_version"))
    }

    fn query_keys(
        &self,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<StoredKey>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(sql)?;
            let mut rows = stmt.query(params)?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(decode_key(r)?);
            }
            Ok(out)
        })
    }
}
