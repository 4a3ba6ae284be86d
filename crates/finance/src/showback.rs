//! Showback with shared-cost allocation: each tenant's direct spend, plus its share of shared
//! costs, so the lines add up to everything that was spent.
//!
//! An allocation rule takes a pool — the ledger spend that matches its `match` (which is then
//! no one's direct spend), plus a fixed monthly amount prorated over the range (a provider
//! commitment, say) — and spreads it over tenants `proportional` to their direct spend,
//! `even`ly, or by fixed `weights`. Rules are tried in order; a spend line goes to the first
//! rule it matches. Every split is by largest remainder at one nano-dollar, so the allocated
//! amounts sum to each pool exactly and the report's total is the ledger total plus the fixed
//! amounts, exactly.

use std::collections::BTreeMap;

use tollgate_types::NanoUsd;

use crate::focus::split;

/// The attribution of one spend line (labels as reports show them: `(unattributed)`,
/// `(none)`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attribution {
    pub tenant: String,
    pub team: String,
    pub feature: String,
    pub model: String,
    pub provider: String,
}

/// Which spend lines a rule takes: every set field must be equal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    pub tenant: Option<String>,
    pub team: Option<String>,
    pub feature: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
}

impl Match {
    pub fn is_empty(&self) -> bool {
        self.tenant.is_none()
            && self.team.is_none()
            && self.feature.is_none()
            && self.model.is_none()
            && self.provider.is_none()
    }

    /// Whether a spend line with these labels is taken by the rule.
    pub fn matches(&self, a: &Attribution) -> bool {
        let ok = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        !self.is_empty()
            && ok(&self.tenant, &a.tenant)
            && ok(&self.team, &a.team)
            && ok(&self.feature, &a.feature)
            && ok(&self.model, &a.model)
            && ok(&self.provider, &a.provider)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// In proportion to each target's direct spend (evenly if none has any).
    Proportional,
    Even,
    /// Tenant → positive weight; the targets are exactly these tenants.
    Weights(BTreeMap<String, u64>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    /// Ledger spend moved into the pool; `None` with a fixed amount only.
    pub take: Option<Match>,
    /// A fixed amount per calendar month, prorated over the range, added to the pool.
    pub amount_per_month: Option<NanoUsd>,
    pub method: Method,
    /// The tenants that share the pool; empty = every tenant with direct spend (not
    /// `(unattributed)`). Ignored with `Weights`.
    pub tenants: Vec<String>,
}

/// One report line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Line {
    pub direct: NanoUsd,
    pub allocated: NanoUsd,
    pub total: NanoUsd,
}

/// One rule's pool and where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub rule: String,
    pub from_ledger: NanoUsd,
    pub fixed: NanoUsd,
    pub shares: BTreeMap<String, NanoUsd>,
}

/// Report lines by (tenant, feature when reported by feature).
pub type Lines = BTreeMap<(String, Option<String>), Line>;

/// The label feature-level reports put a tenant's allocated share under.
pub const ALLOCATED: &str = "(allocated)";

/// Direct, allocated and total per tenant — or per tenant and feature with `by_feature`,
/// where a tenant's allocated share is its own `(allocated)` line — and each rule's pool.
/// `fixed` holds each rule's prorated fixed amount for the range (by rule name).
pub fn showback(
    spend: &[(Attribution, NanoUsd)],
    rules: &[Rule],
    fixed: &BTreeMap<String, NanoUsd>,
    by_feature: bool,
) -> (Lines, Vec<Pool>) {
    let mut pools: Vec<i64> = vec![0; rules.len()];
    let mut direct: BTreeMap<(String, Option<String>), i64> = BTreeMap::new();
    let mut direct_by_tenant: BTreeMap<String, i64> = BTreeMap::new();
    for (a, cost) in spend {
        match rules
            .iter()
            .position(|r| r.take.as_ref().is_some_and(|m| m.matches(a)))
        {
            Some(i) => pools[i] = pools[i].saturating_add(cost.nanos()),
            None => {
                let key = (a.tenant.clone(), by_feature.then(|| a.feature.clone()));
                *direct.entry(key).or_default() += cost.nanos();
                *direct_by_tenant.entry(a.tenant.clone()).or_default() += cost.nanos();
            }
        }
    }
    let mut lines: Lines = direct
        .iter()
        .map(|(k, &d)| {
            let line = Line {
                direct: NanoUsd(d),
                allocated: NanoUsd::ZERO,
                total: NanoUsd(d),
            };
            (k.clone(), line)
        })
        .collect();
    let mut out = Vec::with_capacity(rules.len());
    for (rule, from_ledger) in rules.iter().zip(pools) {
        let fixed_amount = fixed.get(&rule.name).copied().unwrap_or(NanoUsd::ZERO);
        let pool = from_ledger.saturating_add(fixed_amount.nanos());
        let (targets, weights): (Vec<String>, Vec<i128>) = match &rule.method {
            Method::Weights(w) => w.iter().map(|(t, &x)| (t.clone(), i128::from(x))).unzip(),
            m => {
                let targets: Vec<String> = if rule.tenants.is_empty() {
                    direct_by_tenant
                        .iter()
                        .filter(|(t, d)| **d > 0 && t.as_str() != tollgate_types::UNATTRIBUTED)
                        .map(|(t, _)| t.clone())
                        .collect()
                } else {
                    rule.tenants.clone()
                };
                let by_spend: Vec<i128> = targets
                    .iter()
                    .map(|t| i128::from(*direct_by_tenant.get(t).unwrap_or(&0)))
                    .collect();
                let weights = if *m == Method::Proportional && by_spend.iter().any(|&x| x > 0) {
                    by_spend
                } else {
                    vec![1; targets.len()]
                };
                (targets, weights)
            }
        };
        let mut shares = BTreeMap::new();
        if targets.is_empty() {
            // Nobody to carry it: it stays visible as unallocated.
            shares.insert(format!("(unallocated: {})", rule.name), NanoUsd(pool));
        } else {
            for (t, s) in targets.iter().zip(split(pool, &weights)) {
                shares.insert(t.clone(), NanoUsd(s));
            }
        }
        for (t, s) in &shares {
            let key = (t.clone(), by_feature.then(|| ALLOCATED.to_string()));
            let line = lines.entry(key).or_default();
            line.allocated = NanoUsd(line.allocated.nanos() + s.nanos());
            line.total = NanoUsd(line.total.nanos() + s.nanos());
        }
        out.push(Pool {
            rule: rule.name.clone(),
            from_ledger: NanoUsd(from_ledger),
            fixed: fixed_amount,
            shares,
        });
    }
    (lines, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(tenant: &str, feature: &str) -> Attribution {
        Attribution {
            tenant: tenant.into(),
            team: "(none)".into(),
            feature: feature.into(),
            model: "gpt-4o".into(),
            provider: "openai".into(),
        }
    }

    fn rule(name: &str, take: Option<Match>, method: Method) -> Rule {
        Rule {
            name: name.into(),
            take,
            amount_per_month: None,
            method,
            tenants: Vec::new(),
        }
    }

    #[test]
    fn shared_feature_and_unattributed_spend_are_spread() {
        let spend = [
            (at("acme", "chat"), NanoUsd(300)),
            (at("globex", "chat"), NanoUsd(100)),
            (at("acme", "shared-embeddings"), NanoUsd(50)),
            (at("(unattributed)", "(none)"), NanoUsd(11)),
        ];
        let rules = [
            rule(
                "embeddings",
                Some(Match {
                    feature: Some("shared-embeddings".into()),
                    ..Default::default()
                }),
                Method::Proportional,
            ),
            rule(
                "unattributed",
                Some(Match {
                    tenant: Some("(unattributed)".into()),
                    ..Default::default()
                }),
                Method::Even,
            ),
        ];
        let (lines, pools) = showback(&spend, &rules, &BTreeMap::new(), false);
        let acme = &lines[&("acme".to_string(), None)];
        let globex = &lines[&("globex".to_string(), None)];
        // 50 split 3:1 → 37.5/12.5 → 38/12 by largest remainder (tie to the first); 11 → 6/5.
        assert_eq!(
            (acme.direct, acme.allocated),
            (NanoUsd(300), NanoUsd(38 + 6))
        );
        assert_eq!(
            (globex.direct, globex.allocated),
            (NanoUsd(100), NanoUsd(12 + 5))
        );
        assert!(!lines.contains_key(&("(unattributed)".to_string(), None)));
        let total: i64 = lines.values().map(|l| l.total.nanos()).sum();
        assert_eq!(total, 461);
        assert_eq!(pools[0].from_ledger, NanoUsd(50));
    }

    #[test]
    fn fixed_amounts_and_weights() {
        let spend = [(at("acme", "chat"), NanoUsd(10))];
        let mut r = rule(
            "commitment",
            None,
            Method::Weights(BTreeMap::from([("acme".into(), 2), ("globex".into(), 1)])),
        );
        r.amount_per_month = Some(NanoUsd(1_000));
        let fixed = BTreeMap::from([("commitment".to_string(), NanoUsd(300))]);
        let (lines, _) = showback(&spend, &[r], &fixed, true);
        assert_eq!(
            lines[&("acme".to_string(), Some(ALLOCATED.to_string()))].allocated,
            NanoUsd(200)
        );
        assert_eq!(
            lines[&("globex".to_string(), Some(ALLOCATED.to_string()))].allocated,
            NanoUsd(100)
        );
        assert_eq!(
            lines[&("acme".to_string(), Some("chat".to_string()))].direct,
            NanoUsd(10)
        );
    }

    proptest! {
        /// Whatever the spend and the rules, the lines sum to the spend plus the fixed amounts.
        #[test]
        fn totals_are_exact(
            spend in prop::collection::vec((0usize..4, 0usize..3, 0i64..1_000_000_000), 0..40),
            method in 0usize..3,
            fixed in 0i64..1_000_000_000,
            by_feature in any::<bool>(),
        ) {
            let tenants = ["acme", "globex", "initech", "(unattributed)"];
            let features = ["chat", "shared", "search"];
            let spend: Vec<(Attribution, NanoUsd)> = spend.iter().map(|&(t, f, c)| (at(tenants[t], features[f]), NanoUsd(c))).collect();
            let method = match method {
                0 => Method::Proportional,
                1 => Method::Even,
                _ => Method::Weights(BTreeMap::from([("acme".into(), 3), ("initech".into(), 7)])),
            };
            let rules = [
                Rule { amount_per_month: Some(NanoUsd(fixed)), ..rule("shared", Some(Match { feature: Some("shared".into()), ..Default::default() }), method) },
                rule("unattributed", Some(Match { tenant: Some("(unattributed)".into()), ..Default::default() }), Method::Even),
            ];
            let fixed_map = BTreeMap::from([("shared".to_string(), NanoUsd(fixed))]);
            let (lines, pools) = showback(&spend, &rules, &fixed_map, by_feature);
            let want: i64 = spend.iter().map(|(_, c)| c.nanos()).sum::<i64>() + fixed;
            prop_assert_eq!(lines.values().map(|l| l.total.nanos()).sum::<i64>(), want);
            for l in lines.values() {
                prop_assert_eq!(l.total.nanos(), l.direct.nanos() + l.allocated.nanos());
            }
            for p in &pools {
                prop_assert_eq!(p.shares.values().map(|s| s.nanos()).sum::<i64>(), p.from_ledger.nanos() + p.fixed.nanos());
            }
        }
    }
}
