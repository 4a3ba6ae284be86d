//! Amazon Bedrock through the Converse API (Bedrock Runtime API version 2023-09-30): `Converse`
//! for complete answers, `ConverseStream` for streams.
//!
//! - **Transport**: `POST {base_url}/model/{modelId}/converse` or `/converse-stream`, the model
//!   id (a model id, inference-profile id or ARN) percent-encoded as one path segment.
//! - **Auth**: a Bedrock API key (`api_key`) is sent as `Authorization: Bearer`; otherwise the
//!   AWS credentials are used to sign each request with SigV4 ([`sigv4`], service `bedrock`, the
//!   configured region, the session token when set) over the exact body bytes sent. When both are
//!   configured the API key wins: it is the credential configured specifically for Bedrock.
//! - **Translation**: canonical → Converse in [`request`], Converse → canonical in [`response`],
//!   the binary event stream ([`eventstream`]) → canonical chunks in [`stream`].
//! - **Errors**: Bedrock answers `{"message": …}` with the exception name in `x-amzn-errortype`.
//!   The status error handed to the gateway carries a normalised body `{"message", "code"}` so
//!   the client-facing message names the exception. `ModelNotReadyException` arrives as HTTP 429
//!   but means "try again shortly", not "you are rate limited": it is reported as 503
//!   (unavailable, retryable). Throttling (429) stays 429 and retryable.
//! - **Embeddings** are not served: Converse is chat only ([`Capabilities::embeddings`] is
//!   false, and a call fails with a clear error).

pub mod eventstream;
pub mod request;
pub mod response;
pub mod sigv4;
pub mod stream;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokio::time::Instant;
use tollgate_types::ProviderKind;

use crate::error::{UpstreamError, UpstreamErrorKind};
use crate::http;
use crate::openai::encode_segment;
use crate::{
    BuildError, Capabilities, ChatCall, ChatResponse, Completion, EmbeddingsCall, Provider,
    ProviderSettings,
};
use eventstream::Frame;
use response::Identity;
use sigv4::Signer;

/// Largest non-streaming response body accepted.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// Where request signing and response timestamps get the time from.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

enum Auth {
    Bearer(HeaderValue),
    SigV4(Signer),
}

pub struct Bedrock {
    settings: ProviderSettings,
    client: reqwest::Client,
    base: String,
    /// Extra static headers from config (sent, not signed).
    headers: HeaderMap,
    auth: Auth,
    clock: Clock,
}

impl Bedrock {
    pub fn new(settings: ProviderSettings) -> Result<Self, BuildError> {
        let base = settings.base_url.trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base).map_err(|e| BuildError::BaseUrl {
            url: base.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(BuildError::BaseUrl {
                url: base,
                reason: "expected an http or https URL with a host".into(),
            });
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &settings.headers {
            let name =
                HeaderName::from_bytes(k.as_bytes()).map_err(|_| BuildError::Header(k.clone()))?;
            let mut value = HeaderValue::from_str(v).map_err(|_| BuildError::Header(k.clone()))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let auth = match (
            settings.api_key.as_deref().filter(|k| !k.is_empty()),
            &settings.aws,
        ) {
            (Some(key), _) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {key}"))
                    .map_err(|_| BuildError::Header("api_key".into()))?;
                v.set_sensitive(true);
                Auth::Bearer(v)
            }
            (None, Some(aws)) => {
                let region = settings
                    .region
                    .as_deref()
                    .filter(|r| !r.is_empty())
                    .ok_or_else(|| {
                        BuildError::Settings("bedrock SigV4 signing needs a region".into())
                    })?;
                Auth::SigV4(Signer::new(
                    &aws.access_key_id,
                    &aws.secret_access_key,
                    aws.session_token.as_deref().filter(|t| !t.is_empty()),
                    region,
                ))
            }
            (None, None) => {
                return Err(BuildError::Settings(
                    "bedrock needs AWS credentials or a Bedrock api_key".into(),
                ));
            }
        };
        let client = http::client(&settings.timeouts)?;
        Ok(Bedrock {
            settings,
            client,
            base,
            headers,
            auth,
            clock: Arc::new(SystemTime::now),
        })
    }

    /// Replaces the wall clock used for SigV4 timestamps and response `created` fields (tests
    /// pin it to get known-answer signatures and byte-exact responses).
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    fn err(&self, kind: UpstreamErrorKind) -> UpstreamError {
        UpstreamError::new(&self.settings.name, kind)
    }

    fn url(&self, model: &str, action: &str) -> String {
        format!("{}/model/{}/{action}", self.base, encode_segment(model))
    }

    /// Signs (or authorises) and POSTs `body`; returns the response once headers arrived with
    /// a success status.
    async fn post(
        &self,
        model: &str,
        action: &str,
        body: Vec<u8>,
        stream: bool,
        deadline: Instant,
    ) -> Result<reqwest::Response, UpstreamError> {
        let url = self.url(model, action);
        let mut headers = self.headers.clone();
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static(if stream {
                EVENT_STREAM
            } else {
                "application/json"
            }),
        );
        match &self.auth {
            Auth::Bearer(v) => {
                headers.insert(reqwest::header::AUTHORIZATION, v.clone());
            }
            Auth::SigV4(signer) => {
                let signed = signer
                    .sign(
                        "POST",
                        &url,
                        &[("content-type", "application/json")],
                        &body,
                        (self.clock)(),
                    )
                    .map_err(|e| self.err(UpstreamErrorKind::Unsupported(e.to_string())))?;
                for (name, value) in signed {
                    let mut v = HeaderValue::from_str(&value).map_err(|_| {
                        self.err(UpstreamErrorKind::Unsupported(format!(
                            "signed header {name} is not a valid header value"
                        )))
                    })?;
                    v.set_sensitive(name != "x-amz-date");
                    headers.insert(name, v);
                }
            }
        }
        let req = self.client.post(url).headers(headers).body(body);
        let resp = http::send(&self.settings.name, req, &self.settings.timeouts, deadline).await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = http::retry_after(resp.headers());
        let error_type = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = http::read_body(
            &self.settings.name,
            resp,
            &self.settings.timeouts,
            deadline,
            http::MAX_ERROR_BYTES,
        )
        .await
        .unwrap_or_default();
        Err(self.err(status_error(
            status.as_u16(),
            error_type.as_deref(),
            &body,
            retry_after,
        )))
    }

    fn identity(&self, request_id: Option<&str>, model: &str) -> Identity {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let now = (self.clock)();
        let id = match request_id {
            Some(r) => format!("chatcmpl-{r}"),
            None => format!(
                "chatcmpl-bedrock-{}-{}",
                now.duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ),
        };
        Identity {
            id,
            created: now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs(),
            model: model.to_string(),
        }
    }
}

/// Bedrock's request id (`x-amzn-RequestId`), or a generic one.
fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-amzn-requestid")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| http::upstream_request_id(headers))
}

/// The HTTP status a Bedrock exception stands for, by name (`ThrottlingException`, or the
/// event-stream member name `throttlingException`). `ModelNotReadyException` is deliberately
/// 503, see the module docs.
fn exception_http_status(name: &str) -> Option<u16> {
    let status = match name.to_ascii_lowercase().as_str() {
        "validationexception" | "servicequotaexceededexception" => 400,
        "accessdeniedexception" => 403,
        "resourcenotfoundexception" => 404,
        "modeltimeoutexception" => 408,
        "modelerrorexception" | "modelstreamerrorexception" => 424,
        "throttlingexception" => 429,
        "internalserverexception" => 500,
        "modelnotreadyexception" | "serviceunavailableexception" => 503,
        _ => return None,
    };
    Some(status)
}

/// `throttlingException` → `ThrottlingException`: one spelling in client messages.
fn exception_name(name: &str) -> String {
    let mut c = name.chars();
    match c.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// The status error for a non-success response. The exception name comes from
/// `x-amzn-errortype` (`Name:http://internal.amazon.com/…`), else the body's `__type` (which may
/// be namespaced `ns#Name`) or `code`. Public (hidden) only for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub fn status_error(
    status: u16,
    error_type: Option<&str>,
    body: &[u8],
    retry_after: Option<std::time::Duration>,
) -> UpstreamErrorKind {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| json.as_ref()?.get(k)?.as_str().map(str::to_string);
    let name = error_type
        .map(|t| t.split(':').next().unwrap_or(t).to_string())
        .or_else(|| field("__type").map(|t| t.rsplit('#').next().unwrap_or(&t).to_string()))
        .or_else(|| field("code"))
        .filter(|n| !n.is_empty());
    let message = field("message").or_else(|| field("Message"));
    let status = match name.as_deref() {
        Some(n) if n.eq_ignore_ascii_case("ModelNotReadyException") => 503,
        _ => status,
    };
    let body = match (name, message) {
        (Some(name), message) => {
            let message = message.unwrap_or_else(|| {
                // Cut at a word: the text is scrubbed of keys only later.
                crate::error::cut_at_word(String::from_utf8_lossy(body).trim(), 200).to_string()
            });
            serde_json::json!({"message": message, "code": name})
                .to_string()
                .into()
        }
        (None, _) => bytes::Bytes::copy_from_slice(body),
    };
    UpstreamErrorKind::Status {
        status,
        body,
        retry_after,
    }
}

/// `"<exceptionName>: <message>"` of an exception or error frame.
pub(crate) fn exception_message(frame: &Frame) -> String {
    let kind = frame
        .exception_type
        .as_deref()
        .or(frame.error_code.as_deref())
        .unwrap_or("error");
    let message = serde_json::from_slice::<Value>(&frame.payload)
        .ok()
        .and_then(|v| {
            v.get("message")
                .or_else(|| v.get("Message"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .or_else(|| frame.error_message.clone())
        .unwrap_or_else(|| "(no message)".to_string());
    format!("{kind}: {message}")
}

/// An exception frame that arrived before any event, as the status error the same exception
/// would have produced as an HTTP response.
pub(crate) fn exception_status(frame: &Frame) -> UpstreamErrorKind {
    let name = frame
        .exception_type
        .as_deref()
        .or(frame.error_code.as_deref())
        .map(exception_name)
        .unwrap_or_else(|| "InternalServerException".into());
    let status = exception_http_status(&name).unwrap_or(500);
    let mut kind = status_error(status, Some(&name), &frame.payload, None);
    if let (UpstreamErrorKind::Status { body, .. }, None) = (
        &mut kind,
        serde_json::from_slice::<Value>(&frame.payload).ok(),
    ) {
        // An unmodelled `error` message carries its text in a header, not the payload.
        let message = frame.error_message.clone().unwrap_or_default();
        *body = serde_json::json!({"message": message, "code": name})
            .to_string()
            .into();
    }
    kind
}

impl Provider for Bedrock {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Bedrock
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
        async move {
            let deadline = Instant::now() + self.settings.timeouts.total;
            let model = call
                .body
                .get("model")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .ok_or_else(|| {
                    self.err(UpstreamErrorKind::Unsupported(
                        "the request names no model".into(),
                    ))
                })?
                .to_string();
            let translated = request::translate(&call.body)
                .map_err(|e| self.err(UpstreamErrorKind::Unsupported(e)))?;
            let json_tool = translated.json_tool;
            if !call.stream {
                let resp = self
                    .post(&model, "converse", translated.body, false, deadline)
                    .await?;
                let upstream_request_id = request_id(resp.headers());
                let body = http::read_body(
                    &self.settings.name,
                    resp,
                    &self.settings.timeouts,
                    deadline,
                    MAX_RESPONSE_BYTES,
                )
                .await?;
                let identity = self.identity(upstream_request_id.as_deref(), &model);
                let (body, usage) = response::translate(&body, &identity, json_tool)
                    .map_err(|e| self.err(UpstreamErrorKind::Protocol(e)))?;
                return Ok(ChatResponse::Complete(Completion {
                    body: body.into(),
                    usage,
                    upstream_request_id,
                }));
            }
            let resp = self
                .post(&model, "converse-stream", translated.body, true, deadline)
                .await?;
            let upstream_request_id = request_id(resp.headers());
            if let Some(ct) = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                && !ct.starts_with(EVENT_STREAM)
            {
                return Err(self.err(UpstreamErrorKind::Protocol(format!(
                    "expected an {EVENT_STREAM} body, got content-type '{ct}'"
                ))));
            }
            let identity = self.identity(upstream_request_id.as_deref(), &model);
            let body =
                http::body_stream(&self.settings.name, resp, &self.settings.timeouts, deadline);
            let mut chunks =
                stream::ConverseStream::new(&self.settings.name, body, identity, json_tool);
            chunks.prime().await?;
            Ok(ChatResponse::Stream {
                chunks: Box::pin(chunks),
                upstream_request_id,
            })
        }
        .boxed()
    }

    fn embeddings(&self, call: EmbeddingsCall) -> BoxFuture<'_, Result<Completion, UpstreamError>> {
        let _ = call;
        let e = self.err(UpstreamErrorKind::Unsupported(
            "embeddings are not served by the bedrock adapter (Converse is chat only)".into(),
        ));
        async move { Err(e) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describe(kind: &UpstreamErrorKind) -> (u16, String) {
        let e = UpstreamError::new("b", kind.clone());
        let api = e.to_api_error(&[]);
        match kind {
            UpstreamErrorKind::Status { status, .. } => (*status, api.message),
            _ => (0, api.message),
        }
    }

    #[test]
    fn error_types_and_statuses() {
        let k = status_error(
            429,
            Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            br#"{"message":"Too many requests, please wait before trying again."}"#,
            None,
        );
        let (status, msg) = describe(&k);
        assert_eq!(status, 429);
        assert!(
            msg.contains(
                "Too many requests, please wait before trying again. (code: ThrottlingException)"
            ),
            "{msg}"
        );
        assert!(UpstreamError::new("b", k).retryable());

        let k = status_error(
            429,
            Some("ModelNotReadyException"),
            br#"{"message":"warming"}"#,
            None,
        );
        assert_eq!(describe(&k).0, 503);
        let api = UpstreamError::new("b", k.clone()).to_api_error(&[]);
        assert_eq!(api.code.as_str(), "upstream_unavailable");
        assert!(UpstreamError::new("b", k).retryable());

        // No header: the body's namespaced __type.
        let k = status_error(
            400,
            None,
            br#"{"__type":"com.amazon.coral.validate#ValidationException","Message":"bad"}"#,
            None,
        );
        assert!(describe(&k).1.contains("bad (code: ValidationException)"));
        // Not JSON, no type: the raw text.
        let k = status_error(502, None, b"<html>gateway</html>", None);
        assert!(describe(&k).1.contains("<html>gateway</html>"));
    }

    /// An error body without a message is shown as its first 200 characters; cut mid-word, a
    /// key straddling the cut left its first part behind for the client (fuzz target
    /// `error_classify`). The cut now falls between words, so the scrubber sees whole keys.
    #[test]
    fn a_key_at_the_cut_of_an_unmodelled_body_leaves_nothing_behind() {
        let key = "sk-fuzz-7Qm2Zt9XbLw4Kp8R";
        let body = format!(
            "<html><body>{} key {key} rejected</body></html>",
            "x".repeat(170)
        );
        let k = status_error(502, Some("InternalServerException"), body.as_bytes(), None);
        let msg = UpstreamError::new("b", k).to_api_error(&[key]).message;
        assert!(!msg.contains("sk-fuzz-7Q"), "{msg}");
        assert!(
            msg.ends_with("x key (code: InternalServerException)"),
            "{msg}"
        );
        assert_eq!(crate::error::cut_at_word("ab cd", 4), "ab");
        assert_eq!(crate::error::cut_at_word("ab cd", 2), "ab");
        assert_eq!(crate::error::cut_at_word("abcd", 2), "");
        assert_eq!(crate::error::cut_at_word("ab", 2), "ab");
    }

    #[test]
    fn early_exception_frames_become_status_errors() {
        let frame = Frame {
            message_type: Some("exception".into()),
            exception_type: Some("throttlingException".into()),
            payload: bytes::Bytes::from_static(br#"{"message":"slow down"}"#),
            ..Frame::default()
        };
        let k = exception_status(&frame);
        let (status, msg) = describe(&k);
        assert_eq!(status, 429);
        assert!(
            msg.contains("slow down (code: ThrottlingException)"),
            "{msg}"
        );
        assert_eq!(exception_message(&frame), "throttlingException: slow down");
        let frame = Frame {
            message_type: Some("error".into()),
            error_code: Some("InternalFailure".into()),
            error_message: Some("oops".into()),
            ..Frame::default()
        };
        let (status, msg) = describe(&exception_status(&frame));
        assert_eq!(status, 500);
        assert!(msg.contains("oops (code: InternalFailure)"), "{msg}");
    }
}
