//! Budget definitions: what an operator writes (config `budgets:` or the admin API), parsed
//! strictly and validated with errors that name the field.
//!
//! This module owns the *shape* of a budget — [`BudgetDef`], [`Scope`], [`Window`], [`Mode`] —
//! and nothing about counters. A definition that validates can always be installed; everything
//! that could fail later (an unknown time zone, a window too long to bucket) is rejected here,
//! so admission never meets a malformed budget (fail closed at definition time, not at request
//! time).
//!
//! JSON/YAML shape:
//! `{"name": "acme-monthly", "scope": {"tenant": "acme"}, "limit_usd": "50.00",
//!   "window": "month", "mode": "hard", "timezone": "Europe/Berlin"}`.
//! `scope` and `mode` are required on purpose: a missing scope silently meaning "the whole
//! organisation", or a missing mode silently meaning "not enforced", are both surprises.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tollgate_types::{Attribution, NanoUsd};

/// One budget: a USD limit over a window for a scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetDef {
    /// Unique name; appears in errors (`budget_exceeded` names it) and admin URLs.
    pub name: String,
    /// Which requests count against it. `{}` = every request (the organisation).
    pub scope: Scope,
    /// The limit, exact decimal USD (`"50.00"`).
    pub limit_usd: NanoUsd,
    pub window: Window,
    pub mode: Mode,
    /// IANA time zone for calendar windows (`Europe/Berlin`); UTC when absent. Rejected for
    /// rolling windows, where it would mean nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// Which requests a budget, a spend policy or a rate limit applies to: attribution dimensions
/// and the model. Every field that is set must equal the request's value; unset fields match
/// anything; a set field the request does not carry (no tenant, say) does not match, so a
/// scope `{tenant: acme}` never sees unattributed traffic and `{}` sees everything.
///
/// Written `scope:` on budgets and policies and `match:` on rate limits
/// ([`RateLimitDef::filter`](crate::RateLimitDef::filter)), with the same field names; unknown
/// fields are rejected in both. Two fields mean slightly different things to the two:
///
/// | field | budgets and spend policies ([`Scope::matches`]) | rate limits |
/// |---|---|---|
/// | `key` | the virtual key's **id** only (names can be reused, ids cannot) | the key's **name or id** |
/// | `model` | the logical model the client **asked for** (the ledger's `requested_model`) | the logical model **served**: the one the request is routed to, after a spend policy's downgrade or reroute |
///
/// The difference lives in the callers: budgets and policies call [`Scope::matches`] with the
/// requested model; rate limits compare `key` by name or id and pass the served model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The virtual key: its id for budgets and policies, its name or id for rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// A logical model: the one asked for (budgets, policies) or the one served (rate limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl Scope {
    /// Budget and spend-policy matching: `key` is compared with the key's id, `model` is the
    /// logical model the client asked for. True when every constrained field equals the
    /// request's value.
    pub fn matches(&self, attribution: &Attribution, requested_model: &str) -> bool {
        self.matches_with_key(attribution, requested_model, |k| {
            attribution.key_id.as_deref() == Some(k)
        })
    }

    /// [`Scope::matches`] with the comparison for `key` supplied by the caller (`key_matches`
    /// is called only when `key` is set); every other field compares as documented on the type.
    pub(crate) fn matches_with_key(
        &self,
        attribution: &Attribution,
        model: &str,
        key_matches: impl FnOnce(&str) -> bool,
    ) -> bool {
        fn eq(want: &Option<String>, have: Option<&str>) -> bool {
            want.as_deref().is_none_or(|w| have == Some(w))
        }
        eq(&self.tenant, attribution.tenant.as_deref())
            && eq(&self.feature, attribution.feature.as_deref())
            && eq(&self.user, attribution.user.as_deref())
            && self.key.as_deref().is_none_or(key_matches)
            && eq(&self.team, attribution.team.as_deref())
            && eq(&self.model, (!model.is_empty()).then_some(model))
    }

    /// True for `{}`.
    pub fn is_everything(&self) -> bool {
        *self == Scope::default()
    }

    /// The set fields as `(field name, value)`, in a fixed order (for fingerprints, SQL
    /// filters and messages).
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("tenant", &self.tenant),
            ("feature", &self.feature),
            ("user", &self.user),
            ("key", &self.key),
            ("team", &self.team),
            ("model", &self.model),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
    }
}

/// Whether a budget is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Enforced: admission reserves against it and denies (or fits) when it has no room.
    Hard,
    /// Never blocks; its spend is tracked and exceeding it is reported (alerts).
    Soft,
    /// Evaluated exactly like `hard`, but the decision is only reported, never applied — to try
    /// a budget on live traffic before turning it on.
    Shadow,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Hard => "hard",
            Mode::Soft => "soft",
            Mode::Shadow => "shadow",
        }
    }
}

/// Unit of a rolling window's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RollingUnit {
    Minutes,
    Hours,
    Days,
}

impl RollingUnit {
    fn ms(self) -> i64 {
        match self {
            RollingUnit::Minutes => 60_000,
            RollingUnit::Hours => 3_600_000,
            RollingUnit::Days => 86_400_000,
        }
    }

    fn suffix(self) -> char {
        match self {
            RollingUnit::Minutes => 'm',
            RollingUnit::Hours => 'h',
            RollingUnit::Days => 'd',
        }
    }
}

/// The longest rolling window accepted (366 days). Longer ones are calendar budgets in
/// disguise, and the bound keeps bucket arithmetic far from overflow.
pub const MAX_ROLLING_MS: i64 = 366 * 86_400_000;

/// A budget window.
///
/// Calendar windows (`day`, `week`, `month`) are `[start, end)` in the budget's time zone:
/// days start at local midnight (or the first instant of the day when midnight does not exist
/// on a DST change), weeks on Monday, months on the 1st; a DST change makes a day 23 or 25
/// hours long, as finance expects. A new window starts from zero.
///
/// Rolling windows (`24h`, `7d`, `30m`, generally `<n>m|h|d` — `m` is **minutes**; months are
/// the calendar `month`) are `[now − length, now)`, evaluated at every admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    Day,
    Week,
    Month,
    Rolling { count: u32, unit: RollingUnit },
}

impl Window {
    /// Length of a rolling window in ms (`None` for calendar windows).
    pub fn rolling_ms(self) -> Option<i64> {
        match self {
            Window::Rolling { count, unit } => Some(i64::from(count).saturating_mul(unit.ms())),
            _ => None,
        }
    }

    pub fn is_calendar(self) -> bool {
        self.rolling_ms().is_none()
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Window::Day => f.write_str("day"),
            Window::Week => f.write_str("week"),
            Window::Month => f.write_str("month"),
            Window::Rolling { count, unit } => write!(f, "{count}{}", unit.suffix()),
        }
    }
}

impl FromStr for Window {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "'{s}' is not a window: expected day, week, month, or a rolling length \
                 <n>m, <n>h or <n>d (minutes, hours, days; e.g. 24h, 7d, 30d)"
            )
        };
        match s {
            "day" => return Ok(Window::Day),
            "week" => return Ok(Window::Week),
            "month" => return Ok(Window::Month),
            _ => {}
        }
        let Some(last) = s.chars().last() else {
            return Err(bad());
        };
        let unit = match last {
            'm' => RollingUnit::Minutes,
            'h' => RollingUnit::Hours,
            'd' => RollingUnit::Days,
            _ => return Err(bad()),
        };
        let digits = &s[..s.len() - 1];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let count: u32 = digits.parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(format!("'{s}': a rolling window must be at least 1m long"));
        }
        let w = Window::Rolling { count, unit };
        if w.rolling_ms().is_none_or(|ms| ms > MAX_ROLLING_MS) {
            return Err(format!(
                "'{s}': a rolling window can be at most 366d; use the calendar 'month' for longer periods"
            ));
        }
        Ok(w)
    }
}

impl Serialize for Window {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A definition rejected, naming the field (`limit_usd: must not be negative`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct DefError {
    /// Path of the offending field inside the definition (`scope.tenant`, `timezone`, …);
    /// `.` for the whole document.
    pub field: String,
    pub reason: String,
}

impl DefError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        DefError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

const MAX_NAME_LEN: usize = 128;
const MAX_VALUE_LEN: usize = 256;

impl BudgetDef {
    /// Parses one definition from JSON (the admin API body) and validates it. Unknown fields
    /// and type errors name their path.
    pub fn from_json(json: &str) -> Result<BudgetDef, DefError> {
        let de = &mut serde_json::Deserializer::from_str(json);
        let def: BudgetDef = serde_path_to_error::deserialize(de).map_err(|e| {
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
        if self.limit_usd < NanoUsd::ZERO {
            return Err(DefError::new("limit_usd", "must not be negative"));
        }
        match (&self.timezone, self.window.is_calendar()) {
            (Some(_), false) => {
                return Err(DefError::new(
                    "timezone",
                    format!(
                        "only calendar windows (day, week, month) have a time zone; \
                         '{}' is rolling",
                        self.window
                    ),
                ));
            }
            (Some(tz), true) => {
                resolve_tz(Some(tz))?;
            }
            (None, _) => {}
        }
        Ok(())
    }
}

/// The time zone of a calendar budget: the named IANA zone, or UTC.
pub(crate) fn resolve_tz(name: Option<&str>) -> Result<jiff::tz::TimeZone, DefError> {
    match name {
        None => Ok(jiff::tz::TimeZone::UTC),
        Some(n) if n.trim().is_empty() => Err(DefError::new("timezone", "must not be empty")),
        Some(n) => jiff::tz::TimeZone::get(n).map_err(|e| {
            DefError::new(
                "timezone",
                format!("'{n}' is not a known IANA time zone ({e})"),
            )
        }),
    }
}

pub(crate) fn validate_name(name: &str) -> Result<(), DefError> {
    if name.is_empty() {
        return Err(DefError::new("name", "must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(DefError::new(
            "name",
            format!("must be at most {MAX_NAME_LEN} bytes"),
        ));
    }
    // Names go into URLs (`/admin/v1/budgets/{name}`), headers and log lines: keep them to a
    // set that needs no escaping anywhere.
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@'))
    {
        return Err(DefError::new(
            "name",
            format!("'{name}' may only contain ASCII letters, digits and - _ . : @"),
        ));
    }
    Ok(())
}

pub(crate) fn validate_value(field: &str, value: &str) -> Result<(), DefError> {
    if value.is_empty() {
        return Err(DefError::new(
            field,
            "must not be empty (omit the field to match any value)",
        ));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(DefError::new(
            field,
            format!("must be at most {MAX_VALUE_LEN} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(DefError::new(field, "must not contain control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(json: &str) -> Result<BudgetDef, DefError> {
        BudgetDef::from_json(json)
    }

    #[test]
    fn parses_the_documented_shape() {
        let d = def(r#"{"name": "acme-monthly", "scope": {"tenant": "acme"}, "limit_usd": "50.00", "window": "month", "mode": "hard"}"#).unwrap();
        assert_eq!(d.name, "acme-monthly");
        assert_eq!(d.scope.tenant.as_deref(), Some("acme"));
        assert_eq!(d.limit_usd, NanoUsd::from_usd_whole(50));
        assert_eq!(d.window, Window::Month);
        assert_eq!(d.mode, Mode::Hard);
        assert_eq!(d.timezone, None);
        // Round trip through JSON keeps the shape.
        let back: BudgetDef = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn parses_yaml_and_rolling_windows() {
        let d: BudgetDef = serde_yaml_ng::from_str(
            "name: org\nscope: {}\nlimit_usd: 1000\nwindow: 24h\nmode: shadow\n",
        )
        .unwrap();
        d.validate().unwrap();
        assert!(d.scope.is_everything());
        assert_eq!(d.window.rolling_ms(), Some(86_400_000));
        assert_eq!(d.window.to_string(), "24h");
        for (s, ms) in [
            ("30m", 1_800_000),
            ("7d", 604_800_000),
            ("30d", 2_592_000_000),
        ] {
            assert_eq!(s.parse::<Window>().unwrap().rolling_ms(), Some(ms));
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"name":"a","scope":{"tenat":"x"},"limit_usd":"1","window":"day","mode":"hard"}"#,
                "scope.tenat",
                "unknown field `tenat`",
            ),
            (
                r#"{"name":"a","scope":{},"limit_usd":"1","window":"day","mode":"hard","extra":1}"#,
                "extra",
                "unknown field `extra`",
            ),
            (
                r#"{"name":"a","scope":{},"limit_usd":"-1","window":"day","mode":"hard"}"#,
                "limit_usd",
                "negative",
            ),
            (
                r#"{"name":"a","scope":{},"limit_usd":"1.0000000001","window":"day","mode":"hard"}"#,
                "limit_usd",
                "decimal places",
            ),
            (
                r#"{"name":"a","scope":{},"limit_usd":"1","window":"fortnight","mode":"hard"}"#,
                "window",
                "not a window",
            ),
            (
                r#"{"name":"a","scope":{},"limit_usd":"1","window":"0h","mode":"hard"}"#,
                "window",
                "at least 1m",
            ),
            (
                r#"{"name":"a","scope":{},"limit_usd":"1","window":"400d","mode":"hard"}"#,
                "window",
                "at most 366d",
            ),
            (
                r#"{"name":"a","scope":{},"limit_usd":"1","window":"day","mode":"strict"}"#,
                "mode",
                "unknown variant",
            ),
            (
                r#"{"name":"a","scope":{},"limit_usd":"1","window":"day","mode":"hard","timezone":"Mars/Olympus"}"#,
                "timezone",
                "not a known IANA time zone",
            ),
            (
                r#"{"name":"a","scope":{},"limit_usd":"1","window":"24h","mode":"hard","timezone":"UTC"}"#,
                "timezone",
                "only calendar windows",
            ),
            (
                r#"{"name":"a b","scope":{},"limit_usd":"1","window":"day","mode":"hard"}"#,
                "name",
                "may only contain",
            ),
            (
                r#"{"name":"a","scope":{"tenant":""},"limit_usd":"1","window":"day","mode":"hard"}"#,
                "scope.tenant",
                "must not be empty",
            ),
            (
                r#"{"name":"a","limit_usd":"1","window":"day","mode":"hard"}"#,
                ".",
                "missing field `scope`",
            ),
        ];
        for (json, field, reason) in cases {
            let e = def(json).unwrap_err();
            assert_eq!(e.field, field, "{json}: {e}");
            assert!(e.reason.contains(reason), "{json}: {e}");
        }
    }

    #[test]
    fn scope_matching() {
        let attr = Attribution {
            key_id: Some("k1".into()),
            tenant: Some("acme".into()),
            feature: Some("search".into()),
            ..Attribution::default()
        };
        let s = |json: &str| serde_json::from_str::<Scope>(json).unwrap();
        assert!(s("{}").matches(&attr, "gpt-4o"));
        assert!(s(r#"{"tenant":"acme"}"#).matches(&attr, "gpt-4o"));
        assert!(s(r#"{"tenant":"acme","feature":"search"}"#).matches(&attr, "gpt-4o"));
        assert!(!s(r#"{"tenant":"acme","feature":"chat"}"#).matches(&attr, "gpt-4o"));
        assert!(s(r#"{"key":"k1","model":"gpt-4o"}"#).matches(&attr, "gpt-4o"));
        assert!(!s(r#"{"model":"gpt-4o"}"#).matches(&attr, "gpt-4o-mini"));
        assert!(!s(r#"{"model":"gpt-4o"}"#).matches(&attr, ""));
        // A constrained dimension the request lacks never matches.
        assert!(!s(r#"{"user":"u1"}"#).matches(&attr, "gpt-4o"));
        // Budgets match `key` by id only, never by the (reusable) name.
        let named = Attribution {
            key_name: Some("ci".into()),
            ..attr.clone()
        };
        assert!(!s(r#"{"key":"ci"}"#).matches(&named, "gpt-4o"));
        // Unknown fields are rejected.
        assert!(serde_json::from_str::<Scope>(r#"{"tenat":"acme"}"#).is_err());
    }
}
