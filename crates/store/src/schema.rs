//! Schema migrations, tracked in `PRAGMA user_version`.
//!
//! `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`. They run at open inside one
//! `BEGIN IMMEDIATE` transaction (so two processes opening a fresh file at once cannot both
//! apply them: the second waits, re-reads the version and finds nothing to do). Never edit a
//! released migration; append a new one.

use rusqlite::{Connection, TransactionBehavior};

use crate::StoreError;

const MIGRATIONS: &[&str] = &[
    // v1: ledger, keys, meta.
    r#"
    CREATE TABLE requests (
        request_id               TEXT PRIMARY KEY NOT NULL,
        started_at_ms            INTEGER NOT NULL,
        endpoint                 TEXT NOT NULL,
        stream                   INTEGER NOT NULL,
        key_id                   TEXT,
        key_name                 TEXT,
        team                     TEXT,
        tenant                   TEXT,
        feature                  TEXT,
        "user"                   TEXT,
        tags                     TEXT NOT NULL DEFAULT '{}',
        requested_model          TEXT,
        served_model             TEXT,
        provider                 TEXT,
        deployment               TEXT,
        attempts                 INTEGER NOT NULL,
        input_tokens             INTEGER NOT NULL,
        cached_input_tokens      INTEGER NOT NULL,
        cache_write_input_tokens INTEGER NOT NULL,
        output_tokens            INTEGER NOT NULL,
        reasoning_tokens         INTEGER NOT NULL,
        usage_source             TEXT NOT NULL,
        list_cost                INTEGER NOT NULL,
        effective_cost           INTEGER NOT NULL,
        price_version            TEXT,
        unpriced                 INTEGER NOT NULL,
        policy_actions           TEXT NOT NULL,
        cache_status             TEXT,
        status                   INTEGER NOT NULL,
        outcome                  TEXT NOT NULL,
        error_code               TEXT,
        error_origin             TEXT,
        latency_us               INTEGER NOT NULL,
        ttft_us                  INTEGER
    ) STRICT;
    CREATE INDEX requests_started_at ON requests (started_at_ms);
    CREATE INDEX requests_tenant ON requests (tenant, started_at_ms);
    CREATE INDEX requests_key ON requests (key_id, started_at_ms);

    CREATE TABLE keys (
        id                  TEXT PRIMARY KEY NOT NULL,
        name                TEXT NOT NULL,
        key_hash            TEXT NOT NULL UNIQUE,
        key_prefix          TEXT NOT NULL,
        tenant              TEXT,
        team                TEXT,
        models              TEXT NOT NULL DEFAULT '[]',
        allow_tenant_header INTEGER NOT NULL DEFAULT 0,
        allowed_tenants     TEXT NOT NULL DEFAULT '[]',
        created_at_ms       INTEGER NOT NULL,
        expires_at_ms       INTEGER,
        revoked_at_ms       INTEGER,
        metadata            TEXT NOT NULL DEFAULT '{}'
    ) STRICT;
    -- A name identifies one *active* key; a revoked key's name may be reused.
    CREATE UNIQUE INDEX keys_active_name ON keys (name) WHERE revoked_at_ms IS NULL;

    CREATE TABLE meta (
        k TEXT PRIMARY KEY NOT NULL,
        v INTEGER NOT NULL
    ) STRICT;
    INSERT INTO meta (k, v) VALUES ('keys_version', 0);
    "#,
    // v2: budgets created or changed at runtime through the admin API (config budgets are not
    // stored: the file is their source of truth).
    r#"
    CREATE TABLE budgets (
        name          TEXT PRIMARY KEY NOT NULL,
        definition    TEXT NOT NULL,
        updated_at_ms INTEGER NOT NULL
    ) STRICT;
    "#,
    // v3: spend policies created or changed at runtime.
    r#"
    CREATE TABLE policies (
        name          TEXT PRIMARY KEY NOT NULL,
        definition    TEXT NOT NULL,
        updated_at_ms INTEGER NOT NULL
    ) STRICT;
    "#,
    // v4: what a cache hit saved, and every deployment tried (retries and fallbacks).
    r#"
    ALTER TABLE requests ADD COLUMN saved_cost INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE requests ADD COLUMN attempted TEXT NOT NULL DEFAULT '';
    "#,
    // v5: keys that may pin a deployment per request (`x-tollgate-deployment`).
    r#"
    ALTER TABLE keys ADD COLUMN allow_route_override INTEGER NOT NULL DEFAULT 0;
    "#,
    // v6: the unit prices a row was costed at (nano-USD per 1M tokens), for finance exports.
    // NULL on rows written before v6 and on unpriced rows.
    r#"
    ALTER TABLE requests ADD COLUMN price_input INTEGER;
    ALTER TABLE requests ADD COLUMN price_cached_input INTEGER;
    ALTER TABLE requests ADD COLUMN price_cache_write INTEGER;
    ALTER TABLE requests ADD COLUMN price_output INTEGER;
    "#,
    // v7: rows loaded by `tollgate ledger import` rather than served here, so a running
    // gateway can add imported spend to its budgets (`meta.ledger_imports` counts imports).
    // The partial index keeps "imported rows since start-up" cheap on a large ledger.
    r#"
    ALTER TABLE requests ADD COLUMN imported INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX requests_imported ON requests (started_at_ms) WHERE imported = 1;
    "#,
    // v8: the intent log. A request about to call a provider leaves its provisional row here
    // (JSON), deleted when its final row is written; what a gateway finds left under its own
    // `owner` (its spill path) at start-up belongs to requests that died with its previous
    // process and becomes `interrupted` ledger rows.
    r#"
    CREATE TABLE intents (
        request_id    TEXT PRIMARY KEY NOT NULL,
        owner         TEXT NOT NULL,
        started_at_ms INTEGER NOT NULL,
        row           TEXT NOT NULL
    ) STRICT;
    CREATE INDEX intents_owner ON intents (owner);
    "#,
    // v9: the audit trail of admin changes (append-only: triggers refuse UPDATE and DELETE),
    // and key rotation. A rotated key keeps working until its (shortened) expiry while its
    // successor, of the same name, is active: `rotated_to` names the successor, and the
    // name-uniqueness index now covers only keys neither revoked nor rotated.
    r#"
    CREATE TABLE audit (
        id          INTEGER PRIMARY KEY,
        at_ms       INTEGER NOT NULL,
        actor_kind  TEXT NOT NULL,
        actor_id    TEXT,
        action      TEXT NOT NULL,
        resource_id TEXT NOT NULL,
        before_json TEXT,
        after_json  TEXT,
        address     TEXT
    ) STRICT;
    CREATE INDEX audit_at ON audit (at_ms);
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN
        SELECT RAISE(ABORT, 'the audit log is append-only: entries cannot be changed');
    END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN
        SELECT RAISE(ABORT, 'the audit log is append-only: entries cannot be deleted');
    END;

    ALTER TABLE keys ADD COLUMN rotated_to TEXT;
    DROP INDEX keys_active_name;
    CREATE UNIQUE INDEX keys_active_name ON keys (name)
        WHERE revoked_at_ms IS NULL AND rotated_to IS NULL;
    "#,
    // v10: admin tokens (`tga-…`, stored as their SHA-256 like keys): credentials for the
    // admin API with a role, `admin` (reads and changes) or `viewer` (reads only). Changes
    // bump `meta.admin_tokens_version`, which a running gateway polls.
    r#"
    CREATE TABLE admin_tokens (
        id            TEXT PRIMARY KEY NOT NULL,
        name          TEXT NOT NULL,
        role          TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
        token_hash    TEXT NOT NULL UNIQUE,
        token_prefix  TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER,
        revoked_at_ms INTEGER
    ) STRICT;
    INSERT OR IGNORE INTO meta (k, v) VALUES ('admin_tokens_version', 0);
    "#,
    // v11: the daily rollup of the ledger (`rollup.rs`): one line per UTC day and combination
    // of the low-cardinality dimensions, with exact sums, kept in the same transaction as the
    // rows it sums, so reports over whole days read it instead of every row. Its dimension
    // columns carry the ledger's names (`started_at_ms` is the day's start) so one WHERE
    // clause serves both. Backfilled here from the rows already stored. And a covering
    // partial index for percentiles of served rows: latency and time to first byte are read
    // from the index alone.
    r#"
    CREATE TABLE rollup_daily (
        started_at_ms            INTEGER NOT NULL,
        tenant                   TEXT,
        team                     TEXT,
        feature                  TEXT,
        requested_model          TEXT,
        served_model             TEXT,
        provider                 TEXT,
        deployment               TEXT,
        endpoint                 TEXT NOT NULL,
        outcome                  TEXT NOT NULL,
        cache_status             TEXT,
        imported                 INTEGER NOT NULL,
        requests                 INTEGER NOT NULL,
        input_tokens             INTEGER NOT NULL,
        cached_input_tokens      INTEGER NOT NULL,
        cache_write_input_tokens INTEGER NOT NULL,
        output_tokens            INTEGER NOT NULL,
        reasoning_tokens         INTEGER NOT NULL,
        list_cost                INTEGER NOT NULL,
        effective_cost           INTEGER NOT NULL,
        saved_cost               INTEGER NOT NULL,
        estimated_rows           INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX rollup_daily_key ON rollup_daily (started_at_ms, tenant, team, feature,
        requested_model, served_model, provider, deployment, endpoint, outcome, cache_status,
        imported);
    INSERT INTO rollup_daily
    SELECT started_at_ms - ((started_at_ms % 86400000) + 86400000) % 86400000,
           tenant, team, feature, requested_model, served_model, provider, deployment,
           endpoint, outcome, cache_status, imported,
           COUNT(*), SUM(input_tokens), SUM(cached_input_tokens), SUM(cache_write_input_tokens),
           SUM(output_tokens), SUM(reasoning_tokens), SUM(list_cost), SUM(effective_cost),
           SUM(saved_cost), SUM(usage_source = 'estimated')
    FROM requests
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12;
    CREATE INDEX requests_served ON requests (started_at_ms, latency_us, ttft_us)
        WHERE outcome = 'ok';
    "#,
];

/// The schema version this build writes.
pub(crate) const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > CURRENT_VERSION {
        return Err(StoreError::Schema(format!(
            "database schema version {version} is newer than this build's {CURRENT_VERSION}; \
             upgrade Tollgate instead of downgrading"
        )));
    }
    if version < 0 {
        return Err(StoreError::Schema(format!(
            "invalid schema version {version}"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tracing::info!(to_version = i + 1, "applying schema migration");
        tx.execute_batch(sql)?;
    }
    if version != CURRENT_VERSION {
        tx.pragma_update(None, "user_version", CURRENT_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v8 database with keys (one revoked, one active of the same name) upgrades to v9: the
    /// keys keep their state, and the new name index still refuses a second active key.
    #[test]
    fn v8_keys_upgrade_to_rotation() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..8] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 8).unwrap();
        let insert = |id: &str, hash: char, revoked: Option<i64>| {
            conn.execute(
                "INSERT INTO keys (id, name, key_hash, key_prefix, created_at_ms, revoked_at_ms) \
                 VALUES (?1, 'svc', ?2, 'tg-000000', 1, ?3)",
                rusqlite::params![id, hash.to_string().repeat(64), revoked],
            )
            .unwrap();
        };
        insert("key_1", 'a', Some(5));
        insert("key_2", 'b', None);
        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, CURRENT_VERSION);
        let rotated: Vec<Option<String>> = conn
            .prepare("SELECT rotated_to FROM keys ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rotated, [None, None]);
        let dup = conn.execute(
            "INSERT INTO keys (id, name, key_hash, key_prefix, created_at_ms) \
             VALUES ('key_3', 'svc', ?1, 'tg-000000', 2)",
            ["c".repeat(64)],
        );
        assert!(dup.is_err(), "two active keys of one name");
        conn.execute(
            "UPDATE keys SET rotated_to = 'key_3' WHERE id = 'key_2'",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO keys (id, name, key_hash, key_prefix, created_at_ms) \
             VALUES ('key_3', 'svc', ?1, 'tg-000000', 2)",
            ["c".repeat(64)],
        )
        .unwrap();
    }

    /// A v9 database with keys and audit entries upgrades to v10: both kept, the token table
    /// empty, its counter at zero.
    #[test]
    fn v9_upgrades_to_admin_tokens() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..9] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 9).unwrap();
        conn.execute(
            "INSERT INTO keys (id, name, key_hash, key_prefix, created_at_ms) \
             VALUES ('key_1', 'svc', ?1, 'tg-000000', 1)",
            ["a".repeat(64)],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO audit (at_ms, actor_kind, action, resource_id) \
             VALUES (1, 'master', 'key.create', 'key_1')",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count("SELECT COUNT(*) FROM keys"), 1);
        assert_eq!(count("SELECT COUNT(*) FROM audit"), 1);
        assert_eq!(count("SELECT COUNT(*) FROM admin_tokens"), 0);
        assert_eq!(
            count("SELECT v FROM meta WHERE k = 'admin_tokens_version'"),
            0
        );
        assert_eq!(
            count("SELECT v FROM meta WHERE k = 'keys_version'"),
            0,
            "untouched"
        );
    }
    /// A v10 ledger upgrades to v11 with its rows already in the daily rollup: NULL
    /// dimensions grouped together, days floored (before 1970 too), sums exact.
    #[test]
    fn v10_ledger_is_backfilled_into_the_rollup() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..10] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 10).unwrap();
        let insert = |id: &str, at: i64, tenant: Option<&str>, cost: i64| {
            conn.execute(
                "INSERT INTO requests (request_id, started_at_ms, endpoint, stream, tenant, \
                 attempts, input_tokens, cached_input_tokens, cache_write_input_tokens, \
                 output_tokens, reasoning_tokens, usage_source, list_cost, effective_cost, \
                 unpriced, policy_actions, status, outcome, latency_us) \
                 VALUES (?1, ?2, '/v1/chat/completions', 0, ?3, 1, 10, 0, 0, 5, 0, 'estimated', \
                 ?4, ?4, 0, '', 200, 'ok', 1000)",
                rusqlite::params![id, at, tenant, cost],
            )
            .unwrap();
        };
        insert("a", 1_000, None, 7);
        insert("b", 86_399_999, None, 8);
        insert("c", 86_400_000, Some("acme"), 9);
        insert("d", -1, None, 10);
        migrate(&mut conn).unwrap();
        let lines: Vec<(i64, Option<String>, i64, i64, i64)> = conn
            .prepare(
                "SELECT started_at_ms, tenant, requests, effective_cost, estimated_rows \
                 FROM rollup_daily ORDER BY started_at_ms",
            )
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            lines,
            [
                (-86_400_000, None, 1, 10, 1),
                (0, None, 2, 15, 2),
                (86_400_000, Some("acme".into()), 1, 9, 1),
            ]
        );
    }
}
