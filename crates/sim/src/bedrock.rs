//! The AWS Bedrock Converse wire format: `POST /model/{modelId}/converse` and
//! `POST /model/{modelId}/converse-stream` (binary `application/vnd.amazon.eventstream`
//! frames), with Bedrock's validation exceptions and usage semantics (§5 of the wire-format
//! reference).
//!
//! - **Auth**: an `Authorization` header is required (403 `MissingAuthenticationTokenException`
//!   otherwise) but SigV4 signatures are not verified. A `Bearer` token (a Bedrock API key)
//!   must equal the `api_key` knob when one is set (403 `UnrecognizedClientException`).
//! - **Validation** (400 `ValidationException`, Bedrock's messages): `messages` missing or
//!   empty, roles other than user/assistant, a conversation not starting with `user` or not
//!   alternating, empty content, content blocks that are not exactly one known member, blank
//!   text blocks, `toolUse`/`toolResult` blocks without a `toolConfig`,
//!   `inferenceConfig.maxTokens` < 1, `temperature`/`topP` outside 0–1, tool specs without a
//!   name or an `inputSchema.json` object, a `toolChoice.tool` naming an unknown tool.
//! - **Answers** come from [`crate::plan`]: a text block, or `toolUse` blocks (ids
//!   `tooluse_…`, `input` objects) when `toolConfig.tools` are offered and the last turn is the
//!   user asking (a user turn carrying `toolResult` blocks gets a text answer);
//!   `toolChoice` `any`/`tool` are honoured. `maxTokens` cuts the answer (`max_tokens`),
//!   `stopSequences` end it (`stop_sequence`).
//! - **Usage**: the prompt is, with the model's encoding (`o200k_base` for Bedrock model ids),
//!   3 per message + its role + its content blocks (text as text, other blocks as their JSON),
//!   plus 3, plus the `system` blocks and each tool's JSON. Bedrock's `inputTokens` *excludes*
//!   cache reads: with the `cached_prompt_tokens` knob (or what the `prompt_cache` knob finds
//!   cached: `toolConfig`, then `system`, then messages), that many are reported as
//!   `cacheReadInputTokens` (with `cacheWriteInputTokens: 0`; both absent when 0) and
//!   subtracted from `inputTokens`; `totalTokens` counts every input and output token.
//! - **Streams**: frames `messageStart`, then per block (`contentBlockStart` for tool use
//!   only, as Bedrock sends none for text) `contentBlockDelta` (`text` or `toolUse.input`
//!   string fragments) and `contentBlockStop`, then `messageStop` (stop reason) and
//!   `metadata` (usage, metrics) last. Each payload carries a `"p"` padding field, as AWS
//!   pads events, which clients must ignore. A cut stream ends before `messageStop`.
//! - **Errors**: `{"message"}` with the exception in `x-amzn-ErrorType`; injected failures:
//!   429 `ThrottlingException`, 503 `ServiceUnavailableException`, 500
//!   `InternalServerException`, … (no `Retry-After`, which AWS does not send).

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, header};
use serde::Serialize;
use serde_json::{Map, Value};
use tollgate_tokens::{Encoding, count_content};

use crate::config::SimConfig;
use crate::content::Fnv1a;
use crate::error::BedrockError;
use crate::http::SimBody;
use crate::plan::{
    Ask, ChoiceBody, ChoicePlan, Finish, PromptUsage, REPLY_PRIMING, TOKENS_PER_TURN, ToolChoice,
    ToolDef, count_parts, encoding_for, group_ranges, plan_answers,
};
use crate::prompt_cache::{PromptPrefixes, messages_of};
use crate::router::{Ctx, Failure, Refusal, bearer_token};

/// `Content-Type` of ConverseStream.
const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";
/// Prefix of tool-use ids.
const TOOL_ID_PREFIX: &str = "tooluse_";
/// Bedrock's cap on stop sequences.
const MAX_STOP_SEQUENCES: usize = 2500;

/// The members a `ContentBlock` union may set (exactly one).
const BLOCK_MEMBERS: &[&str] = &[
    "text",
    "image",
    "document",
    "video",
    "audio",
    "toolUse",
    "toolResult",
    "reasoningContent",
    "cachePoint",
    "guardContent",
    "citationsContent",
    "searchResult",
];

/// The members a `SystemContentBlock` union may set.
const SYSTEM_MEMBERS: &[&str] = &["text", "guardContent", "cachePoint"];

// ---------------------------------------------------------------------------------------------
// Auth
// ---------------------------------------------------------------------------------------------

/// Any `Authorization` header is accepted (SigV4 is not verified), but one is required; a
/// Bearer API key must match the configured key.
pub(crate) fn check_auth(cfg: &SimConfig, headers: &HeaderMap) -> Result<(), BedrockError> {
    let present = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| !v.as_bytes().trim_ascii().is_empty());
    if !present {
        return Err(BedrockError::new(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    }
    if let (Some(key), Some(token)) = (cfg.api_key.as_deref(), bearer_token(headers))
        && token != key
    {
        return Err(BedrockError::new(
            StatusCode::FORBIDDEN,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Request parsing and validation
// ---------------------------------------------------------------------------------------------

fn invalid(msg: impl Into<String>) -> BedrockError {
    BedrockError::invalid(msg)
}

/// Smithy's constraint message.
fn constraint(value: &str, path: &str, rule: &str) -> BedrockError {
    invalid(format!(
        "1 validation error detected: Value {value} at '{path}' failed to satisfy constraint: {rule}"
    ))
}

/// The single member a union object sets, if it sets exactly one.
fn union_member<'a>(v: &'a Value, members: &[&str]) -> Option<(&'a str, &'a Value)> {
    let obj = v.as_object()?;
    let mut set = obj.iter().filter(|(_, v)| !v.is_null());
    let (k, v) = set.next()?;
    if set.next().is_some() || !members.contains(&k.as_str()) {
        return None;
    }
    Some((k.as_str(), v))
}

fn validate_messages(messages: &[Value], has_tool_config: bool) -> Result<(), BedrockError> {
    let mut prev: Option<&str> = None;
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str);
        let role = match role {
            Some(r @ ("user" | "assistant")) => r,
            Some(r) => {
                return Err(constraint(
                    &format!("'{r}'"),
                    &format!("messages.{}.member.role", i + 1),
                    "Member must satisfy enum value set: [user, assistant]",
                ));
            }
            None => {
                return Err(constraint(
                    "null",
                    &format!("messages.{}.member.role", i + 1),
                    "Member must not be null",
                ));
            }
        };
        if i == 0 && role != "user" {
            return Err(invalid(
                "A conversation must start with a user message. Try again with a conversation \
                 that starts with a user message.",
            ));
        }
        if prev == Some(role) {
            return Err(invalid(
                "A conversation must alternate between user and assistant roles. Make sure the \
                 conversation alternates between user and assistant roles and try again.",
            ));
        }
        prev = Some(role);
        let content = match m.get("content") {
            Some(Value::Array(c)) if !c.is_empty() => c,
            Some(Value::Array(_)) => {
                return Err(invalid(format!(
                    "The content field in the Message object at messages.{i} is empty. Add a \
                     ContentBlock object to the content field and try again."
                )));
            }
            _ => {
                return Err(constraint(
                    "null",
                    &format!("messages.{}.member.content", i + 1),
                    "Member must not be null",
                ));
            }
        };
        for (j, b) in content.iter().enumerate() {
            let Some((member, v)) = union_member(b, BLOCK_MEMBERS) else {
                return Err(invalid(format!(
                    "The ContentBlock object at messages.{i}.content.{j} must set exactly one of \
                     the following keys: {}.",
                    BLOCK_MEMBERS.join(", ")
                )));
            };
            match member {
                "text" => match v.as_str() {
                    Some(t) if !t.trim().is_empty() => {}
                    _ => {
                        return Err(invalid(format!(
                            "The text field in the ContentBlock object at \
                             messages.{i}.content.{j} is blank. Add text to the text field, and \
                             try again."
                        )));
                    }
                },
                "toolUse" | "toolResult" => {
                    if !has_tool_config {
                        return Err(invalid(
                            "The toolConfig field must be defined when using toolUse and \
                             toolResult content blocks.",
                        ));
                    }
                    if v.get("toolUseId").and_then(Value::as_str).is_none() {
                        return Err(constraint(
                            "null",
                            &format!("messages.{i}.content.{j}.{member}.toolUseId"),
                            "Member must not be null",
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// An optional number within `[0, 1]` in `inferenceConfig`.
fn unit(cfg: &Map<String, Value>, key: &str) -> Result<(), BedrockError> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) if n.as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)) => Ok(()),
        Some(v) => Err(constraint(
            &format!("'{v}'"),
            &format!("inferenceConfig.{key}"),
            "Member must have value less than or equal to 1 and greater than or equal to 0",
        )),
    }
}

fn parse_inference(obj: &Map<String, Value>) -> Result<(Option<u64>, Vec<&str>), BedrockError> {
    let Some(cfg) = obj.get("inferenceConfig").filter(|v| !v.is_null()) else {
        return Ok((None, Vec::new()));
    };
    let Some(cfg) = cfg.as_object() else {
        return Err(invalid("inferenceConfig must be an object."));
    };
    let max_tokens = match cfg.get("maxTokens") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|m| m >= 1) => n.as_u64(),
        Some(v) => {
            return Err(constraint(
                &format!("'{v}'"),
                "inferenceConfig.maxTokens",
                "Member must have value greater than or equal to 1",
            ));
        }
    };
    unit(cfg, "temperature")?;
    unit(cfg, "topP")?;
    let stop = match cfg.get("stopSequences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() <= MAX_STOP_SEQUENCES => items
            .iter()
            .map(|s| match s.as_str() {
                Some(s) if !s.is_empty() => Ok(s),
                _ => Err(constraint(
                    &format!("'{s}'"),
                    "inferenceConfig.stopSequences",
                    "Member must have length greater than or equal to 1",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(constraint(
                "[…]",
                "inferenceConfig.stopSequences",
                "Member must have length less than or equal to 2500",
            ));
        }
    };
    Ok((max_tokens, stop))
}

fn parse_tool_config(
    obj: &Map<String, Value>,
) -> Result<(Vec<ToolDef<'_>>, ToolChoice<'_>), BedrockError> {
    let Some(tc) = obj.get("toolConfig").filter(|v| !v.is_null()) else {
        return Ok((Vec::new(), ToolChoice::Auto));
    };
    let tools = match tc.get("tools") {
        Some(Value::Array(t)) if !t.is_empty() => t,
        _ => {
            return Err(constraint(
                "'[]'",
                "toolConfig.tools",
                "Member must have length greater than or equal to 1",
            ));
        }
    };
    let mut defs = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        let Some((member, spec)) = union_member(t, &["toolSpec", "systemTool", "cachePoint"])
        else {
            return Err(invalid(format!(
                "The Tool object at toolConfig.tools.{i} must set exactly one of toolSpec, \
                 systemTool, cachePoint."
            )));
        };
        if member != "toolSpec" {
            continue;
        }
        let name = spec.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            return Err(constraint(
                "null",
                &format!("toolConfig.tools.{}.member.toolSpec.name", i + 1),
                "Member must not be null",
            ));
        }
        let Some(schema) = spec
            .get("inputSchema")
            .and_then(|s| s.get("json"))
            .filter(|s| s.is_object())
        else {
            return Err(invalid(format!(
                "The inputSchema of tool {name} must set a json object."
            )));
        };
        defs.push(ToolDef {
            name,
            parameters: Some(schema),
        });
    }
    let choice = match tc.get("toolChoice").filter(|v| !v.is_null()) {
        None => ToolChoice::Auto,
        Some(c) => match union_member(c, &["auto", "any", "tool"]) {
            Some(("auto", _)) => ToolChoice::Auto,
            Some(("any", _)) => ToolChoice::Required,
            Some(("tool", t)) => {
                let name = t.get("name").and_then(Value::as_str).unwrap_or("");
                if !defs.iter().any(|d| d.name == name) {
                    return Err(invalid(format!(
                        "The tool {name} named in toolChoice is not defined in toolConfig.tools."
                    )));
                }
                ToolChoice::Named(name)
            }
            _ => {
                return Err(invalid(
                    "toolChoice must set exactly one of auto, any, tool.",
                ));
            }
        },
    };
    Ok((defs, choice))
}

fn validate_system(system: &Value) -> Result<(), BedrockError> {
    let Some(items) = system.as_array() else {
        return Err(invalid(
            "system must be a list of SystemContentBlock objects.",
        ));
    };
    for (i, b) in items.iter().enumerate() {
        match union_member(b, SYSTEM_MEMBERS) {
            Some(("text", t)) if t.as_str().is_some_and(|t| !t.trim().is_empty()) => {}
            Some(("text", _)) => {
                return Err(invalid(format!(
                    "The text field in the SystemContentBlock object at system.{i} is blank. \
                     Add text to the text field, and try again."
                )));
            }
            Some(_) => {}
            None => {
                return Err(invalid(format!(
                    "The SystemContentBlock object at system.{i} must set exactly one of text, \
                     guardContent, cachePoint."
                )));
            }
        }
    }
    Ok(())
}

fn parse<'a>(body: &'a Value, model: &str) -> Result<Ask<'a>, BedrockError> {
    let Some(obj) = body.as_object() else {
        return Err(invalid("The request body must be a JSON object."));
    };
    let messages = match obj.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m.as_slice(),
        Some(Value::Array(_)) => {
            return Err(constraint(
                "'[]'",
                "messages",
                "Member must have length greater than or equal to 1",
            ));
        }
        _ => return Err(constraint("null", "messages", "Member must not be null")),
    };
    let (tools, tool_choice) = parse_tool_config(obj)?;
    let has_tool_config = obj.get("toolConfig").is_some_and(|v| !v.is_null());
    validate_messages(messages, has_tool_config)?;
    let system = obj.get("system").filter(|v| !v.is_null());
    if let Some(s) = system {
        validate_system(s)?;
    }
    let (max_tokens, stop) = parse_inference(obj)?;

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
    // A user turn carrying tool results gets a text answer.
    let user_turn = messages
        .last()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content").and_then(Value::as_array))
        .filter(|blocks| !blocks.iter().any(|b| b.get("toolResult").is_some()))
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" ")
        });
    Ok(Ask {
        enc: encoding_for(model),
        seed,
        n: 1,
        max_tokens,
        tools,
        tool_choice,
        parallel_tool_calls: true,
        format: crate::plan::ResponseFormat::Text,
        stop,
        user_turn,
    })
}

/// Tokens of one `messages` turn, its framing included.
fn turn_tokens(enc: Encoding, m: &Value) -> u64 {
    let role = m.get("role").and_then(Value::as_str).unwrap_or("");
    let content = m
        .get("content")
        .and_then(Value::as_array)
        .map_or(0, |c| count_parts(enc, c));
    TOKENS_PER_TURN + enc.count(role) + content
}

/// Prompt tokens of a Converse body (see the module doc).
fn prompt_tokens(enc: Encoding, body: &Value) -> u64 {
    let mut total = 0;
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        for m in messages {
            total += turn_tokens(enc, m);
        }
        total += REPLY_PRIMING;
    }
    if let Some(system) = body.get("system").and_then(Value::as_array) {
        total += count_parts(enc, system);
    }
    if let Some(tools) = body.get("toolConfig").and_then(|t| t.get("tools")) {
        total += count_content(enc, tools);
    }
    total
}

// ---------------------------------------------------------------------------------------------
// Output shapes
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageOut {
    input_tokens: u64,
    output_tokens: u64,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_read_input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_write_input_tokens: Option<u64>,
}

impl UsageOut {
    /// `inputTokens` excludes cache reads; `totalTokens` counts everything.
    fn new(prompt: PromptUsage, output: u64) -> Self {
        let cached = prompt.cached > 0;
        UsageOut {
            input_tokens: prompt.uncached(),
            output_tokens: output,
            total_tokens: prompt.total.saturating_add(output),
            cache_read_input_tokens: cached.then_some(prompt.cached),
            cache_write_input_tokens: cached.then_some(0),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolUseOut<'a> {
    tool_use_id: String,
    name: &'a str,
    input: Value,
}

/// A content block: serde's external tagging gives Bedrock's one-member unions.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum BlockOut<'a> {
    Text(String),
    ToolUse(ToolUseOut<'a>),
}

#[derive(Debug, Serialize)]
struct Metrics {
    #[serde(rename = "latencyMs")]
    latency_ms: u64,
}

fn stop_reason(f: &Finish) -> &'static str {
    match f {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCalls => "tool_use",
        Finish::StopSequence(_) => "stop_sequence",
    }
}

fn render_response(plan: &ChoicePlan, usage: UsageOut, latency_ms: u64) -> Vec<u8> {
    let content: Vec<BlockOut<'_>> = match &plan.body {
        ChoiceBody::Text(pieces) if pieces.is_empty() => Vec::new(),
        ChoiceBody::Text(pieces) => vec![BlockOut::Text(pieces.concat())],
        ChoiceBody::ToolCalls(calls) => calls
            .iter()
            .map(|c| {
                BlockOut::ToolUse(ToolUseOut {
                    tool_use_id: c.id(TOOL_ID_PREFIX),
                    name: &c.name,
                    input: c.input(),
                })
            })
            .collect(),
    };
    let out = serde_json::json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason(&plan.finish),
        "usage": usage,
        "metrics": Metrics { latency_ms },
    });
    serde_json::to_vec(&out).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Event-stream framing
// ---------------------------------------------------------------------------------------------

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), the checksum of AWS event-stream
/// preludes and messages; a table built at compile time, no dependency.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for b in bytes {
        c = CRC_TABLE[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// Header value type 7: a UTF-8 string with a u16 length.
const HEADER_STRING: u8 = 7;

/// One event-stream message:
/// `[total_len u32][headers_len u32][prelude_crc u32][headers][payload][message_crc u32]`,
/// big-endian, with string headers `:event-type`, `:content-type`, `:message-type`.
fn event_message(event_type: &str, payload: &[u8]) -> Bytes {
    frame_message(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload,
    )
}

/// One event-stream message with these string headers.
fn frame_message(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let headers_len: usize = headers
        .iter()
        .map(|(n, v)| 1 + n.len() + 1 + 2 + v.len())
        .sum();
    let total = 12 + headers_len + payload.len() + 4;
    let mut buf = Vec::with_capacity(total);
    buf.extend_from_slice(&(total as u32).to_be_bytes());
    buf.extend_from_slice(&(headers_len as u32).to_be_bytes());
    let prelude_crc = crc32(&buf);
    buf.extend_from_slice(&prelude_crc.to_be_bytes());
    for &(name, value) in headers {
        // Names and values here are short constants and event names (< 255 bytes).
        buf.push(name.len() as u8);
        buf.extend_from_slice(name.as_bytes());
        buf.push(HEADER_STRING);
        buf.extend_from_slice(&(value.len() as u16).to_be_bytes());
        buf.extend_from_slice(value.as_bytes());
    }
    buf.extend_from_slice(payload);
    let crc = crc32(&buf);
    buf.extend_from_slice(&crc.to_be_bytes());
    Bytes::from(buf)
}

/// An exception message inside a ConverseStream body (`:message-type: exception`,
/// `:exception-type: serviceUnavailableException`, payload `{"message"}`), how Bedrock fails a
/// stream that already answered 200.
fn stream_exception() -> Bytes {
    frame_message(
        &[
            (":exception-type", "serviceUnavailableException"),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        br#"{"message":"Bedrock is unable to process your request. (simulated)"}"#,
    )
}

/// AWS pads event payloads with a `"p"` field of varying length (to hide the size of the
/// content); the simulator does too, deterministically, so clients prove they ignore it.
const PADDING: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

fn event(event_type: &str, mut payload: Value, seq: usize) -> Bytes {
    if let Value::Object(m) = &mut payload {
        let len = 1 + (seq * 7) % PADDING.len();
        m.insert("p".into(), Value::String(PADDING[..len].to_string()));
    }
    let bytes = serde_json::to_vec(&payload).unwrap_or_default();
    event_message(event_type, &bytes)
}

/// The frames of a streamed answer and the index of `messageStop` (a cut must happen before
/// it).
fn render_stream(
    plan: &ChoicePlan,
    usage: UsageOut,
    chunks: u32,
    ttft_ms: u64,
    delay_ms: u64,
) -> (Vec<Bytes>, usize) {
    use serde_json::json;
    let mut frames = Vec::with_capacity(plan.pieces_len() + 6);
    let push = |frames: &mut Vec<Bytes>, ty: &str, payload: Value| {
        let seq = frames.len();
        frames.push(event(ty, payload, seq));
    };
    push(&mut frames, "messageStart", json!({"role": "assistant"}));
    match &plan.body {
        ChoiceBody::Text(pieces) => {
            let ranges = group_ranges(pieces.len(), chunks);
            if !ranges.is_empty() {
                for r in ranges {
                    push(
                        &mut frames,
                        "contentBlockDelta",
                        json!({"contentBlockIndex": 0, "delta": {"text": pieces[r].concat()}}),
                    );
                }
                push(
                    &mut frames,
                    "contentBlockStop",
                    json!({"contentBlockIndex": 0}),
                );
            }
        }
        ChoiceBody::ToolCalls(calls) => {
            for (index, c) in calls.iter().enumerate() {
                push(
                    &mut frames,
                    "contentBlockStart",
                    json!({"contentBlockIndex": index,
                           "start": {"toolUse": {"toolUseId": c.id(TOOL_ID_PREFIX), "name": c.name}}}),
                );
                for r in group_ranges(c.pieces.len(), chunks) {
                    push(
                        &mut frames,
                        "contentBlockDelta",
                        json!({"contentBlockIndex": index,
                               "delta": {"toolUse": {"input": c.pieces[r].concat()}}}),
                    );
                }
                push(
                    &mut frames,
                    "contentBlockStop",
                    json!({"contentBlockIndex": index}),
                );
            }
        }
    }
    let final_at = frames.len();
    push(
        &mut frames,
        "messageStop",
        json!({"stopReason": stop_reason(&plan.finish)}),
    );
    let latency_ms = ttft_ms.saturating_add(delay_ms.saturating_mul(frames.len() as u64));
    push(
        &mut frames,
        "metadata",
        json!({"usage": usage, "metrics": Metrics { latency_ms }}),
    );
    (frames, final_at)
}

// ---------------------------------------------------------------------------------------------
// Handler
// ---------------------------------------------------------------------------------------------

/// `POST /model/{modelId}/converse` and `/converse-stream`.
pub(crate) async fn converse(
    ctx: Ctx,
    model: &str,
    stream: bool,
    body: Bytes,
) -> Result<Response<SimBody>, Failure> {
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        invalid(format!(
            "Malformed input request: {e}, please reformat your input and try again."
        ))
    })?;
    let ask = parse(&value, model)?;
    let prompt_total = prompt_tokens(ask.enc, &value);
    if let Some(r) = ctx.generation_fault(prompt_total).await? {
        let e = match r {
            Refusal::Fail(f) => BedrockError::injected(f.status),
            Refusal::ContextWindow { .. } => BedrockError::context_window(),
            Refusal::ContentFilter => BedrockError::content_policy(),
        };
        return Ok(e.into_response());
    }
    let prompt = ctx.prompt_usage(prompt_total, || {
        let enc = ask.enc;
        // Bedrock's cache order: tools, system, messages.
        PromptPrefixes::new(
            model,
            &[value.get("toolConfig"), value.get("system")],
            messages_of(&value, "messages"),
            |m| turn_tokens(enc, m),
            REPLY_PRIMING,
            prompt_total,
        )
    });
    let plans = plan_answers(&ask, &ctx.cfg);
    let Some(plan) = plans.first() else {
        // n is always 1; never panic on the request path.
        return Err(invalid("no answer").into());
    };
    let usage = UsageOut::new(prompt, plan.tokens);
    let tokens = plan.tokens;
    if !stream {
        let body = render_response(plan, usage, ctx.cfg.ttft_ms);
        return Ok(ctx.answer_json(body, prompt, tokens).await);
    }
    let (frames, final_at) = render_stream(
        plan,
        usage,
        ctx.cfg.chunks,
        ctx.cfg.ttft_ms,
        ctx.cfg.chunk_delay_ms,
    );
    // The first `contentBlockDelta`: `messageStart` (and a tool's `contentBlockStart`) are
    // preamble. The event type is a plain string header, so it appears in the frame's bytes.
    let first_content = frames
        .iter()
        .position(|f| f.windows(17).any(|w| w == b"contentBlockDelta"))
        .unwrap_or(final_at);
    Ok(ctx
        .answer_stream(
            frames,
            final_at,
            first_content,
            |_| stream_exception(),
            EVENT_STREAM,
            prompt,
            tokens,
        )
        .await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn crc32_known_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn event_message_layout() {
        let m = event_message("messageStart", br#"{"role":"assistant"}"#);
        let total = u32::from_be_bytes(m[0..4].try_into().unwrap()) as usize;
        let headers_len = u32::from_be_bytes(m[4..8].try_into().unwrap()) as usize;
        assert_eq!(total, m.len());
        assert_eq!(
            u32::from_be_bytes(m[8..12].try_into().unwrap()),
            crc32(&m[0..8])
        );
        assert_eq!(
            u32::from_be_bytes(m[total - 4..].try_into().unwrap()),
            crc32(&m[..total - 4])
        );
        let payload = &m[12 + headers_len..total - 4];
        assert_eq!(payload, br#"{"role":"assistant"}"#);
        // First header: ":event-type" = "messageStart".
        assert_eq!(m[12] as usize, ":event-type".len());
        assert_eq!(&m[13..24], b":event-type");
        assert_eq!(m[24], HEADER_STRING);
        assert_eq!(u16::from_be_bytes([m[25], m[26]]), 12);
        assert_eq!(&m[27..39], b"messageStart");
    }

    fn base() -> Value {
        json!({"messages":[{"role":"user","content":[{"text":"hi"}]}]})
    }

    fn err(body: Value) -> String {
        match parse(&body, "m") {
            Ok(_) => panic!("accepted: {body}"),
            Err(e) => {
                assert_eq!(e.status, StatusCode::BAD_REQUEST);
                assert_eq!(e.kind, "ValidationException");
                e.message
            }
        }
    }

    #[test]
    fn validation() {
        assert!(parse(&base(), "m").is_ok());
        assert!(err(json!({})).contains("Member must not be null"));
        assert!(err(json!({"messages": []})).contains("length greater than or equal to 1"));
        assert!(
            err(json!({"messages":[{"role":"assistant","content":[{"text":"x"}]}]}))
                .contains("must start with a user message")
        );
        assert!(
            err(json!({"messages":[{"role":"user","content":[{"text":"x"}]},
                                   {"role":"user","content":[{"text":"y"}]}]}))
            .contains("must alternate")
        );
        assert!(
            err(json!({"messages":[{"role":"system","content":[{"text":"x"}]}]}))
                .contains("enum value set")
        );
        assert!(err(json!({"messages":[{"role":"user","content":[]}]})).contains("is empty"));
        assert!(
            err(json!({"messages":[{"role":"user","content":[{"text":" "}]}]})).contains("blank")
        );
        assert!(
            err(json!({"messages":[{"role":"user","content":[{"text":"a","image":{}}]}]}))
                .contains("exactly one")
        );
        let tool_result = json!({"messages":[{"role":"user","content":[
            {"toolResult":{"toolUseId":"t","content":[{"text":"x"}]}}]}]});
        assert!(err(tool_result).contains("toolConfig field must be defined"));
        let mut b = base();
        b["inferenceConfig"] = json!({"maxTokens": 0});
        assert!(err(b).contains("maxTokens"));
        let mut b = base();
        b["inferenceConfig"] = json!({"temperature": 1.5});
        assert!(err(b).contains("temperature"));
        let mut b = base();
        b["toolConfig"] = json!({"tools":[{"toolSpec":{"name":"f"}}]});
        assert!(err(b).contains("inputSchema"));
        let mut b = base();
        b["toolConfig"] = json!({"tools":[{"toolSpec":{"name":"f","inputSchema":{"json":{}}}}],
            "toolChoice":{"tool":{"name":"g"}}});
        assert!(err(b).contains("not defined"));
    }

    #[test]
    fn auth() {
        let cfg = SimConfig::default();
        let mut h = HeaderMap::new();
        assert_eq!(
            check_auth(&cfg, &h).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        h.insert(
            header::AUTHORIZATION,
            "AWS4-HMAC-SHA256 Credential=x/y, Signature=z"
                .parse()
                .unwrap(),
        );
        assert!(check_auth(&cfg, &h).is_ok());
        let cfg = SimConfig {
            api_key: Some("k".into()),
            ..SimConfig::default()
        };
        assert!(check_auth(&cfg, &h).is_ok(), "SigV4 is not verified");
        h.insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert_eq!(
            check_auth(&cfg, &h).unwrap_err().kind,
            "UnrecognizedClientException"
        );
        h.insert(header::AUTHORIZATION, "Bearer k".parse().unwrap());
        assert!(check_auth(&cfg, &h).is_ok());
    }
}
