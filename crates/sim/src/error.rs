//! OpenAI-shaped error replies: `{"error":{"message","type","param","code"}}`.
//!
//! The simulator imitates the *upstream* (OpenAI), so it uses OpenAI's own `type`/`code`
//! values (mostly `code: null` for validation errors), not the gateway's error-code table.

use http::{HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::http::{SimBody, json_response};

/// An error reply in the OpenAI shape.
#[derive(Debug, Clone)]
pub struct OpenAiError {
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
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        OpenAiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
            retry_after_secs: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn invalid_json() -> Self {
        OpenAiError::invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you \
             aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, \
             but what was sent was not valid JSON.)",
            None,
        )
    }

    pub fn missing(param: &str) -> Self {
        OpenAiError::invalid(
            format!("Missing required parameter: '{param}'."),
            Some(param),
        )
    }

    pub fn invalid_api_key() -> Self {
        OpenAiError {
            status: StatusCode::UNAUTHORIZED,
            message: "Incorrect API key provided.".to_string(),
            kind: "invalid_request_error",
            param: None,
            code: Some("invalid_api_key"),
            retry_after_secs: None,
        }
    }

    pub fn not_found(method: &str, path: &str) -> Self {
        OpenAiError::invalid(format!("Invalid URL ({method} {path})"), None)
            .with_status(StatusCode::NOT_FOUND)
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        OpenAiError::invalid(format!("Method {method} not allowed on {path}"), None)
            .with_status(StatusCode::METHOD_NOT_ALLOWED)
    }

    /// The reply of an injected failure with status `status`.
    pub fn injected(status: u16, retry_after_secs: Option<u64>) -> Self {
        let status = StatusCode::from_u16(status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
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

    pub fn body(&self) -> Vec<u8> {
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

    pub fn into_response(self) -> Response<SimBody> {
        let mut resp = json_response(self.status, self.body());
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
