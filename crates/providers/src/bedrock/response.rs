//! Bedrock `ConverseResponse` → canonical OpenAI `chat.completion`, and the pieces the stream
//! translator shares with it: stop-reason mapping, usage normalisation, response identity.
//!
//! | Converse | canonical |
//! |---|---|
//! | `output.message.content[].text` | `choices[0].message.content` (concatenated) |
//! | `content[].toolUse{toolUseId, name, input}` | `message.tool_calls[{id, type:"function", function:{name, arguments: JSON text}}]` |
//! | forced [`JSON_TOOL`] `toolUse.input` | `message.content` (the JSON text), `finish_reason: "stop"` |
//! | `stopReason` | `finish_reason`, see [`finish_reason`] |
//! | `usage` | `usage` with inclusive prompt tokens, see [`convert_usage`] |
//!
//! Reasoning blocks (`reasoningContent`) are not exposed: the OpenAI Chat format has no place
//! for reasoning text, and their tokens are already in `outputTokens`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tollgate_types::Usage;

use super::request::JSON_TOOL;

/// Converse `TokenUsage`. Per the Bedrock prompt-caching guide `inputTokens` counts only the
/// input that was neither read from nor written to the cache.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_write_input_tokens: Option<u64>,
}

/// Exclusive Bedrock counts → canonical inclusive [`Usage`] and the OpenAI `usage` object:
/// `prompt_tokens = inputTokens + cacheReadInputTokens + cacheWriteInputTokens`,
/// `cached_tokens = cacheReadInputTokens`, `cache_write_tokens = cacheWriteInputTokens`,
/// `completion_tokens = outputTokens`. `total_tokens` is recomputed from these rather than
/// copied from `totalTokens`, so the object is consistent whatever Bedrock counted there.
pub fn convert_usage(u: &TokenUsage) -> (Usage, WireUsageOut) {
    let cached = u.cache_read_input_tokens.unwrap_or(0);
    let cache_write = u.cache_write_input_tokens.unwrap_or(0);
    let input = u
        .input_tokens
        .saturating_add(cached)
        .saturating_add(cache_write);
    let usage = Usage {
        input_tokens: input,
        cached_input_tokens: cached,
        cache_write_input_tokens: cache_write,
        output_tokens: u.output_tokens,
        reasoning_tokens: 0,
    };
    let wire = WireUsageOut {
        prompt_tokens: input,
        completion_tokens: u.output_tokens,
        total_tokens: input.saturating_add(u.output_tokens),
        prompt_tokens_details: PromptDetailsOut {
            cached_tokens: cached,
            cache_write_tokens: cache_write,
        },
    };
    (usage, wire)
}

/// The OpenAI `usage` object as sent to clients.
#[derive(Debug, Serialize)]
pub struct WireUsageOut {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub prompt_tokens_details: PromptDetailsOut,
}

#[derive(Debug, Serialize)]
pub struct PromptDetailsOut {
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
}

/// `stopReason` → `finish_reason`. `tool_use` means `tool_calls` unless the tool was the forced
/// JSON tool, whose call *is* the answer. Malformed-output reasons map to `stop` (the OpenAI
/// format has no better fit), unknown future reasons too.
pub fn finish_reason(stop_reason: &str, json_tool: bool) -> &'static str {
    match stop_reason {
        "end_turn" | "stop_sequence" => "stop",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" if json_tool => "stop",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop",
    }
}

/// What identifies one canonical response: Converse has no response id or timestamp, so the
/// adapter derives the id from Bedrock's request id and takes `created` from its clock.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: String,
    pub created: u64,
    pub model: String,
}

#[derive(Deserialize)]
struct ConverseResponse {
    #[serde(default)]
    output: Option<Output>,
    #[serde(default, rename = "stopReason")]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<TokenUsage>,
}

#[derive(Deserialize)]
struct Output {
    #[serde(default)]
    message: Option<OutMessage>,
}

#[derive(Deserialize)]
struct OutMessage {
    #[serde(default)]
    content: Vec<OutBlock>,
}

/// A response `ContentBlock`; members other than text and toolUse are ignored.
#[derive(Deserialize)]
struct OutBlock {
    #[serde(default)]
    text: Option<String>,
    #[serde(default, rename = "toolUse")]
    tool_use: Option<OutToolUse>,
}

#[derive(Deserialize)]
struct OutToolUse {
    #[serde(rename = "toolUseId")]
    tool_use_id: String,
    name: String,
    #[serde(default)]
    input: Value,
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<WireUsageOut>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: MessageOut<'a>,
    finish_reason: &'static str,
    logprobs: Option<()>,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: Option<String>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
}

#[derive(Serialize)]
pub struct ToolCallOut<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionOut<'a>,
}

#[derive(Serialize)]
pub struct FunctionOut<'a> {
    pub name: &'a str,
    pub arguments: String,
}

/// Translates a Converse response body. Returns the canonical body and its usage (`None` when
/// Bedrock reported none, so the gateway estimates instead of billing zero).
pub fn translate(
    body: &[u8],
    identity: &Identity,
    json_tool: bool,
) -> Result<(Vec<u8>, Option<Usage>), String> {
    let resp: ConverseResponse =
        serde_json::from_slice(body).map_err(|e| format!("response is not Converse JSON: {e}"))?;
    let blocks = resp
        .output
        .and_then(|o| o.message)
        .map(|m| m.content)
        .unwrap_or_default();
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for b in &blocks {
        if let Some(t) = &b.text {
            text.get_or_insert_with(String::new).push_str(t);
        }
        if let Some(tu) = &b.tool_use {
            let arguments = tu.input.to_string();
            if json_tool && tu.name == JSON_TOOL {
                text.get_or_insert_with(String::new).push_str(&arguments);
            } else {
                tool_calls.push(ToolCallOut {
                    id: &tu.tool_use_id,
                    kind: "function",
                    function: FunctionOut {
                        name: &tu.name,
                        arguments,
                    },
                });
            }
        }
    }
    let (usage, wire) = match &resp.usage {
        Some(u) => {
            let (usage, wire) = convert_usage(u);
            (Some(usage), Some(wire))
        }
        None => (None, None),
    };
    let out = Completion {
        id: &identity.id,
        object: "chat.completion",
        created: identity.created,
        model: &identity.model,
        choices: [Choice {
            index: 0,
            message: MessageOut {
                role: "assistant",
                content: text,
                refusal: None,
                tool_calls,
            },
            finish_reason: finish_reason(resp.stop_reason.as_deref().unwrap_or(""), json_tool),
            logprobs: None,
        }],
        usage: wire,
    };
    let body = serde_json::to_vec(&out).map_err(|e| format!("encode response: {e}"))?;
    Ok((body, usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity {
            id: "chatcmpl-1".into(),
            created: 7,
            model: "m".into(),
        }
    }

    #[test]
    fn usage_is_made_inclusive() {
        let (u, w) = convert_usage(&TokenUsage {
            input_tokens: 30,
            output_tokens: 8,
            cache_read_input_tokens: Some(1800),
            cache_write_input_tokens: Some(12),
        });
        assert_eq!(
            (
                u.input_tokens,
                u.cached_input_tokens,
                u.cache_write_input_tokens
            ),
            (1842, 1800, 12)
        );
        assert_eq!(u.uncached_input_tokens(), 30);
        assert_eq!((w.prompt_tokens, w.total_tokens), (1842, 1850));
    }

    #[test]
    fn stop_reasons() {
        for (s, j, want) in [
            ("end_turn", false, "stop"),
            ("stop_sequence", false, "stop"),
            ("max_tokens", false, "length"),
            ("model_context_window_exceeded", false, "length"),
            ("tool_use", false, "tool_calls"),
            ("tool_use", true, "stop"),
            ("guardrail_intervened", false, "content_filter"),
            ("content_filtered", false, "content_filter"),
            ("malformed_tool_use", false, "stop"),
            ("something_new", false, "stop"),
        ] {
            assert_eq!(finish_reason(s, j), want, "{s}");
        }
    }

    #[test]
    fn json_tool_input_becomes_content() {
        let body = br#"{"output":{"message":{"role":"assistant","content":[{"toolUse":{"toolUseId":"t","name":"json_response","input":{"a":1}}}]}},"stopReason":"tool_use","usage":{"inputTokens":1,"outputTokens":2,"totalTokens":3},"metrics":{"latencyMs":1}}"#;
        let (out, usage) = translate(body, &id(), true).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], r#"{"a":1}"#);
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert!(v["choices"][0]["message"].get("tool_calls").is_none());
        assert_eq!(usage.unwrap().output_tokens, 2);
    }

    #[test]
    fn bad_json_is_an_error_and_missing_usage_is_none() {
        assert!(translate(b"not json", &id(), false).is_err());
        let (out, usage) = translate(br#"{"stopReason":"end_turn"}"#, &id(), false).unwrap();
        assert!(usage.is_none());
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
    }
}
