//! Traffic-operation settings of a logical model (`models.<name>.{retry,breaker,sticky}`) and
//! the gateway-wide retry budget (`server.retry_budget`): raw shapes, defaults and validation.
//!
//! Defaults are chosen so an operator who writes nothing gets sane behaviour: two retries with
//! jittered exponential backoff, breakers that open on five failures in a row or on half the
//! requests of the last 30 seconds failing, stickiness for as long as the provider's prompt
//! cache stays warm, and retries capped at 20 % of traffic.

use serde::{Deserialize, Serialize};

use crate::error::Issues;

/// `models.<name>.retry`: how failed attempts are retried.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RetryConfig {
    /// `max_attempts`: upstream attempts per request, all deployments and fallback models
    /// included; 1 disables retries. Default 3; 1–10.
    pub max_attempts: u32,
    /// `backoff_ms`: base of the exponential backoff before retrying a deployment already
    /// tried (full jitter: uniform in `[0, min(max_backoff_ms, backoff_ms·2^n)]`). Moving to
    /// another deployment does not wait. Default 100.
    pub backoff_ms: u64,
    /// `max_backoff_ms`: cap of one backoff. Default 2000.
    pub max_backoff_ms: u64,
    /// `max_retry_after_secs`: the longest provider `Retry-After` the gateway waits out itself;
    /// a longer one moves the request to another deployment or fails it with the provider's
    /// `Retry-After`. Default 5; 0 never waits.
    pub max_retry_after_secs: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            backoff_ms: 100,
            max_backoff_ms: 2000,
            max_retry_after_secs: 5,
        }
    }
}

/// `models.<name>.breaker`: the circuit breaker each of the model's deployments gets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BreakerConfig {
    /// `enabled`: default true; `false` never takes a deployment out of rotation (failures
    /// are still retried and counted).
    pub enabled: bool,
    /// `consecutive_failures`: open after this many failures in a row. Default 5; > 0.
    pub consecutive_failures: u32,
    /// `error_rate`: …or when this share of the requests in `window_secs` failed. Default 0.5;
    /// in (0, 1].
    pub error_rate: f64,
    /// `min_requests`: the error rate counts only with at least this many requests in the
    /// window. Default 10; > 0.
    pub min_requests: u32,
    /// `window_secs`: the error-rate window. Default 30; 1–3600.
    pub window_secs: u64,
    /// `cooldown_secs`: open → half-open after this long (a 429's `Retry-After` overrides it).
    /// Default 15; 1–3600.
    pub cooldown_secs: u64,
    /// `half_open_probes`: requests let through at once while half-open. Default 1; > 0.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            consecutive_failures: 5,
            error_rate: 0.5,
            min_requests: 10,
            window_secs: 30,
            cooldown_secs: 15,
            half_open_probes: 1,
        }
    }
}

/// `models.<name>.sticky`: prompt-cache-aware stickiness. Requests that share a long
/// conversation prefix go to the deployment that served it last while that provider's prompt
/// cache is likely warm, so cached-input prices are actually earned.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StickyConfig {
    /// `enabled`: default true.
    pub enabled: bool,
    /// `ttl_secs`: how long a conversation stays on its deployment after its last request.
    /// Default: the provider's prompt-cache lifetime (OpenAI, Azure, Anthropic, Bedrock 300 s;
    /// Gemini implicit caching 300 s as well). 1–86400.
    pub ttl_secs: Option<u64>,
    /// `min_prefix_chars`: prefixes shorter than this are not worth sticking (providers cache
    /// only prompts of ≥ 1024 tokens). Default 4096 characters.
    pub min_prefix_chars: usize,
}

impl Default for StickyConfig {
    fn default() -> Self {
        StickyConfig {
            enabled: true,
            ttl_secs: None,
            min_prefix_chars: 4096,
        }
    }
}

/// `server.retry_budget`: retries and fallback attempts, gateway-wide, may be at most `ratio`
/// of original requests over the last 10 seconds plus `min_per_sec` — an outage cannot turn
/// into a retry (and cost) storm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RetryBudgetConfig {
    /// `ratio`: default 0.2; 0–10.
    pub ratio: f64,
    /// `min_per_sec`: default 10.
    pub min_per_sec: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            ratio: 0.2,
            min_per_sec: 10,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetry {
    pub max_attempts: Option<u32>,
    pub backoff_ms: Option<u64>,
    pub max_backoff_ms: Option<u64>,
    pub max_retry_after_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBreaker {
    pub enabled: Option<bool>,
    pub consecutive_failures: Option<u32>,
    pub error_rate: Option<f64>,
    pub min_requests: Option<u32>,
    pub window_secs: Option<u64>,
    pub cooldown_secs: Option<u64>,
    pub half_open_probes: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSticky {
    pub enabled: Option<bool>,
    pub ttl_secs: Option<u64>,
    pub min_prefix_chars: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetryBudget {
    pub ratio: Option<f64>,
    pub min_per_sec: Option<u32>,
}

fn in_range<T: PartialOrd + std::fmt::Display>(
    issues: &mut Issues,
    path: &str,
    v: T,
    lo: T,
    hi: T,
) -> T {
    if v < lo || v > hi {
        issues.push(path, format!("must be between {lo} and {hi}, got {v}"));
    }
    v
}

pub(crate) fn retry(raw: Option<RawRetry>, path: &str, issues: &mut Issues) -> RetryConfig {
    let d = RetryConfig::default();
    let Some(r) = raw else { return d };
    let c = RetryConfig {
        max_attempts: in_range(
            issues,
            &format!("{path}.max_attempts"),
            r.max_attempts.unwrap_or(d.max_attempts),
            1,
            10,
        ),
        backoff_ms: in_range(
            issues,
            &format!("{path}.backoff_ms"),
            r.backoff_ms.unwrap_or(d.backoff_ms),
            0,
            60_000,
        ),
        max_backoff_ms: in_range(
            issues,
            &format!("{path}.max_backoff_ms"),
            r.max_backoff_ms.unwrap_or(d.max_backoff_ms),
            0,
            300_000,
        ),
        max_retry_after_secs: in_range(
            issues,
            &format!("{path}.max_retry_after_secs"),
            r.max_retry_after_secs.unwrap_or(d.max_retry_after_secs),
            0,
            300,
        ),
    };
    if c.max_backoff_ms < c.backoff_ms {
        issues.push(
            format!("{path}.max_backoff_ms"),
            format!(
                "must be ≥ backoff_ms ({}), got {}",
                c.backoff_ms, c.max_backoff_ms
            ),
        );
    }
    c
}

pub(crate) fn breaker(raw: Option<RawBreaker>, path: &str, issues: &mut Issues) -> BreakerConfig {
    let d = BreakerConfig::default();
    let Some(b) = raw else { return d };
    let error_rate = b.error_rate.unwrap_or(d.error_rate);
    if !(error_rate > 0.0 && error_rate <= 1.0) {
        issues.push(
            format!("{path}.error_rate"),
            format!("must be in (0, 1], got {error_rate}"),
        );
    }
    BreakerConfig {
        enabled: b.enabled.unwrap_or(d.enabled),
        consecutive_failures: in_range(
            issues,
            &format!("{path}.consecutive_failures"),
            b.consecutive_failures.unwrap_or(d.consecutive_failures),
            1,
            1000,
        ),
        error_rate,
        min_requests: in_range(
            issues,
            &format!("{path}.min_requests"),
            b.min_requests.unwrap_or(d.min_requests),
            1,
            100_000,
        ),
        window_secs: in_range(
            issues,
            &format!("{path}.window_secs"),
            b.window_secs.unwrap_or(d.window_secs),
            1,
            3600,
        ),
        cooldown_secs: in_range(
            issues,
            &format!("{path}.cooldown_secs"),
            b.cooldown_secs.unwrap_or(d.cooldown_secs),
            1,
            3600,
        ),
        half_open_probes: in_range(
            issues,
            &format!("{path}.half_open_probes"),
            b.half_open_probes.unwrap_or(d.half_open_probes),
            1,
            1000,
        ),
    }
}

pub(crate) fn sticky(raw: Option<RawSticky>, path: &str, issues: &mut Issues) -> StickyConfig {
    let d = StickyConfig::default();
    let Some(s) = raw else { return d };
    if let Some(t) = s.ttl_secs {
        in_range(issues, &format!("{path}.ttl_secs"), t, 1, 86_400);
    }
    StickyConfig {
        enabled: s.enabled.unwrap_or(d.enabled),
        ttl_secs: s.ttl_secs,
        min_prefix_chars: s.min_prefix_chars.unwrap_or(d.min_prefix_chars),
    }
}

pub(crate) fn retry_budget(raw: Option<RawRetryBudget>, issues: &mut Issues) -> RetryBudgetConfig {
    let d = RetryBudgetConfig::default();
    let Some(r) = raw else { return d };
    let ratio = r.ratio.unwrap_or(d.ratio);
    if !(0.0..=10.0).contains(&ratio) {
        issues.push(
            "server.retry_budget.ratio",
            format!("must be between 0 and 10, got {ratio}"),
        );
    }
    RetryBudgetConfig {
        ratio,
        min_per_sec: r.min_per_sec.unwrap_or(d.min_per_sec),
    }
}
