//! Reading request bodies under the configured size and time limits, with errors from the
//! table.

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use tollgate_types::{ApiError, ErrorCode};

/// Reads the request body, refusing more than `limit` bytes with `413 request_too_large` and a
/// body that takes longer than `within` (a client trickling bytes to hold a request open) with
/// `408 request_timeout`.
pub(crate) async fn read(
    body: Body,
    limit: usize,
    within: std::time::Duration,
) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, limit);
    let Ok(collected) = tokio::time::timeout(within, limited.collect()).await else {
        return Err(ApiError::new(
            ErrorCode::RequestTimeout,
            format!(
                "the request body did not arrive within {} s",
                within.as_secs()
            ),
        ));
    };
    match collected {
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
