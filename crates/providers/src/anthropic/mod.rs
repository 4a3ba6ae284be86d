//! Anthropic Messages API (`POST {base_url}/v1/messages`), in both directions.
//!
//! Wire format: Anthropic Messages, **`anthropic-version: 2023-06-01`** — the only version
//! Anthropic has published and the one every official SDK sends; newer behaviour arrives
//! through `anthropic-beta` flags, which the native path forwards.
//!
//! This module owns the adapter and its transport: URL, auth (`x-api-key`), version header,
//! timeouts (through [`crate::http`]), error statuses, and SSE event reading (through
//! [`crate::sse`]). The translations live in the submodules:
//! - [`request`]: canonical (OpenAI Chat) request → Messages request;
//! - [`response`]: Messages response → canonical response, Anthropic usage → canonical usage;
//! - [`stream`]: Messages stream events → canonical chunks.
//!
//! Two ways in:
//! - [`Provider::chat`]: an OpenAI Chat request, translated; the answer comes back as OpenAI
//!   JSON or chunks, streams always ending with one usage-only chunk.
//! - [`Provider::messages`]: the native `/v1/messages` path. The client's body is forwarded
//!   unchanged with its `anthropic-version` / `anthropic-beta` headers, and the answer (body or
//!   raw events) comes back unchanged; only usage is read, converted to canonical semantics.
//!
//! `base_url` follows the SDK convention: the host root (`https://api.anthropic.com`), without
//! `/v1`. Anthropic has no embeddings API; [`Capabilities::embeddings`] is false.
//!
//! Errors: Anthropic answers failures with `{"type":"error","error":{"type","message"}}`; the
//! status decides the mapping in [`crate::error`] (529 `overloaded_error` is retryable and
//! reaches clients as 503 `upstream_unavailable`). An `error` *event* inside a stream that
//! already started becomes [`UpstreamErrorKind::InStream`]; a stream whose body ends before
//! `message_stop` was cut and becomes [`UpstreamErrorKind::Broken`].

pub mod request;
pub mod response;
pub mod stream;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, Stream};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};
use tokio::time::Instant;
use tollgate_types::ProviderKind;

use crate::error::{UpstreamError, UpstreamErrorKind};
use crate::http;
use crate::sse;
use crate::{
    BuildError, Capabilities, ChatCall, ChatResponse, Completion, EmbeddingsCall, MessagesCall,
    MessagesResponse, Provider, ProviderSettings,
};

pub use stream::UsageTracker;

/// The `anthropic-version` sent on translated calls, and on native calls whose client sent none.
pub const API_VERSION: &str = "2023-06-01";
/// Default `base_url` (no version suffix, as in the official SDKs).
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

/// Largest non-streaming response body accepted from the upstream.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

pub struct Anthropic {
    settings: ProviderSettings,
    client: reqwest::Client,
    url: String,
    /// Auth, version, content type and the configured static headers.
    headers: HeaderMap,
}

impl Anthropic {
    pub fn new(settings: ProviderSettings) -> Result<Self, BuildError> {
        let base = match settings.base_url.trim() {
            "" => DEFAULT_BASE_URL,
            b => b,
        }
        .trim_end_matches('/')
        .to_string();
        let parsed = reqwest::Url::parse(&base).map_err(|e| BuildError::BaseUrl {
            url: base.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(BuildError::BaseUrl {
                url: base,
                reason: "scheme must be http or https".into(),
            });
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(API_VERSION),
        );
        // Static headers may override the version (an operator pinning a proxy's needs) and
        // add `anthropic-beta` flags.
        for (k, v) in &settings.headers {
            let name =
                HeaderName::from_bytes(k.as_bytes()).map_err(|_| BuildError::Header(k.clone()))?;
            let value = HeaderValue::from_str(v).map_err(|_| BuildError::Header(k.clone()))?;
            headers.insert(name, value);
        }
        if let Some(key) = &settings.api_key {
            let mut value =
                HeaderValue::from_str(key).map_err(|_| BuildError::Header("api_key".into()))?;
            value.set_sensitive(true);
            headers.insert(HeaderName::from_static("x-api-key"), value);
        }
        let client = http::client(&settings.timeouts)?;
        Ok(Anthropic {
            url: format!("{base}/v1/messages"),
            settings,
            client,
            headers,
        })
    }

    fn name(&self) -> &str {
        &self.settings.name
    }

    fn err(&self, kind: UpstreamErrorKind) -> UpstreamError {
        UpstreamError::new(&self.settings.name, kind)
    }

    /// POSTs `body` and returns the response once headers arrived with a success status.
    async fn post(
        &self,
        body: Vec<u8>,
        headers: HeaderMap,
        stream: bool,
        deadline: Instant,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut req = self.client.post(&self.url).headers(headers).body(body);
        if stream {
            req = req.header(reqwest::header::ACCEPT, "text/event-stream");
        }
        http::send_checked(self.name(), req, &self.settings.timeouts, deadline).await
    }

    async fn read(
        &self,
        resp: reqwest::Response,
        deadline: Instant,
    ) -> Result<Bytes, UpstreamError> {
        http::read_body(
            self.name(),
            resp,
            &self.settings.timeouts,
            deadline,
            MAX_RESPONSE_BYTES,
        )
        .await
    }

    fn events(&self, resp: reqwest::Response, deadline: Instant) -> EventReader {
        EventReader {
            provider: Arc::from(self.settings.name.as_str()),
            pump: sse::EventPump::new(
                Arc::from(self.settings.name.as_str()),
                http::body_stream(self.name(), resp, &self.settings.timeouts, deadline),
            ),
            ready: VecDeque::new(),
            finished: false,
        }
    }

    async fn chat_inner(&self, call: ChatCall) -> Result<ChatResponse, UpstreamError> {
        let deadline = Instant::now() + self.settings.timeouts.total;
        let body =
            request::to_messages_request(&call.body, call.stream, &self.settings.output_limits);
        let body = serde_json::to_vec(&body)
            .map_err(|e| self.err(UpstreamErrorKind::Protocol(format!("encode request: {e}"))))?;
        let resp = self
            .post(body, self.headers.clone(), call.stream, deadline)
            .await?;
        let upstream_request_id = http::upstream_request_id(resp.headers());
        let created = unix_now();
        if !call.stream {
            let raw = self.read(resp, deadline).await?;
            let (body, usage) = response::to_chat_completion(&raw, created)
                .map_err(|e| self.err(UpstreamErrorKind::Protocol(e.to_string())))?;
            return Ok(ChatResponse::Complete(Completion {
                body: Bytes::from(body),
                usage,
                upstream_request_id,
            }));
        }
        let chunks = ChatChunks {
            events: self.events(resp, deadline),
            translator: stream::Translator::new(created),
            ready: VecDeque::new(),
            finished: false,
        };
        Ok(ChatResponse::Stream {
            chunks: Box::pin(chunks),
            upstream_request_id,
        })
    }

    /// Headers for a native call: ours, with the client's `anthropic-version` replacing the
    /// default and the client's `anthropic-beta` flags appended to any configured ones (the
    /// header is a comma-separated list). Other client headers are not forwarded: the call
    /// authenticates with the provider's key, not the client's.
    fn native_headers(&self, client: &[(String, String)]) -> HeaderMap {
        let mut headers = self.headers.clone();
        for (k, v) in client {
            let Ok(value) = HeaderValue::from_str(v.trim()) else {
                continue;
            };
            if value.is_empty() {
                continue;
            }
            if k.eq_ignore_ascii_case("anthropic-version") {
                headers.insert(HeaderName::from_static("anthropic-version"), value);
            } else if k.eq_ignore_ascii_case("anthropic-beta") {
                let name = HeaderName::from_static("anthropic-beta");
                let joined = match headers.get(&name).and_then(|h| h.to_str().ok()) {
                    Some(existing) if !existing.is_empty() => {
                        HeaderValue::from_str(&format!("{existing},{}", v.trim())).unwrap_or(value)
                    }
                    _ => value,
                };
                headers.insert(name, joined);
            }
        }
        headers
    }

    async fn messages_inner(&self, call: MessagesCall) -> Result<MessagesResponse, UpstreamError> {
        let deadline = Instant::now() + self.settings.timeouts.total;
        let body = native_body(&call.body, call.stream)
            .map_err(|e| self.err(UpstreamErrorKind::Protocol(format!("encode request: {e}"))))?;
        let headers = self.native_headers(&call.headers);
        let resp = self.post(body, headers, call.stream, deadline).await?;
        let upstream_request_id = http::upstream_request_id(resp.headers());
        if !call.stream {
            let body = self.read(resp, deadline).await?;
            let usage = response::usage_of_message(&body)
                .map_err(|e| self.err(UpstreamErrorKind::Protocol(e.to_string())))?;
            return Ok(MessagesResponse::Complete(Completion {
                body,
                usage,
                upstream_request_id,
            }));
        }
        Ok(MessagesResponse::Stream {
            events: Box::pin(self.events(resp, deadline)),
            upstream_request_id,
        })
    }
}

/// The client's body as sent, except that `stream` is made to agree with `call.stream` (the
/// gateway decides how it reads the answer; a disagreement would make it read SSE as JSON or
/// the reverse). Serialised without a copy when they already agree.
fn native_body(body: &Map<String, Value>, stream: bool) -> serde_json::Result<Vec<u8>> {
    let sent = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if sent == stream {
        return serde_json::to_vec(body);
    }
    let mut b = body.clone();
    if stream {
        b.insert("stream".into(), Value::Bool(true));
    } else {
        b.remove("stream");
    }
    serde_json::to_vec(&b)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Provider for Anthropic {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Anthropic
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            chat: true,
            streaming: true,
            tools: true,
            images: true,
            json_schema: true,
            embeddings: false,
        }
    }

    fn chat(&self, call: ChatCall) -> BoxFuture<'_, Result<ChatResponse, UpstreamError>> {
        self.chat_inner(call).boxed()
    }

    /// Anthropic has no embeddings API. The gateway checks [`Capabilities::embeddings`] first;
    /// should it call anyway, the answer is what Anthropic itself would give for the endpoint —
    /// a 404 `not_found_error` — without a pointless network round trip, not retryable.
    fn embeddings(&self, call: EmbeddingsCall) -> BoxFuture<'_, Result<Completion, UpstreamError>> {
        let _ = call;
        let body = Bytes::from_static(
            br#"{"type":"error","error":{"type":"not_found_error","message":"Anthropic has no embeddings API; route embeddings models to another provider"}}"#,
        );
        let e = self.err(UpstreamErrorKind::Status {
            status: 404,
            body,
            retry_after: None,
        });
        async move { Err(e) }.boxed()
    }

    fn messages(
        &self,
        call: MessagesCall,
    ) -> Option<BoxFuture<'_, Result<MessagesResponse, UpstreamError>>> {
        Some(self.messages_inner(call).boxed())
    }
}

/// Decodes an Anthropic SSE body into events, up to and including `message_stop`.
///
/// `error` events end the stream with [`UpstreamErrorKind::InStream`]; a body that ends before
/// `message_stop` ends it with [`UpstreamErrorKind::Broken`] (Anthropic has no `[DONE]`:
/// `message_stop` is the only proof the answer is complete). Everything else, `ping` included,
/// is passed on as received.
struct EventReader {
    provider: Arc<str>,
    pump: sse::EventPump,
    ready: VecDeque<sse::Event>,
    finished: bool,
}

impl EventReader {
    fn fail(&mut self, kind: UpstreamErrorKind) -> Poll<Option<Result<sse::Event, UpstreamError>>> {
        self.finished = true;
        Poll::Ready(Some(Err(UpstreamError::new(&self.provider, kind))))
    }
}

impl Stream for EventReader {
    type Item = Result<sse::Event, UpstreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.finished {
                return Poll::Ready(None);
            }
            if let Some(ev) = self.ready.pop_front() {
                match stream::event_type(&ev).as_ref() {
                    "message_stop" => {
                        self.finished = true;
                        return Poll::Ready(Some(Ok(ev)));
                    }
                    "error" => {
                        let message = stream::error_event_message(&ev.data);
                        return self.fail(UpstreamErrorKind::InStream {
                            message,
                            body: ev.data,
                        });
                    }
                    _ => return Poll::Ready(Some(Ok(ev))),
                }
            }
            if self.pump.ended() {
                return self.fail(UpstreamErrorKind::Broken(
                    "stream ended before message_stop".into(),
                ));
            }
            let this = &mut *self;
            match this.pump.poll_fill(cx, &mut this.ready) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    self.finished = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

/// Canonical chunks of a translated stream: events from [`EventReader`] through
/// [`stream::Translator`]. Chunks are handed out as soon as their event arrives.
struct ChatChunks {
    events: EventReader,
    translator: stream::Translator,
    ready: VecDeque<Bytes>,
    finished: bool,
}

impl Stream for ChatChunks {
    type Item = Result<Bytes, UpstreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(chunk) = self.ready.pop_front() {
                return Poll::Ready(Some(Ok(chunk)));
            }
            if self.finished {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.events).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.finished = true;
                }
                Poll::Ready(Some(Err(e))) => {
                    self.finished = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(ev))) => {
                    let mut out = Vec::new();
                    let this = &mut *self;
                    if let Err(e) = this.translator.on_event(&ev, &mut out) {
                        this.finished = true;
                        let e = UpstreamError::new(
                            &this.events.provider,
                            UpstreamErrorKind::Protocol(e.to_string()),
                        );
                        return Poll::Ready(Some(Err(e)));
                    }
                    this.ready.extend(out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_body_agrees_with_call() {
        let b: Map<String, Value> =
            serde_json::from_str(r#"{"model":"m","stream":false,"max_tokens":1}"#).unwrap();
        assert_eq!(
            native_body(&b, true).unwrap(),
            br#"{"model":"m","stream":true,"max_tokens":1}"#
        );
        let b: Map<String, Value> = serde_json::from_str(r#"{"model":"m","stream":true}"#).unwrap();
        assert_eq!(native_body(&b, false).unwrap(), br#"{"model":"m"}"#);
        assert_eq!(
            native_body(&b, true).unwrap(),
            br#"{"model":"m","stream":true}"#
        );
    }

    #[test]
    fn native_headers_forward_version_and_join_betas() {
        let mut s = ProviderSettings::new("a", ProviderKind::Anthropic, "http://127.0.0.1:1");
        s.headers = vec![("anthropic-beta".into(), "ops-flag".into())];
        s.api_key = Some("sk-ant-test-0123456789".into());
        let a = Anthropic::new(s).unwrap();
        let h = a.native_headers(&[
            ("Anthropic-Version".into(), "2099-01-01".into()),
            ("anthropic-beta".into(), "client-flag".into()),
            ("x-api-key".into(), "client-key".into()),
        ]);
        assert_eq!(h["anthropic-version"], "2099-01-01");
        assert_eq!(h["anthropic-beta"], "ops-flag,client-flag");
        assert_eq!(h["x-api-key"], "sk-ant-test-0123456789");
        let h = a.native_headers(&[]);
        assert_eq!(h["anthropic-version"], API_VERSION);
    }

    #[test]
    fn default_base_url_and_bad_scheme() {
        let a = Anthropic::new(ProviderSettings::new("a", ProviderKind::Anthropic, "")).unwrap();
        assert_eq!(a.url, "https://api.anthropic.com/v1/messages");
        assert!(
            Anthropic::new(ProviderSettings::new(
                "a",
                ProviderKind::Anthropic,
                "ftp://x"
            ))
            .is_err()
        );
    }
}
