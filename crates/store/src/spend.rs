//! Spend reports: exact integer sums of the ledger grouped by attribution dimensions.
//!
//! One SQL `GROUP BY` over the ledger — whole UTC days from the daily rollup, the rest from
//! `requests` (`rollup.rs`); every sum is SQLite's integer `SUM()` over INTEGER
//! columns, so totals are exact to the nano-dollar and equal the sum of the rows (invariant 5).
//! A 64-bit overflow makes SQLite raise an error, reported as [`StoreError::Overflow`], never
//! a wrapped or floating-point number.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use tollgate_types::NanoUsd;

use crate::requests::RowFilter;
use crate::{Store, StoreError, rollup};

/// Label for a missing value of any dimension other than tenant (which uses
/// [`UNATTRIBUTED`](crate::UNATTRIBUTED)), e.g. the key of a request rejected before key resolution.
pub const NONE_LABEL: &str = "(none)";

/// A dimension a spend report can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dim {
    /// The virtual key: reported as two columns, `key_id` and `key_name`.
    Key,
    Team,
    /// Missing tenants are reported as `(unattributed)`.
    Tenant,
    Feature,
    User,
    /// The requested (logical) model.
    Model,
    /// The upstream model actually called.
    ServedModel,
    Provider,
    Deployment,
    Endpoint,
    Outcome,
    /// UTC calendar day of `started_at_ms`, `YYYY-MM-DD`.
    Day,
    /// UTC hour of `started_at_ms`, `YYYY-MM-DDTHH:00:00Z`.
    Hour,
}

impl Dim {
    pub const ALL: &'static [Dim] = &[
        Dim::Key,
        Dim::Team,
        Dim::Tenant,
        Dim::Feature,
        Dim::User,
        Dim::Model,
        Dim::ServedModel,
        Dim::Provider,
        Dim::Deployment,
        Dim::Endpoint,
        Dim::Outcome,
        Dim::Day,
        Dim::Hour,
    ];

    /// The name used on the CLI (`--by tenant,model`) and in the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Dim::Key => "key",
            Dim::Team => "team",
            Dim::Tenant => "tenant",
            Dim::Feature => "feature",
            Dim::User => "user",
            Dim::Model => "model",
            Dim::ServedModel => "served_model",
            Dim::Provider => "provider",
            Dim::Deployment => "deployment",
            Dim::Endpoint => "endpoint",
            Dim::Outcome => "outcome",
            Dim::Day => "day",
            Dim::Hour => "hour",
        }
    }

    /// Parses one dimension name; the error lists the valid names.
    pub fn parse(s: &str) -> Result<Dim, StoreError> {
        let t = s.trim();
        Dim::ALL
            .iter()
            .copied()
            .find(|d| d.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| {
                let valid: Vec<&str> = Dim::ALL.iter().map(|d| d.as_str()).collect();
                StoreError::InvalidInput(format!(
                    "unknown dimension '{t}'; valid dimensions: {}",
                    valid.join(", ")
                ))
            })
    }

    /// Parses a comma-separated list (`"tenant,model"`), ignoring empty items.
    pub fn parse_list(s: &str) -> Result<Vec<Dim>, StoreError> {
        s.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(Dim::parse)
            .collect()
    }

    /// `(output column name, SQL expression)` pairs. The expressions are fixed strings (never
    /// user input), so formatting them into SQL is safe.
    fn columns(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Dim::Key => &[
                ("key_id", "COALESCE(key_id, '(none)')"),
                ("key_name", "COALESCE(key_name, '(none)')"),
            ],
            Dim::Team => &[("team", "COALESCE(team, '(none)')")],
            Dim::Tenant => &[("tenant", "COALESCE(tenant, '(unattributed)')")],
            Dim::Feature => &[("feature", "COALESCE(feature, '(none)')")],
            Dim::User => &[("user", r#"COALESCE("user", '(none)')"#)],
            Dim::Model => &[("model", "COALESCE(requested_model, '(none)')")],
            Dim::ServedModel => &[("served_model", "COALESCE(served_model, '(none)')")],
            Dim::Provider => &[("provider", "COALESCE(provider, '(none)')")],
            Dim::Deployment => &[("deployment", "COALESCE(deployment, '(none)')")],
            Dim::Endpoint => &[("endpoint", "endpoint")],
            Dim::Outcome => &[("outcome", "outcome")],
            // Floor division so pre-1970 instants land on the right day (SQLite's `/`
            // truncates toward zero).
            Dim::Day => &[(
                "day",
                "date(started_at_ms / 1000 - (started_at_ms % 1000 < 0), 'unixepoch')",
            )],
            Dim::Hour => &[(
                "hour",
                "strftime('%Y-%m-%dT%H:00:00Z', started_at_ms / 1000 - (started_at_ms % 1000 < 0), 'unixepoch')",
            )],
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Dim {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dim::parse(s)
    }
}

impl Serialize for Dim {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A spend report request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpendQuery {
    /// Dimensions to group by, in output order; empty means one grand-total row.
    pub group_by: Vec<Dim>,
    /// Inclusive lower bound on `started_at_ms`.
    pub from_ms: Option<i64>,
    /// Exclusive upper bound on `started_at_ms`.
    pub to_ms: Option<i64>,
    /// Further restrictions; its own time bounds (if any) apply as well (intersection).
    pub filter: RowFilter,
}

/// One line of a spend report. Sums are exact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpendRow {
    /// Dimension column → value (`key` contributes `key_id` and `key_name`).
    pub dims: BTreeMap<String, String>,
    pub requests: u64,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub list_cost: NanoUsd,
    pub effective_cost: NanoUsd,
    /// Rows whose usage was estimated by Tollgate rather than reported by the provider.
    pub estimated_rows: u64,
}

/// Sums over the columns of a [`rollup::source`], where a ledger row counts as a group of one.
const SUMS: &str = "SUM(requests), SUM(input_tokens), SUM(cached_input_tokens), \
    SUM(cache_write_input_tokens), SUM(output_tokens), SUM(reasoning_tokens), \
    SUM(list_cost), SUM(effective_cost), SUM(estimated_rows)";

impl Store {
    /// Spend grouped by `q.group_by`, most expensive (effective cost) first, ties broken by
    /// the dimension values. Groups with no rows are not reported; an empty ledger gives an
    /// empty report.
    pub fn spend(&self, q: &SpendQuery) -> Result<Vec<SpendRow>, StoreError> {
        let mut dims: Vec<Dim> = Vec::new();
        for d in &q.group_by {
            if !dims.contains(d) {
                dims.push(*d);
            }
        }
        let cols: Vec<(&str, &str)> = dims
            .iter()
            .flat_map(|d| d.columns().iter().copied())
            .collect();
        let n = cols.len();
        let mut select: Vec<String> = cols.iter().map(|(_, expr)| expr.to_string()).collect();
        select.push(SUMS.to_string());
        // Per key, per user and per hour need the rows; everything else reads whole days
        // from the rollup.
        let rows_only = dims
            .iter()
            .any(|d| matches!(d, Dim::Key | Dim::User | Dim::Hour));
        let src = rollup::source(&q.filter, q.from_ms, q.to_ms, rows_only);
        let mut sql = format!("SELECT {} FROM {}", select.join(", "), src.sql);
        if n > 0 {
            let positions: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
            sql.push_str(&format!(
                " GROUP BY {} ORDER BY SUM(effective_cost) DESC, {}",
                positions.join(", "),
                positions.join(", ")
            ));
        }
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt
                .query(rusqlite::params_from_iter(src.params.iter()))
                .map_err(|e| StoreError::from_sqlite(e, "spend"))?;
            let mut out = Vec::new();
            loop {
                // SUM() overflow is raised while stepping, so map errors here too.
                let Some(r) = rows
                    .next()
                    .map_err(|e| StoreError::from_sqlite(e, "spend"))?
                else {
                    break;
                };
                let mut dims_map = BTreeMap::new();
                for (i, (name, _)) in cols.iter().enumerate() {
                    let v: Option<String> = r.get(i)?;
                    // Only `day` can be NULL here (an out-of-range timestamp).
                    dims_map.insert(
                        name.to_string(),
                        v.unwrap_or_else(|| NONE_LABEL.to_string()),
                    );
                }
                let requests = sum_u64(r, n, "requests")?;
                if requests == 0 {
                    // The grand-total query over no rows still yields one (all-NULL) row.
                    continue;
                }
                out.push(SpendRow {
                    dims: dims_map,
                    requests,
                    input_tokens: sum_u64(r, n + 1, "input_tokens")?,
                    cached_input_tokens: sum_u64(r, n + 2, "cached_input_tokens")?,
                    cache_write_input_tokens: sum_u64(r, n + 3, "cache_write_input_tokens")?,
                    output_tokens: sum_u64(r, n + 4, "output_tokens")?,
                    reasoning_tokens: sum_u64(r, n + 5, "reasoning_tokens")?,
                    list_cost: NanoUsd(r.get::<_, Option<i64>>(n + 6)?.unwrap_or(0)),
                    effective_cost: NanoUsd(r.get::<_, Option<i64>>(n + 7)?.unwrap_or(0)),
                    estimated_rows: sum_u64(r, n + 8, "estimated_rows")?,
                });
            }
            Ok(out)
        })
    }
}

fn sum_u64(r: &rusqlite::Row<'_>, i: usize, what: &str) -> Result<u64, StoreError> {
    let v: Option<i64> = r.get(i)?;
    let v = v.unwrap_or(0);
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative sum of {what}: {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_dims() {
        assert_eq!(Dim::parse("key").unwrap(), Dim::Key);
        assert_eq!(Dim::parse(" Served_Model ").unwrap(), Dim::ServedModel);
        for d in Dim::ALL {
            assert_eq!(Dim::parse(d.as_str()).unwrap(), *d);
        }
        let err = Dim::parse("colour").unwrap_err().to_string();
        assert!(
            err.contains("colour") && err.contains("tenant") && err.contains("day"),
            "{err}"
        );
        assert_eq!(
            Dim::parse_list("tenant, model,").unwrap(),
            vec![Dim::Tenant, Dim::Model]
        );
        // The SQL labels must match the public constants.
        assert!(Dim::Tenant.columns()[0].1.contains(crate::UNATTRIBUTED));
        assert!(Dim::Team.columns()[0].1.contains(NONE_LABEL));
    }
}
