//! Policy definitions: what an operator writes (config `policies:` or `/admin/v1/policies`),
//! parsed strictly (`deny_unknown_fields`) and validated with errors naming the field
//! (`steps[2].when.utilization_pct: …`).
//!
//! This file owns the *shape* — [`PolicyDef`], [`Step`], [`Trigger`], [`Action`], [`Pct`] —
//! and nothing about state. Everything that could make evaluation ambiguous (a budget trigger
//! without a `budget`, a revenue trigger without a tenant, `forecast_exceeds: false`, an empty
//! ladder) is rejected here, so the request path never meets a malformed policy.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tollgate_types::NanoUsd;
use tollgate_types::money::{deserialize_decimal_text, parse_decimal_scaled};

use crate::def::{DefError, Scope, validate_name, validate_value};

/// Most steps a ladder may have (a ladder is read on every matching request).
pub const MAX_STEPS: usize = 16;
/// Most actions one step may carry.
pub const MAX_ACTIONS_PER_STEP: usize = 8;
/// Longest burn-rate look-back (one day of minute buckets, ≈ 23 KB per policy at most).
pub const MAX_BURN_MINUTES: u32 = 1_440;

/// One spend policy: a graded ladder of `when → then` steps for a scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDef {
    /// Unique name; appears in reasons, the `x-tollgate-policy` header and admin URLs.
    pub name: String,
    /// Which requests the policy applies to (same [`Scope`] as budgets; `{}` = everything).
    /// Also the scope whose settled spend feeds `burn_rate` triggers.
    pub scope: Scope,
    /// The budget whose utilisation / forecast / window the triggers read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<String>,
    pub mode: PolicyMode,
    /// A level is left only when its trigger falls this far below its threshold (percentage
    /// points for `%` triggers, percent of the threshold for `burn_rate`).
    #[serde(default)]
    pub hysteresis_pct: Pct,
    /// The ladder, in ascending severity. Step numbers in reasons and logs are 1-based.
    pub steps: Vec<Step>,
}

/// Whether a policy's decisions are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// Actions are applied to requests and alerts are delivered.
    Enforce,
    /// Levels, actions and alerts are computed and logged, never applied or delivered.
    Shadow,
}

/// One rung of the ladder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub when: Trigger,
    pub then: Vec<Action>,
}

/// The condition of a step (exactly one per step), written as a one-key map
/// (`{utilization_pct: 70}`) in JSON and YAML alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TriggerRepr", into = "TriggerRepr")]
pub enum Trigger {
    /// `(spent + reserved) ÷ limit` of `budget` ≥ X %.
    UtilizationPct(Pct),
    /// `budget`'s forecast at window end > its limit. Only `true` is accepted.
    ForecastExceeds(bool),
    /// Settled spend of the policy's scope over the last `minutes`, per hour, ≥ `usd_per_hour`.
    BurnRate(BurnRate),
    /// The tenant's settled AI cost in `budget`'s window ÷ its revenue for that window ≥ Z %.
    RevenueSharePct(Pct),
    /// A spend anomaly (`anomalies`) is open in the policy's scope: flagged in this hour or
    /// the previous one. Written `anomaly: {}`.
    Anomaly(AnomalyTrigger),
}

/// `anomaly: {}` (no options yet; a map so options can be added without a new spelling).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyTrigger {}

/// `burn_rate: {usd_per_hour: 20, minutes: 15}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurnRate {
    pub usd_per_hour: NanoUsd,
    pub minutes: u32,
}

/// What a step does while it is in force: `block`, or a one-key map
/// (`{cap_max_tokens: 256}`) — the same spelling in JSON and YAML (no YAML `!tags`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A notification, delivered off the request path, once per step per budget window.
    Alert(AlertTarget),
    /// Requested model → cheaper model. Models not in the map are left alone.
    Downgrade(BTreeMap<String, String>),
    /// Clamp the request's output tokens.
    CapMaxTokens(u32),
    /// Send the request to another model (any requested model).
    Reroute(RerouteTarget),
    /// Refuse the request (pause).
    Block,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertTarget {
    pub webhook: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RerouteTarget {
    pub model: String,
}

/// The map form of a trigger: exactly one field set. A plain struct (not a serde enum) so
/// YAML needs no `!tag` and unknown keys are rejected by name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    utilization_pct: Option<Pct>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    forecast_exceeds: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    burn_rate: Option<BurnRate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revenue_share_pct: Option<Pct>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    anomaly: Option<AnomalyTrigger>,
}

const ONE_TRIGGER: &str = "needs exactly one of utilization_pct, forecast_exceeds, burn_rate, \
                           revenue_share_pct, anomaly (one trigger per step)";

impl TryFrom<TriggerRepr> for Trigger {
    type Error = String;
    fn try_from(r: TriggerRepr) -> Result<Self, String> {
        let mut found = Vec::with_capacity(1);
        if let Some(p) = r.utilization_pct {
            found.push(Trigger::UtilizationPct(p));
        }
        if let Some(b) = r.forecast_exceeds {
            found.push(Trigger::ForecastExceeds(b));
        }
        if let Some(b) = r.burn_rate {
            found.push(Trigger::BurnRate(b));
        }
        if let Some(p) = r.revenue_share_pct {
            found.push(Trigger::RevenueSharePct(p));
        }
        if let Some(a) = r.anomaly {
            found.push(Trigger::Anomaly(a));
        }
        match (found.pop(), found.is_empty()) {
            (Some(t), true) => Ok(t),
            _ => Err(ONE_TRIGGER.to_string()),
        }
    }
}

impl From<Trigger> for TriggerRepr {
    fn from(t: Trigger) -> Self {
        let mut r = TriggerRepr::default();
        match t {
            Trigger::UtilizationPct(p) => r.utilization_pct = Some(p),
            Trigger::ForecastExceeds(b) => r.forecast_exceeds = Some(b),
            Trigger::BurnRate(b) => r.burn_rate = Some(b),
            Trigger::RevenueSharePct(p) => r.revenue_share_pct = Some(p),
            Trigger::Anomaly(a) => r.anomaly = Some(a),
        }
        r
    }
}

/// The map form of a non-`block` action.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionMap {
    #[serde(default)]
    alert: Option<AlertTarget>,
    #[serde(default)]
    downgrade: Option<BTreeMap<String, String>>,
    #[serde(default)]
    cap_max_tokens: Option<u32>,
    #[serde(default)]
    reroute: Option<RerouteTarget>,
}

const ACTIONS: &[&str] = &["block", "alert", "downgrade", "cap_max_tokens", "reroute"];

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Action;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`block` or a one-key map such as {cap_max_tokens: 256}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Action, E> {
                match v {
                    "block" => Ok(Action::Block),
                    other => Err(E::unknown_variant(other, ACTIONS)),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Action, A::Error> {
                let m = ActionMap::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                let mut found = Vec::with_capacity(1);
                if let Some(a) = m.alert {
                    found.push(Action::Alert(a));
                }
                if let Some(d) = m.downgrade {
                    found.push(Action::Downgrade(d));
                }
                if let Some(n) = m.cap_max_tokens {
                    found.push(Action::CapMaxTokens(n));
                }
                if let Some(r) = m.reroute {
                    found.push(Action::Reroute(r));
                }
                match (found.pop(), found.is_empty()) {
                    (Some(a), true) => Ok(a),
                    _ => Err(serde::de::Error::custom(
                        "an action map needs exactly one of alert, downgrade, cap_max_tokens, \
                         reroute (list several actions as several items)",
                    )),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if let Action::Block = self {
            return s.serialize_str("block");
        }
        let mut m = s.serialize_map(Some(1))?;
        match self {
            Action::Alert(a) => m.serialize_entry("alert", a)?,
            Action::Downgrade(d) => m.serialize_entry("downgrade", d)?,
            Action::CapMaxTokens(n) => m.serialize_entry("cap_max_tokens", n)?,
            Action::Reroute(r) => m.serialize_entry("reroute", r)?,
            Action::Block => {}
        }
        m.end()
    }
}

impl Action {
    /// Short kind name (`alert`, `downgrade`, `cap_max_tokens`, `reroute`, `block`).
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Alert(_) => "alert",
            Action::Downgrade(_) => "downgrade",
            Action::CapMaxTokens(_) => "cap_max_tokens",
            Action::Reroute(_) => "reroute",
            Action::Block => "block",
        }
    }
}

impl Trigger {
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::UtilizationPct(_) => "utilization_pct",
            Trigger::ForecastExceeds(_) => "forecast_exceeds",
            Trigger::BurnRate(_) => "burn_rate",
            Trigger::RevenueSharePct(_) => "revenue_share_pct",
            Trigger::Anomaly(_) => "anomaly",
        }
    }
}

/// A percentage held exactly in **basis points** (1 bp = 0.01 %): `95` → 9 500, `96.25` →
/// 9 625. Written as a number or a decimal string with at most two decimals; no floats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pct(pub i64);

impl Pct {
    pub const fn from_whole(pct: i64) -> Pct {
        Pct(pct.saturating_mul(100))
    }

    pub fn bp(self) -> i64 {
        self.0
    }
}

/// Renders basis points as a percentage without trailing zeros (`9620` → `96.2`).
pub(crate) fn fmt_bp(bp: i64) -> String {
    if bp == i64::MAX {
        return "∞".to_string();
    }
    let sign = if bp < 0 { "-" } else { "" };
    let a = bp.unsigned_abs();
    let (w, f) = (a / 100, a % 100);
    if f == 0 {
        format!("{sign}{w}")
    } else if f % 10 == 0 {
        format!("{sign}{w}.{}", f / 10)
    } else {
        format!("{sign}{w}.{f:02}")
    }
}

impl fmt::Display for Pct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&fmt_bp(self.0))
    }
}

/// Whole percentages serialize as numbers (`95`), others as strings (`"96.25"`), so no float
/// ever appears and the value round-trips.
impl Serialize for Pct {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 % 100 == 0 {
            s.serialize_i64(self.0 / 100)
        } else {
            s.serialize_str(&fmt_bp(self.0))
        }
    }
}

impl<'de> Deserialize<'de> for Pct {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = deserialize_decimal_text(d)?;
        parse_decimal_scaled(&s, 2)
            .map(Pct)
            .map_err(serde::de::Error::custom)
    }
}

/// Highest accepted percentage threshold (1 000 %: revenue share can legitimately exceed 100).
const MAX_PCT_BP: i64 = 100_000;

impl PolicyDef {
    /// Parses one definition from JSON (the admin API body) and validates it. Unknown fields
    /// and type errors name their path.
    pub fn from_json(json: &str) -> Result<PolicyDef, DefError> {
        let de = &mut serde_json::Deserializer::from_str(json);
        let def: PolicyDef = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            DefError::new(path, e.into_inner().to_string())
        })?;
        def.validate()?;
        Ok(def)
    }

    /// Checks everything a definition must satisfy to be installed.
    pub fn validate(&self) -> Result<(), DefError> {
        validate_name(&self.name)?;
        for (field, value) in self.scope.fields() {
            validate_value(&format!("scope.{field}"), value)?;
        }
        if let Some(b) = &self.budget {
            validate_name(b).map_err(|e| DefError::new("budget", e.reason))?;
        }
        if self.hysteresis_pct.0 < 0 || self.hysteresis_pct.0 > 10_000 {
            return Err(DefError::new("hysteresis_pct", "must be between 0 and 100"));
        }
        if self.steps.is_empty() {
            return Err(DefError::new("steps", "must have at least one step"));
        }
        if self.steps.len() > MAX_STEPS {
            return Err(DefError::new("steps", format!("at most {MAX_STEPS} steps")));
        }
        // Same-kind percentage thresholds must rise with the ladder: a later step with a lower
        // threshold would be in force whenever the earlier one is, which is always a typo.
        let mut last: [Option<i64>; 2] = [None, None];
        for (i, step) in self.steps.iter().enumerate() {
            let at = |f: &str| format!("steps[{i}].{f}");
            match &step.when {
                Trigger::UtilizationPct(p) | Trigger::RevenueSharePct(p) => {
                    let (k, slot) = match &step.when {
                        Trigger::UtilizationPct(_) => ("utilization_pct", 0),
                        _ => ("revenue_share_pct", 1),
                    };
                    let f = at(&format!("when.{k}"));
                    if p.0 <= 0 || p.0 > MAX_PCT_BP {
                        return Err(DefError::new(f, "must be > 0 and ≤ 1000"));
                    }
                    if let Some(prev) = last[slot]
                        && p.0 <= prev
                    {
                        return Err(DefError::new(
                            f,
                            format!(
                                "must be above the previous {k} step ({}%): steps ascend in severity",
                                fmt_bp(prev)
                            ),
                        ));
                    }
                    last[slot] = Some(p.0);
                    if self.budget.is_none() {
                        return Err(DefError::new(
                            f,
                            format!("{k} reads a budget: set `budget`"),
                        ));
                    }
                    if slot == 1 && self.scope.tenant.is_none() {
                        return Err(DefError::new(
                            f,
                            "revenue_share_pct compares one tenant's cost with its revenue: \
                             set `scope.tenant`",
                        ));
                    }
                }
                Trigger::ForecastExceeds(b) => {
                    let f = at("when.forecast_exceeds");
                    if !b {
                        return Err(DefError::new(f, "only `true` is meaningful"));
                    }
                    if self.budget.is_none() {
                        return Err(DefError::new(
                            f,
                            "forecast_exceeds reads a budget: set `budget`",
                        ));
                    }
                }
                Trigger::BurnRate(br) => {
                    if br.minutes == 0 || br.minutes > MAX_BURN_MINUTES {
                        return Err(DefError::new(
                            at("when.burn_rate.minutes"),
                            format!("must be between 1 and {MAX_BURN_MINUTES}"),
                        ));
                    }
                    if br.usd_per_hour <= NanoUsd::ZERO {
                        return Err(DefError::new(
                            at("when.burn_rate.usd_per_hour"),
                            "must be > 0",
                        ));
                    }
                }
                // Reads the open anomalies the gateway publishes; nothing to check here.
                Trigger::Anomaly(_) => {}
            }
            if step.then.is_empty() {
                return Err(DefError::new(at("then"), "must have at least one action"));
            }
            if step.then.len() > MAX_ACTIONS_PER_STEP {
                return Err(DefError::new(
                    at("then"),
                    format!("at most {MAX_ACTIONS_PER_STEP} actions"),
                ));
            }
            for (j, a) in step.then.iter().enumerate() {
                let af = |f: &str| format!("steps[{i}].then[{j}].{f}");
                match a {
                    Action::Alert(t) => {
                        let w = t.webhook.trim();
                        if !(w.starts_with("https://") || w.starts_with("http://"))
                            || w.len() < 10
                            || w.len() > 2048
                            || w.chars().any(char::is_control)
                        {
                            return Err(DefError::new(
                                af("alert.webhook"),
                                "must be an http(s) URL (at most 2048 bytes)",
                            ));
                        }
                    }
                    Action::Downgrade(map) => {
                        if map.is_empty() {
                            return Err(DefError::new(
                                af("downgrade"),
                                "must map at least one model",
                            ));
                        }
                        for (from, to) in map {
                            validate_value(&af(&format!("downgrade.{from}")), to)?;
                            validate_value(&af("downgrade"), from)?;
                            if from == to {
                                return Err(DefError::new(
                                    af(&format!("downgrade.{from}")),
                                    "maps a model to itself",
                                ));
                            }
                        }
                    }
                    Action::CapMaxTokens(n) => {
                        if *n == 0 {
                            return Err(DefError::new(af("cap_max_tokens"), "must be ≥ 1"));
                        }
                    }
                    Action::Reroute(r) => validate_value(&af("reroute.model"), &r.model)?,
                    Action::Block => {}
                }
            }
        }
        Ok(())
    }

    /// The longest burn-rate look-back of the ladder (0 when it has no burn trigger).
    pub(crate) fn max_burn_minutes(&self) -> u32 {
        self.steps
            .iter()
            .filter_map(|s| match s.when {
                Trigger::BurnRate(b) => Some(b.minutes),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LADDER: &str = r#"
name: acme-ladder
scope: {tenant: acme}
budget: acme-monthly
mode: enforce
hysteresis_pct: 5
steps:
  - when: {utilization_pct: 70}
    then: [{alert: {webhook: "https://hooks.example/acme"}}]
  - when: {utilization_pct: 85}
    then: [{downgrade: {"gpt-4o": "gpt-4o-mini"}}]
  - when: {utilization_pct: 95}
    then: [{cap_max_tokens: 256}]
  - when: {utilization_pct: 100}
    then: [block]
"#;

    #[test]
    fn parses_the_documented_yaml() {
        let d: PolicyDef = serde_yaml_ng::from_str(LADDER).unwrap();
        d.validate().unwrap();
        assert_eq!(d.steps.len(), 4);
        assert_eq!(d.hysteresis_pct, Pct(500));
        assert_eq!(d.steps[3].then, vec![Action::Block]);
        assert_eq!(d.steps[2].then, vec![Action::CapMaxTokens(256)]);
        // JSON round trip through the admin shape.
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(PolicyDef::from_json(&json).unwrap(), d);
    }

    #[test]
    fn parses_every_trigger_and_action() {
        let d = PolicyDef::from_json(
            r#"{"name":"p","scope":{"tenant":"acme"},"budget":"b","mode":"shadow","steps":[
              {"when":{"forecast_exceeds":true},"then":[{"reroute":{"model":"cheap"}}]},
              {"when":{"burn_rate":{"usd_per_hour":"12.5","minutes":15}},"then":["block"]},
              {"when":{"revenue_share_pct":"7.25"},"then":[{"cap_max_tokens":100}]}]}"#,
        )
        .unwrap();
        assert_eq!(d.mode, PolicyMode::Shadow);
        assert_eq!(d.steps[2].when, Trigger::RevenueSharePct(Pct(725)));
        assert_eq!(d.max_burn_minutes(), 15);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"name":"p","scope":{},"mode":"enforce","steps":[],"x":1}"#,
                "x",
            ),
            (
                r#"{"name":"p","scope":{},"mode":"enforce","steps":[]}"#,
                "steps",
            ),
            (
                r#"{"name":"p","scope":{},"mode":"enforce","steps":[{"when":{"utilization_pct":70},"then":["block"]}]}"#,
                "steps[0].when.utilization_pct",
            ),
            (
                r#"{"name":"p","scope":{},"budget":"b","mode":"enforce","steps":[{"when":{"utilization_pct":90},"then":["block"]},{"when":{"utilization_pct":80},"then":["block"]}]}"#,
                "steps[1].when.utilization_pct",
            ),
            (
                r#"{"name":"p","scope":{},"budget":"b","mode":"enforce","steps":[{"when":{"revenue_share_pct":5},"then":["block"]}]}"#,
                "steps[0].when.revenue_share_pct",
            ),
            (
                r#"{"name":"p","scope":{},"budget":"b","mode":"enforce","steps":[{"when":{"forecast_exceeds":false},"then":["block"]}]}"#,
                "steps[0].when.forecast_exceeds",
            ),
            (
                r#"{"name":"p","scope":{},"mode":"enforce","steps":[{"when":{"burn_rate":{"usd_per_hour":1,"minutes":0}},"then":["block"]}]}"#,
                "steps[0].when.burn_rate.minutes",
            ),
            (
                r#"{"name":"p","scope":{},"mode":"enforce","steps":[{"when":{"burn_rate":{"usd_per_hour":1,"minutes":5,"z":1}},"then":["block"]}]}"#,
                "steps[0].when.burn_rate.z",
            ),
            (
                r#"{"name":"p","scope":{},"mode":"enforce","steps":[{"when":{"burn_rate":{"usd_per_hour":1,"minutes":5}},"then":[{"alert":{"webhook":"ftp://x"}}]}]}"#,
                "steps[0].then[0].alert.webhook",
            ),
            (
                r#"{"name":"p","scope":{},"mode":"enforce","steps":[{"when":{"burn_rate":{"usd_per_hour":1,"minutes":5}},"then":[{"cap_max_tokens":0}]}]}"#,
                "steps[0].then[0].cap_max_tokens",
            ),
            (
                r#"{"name":"p","scope":{},"mode":"enforce","steps":[{"when":{"burn_rate":{"usd_per_hour":1,"minutes":5}},"then":[{"downgrade":{"a":"a"}}]}]}"#,
                "steps[0].then[0].downgrade.a",
            ),
            (
                r#"{"name":"p","scope":{},"mode":"enforce","hysteresis_pct":101,"steps":[{"when":{"burn_rate":{"usd_per_hour":1,"minutes":5}},"then":["block"]}]}"#,
                "hysteresis_pct",
            ),
            (
                r#"{"name":"p","scope":{},"mode":"enforce","hysteresis_pct":"1.234","steps":[]}"#,
                "hysteresis_pct",
            ),
            (
                r#"{"name":"p q","scope":{},"mode":"enforce","steps":[{"when":{"burn_rate":{"usd_per_hour":1,"minutes":5}},"then":["block"]}]}"#,
                "name",
            ),
            (
                r#"{"name":"p","scope":{},"mode":"enforce","steps":[{"when":{"burn_rate":{"usd_per_hour":1,"minutes":5}},"then":["explode"]}]}"#,
                "steps[0].then[0]",
            ),
        ];
        for (json, field) in cases {
            let e = PolicyDef::from_json(json).expect_err(json);
            assert_eq!(e.field, field, "{json}: {e}");
        }
    }

    #[test]
    fn pct_renders_exactly() {
        assert_eq!(fmt_bp(9620), "96.2");
        assert_eq!(fmt_bp(9500), "95");
        assert_eq!(fmt_bp(9625), "96.25");
        assert_eq!(fmt_bp(5), "0.05");
        assert_eq!(serde_json::to_string(&Pct(9625)).unwrap(), "\"96.25\"");
        assert_eq!(serde_json::to_string(&Pct(9500)).unwrap(), "95");
    }
}
