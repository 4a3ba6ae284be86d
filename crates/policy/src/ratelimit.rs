//! Rate limits: requests per minute (RPM) and tokens per minute (TPM) per key, tenant, user or
//! model, on the same [`CounterStore`] the budgets use (docs/contracts.md §6
//! `rate_limits`, §5 "rate limited").
//!
//! A rule ([`RateLimitDef`]) says which requests it applies to (`match`: a [`Scope`], the type
//! budgets use, with its rate-limit meanings of `key` and `model`), what it counts them by
//! (`per`: one counter per distinct key, tenant, user or model; absent = one counter for
//! everything the rule matches) and its limits. Every rule matching a request is
//! checked in **one** atomic [`CounterStore::try_reserve_each`]: 1 on each RPM counter, the
//! request's token estimate on each TPM counter, all or nothing. That single step is what makes
//! "no more admitted than the limit" exact under any concurrency — there is no read-then-write
//! window in which two requests can both see the last free slot.
//!
//! # Counting
//! - **Window:** a rolling 60 s, kept in 1 s buckets ([`WINDOW_MS`], [`BUCKET_MS`]). A count
//!   holds while any part of its bucket is inside the window, so it ages out 60–61 s after the
//!   request was admitted: the bucketing can only make a limit stricter, never looser.
//! - **RPM:** the request counts from admission whatever happens to it (served, failed,
//!   cancelled): the reservation is committed at once, dated by admission.
//! - **TPM:** admission reserves the estimate (prompt tokens + output cap, the same estimate
//!   budget admission uses); when the request ends, [`RateLimits::settle`] replaces it with the
//!   actual input + output tokens (0 for most failed upstream calls), dated by admission. The
//!   limit is exact on estimates; a provider that bills more than the estimate (it ignored the
//!   output cap) can push a TPM counter past its limit by that excess, which later requests
//!   then wait out.
//! - **Concurrency** (`max_concurrent`): a reservation of 1 on a counter without a window,
//!   held while the request runs and released when it ends ([`RateLimits::settle`]), so at
//!   most that many requests of one `per` value are in flight at once — checked in the same
//!   atomic step as RPM and TPM.
//! - A request whose `per` value is absent (no user, say) is not limited by that rule.
//!
//! # Units
//! The store's amounts are [`NanoUsd`] because it was built for budgets; here one unit is one
//! request or one token. Only the integer inside is used, so the counter logic is identical and
//! a remote store needs no second schema; the conversion lives at this module's edge.
//!
//! # Fail-open
//! A remote store that cannot answer makes admission return [`RateAdmission::Unavailable`];
//! the server admits the request untracked and logs it (a rate limit protects capacity; a
//! store outage should not become a full outage). [`crate::store::MemoryStore`] cannot fail.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tollgate_types::{Attribution, NanoUsd};

use crate::def::{DefError, Scope, validate_name, validate_value};
use crate::store::{CounterKey, CounterStore, Entry, Refusal, Slot};
use crate::window::bucket_start;

/// Length of the rolling window: one minute.
pub const WINDOW_MS: i64 = 60_000;
/// Width of a window bucket.
pub const BUCKET_MS: i64 = 1_000;
const SLOT: Slot = Slot::Rolling {
    len_ms: WINDOW_MS,
    bucket_ms: BUCKET_MS,
};
/// Concurrency counters have no window: only the reservations of requests in flight count.
const IN_FLIGHT: Slot = Slot::Calendar {
    start_ms: i64::MIN,
    end_ms: i64::MAX,
};
/// What a refused concurrent request is told to wait: in-flight requests end at their own pace.
const CONCURRENT_RETRY_MS: i64 = 1_000;
/// Largest `rpm`/`tpm` accepted: far above any real limit, far below overflow.
pub const MAX_LIMIT: u64 = 1_000_000_000_000;

/// What a rule keeps one counter per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    /// Per virtual key (by id).
    Key,
    Tenant,
    User,
    /// Per logical model served.
    Model,
}

impl Per {
    fn as_str(self) -> &'static str {
        match self {
            Per::Key => "key",
            Per::Tenant => "tenant",
            Per::User => "user",
            Per::Model => "model",
        }
    }
}

/// Whether a rule's `match` applies, with the rate-limit meanings documented on [`Scope`]:
/// `key` by the virtual key's name or id, `model` against the logical model served.
fn rule_matches(filter: &Scope, a: &Attribution, served_model: &str) -> bool {
    filter.matches_with_key(a, served_model, |k| {
        a.key_name.as_deref() == Some(k) || a.key_id.as_deref() == Some(k)
    })
}

/// One rate-limit rule (`rate_limits[i]` in the config):
///
/// ```yaml
/// - name: per-key        # unique; ASCII letters, digits and - _ . : @
///   per: key             # key | tenant | user | model; omit for one shared counter
///   match: {tenant: acme, model: gpt-4o-mini}   # optional, ANDed
///   rpm: 600             # requests per minute (optional)
///   tpm: 200000          # input + output tokens per minute (optional)
///   max_concurrent: 20   # requests in flight at once (optional)
/// ```
/// At least one of `rpm`/`tpm`/`max_concurrent`; each a whole number `> 0`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<Per>,
    /// `match`: which requests the rule applies to (absent = every request); [`Scope`] says
    /// what `key` and `model` mean in a rate limit.
    #[serde(
        default,
        rename = "match",
        skip_serializing_if = "Scope::is_everything"
    )]
    pub filter: Scope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Requests in flight at once (from admission until the request's row is recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
}

impl RateLimitDef {
    /// Checks a rule; the error names the field (`rpm`, `match.tenant`, …).
    pub fn validate(&self) -> Result<(), DefError> {
        validate_name(&self.name)?;
        for (field, value) in self.filter.fields() {
            validate_value(&format!("match.{field}"), value)?;
        }
        for (field, v) in [
            ("rpm", self.rpm),
            ("tpm", self.tpm),
            ("max_concurrent", self.max_concurrent),
        ] {
            match v {
                Some(0) => return Err(DefError::new(field, "must be > 0")),
                Some(v) if v > MAX_LIMIT => {
                    return Err(DefError::new(field, format!("must be at most {MAX_LIMIT}")));
                }
                _ => {}
            }
        }
        if self.rpm.is_none() && self.tpm.is_none() && self.max_concurrent.is_none() {
            return Err(DefError::new(
                "rpm",
                "a rate limit needs rpm, tpm or max_concurrent",
            ));
        }
        Ok(())
    }
}

/// Which limit a quota or refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Requests,
    Tokens,
    /// Requests in flight (`max_concurrent`); never in the `x-ratelimit-*` quotas.
    Concurrent,
}

/// One limit's state as a client sees it (the `x-ratelimit-*-requests|tokens` headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    /// Room left, after this request when it was admitted.
    pub remaining: u64,
    /// Milliseconds until the window is fully replenished if nothing else arrives.
    pub reset_ms: i64,
}

/// The tightest quota per dimension among a request's matching rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quotas {
    pub requests: Option<Quota>,
    pub tokens: Option<Quota>,
}

impl Quotas {
    pub fn is_empty(&self) -> bool {
        self.requests.is_none() && self.tokens.is_none()
    }

    fn offer(&mut self, dim: Dimension, q: Quota) {
        let slot = match dim {
            Dimension::Requests => &mut self.requests,
            Dimension::Tokens => &mut self.tokens,
            Dimension::Concurrent => return,
        };
        if slot.is_none_or(|s| q.remaining < s.remaining) {
            *slot = Some(q);
        }
    }
}

/// What an admitted request holds until [`RateLimits::settle`]: its token estimate on the TPM
/// counters, and its place on the concurrency counters.
#[derive(Debug)]
#[must_use = "a hold must be settled (tokens and in-flight places stay reserved until it is)"]
pub struct RateHold {
    /// The TPM counters (requests were committed at admission).
    entries: Vec<Entry>,
    /// The concurrency counters, 1 reserved on each.
    in_flight: Vec<Entry>,
    tokens: u64,
    at_ms: i64,
}

impl RateHold {
    /// Tokens reserved.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }
}

/// The outcome of [`RateLimits::admit`].
#[derive(Debug)]
pub enum RateAdmission {
    /// No rule applies to the request.
    Unlimited,
    /// Counted on every matching rule. `hold` is `Some` when a TPM rule reserved tokens or a
    /// concurrency rule a place.
    Admitted {
        hold: Option<RateHold>,
        quotas: Quotas,
    },
    /// Refused; nothing was reserved anywhere.
    Limited {
        /// The rule that needs the longest wait.
        rule: Arc<str>,
        dimension: Dimension,
        /// What the request asked for on that rule (1, or its token estimate).
        asked: u64,
        limit: u64,
        /// Milliseconds until that rule has room for this request; `None` when it never will
        /// (the request's estimate is larger than the TPM limit).
        retry_after_ms: Option<i64>,
        quotas: Quotas,
    },
    /// The counter store could not answer (remote store only); nothing was reserved.
    Unavailable { reason: String },
}

/// A request as rate limiting sees it.
#[derive(Debug, Clone, Copy)]
pub struct RateAsk<'a> {
    pub attribution: &'a Attribution,
    /// The logical model served.
    pub model: &'a str,
    /// Estimated input + output tokens (only read when a TPM rule matches; see
    /// [`RateLimits::wants_tokens`]).
    pub tokens: u64,
    pub now_ms: i64,
}

struct Rule {
    name: Arc<str>,
    def: RateLimitDef,
}

/// The installed rate-limit rules and their counters. Cheap to share (`Arc`); every method
/// may be called concurrently.
pub struct RateLimits {
    rules: Vec<Rule>,
    store: Arc<dyn CounterStore>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("rules", &self.rules.len())
            .finish()
    }
}

/// A counter a matching rule touches, with what to reserve on it.
struct Touch {
    rule: usize,
    dim: Dimension,
    entry: Entry,
    amount: u64,
}

impl RateLimits {
    /// Installs `defs` over `store`. Fails on the first invalid or duplicate rule, naming its
    /// index and field.
    pub fn new(
        defs: Vec<RateLimitDef>,
        store: Arc<dyn CounterStore>,
    ) -> Result<RateLimits, (usize, DefError)> {
        let mut rules: Vec<Rule> = Vec::with_capacity(defs.len());
        for (i, def) in defs.into_iter().enumerate() {
            def.validate().map_err(|e| (i, e))?;
            if rules.iter().any(|r| r.def.name == def.name) {
                return Err((
                    i,
                    DefError::new("name", format!("duplicate rate limit name '{}'", def.name)),
                ));
            }
            rules.push(Rule {
                name: Arc::from(def.name.as_str()),
                def,
            });
        }
        Ok(RateLimits { rules, store })
    }

    /// No rules: nothing is ever limited.
    pub fn disabled() -> RateLimits {
        RateLimits {
            rules: Vec::new(),
            store: Arc::new(crate::store::MemoryStore::new()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules, as installed.
    pub fn defs(&self) -> impl Iterator<Item = &RateLimitDef> {
        self.rules.iter().map(|r| &r.def)
    }

    /// True when a TPM rule applies to the request, i.e. admission needs its token estimate
    /// (counting a prompt costs more than the check itself, so callers count only then).
    pub fn wants_tokens(&self, attribution: &Attribution, model: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.def.tpm.is_some() && value_of(&r.def, attribution, model).is_some())
    }

    fn touches(&self, ask: &RateAsk<'_>) -> Vec<Touch> {
        let mut out = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            let Some(value) = value_of(&r.def, ask.attribution, ask.model) else {
                continue;
            };
            let per = r.def.per.map_or("all", Per::as_str);
            // '/' cannot occur in a rule name, so the identity cannot collide across rules.
            let mut push = |dim: Dimension, limit: u64, amount: u64| {
                let (d, slot) = match dim {
                    Dimension::Requests => ("rpm", SLOT),
                    Dimension::Tokens => ("tpm", SLOT),
                    Dimension::Concurrent => ("concurrent", IN_FLIGHT),
                };
                let id: Arc<str> = Arc::from(format!("rl/{}/{d}/{per}={value}", r.name));
                out.push(Touch {
                    rule: i,
                    dim,
                    entry: Entry {
                        key: CounterKey::new(id, slot),
                        limit: NanoUsd(to_i64(limit)),
                        enforce: true,
                    },
                    amount,
                });
            };
            if let Some(rpm) = r.def.rpm {
                push(Dimension::Requests, rpm, 1);
            }
            if let Some(tpm) = r.def.tpm {
                push(Dimension::Tokens, tpm, ask.tokens);
            }
            if let Some(n) = r.def.max_concurrent {
                push(Dimension::Concurrent, n, 1);
            }
        }
        out
    }

    /// Checks and counts a request on every matching rule, all or nothing (see the module docs).
    pub fn admit(&self, ask: &RateAsk<'_>) -> RateAdmission {
        let touches = self.touches(ask);
        if touches.is_empty() {
            return RateAdmission::Unlimited;
        }
        let entries: Vec<Entry> = touches.iter().map(|t| t.entry.clone()).collect();
        let amounts: Vec<NanoUsd> = touches.iter().map(|t| NanoUsd(to_i64(t.amount))).collect();
        let now = ask.now_ms;
        match self.store.try_reserve_each(&entries, &amounts, now) {
            Ok(rooms) => {
                // This request's counts sit in the current bucket (requests now, tokens when
                // settled, dated by admission), the newest one: the window is whole again
                // once that bucket has aged out.
                let reset_ms = bucket_start(now, BUCKET_MS) + BUCKET_MS + WINDOW_MS - now;
                let mut quotas = Quotas::default();
                let mut rpm = Vec::new();
                let mut tpm = Vec::new();
                let mut in_flight = Vec::new();
                for (t, room) in touches.into_iter().zip(rooms) {
                    let remaining = room.nanos().saturating_sub(to_i64(t.amount)).max(0);
                    quotas.offer(
                        t.dim,
                        Quota {
                            limit: from_i64(t.entry.limit.nanos()),
                            remaining: from_i64(remaining),
                            reset_ms,
                        },
                    );
                    match t.dim {
                        Dimension::Requests => rpm.push(t.entry),
                        Dimension::Tokens => tpm.push(t.entry),
                        Dimension::Concurrent => in_flight.push(t.entry),
                    }
                }
                if !rpm.is_empty() {
                    self.store.commit(&rpm, NanoUsd(1), NanoUsd(1), now);
                }
                let hold = (!tpm.is_empty() || !in_flight.is_empty()).then_some(RateHold {
                    entries: tpm,
                    in_flight,
                    tokens: ask.tokens,
                    at_ms: now,
                });
                RateAdmission::Admitted { hold, quotas }
            }
            Err(Refusal::Unavailable(reason)) => RateAdmission::Unavailable { reason },
            Err(Refusal::Shortfall(_)) => self.refusal(touches, now),
        }
    }

    /// Explains a refusal: for every counter, its quota; for every counter without room, when
    /// it will have some. Read after the atomic step failed, so it is advice, not a decision.
    fn refusal(&self, touches: Vec<Touch>, now: i64) -> RateAdmission {
        let mut quotas = Quotas::default();
        // (retry_after_ms or None = never, touch index)
        let mut worst: Option<(Option<i64>, usize)> = None;
        let fallback = bucket_start(now, BUCKET_MS) + BUCKET_MS + WINDOW_MS;
        for (i, t) in touches.iter().enumerate() {
            let c = self.store.snapshot(&t.entry.key, now);
            let limit = t.entry.limit;
            let room = limit.nanos() - c.spent.nanos().saturating_add(c.reserved.nanos());
            let full_at = self
                .store
                .room_at(&t.entry.key, limit, limit, now)
                .unwrap_or(fallback);
            quotas.offer(
                t.dim,
                Quota {
                    limit: from_i64(limit.nanos()),
                    remaining: from_i64(room.max(0)),
                    reset_ms: (full_at - now).max(0),
                },
            );
            let amount = to_i64(t.amount);
            if room >= amount {
                continue;
            }
            let wait = if t.dim == Dimension::Concurrent {
                Some(CONCURRENT_RETRY_MS)
            } else if amount > limit.nanos() {
                None
            } else {
                // `None` from the store: reservations of requests in flight hold the room;
                // they settle into buckets no newer than now's, so it is free by `fallback`.
                let at = self
                    .store
                    .room_at(&t.entry.key, limit, NanoUsd(amount), now)
                    .unwrap_or(fallback);
                Some((at - now).max(0))
            };
            let longer = match (worst, wait) {
                (None, _) => true,
                (Some((None, _)), _) => false,
                (Some((Some(_), _)), None) => true,
                (Some((Some(w), _)), Some(v)) => v > w,
            };
            if longer {
                worst = Some((wait, i));
            }
        }
        // The atomic step saw a shortfall that has since cleared (a settle in between):
        // still a refusal, with the shortest honest wait.
        let (retry_after_ms, i) = worst.unwrap_or((Some(0), 0));
        let t = &touches[i];
        RateAdmission::Limited {
            rule: self.rules[t.rule].name.clone(),
            dimension: t.dim,
            asked: t.amount,
            limit: from_i64(t.entry.limit.nanos()),
            retry_after_ms,
            quotas,
        }
    }

    /// Replaces a hold's token estimate with the tokens actually used. Call exactly once per
    /// hold, whatever the request's outcome.
    pub fn settle(&self, hold: RateHold, actual_tokens: u64) {
        if !hold.entries.is_empty() {
            self.store.commit(
                &hold.entries,
                NanoUsd(to_i64(hold.tokens)),
                NanoUsd(to_i64(actual_tokens)),
                hold.at_ms,
            );
        }
        if !hold.in_flight.is_empty() {
            self.store.release(&hold.in_flight, NanoUsd(1));
        }
    }

    /// Drops counters with nothing left in their window. Call every few seconds.
    pub fn sweep(&self, now_ms: i64) {
        self.store.sweep(now_ms);
    }
}

/// The value a rule counts the request under, or `None` when the rule does not apply.
fn value_of<'a>(def: &RateLimitDef, a: &'a Attribution, model: &'a str) -> Option<&'a str> {
    if !rule_matches(&def.filter, a, model) {
        return None;
    }
    match def.per {
        None => Some(""),
        Some(Per::Key) => a.key_id.as_deref(),
        Some(Per::Tenant) => a.tenant.as_deref(),
        Some(Per::User) => a.user.as_deref(),
        Some(Per::Model) => (!model.is_empty()).then_some(model),
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_i64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A duration as OpenAI writes its `x-ratelimit-reset-*` headers (Go's `Duration` format):
/// `20ms`, `1s`, `1.5s`, `6m0s`, `1h0m0s`.
pub fn format_reset(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let h = ms / 3_600_000;
    let m = ms / 60_000 % 60;
    let s = ms / 1_000 % 60;
    let frac = ms % 1_000;
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{frac:03}");
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    if h > 0 {
        format!("{h}h{m}m{secs}")
    } else if m > 0 {
        format!("{m}m{secs}")
    } else {
        secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    const T0: i64 = 1_783_296_000_000;

    fn rule(yaml: &str) -> RateLimitDef {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn attr(tenant: Option<&str>, user: Option<&str>) -> Attribution {
        Attribution {
            key_id: Some("key_1".into()),
            key_name: Some("ci".into()),
            tenant: tenant.map(Into::into),
            user: user.map(Into::into),
            ..Attribution::default()
        }
    }

    fn limits(yaml: &[&str]) -> RateLimits {
        RateLimits::new(
            yaml.iter().map(|y| rule(y)).collect(),
            Arc::new(MemoryStore::new()),
        )
        .unwrap()
    }

    fn ask<'a>(a: &'a Attribution, tokens: u64, now_ms: i64) -> RateAsk<'a> {
        RateAsk {
            attribution: a,
            model: "gpt-4o-mini",
            tokens,
            now_ms,
        }
    }

    #[test]
    fn validation_names_the_field() {
        let e = rule("{name: a, rpm: 0}").validate().unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("rpm", "must be > 0")
        );
        let e = rule("{name: a, per: user}").validate().unwrap_err();
        assert_eq!(e.field, "rpm");
        let e = rule("{name: a, tpm: 5, match: {tenant: ''}}")
            .validate()
            .unwrap_err();
        assert_eq!(e.field, "match.tenant");
        let e = rule("{name: 'a/b', rpm: 5}").validate().unwrap_err();
        assert_eq!(e.field, "name");
        assert!(serde_yaml_ng::from_str::<RateLimitDef>("{name: a, rpm: 1, burst: 2}").is_err());
        let (i, e) = RateLimits::new(
            vec![rule("{name: a, rpm: 1}"), rule("{name: a, tpm: 1}")],
            Arc::new(MemoryStore::new()),
        )
        .unwrap_err();
        assert_eq!((i, e.field.as_str()), (1, "name"));
    }

    #[test]
    fn rpm_admits_exactly_the_limit_then_ages_out() {
        let rl = limits(&["{name: k, per: key, rpm: 3}"]);
        let a = attr(None, None);
        for left in [2, 1, 0] {
            match rl.admit(&ask(&a, 0, T0)) {
                RateAdmission::Admitted { hold, quotas } => {
                    assert!(hold.is_none());
                    let q = quotas.requests.unwrap();
                    assert_eq!((q.limit, q.remaining), (3, left));
                    assert_eq!(q.reset_ms, 61_000);
                }
                other => panic!("{other:?}"),
            }
        }
        match rl.admit(&ask(&a, 0, T0 + 500)) {
            RateAdmission::Limited {
                rule,
                dimension,
                retry_after_ms,
                quotas,
                ..
            } => {
                assert_eq!(&*rule, "k");
                assert_eq!(dimension, Dimension::Requests);
                // Admitted in bucket [T0, T0+1s): counts until T0 + 61s.
                assert_eq!(retry_after_ms, Some(60_500));
                assert_eq!(quotas.requests.unwrap().remaining, 0);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            rl.admit(&ask(&a, 0, T0 + 60_999)),
            RateAdmission::Limited { .. }
        ));
        assert!(matches!(
            rl.admit(&ask(&a, 0, T0 + 61_000)),
            RateAdmission::Admitted { .. }
        ));
    }

    #[test]
    fn tpm_reserves_the_estimate_and_settles_to_actual() {
        let rl = limits(&["{name: t, per: tenant, tpm: 1000}"]);
        let a = attr(Some("acme"), None);
        let RateAdmission::Admitted { hold, quotas } = rl.admit(&ask(&a, 600, T0)) else {
            panic!()
        };
        assert_eq!(quotas.tokens.unwrap().remaining, 400);
        // 600 reserved: a second 600 does not fit, and nothing of it is left reserved.
        assert!(matches!(
            rl.admit(&ask(&a, 600, T0)),
            RateAdmission::Limited {
                dimension: Dimension::Tokens,
                retry_after_ms: Some(_),
                ..
            }
        ));
        rl.settle(hold.unwrap(), 150);
        let RateAdmission::Admitted { quotas, hold } = rl.admit(&ask(&a, 600, T0 + 10)) else {
            panic!()
        };
        assert_eq!(quotas.tokens.unwrap().remaining, 250);
        rl.settle(hold.unwrap(), 0);
        // Larger than the limit itself: never.
        assert!(matches!(
            rl.admit(&ask(&a, 1001, T0)),
            RateAdmission::Limited {
                retry_after_ms: None,
                ..
            }
        ));
    }

    #[test]
    fn rules_match_filter_and_per_value() {
        let rl = limits(&[
            "{name: u, per: user, rpm: 1}",
            "{name: acme, per: tenant, match: {tenant: acme}, rpm: 1}",
        ]);
        // No user, tenant beta: no rule applies.
        let b = attr(Some("beta"), None);
        assert!(matches!(
            rl.admit(&ask(&b, 0, T0)),
            RateAdmission::Unlimited
        ));
        assert!(matches!(
            rl.admit(&ask(&b, 0, T0)),
            RateAdmission::Unlimited
        ));
        // Users are counted apart.
        let u1 = attr(Some("beta"), Some("u1"));
        let u2 = attr(Some("beta"), Some("u2"));
        assert!(matches!(
            rl.admit(&ask(&u1, 0, T0)),
            RateAdmission::Admitted { .. }
        ));
        assert!(matches!(
            rl.admit(&ask(&u2, 0, T0)),
            RateAdmission::Admitted { .. }
        ));
        assert!(matches!(
            rl.admit(&ask(&u1, 0, T0)),
            RateAdmission::Limited { .. }
        ));
        // All or nothing: acme's user u3 passes the user rule but not the (spent) acme rule.
        let a3 = attr(Some("acme"), Some("u3"));
        assert!(matches!(
            rl.admit(&ask(&a3, 0, T0)),
            RateAdmission::Admitted { .. }
        ));
        let a4 = attr(Some("acme"), Some("u4"));
        match rl.admit(&ask(&a4, 0, T0)) {
            RateAdmission::Limited { rule, .. } => assert_eq!(&*rule, "acme"),
            other => panic!("{other:?}"),
        }
        // u4 was not counted by the refused request.
        let c4 = attr(Some("beta"), Some("u4"));
        assert!(matches!(
            rl.admit(&ask(&c4, 0, T0)),
            RateAdmission::Admitted { .. }
        ));
        // Key filter by name or id.
        let m = Scope {
            key: Some("ci".into()),
            ..Scope::default()
        };
        assert!(rule_matches(&m, &b, "x"));
        let m = Scope {
            key: Some("key_1".into()),
            ..Scope::default()
        };
        assert!(rule_matches(&m, &b, "x"));
        // The same scope read as a budget's: `key` is the id only.
        let by_name = Scope {
            key: Some("ci".into()),
            ..Scope::default()
        };
        assert!(!by_name.matches(&b, "x"));
        // `match` rejects unknown fields, like a budget's `scope`.
        assert!(
            serde_yaml_ng::from_str::<RateLimitDef>("{name: a, rpm: 1, match: {tenat: x}}")
                .is_err()
        );
    }

    #[test]
    fn reset_format_follows_openai() {
        assert_eq!(format_reset(20), "20ms");
        assert_eq!(format_reset(1_000), "1s");
        assert_eq!(format_reset(1_500), "1.5s");
        assert_eq!(format_reset(60_250), "1m0.25s");
        assert_eq!(format_reset(360_000), "6m0s");
        assert_eq!(format_reset(3_600_000), "1h0m0s");
        assert_eq!(format_reset(-5), "0ms");
    }
}
