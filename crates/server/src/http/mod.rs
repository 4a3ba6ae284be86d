//! HTTP plumbing every part of the server shares: the error shapes, the response headers, the
//! body reader and the SSE response. Nothing here knows a stage or an endpoint.

pub(crate) mod body;
pub(crate) mod error;
pub(crate) mod headers;
pub(crate) mod sse;

pub(crate) use error::{WireFormat, error_response};
