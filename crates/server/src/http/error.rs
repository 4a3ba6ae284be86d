//! Client-facing errors as HTTP responses: the OpenAI shape everywhere, the Anthropic shape on
//! `/v1/messages`. Status, `type` and `code` come from the error table
//! (`tollgate_types::ErrorCode`, `docs/errors.md`), never from the call site.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tollgate_types::{ApiError, ErrorCode};

use crate::http::headers;

/// The client's wire format, which decides the shape of errors and of stream error events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireFormat {
    OpenAi,
    Anthropic,
}

impl WireFormat {
    /// The error body in this format.
    pub(crate) fn error_body(self, error: &ApiError) -> serde_json::Value {
        match self {
            WireFormat::OpenAi => error.openai_body(),
            WireFormat::Anthropic => tollgate_ingress::anthropic::error_body(error),
        }
    }
}

/// An [`ApiError`] answered in `format`, with the request id (a fresh one when the error is
/// not about a data-plane request, so every error a client reports can be found in the logs).
pub(crate) fn error_response(
    format: WireFormat,
    error: ApiError,
    request_id: Option<&str>,
) -> Response {
    let id = request_id
        .map(str::to_string)
        .unwrap_or_else(|| tollgate_types::RequestId::new().to_string());
    if error.code == ErrorCode::InternalError {
        tracing::error!(
            request_id = %id,
            message = %error.message,
            cause = error.cause.as_deref().unwrap_or("-"),
            "internal error"
        );
    }
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = format.error_body(&error).to_string();
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    headers::json_body(h);
    headers::request_id(h, &id);
    headers::retry_advice(h, &error);
    resp
}

/// An [`ApiError`] in the OpenAI shape, for handlers outside the data plane (admin, fallbacks).
#[derive(Debug)]
pub(crate) struct ErrorResponse(pub(crate) ApiError);

impl From<ApiError> for ErrorResponse {
    fn from(error: ApiError) -> Self {
        ErrorResponse(error)
    }
}

impl IntoResponse for ErrorResponse {
    fn into_response(self) -> Response {
        error_response(WireFormat::OpenAi, self.0, None)
    }
}
