//! Admin tokens: credentials for the admin API (`/admin/v1/…`), never for the data plane.
//!
//! A token is `tga-` followed by 48 hex characters (192 random bits), issued, hashed and
//! looked up exactly like a virtual key ([`crate::keys`]: one SHA-256, a map keyed by the
//! hash, a constant-time compare of the hashes), but in its own table and its own index, so a
//! virtual key is never an admin credential and an admin token never a virtual key.
//!
//! The index holds every token that is live or was revoked or expired in the last
//! [`KEPT_MS`], so a caller presenting a recently revoked or expired token is told so rather
//! than "invalid"; it is reloaded when the store's `admin_tokens_version` moves.

use std::sync::Arc;

use tollgate_store::{AdminToken, Store, StoreError, TokenRole};

use crate::keys::{HashIndex, credential};

/// Prefix of every admin token (virtual keys are `tg-`).
pub const TOKEN_PREFIX: &str = "tga-";

/// How long a revoked or expired token stays in the index, for the message.
pub const KEPT_MS: i64 = 30 * 24 * 3_600_000;

/// A freshly issued token: the plain text (shown once, never stored) and its stored record.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub record: AdminToken,
}

/// Generates a token and its record. Persisting it is the caller's job
/// (`Store::insert_admin_token`).
pub fn issue(name: &str, role: TokenRole, expires_at_ms: Option<i64>, now_ms: i64) -> IssuedToken {
    let c = credential(TOKEN_PREFIX, "tok_");
    IssuedToken {
        token: c.secret,
        record: AdminToken {
            id: c.id,
            name: name.trim().to_string(),
            role,
            token_hash: c.hash,
            token_prefix: c.prefix,
            created_at_ms: now_ms,
            expires_at_ms,
            revoked_at_ms: None,
        },
    }
}

/// Why a presented token was refused (all `401 invalid_api_key`; the distinction is for the
/// message: a caller holding a revoked or expired token learns that, and nothing more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenFailure {
    #[error("invalid admin credential")]
    Unknown,
    #[error("the admin token has been revoked")]
    Revoked,
    #[error("the admin token has expired")]
    Expired,
}

/// The in-memory index of admin tokens.
pub struct TokenIndex {
    index: HashIndex<AdminToken>,
}

impl TokenIndex {
    /// An index holding the store's tokens.
    pub fn load(store: &Store, now_ms: i64) -> Result<TokenIndex, StoreError> {
        let idx = TokenIndex {
            index: HashIndex::empty(),
        };
        idx.reload(store, now_ms)?;
        Ok(idx)
    }

    /// Rebuilds the index from the store.
    pub fn reload(&self, store: &Store, now_ms: i64) -> Result<(), StoreError> {
        // The version first: a change committed after it is caught by the next poll.
        let version = store.admin_tokens_version()?;
        let tokens = store.load_admin_tokens(now_ms.saturating_sub(KEPT_MS))?;
        self.index.replace(
            version,
            tokens.into_iter().map(|t| (t.token_hash.clone(), t)),
        );
        Ok(())
    }

    /// Reloads only when the store's token version moved since the last load.
    pub fn refresh_if_changed(&self, store: &Store, now_ms: i64) -> Result<bool, StoreError> {
        if store.admin_tokens_version()? == self.index.version() {
            return Ok(false);
        }
        self.reload(store, now_ms)?;
        Ok(true)
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the token with id `id` is still live at `now_ms` (neither revoked nor
    /// expired), for credentials derived from a token, such as a dashboard session.
    pub fn is_live(&self, id: &str, now_ms: i64) -> bool {
        self.index.any(|t| {
            t.id == id && t.revoked_at_ms.is_none() && t.expires_at_ms.is_none_or(|e| e > now_ms)
        })
    }

    /// The live token `presented` is, at `now_ms`.
    pub fn authenticate(
        &self,
        presented: &str,
        now_ms: i64,
    ) -> Result<Arc<AdminToken>, TokenFailure> {
        if presented.is_empty() {
            return Err(TokenFailure::Unknown);
        }
        let t = self
            .index
            .find(presented, |t| &t.token_hash)
            .ok_or(TokenFailure::Unknown)?;
        if t.revoked_at_ms.is_some() {
            return Err(TokenFailure::Revoked);
        }
        if t.expires_at_ms.is_some_and(|e| e <= now_ms) {
            return Err(TokenFailure::Expired);
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{self, KeyIndex, NewKey};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).unwrap();
        (dir, store)
    }

    #[test]
    fn issue_store_authenticate_revoke_expire() {
        let (_dir, store) = store();
        let admin = issue("  ops  ", TokenRole::Admin, None, 1_000);
        assert!(admin.token.starts_with("tga-"));
        assert_eq!(admin.token.len(), 4 + 48);
        assert!(admin.record.id.starts_with("tok_"));
        assert_eq!(admin.record.name, "ops");
        assert!(admin.token.starts_with(&admin.record.token_prefix));
        assert_eq!(admin.record.token_prefix.len(), 4 + 6);
        assert!(!admin.record.token_hash.contains(&admin.token[4..]));
        let viewer = issue("dash", TokenRole::Viewer, Some(5_000), 1_000);
        store.insert_admin_token(&admin.record, None).unwrap();
        store.insert_admin_token(&viewer.record, None).unwrap();

        let idx = TokenIndex::load(&store, 2_000).unwrap();
        assert_eq!(idx.len(), 2);
        assert_eq!(
            idx.authenticate(&admin.token, 2_000).unwrap().role,
            TokenRole::Admin
        );
        assert_eq!(
            idx.authenticate(&viewer.token, 4_999).unwrap().role,
            TokenRole::Viewer
        );
        assert_eq!(
            idx.authenticate(&viewer.token, 5_000),
            Err(TokenFailure::Expired)
        );
        assert!(idx.is_live(&viewer.record.id, 4_999));
        assert!(!idx.is_live(&viewer.record.id, 5_000));
        assert!(!idx.is_live("tok_nope", 2_000));
        assert_eq!(idx.authenticate("", 2_000), Err(TokenFailure::Unknown));
        assert_eq!(
            idx.authenticate("tga-nope", 2_000),
            Err(TokenFailure::Unknown)
        );
        // One character off: unknown.
        let mut off = admin.token.clone();
        off.pop();
        off.push('x');
        assert_eq!(idx.authenticate(&off, 2_000), Err(TokenFailure::Unknown));

        assert!(!idx.refresh_if_changed(&store, 3_000).unwrap());
        assert!(
            store
                .revoke_admin_token(&admin.record.id, 3_000, None)
                .unwrap()
        );
        assert!(idx.refresh_if_changed(&store, 3_000).unwrap());
        assert_eq!(
            idx.authenticate(&admin.token, 3_000),
            Err(TokenFailure::Revoked)
        );
        assert!(!idx.is_live(&admin.record.id, 3_000));
        // Long after: forgotten, so merely unknown.
        idx.reload(&store, 3_001 + KEPT_MS).unwrap();
        assert_eq!(
            idx.authenticate(&admin.token, 3_001 + KEPT_MS),
            Err(TokenFailure::Unknown)
        );
    }

    #[test]
    fn keys_and_tokens_are_separate_credentials() {
        let (_dir, store) = store();
        let key = keys::issue(
            NewKey {
                name: "svc".into(),
                ..NewKey::default()
            },
            1_000,
        );
        store.insert_key(&key.record, None).unwrap();
        let token = issue("ops", TokenRole::Admin, None, 1_000);
        store.insert_admin_token(&token.record, None).unwrap();
        let keys = KeyIndex::load(&store, 2_000).unwrap();
        let tokens = TokenIndex::load(&store, 2_000).unwrap();
        assert!(keys.authenticate(&key.key, 2_000).is_ok());
        assert!(keys.authenticate(&token.token, 2_000).is_err());
        assert!(tokens.authenticate(&token.token, 2_000).is_ok());
        assert_eq!(
            tokens.authenticate(&key.key, 2_000),
            Err(TokenFailure::Unknown)
        );
    }
}
