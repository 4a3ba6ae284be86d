//! Ingress formats: the first stage of the request path.
//!
//! Turns a client's body into a validated canonical request, or an [`ApiError`] that names the
//! offending parameter. Tollgate validates only what it must understand to route, meter and
//! price (model, messages, stream flags, output caps) and passes every other field through
//! untouched — providers add fields faster than gateways can list them, and the upstream
//! validates its own parameters.
//!
//! [`openai`] is the OpenAI Chat Completions / Embeddings format (the canonical one). The
//! Anthropic Messages format joins as a sibling module that translates into the same canonical
//! request.

pub mod anthropic;
pub mod openai;

/// The longest model name accepted, in characters. Real names are under 100; a bound keeps a
/// client's megabyte "model" out of the ledger row, the logs and the 404 that echoes it.
pub const MAX_MODEL_CHARS: usize = 256;

/// Checks a model name's length (the caller has checked it is a non-empty string).
pub fn check_model_len(model: &str) -> Result<(), ApiError> {
    if model.chars().count() > MAX_MODEL_CHARS {
        return Err(ApiError::new(
            tollgate_types::ErrorCode::InvalidRequest,
            format!("'model' is longer than {MAX_MODEL_CHARS} characters"),
        )
        .with_param("model"));
    }
    Ok(())
}

use serde_json::{Map, Value};
use tollgate_types::{ApiError, ErrorCode};

/// Parses a JSON body that must be an object.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidJson,
            "the request body is empty; expected a JSON object",
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::new(
            ErrorCode::InvalidJson,
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::new(
            ErrorCode::InvalidJson,
            format!("the request body is not valid JSON: {e}"),
        )),
    }
}
