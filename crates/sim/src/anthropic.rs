//! The Anthropic Messages wire format: `POST /v1/messages` (plain and streamed) and
//! `POST /v1/messages/count_tokens`, with Anthropic's headers, validation errors, usage
//! semantics and SSE event stream (§3 of the wire-format reference).
//!
//! - **Headers**: `anthropic-version` is required (400 when missing). It must be one date,
//!   `YYYY-MM-DD` (the published `2023-06-01`, or the later dates newer SDKs send); a
//!   duplicated header — which arrives as `2023-06-01, 2023-06-01` — is refused like the real
//!   API refuses it. With the
//!   `api_key` knob set, `x-api-key` must carry it (401 `authentication_error`; a Bearer token
//!   is not accepted).
//! - **Validation** rejects what the real API rejects, with its `field.path: message` style:
//!   unknown top-level fields, missing `model`/`max_tokens`/`messages`, an empty
//!   conversation, a `system` role inside `messages`, roles other than user/assistant, a
//!   conversation not starting with `user` or not alternating, empty content (except a final
//!   assistant prefill), a final assistant prefill ending in whitespace, unknown content block
//!   types, `tool_use` in user turns / `tool_result` in assistant turns, `tool_use` blocks not
//!   answered by `tool_result` blocks in the next message and `tool_result` blocks answering
//!   nothing, `temperature`/`top_p` outside 0–1, malformed or duplicate tools, a `tool_choice`
//!   without tools or naming an unknown tool, bad `thinking` budgets.
//! - **Answers** come from [`crate::plan`]: a text block, or `tool_use` blocks when tools are
//!   offered and the last turn is the user asking (a user turn carrying `tool_result` blocks
//!   gets a text answer). `tool_choice` `any`/`tool`/`none` and `disable_parallel_tool_use`
//!   are honoured; `output_config.format` (`json_schema`) gives a JSON text answer;
//!   `stop_sequences` end the text before the match (`stop_reason: stop_sequence`).
//! - **Usage**: the prompt is `count_chat_prompt` of the body (messages and tools) plus
//!   `count_content` of `system`, with the model's encoding (`o200k_base` for Claude models);
//!   `output_tokens` is the token count of the generated text or tool input JSON. Anthropic's
//!   `input_tokens` *excludes* cache reads: with the `cached_prompt_tokens` knob (or what the
//!   `prompt_cache` knob finds cached: tools, then system, then messages), that many
//!   prompt tokens are reported as `cache_read_input_tokens` and subtracted from
//!   `input_tokens` (`cache_creation_input_tokens` is always 0).
//! - **Streams**: `message_start` (input-side usage final, `output_tokens: 1`), per block
//!   `content_block_start` → `content_block_delta` (`text_delta` / `input_json_delta`
//!   fragments) → `content_block_stop`, one `ping` after the first block starts,
//!   `message_delta` (stop reason, *cumulative* `output_tokens` equal to the total), then
//!   `message_stop`. A cut stream stops before `message_delta`: no stop reason, no
//!   `message_stop`.
//! - **Errors**: `{"type":"error","error":{"type","message"}}`; injected failures use the
//!   type of their status (529 → `overloaded_error`, 429 → `rate_limit_error`, 5xx →
//!   `api_error`).

use std::borrow::Cow;
use std::collections::HashSet;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value};
use tollgate_tokens::{count_chat_message, count_chat_prompt, count_content};

use crate::config::SimConfig;
use crate::content::Fnv1a;
use crate::error::AnthropicError;
use crate::http::{SSE, SimBody, json_response};
use crate::plan::{
    Ask, ChoiceBody, ChoicePlan, Finish, PromptUsage, REPLY_PRIMING, ResponseFormat, ToolChoice,
    ToolDef, content_text, encoding_for, group_ranges, plan_answers,
};
use crate::prompt_cache::{PromptPrefixes, messages_of};
use crate::router::{Ctx, Failure, Refusal, next_id};

/// `anthropic-version` values the API accepts.
/// A version is one date, `YYYY-MM-DD`, from the first published one on. Newer SDKs send later
/// dates than the reference's `2023-06-01`.
fn is_version(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
        && v >= "2023-01-01"
}
/// Prefix of tool-use ids.
const TOOL_ID_PREFIX: &str = "toolu_";
/// Longest tool name (`^[a-zA-Z0-9_-]{1,64}$`).
const MAX_TOOL_NAME: usize = 64;
/// Smallest extended-thinking budget.
const MIN_THINKING_BUDGET: u64 = 1024;

/// Top-level request fields the API knows; anything else is "Extra inputs are not
/// permitted" (which catches OpenAI fields such as `n` or `stream_options` leaking through a
/// translation).
const FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "messages",
    "system",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "stream",
    "tools",
    "tool_choice",
    "thinking",
    "metadata",
    "service_tier",
    "output_config",
    "cache_control",
    "container",
    "context_management",
    "inference_geo",
    "mcp_servers",
];

/// Content block types accepted in input messages.
const BLOCK_TYPES: &[&str] = &[
    "text",
    "image",
    "document",
    "search_result",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "container_upload",
];

// ---------------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------------

/// Auth (`x-api-key`, when a key is configured) and the required `anthropic-version`.
pub(crate) fn check_headers(cfg: &SimConfig, headers: &HeaderMap) -> Result<(), AnthropicError> {
    if let Some(key) = cfg.api_key.as_deref() {
        // A plain comparison: a test double holding a throwaway key.
        let sent = headers.get("x-api-key").and_then(|v| v.to_str().ok());
        if sent != Some(key) {
            return Err(AnthropicError::authentication());
        }
    }
    // Repeated headers reach the API joined by ", ", which is not a valid version.
    let mut version = String::new();
    for v in headers.get_all("anthropic-version") {
        if !version.is_empty() {
            version.push_str(", ");
        }
        version.push_str(&String::from_utf8_lossy(v.as_bytes()));
    }
    if version.is_empty() {
        return Err(AnthropicError::invalid(
            "anthropic-version: header is required",
        ));
    }
    if !is_version(&version) {
        return Err(AnthropicError::invalid(format!(
            "anthropic-version: {version:?} is not a valid version"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Request parsing and validation
// ---------------------------------------------------------------------------------------------

/// A validated Messages request.
#[derive(Debug)]
struct MessagesRequest<'a> {
    model: &'a str,
    stream: bool,
    ask: Ask<'a>,
}

fn invalid(msg: impl Into<String>) -> AnthropicError {
    AnthropicError::invalid(msg)
}

fn required(path: &str) -> AnthropicError {
    invalid(format!("{path}: Field required"))
}

/// An optional number within `[0, 1]` (temperature, top_p).
fn unit_interval(obj: &Map<String, Value>, key: &str) -> Result<Option<f64>, AnthropicError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let v = n.as_f64().unwrap_or(f64::NAN);
            if v < 0.0 {
                Err(invalid(format!(
                    "{key}: Input should be greater than or equal to 0"
                )))
            } else if v > 1.0 || v.is_nan() {
                Err(invalid(format!(
                    "{key}: Input should be less than or equal to 1"
                )))
            } else {
                Ok(Some(v))
            }
        }
        Some(_) => Err(invalid(format!("{key}: Input should be a valid number"))),
    }
}

/// An optional non-negative integer.
fn opt_uint(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<u64>, AnthropicError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Ok(Some(u)),
            (None, Some(_)) => Err(invalid(format!(
                "{path}: Input should be greater than or equal to 0"
            ))),
            _ => Err(invalid(format!("{path}: Input should be a valid integer"))),
        },
        Some(_) => Err(invalid(format!("{path}: Input should be a valid integer"))),
    }
}

/// Validates the body. `count_only` is `/v1/messages/count_tokens`, which takes no
/// `max_tokens`.
fn parse(body: &Value, count_only: bool) -> Result<MessagesRequest<'_>, AnthropicError> {
    let Some(obj) = body.as_object() else {
        return Err(invalid("Input should be a valid dictionary"));
    };
    if let Some(extra) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(invalid(format!("{extra}: Extra inputs are not permitted")));
    }
    let model = match obj.get("model") {
        None | Some(Value::Null) => return Err(required("model")),
        Some(Value::String(s)) if s.is_empty() => {
            return Err(invalid("model: String should have at least 1 character"));
        }
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(invalid("model: Input should be a valid string")),
    };
    let max_tokens = opt_uint(obj, "max_tokens", "max_tokens")?;
    if max_tokens.is_none() && !count_only {
        return Err(required("max_tokens"));
    }
    let messages = match obj.get("messages") {
        None | Some(Value::Null) => return Err(required("messages")),
        Some(Value::Array(m)) => m.as_slice(),
        Some(_) => return Err(invalid("messages: Input should be a valid list")),
    };
    if messages.is_empty() {
        return Err(invalid("messages: at least one message is required"));
    }
    validate_messages(messages)?;
    let system = obj.get("system").filter(|v| !v.is_null());
    if let Some(system) = system {
        validate_system(system)?;
    }

    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("stream: Input should be a valid boolean")),
    };
    let temperature = unit_interval(obj, "temperature")?;
    unit_interval(obj, "top_p")?;
    opt_uint(obj, "top_k", "top_k")?;
    let stop = parse_stop(obj)?;
    if let Some(meta) = obj.get("metadata").filter(|v| !v.is_null())
        && !meta.is_object()
    {
        return Err(invalid("metadata: Input should be a valid dictionary"));
    }
    validate_thinking(obj, max_tokens, temperature)?;
    let tools = parse_tools(obj)?;
    let (tool_choice, parallel_tool_calls) = parse_tool_choice(obj, &tools)?;
    let format = parse_output_format(obj)?;

    let seed = {
        let mut h = Fnv1a::default();
        if let Some(s) = system {
            h.write_json(s);
        }
        for m in messages {
            h.write_json(m);
        }
        h.finish()
    };
    // Tools are called in reply to the user asking; a user turn carrying tool results gets a
    // text answer.
    let user_turn = messages
        .last()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .filter(|m| !blocks(m).any(|b| block_type(b) == Some("tool_result")))
        .map(|m| content_text(m.get("content")));
    let ask = Ask {
        enc: encoding_for(model),
        seed,
        n: 1,
        max_tokens,
        tools,
        tool_choice,
        parallel_tool_calls,
        format,
        stop,
        user_turn,
    };
    Ok(MessagesRequest { model, stream, ask })
}

fn block_type(b: &Value) -> Option<&str> {
    b.get("type").and_then(Value::as_str)
}

/// The content blocks of a message (none when `content` is a string).
fn blocks(m: &Value) -> impl Iterator<Item = &Value> {
    m.get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Tool-use ids in an assistant message.
fn tool_use_ids(m: &Value) -> Vec<&str> {
    blocks(m)
        .filter(|b| block_type(b) == Some("tool_use"))
        .filter_map(|b| b.get("id").and_then(Value::as_str))
        .collect()
}

fn validate_messages(messages: &[Value]) -> Result<(), AnthropicError> {
    let last = messages.len() - 1;
    let mut prev_role: Option<&str> = None;
    for (i, m) in messages.iter().enumerate() {
        let Some(obj) = m.as_object() else {
            return Err(invalid(format!(
                "messages.{i}: Input should be a valid dictionary"
            )));
        };
        let role = match obj.get("role") {
            None | Some(Value::Null) => return Err(required(&format!("messages.{i}.role"))),
            Some(Value::String(r)) => r.as_str(),
            Some(_) => {
                return Err(invalid(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant'"
                )));
            }
        };
        match role {
            "user" | "assistant" => {}
            "system" => {
                return Err(invalid(
                    "messages: Unexpected role \"system\". The Messages API accepts a \
                     top-level `system` parameter, not \"system\" as an input message role.",
                ));
            }
            _ => {
                return Err(invalid(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant'"
                )));
            }
        }
        if i == 0 && role != "user" {
            return Err(invalid(
                "messages: first message must use the \"user\" role",
            ));
        }
        if prev_role == Some(role) {
            return Err(invalid(format!(
                "messages: roles must alternate between \"user\" and \"assistant\", but found \
                 multiple \"{role}\" roles in a row"
            )));
        }
        prev_role = Some(role);

        // Built only on failure: the request path does not pay for error text.
        let non_empty = || {
            invalid(format!(
                "messages.{i}: all messages must have non-empty content except for the \
                 optional final assistant message"
            ))
        };
        let final_prefill = i == last && role == "assistant";
        match obj.get("content") {
            None | Some(Value::Null) => return Err(required(&format!("messages.{i}.content"))),
            Some(Value::String(s)) => {
                if s.is_empty() && !final_prefill {
                    return Err(non_empty());
                }
                if final_prefill && s.ends_with(char::is_whitespace) {
                    return Err(invalid(
                        "messages: final assistant content cannot end with trailing whitespace",
                    ));
                }
            }
            Some(Value::Array(items)) => {
                if items.is_empty() && !final_prefill {
                    return Err(non_empty());
                }
                for (j, b) in items.iter().enumerate() {
                    validate_block(b, i, j, role)?;
                }
                if final_prefill
                    && let Some(t) = items
                        .last()
                        .filter(|b| block_type(b) == Some("text"))
                        .and_then(|b| b.get("text"))
                        .and_then(Value::as_str)
                    && t.ends_with(char::is_whitespace)
                {
                    return Err(invalid(
                        "messages: final assistant content cannot end with trailing whitespace",
                    ));
                }
            }
            Some(_) => {
                return Err(invalid(format!(
                    "messages.{i}.content: Input should be a valid string or a valid list"
                )));
            }
        }

        // Tool pairing: every tool_use is answered by a tool_result in the next message, and
        // every tool_result answers a tool_use of the previous one.
        if role == "user" {
            let previous: Vec<&str> = match i.checked_sub(1) {
                Some(p) => tool_use_ids(&messages[p]),
                None => Vec::new(),
            };
            for (j, b) in blocks(m).enumerate() {
                if block_type(b) != Some("tool_result") {
                    continue;
                }
                let id = b.get("tool_use_id").and_then(Value::as_str).unwrap_or("");
                if !previous.contains(&id) {
                    return Err(invalid(format!(
                        "messages.{i}.content.{j}: unexpected `tool_use_id` found in \
                         `tool_result` blocks: {id}. Each `tool_result` block must have a \
                         corresponding `tool_use` block in the previous message."
                    )));
                }
            }
        } else if i < last {
            let ids = tool_use_ids(m);
            let answered: Vec<&str> = blocks(&messages[i + 1])
                .filter(|b| block_type(b) == Some("tool_result"))
                .filter_map(|b| b.get("tool_use_id").and_then(Value::as_str))
                .collect();
            let missing: Vec<&str> = ids
                .iter()
                .copied()
                .filter(|id| !answered.contains(id))
                .collect();
            if !missing.is_empty() {
                return Err(invalid(format!(
                    "messages.{}: `tool_use` ids were found without `tool_result` blocks \
                     immediately after: {}. Each `tool_use` block must have a corresponding \
                     `tool_result` block in the next message.",
                    i + 1,
                    missing.join(", ")
                )));
            }
        }
    }
    Ok(())
}

fn validate_block(b: &Value, i: usize, j: usize, role: &str) -> Result<(), AnthropicError> {
    let path = BlockPath(i, j);
    let Some(obj) = b.as_object() else {
        return Err(invalid(format!(
            "{path}: Input should be a valid dictionary"
        )));
    };
    let ty = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        _ => {
            return Err(invalid(format!(
                "{path}: Unable to extract tag using discriminator 'type'"
            )));
        }
    };
    if !BLOCK_TYPES.contains(&ty) {
        return Err(invalid(format!(
            "{path}: Input tag '{ty}' found using 'type' does not match any of the expected \
             tags: {}",
            BLOCK_TYPES.join(", ")
        )));
    }
    match ty {
        "text" => match obj.get("text") {
            Some(Value::String(s)) if s.is_empty() => {
                Err(invalid("messages: text content blocks must be non-empty"))
            }
            Some(Value::String(_)) => Ok(()),
            None | Some(Value::Null) => Err(required(&format!("{path}.text"))),
            Some(_) => Err(invalid(format!(
                "{path}.text: Input should be a valid string"
            ))),
        },
        "tool_use" => {
            if role != "assistant" {
                return Err(invalid(format!(
                    "{path}: `tool_use` blocks can only be in `assistant` messages"
                )));
            }
            for key in ["id", "name"] {
                if !obj.get(key).is_some_and(Value::is_string) {
                    return Err(required(&format!("{path}.{key}")));
                }
            }
            if !obj.get("input").is_some_and(Value::is_object) {
                return Err(invalid(format!(
                    "{path}.input: Input should be a valid dictionary"
                )));
            }
            Ok(())
        }
        "tool_result" => {
            if role != "user" {
                return Err(invalid(format!(
                    "{path}: `tool_result` blocks can only be in `user` messages"
                )));
            }
            if !obj.get("tool_use_id").is_some_and(Value::is_string) {
                return Err(required(&format!("{path}.tool_use_id")));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `messages.{i}.content.{j}`, formatted only when an error needs it.
#[derive(Clone, Copy)]
struct BlockPath(usize, usize);

impl std::fmt::Display for BlockPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "messages.{}.content.{}", self.0, self.1)
    }
}

fn validate_system(system: &Value) -> Result<(), AnthropicError> {
    match system {
        Value::String(_) => Ok(()),
        Value::Array(items) => {
            for (i, b) in items.iter().enumerate() {
                if block_type(b) != Some("text") {
                    return Err(invalid(format!("system.{i}.type: Input should be 'text'")));
                }
                if !b.get("text").is_some_and(Value::is_string) {
                    return Err(required(&format!("system.{i}.text")));
                }
            }
            Ok(())
        }
        _ => Err(invalid(
            "system: Input should be a valid string or a valid list",
        )),
    }
}

fn parse_stop(obj: &Map<String, Value>) -> Result<Vec<&str>, AnthropicError> {
    match obj.get("stop_sequences") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, s)| match s.as_str() {
                Some(s) if s.trim().is_empty() => Err(invalid(
                    "stop_sequences: each stop sequence must contain non-whitespace",
                )),
                Some(s) => Ok(s),
                None => Err(invalid(format!(
                    "stop_sequences.{i}: Input should be a valid string"
                ))),
            })
            .collect(),
        Some(_) => Err(invalid("stop_sequences: Input should be a valid list")),
    }
}

fn validate_thinking(
    obj: &Map<String, Value>,
    max_tokens: Option<u64>,
    temperature: Option<f64>,
) -> Result<(), AnthropicError> {
    let Some(thinking) = obj.get("thinking").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let Some(t) = thinking.as_object() else {
        return Err(invalid("thinking: Input should be a valid dictionary"));
    };
    match t.get("type").and_then(Value::as_str) {
        Some("enabled") => {
            let Some(budget) = opt_uint(t, "budget_tokens", "thinking.enabled.budget_tokens")?
            else {
                return Err(required("thinking.enabled.budget_tokens"));
            };
            if budget < MIN_THINKING_BUDGET {
                return Err(invalid(format!(
                    "thinking.enabled.budget_tokens: Input should be greater than or equal to \
                     {MIN_THINKING_BUDGET}"
                )));
            }
            if max_tokens.is_some_and(|m| m <= budget) {
                return Err(invalid(
                    "`max_tokens` must be greater than `thinking.budget_tokens`",
                ));
            }
            if temperature.is_some_and(|t| t != 1.0) {
                return Err(invalid(
                    "`temperature` may only be set to 1 when thinking is enabled",
                ));
            }
            Ok(())
        }
        Some("disabled") | Some("adaptive") => Ok(()),
        _ => Err(invalid(
            "thinking: Input tag found using 'type' does not match any of the expected tags: \
             'enabled', 'disabled', 'adaptive'",
        )),
    }
}

fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOOL_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn parse_tools(obj: &Map<String, Value>) -> Result<Vec<ToolDef<'_>>, AnthropicError> {
    let list = match obj.get("tools") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(t)) => t,
        Some(_) => return Err(invalid("tools: Input should be a valid list")),
    };
    let mut tools = Vec::with_capacity(list.len());
    let mut names = HashSet::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let Some(t) = t.as_object() else {
            return Err(invalid(format!(
                "tools.{i}: Input should be a valid dictionary"
            )));
        };
        let ty = t.get("type").and_then(Value::as_str);
        let name = match t.get("name") {
            Some(Value::String(n)) => n.as_str(),
            None | Some(Value::Null) => return Err(required(&format!("tools.{i}.name"))),
            Some(_) => {
                return Err(invalid(format!(
                    "tools.{i}.name: Input should be a valid string"
                )));
            }
        };
        if !names.insert(name) {
            return Err(invalid("tools: Tool names must be unique."));
        }
        if !matches!(ty, None | Some("custom")) {
            // A server tool (`web_search_20250305`, `bash_20250124`, …): accepted, never
            // called by the simulator.
            continue;
        }
        if !valid_tool_name(name) {
            return Err(invalid(format!(
                "tools.{i}.custom.name: String should match pattern \
                 '^[a-zA-Z0-9_-]{{1,{MAX_TOOL_NAME}}}$'"
            )));
        }
        let Some(schema) = t.get("input_schema").filter(|s| !s.is_null()) else {
            return Err(required(&format!("tools.{i}.custom.input_schema")));
        };
        if schema.get("type").and_then(Value::as_str) != Some("object") {
            return Err(invalid(format!(
                "tools.{i}.custom.input_schema.type: Input should be 'object'"
            )));
        }
        tools.push(ToolDef {
            name,
            parameters: Some(schema),
        });
    }
    Ok(tools)
}

/// `tool_choice` and whether parallel tool use is allowed.
fn parse_tool_choice<'a>(
    obj: &'a Map<String, Value>,
    tools: &[ToolDef<'a>],
) -> Result<(ToolChoice<'a>, bool), AnthropicError> {
    let Some(tc) = obj.get("tool_choice").filter(|v| !v.is_null()) else {
        return Ok((ToolChoice::Auto, true));
    };
    let has_tools = obj
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    if !has_tools {
        return Err(invalid(
            "tool_choice: tool_choice may only be specified while providing tools",
        ));
    }
    let Some(tc) = tc.as_object() else {
        return Err(invalid("tool_choice: Input should be a valid dictionary"));
    };
    let parallel = match tc.get("disable_parallel_tool_use") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => !b,
        Some(_) => {
            return Err(invalid(
                "tool_choice.disable_parallel_tool_use: Input should be a valid boolean",
            ));
        }
    };
    let choice = match tc.get("type").and_then(Value::as_str) {
        Some("auto") => ToolChoice::Auto,
        Some("any") => ToolChoice::Required,
        Some("none") => ToolChoice::None,
        Some("tool") => {
            let Some(name) = tc.get("name").and_then(Value::as_str) else {
                return Err(required("tool_choice.tool.name"));
            };
            if !tools.iter().any(|t| t.name == name) {
                return Err(invalid(format!(
                    "tool_choice: Tool '{name}' not found in tools"
                )));
            }
            ToolChoice::Named(name)
        }
        _ => {
            return Err(invalid(
                "tool_choice: Input tag found using 'type' does not match any of the expected \
                 tags: 'auto', 'any', 'tool', 'none'",
            ));
        }
    };
    Ok((choice, parallel))
}

/// `output_config.format: {type: "json_schema", schema}` → a JSON answer.
fn parse_output_format(obj: &Map<String, Value>) -> Result<ResponseFormat<'_>, AnthropicError> {
    let Some(format) = obj
        .get("output_config")
        .and_then(|o| o.get("format"))
        .filter(|f| !f.is_null())
    else {
        return Ok(ResponseFormat::Text);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("json_schema") => Ok(ResponseFormat::JsonSchema(
            format.get("schema").filter(|s| s.is_object()),
        )),
        _ => Err(invalid(
            "output_config.format.type: Input should be 'json_schema'",
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Output shapes
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Serialize)]
struct UsageOut {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    output_tokens: u64,
    service_tier: &'static str,
}

impl UsageOut {
    /// `input_tokens` excludes the cache reads (Anthropic's semantics).
    fn new(prompt: PromptUsage, output: u64) -> Self {
        UsageOut {
            input_tokens: prompt.uncached(),
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: prompt.cached,
            output_tokens: output,
            service_tier: "standard",
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockOut<'a> {
    Text {
        text: Cow<'a, str>,
    },
    ToolUse {
        id: String,
        name: &'a str,
        input: Value,
    },
}

#[derive(Debug, Serialize)]
struct MessageOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<BlockOut<'a>>,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<&'a str>,
    usage: UsageOut,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum DeltaOut<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Debug, Serialize)]
struct MessageDeltaOut<'a> {
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct DeltaUsage {
    output_tokens: u64,
}

/// A stream event; the SSE `event:` name equals its `type`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    MessageStart {
        message: MessageOut<'a>,
    },
    ContentBlockStart {
        index: usize,
        content_block: BlockOut<'a>,
    },
    Ping,
    ContentBlockDelta {
        index: usize,
        delta: DeltaOut<'a>,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: MessageDeltaOut<'a>,
        usage: DeltaUsage,
    },
    MessageStop,
}

impl Event<'_> {
    fn name(&self) -> &'static str {
        match self {
            Event::MessageStart { .. } => "message_start",
            Event::ContentBlockStart { .. } => "content_block_start",
            Event::Ping => "ping",
            Event::ContentBlockDelta { .. } => "content_block_delta",
            Event::ContentBlockStop { .. } => "content_block_stop",
            Event::MessageDelta { .. } => "message_delta",
            Event::MessageStop => "message_stop",
        }
    }
}

fn stop_reason(f: &Finish) -> &'static str {
    match f {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCalls => "tool_use",
        Finish::StopSequence(_) => "stop_sequence",
    }
}

fn stop_sequence(f: &Finish) -> Option<&str> {
    match f {
        Finish::StopSequence(s) => Some(s),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

/// The content blocks of a plan: one text block (none when the text is empty), or one
/// `tool_use` block per call.
fn content_blocks(plan: &ChoicePlan) -> Vec<BlockOut<'_>> {
    match &plan.body {
        ChoiceBody::Text(pieces) if pieces.is_empty() => Vec::new(),
        ChoiceBody::Text(pieces) => vec![BlockOut::Text {
            text: Cow::Owned(pieces.concat()),
        }],
        ChoiceBody::ToolCalls(calls) => calls
            .iter()
            .map(|c| BlockOut::ToolUse {
                id: c.id(TOOL_ID_PREFIX),
                name: &c.name,
                input: c.input(),
            })
            .collect(),
    }
}

fn render_message(id: &str, model: &str, plan: &ChoicePlan, usage: UsageOut) -> Vec<u8> {
    let out = MessageOut {
        id,
        kind: "message",
        role: "assistant",
        model,
        content: content_blocks(plan),
        stop_reason: Some(stop_reason(&plan.finish)),
        stop_sequence: stop_sequence(&plan.finish),
        usage,
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

fn event_frame(ev: &Event<'_>) -> Bytes {
    let mut buf = Vec::with_capacity(160);
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(ev.name().as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    if serde_json::to_writer(&mut buf, ev).is_err() {
        buf.extend_from_slice(b"{}");
    }
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

/// The SSE frames of a streamed answer and the index of the `message_delta` frame (a cut must
/// happen before it).
fn render_stream(
    id: &str,
    model: &str,
    plan: &ChoicePlan,
    prompt: PromptUsage,
    chunks: u32,
) -> (Vec<Bytes>, usize) {
    let mut frames = Vec::with_capacity(plan.pieces_len() + 8);
    frames.push(event_frame(&Event::MessageStart {
        message: MessageOut {
            id,
            kind: "message",
            role: "assistant",
            model,
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            // Input-side counts are final here; output starts at 1 as on the real API.
            usage: UsageOut::new(prompt, 1),
        },
    }));
    let mut pinged = false;
    let mut ping = |frames: &mut Vec<Bytes>| {
        if !pinged {
            pinged = true;
            frames.push(event_frame(&Event::Ping));
        }
    };
    match &plan.body {
        ChoiceBody::Text(pieces) if !pieces.is_empty() => {
            frames.push(event_frame(&Event::ContentBlockStart {
                index: 0,
                content_block: BlockOut::Text {
                    text: Cow::Borrowed(""),
                },
            }));
            ping(&mut frames);
            for r in group_ranges(pieces.len(), chunks) {
                let text = pieces[r].concat();
                frames.push(event_frame(&Event::ContentBlockDelta {
                    index: 0,
                    delta: DeltaOut::TextDelta { text: &text },
                }));
            }
            frames.push(event_frame(&Event::ContentBlockStop { index: 0 }));
        }
        ChoiceBody::Text(_) => ping(&mut frames),
        ChoiceBody::ToolCalls(calls) => {
            for (index, c) in calls.iter().enumerate() {
                frames.push(event_frame(&Event::ContentBlockStart {
                    index,
                    content_block: BlockOut::ToolUse {
                        id: c.id(TOOL_ID_PREFIX),
                        name: &c.name,
                        input: Value::Object(Map::new()),
                    },
                }));
                ping(&mut frames);
                for r in group_ranges(c.pieces.len(), chunks) {
                    let json = c.pieces[r].concat();
                    frames.push(event_frame(&Event::ContentBlockDelta {
                        index,
                        delta: DeltaOut::InputJsonDelta {
                            partial_json: &json,
                        },
                    }));
                }
                frames.push(event_frame(&Event::ContentBlockStop { index }));
            }
            ping(&mut frames);
        }
    }
    let final_at = frames.len();
    frames.push(event_frame(&Event::MessageDelta {
        delta: MessageDeltaOut {
            stop_reason: stop_reason(&plan.finish),
            stop_sequence: stop_sequence(&plan.finish),
        },
        // Cumulative: the whole answer's output tokens.
        usage: DeltaUsage {
            output_tokens: plan.tokens,
        },
    }));
    frames.push(event_frame(&Event::MessageStop));
    (frames, final_at)
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

fn parse_json(body: &[u8]) -> Result<Value, AnthropicError> {
    serde_json::from_slice(body)
        .map_err(|e| invalid(format!("There was an error parsing the body: {e}")))
}

/// Prompt tokens of a Messages body: messages and tools as OpenAI's chat accounting counts
/// them, plus the top-level `system`.
fn prompt_tokens(req: &MessagesRequest<'_>, body: &Value) -> u64 {
    let enc = req.ask.enc;
    let system = body.get("system").map_or(0, |s| count_content(enc, s));
    count_chat_prompt(enc, body) + system
}

/// `POST /v1/messages`.
pub(crate) async fn messages(ctx: Ctx, body: Bytes) -> Result<Response<SimBody>, Failure> {
    let value = parse_json(&body)?;
    let req = parse(&value, false)?;
    let prompt_total = prompt_tokens(&req, &value);
    if let Some(r) = ctx.generation_fault(prompt_total).await? {
        let e = match r {
            Refusal::Fail(f) => AnthropicError::injected(f.status, f.retry_after_secs),
            Refusal::ContextWindow { prompt, window } => {
                AnthropicError::context_window(prompt, window)
            }
            Refusal::ContentFilter => AnthropicError::content_policy(),
        };
        return Ok(e.into_response());
    }
    let prompt = ctx.prompt_usage(prompt_total, || {
        let enc = req.ask.enc;
        // Anthropic caches tools, then system, then messages.
        PromptPrefixes::new(
            req.model,
            &[value.get("tools"), value.get("system")],
            messages_of(&value, "messages"),
            |m| count_chat_message(enc, m),
            REPLY_PRIMING,
            prompt_total,
        )
    });
    let plans = plan_answers(&req.ask, &ctx.cfg);
    let Some(plan) = plans.first() else {
        // n is always 1; unreachable, but never panic on the request path.
        return Err(invalid("no answer").into());
    };
    let id = format!("msg_{:016x}{:08x}", next_id(), next_id() as u32);
    if !req.stream {
        let body = render_message(&id, req.model, plan, UsageOut::new(prompt, plan.tokens));
        return Ok(ctx.answer_json(body, prompt, plan.tokens).await);
    }
    let (frames, final_at) = render_stream(&id, req.model, plan, prompt, ctx.cfg.chunks);
    let tokens = plan.tokens;
    // The first delta: `message_start`, `content_block_start` and the ping are preamble.
    let first_content = frames
        .iter()
        .position(|f| f.starts_with(b"event: content_block_delta"))
        .unwrap_or(final_at);
    Ok(ctx
        .answer_stream(
            frames,
            final_at,
            first_content,
            |_| crate::error::anthropic_stream_error_frame(),
            SSE,
            prompt,
            tokens,
        )
        .await)
}

/// `POST /v1/messages/count_tokens`: the prompt tokens a Messages request would report
/// (cached ones included), without generating. Not subject to faults or latency.
pub(crate) fn count_tokens(_ctx: Ctx, body: Bytes) -> Result<Response<SimBody>, Failure> {
    let value = parse_json(&body)?;
    let req = parse(&value, true)?;
    let n = prompt_tokens(&req, &value);
    let body = serde_json::to_vec(&serde_json::json!({ "input_tokens": n })).unwrap_or_default();
    Ok(json_response(StatusCode::OK, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"model":"claude-sonnet-4-5","max_tokens":64,
               "messages":[{"role":"user","content":"hi"}]})
    }

    fn err(body: Value) -> String {
        match parse(&body, false) {
            Ok(_) => panic!("accepted: {body}"),
            Err(e) => {
                assert_eq!(e.status, StatusCode::BAD_REQUEST);
                assert_eq!(e.kind, "invalid_request_error");
                e.message
            }
        }
    }

    fn with(mut body: Value, key: &str, v: Value) -> Value {
        body[key] = v;
        body
    }

    #[test]
    fn validation() {
        assert!(parse(&base(), false).is_ok());
        let mut b = base();
        b.as_object_mut().unwrap().remove("max_tokens");
        assert_eq!(err(b.clone()), "max_tokens: Field required");
        assert!(parse(&b, true).is_ok(), "count_tokens takes no max_tokens");
        assert!(err(with(base(), "n", json!(2))).contains("Extra inputs"));
        assert!(err(with(base(), "temperature", json!(1.5))).contains("less than or equal to 1"));
        assert!(parse(&with(base(), "temperature", json!(1)), false).is_ok());
        assert!(err(with(base(), "messages", json!([]))).contains("at least one message"));
        let sys = json!([{"role":"system","content":"x"},{"role":"user","content":"hi"}]);
        assert!(err(with(base(), "messages", sys)).contains("Unexpected role \"system\""));
        let first = json!([{"role":"assistant","content":"x"}]);
        assert!(err(with(base(), "messages", first)).contains("first message"));
        let twice = json!([{"role":"user","content":"a"},{"role":"user","content":"b"}]);
        assert!(err(with(base(), "messages", twice)).contains("must alternate"));
        let empty = json!([{"role":"user","content":""}]);
        assert!(err(with(base(), "messages", empty)).contains("non-empty content"));
        let prefill = json!([{"role":"user","content":"a"},{"role":"assistant","content":"b "}]);
        assert!(err(with(base(), "messages", prefill)).contains("trailing whitespace"));
        let prefill = json!([{"role":"user","content":"a"},{"role":"assistant","content":"b"}]);
        assert!(parse(&with(base(), "messages", prefill), false).is_ok());
        let unknown = json!([{"role":"user","content":[{"type":"video"}]}]);
        assert!(err(with(base(), "messages", unknown)).contains("Input tag 'video'"));
        assert!(err(with(base(), "system", json!(3))).starts_with("system:"));
        assert!(err(with(base(), "tool_choice", json!({"type":"auto"}))).contains("tools"));
        assert!(err(with(base(), "stop_sequences", json!([" "]))).contains("non-whitespace"));
        let think = with(
            base(),
            "thinking",
            json!({"type":"enabled","budget_tokens":2048}),
        );
        assert!(err(think).contains("max_tokens"));
        let think = with(
            base(),
            "thinking",
            json!({"type":"enabled","budget_tokens":10}),
        );
        assert!(err(think).contains("1024"));
        assert!(err(json!([1])).contains("dictionary"));
    }

    #[test]
    fn tool_pairing() {
        let tools = json!([{"name":"get_weather","input_schema":{"type":"object"}}]);
        let call = json!({"role":"assistant","content":[
            {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}]});
        let ok = json!([{"role":"user","content":"w?"}, call,
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"18C"}]}]);
        let b = with(with(base(), "tools", tools.clone()), "messages", ok);
        let req = parse(&b, false).unwrap();
        assert!(
            req.ask.user_turn.is_none(),
            "a tool result gets a text answer"
        );

        let unanswered = json!([{"role":"user","content":"w?"}, call,
            {"role":"user","content":"and?"}]);
        let b = with(with(base(), "tools", tools.clone()), "messages", unanswered);
        assert!(err(b).contains("`tool_use` ids were found without `tool_result`"));

        let stray = json!([{"role":"user","content":[
            {"type":"tool_result","tool_use_id":"toolu_9","content":"x"}]}]);
        let b = with(with(base(), "tools", tools.clone()), "messages", stray);
        assert!(err(b).contains("unexpected `tool_use_id`"));

        let bad_tools = json!([{"name":"bad name","input_schema":{"type":"object"}}]);
        assert!(err(with(base(), "tools", bad_tools)).contains("pattern"));
        let no_schema = json!([{"name":"f"}]);
        assert!(err(with(base(), "tools", no_schema)).contains("input_schema"));
        let dup = json!([{"name":"f","input_schema":{"type":"object"}},
                         {"name":"f","input_schema":{"type":"object"}}]);
        assert!(err(with(base(), "tools", dup)).contains("unique"));
        let server = json!([{"type":"web_search_20250305","name":"web_search"}]);
        let req_body = with(base(), "tools", server);
        assert!(parse(&req_body, false).unwrap().ask.tools.is_empty());
        let named = with(
            with(base(), "tools", tools),
            "tool_choice",
            json!({"type":"tool","name":"nope"}),
        );
        assert!(err(named).contains("not found"));
    }

    #[test]
    fn version_header() {
        let cfg = SimConfig::default();
        let mut h = HeaderMap::new();
        let e = check_headers(&cfg, &h).unwrap_err();
        assert_eq!(e.message, "anthropic-version: header is required");
        h.insert("anthropic-version", "2023-06-01".parse().unwrap());
        assert!(check_headers(&cfg, &h).is_ok());
        h.append("anthropic-version", "2023-06-01".parse().unwrap());
        let e = check_headers(&cfg, &h).unwrap_err();
        assert!(
            e.message.contains("is not a valid version"),
            "{}",
            e.message
        );
        let cfg = SimConfig {
            api_key: Some("k".into()),
            ..SimConfig::default()
        };
        let mut h = HeaderMap::new();
        h.insert("anthropic-version", "2023-06-01".parse().unwrap());
        h.insert("authorization", "Bearer k".parse().unwrap());
        assert_eq!(
            check_headers(&cfg, &h).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        h.insert("x-api-key", "k".parse().unwrap());
        assert!(check_headers(&cfg, &h).is_ok());
    }
}
