//! stub
use crate::config::SimConfig;
use crate::error::BedrockError;
use crate::http::SimBody;
use crate::router::{Ctx, Failure};
use bytes::Bytes;
use http::{HeaderMap, Response};
pub(crate) fn check_auth(_: &SimConfig, _: &HeaderMap) -> Result<(), BedrockError> {
    Ok(())
}
pub(crate) async fn converse(
    _: Ctx,
    _: &str,
    _: bool,
    _: Bytes,
) -> Result<Response<SimBody>, Failure> {
    Err(BedrockError::invalid("x").into())
}
