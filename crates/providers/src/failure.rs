//! Failure classification: what a caller may do after an upstream failure ([`FailureClass`]).
//!
//! [`UpstreamError::class`](crate::UpstreamError::class) reads the provider's own
//! machine-readable error fields (OpenAI/Azure `error.code` and `innererror.code`, Anthropic
//! `error.type`, Google `error.status` and `RetryInfo`, Bedrock exception names) — falling back
//! on the documented message texts where a provider has no code for the case (Anthropic's
//! "prompt is too long", Gemini's "input token count … exceeds the maximum", Bedrock's "Input
//! is too long for requested model"). The same rules apply to an error response and to an error
//! event inside a stream, so a stream that fails before its first chunk can be failed over like
//! an error response.
//!
//! Error shapes recognised (each confirmed against the provider's documentation or SDK, see
//! `/work/shared/research/wire-formats.md` and the fixtures under `tests/fixtures/`):
//!
//! | class | OpenAI / Azure | Anthropic | Gemini | Bedrock |
//! |---|---|---|---|---|
//! | `ContextWindow` | 400 `code: context_length_exceeded` ("maximum context length is …") | 400 `invalid_request_error` "prompt is too long: N tokens > M maximum", "input length and `max_tokens` exceed context limit" | 400 `INVALID_ARGUMENT` "The input token count (N) exceeds the maximum number of tokens allowed (M)." | 400 `ValidationException` "Input is too long for requested model.", "too many input tokens", "prompt is too long" |
//! | `ContentPolicy` | 400 `code: content_filter` / `content_policy_violation` / `invalid_prompt` (usage policy), Azure `innererror.code: ResponsibleAIPolicyViolation` | 400 "Output blocked by content filtering policy" | — (a blocked prompt is an HTTP 200 with `promptFeedback.blockReason`; the adapter answers it as `finish_reason: content_filter`) | — (guardrails answer 200 with `stopReason: guardrail_intervened`); a "content filtering policy" `ValidationException` from a hosted Claude |
//! | `RateLimited` | 429 (`rate_limit_exceeded`, `insufficient_quota`) | 429 `rate_limit_error` | 429 `RESOURCE_EXHAUSTED` | 429 `ThrottlingException`, 400 `ServiceQuotaExceededException` |
//! | `Overloaded` | 503 "engine is currently overloaded" | 529 `overloaded_error` | 503 `UNAVAILABLE` | 503 `ServiceUnavailableException`, `ModelNotReadyException` |
//! | `Transient` | connect/timeout/reset, 408, 409, other 5xx | `api_error`, `timeout_error` | `INTERNAL`, `DEADLINE_EXCEEDED` | `InternalServerException`, 408 `ModelTimeoutException`, 424 `ModelErrorException` / `ModelStreamErrorException` |
//! | `Client` | other 4xx (401, 403, 404, 400 …) | other 4xx | other 4xx | other 4xx |

use std::time::Duration;

use serde_json::Value;

/// What a caller may do after a failure. See [`crate::UpstreamError::class`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Connect error, timeout, reset, 5xx (other than overload), 408, 409, an unreadable
    /// answer: retry with backoff, then fall back.
    Transient,
    /// 429 (Gemini `RESOURCE_EXHAUSTED`, Bedrock `ThrottlingException`): honour
    /// [`crate::UpstreamError::retry_after`]; fall back to another deployment.
    RateLimited,
    /// Anthropic 529 `overloaded_error`, a 503 with overload semantics: like `RateLimited`.
    Overloaded,
    /// The prompt exceeds the model's context window: do not retry the same model; fall back
    /// to a larger-context model.
    ContextWindow,
    /// The provider refused the content under its policy: never retry, never fall back.
    ContentPolicy,
    /// Any other 4xx (bad request, auth 401/403, not found), or a request the adapter cannot
    /// express: never retry.
    Client,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Transient => "transient",
            FailureClass::RateLimited => "rate_limited",
            FailureClass::Overloaded => "overloaded",
            FailureClass::ContextWindow => "context_window",
            FailureClass::ContentPolicy => "content_policy",
            FailureClass::Client => "client",
        }
    }
}

/// The machine-readable fields of a provider error body, whatever its shape: OpenAI
/// `{"error":{"message","type","code","innererror":{"code"}}}`, Anthropic
/// `{"type":"error","error":{"type","message"}}`, Google
/// `{"error":{"code":429,"message","status","details":[…]}}` (possibly wrapped in a
/// one-element array), Bedrock `{"message","code"}` (the adapter puts the exception name in
/// `code`).
#[derive(Debug, Default)]
struct Fields {
    /// Lower-cased `type`, string `code`, Google `status`, `innererror.code`.
    tags: Vec<String>,
    /// Google's numeric `error.code` (its HTTP status).
    numeric_code: Option<u16>,
    /// Lower-cased message.
    message: String,
    /// `RetryInfo.retryDelay`.
    retry_delay: Option<Duration>,
}

impl Fields {
    fn parse(body: &[u8]) -> Fields {
        let mut f = Fields::default();
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            f.message = String::from_utf8_lossy(&body[..body.len().min(4096)]).to_lowercase();
            return f;
        };
        let v = match &v {
            Value::Array(items) if items.len() == 1 => &items[0],
            _ => &v,
        };
        let err = match v.get("error") {
            Some(e @ Value::Object(_)) => e,
            _ => v,
        };
        let mut tag = |x: Option<&Value>| {
            if let Some(s) = x.and_then(Value::as_str).filter(|s| !s.is_empty()) {
                f.tags.push(s.to_ascii_lowercase());
            }
        };
        tag(err.get("type"));
        tag(err.get("code"));
        tag(err.get("status"));
        tag(err.get("__type"));
        tag(err.get("innererror").and_then(|i| i.get("code")));
        if let Some(details) = err.get("details").and_then(Value::as_array) {
            for d in details {
                tag(d.get("reason"));
                if let Some(delay) = d.get("retryDelay").and_then(Value::as_str) {
                    f.retry_delay = parse_google_duration(delay);
                }
            }
        }
        f.numeric_code = err
            .get("code")
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok());
        f.message = err
            .get("message")
            .or_else(|| err.get("Message"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_lowercase();
        f
    }

    fn has(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// The HTTP status the error's own fields name, for errors that arrive without one (an
    /// error event inside a stream that answered 200).
    fn implied_status(&self) -> Option<u16> {
        if let Some(c) = self.numeric_code.filter(|c| (400..600).contains(c)) {
            return Some(c);
        }
        self.tags.iter().find_map(|t| {
            Some(match t.as_str() {
                // Anthropic error types.
                "invalid_request_error" | "request_too_large" => 400,
                "authentication_error" => 401,
                "billing_error" => 402,
                "permission_error" => 403,
                "not_found_error" => 404,
                "rate_limit_error" | "rate_limit_exceeded" | "insufficient_quota" => 429,
                "api_error" | "server_error" => 500,
                "timeout_error" => 504,
                "overloaded_error" => 529,
                // Google status names.
                "invalid_argument" | "failed_precondition" => 400,
                "unauthenticated" => 401,
                "permission_denied" => 403,
                "resource_exhausted" => 429,
                "internal" => 500,
                "unavailable" => 503,
                "deadline_exceeded" => 504,
                // Bedrock exceptions (names as the adapter normalises them, any case).
                "validationexception" | "servicequotaexceededexception" => 400,
                "accessdeniedexception" => 403,
                "resourcenotfoundexception" => 404,
                "modeltimeoutexception" => 408,
                "modelerrorexception" | "modelstreamerrorexception" => 424,
                "throttlingexception" => 429,
                "internalserverexception" => 500,
                "modelnotreadyexception" | "serviceunavailableexception" => 503,
                _ => return None,
            })
        })
    }

    fn is_context_window(&self) -> bool {
        let m = &self.message;
        self.has("context_length_exceeded")
            || m.contains("prompt is too long")
            || m.contains("exceed context limit")
            || m.contains("maximum context length")
            || m.contains("context window")
            || (m.contains("input token count") && m.contains("exceeds the maximum"))
            || m.contains("input is too long for requested model")
            || m.contains("too many input tokens")
    }

    fn is_content_policy(&self) -> bool {
        let m = &self.message;
        self.has("content_filter")
            || self.has("content_policy_violation")
            || self.has("responsibleaipolicyviolation")
            || (self.has("invalid_prompt") && m.contains("usage polic"))
            || m.contains("content filtering policy")
            || m.contains("content management policy")
    }

    fn is_overloaded(&self) -> bool {
        self.has("overloaded_error")
            || self.has("unavailable")
            || self.has("serviceunavailableexception")
            || self.has("modelnotreadyexception")
            || self.message.contains("overloaded")
    }
}

/// Classifies a provider error: `status` is the HTTP status when the error was a response,
/// `None` for an error event inside a stream (its own fields then imply one).
pub(crate) fn classify(status: Option<u16>, body: &[u8]) -> FailureClass {
    let f = Fields::parse(body);
    let status = status.or_else(|| f.implied_status());
    let client_side = status.is_none_or(|s| (400..500).contains(&s));
    if client_side && f.is_content_policy() {
        return FailureClass::ContentPolicy;
    }
    if client_side && f.is_context_window() {
        return FailureClass::ContextWindow;
    }
    if f.has("throttlingexception")
        || f.has("servicequotaexceededexception")
        || f.has("resource_exhausted")
    {
        return FailureClass::RateLimited;
    }
    match status {
        Some(429) => FailureClass::RateLimited,
        Some(529) => FailureClass::Overloaded,
        Some(503) if f.is_overloaded() => FailureClass::Overloaded,
        Some(408 | 409) => FailureClass::Transient,
        // Bedrock: the hosted model failed or timed out; another attempt may well succeed.
        Some(424) => FailureClass::Transient,
        Some(s) if s >= 500 => FailureClass::Transient,
        Some(_) => FailureClass::Client,
        // An error event with nothing to go by: the provider failed mid-answer.
        None if f.is_overloaded() => FailureClass::Overloaded,
        None => FailureClass::Transient,
    }
}

/// Google's `RetryInfo.retryDelay` in an error body.
pub(crate) fn body_retry_delay(body: &[u8]) -> Option<Duration> {
    Fields::parse(body).retry_delay
}

/// A `google.protobuf.Duration` in its JSON form: decimal seconds with an `s` suffix
/// (`"37s"`, `"1.5s"`).
fn parse_google_duration(s: &str) -> Option<Duration> {
    retry_wait_secs(s.trim().strip_suffix('s')?.parse().ok()?)
}

/// The longest wait a provider's hint is taken at: past a day it says "not soon", and a
/// bigger number only risks overflow downstream.
pub(crate) const MAX_RETRY_WAIT: Duration = Duration::from_secs(86_400);

/// A provider's retry hint in (fractional) seconds as a wait: `None` for NaN or a negative
/// number, capped at [`MAX_RETRY_WAIT`] — so `Retry-After: 1e20` is a day, not a panic. Every
/// parser of a provider's wait goes through this (or [`retry_wait`]).
pub(crate) fn retry_wait_secs(secs: f64) -> Option<Duration> {
    if secs.is_nan() || secs < 0.0 {
        return None;
    }
    Some(Duration::try_from_secs_f64(secs).map_or(MAX_RETRY_WAIT, |d| d.min(MAX_RETRY_WAIT)))
}

/// [`retry_wait_secs`] for a wait already in a `Duration`.
pub(crate) fn retry_wait(d: Duration) -> Duration {
    d.min(MAX_RETRY_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_waits_are_bounded_never_a_panic() {
        for (secs, want) in [
            (1.5, Some(Duration::from_millis(1_500))),
            (0.0, Some(Duration::ZERO)),
            (1e20, Some(MAX_RETRY_WAIT)),
            (f64::INFINITY, Some(MAX_RETRY_WAIT)),
            (f64::MAX, Some(MAX_RETRY_WAIT)),
            (-1.0, None),
            (f64::NAN, None),
            (f64::NEG_INFINITY, None),
        ] {
            assert_eq!(retry_wait_secs(secs), want, "{secs}");
        }
        for body in [
            r#"{"error":{"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"1e20s"}]}}"#,
            r#"{"error":{"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"-3s"}]}}"#,
            r#"{"error":{"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"NaNs"}]}}"#,
        ] {
            assert!(body_retry_delay(body.as_bytes()).is_none_or(|d| d <= MAX_RETRY_WAIT));
        }
    }

    #[test]
    fn google_durations() {
        assert_eq!(parse_google_duration("37s"), Some(Duration::from_secs(37)));
        assert_eq!(
            parse_google_duration("1.5s"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_google_duration("37"), None);
        assert_eq!(parse_google_duration("-1s"), None);
        assert_eq!(parse_google_duration("NaNs"), None);
    }

    #[test]
    fn statuses_without_bodies() {
        assert_eq!(classify(Some(500), b""), FailureClass::Transient);
        assert_eq!(classify(Some(502), b"<html>"), FailureClass::Transient);
        assert_eq!(classify(Some(503), b""), FailureClass::Transient);
        assert_eq!(classify(Some(529), b""), FailureClass::Overloaded);
        assert_eq!(classify(Some(429), b""), FailureClass::RateLimited);
        assert_eq!(classify(Some(408), b""), FailureClass::Transient);
        assert_eq!(classify(Some(409), b""), FailureClass::Transient);
        assert_eq!(classify(Some(400), b""), FailureClass::Client);
        assert_eq!(classify(Some(401), b""), FailureClass::Client);
        assert_eq!(classify(Some(404), b"not found"), FailureClass::Client);
        assert_eq!(classify(None, b""), FailureClass::Transient);
    }

    #[test]
    fn server_errors_never_look_like_client_refusals() {
        // A 5xx whose text happens to mention the context window is still the server's fault.
        let body = br#"{"error":{"message":"prompt is too long","type":"api_error"}}"#;
        assert_eq!(classify(Some(500), body), FailureClass::Transient);
    }
}
