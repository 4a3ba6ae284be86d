//! Virtual keys.
//!
//! A key is `tg-` followed by 48 hex characters (192 random bits from the OS RNG). Because keys
//! are high-entropy, a single SHA-256 is the right hash: a slow password KDF would add
//! milliseconds per request and buys nothing against brute force of 192 bits.
//!
//! Lookup: the presented key is hashed and the hash is looked up in a map; the stored hash is
//! then compared to the computed one with a constant-time comparison. Timing of the map lookup
//! depends only on the hash, which reveals nothing usable about any key.
//!
//! The index is an immutable map behind an `ArcSwap`: reads on the request path take no lock.
//! Writers (admin API, the store-version poller) build a new map and swap it in.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use arc_swap::ArcSwap;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tollgate_store::{Store, StoreError, StoredKey};

/// Prefix of every key Tollgate issues.
pub const KEY_PREFIX: &str = "tg-";

/// What a caller asks for when creating a key (the JSON of `POST /admin/v1/keys`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    /// Logical models the key may use; empty or absent = all.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub allow_tenant_header: bool,
    #[serde(default)]
    pub allowed_tenants: Vec<String>,
    /// May pin a deployment per request with `x-tollgate-deployment`.
    #[serde(default)]
    pub allow_route_override: bool,
    /// Expiry as Unix milliseconds.
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

/// A freshly issued key: the plain text (shown once, never stored) and its stored record.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub key: String,
    pub record: StoredKey,
}

/// A new credential: its plain text (shown once), id, stored hash and display prefix.
pub(crate) struct Credential {
    pub(crate) secret: String,
    pub(crate) id: String,
    pub(crate) hash: String,
    pub(crate) prefix: String,
}

/// A new credential `<prefix><48 hex>` (192 random bits from the OS RNG) with an id
/// `<id_prefix><16 hex>`; shared by virtual keys (`tg-`, `key_`) and admin tokens (`tga-`,
/// `tok_`).
pub(crate) fn credential(prefix: &str, id_prefix: &str) -> Credential {
    let mut secret = [0u8; 24];
    rand::rng().fill_bytes(&mut secret);
    let text = format!("{prefix}{}", hex::encode(secret));
    let mut id_bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut id_bytes);
    Credential {
        id: format!("{id_prefix}{}", hex::encode(id_bytes)),
        hash: hash_hex(&text),
        prefix: text.chars().take(prefix.len() + 6).collect(),
        secret: text,
    }
}

/// A new key secret and id: `(key, id, hash, prefix)`.
fn secret() -> (String, String, String, String) {
    let c = credential(KEY_PREFIX, "key_");
    (c.secret, c.id, c.hash, c.prefix)
}

/// Generates a key and its record. Persisting it is the caller's job (`Store::insert_key`).
pub fn issue(new: NewKey, now_ms: i64) -> IssuedKey {
    let (key, id, key_hash, key_prefix) = secret();
    let record = StoredKey {
        id,
        name: new.name.trim().to_string(),
        key_hash,
        key_prefix,
        tenant: new.tenant,
        team: new.team,
        models: new.models,
        allow_tenant_header: new.allow_tenant_header,
        allowed_tenants: new.allowed_tenants,
        allow_route_override: new.allow_route_override,
        created_at_ms: now_ms,
        expires_at_ms: new.expires_at_ms,
        revoked_at_ms: None,
        metadata: new.metadata.unwrap_or(serde_json::Value::Null),
        rotated_to: None,
    };
    IssuedKey { key, record }
}

/// The successor of `old` for a rotation: a new secret and id for the same definition (name,
/// tenant, team, models, flags, metadata and expiry), created at `now_ms`. Persisting it is
/// the caller's job (`Store::rotate_key`).
pub fn successor(old: &StoredKey, now_ms: i64) -> IssuedKey {
    let (key, id, key_hash, key_prefix) = secret();
    let record = StoredKey {
        id,
        key_hash,
        key_prefix,
        created_at_ms: now_ms,
        revoked_at_ms: None,
        rotated_to: None,
        ..old.clone()
    };
    IssuedKey { key, record }
}

/// How long an expired key stays in the index, so that presenting it is answered "the API key
/// has expired" rather than "invalid" (a rotated key's grace period ends in an expiry).
pub const EXPIRED_KEPT_MS: i64 = 30 * 24 * 3_600_000;

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Lower-case hex SHA-256, the form stored in the `keys` table.
pub fn hash_hex(key: &str) -> String {
    hex::encode(hash(key))
}

/// Why a presented key was refused. All map to `401 invalid_api_key`; the distinction is for
/// the message and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no API key provided: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'")]
    Missing,
    #[error("invalid API key")]
    Unknown,
    #[error("the API key has expired")]
    Expired,
}

/// An immutable map from a credential's SHA-256 to its record behind an `ArcSwap` (reads take
/// no lock), with the store version it was loaded at. Shared by [`KeyIndex`] and the admin
/// token index.
pub(crate) struct HashIndex<T> {
    map: ArcSwap<HashMap<[u8; 32], Arc<T>>>,
    version: AtomicI64,
}

impl<T> HashIndex<T> {
    pub(crate) fn empty() -> HashIndex<T> {
        HashIndex {
            map: ArcSwap::from_pointee(HashMap::new()),
            version: AtomicI64::new(i64::MIN),
        }
    }

    /// Swaps in `items` (each with its stored hex hash) as loaded at store `version`.
    pub(crate) fn replace(&self, version: i64, items: impl IntoIterator<Item = (String, T)>) {
        let mut map = HashMap::new();
        for (hash_hex, item) in items {
            let mut h = [0u8; 32];
            if hex::decode_to_slice(&hash_hex, &mut h).is_ok() {
                map.insert(h, Arc::new(item));
            }
        }
        self.map.store(Arc::new(map));
        self.version.store(version, Ordering::Release);
    }

    /// The version the index was last loaded at.
    pub(crate) fn version(&self) -> i64 {
        self.version.load(Ordering::Acquire)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.load().len()
    }

    /// Whether any record satisfies `pred` (a scan: for small indexes, off the request path).
    pub(crate) fn any(&self, pred: impl Fn(&T) -> bool) -> bool {
        self.map.load().values().any(|t| pred(t))
    }

    /// The record whose hash is the presented credential's: the map is keyed by the hash
    /// (whose timing reveals nothing usable about a credential), then the stored hash is
    /// compared to the computed one in constant time.
    pub(crate) fn find(&self, presented: &str, stored_hash: impl Fn(&T) -> &str) -> Option<Arc<T>> {
        let h = hash(presented);
        let map = self.map.load();
        let found = map.get(&h)?;
        let mut stored = [0u8; 32];
        let same = hex::decode_to_slice(stored_hash(found), &mut stored).is_ok()
            && bool::from(stored.ct_eq(&h));
        same.then(|| found.clone())
    }
}

/// The in-memory index of active keys.
pub struct KeyIndex {
    index: HashIndex<StoredKey>,
}

impl KeyIndex {
    /// An index holding the store's active keys.
    pub fn load(store: &Store, now_ms: i64) -> Result<KeyIndex, StoreError> {
        let idx = KeyIndex {
            index: HashIndex::empty(),
        };
        idx.reload(store, now_ms)?;
        Ok(idx)
    }

    /// Rebuilds the index from the store. Cheap enough to call after every admin change.
    /// Keys that expired in the last [`EXPIRED_KEPT_MS`] stay in, for the message
    /// (`authenticate` checks the expiry on every request).
    pub fn reload(&self, store: &Store, now_ms: i64) -> Result<(), StoreError> {
        // Read the version first: a change committed after it is caught by the next poll.
        let version = store.keys_version()?;
        let keys = store.load_active_keys(now_ms.saturating_sub(EXPIRED_KEPT_MS))?;
        self.index
            .replace(version, keys.into_iter().map(|k| (k.key_hash.clone(), k)));
        Ok(())
    }

    /// Reloads only when the store's key version moved since the last load.
    pub fn refresh_if_changed(&self, store: &Store, now_ms: i64) -> Result<bool, StoreError> {
        if store.keys_version()? == self.index.version() {
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

    /// Authenticates a presented key.
    pub fn authenticate(
        &self,
        presented: &str,
        now_ms: i64,
    ) -> Result<Arc<StoredKey>, AuthFailure> {
        if presented.is_empty() {
            return Err(AuthFailure::Missing);
        }
        let Some(k) = self.index.find(presented, |k| &k.key_hash) else {
            return Err(AuthFailure::Unknown);
        };
        if k.revoked_at_ms.is_some() {
            return Err(AuthFailure::Unknown);
        }
        if k.expires_at_ms.is_some_and(|e| e <= now_ms) {
            return Err(AuthFailure::Expired);
        }
        Ok(k)
    }
}

/// The key presented on a request: `Authorization: Bearer <key>` or `x-api-key: <key>`.
pub fn presented_key(headers: &http::HeaderMap) -> &str {
    if let Some(v) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if let Some(rest) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return rest.trim();
        }
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_store_authenticate_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).unwrap();
        let issued = issue(
            NewKey {
                name: "backend".into(),
                tenant: Some("acme".into()),
                ..NewKey::default()
            },
            1_000,
        );
        assert!(issued.key.starts_with("tg-"));
        assert_eq!(issued.key.len(), 3 + 48);
        assert!(!issued.record.key_hash.contains(&issued.key));
        store.insert_key(&issued.record, None).unwrap();
        let idx = KeyIndex::load(&store, 2_000).unwrap();
        let k = idx.authenticate(&issued.key, 2_000).unwrap();
        assert_eq!(k.tenant.as_deref(), Some("acme"));
        assert_eq!(
            idx.authenticate("tg-nope", 2_000),
            Err(AuthFailure::Unknown)
        );
        assert_eq!(idx.authenticate("", 2_000), Err(AuthFailure::Missing));
        assert!(store.revoke_key(&issued.record.id, 3_000, None).unwrap());
        assert!(idx.refresh_if_changed(&store, 3_000).unwrap());
        assert_eq!(
            idx.authenticate(&issued.key, 3_000),
            Err(AuthFailure::Unknown)
        );
        assert!(!idx.refresh_if_changed(&store, 3_000).unwrap());
    }

    #[test]
    fn expired_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).unwrap();
        let issued = issue(
            NewKey {
                name: "tmp".into(),
                expires_at_ms: Some(5_000),
                ..NewKey::default()
            },
            1_000,
        );
        store.insert_key(&issued.record, None).unwrap();
        let idx = KeyIndex::load(&store, 2_000).unwrap();
        assert!(idx.authenticate(&issued.key, 4_999).is_ok());
        assert_eq!(
            idx.authenticate(&issued.key, 5_000),
            Err(AuthFailure::Expired)
        );
        // Reloaded after the expiry, the key is still known to have expired.
        idx.reload(&store, 6_000).unwrap();
        assert_eq!(
            idx.authenticate(&issued.key, 6_000),
            Err(AuthFailure::Expired)
        );
        idx.reload(&store, 5_000 + EXPIRED_KEPT_MS).unwrap();
        assert_eq!(
            idx.authenticate(&issued.key, 5_000 + EXPIRED_KEPT_MS),
            Err(AuthFailure::Unknown)
        );
    }

    #[test]
    fn a_rotated_key_works_until_its_grace_ends_and_its_successor_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).unwrap();
        let old = issue(
            NewKey {
                name: "svc".into(),
                tenant: Some("acme".into()),
                team: Some("core".into()),
                models: vec!["m".into()],
                allow_tenant_header: true,
                metadata: Some(serde_json::json!({"o": 1})),
                ..NewKey::default()
            },
            1_000,
        );
        store.insert_key(&old.record, None).unwrap();
        let next = successor(&old.record, 2_000);
        assert_ne!(next.key, old.key);
        assert_ne!(next.record.id, old.record.id);
        assert_eq!(next.record.created_at_ms, 2_000);
        let same = StoredKey {
            id: old.record.id.clone(),
            key_hash: old.record.key_hash.clone(),
            key_prefix: old.record.key_prefix.clone(),
            created_at_ms: 1_000,
            ..next.record.clone()
        };
        assert_eq!(same, old.record, "the same definition");
        store
            .rotate_key(&old.record.id, &next.record, 3_000, 2_000, None)
            .unwrap();
        let idx = KeyIndex::load(&store, 2_000).unwrap();
        assert_eq!(idx.authenticate(&next.key, 2_000).unwrap().name, "svc");
        assert!(idx.authenticate(&old.key, 2_999).is_ok());
        assert_eq!(idx.authenticate(&old.key, 3_000), Err(AuthFailure::Expired));
        assert!(idx.authenticate(&next.key, 3_000).is_ok());
    }

    #[test]
    fn presented_key_sources() {
        let mut h = http::HeaderMap::new();
        h.insert("x-api-key", "tg-abc".parse().unwrap());
        assert_eq!(presented_key(&h), "tg-abc");
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer tg-xyz".parse().unwrap(),
        );
        assert_eq!(presented_key(&h), "tg-xyz");
    }
}
