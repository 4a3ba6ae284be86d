//! Upstream failures: what went wrong, where, and whether another attempt could help.
//!
//! An [`UpstreamError`] carries its origin (the upstream, or — for [`UpstreamErrorKind::Unsupported`]
//! — an adapter that cannot express the request in its provider's wire format), whether a retry or
//! fallback may succeed, and enough detail to build the client-facing [`ApiError`] — which names
//! the provider and never contains the provider's key (see [`UpstreamError::to_api_error`]).
//! [`UpstreamError::class`] says what a caller may do next (retry, fall back, give up; see
//! [`crate::failure`]) and [`UpstreamError::retry_after`] how long the provider asked to wait.

use std::time::Duration;

pub use crate::failure::FailureClass;

use bytes::Bytes;
use tollgate_types::{ApiError, ErrorCode};

/// Which timeout fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    Connect,
    FirstByte,
    Idle,
    Total,
}

impl TimeoutPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutPhase::Connect => "connect",
            TimeoutPhase::FirstByte => "first byte",
            TimeoutPhase::Idle => "idle between chunks",
            TimeoutPhase::Total => "total",
        }
    }
}

#[derive(Debug, Clone)]
pub enum UpstreamErrorKind {
    /// Could not connect (refused, DNS, TLS).
    Connect(String),
    /// The connection broke (reset, closed mid-body).
    Broken(String),
    Timeout(TimeoutPhase),
    /// The provider answered with a non-success status.
    Status {
        status: u16,
        body: Bytes,
        retry_after: Option<Duration>,
    },
    /// An error event inside a stream whose response had already started (HTTP 200): OpenAI
    /// `data: {"error":{…}}`, Anthropic `event: error`, a Gemini `{"error":…}` event, a Bedrock
    /// exception frame after the first event. It may come before the stream's first chunk
    /// (then nothing was relayed yet and the caller may still fail over).
    InStream {
        /// Short description for the client (scrubbed when relayed).
        message: String,
        /// The provider's error payload (JSON), kept for [`UpstreamError::class`] and
        /// [`UpstreamError::retry_after`]; empty when there was none.
        body: Bytes,
    },
    /// The provider's answer could not be read (bad JSON, stream without its end marker).
    Protocol(String),
    /// The canonical request cannot be expressed in this provider's wire format (an image URL
    /// for a provider that needs bytes, `n > 1`, an endpoint the adapter does not serve). Found
    /// before anything is sent; the same request may succeed on another provider.
    Unsupported(String),
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("provider '{provider}': {kind:?}")]
pub struct UpstreamError {
    pub provider: String,
    pub kind: UpstreamErrorKind,
}

impl UpstreamError {
    pub fn new(provider: &str, kind: UpstreamErrorKind) -> Self {
        UpstreamError {
            provider: provider.to_string(),
            kind,
        }
    }

    /// What a caller may do next, from the provider's own error fields (see
    /// [`crate::failure`] for the shapes recognised per provider). Connect failures, timeouts,
    /// broken connections and unreadable answers are [`FailureClass::Transient`]; a request
    /// the adapter cannot express ([`UpstreamErrorKind::Unsupported`]) is
    /// [`FailureClass::Client`]. An in-stream error is classified like the response the same
    /// error would have been (Anthropic `overloaded_error` → `Overloaded`, Gemini
    /// `RESOURCE_EXHAUSTED` → `RateLimited`, …); whether anything was relayed before it is the
    /// caller's to know.
    pub fn class(&self) -> FailureClass {
        match &self.kind {
            UpstreamErrorKind::Connect(_)
            | UpstreamErrorKind::Broken(_)
            | UpstreamErrorKind::Timeout(_)
            | UpstreamErrorKind::Protocol(_) => FailureClass::Transient,
            UpstreamErrorKind::Unsupported(_) => FailureClass::Client,
            UpstreamErrorKind::Status { status, body, .. } => {
                crate::failure::classify(Some(*status), body)
            }
            UpstreamErrorKind::InStream { body, .. } => crate::failure::classify(None, body),
        }
    }

    /// How long the provider asked to wait before another attempt: the `retry-after-ms` /
    /// `Retry-After` headers of an error response, else Google's `RetryInfo.retryDelay` in the
    /// error body (responses and stream events). `None` when the provider said nothing (AWS
    /// never does).
    pub fn retry_after(&self) -> Option<Duration> {
        match &self.kind {
            UpstreamErrorKind::Status {
                retry_after, body, ..
            } => retry_after.or_else(|| crate::failure::body_retry_delay(body)),
            UpstreamErrorKind::InStream { body, .. } => crate::failure::body_retry_delay(body),
            _ => None,
        }
    }

    /// True when another attempt (retry or fallback) may succeed: connect failures, timeouts,
    /// broken connections, 408, 409, 429 and 5xx (including Anthropic's 529). Errors after a
    /// 200 are never retryable here (the stream may have been relayed); see [`Self::class`]
    /// for the finer classification a fallback executor uses.
    pub fn retryable(&self) -> bool {
        match &self.kind {
            UpstreamErrorKind::Connect(_)
            | UpstreamErrorKind::Broken(_)
            | UpstreamErrorKind::Timeout(_) => true,
            UpstreamErrorKind::Status { status, .. } => {
                matches!(status, 408 | 409 | 429) || *status >= 500
            }
            // Unsupported: the same adapter will refuse again; a fallback to another provider
            // kind is the router's decision, not a retry.
            UpstreamErrorKind::InStream { .. }
            | UpstreamErrorKind::Protocol(_)
            | UpstreamErrorKind::Unsupported(_) => false,
        }
    }

    /// The client-facing error. `secrets` are scrubbed from any provider text we relay
    /// (providers echo keys back in 401 messages).
    pub fn to_api_error(&self, secrets: &[&str]) -> ApiError {
        let p = &self.provider;
        match &self.kind {
            UpstreamErrorKind::Connect(why) => ApiError::new(
                ErrorCode::UpstreamUnavailable,
                format!(
                    "provider '{p}' could not be reached: {}",
                    scrub(why, secrets)
                ),
            ),
            UpstreamErrorKind::Broken(why) => ApiError::new(
                ErrorCode::UpstreamError,
                format!("provider '{p}' connection failed: {}", scrub(why, secrets)),
            ),
            UpstreamErrorKind::Timeout(phase) => ApiError::new(
                ErrorCode::UpstreamTimeout,
                format!("provider '{p}' timed out ({} timeout)", phase.as_str()),
            ),
            UpstreamErrorKind::InStream { message, .. } => ApiError::new(
                match self.class() {
                    FailureClass::RateLimited => ErrorCode::UpstreamRateLimited,
                    FailureClass::Overloaded => ErrorCode::UpstreamUnavailable,
                    FailureClass::ContextWindow => ErrorCode::ContextLengthExceeded,
                    FailureClass::ContentPolicy => ErrorCode::ContentFiltered,
                    _ => ErrorCode::UpstreamError,
                },
                format!(
                    "provider '{p}' failed mid-stream: {}",
                    scrub(message, secrets)
                ),
            ),
            UpstreamErrorKind::Protocol(why) => ApiError::new(
                ErrorCode::UpstreamError,
                format!(
                    "provider '{p}' sent an unreadable response: {}",
                    scrub(why, secrets)
                ),
            ),
            UpstreamErrorKind::Unsupported(why) => ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "provider '{p}' cannot serve this request: {}",
                    scrub(why, secrets)
                ),
            ),
            UpstreamErrorKind::Status {
                status,
                body,
                retry_after,
            } => {
                let detail = describe_body(body, secrets);
                let (code, status_out) = match (self.class(), status) {
                    (FailureClass::ContextWindow, _) => (ErrorCode::ContextLengthExceeded, None),
                    (FailureClass::ContentPolicy, _) => (ErrorCode::ContentFiltered, None),
                    (_, status) => match status {
                        401 | 403 => (ErrorCode::UpstreamAuthFailed, None),
                        429 => (ErrorCode::UpstreamRateLimited, None),
                        400 | 413 | 422 => (ErrorCode::UpstreamBadRequest, Some(*status)),
                        503 | 529 => (ErrorCode::UpstreamUnavailable, None),
                        // Gemini DEADLINE_EXCEEDED, gateway timeouts in front of a provider.
                        504 => (ErrorCode::UpstreamTimeout, None),
                        _ => (ErrorCode::UpstreamError, None),
                    },
                };
                let mut e = ApiError::new(
                    code,
                    format!("provider '{p}' returned HTTP {status}: {detail}"),
                );
                if let Some(s) = status_out {
                    e = e.with_status(s);
                }
                if let Some(ra) = retry_after.or_else(|| crate::failure::body_retry_delay(body)) {
                    e = e.with_retry_after(ra.as_secs().max(1));
                }
                e
            }
        }
    }
}

/// A short description of a provider error body: its `error.message` (and its string `code`,
/// or Google's `status` when the code is numeric) when it is OpenAI-, Anthropic- or
/// Gemini-shaped JSON, a top-level `message` (AWS / Bedrock `{"message": …}`, some AWS services
/// spell it `Message`), otherwise the first 200 characters of the text.
///
/// Gemini: `{"error":{"code":429,"message":"…","status":"RESOURCE_EXHAUSTED"}}`, sometimes
/// wrapped in a one-element array (the non-SSE streaming endpoint answers with a JSON array).
///
/// The description is scrubbed of `secrets`, and a plain text is scrubbed *before* it is cut to
/// 200 characters: cut first, a key straddling the cut left its first part behind, which the
/// scrubber no longer recognises (found by the `error_classify` fuzz target).
fn describe_body(body: &[u8], secrets: &[&str]) -> String {
    if let Some(d) = describe_json(body) {
        return scrub(&d, secrets);
    }
    let text = scrub(&String::from_utf8_lossy(body), secrets);
    let trimmed: String = text.trim().chars().take(200).collect();
    if trimmed.is_empty() {
        "(empty body)".to_string()
    } else {
        trimmed
    }
}

/// [`describe_body`] of a JSON error body with a message; `None` for anything else.
fn describe_json(body: &[u8]) -> Option<String> {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let v = match &v {
            serde_json::Value::Array(items) if items.len() == 1 => &items[0],
            _ => &v,
        };
        let err = v.get("error").unwrap_or(v);
        let msg = err
            .get("message")
            .or_else(|| err.get("Message"))
            .and_then(|m| m.as_str())
            .or_else(|| err.as_str());
        if let Some(msg) = msg {
            if let Some(code) = err.get("code").and_then(|c| c.as_str()) {
                return Some(format!("{msg} (code: {code})"));
            }
            if let Some(status) = err.get("status").and_then(|c| c.as_str()) {
                return Some(format!("{msg} (status: {status})"));
            }
            return Some(msg.to_string());
        }
    }
    None
}

/// Removes every occurrence of each secret from `text`, its last six characters wherever they
/// appear, and every masked form of it: a word with a run of mask characters (`***`, `•••`)
/// whose visible start is a prefix of a secret or whose visible end is a suffix of one
/// (`sk-SECR************-123`), since providers echo keys that way and prefix plus suffix
/// narrow a key down.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let secrets: Vec<&str> = secrets.iter().copied().filter(|s| s.len() >= 8).collect();
    let mut out = text.to_string();
    for s in &secrets {
        out = out.replace(s, "[redacted]");
        if s.is_char_boundary(s.len() - 6) {
            out = out.replace(&s[s.len() - 6..], "[redacted]");
        }
    }
    if secrets.is_empty() || !out.contains(is_mask) {
        return out;
    }
    let mut scrubbed = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while !rest.is_empty() {
        let end = rest.find(is_delimiter).unwrap_or(rest.len());
        let (word, tail) = rest.split_at(end);
        if masked_secret(word, &secrets) {
            scrubbed.push_str("[redacted]");
        } else {
            scrubbed.push_str(word);
        }
        // The delimiter itself (one char), then the next word.
        let mut chars = tail.chars();
        if let Some(d) = chars.next() {
            scrubbed.push(d);
        }
        rest = chars.as_str();
    }
    scrubbed
}

/// What ends a word for [`scrub`] (and [`cut_at_word`]).
fn is_delimiter(c: char) -> bool {
    c.is_whitespace() || "\"'`,;()[]{}<>=".contains(c)
}

/// The first `max` characters of `text`, cut at the end of a word (a first word longer than
/// `max` is dropped). For provider text cut before it can be scrubbed: a key cut in half is no
/// longer recognised by [`scrub`], so its first part would reach the client (found by the
/// `error_classify` fuzz target in the Bedrock error reader).
pub(crate) fn cut_at_word(text: &str, max: usize) -> &str {
    let Some((end, next)) = text.char_indices().nth(max) else {
        return text;
    };
    let head = &text[..end];
    if is_delimiter(next) {
        return head;
    }
    head.rfind(is_delimiter).map_or("", |i| &head[..i])
}

fn is_mask(c: char) -> bool {
    matches!(c, '*' | '•' | '…')
}

/// Whether `word` is a masked form of one of `secrets`: at least three mask characters, with a
/// visible prefix (two characters or more) of a secret before them or a visible suffix after.
fn masked_secret(word: &str, secrets: &[&str]) -> bool {
    let (Some(first), Some(last)) = (word.find(is_mask), word.rfind(is_mask)) else {
        return false;
    };
    if word.chars().filter(|&c| is_mask(c)).count() < 3 {
        return false;
    }
    let before = &word[..first];
    let after_start = last + word[last..].chars().next().map_or(1, char::len_utf8);
    let after = word[after_start..].trim_end_matches(['.', ':', '!', '?']);
    secrets.iter().any(|s| {
        (before.len() >= 2 && s.starts_with(before)) || (after.len() >= 2 && s.ends_with(after))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_masked_forms_with_prefix_and_suffix() {
        let key = "sk-SECRETKEYVALUE-123";
        for msg in [
            "Incorrect API key provided: sk-SECR************-123.",
            "key sk-SECR•••••• is invalid",
            "key ********-123: invalid",
            r#"{"error":"bad key 'sk-SE***23'"}"#,
        ] {
            let out = scrub(msg, &[key]);
            assert!(out.contains("[redacted]"), "{msg} → {out}");
            assert!(
                !out.contains("SECR") && !out.contains("-123"),
                "{msg} → {out}"
            );
        }
        // Masks that are not a key's stay: nothing to do with the secret.
        assert_eq!(
            scrub("rated ***** by users", &[key]),
            "rated ***** by users"
        );
        assert_eq!(scrub("no mask here", &[key]), "no mask here");
    }

    /// A key straddling the 200-character cut of a plain-text error body left its first part
    /// in the client's message (fuzz target `error_classify`); the text is now scrubbed first.
    #[test]
    fn a_key_at_the_cut_of_a_text_body_leaves_nothing_behind() {
        let key = "sk-fuzz-7Qm2Zt9XbLw4Kp8R";
        let body = format!(
            "<html><body>{} key {key} rejected</body></html>",
            "x".repeat(170)
        );
        let e = UpstreamError::new(
            "fuzz",
            UpstreamErrorKind::Status {
                status: 502,
                body: body.into(),
                retry_after: None,
            },
        );
        let msg = e.to_api_error(&[key]).message;
        assert!(!msg.contains("sk-fuzz-7Q"), "{msg}");
        assert!(msg.ends_with("key [redacted] re"), "{msg}");
    }

    #[test]
    fn scrubs_keys_and_masked_tails() {
        let key = "sk-live-abcdefghijklmnop";
        let msg = format!("Incorrect API key provided: sk-live-***********klmnop. Key {key}");
        let out = scrub(&msg, &[key]);
        assert!(!out.contains("klmnop"), "{out}");
        assert!(!out.contains(key));
    }

    #[test]
    fn maps_statuses() {
        let mk = |status: u16| {
            UpstreamError::new(
                "sim",
                UpstreamErrorKind::Status {
                    status,
                    body: Bytes::from_static(br#"{"error":{"message":"nope","code":"x"}}"#),
                    retry_after: Some(Duration::from_secs(3)),
                },
            )
        };
        assert_eq!(mk(401).to_api_error(&[]).status(), 502);
        assert_eq!(mk(429).to_api_error(&[]).status(), 429);
        assert_eq!(mk(429).to_api_error(&[]).retry_after_secs, Some(3));
        assert_eq!(mk(400).to_api_error(&[]).status(), 400);
        assert_eq!(mk(500).to_api_error(&[]).status(), 502);
        assert_eq!(mk(503).to_api_error(&[]).status(), 503);
        assert!(mk(500).retryable());
        assert!(!mk(400).retryable());
        assert!(mk(500).to_api_error(&[]).message.contains("provider 'sim'"));
        assert!(mk(500).to_api_error(&[]).message.contains("nope (code: x)"));
        assert_eq!(mk(504).to_api_error(&[]).status(), 504);
    }

    #[test]
    fn describes_gemini_bodies() {
        let plain =
            br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}"#;
        assert_eq!(
            describe_body(plain, &[]),
            "Quota exceeded (status: RESOURCE_EXHAUSTED)"
        );
        let wrapped = br#"[{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}]"#;
        assert_eq!(
            describe_body(wrapped, &[]),
            "bad (status: INVALID_ARGUMENT)"
        );
    }

    #[test]
    fn unsupported_is_a_client_error_and_final() {
        let e = UpstreamError::new("g", UpstreamErrorKind::Unsupported("token arrays".into()));
        assert!(!e.retryable());
        let api = e.to_api_error(&[]);
        assert_eq!(api.status(), 400);
        assert_eq!(api.code.as_str(), "invalid_request");
        assert!(
            api.message
                .contains("provider 'g' cannot serve this request: token arrays")
        );
    }

    #[test]
    fn describes_aws_shaped_bodies() {
        assert_eq!(
            describe_body(br#"{"message":"Too many requests"}"#, &[]),
            "Too many requests"
        );
        assert_eq!(describe_body(br#"{"Message":"Denied"}"#, &[]), "Denied");
    }

    #[test]
    fn unsupported_requests_are_client_errors() {
        let e = UpstreamError::new("b", UpstreamErrorKind::Unsupported("n > 1".into()));
        assert!(!e.retryable());
        let api = e.to_api_error(&[]);
        assert_eq!(api.status(), 400);
        assert_eq!(api.code.as_str(), "invalid_request");
        assert!(
            api.message
                .contains("provider 'b' cannot serve this request: n > 1")
        );
    }
}
