//! Client-facing errors as HTTP responses, always in the OpenAI shape.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tollgate_types::{ApiError, ErrorCode};

pub const REQUEST_ID_HEADER: &str = "x-tollgate-request-id";

/// An [`ApiError`] bound to a request id, ready to send.
#[derive(Debug)]
pub struct ErrorResponse {
    pub error: ApiError,
    pub request_id: Option<String>,
}

impl ErrorResponse {
    pub fn new(error: ApiError) -> Self {
        ErrorResponse {
            error,
            request_id: None,
        }
    }
}

impl From<ApiError> for ErrorResponse {
    fn from(error: ApiError) -> Self {
        ErrorResponse::new(error)
    }
}

impl IntoResponse for ErrorResponse {
    fn into_response(self) -> Response {
        if self.error.code == ErrorCode::InternalError {
            tracing::error!(request_id = ?self.request_id, message = %self.error.message, "internal error");
        }
        let status =
            StatusCode::from_u16(self.error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = self.error.openai_body().to_string();
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // Errors outside the data plane (unknown routes, admin, panics) get a fresh id so every
        // error a client reports can be found in the logs.
        let id = self
            .request_id
            .clone()
            .unwrap_or_else(|| tollgate_types::RequestId::new().to_string());
        if let Ok(v) = HeaderValue::from_str(&id) {
            h.insert("x-request-id", v.clone());
            h.insert("request-id", v.clone());
            h.insert(REQUEST_ID_HEADER, v);
        }
        if let Some(secs) = self.error.retry_after_secs {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        // SDKs retry 429 and 5xx by default; tell them not to where retrying cannot help.
        let should_retry = match self.error.code {
            ErrorCode::BudgetExceeded | ErrorCode::PolicyBlocked | ErrorCode::ShuttingDown => {
                Some("false")
            }
            _ => None,
        };
        if let Some(v) = should_retry {
            h.insert("x-should-retry", HeaderValue::from_static(v));
        }
        resp
    }
}

/// An [`ApiError`] in the Anthropic Messages shape (`/v1/messages`).
#[derive(Debug)]
pub struct AnthropicError {
    pub error: ApiError,
    pub request_id: Option<String>,
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let body = tollgate_ingress::anthropic::error_body(&self.error).to_string();
        // Same status and headers as the OpenAI shape; only the body differs.
        let mut resp = ErrorResponse {
            error: self.error,
            request_id: self.request_id,
        }
        .into_response();
        *resp.body_mut() = axum::body::Body::from(body);
        resp
    }
}
