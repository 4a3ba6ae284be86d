//! Error replies in each provider's own shape, and which shape a route speaks ([`Family`]).
//!
//! - OpenAI ([`OpenAiError`]): `{"error":{"message","type","param","code"}}`.
//! - Anthropic ([`AnthropicError`]): `{"type":"error","error":{"type","message"}}`.
//! - Google ([`GoogleError`]): `{"error":{"code","message","status","details"?}}`.
//! - Bedrock ([`BedrockError`]): `{"message"}` with the exception name in the
//!   `x-amzn-ErrorType` header.
//!
//! The simulator imitates the *upstream*, so it uses each provider's own type and status
//! names (mostly `code: null` for OpenAI validation errors), not the gateway's error-code
//! table.

use http::{HeaderValue, Response, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};

use crate::http::{SimBody, json_response};

/// An error reply in the OpenAI shape.
#[derive(Debug, Clone)]
pub(crate) struct OpenAiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    pub retry_after_secs: Option<u64>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl OpenAiError {
    /// A 400 `invalid_request_error` naming the offending parameter.
    pub(crate) fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        OpenAiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
            retry_after_secs: None,
        }
    }

    pub(crate) fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub(crate) fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub(crate) fn invalid_json() -> Self {
        OpenAiError::invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you \
             aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, \
             but what was sent was not valid JSON.)",
            None,
        )
    }

    pub(crate) fn missing(param: &str) -> Self {
        OpenAiError::invalid(
            format!("Missing required parameter: '{param}'."),
            Some(param),
        )
    }

    pub(crate) fn invalid_api_key() -> Self {
        OpenAiError {
            status: StatusCode::UNAUTHORIZED,
            message: "Incorrect API key provided.".to_string(),
            kind: "invalid_request_error",
            param: None,
            code: Some("invalid_api_key"),
            retry_after_secs: None,
        }
    }

    pub(crate) fn not_found(method: &str, path: &str) -> Self {
        OpenAiError::invalid(format!("Invalid URL ({method} {path})"), None)
            .with_status(StatusCode::NOT_FOUND)
    }

    pub(crate) fn method_not_allowed(method: &str, path: &str) -> Self {
        OpenAiError::invalid(format!("Method {method} not allowed on {path}"), None)
            .with_status(StatusCode::METHOD_NOT_ALLOWED)
    }

    /// The reply of an injected failure with status `status`.
    pub(crate) fn injected(status: u16, retry_after_secs: Option<u64>) -> Self {
        let status = injected_status(status);
        let (message, kind, code) = match status.as_u16() {
            429 => (
                "Rate limit reached for requests (simulated).",
                "rate_limit_error",
                Some("rate_limit_exceeded"),
            ),
            503 => (
                "The engine is currently overloaded, please try again later (simulated).",
                "server_error",
                None,
            ),
            s if s >= 500 => (
                "The server had an error while processing your request (simulated).",
                "server_error",
                None,
            ),
            _ => (
                "The request was rejected (simulated failure).",
                "invalid_request_error",
                None,
            ),
        };
        // Retry-After only where real providers send it.
        let retry_after_secs = retry_after_secs.filter(|_| matches!(status.as_u16(), 429 | 503));
        OpenAiError {
            status,
            message: message.to_string(),
            kind,
            param: None,
            code,
            retry_after_secs,
        }
    }

    pub(crate) fn body(&self) -> Vec<u8> {
        let env = Envelope {
            error: Inner {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        };
        serde_json::to_vec(&env).unwrap_or_default()
    }

    pub(crate) fn into_response(self) -> Response<SimBody> {
        let mut resp = json_response(self.status, self.body());
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// The status of an injected failure: `fail_status` when it is a 4xx/5xx, else 500.
fn injected_status(status: u16) -> StatusCode {
    StatusCode::from_u16(status)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Which provider's error shape a route speaks; decided from the path alone, so even a 404 or
/// a 413 comes back in the shape the caller's client library parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    OpenAi,
    Anthropic,
    Google,
    Bedrock,
}

impl Family {
    pub(crate) fn not_found(self, method: &str, path: &str) -> Response<SimBody> {
        match self {
            Family::OpenAi => OpenAiError::not_found(method, path).into_response(),
            Family::Anthropic => AnthropicError::new(
                StatusCode::NOT_FOUND,
                "not_found_error",
                format!("Not found: {method} {path}"),
            )
            .into_response(),
            Family::Google => GoogleError::new(
                StatusCode::NOT_FOUND,
                format!("Requested entity was not found: {method} {path}"),
            )
            .into_response(),
            Family::Bedrock => BedrockError::new(
                StatusCode::NOT_FOUND,
                "UnknownOperationException",
                format!("Unknown operation: {method} {path}"),
            )
            .into_response(),
        }
    }

    pub(crate) fn method_not_allowed(self, method: &str, path: &str) -> Response<SimBody> {
        let status = StatusCode::METHOD_NOT_ALLOWED;
        let message = format!("Method {method} not allowed on {path}");
        match self {
            Family::OpenAi => OpenAiError::method_not_allowed(method, path).into_response(),
            Family::Anthropic => {
                AnthropicError::new(status, "invalid_request_error", message).into_response()
            }
            Family::Google => GoogleError::new(status, message).into_response(),
            Family::Bedrock => {
                BedrockError::new(status, "UnknownOperationException", message).into_response()
            }
        }
    }

    /// 413 for a body above the simulator's limit.
    pub(crate) fn too_large(self, limit: usize) -> Response<SimBody> {
        let status = StatusCode::PAYLOAD_TOO_LARGE;
        let message = format!("The request body exceeds {limit} bytes.");
        match self {
            Family::OpenAi => OpenAiError::invalid(message, None)
                .with_status(status)
                .into_response(),
            Family::Anthropic => {
                AnthropicError::new(status, "request_too_large", message).into_response()
            }
            Family::Google => GoogleError::new(status, message).into_response(),
            Family::Bedrock => {
                BedrockError::new(status, "ValidationException", message).into_response()
            }
        }
    }
}

/// An error reply in Anthropic's shape.
#[derive(Debug, Clone)]
pub(crate) struct AnthropicError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl AnthropicError {
    pub(crate) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        AnthropicError {
            status,
            kind,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// A 400 `invalid_request_error`; Anthropic prefixes the message with the field path
    /// (`max_tokens: Field required`).
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        AnthropicError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub(crate) fn authentication() -> Self {
        AnthropicError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        )
    }

    /// The reply of an injected failure: 429 `rate_limit_error`, 529 `overloaded_error`, 500
    /// and other 5xx `api_error` (504 `timeout_error`), 4xx by their Anthropic type.
    /// `Retry-After` on 429, 503 and 529.
    pub(crate) fn injected(status: u16, retry_after_secs: Option<u64>) -> Self {
        let status = injected_status(status);
        let (kind, message) = match status.as_u16() {
            401 => ("authentication_error", "invalid x-api-key (simulated)"),
            402 => ("billing_error", "Billing issue (simulated)."),
            403 => ("permission_error", "Permission denied (simulated)."),
            404 => ("not_found_error", "Not found (simulated)."),
            413 => ("request_too_large", "Request too large (simulated)."),
            429 => (
                "rate_limit_error",
                "Number of requests has exceeded your rate limit (simulated).",
            ),
            504 => ("timeout_error", "Request timed out (simulated)."),
            529 => ("overloaded_error", "Overloaded (simulated)."),
            s if s >= 500 => ("api_error", "Internal server error (simulated)."),
            _ => (
                "invalid_request_error",
                "The request was rejected (simulated failure).",
            ),
        };
        AnthropicError {
            status,
            kind,
            message: message.to_string(),
            retry_after_secs: retry_after_secs
                .filter(|_| matches!(status.as_u16(), 429 | 503 | 529)),
        }
    }

    pub(crate) fn body(&self) -> Vec<u8> {
        let v = json!({"type": "error", "error": {"type": self.kind, "message": self.message}});
        serde_json::to_vec(&v).unwrap_or_default()
    }

    pub(crate) fn into_response(self) -> Response<SimBody> {
        let mut resp = json_response(self.status, self.body());
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// An error reply in Google's shape (`google.rpc.Status` as JSON).
#[derive(Debug, Clone)]
pub(crate) struct GoogleError {
    pub status: StatusCode,
    pub message: String,
    /// `google.rpc.Code` name (`INVALID_ARGUMENT`, …).
    pub status_name: &'static str,
    /// `ErrorInfo.reason` (`API_KEY_INVALID`, …), in `details`.
    pub reason: Option<&'static str>,
    /// `RetryInfo.retryDelay` seconds, in `details`. Google does not send `Retry-After`.
    pub retry_delay_secs: Option<u64>,
}

/// The canonical `google.rpc.Code` name of an HTTP status.
fn google_status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 413 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "NOT_IMPLEMENTED",
        503 | 529 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        s if s >= 500 => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    }
}

impl GoogleError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        GoogleError {
            status,
            message: message.into(),
            status_name: google_status_name(status),
            reason: None,
            retry_delay_secs: None,
        }
    }

    /// A 400 `INVALID_ARGUMENT`.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        GoogleError::new(StatusCode::BAD_REQUEST, message)
    }

    /// No key at all: 403 `PERMISSION_DENIED`, as Google answers unregistered callers.
    pub(crate) fn missing_key() -> Self {
        GoogleError::new(
            StatusCode::FORBIDDEN,
            "Method doesn't allow unregistered callers (callers without established identity). \
             Please use API Key or other form of API consumer identity to call this API.",
        )
    }

    /// A wrong key: Google answers 400 `INVALID_ARGUMENT` with reason `API_KEY_INVALID`.
    pub(crate) fn invalid_key() -> Self {
        GoogleError {
            reason: Some("API_KEY_INVALID"),
            ..GoogleError::invalid("API key not valid. Please pass a valid API key.")
        }
    }

    /// The reply of an injected failure: 429 `RESOURCE_EXHAUSTED` (with `RetryInfo` when
    /// `retry_after_secs` is set), 503 `UNAVAILABLE`, 500 `INTERNAL`, …
    pub(crate) fn injected(status: u16, retry_after_secs: Option<u64>) -> Self {
        let status = injected_status(status);
        let message = match status.as_u16() {
            429 => "Resource has been exhausted (e.g. check quota). (simulated)",
            503 | 529 => "The model is overloaded. Please try again later. (simulated)",
            504 => "Deadline exceeded (simulated).",
            s if s >= 500 => "An internal error has occurred (simulated).",
            _ => "The request was rejected (simulated failure).",
        };
        GoogleError {
            retry_delay_secs: retry_after_secs.filter(|_| matches!(status.as_u16(), 429 | 503)),
            ..GoogleError::new(status, message)
        }
    }

    pub(crate) fn value(&self) -> Value {
        let mut details = Vec::new();
        if let Some(reason) = self.reason {
            details.push(json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
            }));
        }
        if let Some(secs) = self.retry_delay_secs {
            details.push(json!({
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": format!("{secs}s"),
            }));
        }
        let mut error = json!({
            "code": self.status.as_u16(),
            "message": self.message,
            "status": self.status_name,
        });
        if !details.is_empty() {
            error["details"] = Value::Array(details);
        }
        json!({ "error": error })
    }

    pub(crate) fn into_response(self) -> Response<SimBody> {
        json_response(
            self.status,
            serde_json::to_vec(&self.value()).unwrap_or_default(),
        )
    }
}

/// An error reply in Bedrock's shape: `{"message"}` plus `x-amzn-ErrorType`.
#[derive(Debug, Clone)]
pub(crate) struct BedrockError {
    pub status: StatusCode,
    /// Exception name (`ValidationException`, `ThrottlingException`, …).
    pub kind: &'static str,
    pub message: String,
}

impl BedrockError {
    pub(crate) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        BedrockError {
            status,
            kind,
            message: message.into(),
        }
    }

    /// A 400 `ValidationException`.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        BedrockError::new(StatusCode::BAD_REQUEST, "ValidationException", message)
    }

    /// The reply of an injected failure: 429 `ThrottlingException`, 503
    /// `ServiceUnavailableException`, 500 `InternalServerException`, 408
    /// `ModelTimeoutException`, 424 `ModelErrorException`, … (AWS sends no `Retry-After`).
    pub(crate) fn injected(status: u16) -> Self {
        let status = injected_status(status);
        let (kind, message) = match status.as_u16() {
            403 => ("AccessDeniedException", "Access denied (simulated)."),
            404 => ("ResourceNotFoundException", "Model not found (simulated)."),
            408 => ("ModelTimeoutException", "Model timed out (simulated)."),
            424 => ("ModelErrorException", "The model failed (simulated)."),
            429 => (
                "ThrottlingException",
                "Too many requests, please wait before trying again. (simulated)",
            ),
            503 | 529 => (
                "ServiceUnavailableException",
                "Bedrock is unable to process your request. (simulated)",
            ),
            s if s >= 500 => (
                "InternalServerException",
                "The system encountered an unexpected error during processing. (simulated)",
            ),
            _ => (
                "ValidationException",
                "The request was rejected (simulated failure).",
            ),
        };
        BedrockError::new(status, kind, message)
    }

    pub(crate) fn into_response(self) -> Response<SimBody> {
        let body = serde_json::to_vec(&json!({ "message": self.message })).unwrap_or_default();
        let mut resp = json_response(self.status, body);
        // AWS appends the service's namespace to the type; SDKs keep what precedes the colon.
        let value = format!(
            "{}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            self.kind
        );
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert("x-amzn-errortype", v);
        }
        resp
    }
}

// ---------------------------------------------------------------------------------------------
// Context-window and content-policy refusals, in-stream errors (`context_window`,
// `content_filter_rate`, `stream_error_rate`). Each is the shape the real provider sends; see
// `crates/providers/tests/fixtures/errors/` for the captured originals they follow.
// ---------------------------------------------------------------------------------------------

impl OpenAiError {
    /// OpenAI and Azure: 400 `context_length_exceeded`.
    pub(crate) fn context_window(prompt: u64, window: u32) -> Self {
        OpenAiError::invalid(
            format!(
                "This model's maximum context length is {window} tokens. However, your messages resulted in {prompt} tokens. Please reduce the length of the messages."
            ),
            Some("messages"),
        )
        .with_code("context_length_exceeded")
    }

    /// OpenAI's chat refusal of a flagged prompt: 400 `invalid_prompt`.
    pub(crate) fn content_policy() -> Self {
        OpenAiError::invalid(
            "Invalid prompt: your prompt was flagged as potentially violating our usage policy. Please try again with a different prompt. (simulated)",
            None,
        )
        .with_code("invalid_prompt")
    }
}

/// Azure OpenAI's prompt filter: 400 `content_filter` with `innererror.code:
/// ResponsibleAIPolicyViolation` and the per-category results.
pub(crate) fn azure_content_filter() -> Response<SimBody> {
    let body = json!({"error": {
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. (simulated)",
        "type": null,
        "param": "prompt",
        "code": "content_filter",
        "status": 400,
        "innererror": {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": {
                "hate": {"filtered": false, "severity": "safe"},
                "jailbreak": {"filtered": false, "detected": false},
                "self_harm": {"filtered": false, "severity": "safe"},
                "sexual": {"filtered": false, "severity": "safe"},
                "violence": {"filtered": true, "severity": "medium"}
            }
        }
    }});
    json_response(
        StatusCode::BAD_REQUEST,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

/// OpenAI's in-stream failure: a `data:` event whose JSON has a top-level `error` (no
/// `[DONE]` follows).
pub(crate) fn openai_stream_error_frame() -> bytes::Bytes {
    bytes::Bytes::from_static(
        b"data: {\"error\":{\"message\":\"The server had an error while processing your request. Sorry about that! (simulated)\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n",
    )
}

impl AnthropicError {
    /// 400 `invalid_request_error` "prompt is too long: N tokens > M maximum".
    pub(crate) fn context_window(prompt: u64, window: u32) -> Self {
        AnthropicError::invalid(format!(
            "prompt is too long: {prompt} tokens > {window} maximum"
        ))
    }

    /// 400 `invalid_request_error` "Output blocked by content filtering policy".
    pub(crate) fn content_policy() -> Self {
        AnthropicError::invalid("Output blocked by content filtering policy")
    }
}

/// Anthropic's in-stream failure: `event: error` with an `overloaded_error`.
pub(crate) fn anthropic_stream_error_frame() -> bytes::Bytes {
    bytes::Bytes::from_static(
        b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded (simulated)\"}}\n\n",
    )
}

impl GoogleError {
    /// 400 `INVALID_ARGUMENT` "The input token count (N) exceeds the maximum number of
    /// tokens allowed (M)."
    pub(crate) fn context_window(prompt: u64, window: u32) -> Self {
        GoogleError::invalid(format!(
            "The input token count ({prompt}) exceeds the maximum number of tokens allowed ({window})."
        ))
    }

    /// Gemini's in-stream failure: an element `{"error":{…503 UNAVAILABLE…}}`, as an SSE
    /// event (`sse`) or as the next element of the streamed JSON array (closing it).
    pub(crate) fn stream_error_frame(sse: bool, first: bool) -> bytes::Bytes {
        let err = GoogleError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The model is overloaded. Please try again later. (simulated)",
        )
        .value();
        let json = serde_json::to_string(&err).unwrap_or_default();
        let framed = if sse {
            format!("data: {json}\r\n\r\n")
        } else if first {
            format!("[{json}]")
        } else {
            format!(",\r\n{json}]")
        };
        bytes::Bytes::from(framed)
    }
}

impl BedrockError {
    /// 400 `ValidationException`, the message Bedrock wraps around the model's refusal.
    pub(crate) fn context_window() -> Self {
        BedrockError::invalid(
            "The model returned the following errors: Input is too long for requested model.",
        )
    }

    /// 400 `ValidationException` carrying a hosted model's content-filter refusal.
    pub(crate) fn content_policy() -> Self {
        BedrockError::invalid(
            "The model returned the following errors: Output blocked by content filtering policy",
        )
    }
}
