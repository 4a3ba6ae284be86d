//! Budget and policy definitions created or changed at runtime (`/admin/v1/budgets`,
//! `/admin/v1/policies`), so they survive a restart. Stored as the JSON the admin API accepted;
//! the policy crate owns their meaning.

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
    /// Inserts or replaces the definition named `name`.
    pub fn put_definition(
        &self,
        kind: Definitions,
        name: &str,
        definition: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO {} (name, definition, updated_at_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET definition = ?2, updated_at_ms = ?3",
            kind.table()
        );
        self.with_conn(|conn| {
            conn.execute(&sql, rusqlite::params![name, definition, now_ms])?;
            Ok(())
        })
    }

    /// Deletes a stored definition; false when there was none.
    pub fn delete_definition(&self, kind: Definitions, name: &str) -> Result<bool, StoreError> {
        let sql = format!("DELETE FROM {} WHERE name = ?1", kind.table());
        self.with_conn(|conn| Ok(conn.execute(&sql, [name])? > 0))
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

    pub fn put_budget(&self, name: &str, definition: &str, now_ms: i64) -> Result<(), StoreError> {
        self.put_definition(Definitions::Budgets, name, definition, now_ms)
    }

    pub fn delete_budget(&self, name: &str) -> Result<bool, StoreError> {
        self.delete_definition(Definitions::Budgets, name)
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
        s.put_budget("a", r#"{"name":"a"}"#, 1).unwrap();
        s.put_budget("a", r#"{"name":"a","x":1}"#, 2).unwrap();
        s.put_budget("b", r#"{"name":"b"}"#, 3).unwrap();
        s.put_definition(Definitions::Policies, "p", "{}", 4)
            .unwrap();
        let l = s.list_budgets().unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].1, r#"{"name":"a","x":1}"#);
        assert!(s.delete_budget("a").unwrap());
        assert!(!s.delete_budget("a").unwrap());
        assert_eq!(s.list_budgets().unwrap().len(), 1);
        assert_eq!(s.list_definitions(Definitions::Policies).unwrap().len(), 1);
    }
}
