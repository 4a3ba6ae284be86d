//! Error classification (`tollgate_providers::failure`, through `UpstreamError::class`,
//! `retry_after` and `to_api_error`), the `Retry-After` / `retry-after-ms` header parser
//! (`http::retry_after`) and the Bedrock error-response reader (`bedrock::status_error`), on
//! an error response written as text:
//!
//! ```text
//! 429                                  status line (anything else: an in-stream error)
//! retry-after: 7                       headers, one per line
//! x-amzn-errortype: ThrottlingException
//!
//! {"error":{"message":"…","type":"rate_limit_error"}}   body (after the first blank line)
//! ```
//!
//! The same bytes are also read as an error event inside a stream (`InStream`).
//!
//! Invariants: no panic; every retry hint is at most a day; a 5xx is never classified as the
//! client's fault; 408, 409, 429 and 5xx are retryable; the client-facing error has an error
//! status, a bounded `Retry-After`, never the provider key, and does not depend on the key's
//! value at all: replacing the key everywhere in the input by another of the same length gives
//! the same client-facing error (so not even part of a key gets through).

#![no_main]

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tollgate_fuzz::{MAX_RETRY_WAIT, SECRET, check_upstream_error};
use tollgate_providers::{FailureClass, UpstreamError, UpstreamErrorKind, bedrock};

/// Another key of the same length and prefix, sharing no other character with [`SECRET`].
const OTHER: &str = "sk-fuzz-hn5vc3jr6ye1ua0d";

/// The errors the gateway builds from this response; `retry_after` overrides the parsed header
/// (an HTTP-date hint depends on the clock, and the two readings must agree).
fn errors(
    data: &[u8],
    retry_after: Option<Option<Duration>>,
) -> (Vec<UpstreamError>, Option<Duration>) {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &b""[..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let status = lines
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|l| l.trim().parse::<u16>().ok());
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(line[..colon].trim_ascii()),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let retry_after =
        retry_after.unwrap_or_else(|| tollgate_providers::http::retry_after(&headers));
    assert!(
        retry_after.is_none_or(|w| w <= MAX_RETRY_WAIT),
        "{retry_after:?}"
    );
    let body = Bytes::copy_from_slice(body);

    let mut out = Vec::new();
    if let Some(status) = status {
        out.push(UpstreamErrorKind::Status {
            status,
            body: body.clone(),
            retry_after,
        });
        let error_type = headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok());
        out.push(bedrock::status_error(
            status,
            error_type,
            &body,
            retry_after,
        ));
    }
    out.push(UpstreamErrorKind::InStream {
        message: String::from_utf8_lossy(&body).into_owned(),
        body,
    });
    let errors = out
        .into_iter()
        .map(|kind| UpstreamError::new("fuzz", kind))
        .collect();
    (errors, retry_after)
}

fn replace(data: &[u8], from: &str, to: &str) -> Vec<u8> {
    let (from, to) = (from.as_bytes(), to.as_bytes());
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let (a, retry_after) = errors(data, None);
    for e in &a {
        let class = check_upstream_error(e);
        if let UpstreamErrorKind::Status { status, .. } = e.kind
            && status >= 500
        {
            assert!(
                !matches!(
                    class,
                    FailureClass::Client
                        | FailureClass::ContextWindow
                        | FailureClass::ContentPolicy
                ),
                "a {status} classified as {class:?}"
            );
        }
    }

    let (b, _) = errors(&replace(data, SECRET, OTHER), Some(retry_after));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.class(), y.class());
        assert_eq!(
            x.to_api_error(&[SECRET, OTHER]),
            y.to_api_error(&[SECRET, OTHER]),
            "the client-facing error depends on the provider key"
        );
    }
});
