//! OpenAI and every OpenAI-compatible server (vLLM, Ollama, Together, Groq, DeepSeek, Mistral,
//! OpenRouter) reached through `base_url`.
//!
//! The canonical format *is* this wire format, so requests and responses pass through
//! byte-for-byte except for two things: the body is re-serialised with the upstream model name
//! (done by the gateway), and streaming requests always carry
//! `stream_options.include_usage: true` so every stream ends with provider-reported usage — the
//! gateway strips that usage chunk again when the client did not ask for it.
//!
//! Azure OpenAI speaks the same wire format with different URLs and auth; [`crate::azure`]
//! configures this adapter with [`Flavor::Azure`].

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, Stream};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};
use tokio::time::Instant;
use tollgate_types::ProviderKind;
use tollgate_types::canonical::{ResponsePeek, WireUsage};

use crate::error::{UpstreamError, UpstreamErrorKind};
use crate::http;
use crate::sse;
use crate::{
    BuildError, Capabilities, ChatCall, ChatResponse, Completion, EmbeddingsCall, Provider,
    ProviderSettings,
};

/// Largest non-streaming response body accepted from an upstream.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// How URLs and auth are built.
#[derive(Debug, Clone)]
pub enum Flavor {
    /// `{base_url}/chat/completions`, `Authorization: Bearer`.
    OpenAi,
    /// `{base_url}/openai/deployments/{model}/chat/completions?api-version=…`, `api-key:`.
    Azure { api_version: String },
}

pub struct OpenAi {
    settings: ProviderSettings,
    client: reqwest::Client,
    flavor: Flavor,
    base: String,
    headers: HeaderMap,
    /// The OpenAI flavor's two request URLs, parsed once (parsing per request showed up in
    /// profiles); Azure URLs depend on the deployment and are built per request.
    chat_url: Option<reqwest::Url>,
    embeddings_url: Option<reqwest::Url>,
}

impl OpenAi {
    pub fn new(settings: ProviderSettings) -> Result<Self, BuildError> {
        Self::with_flavor(settings, Flavor::OpenAi)
    }

    pub fn with_flavor(settings: ProviderSettings, flavor: Flavor) -> Result<Self, BuildError> {
        let base = settings.base_url.trim_end_matches('/').to_string();
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
        for (k, v) in &settings.headers {
            let name =
                HeaderName::from_bytes(k.as_bytes()).map_err(|_| BuildError::Header(k.clone()))?;
            let value = HeaderValue::from_str(v).map_err(|_| BuildError::Header(k.clone()))?;
            headers.insert(name, value);
        }
        if let Some(key) = &settings.api_key {
            let (name, value) = match &flavor {
                Flavor::OpenAi => (reqwest::header::AUTHORIZATION, format!("Bearer {key}")),
                Flavor::Azure { .. } => (HeaderName::from_static("api-key"), key.clone()),
            };
            let mut value =
                HeaderValue::from_str(&value).map_err(|_| BuildError::Header("api_key".into()))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let client = http::client(&settings.timeouts)?;
        let fixed = |path: &str| match flavor {
            Flavor::OpenAi => reqwest::Url::parse(&format!("{base}/{path}")).ok(),
            Flavor::Azure { .. } => None,
        };
        let (chat_url, embeddings_url) = (fixed("chat/completions"), fixed("embeddings"));
        Ok(OpenAi {
            settings,
            client,
            flavor,
            base,
            headers,
            chat_url,
            embeddings_url,
        })
    }

    fn url(&self, path: &str, model: &str) -> Result<reqwest::Url, UpstreamError> {
        let pre = match path {
            "chat/completions" => self.chat_url.as_ref(),
            "embeddings" => self.embeddings_url.as_ref(),
            _ => None,
        };
        if let Some(u) = pre {
            return Ok(u.clone());
        }
        let s = match &self.flavor {
            Flavor::OpenAi => format!("{}/{path}", self.base),
            Flavor::Azure { api_version } => format!(
                "{}/openai/deployments/{}/{path}?api-version={}",
                self.base,
                encode_segment(model),
                encode_segment(api_version)
            ),
        };
        // The base URL was validated at build time and segments are encoded, so this parses;
        // should it not, the request fails as unsendable rather than panicking.
        reqwest::Url::parse(&s).map_err(|e| {
            self.err(UpstreamErrorKind::Unsupported(format!(
                "cannot build the upstream URL: {e}"
            )))
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
        path: &str,
        body: Vec<u8>,
        model: &str,
        stream: bool,
        deadline: Instant,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut req = self
            .client
            .post(self.url(path, model)?)
            .headers(self.headers.clone())
            .body(body);
        if stream {
            req = req.header(reqwest::header::ACCEPT, "text/event-stream");
        }
        http::send_checked(self.name(), req, &self.settings.timeouts, deadline).await
    }

    async fn complete(
        &self,
        path: &str,
        body: Vec<u8>,
        model: &str,
        deadline: Instant,
    ) -> Result<Completion, UpstreamError> {
        let resp = self.post(path, body, model, false, deadline).await?;
        let upstream_request_id = http::upstream_request_id(resp.headers());
        let body = http::read_body(
            self.name(),
            resp,
            &self.settings.timeouts,
            deadline,
            MAX_RESPONSE_BYTES,
        )
        .await?;
        let peek: ResponsePeek = serde_json::from_slice(&body).map_err(|e| {
            self.err(UpstreamErrorKind::Protocol(format!(
                "response is not OpenAI-shaped JSON: {e}"
            )))
        })?;
        Ok(Completion {
            usage: peek.usage.as_ref().map(WireUsage::to_usage),
            body,
            upstream_request_id,
        })
    }
}

fn model_of(body: &Map<String, Value>) -> &str {
    body.get("model").and_then(Value::as_str).unwrap_or("")
}

/// Percent-encodes a URL path segment or query value (RFC 3986 unreserved characters kept).
pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Serialises a body with some top-level keys replaced, without cloning the body.
struct WithOverrides<'a> {
    base: &'a Map<String, Value>,
    overrides: &'a [(&'a str, Value)],
}

impl Serialize for WithOverrides<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.base {
            match self.overrides.iter().find(|(ok, _)| ok == k) {
                Some((_, ov)) => m.serialize_entry(k, ov)?,
                None => m.serialize_entry(k, v)?,
            }
        }
        for (k, v) in self.overrides {
            if !self.base.contains_key(*k) {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

/// The `stream_options` sent upstream: the client's, with `include_usage` forced on.
fn stream_options_with_usage(body: &Map<String, Value>) -> Value {
    let mut opts = body
        .get("stream_options")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    opts.insert("include_usage".into(), Value::Bool(true));
    Value::Object(opts)
}

impl Provider for OpenAi {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn kind(&self) -> ProviderKind {
        match self.flavor {
            Flavor::OpenAi => ProviderKind::Openai,
            Flavor::Azure { .. } => ProviderKind::Azure,
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            chat: true,
            streaming: true,
            tools: true,
            images: true,
            json_schema: true,
            embeddings: true,
        }
    }

    fn chat(&self, call: ChatCall) -> BoxFuture<'_, Result<ChatResponse, UpstreamError>> {
        async move {
            let deadline = Instant::now() + self.settings.timeouts.total;
            let model = model_of(&call.body).to_string();
            if !call.stream {
                let body = serde_json::to_vec(&*call.body).map_err(|e| {
                    self.err(UpstreamErrorKind::Protocol(format!("encode request: {e}")))
                })?;
                return self
                    .complete("chat/completions", body, &model, deadline)
                    .await
                    .map(ChatResponse::Complete);
            }
            let overrides = [
                ("stream", Value::Bool(true)),
                ("stream_options", stream_options_with_usage(&call.body)),
            ];
            let body = serde_json::to_vec(&WithOverrides {
                base: &call.body,
                overrides: &overrides,
            })
            .map_err(|e| self.err(UpstreamErrorKind::Protocol(format!("encode request: {e}"))))?;
            let resp = self
                .post("chat/completions", body, &model, true, deadline)
                .await?;
            let upstream_request_id = http::upstream_request_id(resp.headers());
            let chunks = SseChunks {
                provider: Arc::from(self.settings.name.as_str()),
                pump: sse::EventPump::new(
                    Arc::from(self.settings.name.as_str()),
                    http::body_stream(self.name(), resp, &self.settings.timeouts, deadline),
                ),
                ready: VecDeque::new(),
                finished: false,
            };
            Ok(ChatResponse::Stream {
                chunks: Box::pin(chunks),
                upstream_request_id,
            })
        }
        .boxed()
    }

    fn embeddings(&self, call: EmbeddingsCall) -> BoxFuture<'_, Result<Completion, UpstreamError>> {
        async move {
            let deadline = Instant::now() + self.settings.timeouts.total;
            let model = model_of(&call.body).to_string();
            let body = serde_json::to_vec(&*call.body).map_err(|e| {
                self.err(UpstreamErrorKind::Protocol(format!("encode request: {e}")))
            })?;
            self.complete("embeddings", body, &model, deadline).await
        }
        .boxed()
    }
}

/// Decodes an OpenAI SSE body into chunk payloads. Ends at `data: [DONE]`; a body that ends
/// without it is reported as an error (the stream was cut).
struct SseChunks {
    provider: Arc<str>,
    pump: sse::EventPump,
    ready: VecDeque<sse::Event>,
    finished: bool,
}

impl SseChunks {
    fn fail(&mut self, kind: UpstreamErrorKind) -> Poll<Option<Result<Bytes, UpstreamError>>> {
        self.finished = true;
        Poll::Ready(Some(Err(UpstreamError::new(&self.provider, kind))))
    }
}

impl Stream for SseChunks {
    type Item = Result<Bytes, UpstreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.finished {
                return Poll::Ready(None);
            }
            if let Some(ev) = self.ready.pop_front() {
                match stream_event(ev.data) {
                    StreamEvent::Done => {
                        self.finished = true;
                        return Poll::Ready(None);
                    }
                    StreamEvent::Skip => continue,
                    StreamEvent::Error(kind) => return self.fail(kind),
                    StreamEvent::Chunk(data) => return Poll::Ready(Some(Ok(data))),
                }
            }
            if self.pump.ended() {
                // Everything that arrived was delivered and no [DONE] came: the stream was cut.
                return self.fail(UpstreamErrorKind::Broken(
                    "stream ended before [DONE]".into(),
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

/// What one event's `data` means in an OpenAI (or Azure) stream.
#[doc(hidden)]
#[derive(Debug)]
pub enum StreamEvent {
    /// `[DONE]`: the stream is complete.
    Done,
    /// An empty `data:`; nothing to relay.
    Skip,
    /// A chunk, relayed as is.
    Chunk(Bytes),
    /// An in-stream `{"error": …}` event ([`UpstreamErrorKind::InStream`]).
    Error(UpstreamErrorKind),
}

/// The per-event decision of the stream transport. Public (hidden) only so the fuzz targets in
/// `fuzz/` can run it without a connection; the transport is its only other caller.
#[doc(hidden)]
pub fn stream_event(data: Bytes) -> StreamEvent {
    if data.as_ref() == b"[DONE]" {
        return StreamEvent::Done;
    }
    if data.is_empty() {
        return StreamEvent::Skip;
    }
    if is_error_event(&data) {
        let message = error_message(&data);
        return StreamEvent::Error(UpstreamErrorKind::InStream {
            message,
            body: data,
        });
    }
    StreamEvent::Chunk(data)
}

/// True for an in-stream error object (`{"error": …}` at top level). Checked on the raw bytes
/// first so ordinary chunks are not parsed twice.
fn is_error_event(data: &[u8]) -> bool {
    let head = &data[..data.len().min(64)];
    head.windows(7).any(|w| w == b"\"error\"")
        && serde_json::from_slice::<Value>(data)
            .ok()
            .is_some_and(|v| v.get("error").is_some_and(|e| !e.is_null()))
}

fn error_message(data: &[u8]) -> String {
    serde_json::from_slice::<Value>(data)
        .ok()
        .and_then(|v| {
            v.get("error")
                .and_then(|e| e.get("message").and_then(Value::as_str).map(str::to_string))
        })
        .unwrap_or_else(|| "error event".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_and_append_in_order() {
        let base: Map<String, Value> =
            serde_json::from_str(r#"{"model":"m","stream":false,"messages":[]}"#).unwrap();
        let ov = [
            ("stream", Value::Bool(true)),
            ("stream_options", serde_json::json!({"include_usage": true})),
        ];
        let s = serde_json::to_string(&WithOverrides {
            base: &base,
            overrides: &ov,
        })
        .unwrap();
        assert_eq!(
            s,
            r#"{"model":"m","stream":true,"messages":[],"stream_options":{"include_usage":true}}"#
        );
    }

    #[test]
    fn keeps_client_stream_options() {
        let base: Map<String, Value> =
            serde_json::from_str(r#"{"stream_options":{"include_obfuscation":false}}"#).unwrap();
        let v = stream_options_with_usage(&base);
        assert_eq!(v["include_obfuscation"], false);
        assert_eq!(v["include_usage"], true);
    }

    #[test]
    fn detects_error_events() {
        assert!(is_error_event(br#"{"error":{"message":"x"}}"#));
        assert!(!is_error_event(br#"{"id":"1","choices":[]}"#));
        assert!(!is_error_event(br#"{"error":null,"choices":[]}"#));
    }

    #[test]
    fn encodes_azure_segments() {
        assert_eq!(encode_segment("gpt-4o mini/x"), "gpt-4o%20mini%2Fx");
    }
}
