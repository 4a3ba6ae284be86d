//! What budgets, spend policies and rate limits did to a request: the ledger row's
//! `policy_actions`.
//!
//! Each stage that decides something about a request appends a typed [`PolicyAction`]; the
//! `x-tollgate-policy` header shows the applied ones ([`PolicyActions::header_value`]), and the
//! ledger stores the list in its public text spelling — comma-separated, e.g.
//! `acme-ladder/3:cap_max_tokens=256,cap_max_tokens=120` — which is also what
//! `GET /admin/v1/requests` shows. That spelling is parsed back in exactly one place
//! ([`PolicyAction::parse`]), and a text this version does not recognise is kept verbatim
//! ([`PolicyAction::Other`]) rather than lost.
//!
//! Names in the spelling are budget, policy and rate-limit names, which validation restricts
//! to ASCII letters, digits and `- _ . : @`, so neither `,` nor `/` nor `=` can appear in them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One decision recorded against a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyAction {
    /// A hard budget could not take the worst case, so the output cap was lowered to fit
    /// (`cap_max_tokens=N`).
    CapMaxTokens(u64),
    /// A hard budget refused the request (`block=<budget>`).
    BudgetBlock(String),
    /// A soft budget is past its limit; nothing was changed (`soft_exceeded=<budget>`).
    SoftExceeded(String),
    /// A shadow budget would have refused the request (`shadow_block=<budget>`).
    ShadowBlock(String),
    /// A shadow budget would have lowered the output cap (`shadow_cap=<budget>`).
    ShadowCap(String),
    /// A spend-policy step's effect: applied (`policy/step:effect`), or only computed by a
    /// shadow policy (`shadow:policy/step:effect`). `effect` is the policy engine's spelling
    /// (`block`, `cap_max_tokens=256`, `downgrade=gpt-4o->gpt-4o-mini`, …).
    Policy {
        policy: String,
        /// 1-based step of the policy's ladder.
        step: usize,
        effect: String,
        shadow: bool,
    },
    /// A rate limit refused the request (`rate_limited=<rule>`).
    RateLimited(String),
    /// The stream was ended at the output cap the budget reserved
    /// (`stream_cut_at_budget_cap`).
    StreamCutAtCap,
    /// A recorded action this version does not recognise (a row written by another version),
    /// kept as it was written.
    Other(String),
}

const STREAM_CUT: &str = "stream_cut_at_budget_cap";
const SHADOW_POLICY: &str = "shadow:";

impl PolicyAction {
    /// Whether the action changed what happened to the request. Soft and shadow notes record
    /// what would have happened and are never shown in `x-tollgate-policy`.
    pub fn applied(&self) -> bool {
        match self {
            PolicyAction::CapMaxTokens(_)
            | PolicyAction::BudgetBlock(_)
            | PolicyAction::RateLimited(_)
            | PolicyAction::StreamCutAtCap => true,
            PolicyAction::Policy { shadow, .. } => !shadow,
            PolicyAction::SoftExceeded(_)
            | PolicyAction::ShadowBlock(_)
            | PolicyAction::ShadowCap(_)
            | PolicyAction::Other(_) => false,
        }
    }

    /// Reads one action in its ledger spelling. Total: a text that is not a known spelling is
    /// [`PolicyAction::Other`].
    pub fn parse(s: &str) -> PolicyAction {
        if s == STREAM_CUT {
            return PolicyAction::StreamCutAtCap;
        }
        if let Some((name, value)) = s.split_once('=')
            && !name.contains('/')
        {
            let v = value.to_string();
            let known = match name {
                "cap_max_tokens" => value.parse().ok().map(PolicyAction::CapMaxTokens),
                "block" => Some(PolicyAction::BudgetBlock(v)),
                "soft_exceeded" => Some(PolicyAction::SoftExceeded(v)),
                "shadow_block" => Some(PolicyAction::ShadowBlock(v)),
                "shadow_cap" => Some(PolicyAction::ShadowCap(v)),
                "rate_limited" => Some(PolicyAction::RateLimited(v)),
                _ => None,
            };
            if let Some(a) = known {
                return a;
            }
        }
        let (shadow, rest) = match s.strip_prefix(SHADOW_POLICY) {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if let Some((policy, rest)) = rest.split_once('/')
            && let Some((step, effect)) = rest.split_once(':')
            && let Ok(step) = step.parse::<usize>()
            && !policy.is_empty()
            && !effect.is_empty()
        {
            return PolicyAction::Policy {
                policy: policy.to_string(),
                step,
                effect: effect.to_string(),
                shadow,
            };
        }
        PolicyAction::Other(s.to_string())
    }
}

impl fmt::Display for PolicyAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyAction::CapMaxTokens(n) => write!(f, "cap_max_tokens={n}"),
            PolicyAction::BudgetBlock(b) => write!(f, "block={b}"),
            PolicyAction::SoftExceeded(b) => write!(f, "soft_exceeded={b}"),
            PolicyAction::ShadowBlock(b) => write!(f, "shadow_block={b}"),
            PolicyAction::ShadowCap(b) => write!(f, "shadow_cap={b}"),
            PolicyAction::Policy {
                policy,
                step,
                effect,
                shadow,
            } => {
                if *shadow {
                    f.write_str(SHADOW_POLICY)?;
                }
                write!(f, "{policy}/{step}:{effect}")
            }
            PolicyAction::RateLimited(r) => write!(f, "rate_limited={r}"),
            PolicyAction::StreamCutAtCap => f.write_str(STREAM_CUT),
            PolicyAction::Other(s) => f.write_str(s),
        }
    }
}

/// The actions of one request, in the order they were taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyActions(Vec<PolicyAction>);

impl PolicyActions {
    pub fn push(&mut self, action: PolicyAction) {
        self.0.push(action);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, PolicyAction> {
        self.0.iter()
    }

    /// The `x-tollgate-policy` value: the applied actions, comma-separated; `None` when no
    /// action was applied.
    pub fn header_value(&self) -> Option<String> {
        let mut out = String::new();
        for a in self.0.iter().filter(|a| a.applied()) {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(&a.to_string());
        }
        (!out.is_empty()).then_some(out)
    }

    /// Reads the ledger spelling (comma-separated; empty = none).
    pub fn parse(s: &str) -> PolicyActions {
        PolicyActions(
            s.split(',')
                .filter(|a| !a.is_empty())
                .map(PolicyAction::parse)
                .collect(),
        )
    }
}

impl From<Vec<PolicyAction>> for PolicyActions {
    fn from(v: Vec<PolicyAction>) -> Self {
        PolicyActions(v)
    }
}

impl fmt::Display for PolicyActions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// Serialized in the ledger spelling, so rows, spill files and the admin API keep their shape.
impl Serialize for PolicyActions {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PolicyActions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(PolicyActions::parse(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_.:@-]{1,12}"
    }

    fn action() -> impl Strategy<Value = PolicyAction> {
        prop_oneof![
            any::<u64>().prop_map(PolicyAction::CapMaxTokens),
            name().prop_map(PolicyAction::BudgetBlock),
            name().prop_map(PolicyAction::SoftExceeded),
            name().prop_map(PolicyAction::ShadowBlock),
            name().prop_map(PolicyAction::ShadowCap),
            name().prop_map(PolicyAction::RateLimited),
            Just(PolicyAction::StreamCutAtCap),
            (
                name(),
                1usize..20,
                prop_oneof![
                    Just("block".to_string()),
                    (1u32..5000).prop_map(|n| format!("cap_max_tokens={n}")),
                    (name(), name()).prop_map(|(a, b)| format!("downgrade={a}->{b}")),
                ],
                any::<bool>()
            )
                .prop_map(|(policy, step, effect, shadow)| PolicyAction::Policy {
                    policy,
                    step,
                    effect,
                    shadow
                }),
        ]
    }

    proptest! {
        #[test]
        fn the_ledger_spelling_round_trips(actions in proptest::collection::vec(action(), 0..6)) {
            let list = PolicyActions::from(actions);
            let text = list.to_string();
            prop_assert_eq!(PolicyActions::parse(&text), list.clone());
            let json = serde_json::to_string(&list).unwrap();
            prop_assert_eq!(serde_json::from_str::<PolicyActions>(&json).unwrap(), list);
        }
    }

    #[test]
    fn the_header_shows_applied_actions_only() {
        let list = PolicyActions::parse("cap_max_tokens=12,shadow_block=x,soft_exceeded=y");
        assert_eq!(list.header_value().as_deref(), Some("cap_max_tokens=12"));
        assert_eq!(PolicyActions::parse("soft_exceeded=x").header_value(), None);
        assert_eq!(
            PolicyActions::parse("shadow:p/1:block,q/2:cap_max_tokens=3")
                .header_value()
                .as_deref(),
            Some("q/2:cap_max_tokens=3")
        );
        assert_eq!(PolicyActions::default().header_value(), None);
    }

    #[test]
    fn spellings_are_the_ledger_contract() {
        for (text, action) in [
            ("cap_max_tokens=120", PolicyAction::CapMaxTokens(120)),
            (
                "block=acme-monthly",
                PolicyAction::BudgetBlock("acme-monthly".into()),
            ),
            (
                "rate_limited=per-key",
                PolicyAction::RateLimited("per-key".into()),
            ),
            ("stream_cut_at_budget_cap", PolicyAction::StreamCutAtCap),
            (
                "shadow:trial-stop/1:block",
                PolicyAction::Policy {
                    policy: "trial-stop".into(),
                    step: 1,
                    effect: "block".into(),
                    shadow: true,
                },
            ),
            ("something-new", PolicyAction::Other("something-new".into())),
        ] {
            assert_eq!(PolicyAction::parse(text), action);
            assert_eq!(action.to_string(), text);
        }
    }
}
