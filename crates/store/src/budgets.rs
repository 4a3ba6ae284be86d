//! Budget definitions created or changed at runtime (`/admin/v1/budgets`), so they survive a
//! restart. Stored as the JSON the admin API accepted; the policy crate owns their meaning.

use crate::{Store, StoreError};

impl Store {
    /// Inserts or replaces the definition named `name`.
    pub fn put_budget(&self, name: &str, definition: &str, now_ms: i64) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            conn.execute(
                "INSERT INTO budgets (name, definition, updated_at_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET definition = ?2, updated_at_ms = ?3",
                rusqlite::params![name, definition, now_ms],
            )?;
            Ok(())
        })
    }

    /// Deletes a stored definition; false when there was none.
    pub fn delete_budget(&self, name: &str) -> Result<bool, StoreError> {
        self.with_conn(|conn| {
            let n = conn.execute("DELETE FROM budgets WHERE name = ?1", [name])?;
            Ok(n > 0)
        })
    }

    /// All stored definitions as `(name, json)`, by name.
    pub fn list_budgets(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT name, definition FROM budgets ORDER BY name")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
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
        let l = s.list_budgets().unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].1, r#"{"name":"a","x":1}"#);
        assert!(s.delete_budget("a").unwrap());
        assert!(!s.delete_budget("a").unwrap());
        assert_eq!(s.list_budgets().unwrap().len(), 1);
    }
}
