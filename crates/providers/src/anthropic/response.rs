//! Anthropic Messages response → canonical (OpenAI Chat Completions) response, and Anthropic
//! usage → canonical [`Usage`].
//!
//! Wire format: Anthropic Messages API, `anthropic-version: 2023-06-01` (field names as in the
//! official SDK types `message.py`, `usage.py`, `stop_reason.py`).
//!
//! What this module owns:
//! - **Usage semantics.** Anthropic reports cache reads and writes *exclusively*:
//!   `input_tokens` counts only the uncached remainder of the prompt. Canonical usage is
//!   *inclusive* (OpenAI: `prompt_tokens` contains the cached tokens), so
//!   `input = input_tokens + cache_read_input_tokens + cache_creation_input_tokens`,
//!   `cached = cache_read_input_tokens`, `cache_write = cache_creation_input_tokens`,
//!   `output = output_tokens` (which already includes thinking tokens). Getting this wrong
//!   under-bills every cached request, so it lives in one place ([`WireUsage::to_usage`]).
//! - **Stop reasons** ([`finish_reason`]).
//! - **The response body**: text blocks → `message.content`, `tool_use` blocks →
//!   `message.tool_calls` (input re-serialised as the JSON-string `arguments` OpenAI clients
//!   parse), `thinking` blocks → `message.reasoning_content` (the DeepSeek/vLLM convention,
//!   which OpenAI SDKs ignore and Tollgate's metering counts as output), everything else
//!   (`redacted_thinking`, server-tool blocks, citations) dropped because the OpenAI format has
//!   nowhere to put it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tollgate_types::Usage;

/// Anthropic's `usage` object. Every field is optional because `message_delta` events carry
/// only the counts that changed, and because providers add and omit fields over time; `null`
/// is read as absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct WireUsage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
    /// TTL split of the cache writes; only used when the total above is missing.
    #[serde(default)]
    pub cache_creation: Option<CacheCreation>,
    #[serde(default)]
    pub output_tokens_details: Option<OutputDetails>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct CacheCreation {
    #[serde(default)]
    pub ephemeral_5m_input_tokens: Option<u64>,
    #[serde(default)]
    pub ephemeral_1h_input_tokens: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct OutputDetails {
    #[serde(default)]
    pub thinking_tokens: Option<u64>,
}

impl WireUsage {
    /// Folds in a later report. Streaming `message_delta` counts are **cumulative** (they
    /// replace, never add to, what `message_start` said), and only the fields present change.
    pub fn merge(&mut self, later: &WireUsage) {
        fn take(dst: &mut Option<u64>, src: Option<u64>) {
            if src.is_some() {
                *dst = src;
            }
        }
        take(&mut self.input_tokens, later.input_tokens);
        take(&mut self.output_tokens, later.output_tokens);
        take(
            &mut self.cache_creation_input_tokens,
            later.cache_creation_input_tokens,
        );
        take(
            &mut self.cache_read_input_tokens,
            later.cache_read_input_tokens,
        );
        if later.cache_creation.is_some() {
            self.cache_creation = later.cache_creation;
        }
        if later
            .output_tokens_details
            .is_some_and(|d| d.thinking_tokens.is_some())
        {
            self.output_tokens_details = later.output_tokens_details;
        }
    }

    fn cache_write(&self) -> u64 {
        match self.cache_creation_input_tokens {
            Some(n) => n,
            None => self.cache_creation.map_or(0, |c| {
                c.ephemeral_5m_input_tokens
                    .unwrap_or(0)
                    .saturating_add(c.ephemeral_1h_input_tokens.unwrap_or(0))
            }),
        }
    }

    /// Canonical (inclusive) usage. Saturating arithmetic: a hostile count can never panic.
    pub fn to_usage(&self) -> Usage {
        let cached = self.cache_read_input_tokens.unwrap_or(0);
        let cache_write = self.cache_write();
        Usage {
            input_tokens: self
                .input_tokens
                .unwrap_or(0)
                .saturating_add(cached)
                .saturating_add(cache_write),
            cached_input_tokens: cached,
            cache_write_input_tokens: cache_write,
            output_tokens: self.output_tokens.unwrap_or(0),
            reasoning_tokens: self
                .output_tokens_details
                .and_then(|d| d.thinking_tokens)
                .unwrap_or(0),
        }
    }
}

/// The OpenAI `usage` object for canonical usage: `prompt_tokens` inclusive of the cache,
/// `prompt_tokens_details.{cached_tokens, cache_write_tokens}`, and
/// `completion_tokens_details.reasoning_tokens` when the provider reported thinking tokens.
/// Tollgate's metering reads exactly these fields back (`WireUsage` in `tollgate-types`).
pub fn openai_usage(u: &Usage) -> Value {
    let mut m = Map::new();
    m.insert("prompt_tokens".into(), u.input_tokens.into());
    m.insert("completion_tokens".into(), u.output_tokens.into());
    m.insert("total_tokens".into(), u.total_tokens().into());
    m.insert(
        "prompt_tokens_details".into(),
        json!({
            "cached_tokens": u.cached_input_tokens,
            "cache_write_tokens": u.cache_write_input_tokens,
        }),
    );
    if u.reasoning_tokens > 0 {
        m.insert(
            "completion_tokens_details".into(),
            json!({ "reasoning_tokens": u.reasoning_tokens }),
        );
    }
    Value::Object(m)
}

/// OpenAI `finish_reason` for an Anthropic `stop_reason`.
///
/// `pause_turn` (a long server-tool turn paused by Anthropic) has no OpenAI equivalent; `stop`
/// is the closest honest answer. `model_context_window_exceeded` is a token limit, hence
/// `length`. Unknown future reasons and a missing reason read as `stop`.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn, anything newer, or none.
        _ => "stop",
    }
}

/// A non-streaming Messages response, only the parts that are translated.
#[derive(Debug, Deserialize)]
struct Message {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<Block>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

/// Output content blocks. Unknown types (server tools, redacted thinking, types added later)
/// are read as [`Block::Other`] and dropped, never a parse failure.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        #[serde(default)]
        text: String,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    ToolUse {
        #[serde(default)]
        id: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

/// Why a 200 body could not be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("response is not Anthropic Messages JSON: {0}")]
    NotJson(String),
    #[error("error body with a success status: {0}")]
    ErrorBody(String),
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: String,
}

/// `arguments` as OpenAI clients expect it: the input object as a JSON string. A missing input
/// is `{}` (a tool without parameters), matching what OpenAI sends for such calls.
pub(crate) fn arguments_of(input: &Value) -> String {
    match input {
        Value::Null => "{}".to_string(),
        v => v.to_string(),
    }
}

/// Translates a Messages response body into a `chat.completion` body and its usage.
/// `created` is supplied by the caller (Anthropic responses carry no timestamp).
pub fn to_chat_completion(
    body: &[u8],
    created: u64,
) -> Result<(Vec<u8>, Option<Usage>), ResponseError> {
    let msg: Message =
        serde_json::from_slice(body).map_err(|e| ResponseError::NotJson(e.to_string()))?;
    if msg.kind.as_deref() == Some("error") || msg.error.is_some() {
        let detail = msg
            .error
            .as_ref()
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("unspecified error");
        return Err(ResponseError::ErrorBody(detail.to_string()));
    }
    let mut text: Option<String> = None;
    let mut reasoning: Option<String> = None;
    let mut calls = Vec::new();
    for block in &msg.content {
        match block {
            Block::Text { text: t } => text.get_or_insert_with(String::new).push_str(t),
            Block::Thinking { thinking } => {
                reasoning.get_or_insert_with(String::new).push_str(thinking)
            }
            Block::ToolUse { id, name, input } => calls.push(ToolCallOut {
                id,
                kind: "function",
                function: FunctionOut {
                    name,
                    arguments: arguments_of(input),
                },
            }),
            Block::Other => {}
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    message.insert("content".into(), text.map_or(Value::Null, Value::String));
    if let Some(r) = reasoning {
        message.insert("reasoning_content".into(), Value::String(r));
    }
    if !calls.is_empty() {
        message.insert("tool_calls".into(), json!(calls));
    }
    message.insert("refusal".into(), Value::Null);

    let usage = msg.usage.as_ref().map(WireUsage::to_usage);
    let mut out = Map::new();
    out.insert("id".into(), Value::String(msg.id));
    out.insert("object".into(), "chat.completion".into());
    out.insert("created".into(), created.into());
    out.insert("model".into(), Value::String(msg.model));
    out.insert(
        "choices".into(),
        json!([{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(msg.stop_reason.as_deref()),
        }]),
    );
    if let Some(u) = &usage {
        out.insert("usage".into(), openai_usage(u));
    }
    let bytes = serde_json::to_vec(&Value::Object(out))
        .map_err(|e| ResponseError::NotJson(e.to_string()))?;
    Ok((bytes, usage))
}

/// Just the usage of a native Messages body (for [`crate::MessagesResponse::Complete`]).
pub fn usage_of_message(body: &[u8]) -> Result<Option<Usage>, ResponseError> {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(default)]
        usage: Option<WireUsage>,
    }
    let p: Peek =
        serde_json::from_slice(body).map_err(|e| ResponseError::NotJson(e.to_string()))?;
    Ok(p.usage.as_ref().map(WireUsage::to_usage))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stop_reason_table() {
        let table = [
            (Some("end_turn"), "stop"),
            (Some("stop_sequence"), "stop"),
            (Some("max_tokens"), "length"),
            (Some("model_context_window_exceeded"), "length"),
            (Some("tool_use"), "tool_calls"),
            (Some("refusal"), "content_filter"),
            (Some("pause_turn"), "stop"),
            (Some("something_new"), "stop"),
            (None, "stop"),
        ];
        for (reason, want) in table {
            assert_eq!(finish_reason(reason), want, "{reason:?}");
        }
    }

    #[test]
    fn exclusive_cache_semantics_become_inclusive() {
        let w: WireUsage = serde_json::from_str(
            r#"{"input_tokens":21,"output_tokens":40,"cache_creation_input_tokens":100,
                "cache_read_input_tokens":1800,"output_tokens_details":{"thinking_tokens":12}}"#,
        )
        .unwrap();
        let u = w.to_usage();
        assert_eq!(u.input_tokens, 1921);
        assert_eq!(u.cached_input_tokens, 1800);
        assert_eq!(u.cache_write_input_tokens, 100);
        assert_eq!(u.uncached_input_tokens(), 21);
        assert_eq!(u.output_tokens, 40);
        assert_eq!(u.reasoning_tokens, 12);
        let v = openai_usage(&u);
        assert_eq!(v["prompt_tokens"], 1921);
        assert_eq!(v["total_tokens"], 1961);
        assert_eq!(v["prompt_tokens_details"]["cached_tokens"], 1800);
        assert_eq!(v["prompt_tokens_details"]["cache_write_tokens"], 100);
        assert_eq!(v["completion_tokens_details"]["reasoning_tokens"], 12);
    }

    #[test]
    fn nulls_and_ttl_split() {
        let w: WireUsage = serde_json::from_str(
            r#"{"input_tokens":5,"output_tokens":1,"cache_creation_input_tokens":null,
                "cache_read_input_tokens":null,
                "cache_creation":{"ephemeral_5m_input_tokens":3,"ephemeral_1h_input_tokens":4}}"#,
        )
        .unwrap();
        let u = w.to_usage();
        assert_eq!((u.input_tokens, u.cache_write_input_tokens), (12, 7));
        assert!(openai_usage(&u).get("completion_tokens_details").is_none());
    }

    #[test]
    fn merge_is_cumulative_replacement() {
        let mut a: WireUsage = serde_json::from_str(
            r#"{"input_tokens":21,"cache_read_input_tokens":7,"output_tokens":1}"#,
        )
        .unwrap();
        a.merge(&serde_json::from_str(r#"{"output_tokens":40}"#).unwrap());
        a.merge(&serde_json::from_str(r#"{"output_tokens":55,"input_tokens":null}"#).unwrap());
        assert_eq!(a.input_tokens, Some(21));
        assert_eq!(a.output_tokens, Some(55));
        assert_eq!(a.cache_read_input_tokens, Some(7));
    }

    #[test]
    fn error_body_with_200_is_an_error() {
        let e = to_chat_completion(
            br#"{"type":"error","error":{"type":"api_error","message":"boom"}}"#,
            0,
        )
        .unwrap_err();
        assert_eq!(e, ResponseError::ErrorBody("boom".into()));
        assert!(to_chat_completion(b"not json", 0).is_err());
    }

    #[test]
    fn unknown_blocks_are_dropped_and_empty_content_is_null() {
        let (body, usage) = to_chat_completion(
            br#"{"id":"msg_1","type":"message","model":"m","content":[{"type":"redacted_thinking","data":"x"},{"type":"server_tool_use","id":"s","name":"web_search","input":{}}],"stop_reason":"end_turn"}"#,
            7,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
        assert!(v["choices"][0]["message"].get("tool_calls").is_none());
        assert_eq!(v["created"], 7);
        assert!(usage.is_none());
        assert!(v.get("usage").is_none());
    }

    proptest! {
        /// Whatever Anthropic reports, canonical input covers cache reads and writes, the
        /// uncached remainder is exactly Anthropic's `input_tokens`, and nothing panics.
        #[test]
        fn usage_invariants(
            input in proptest::option::of(any::<u64>()),
            output in proptest::option::of(any::<u64>()),
            read in proptest::option::of(any::<u64>()),
            write in proptest::option::of(any::<u64>()),
        ) {
            let w = WireUsage {
                input_tokens: input,
                output_tokens: output,
                cache_read_input_tokens: read,
                cache_creation_input_tokens: write,
                ..WireUsage::default()
            };
            let u = w.to_usage();
            prop_assert!(u.input_tokens >= u.cached_input_tokens.saturating_add(u.cache_write_input_tokens));
            prop_assert_eq!(u.cached_input_tokens, read.unwrap_or(0));
            prop_assert_eq!(u.cache_write_input_tokens, write.unwrap_or(0));
            prop_assert_eq!(u.output_tokens, output.unwrap_or(0));
            let small = |x: Option<u64>| x.unwrap_or(0) < u64::MAX / 4;
            if small(input) && small(read) && small(write) {
                prop_assert_eq!(u.uncached_input_tokens(), input.unwrap_or(0));
                prop_assert_eq!(u.input_tokens, input.unwrap_or(0) + read.unwrap_or(0) + write.unwrap_or(0));
            }
        }
    }
}
