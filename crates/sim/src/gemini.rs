//! stub
use crate::config::SimConfig;
use crate::error::GoogleError;
use crate::http::SimBody;
use crate::router::{Ctx, Failure, GeminiMethod};
use bytes::Bytes;
use http::{HeaderMap, Response, Uri};
pub(crate) fn check_auth(_: &SimConfig, _: &HeaderMap, _: &Uri) -> Result<(), GoogleError> {
    Ok(())
}
pub(crate) async fn handle(
    _: Ctx,
    _: GeminiMethod,
    _: &str,
    _: bool,
    _: Bytes,
) -> Result<Response<SimBody>, Failure> {
    Err(GoogleError::invalid("x").into())
}
pub(crate) fn models() -> Response<SimBody> {
    GoogleError::invalid("x").into_response()
}
