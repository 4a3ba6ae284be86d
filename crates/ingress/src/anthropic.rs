//! The Anthropic Messages API as an ingress (`POST /v1/messages`), API version `2023-06-01`.
//!
//! Anthropic SDK clients (and tools built on them) point their base URL at Tollgate. When the
//! deployment speaks Messages natively the gateway passes the body through untouched; otherwise
//! this module translates in both directions:
//! - [`to_canonical`]: Messages request → canonical (OpenAI Chat) request;
//! - [`response_from_canonical`]: canonical completion → Messages response;
//! - [`StreamTranslator`]: canonical chunks → Messages stream events
//!   (`message_start`, `content_block_*`, `message_delta`, `message_stop`).
//!
//! Usage semantics differ: canonical `input_tokens` *includes* cached and cache-write tokens,
//! Anthropic's `input_tokens` *excludes* them; [`usage_to_anthropic`] is the one place that
//! converts.

use serde_json::{Map, Value, json};
use tollgate_types::{ApiError, ErrorCode, Usage};

/// A validated Messages request. `body` is the client's JSON, untouched.
#[derive(Debug, Clone)]
pub struct MessagesRequest {
    pub body: Map<String, Value>,
    pub model: String,
    pub stream: bool,
    pub max_tokens: u64,
}

fn bad(param: &str, msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, msg).with_param(param)
}

impl MessagesRequest {
    /// Validates what the Messages API requires: `model`, `max_tokens`, non-empty `messages`
    /// with `user`/`assistant` roles.
    pub fn parse(body: Map<String, Value>) -> Result<MessagesRequest, ApiError> {
        let model = match body.get("model") {
            Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
            _ => return Err(bad("model", "model: field required (a non-empty string)")),
        };
        crate::check_model_len(&model)?;
        let max_tokens = match body.get("max_tokens") {
            Some(v) => v
                .as_u64()
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad("max_tokens", "max_tokens: must be an integer ≥ 1"))?,
            None => return Err(bad("max_tokens", "max_tokens: field required")),
        };
        match body.get("messages") {
            Some(Value::Array(msgs)) if !msgs.is_empty() => {
                for (i, m) in msgs.iter().enumerate() {
                    match m.get("role").and_then(Value::as_str) {
                        Some("user") | Some("assistant") => {}
                        _ => {
                            return Err(bad(
                                &format!("messages.{i}.role"),
                                format!("messages.{i}.role: must be 'user' or 'assistant'"),
                            ));
                        }
                    }
                    if m.get("content").is_none() {
                        return Err(bad(
                            &format!("messages.{i}.content"),
                            format!("messages.{i}.content: field required"),
                        ));
                    }
                }
            }
            Some(Value::Array(_)) => {
                return Err(bad(
                    "messages",
                    "messages: at least one message is required",
                ));
            }
            _ => return Err(bad("messages", "messages: field required (an array)")),
        }
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad("stream", "stream: must be a boolean")),
        };
        Ok(MessagesRequest {
            body,
            model,
            stream,
            max_tokens,
        })
    }
}

/// Text of a `system` value or a `tool_result` content: a string or text blocks.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n\n"),
        _ => String::new(),
    }
}

/// A Messages `image` / `document` source as a URL the canonical format accepts.
fn source_url(source: &Value) -> Option<String> {
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = source.get("media_type").and_then(Value::as_str)?;
            let data = source.get("data").and_then(Value::as_str)?;
            Some(format!("data:{media};base64,{data}"))
        }
        Some("url") => source
            .get("url")
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

/// Messages request → canonical OpenAI Chat request (`model` kept as the client's).
pub fn to_canonical(req: &MessagesRequest) -> Result<Map<String, Value>, ApiError> {
    let b = &req.body;
    let mut messages: Vec<Value> = Vec::new();
    if let Some(system) = b.get("system") {
        let text = text_of(system);
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    for (i, m) in b
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
        let content = m.get("content").unwrap_or(&Value::Null);
        let blocks: Vec<Value> = match content {
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(a) => a.clone(),
            _ => {
                return Err(bad(
                    &format!("messages.{i}.content"),
                    "content must be a string or an array of content blocks",
                ));
            }
        };
        if role == "assistant" {
            let mut text = String::new();
            let mut tool_calls = Vec::new();
            for blk in &blocks {
                match blk.get("type").and_then(Value::as_str) {
                    Some("text") => text.push_str(blk.get("text").and_then(Value::as_str).unwrap_or("")),
                    Some("tool_use") => tool_calls.push(json!({
                        "id": blk.get("id").cloned().unwrap_or(Value::Null),
                        "type": "function",
                        "function": {
                            "name": blk.get("name").cloned().unwrap_or(Value::Null),
                            "arguments": blk.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                        }
                    })),
                    // Thinking blocks carry provider-signed state that only an Anthropic
                    // upstream can use; a translated request drops them.
                    Some("thinking") | Some("redacted_thinking") => {}
                    other => {
                        return Err(bad(
                            &format!("messages.{i}.content"),
                            format!(
                                "assistant content block type '{}' cannot be sent to a non-Anthropic deployment",
                                other.unwrap_or("?")
                            ),
                        ));
                    }
                }
            }
            let mut msg = json!({"role": "assistant", "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { Value::String(text) }});
            if !tool_calls.is_empty() {
                msg["tool_calls"] = Value::Array(tool_calls);
            }
            messages.push(msg);
        } else {
            // Tool results become `tool` messages (which must directly follow the assistant
            // turn that called them); the rest of the turn becomes one user message after them.
            let mut parts = Vec::new();
            for blk in &blocks {
                match blk.get("type").and_then(Value::as_str) {
                    Some("tool_result") => {
                        let mut text = blk.get("content").map(text_of).unwrap_or_default();
                        if blk.get("is_error").and_then(Value::as_bool) == Some(true) {
                            text = format!("Error: {text}");
                        }
                        messages.push(json!({
                            "role": "tool",
                            "tool_call_id": blk.get("tool_use_id").cloned().unwrap_or(Value::Null),
                            "content": text,
                        }));
                    }
                    Some("text") => parts.push(json!({"type": "text", "text": blk.get("text").cloned().unwrap_or(Value::Null)})),
                    Some("image") => {
                        let url = blk.get("source").and_then(source_url).ok_or_else(|| {
                            bad(&format!("messages.{i}.content"), "image source must be base64 or url")
                        })?;
                        parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                    }
                    Some("document") => {
                        let url = blk.get("source").and_then(source_url).ok_or_else(|| {
                            bad(&format!("messages.{i}.content"), "document source must be base64 or url")
                        })?;
                        parts.push(json!({"type": "file", "file": {"file_data": url}}));
                    }
                    other => {
                        return Err(bad(
                            &format!("messages.{i}.content"),
                            format!(
                                "user content block type '{}' cannot be sent to a non-Anthropic deployment",
                                other.unwrap_or("?")
                            ),
                        ));
                    }
                }
            }
            if !parts.is_empty() {
                let content = match parts.as_slice() {
                    [only] if only["type"] == "text" => only["text"].clone(),
                    _ => Value::Array(parts),
                };
                messages.push(json!({"role": "user", "content": content}));
            }
        }
    }

    let mut out = Map::new();
    out.insert("model".into(), Value::String(req.model.clone()));
    out.insert("messages".into(), Value::Array(messages));
    out.insert("max_tokens".into(), Value::from(req.max_tokens));
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("stop_sequences", "stop"),
    ] {
        if let Some(v) = b.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), v.clone());
        }
    }
    if let Some(user) = b
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        out.insert("user".into(), Value::String(user.into()));
    }
    if req.stream {
        out.insert("stream".into(), Value::Bool(true));
    }
    if let Some(tools) = b
        .get("tools")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
    {
        let mut converted = Vec::new();
        for (i, t) in tools.iter().enumerate() {
            let Some(name) = t.get("name").and_then(Value::as_str) else {
                return Err(bad(
                    &format!("tools.{i}.name"),
                    "tools.{i}.name: field required",
                ));
            };
            if t.get("input_schema").is_none() {
                return Err(bad(
                    &format!("tools.{i}"),
                    format!(
                        "tool '{name}' has no input_schema (server tools need an Anthropic deployment)"
                    ),
                ));
            }
            let mut f = json!({"name": name, "parameters": t["input_schema"].clone()});
            if let Some(d) = t.get("description") {
                f["description"] = d.clone();
            }
            converted.push(json!({"type": "function", "function": f}));
        }
        out.insert("tools".into(), Value::Array(converted));
    }
    if let Some(tc) = b.get("tool_choice").filter(|v| !v.is_null()) {
        let choice = match tc.get("type").and_then(Value::as_str) {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => {
                json!({"type": "function", "function": {"name": tc.get("name").cloned().unwrap_or(Value::Null)}})
            }
            _ => {
                return Err(bad(
                    "tool_choice",
                    "tool_choice.type must be auto, any, tool or none",
                ));
            }
        };
        out.insert("tool_choice".into(), choice);
        if tc.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
            out.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
    Ok(out)
}

/// Canonical `finish_reason` → Messages `stop_reason`.
pub fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Canonical usage → Messages `usage` (exclusive cache semantics).
pub fn usage_to_anthropic(u: &Usage) -> Value {
    json!({
        "input_tokens": u.uncached_input_tokens(),
        "cache_creation_input_tokens": u.cache_write_input_tokens,
        "cache_read_input_tokens": u.cached_input_tokens,
        "output_tokens": u.output_tokens,
    })
}

fn message_id(canonical_id: Option<&str>) -> String {
    let tail = canonical_id
        .map(|s| s.trim_start_matches("chatcmpl-").to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "tollgate".to_string());
    format!("msg_{tail}")
}

/// Canonical completion body → Messages response. `model` is the name the client asked for.
pub fn response_from_canonical(body: &[u8], model: &str, usage: &Usage) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::UpstreamError,
            format!("unreadable upstream answer: {e}"),
        )
    })?;
    let choice = v
        .get("choices")
        .and_then(|c| c.get(0))
        .cloned()
        .unwrap_or(Value::Null);
    let msg = choice.get("message").cloned().unwrap_or(Value::Null);
    let mut content = Vec::new();
    if let Some(t) = msg
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        content.push(json!({"type": "text", "text": t}));
    }
    for tc in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let f = tc.get("function").cloned().unwrap_or(Value::Null);
        let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
        let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({"_raw": args}));
        content.push(json!({
            "type": "tool_use",
            "id": tc.get("id").cloned().unwrap_or(Value::Null),
            "name": f.get("name").cloned().unwrap_or(Value::Null),
            "input": input,
        }));
    }
    Ok(json!({
        "id": message_id(v.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason").and_then(Value::as_str)),
        "stop_sequence": null,
        "usage": usage_to_anthropic(usage),
    }))
}

/// The Messages `error.type` for a Tollgate error.
pub fn error_type(e: &ApiError) -> &'static str {
    match e.status() {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

/// `{"type":"error","error":{"type","message"}}` — Tollgate's stable `code` is appended to the
/// message so clients of either format can match on it.
pub fn error_body(e: &ApiError) -> Value {
    json!({
        "type": "error",
        "error": {
            "type": error_type(e),
            "message": format!("{} [{}]", e.message, e.code.as_str()),
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    /// A tool call, keyed by its canonical `tool_calls[].index`.
    Tool(u64),
}

/// Canonical chunks → Messages stream events, as `(event name, JSON data)` pairs.
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    started: bool,
    open: Option<Block>,
    next_index: u64,
    stop_reason: Option<String>,
}

impl StreamTranslator {
    pub fn new(model: &str) -> Self {
        StreamTranslator {
            model: model.to_string(),
            started: false,
            open: None,
            next_index: 0,
            stop_reason: None,
        }
    }

    fn start(&mut self, id: Option<&str>, out: &mut Vec<(&'static str, Value)>) {
        if self.started {
            return;
        }
        self.started = true;
        // Input usage is unknown until the upstream's final usage; the SDKs take the totals
        // from `message_delta`, which carries all of them.
        out.push((
            "message_start",
            json!({
                "type": "message_start",
                "message": {
                    "id": message_id(id), "type": "message", "role": "assistant",
                    "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                }
            }),
        ));
    }

    fn close(&mut self, out: &mut Vec<(&'static str, Value)>) {
        if self.open.take().is_some() {
            out.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": self.next_index - 1}),
            ));
        }
    }

    fn open(&mut self, block: Block, start: Value, out: &mut Vec<(&'static str, Value)>) {
        self.close(out);
        out.push((
            "content_block_start",
            json!({
                "type": "content_block_start", "index": self.next_index, "content_block": start,
            }),
        ));
        self.next_index += 1;
        self.open = Some(block);
    }

    fn current(&self) -> u64 {
        self.next_index.saturating_sub(1)
    }

    /// One canonical chunk.
    pub fn chunk(&mut self, raw: &[u8], out: &mut Vec<(&'static str, Value)>) {
        let Ok(v) = serde_json::from_slice::<Value>(raw) else {
            return;
        };
        self.start(v.get("id").and_then(Value::as_str), out);
        let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
            return; // the usage-only chunk: usage arrives through `finish`
        };
        let delta = choice.get("delta").cloned().unwrap_or(Value::Null);
        if let Some(t) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            if self.open != Some(Block::Text) {
                self.open(Block::Text, json!({"type": "text", "text": ""}), out);
            }
            out.push((
                "content_block_delta",
                json!({
                    "type": "content_block_delta", "index": self.current(),
                    "delta": {"type": "text_delta", "text": t},
                }),
            ));
        }
        for tc in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let idx = tc.get("index").and_then(Value::as_u64).unwrap_or(0);
            let f = tc.get("function").cloned().unwrap_or(Value::Null);
            if self.open != Some(Block::Tool(idx)) {
                self.open(Block::Tool(idx), json!({
                    "type": "tool_use",
                    "id": tc.get("id").cloned().unwrap_or_else(|| json!(format!("toolu_{idx}"))),
                    "name": f.get("name").cloned().unwrap_or(Value::Null),
                    "input": {},
                }), out);
            }
            if let Some(a) = f
                .get("arguments")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
            {
                out.push((
                    "content_block_delta",
                    json!({
                        "type": "content_block_delta", "index": self.current(),
                        "delta": {"type": "input_json_delta", "partial_json": a},
                    }),
                ));
            }
        }
        if let Some(fr) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop_reason = Some(stop_reason(Some(fr)).to_string());
        }
    }

    /// The stream is being ended at a token cap (the gateway's budget cut): report
    /// `stop_reason: "max_tokens"`, as if the model had hit `max_tokens`.
    pub fn stop_at_max_tokens(&mut self) {
        self.stop_reason = Some("max_tokens".to_string());
    }

    /// The upstream finished: close the open block, report the stop reason and usage, stop.
    pub fn finish(&mut self, usage: Option<&Usage>, out: &mut Vec<(&'static str, Value)>) {
        self.start(None, out);
        self.close(out);
        let usage = usage
            .map(usage_to_anthropic)
            .unwrap_or_else(|| json!({"output_tokens": 0}));
        out.push(("message_delta", json!({
            "type": "message_delta",
            "delta": {"stop_reason": self.stop_reason.as_deref().unwrap_or("end_turn"), "stop_sequence": null},
            "usage": usage,
        })));
        out.push(("message_stop", json!({"type": "message_stop"})));
    }

    /// The upstream failed mid-stream.
    pub fn error(&mut self, e: &ApiError, out: &mut Vec<(&'static str, Value)>) {
        out.push(("error", error_body(e)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(s: &str) -> Map<String, Value> {
        crate::parse_object(s.as_bytes()).unwrap()
    }

    #[test]
    fn validates_required_fields() {
        let e = MessagesRequest::parse(obj(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
        ))
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        let e = MessagesRequest::parse(obj(
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"x"}]}"#,
        ))
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages.0.role"));
        assert!(
            MessagesRequest::parse(obj(r#"{"model":"m","max_tokens":5,"messages":[]}"#)).is_err()
        );
    }

    #[test]
    fn translates_a_tool_round_trip_request() {
        let req = MessagesRequest::parse(obj(r#"{
            "model":"claude-sonnet-4-5","max_tokens":256,"system":[{"type":"text","text":"Be brief."}],
            "messages":[
              {"role":"user","content":"Weather in Paris?"},
              {"role":"assistant","content":[{"type":"text","text":"Let me check."},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}]},
              {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"18C"},{"type":"text","text":"thanks"}]}
            ],
            "tools":[{"name":"get_weather","description":"d","input_schema":{"type":"object"}}],
            "tool_choice":{"type":"any","disable_parallel_tool_use":true},
            "stop_sequences":["END"],"temperature":0.2,"metadata":{"user_id":"u-9"},"stream":true}"#)).unwrap();
        let c = Value::Object(to_canonical(&req).unwrap());
        assert_eq!(
            c["messages"][0],
            json!({"role":"system","content":"Be brief."})
        );
        assert_eq!(
            c["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(c["messages"][2]["content"], "Let me check.");
        assert_eq!(
            c["messages"][3],
            json!({"role":"tool","tool_call_id":"toolu_1","content":"18C"})
        );
        assert_eq!(c["messages"][4], json!({"role":"user","content":"thanks"}));
        assert_eq!(
            c["tools"][0]["function"]["parameters"],
            json!({"type":"object"})
        );
        assert_eq!(c["tool_choice"], "required");
        assert_eq!(c["parallel_tool_calls"], false);
        assert_eq!(c["stop"], json!(["END"]));
        assert_eq!(c["user"], "u-9");
        assert_eq!(c["max_tokens"], 256);
        assert_eq!(c["stream"], true);
    }

    #[test]
    fn translates_a_response_with_exclusive_cache_usage() {
        let body = br#"{"id":"chatcmpl-42","choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":"ok","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]}}]}"#;
        let usage = Usage {
            input_tokens: 100,
            cached_input_tokens: 60,
            cache_write_input_tokens: 10,
            output_tokens: 7,
            reasoning_tokens: 0,
        };
        let r = response_from_canonical(body, "claude-x", &usage).unwrap();
        assert_eq!(r["id"], "msg_42");
        assert_eq!(r["stop_reason"], "tool_use");
        assert_eq!(r["content"][1]["input"], json!({"a":1}));
        assert_eq!(
            r["usage"],
            json!({"input_tokens":30,"cache_creation_input_tokens":10,"cache_read_input_tokens":60,"output_tokens":7})
        );
    }

    #[test]
    fn stream_events_in_order() {
        let mut t = StreamTranslator::new("claude-x");
        let mut out = Vec::new();
        for c in [
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"Hi"}}]}"#,
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}}]}"#,
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]}}]}"#,
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_2","type":"function","function":{"name":"g","arguments":"{}"}}]}}]}"#,
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":5}}"#,
        ] {
            t.chunk(c.as_bytes(), &mut out);
        }
        let usage = Usage {
            input_tokens: 9,
            output_tokens: 5,
            ..Usage::default()
        };
        t.finish(Some(&usage), &mut out);
        let names: Vec<&str> = out.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        assert_eq!(out[4].1["content_block"]["name"], "f");
        assert_eq!(out[5].1["delta"]["partial_json"], "{\"a\":");
        assert_eq!(out[7].1["index"], 2);
        assert_eq!(out[10].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(out[10].1["usage"]["output_tokens"], 5);
    }
}
