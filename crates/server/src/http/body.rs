//! Reading request bodies under the configured size limit, with errors from the table.

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use tollgate_types::{ApiError, ErrorCode};

/// Reads the request body, refusing more than `limit` bytes with `413 request_too_large`.
pub(crate) async fn read(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            ErrorCode::RequestTooLarge,
            format!("the request body exceeds the limit of {limit} bytes"),
        )),
        Err(e) => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("could not read the request body: {e}"),
        )),
    }
}
