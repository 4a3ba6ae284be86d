//! The pooled upstream HTTP client and the four timeouts.
//!
//! One `reqwest::Client` per provider: a keep-alive pool per host, HTTP/1.1 and HTTP/2 (ALPN over
//! rustls with the `ring` provider, so no system OpenSSL and no C toolchain beyond `ring`'s).
//! Timeouts are enforced here rather than through reqwest's single `timeout`, because streams
//! need them split: *connect*, *first byte* (until response headers), *idle* (longest gap between
//! body chunks) and *total* (the whole exchange, streaming included).

use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::time::{Instant, Sleep};

use crate::error::{TimeoutPhase, UpstreamError, UpstreamErrorKind};
use crate::{BuildError, Timeouts};

static CRYPTO: Once = Once::new();

/// Installs rustls' `ring` crypto provider for the process (idempotent).
pub fn install_crypto_provider() {
    CRYPTO.call_once(|| {
        // Err means another provider was installed first, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client for one provider.
pub fn client(timeouts: &Timeouts) -> Result<reqwest::Client, BuildError> {
    install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        // Never follow redirects: a provider redirect would re-send our credentials elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| BuildError::Client(e.to_string()))
}

tokio::task_local! {
    /// The W3C `traceparent` of the upstream call being made, when the gateway propagates
    /// trace context to providers (`telemetry.propagate_to_upstream`): the server runs the
    /// call inside [`with_traceparent`], and [`send`] adds the header — one place for every
    /// adapter, and no field on every call type for a header no adapter interprets.
    static TRACEPARENT: String;
}

/// Runs `call` with `traceparent` sent on its upstream requests.
pub async fn with_traceparent<F: std::future::Future>(traceparent: String, call: F) -> F::Output {
    TRACEPARENT.scope(traceparent, call).await
}

/// Sends `req`, waiting at most the first-byte timeout (and what remains of the total) for
/// response headers.
pub async fn send(
    provider: &str,
    req: reqwest::RequestBuilder,
    timeouts: &Timeouts,
    deadline: Instant,
) -> Result<reqwest::Response, UpstreamError> {
    let req = match TRACEPARENT.try_with(Clone::clone) {
        Ok(tp) => req.header("traceparent", tp),
        Err(_) => req,
    };
    let first_byte = Instant::now() + timeouts.first_byte;
    let (limit, phase) = if first_byte <= deadline {
        (first_byte, TimeoutPhase::FirstByte)
    } else {
        (deadline, TimeoutPhase::Total)
    };
    match tokio::time::timeout_at(limit, req.send()).await {
        Err(_) => Err(UpstreamError::new(
            provider,
            UpstreamErrorKind::Timeout(phase),
        )),
        Ok(Err(e)) => Err(classify(provider, &e)),
        Ok(Ok(resp)) => Ok(resp),
    }
}

/// Maps a reqwest error to an upstream error kind without leaking URLs with credentials
/// (reqwest errors may include the URL; we never put secrets in URLs except Gemini keys, which
/// the Gemini adapter sends as a header instead).
pub fn classify(provider: &str, e: &reqwest::Error) -> UpstreamError {
    let kind = if e.is_connect() {
        if is_timeout(e) {
            UpstreamErrorKind::Timeout(TimeoutPhase::Connect)
        } else {
            UpstreamErrorKind::Connect(root_cause(e))
        }
    } else if e.is_timeout() {
        UpstreamErrorKind::Timeout(TimeoutPhase::Total)
    } else {
        UpstreamErrorKind::Broken(root_cause(e))
    };
    UpstreamError::new(provider, kind)
}

fn is_timeout(e: &reqwest::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if s.to_string().to_ascii_lowercase().contains("timed out") {
            return true;
        }
        src = s.source();
    }
    e.is_timeout()
}

fn root_cause(e: &reqwest::Error) -> String {
    let mut last: &dyn std::error::Error = e;
    while let Some(s) = last.source() {
        last = s;
    }
    last.to_string()
}

/// Largest error body read from an upstream (the rest is irrelevant to the client).
pub const MAX_ERROR_BYTES: usize = 64 * 1024;

/// [`send`], then turns a non-success status into [`UpstreamErrorKind::Status`] carrying the
/// provider's error body (bounded) and its `Retry-After`. Every adapter answers errors this way.
pub async fn send_checked(
    provider: &str,
    req: reqwest::RequestBuilder,
    timeouts: &Timeouts,
    deadline: Instant,
) -> Result<reqwest::Response, UpstreamError> {
    let resp = send(provider, req, timeouts, deadline).await?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = retry_after(resp.headers());
    let body = read_body(provider, resp, timeouts, deadline, MAX_ERROR_BYTES)
        .await
        .unwrap_or_default();
    Err(UpstreamError::new(
        provider,
        UpstreamErrorKind::Status {
            status: status.as_u16(),
            body,
            retry_after,
        },
    ))
}

/// Reads a whole (non-streaming) body within the idle and total timeouts.
pub async fn read_body(
    provider: &str,
    resp: reqwest::Response,
    timeouts: &Timeouts,
    deadline: Instant,
    max_bytes: usize,
) -> Result<Bytes, UpstreamError> {
    let mut body = body_stream(provider, resp, timeouts, deadline);
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if buf.len() + chunk.len() > max_bytes {
            return Err(UpstreamError::new(
                provider,
                UpstreamErrorKind::Protocol(format!("response body larger than {max_bytes} bytes")),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// The response body as a stream of byte chunks, with idle and total timeouts applied.
pub fn body_stream(
    provider: &str,
    resp: reqwest::Response,
    timeouts: &Timeouts,
    deadline: Instant,
) -> TimedBody {
    TimedBody {
        provider: provider.to_string(),
        inner: Box::pin(resp.bytes_stream()),
        idle: timeouts.idle,
        idle_timer: Box::pin(tokio::time::sleep(timeouts.idle)),
        total_timer: Box::pin(tokio::time::sleep_until(deadline)),
        done: false,
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A body stream that fails with a timeout error when the upstream goes silent for longer than
/// the idle timeout or the exchange outlives the total timeout.
pub struct TimedBody {
    provider: String,
    inner: ByteStream,
    idle: std::time::Duration,
    idle_timer: Pin<Box<Sleep>>,
    total_timer: Pin<Box<Sleep>>,
    done: bool,
}

impl Stream for TimedBody {
    type Item = Result<Bytes, UpstreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => {
                let next = Instant::now() + self.idle;
                self.idle_timer.as_mut().reset(next);
                return Poll::Ready(Some(Ok(b)));
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                return Poll::Ready(Some(Err(classify(&self.provider, &e))));
            }
            Poll::Ready(None) => {
                self.done = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        let phase = if self.total_timer.as_mut().poll(cx).is_ready() {
            Some(TimeoutPhase::Total)
        } else if self.idle_timer.as_mut().poll(cx).is_ready() {
            Some(TimeoutPhase::Idle)
        } else {
            None
        };
        match phase {
            Some(phase) => {
                self.done = true;
                Poll::Ready(Some(Err(UpstreamError::new(
                    &self.provider,
                    UpstreamErrorKind::Timeout(phase),
                ))))
            }
            None => Poll::Pending,
        }
    }
}

/// Parses a `Retry-After` / `retry-after-ms` header pair into a duration. `Retry-After` may be
/// seconds or an HTTP date (RFC 9110 §10.2.3); a date in the past means "now".
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<std::time::Duration> {
    retry_after_at(headers, jiff::Timestamp::now())
}

fn retry_after_at(
    headers: &reqwest::header::HeaderMap,
    now: jiff::Timestamp,
) -> Option<std::time::Duration> {
    use crate::failure::{retry_wait, retry_wait_secs};
    if let Some(wait) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(|ms| retry_wait_secs(ms / 1_000.0))
    {
        return Some(wait);
    }
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<f64>() {
        return retry_wait_secs(secs);
    }
    let at = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    let wait = at.duration_since(now);
    Some(retry_wait(
        std::time::Duration::try_from(wait).unwrap_or(std::time::Duration::ZERO),
    ))
}

/// The provider's request id header, if any.
pub fn upstream_request_id(headers: &reqwest::header::HeaderMap) -> Option<String> {
    ["x-request-id", "request-id", "apim-request-id"]
        .iter()
        .find_map(|h| headers.get(*h))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod retry_after_tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    fn with(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn seconds_dates_and_milliseconds() {
        let now: jiff::Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        let secs = |h: &HeaderMap| retry_after_at(h, now).map(|d| d.as_secs_f64());
        assert_eq!(secs(&with("7")), Some(7.0));
        assert_eq!(secs(&with("Sat, 21 Nov 2026 12:00:30 GMT")), Some(30.0));
        assert_eq!(secs(&with("Sat, 21 Nov 2026 11:00:00 GMT")), Some(0.0));
        assert_eq!(secs(&with("soon")), None);
        assert_eq!(secs(&with("-3")), None);
        let mut h = with("7");
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(secs(&h), Some(1.5));
    }

    /// `Retry-After: 1e20` once panicked in `Duration::from_secs_f64`; absurd hints are a day.
    #[test]
    fn absurd_hints_are_capped_not_a_panic() {
        let now: jiff::Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        let day = Some(86_400.0);
        let secs = |h: &HeaderMap| retry_after_at(h, now).map(|d| d.as_secs_f64());
        for v in [
            "1e20",
            "inf",
            "1.7976931348623157e308",
            "Fri, 01 Jan 2100 00:00:00 GMT",
        ] {
            assert_eq!(secs(&with(v)), day, "{v}");
        }
        assert_eq!(secs(&with("NaN")), None);
        let mut h = HeaderMap::new();
        h.insert("retry-after-ms", HeaderValue::from_static("1e300"));
        assert_eq!(secs(&h), day);
    }
}
