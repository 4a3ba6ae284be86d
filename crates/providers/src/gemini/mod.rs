//! Google Gemini through the Generative Language API (`v1beta`), authenticated with an API key.
//!
//! Wire format: `v1beta` as described by Google's REST reference and the REST converters of
//! `googleapis/python-genai` v2.19.0 (`google/genai/models.py`, `types.py`). This module owns the
//! transport — URLs, the `x-goog-api-key` header, status and error handling — and delegates the
//! translation to its submodules:
//!
//! - [`request`]: canonical (OpenAI Chat) request → `GenerateContentRequest`;
//! - [`response`]: `GenerateContentResponse` → canonical `chat.completion` body and [`Usage`];
//! - [`stream`]: `streamGenerateContent?alt=sse` events → canonical `chat.completion.chunk`s;
//! - [`embeddings`]: OpenAI Embeddings ↔ `batchEmbedContents`.
//!
//! Endpoints (`base_url` has no version suffix, like the Google SDKs):
//! `POST {base_url}/v1beta/models/{model}:generateContent`,
//! `POST {base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse` (without `alt=sse` the
//! endpoint streams one JSON array instead of server-sent events) and
//! `POST {base_url}/v1beta/models/{model}:batchEmbedContents`.
//!
//! The key travels in the `x-goog-api-key` header, never as the `?key=` query parameter Google
//! also accepts: URLs end up in access logs, proxies and error messages (reqwest includes the URL
//! in its errors), headers do not.
//!
//! [`Usage`]: tollgate_types::Usage

pub mod embeddings;
pub mod request;
pub mod response;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};
use tokio::time::Instant;
use tollgate_types::ProviderKind;

use crate::error::{UpstreamError, UpstreamErrorKind};
use crate::http;
use crate::{
    BuildError, Capabilities, ChatCall, ChatResponse, Completion, EmbeddingsCall, Provider,
    ProviderSettings,
};

/// The API version every path is built with.
pub const API_VERSION: &str = "v1beta";

/// Largest non-streaming response body accepted from Gemini.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// The Gemini adapter.
pub struct Gemini {
    settings: ProviderSettings,
    client: reqwest::Client,
    base: String,
    headers: HeaderMap,
}

impl Gemini {
    pub fn new(settings: ProviderSettings) -> Result<Self, BuildError> {
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
            let mut value =
                HeaderValue::from_str(key).map_err(|_| BuildError::Header("api_key".into()))?;
            // Sensitive values are redacted from reqwest's and http's Debug output.
            value.set_sensitive(true);
            headers.insert(HeaderName::from_static("x-goog-api-key"), value);
        }
        let client = http::client(&settings.timeouts)?;
        Ok(Gemini {
            settings,
            client,
            base,
            headers,
        })
    }

    fn err(&self, kind: UpstreamErrorKind) -> UpstreamError {
        UpstreamError::new(&self.settings.name, kind)
    }

    /// `{base}/v1beta/{resource}:{method}` — no credentials, ever.
    fn url(&self, model: &str, method: &str, sse: bool) -> String {
        let mut url = format!(
            "{}/{API_VERSION}/{}:{method}",
            self.base,
            model_resource(model)
        );
        if sse {
            url.push_str("?alt=sse");
        }
        url
    }

    /// POSTs `body` and returns the response once headers arrived with a success status.
    async fn post(
        &self,
        url: String,
        body: Vec<u8>,
        stream: bool,
        deadline: Instant,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut req = self
            .client
            .post(url)
            .headers(self.headers.clone())
            .body(body);
        if stream {
            req = req.header(reqwest::header::ACCEPT, "text/event-stream");
        }
        let resp = http::send(&self.settings.name, req, &self.settings.timeouts, deadline).await?;
        let status = resp.status();
        if !status.is_success() {
            let header_delay = http::retry_after(resp.headers());
            let body = http::read_body(
                &self.settings.name,
                resp,
                &self.settings.timeouts,
                deadline,
                http::MAX_ERROR_BYTES,
            )
            .await
            .unwrap_or_default();
            // Gemini sends no Retry-After header; its 429s carry a google.rpc.RetryInfo detail.
            let retry_after = header_delay.or_else(|| retry_delay(&body));
            // Gemini answers a bad API key with 400 INVALID_ARGUMENT (ErrorInfo reason
            // API_KEY_INVALID). Reported as 401 so it maps to upstream_auth_failed: the
            // gateway's credential is wrong, not the caller's request.
            let status = match status.as_u16() {
                400 if is_invalid_key(&body) => 401,
                other => other,
            };
            return Err(self.err(UpstreamErrorKind::Status {
                status,
                body,
                retry_after,
            }));
        }
        Ok(resp)
    }

    async fn read(
        &self,
        resp: reqwest::Response,
        deadline: Instant,
    ) -> Result<(Bytes, Option<String>), UpstreamError> {
        let request_id = http::upstream_request_id(resp.headers());
        let body = http::read_body(
            &self.settings.name,
            resp,
            &self.settings.timeouts,
            deadline,
            MAX_RESPONSE_BYTES,
        )
        .await?;
        Ok((body, request_id))
    }

    async fn chat_inner(&self, call: ChatCall) -> Result<ChatResponse, UpstreamError> {
        let deadline = Instant::now() + self.settings.timeouts.total;
        let model = model_of(&call.body).to_string();
        let wire = request::chat_request(&call.body, &model)
            .map_err(|why| self.err(UpstreamErrorKind::Unsupported(why)))?;
        let body = serde_json::to_vec(&wire)
            .map_err(|e| self.err(UpstreamErrorKind::Protocol(format!("encode request: {e}"))))?;
        if call.stream {
            let url = self.url(&model, "streamGenerateContent", true);
            let resp = self.post(url, body, true, deadline).await?;
            let upstream_request_id = http::upstream_request_id(resp.headers());
            let chunks = stream::GeminiChunks::new(
                Arc::from(self.settings.name.as_str()),
                http::body_stream(&self.settings.name, resp, &self.settings.timeouts, deadline),
                &model,
            );
            return Ok(ChatResponse::Stream {
                chunks: Box::pin(chunks),
                upstream_request_id,
            });
        }
        let url = self.url(&model, "generateContent", false);
        let resp = self.post(url, body, false, deadline).await?;
        let (raw, header_id) = self.read(resp, deadline).await?;
        let out = response::to_canonical(&raw, &model)
            .map_err(|why| self.err(UpstreamErrorKind::Protocol(why)))?;
        Ok(ChatResponse::Complete(Completion {
            body: out.body,
            usage: out.usage,
            upstream_request_id: header_id.or(out.response_id),
        }))
    }

    async fn embeddings_inner(&self, call: EmbeddingsCall) -> Result<Completion, UpstreamError> {
        let deadline = Instant::now() + self.settings.timeouts.total;
        let model = model_of(&call.body).to_string();
        let prepared = embeddings::prepare(&call.body, &model)
            .map_err(|why| self.err(UpstreamErrorKind::Unsupported(why)))?;
        let body = serde_json::to_vec(&prepared.wire)
            .map_err(|e| self.err(UpstreamErrorKind::Protocol(format!("encode request: {e}"))))?;
        let url = self.url(&model, "batchEmbedContents", false);
        let resp = self.post(url, body, false, deadline).await?;
        let (raw, upstream_request_id) = self.read(resp, deadline).await?;
        let (body, usage) =
            embeddings::to_canonical(&raw, &model, prepared.encoding, prepared.count)
                .map_err(|why| self.err(UpstreamErrorKind::Protocol(why)))?;
        Ok(Completion {
            body,
            usage,
            upstream_request_id,
        })
    }
}

impl Provider for Gemini {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Gemini
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
        self.chat_inner(call).boxed()
    }

    fn embeddings(&self, call: EmbeddingsCall) -> BoxFuture<'_, Result<Completion, UpstreamError>> {
        self.embeddings_inner(call).boxed()
    }
}

fn model_of(body: &Map<String, Value>) -> &str {
    body.get("model").and_then(Value::as_str).unwrap_or("")
}

/// The resource path of a model: `models/{id}` for a plain id (the usual case), the name as given
/// when it already names a resource (`models/gemini-2.5-flash`, `tunedModels/my-model`). Each
/// segment is percent-encoded so a model name can never add path segments or a query.
pub(crate) fn model_resource(model: &str) -> String {
    let name = if model.contains('/') {
        model.to_string()
    } else {
        format!("models/{model}")
    };
    name.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

/// Percent-encodes a URL path segment (RFC 3986 unreserved characters kept).
fn encode_segment(s: &str) -> String {
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

/// The `retryDelay` of a `google.rpc.RetryInfo` detail in a Gemini error body (`"37s"`,
/// `"0.5s"`), if any.
fn retry_delay(body: &[u8]) -> Option<Duration> {
    error_details(body)
        .iter()
        .filter(|d| {
            d.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
        })
        .find_map(|d| d.get("retryDelay").and_then(Value::as_str))
        .and_then(|s| s.trim().strip_suffix('s'))
        .and_then(|s| s.parse::<f64>().ok())
        .and_then(crate::failure::retry_wait_secs)
}

/// The `details` array of a Gemini error body (`google.rpc.ErrorInfo`, `RetryInfo`, …).
fn error_details(body: &[u8]) -> Vec<Value> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let v = match v {
        Value::Array(mut items) if items.len() == 1 => items.swap_remove(0),
        other => other,
    };
    match v.get("error").and_then(|e| e.get("details")) {
        Some(Value::Array(d)) => d.clone(),
        _ => Vec::new(),
    }
}

/// True when a 400 is Google's "API key not valid".
fn is_invalid_key(body: &[u8]) -> bool {
    error_details(body)
        .iter()
        .any(|d| d.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID"))
}

/// A short random hex string for ids when the provider gave us nothing to derive them from.
pub(crate) fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the OS once per process and per-instance perturbed; the counter
    // keeps two ids minted in the same nanosecond apart.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", h.finish())
}

/// Seconds since the Unix epoch (the canonical `created` field).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_paths() {
        assert_eq!(
            model_resource("gemini-2.5-flash"),
            "models/gemini-2.5-flash"
        );
        assert_eq!(
            model_resource("models/gemini-2.5-flash"),
            "models/gemini-2.5-flash"
        );
        assert_eq!(model_resource("tunedModels/x y"), "tunedModels/x%20y");
        assert_eq!(model_resource("a?key=1"), "models/a%3Fkey%3D1");
    }

    #[test]
    fn reads_retry_info() {
        let body = br#"{"error":{"code":429,"message":"q","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure"},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37s"}]}}"#;
        assert_eq!(retry_delay(body), Some(Duration::from_secs(37)));
        assert_eq!(retry_delay(b"{}"), None);
        assert_eq!(retry_delay(b"not json"), None);
        let bad = br#"{"error":{"details":[{"@type":"google.rpc.RetryInfo","retryDelay":"-1s"}]}}"#;
        assert_eq!(retry_delay(bad), None);
    }

    #[test]
    fn recognises_invalid_keys() {
        let body = br#"{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#;
        assert!(is_invalid_key(body));
        assert!(!is_invalid_key(br#"{"error":{"code":400,"message":"x"}}"#));
    }

    #[test]
    fn random_hex_differs() {
        assert_ne!(random_hex(), random_hex());
        assert_eq!(random_hex().len(), 16);
    }
}
