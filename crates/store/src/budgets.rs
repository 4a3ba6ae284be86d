//! Budget and policy definitions created or changed at runtime (`/admin/v1/budgets`,
//! `/admin/v1/policies`), so they survive a restart. Stored as the JSON the admin API accepted;
//! the policy crate owns their meaning. Each change takes an optional audit entry, written in
//! the same transaction (see `audit.rs`).

use rusqlite::TransactionBehavior;

use crate::audit::{self, AuditEntry};
use crate::{Store, StoreError};

/// Runtime definitions live in one of two tables of the same shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Definitions {
    Budgets,
    Policies,
}

impl Definitions {
    fn table(self) -> &'static str {
        match self {
            Definitions::Budgets => "budgets",
            Definitions::Policies => "policies",
        }
    }
}

impl Store {
    /// Inserts or replaces the definition named `name` (and writes `audit`, if given, in the
    /// same transaction).
    pub fn put_definition(
        &self,
        kind: Definitions,
        name: &str,
        definition: &str,
        now_ms: i64,
        audit: Option<&AuditEntry>,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO {} (name, definition, updated_at_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET definition = ?2, updated_at_ms = ?3",
            kind.table()
        );
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(&sql, rusqlite::params![name, definition, now_ms])?;
            audit::record_opt(&tx, audit)?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Deletes a stored definition (and writes `audit`, if given, in the same transaction:
    /// the change may be to a definition the store did not hold, such as one from the config
    /// file). False when there was none stored.
    pub fn delete_definition(
        &self,
        kind: Definitions,
        name: &str,
        audit: Option<&AuditEntry>,
    ) -> Result<bool, StoreError> {
        let sql = format!("DELETE FROM {} WHERE name = ?1", kind.table());
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let deleted = tx.execute(&sql, [name])? > 0;
            audit::record_opt(&tx, audit)?;
            tx.commit()?;
            Ok(deleted)
        })
    }

    /// All stored definitions as `(name, json)`, by name.
    pub fn list_definitions(&self, kind: Definitions) -> Result<Vec<(String, String)>, StoreError> {
        let sql = format!(
            "SELECT name, definition FROM {} ORDER BY name",
            kind.table()
        );
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    pub fn put_budget(
        &self,
        name: &str,
        definition: &str,
        now_ms: i64,
        audit: Option<&AuditEntry>,
    ) -> Result<(), StoreError> {
        self.put_definition(Definitions::Budgets, name, definition, now_ms, audit)
    }

    pub fn delete_budget(
        &self,
        name: &str,
        audit: Option<&AuditEntry>,
    ) -> Result<bool, StoreError> {
        self.delete_definition(Definitions::Budgets, name, audit)
    }

    pub fn list_budgets(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.list_definitions(Definitions::Budgets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_list_delete() {
        let s = Store::open("sqlite::memory:").unwrap();
        s.put_budget("a", r#"{"name":"a"}"#, 1, None).unwrap();
        s.put_budget("a", r#"{"name":"a","x":1}"#, 2, None).unwrap();
        s.put_budget("b", r#"{"name":"b"}"#, 3, None).unwrap();
        s.put_definition(Definitions::Policies, "p", "{}", 4, None)
            .unwrap();
        let l = s.list_budgets().unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].1, r#"{"name":"a","x":1}"#);
        assert!(s.delete_budget("a", None).unwrap());
        assert!(!s.delete_budget("a", None).unwrap());
        assert_eq!(s.list_budgets().unwrap().len(), 1);
        assert_eq!(s.list_definitions(Definitions::Policies).unwrap().len(), 1);
    }
}
