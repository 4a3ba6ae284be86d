//! The store's error type.
//!
//! Callers branch on the variant, never on message text: the admin API maps
//! [`StoreError::NotFound`] to 404, [`StoreError::Conflict`] to 409 and
//! [`StoreError::InvalidInput`] to 400; everything else is a 500 with the message logged.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The addressed entity does not exist (e.g. `get_key` with an unknown id).
    #[error("not found: {0}")]
    NotFound(String),
    /// A uniqueness rule would be broken (key name already used by an active key, duplicate
    /// key id or hash).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller passed something unusable: a bad URL, an unknown dimension, a bad cursor.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A value read back from the database cannot be decoded (hand-edited or damaged file).
    /// Reported, never a panic.
    #[error("corrupt data in the database: {0}")]
    Corrupt(String),
    /// An exact integer sum does not fit in 64 bits. SQLite's `SUM()` raises an error instead
    /// of wrapping or switching to floats, and we surface it as such rather than report a
    /// wrong total.
    #[error("integer overflow while summing {0}")]
    Overflow(String),
    /// The database schema is newer than this build understands (a downgrade).
    #[error("schema: {0}")]
    Schema(String),
    /// Any other SQLite failure (I/O, locked for longer than the busy timeout, ...).
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
}

impl StoreError {
    /// Maps a SQLite failure, recognising constraint violations and integer overflow so callers
    /// get the precise variant.
    pub(crate) fn from_sqlite(e: rusqlite::Error, what: &str) -> StoreError {
        if let rusqlite::Error::SqliteFailure(f, msg) = &e {
            let msg_text = msg.as_deref().unwrap_or("");
            if f.code == rusqlite::ErrorCode::ConstraintViolation {
                return StoreError::Conflict(format!("{what}: {msg_text}"));
            }
            if msg_text.contains("integer overflow") {
                return StoreError::Overflow(what.to_string());
            }
        }
        StoreError::Database(e)
    }
}
