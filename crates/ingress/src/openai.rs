//! OpenAI Chat Completions and Embeddings requests.

use serde_json::{Map, Value};
use tollgate_types::{ApiError, ErrorCode};

/// A validated chat request. `body` is the client's JSON, untouched.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub body: Map<String, Value>,
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage` as the client sent it.
    pub include_usage: bool,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_output_tokens: Option<u64>,
    pub n: u64,
}

/// A validated embeddings request.
#[derive(Debug, Clone)]
pub struct EmbeddingsRequest {
    pub body: Map<String, Value>,
    pub model: String,
}

fn bad(param: &str, msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, msg).with_param(param)
}

fn model(body: &Map<String, Value>) -> Result<String, ApiError> {
    match body.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => {
            crate::check_model_len(m)?;
            Ok(m.clone())
        }
        Some(Value::String(_)) => Err(bad("model", "'model' must not be empty")),
        Some(_) => Err(bad("model", "'model' must be a string")),
        None => Err(bad("model", "you must provide a model parameter")),
    }
}

fn opt_bool(body: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(key, format!("'{key}' must be a boolean"))),
    }
}

fn opt_uint(body: &Map<String, Value>, key: &str) -> Result<Option<u64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(key, format!("'{key}' must be a non-negative integer"))),
    }
}

impl ChatRequest {
    pub fn parse(body: Map<String, Value>) -> Result<ChatRequest, ApiError> {
        let model = model(&body)?;
        match body.get("messages") {
            Some(Value::Array(msgs)) if !msgs.is_empty() => {
                for (i, m) in msgs.iter().enumerate() {
                    let role = m.get("role").and_then(Value::as_str);
                    if !m.is_object() || role.is_none() {
                        return Err(bad(
                            &format!("messages[{i}]"),
                            format!("messages[{i}] must be an object with a string 'role'"),
                        ));
                    }
                }
            }
            Some(Value::Array(_)) => {
                return Err(bad(
                    "messages",
                    "'messages' must contain at least one message",
                ));
            }
            Some(_) => return Err(bad("messages", "'messages' must be an array")),
            None => return Err(bad("messages", "you must provide a messages parameter")),
        }
        let stream = opt_bool(&body, "stream")?.unwrap_or(false);
        let include_usage = match body.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => {
                if !stream {
                    return Err(bad(
                        "stream_options",
                        "'stream_options' is only allowed when 'stream' is true",
                    ));
                }
                match o.get("include_usage") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => {
                        return Err(bad(
                            "stream_options.include_usage",
                            "'include_usage' must be a boolean",
                        ));
                    }
                }
            }
            Some(_) => return Err(bad("stream_options", "'stream_options' must be an object")),
        };
        let max_completion = opt_uint(&body, "max_completion_tokens")?;
        let max_tokens = opt_uint(&body, "max_tokens")?;
        let n = opt_uint(&body, "n")?.unwrap_or(1);
        if n == 0 {
            return Err(bad("n", "'n' must be at least 1"));
        }
        Ok(ChatRequest {
            model,
            stream,
            include_usage,
            max_output_tokens: max_completion.or(max_tokens),
            n,
            body,
        })
    }
}

impl EmbeddingsRequest {
    pub fn parse(body: Map<String, Value>) -> Result<EmbeddingsRequest, ApiError> {
        let model = model(&body)?;
        match body.get("input") {
            Some(Value::String(_)) => {}
            Some(Value::Array(a)) if !a.is_empty() => {}
            Some(Value::Array(_)) => return Err(bad("input", "'input' must not be empty")),
            Some(_) => {
                return Err(bad(
                    "input",
                    "'input' must be a string, an array of strings, or token arrays",
                ));
            }
            None => return Err(bad("input", "you must provide an input parameter")),
        }
        Ok(EmbeddingsRequest { model, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(s: &str) -> Map<String, Value> {
        crate::parse_object(s.as_bytes()).unwrap()
    }

    #[test]
    fn parses_and_keeps_unknown_fields() {
        let r = ChatRequest::parse(obj(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,
                "stream_options":{"include_usage":true},"max_tokens":5,"weird":1}"#,
        ))
        .unwrap();
        assert!(r.stream && r.include_usage);
        assert_eq!(r.max_output_tokens, Some(5));
        assert_eq!(r.body["weird"], 1);
    }

    #[test]
    fn errors_name_the_param() {
        let cases = [
            (r#"{"messages":[{"role":"user","content":"x"}]}"#, "model"),
            (
                &format!(
                    r#"{{"model":"{}","messages":[{{"role":"user","content":"x"}}]}}"#,
                    "m".repeat(257)
                ),
                "model",
            ),
            (r#"{"model":"m"}"#, "messages"),
            (r#"{"model":"m","messages":[]}"#, "messages"),
            (r#"{"model":"m","messages":[1]}"#, "messages[0]"),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"stream_options":{}}"#,
                "stream_options",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"max_tokens":-1}"#,
                "max_tokens",
            ),
            (r#"{"model":"m","messages":[{"role":"user"}],"n":0}"#, "n"),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#,
                "stream",
            ),
        ];
        for (body, param) in cases {
            let e = ChatRequest::parse(obj(body)).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
            assert_eq!(e.status(), 400);
        }
        let e = EmbeddingsRequest::parse(obj(r#"{"model":"m"}"#)).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input"));
        assert!(crate::parse_object(b"[1]").is_err());
        assert!(crate::parse_object(b"{").is_err());
    }
}
