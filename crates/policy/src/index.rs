//! Which budgets can match a request, without scanning all of them.
//!
//! Each budget is filed under exactly one of the scope fields it constrains — the most
//! selective one present, in the order key, user, tenant, feature, team, model — keyed by the
//! required value; `{}` budgets go in a list every request checks. A request then looks up at
//! most six hash buckets (one per attribution value it carries) and runs the full
//! [`Scope::matches`](crate::Scope::matches) only on what it finds. With 1,000 budgets of which
//! a handful match, admission touches a handful. Since every budget is filed once, the
//! candidates never repeat.

use std::collections::HashMap;

use tollgate_types::Attribution;

use crate::def::Scope;

const FIELDS: usize = 6;

#[derive(Debug, Default)]
pub(crate) struct ScopeIndex {
    by_field: [HashMap<Box<str>, Vec<u32>>; FIELDS],
    everything: Vec<u32>,
}

/// Scope values in index order: key, user, tenant, feature, team, model.
fn scope_values(s: &Scope) -> [Option<&str>; FIELDS] {
    [
        s.key.as_deref(),
        s.user.as_deref(),
        s.tenant.as_deref(),
        s.feature.as_deref(),
        s.team.as_deref(),
        s.model.as_deref(),
    ]
}

impl ScopeIndex {
    pub(crate) fn build<'a>(scopes: impl Iterator<Item = &'a Scope>) -> Self {
        let mut ix = ScopeIndex::default();
        for (i, scope) in scopes.enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            let first = scope_values(scope)
                .into_iter()
                .enumerate()
                .find_map(|(f, v)| v.map(|v| (f, v)));
            match first {
                Some((f, v)) => ix.by_field[f].entry(Box::from(v)).or_default().push(i),
                None => ix.everything.push(i),
            }
        }
        ix
    }

    /// Calls `f` with every budget index that *may* match (each at most once).
    pub(crate) fn candidates(&self, a: &Attribution, model: &str, mut f: impl FnMut(usize)) {
        for &i in &self.everything {
            f(i as usize);
        }
        let values = [
            a.key_id.as_deref(),
            a.user.as_deref(),
            a.tenant.as_deref(),
            a.feature.as_deref(),
            a.team.as_deref(),
            (!model.is_empty()).then_some(model),
        ];
        for (map, v) in self.by_field.iter().zip(values) {
            if let Some(v) = v
                && !map.is_empty()
                && let Some(list) = map.get(v)
            {
                for &i in list {
                    f(i as usize);
                }
            }
        }
    }
}
