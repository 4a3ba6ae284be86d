//! Showback with shared-cost allocation: each tenant's direct spend, plus its share of shared
//! costs, so the lines add up to everything that was spent.
//!
//! An allocation rule takes a pool — the ledger spend that matches its `match` (which is then
//! no one's direct spend), plus a fixed monthly amount prorated over the range (a provider
//! commitment, say) — and spreads it over tenants `proportional` to their direct spend,
//! `even`ly, or by fixed `weights`. Rules are tried in order; a spend line goes to the first
//! rule it matches. A pool's two parts are split separately at one nano-dollar, so the
//! allocated amounts sum to each pool exactly and the report's total is the ledger total plus
//! the fixed amounts, exactly:
//!
//! - the ledger part by highest averages (D'Hondt, [`apportion`]). That method is
//!   house-monotone — a larger amount never gives anyone less — so the FOCUS export can
//!   apportion each shared row's cost cumulatively: every row's shares are non-negative, sum to
//!   the row's cost, and add up over the file to exactly this report's shares;
//! - the fixed part by largest remainder ([`split`]), within one nano-dollar of exact.

use std::collections::{BTreeMap, BinaryHeap};

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
    /// The part of each share that is ledger spend (what the FOCUS export apportions).
    pub ledger_shares: BTreeMap<String, NanoUsd>,
    /// The tenants that carry the pool and their weights, in order; empty when nobody does.
    pub weights: Vec<(String, i128)>,
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
        let mut ledger_shares = BTreeMap::new();
        if targets.is_empty() {
            // Nobody to carry it: it stays visible as unallocated.
            let name = format!("(unallocated: {})", rule.name);
            shares.insert(name.clone(), NanoUsd(pool));
            ledger_shares.insert(name, NanoUsd(from_ledger));
        } else {
            let ledger = apportion(from_ledger, &weights);
            let fixed = split(fixed_amount.nanos(), &weights);
            for ((t, l), f) in targets.iter().zip(ledger).zip(fixed) {
                shares.insert(t.clone(), NanoUsd(l.saturating_add(f)));
                ledger_shares.insert(t.clone(), NanoUsd(l));
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
            ledger_shares,
            weights: targets.into_iter().zip(weights).collect(),
        });
    }
    (lines, out)
}

/// Splits `total` nano-USD (≥ 0) over parts by `weights` (≥ 0) with highest averages
/// (D'Hondt): hand out nano-dollars one by one, each to the part with the highest
/// `weight / (given + 1)`, ties to the earlier part. The parts sum to `total` exactly, and the
/// method is house-monotone: `apportion(t + d, w)[i] >= apportion(t, w)[i]` for every part,
/// which is what lets a running total be apportioned row by row without a negative share.
/// All-zero weights put everything on the first part; a negative total is apportioned as its
/// negation.
pub fn apportion(total: i64, weights: &[i128]) -> Vec<i64> {
    if weights.is_empty() {
        return Vec::new();
    }
    if total < 0 {
        return apportion(total.saturating_neg(), weights)
            .into_iter()
            .map(|x| -x)
            .collect();
    }
    let w: Vec<i128> = weights.iter().map(|&x| x.max(0)).collect();
    let sum: i128 = w.iter().sum();
    if sum == 0 {
        let mut v = vec![0; w.len()];
        v[0] = total;
        return v;
    }
    // Every nano-dollar whose threshold `k / w` is at most `total / sum` is handed out first:
    // that is `floor(total × w / sum)` per part, at most `total` in all and fewer than one per
    // part short of it. The rest go one at a time to the lowest next threshold. `total ×
    // w` fits in i128 (both below 2^63), and so do the cross products below.
    let t = i128::from(total);
    let mut given: Vec<i128> = w.iter().map(|&x| t * x / sum).collect();
    let mut rest = t - given.iter().sum::<i128>();
    let mut next: BinaryHeap<Next> = (0..w.len())
        .filter(|&i| w[i] > 0)
        .map(|i| Next {
            seat: given[i] + 1,
            weight: w[i],
            part: i,
        })
        .collect();
    while rest > 0 {
        let Some(n) = next.pop() else { break };
        given[n.part] += 1;
        rest -= 1;
        next.push(Next {
            seat: n.seat + 1,
            ..n
        });
    }
    given
        .into_iter()
        .map(|x| i64::try_from(x).unwrap_or(i64::MAX))
        .collect()
}

/// A part's next nano-dollar in [`apportion`]: its threshold is `seat / weight`. The heap's
/// greatest is the lowest threshold, the earlier part on a tie.
#[derive(PartialEq, Eq)]
struct Next {
    seat: i128,
    weight: i128,
    part: usize,
}

impl Ord for Next {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.seat * self.weight)
            .cmp(&(self.seat * o.weight))
            .then(o.part.cmp(&self.part))
    }
}

impl PartialOrd for Next {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
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

    #[test]
    fn apportion_by_highest_averages() {
        assert_eq!(apportion(10, &[1, 1, 1]), [4, 3, 3]);
        assert_eq!(apportion(7, &[0, 0]), [7, 0]);
        assert_eq!(apportion(5, &[0, 3]), [0, 5]);
        assert_eq!(apportion(-10, &[1, 1, 1]), [-4, -3, -3]);
        assert!(apportion(3, &[]).is_empty());
        // D'Hondt leans to the larger part, by fewer nano-dollars than there are parts: 4
        // over 6:1:1:1 (quotas 2.67 and 0.44) all goes to the first.
        assert_eq!(apportion(4, &[6, 1, 1, 1]), [4, 0, 0, 0]);
        let big = apportion(i64::MAX, &[i128::from(i64::MAX), 1]);
        assert_eq!(
            big.iter().map(|&x| i128::from(x)).sum::<i128>(),
            i128::from(i64::MAX)
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

        /// Shares sum to the total, never shrink as it grows, and stay within the number of
        /// parts of the exact share.
        #[test]
        fn apportion_is_exact_and_monotone(
            weights in prop::collection::vec(0i128..1_000_000_000_000, 1..12),
            total in 0i64..10_000_000_000_000,
            more in 0i64..1_000_000,
        ) {
            let a = apportion(total, &weights);
            let b = apportion(total + more, &weights);
            prop_assert_eq!(a.iter().sum::<i64>(), total);
            prop_assert_eq!(b.iter().sum::<i64>(), total + more);
            let sum: i128 = weights.iter().sum();
            for i in 0..weights.len() {
                prop_assert!(b[i] >= a[i], "part {} shrank: {:?} → {:?}", i, a, b);
                if sum > 0 {
                    let exact = i128::from(total) * weights[i] / sum;
                    let off = i128::from(a[i]) - exact;
                    prop_assert!((0..=weights.len() as i128).contains(&off), "{} vs {}", a[i], exact);
                }
            }
        }
    }
}
