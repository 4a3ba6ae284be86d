//! The OpenAI wire format (also served on Azure OpenAI paths): Chat Completions (plain and
//! streamed), Embeddings and the models list, with OpenAI's validation errors.
//!
//! A chat request is handled in three steps: [`parse_chat`] validates the body into a
//! [`ChatRequest`] the way the real API would reject it; [`plan_choices`] decides every
//! choice's content deterministically from the messages (text, JSON, or tool calls) as token
//! pieces with exact token counts; then the plan is rendered either as one
//! `chat.completion` object or as SSE `chat.completion.chunk` frames (§1.6 of the wire-format
//! reference). Usage is computed once from the plan, so the streamed and non-streamed forms
//! always agree and `completion_tokens` is the token count of exactly what was sent.

use std::borrow::Cow;

use base64::Engine as _;
use bytes::Bytes;
use http::{Response, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tollgate_tokens::{Encoding, count_chat_message, count_chat_prompt, count_embedding_input};

use crate::content::{Fnv1a, VOCAB, hash_json, hash_str, mix64, unit_vector};
use crate::error::OpenAiError;
use crate::http::{SSE, SimBody, json_response};
use crate::plan::{
    Ask, ChoiceBody, ChoicePlan, Finish, PromptUsage, REPLY_PRIMING, ResponseFormat, ToolChoice,
    ToolDef, content_text, encoding_for, group_ranges, plan_answers,
};
use crate::prompt_cache::{PromptPrefixes, messages_of};
use crate::router::{Ctx, Dialect, Failure, InjectedFailure, Refusal, next_id, unix_now};

/// Prefix of tool-call ids.
const CALL_ID_PREFIX: &str = "call_";
/// `system_fingerprint` on every answer.
const FINGERPRINT: &str = "fp_sim";
/// OpenAI's own cap on `n`.
const MAX_N: u64 = 128;
const MAX_TOP_LOGPROBS: u64 = 20;
const DEFAULT_EMBEDDING_DIMS: u64 = 8;
const MAX_EMBEDDING_DIMS: u64 = 8192;
const MAX_EMBEDDING_INPUTS: usize = 2048;
/// Bound on `inputs × dimensions` so one request cannot make the sim allocate gigabytes
/// (2048 inputs of 3072 dims, text-embedding-3-large's maximum batch, fits).
const MAX_EMBEDDING_VALUES: usize = 8 * 1024 * 1024;

/// Models listed by `GET /v1/models`.
const MODELS: &[(&str, u64)] = &[
    ("gpt-4o", 1_715_367_049),
    ("gpt-4o-mini", 1_721_172_741),
    ("gpt-4.1", 1_744_316_542),
    ("gpt-4.1-mini", 1_744_318_173),
    ("text-embedding-3-small", 1_705_948_997),
    ("text-embedding-3-large", 1_705_953_180),
];

// ---------------------------------------------------------------------------------------------
// Request parsing and validation
// ---------------------------------------------------------------------------------------------

/// A validated chat request, borrowing from the parsed body.
#[derive(Debug)]
pub(crate) struct ChatRequest<'a> {
    pub model: Cow<'a, str>,
    pub stream: bool,
    pub include_usage: bool,
    pub logprobs: bool,
    pub top_logprobs: u32,
    /// What to answer: `n`, `max_completion_tokens` (else `max_tokens`), function tools
    /// (custom tools are accepted and never called), `tool_choice`, `parallel_tool_calls`,
    /// `response_format`, `stop`.
    pub ask: Ask<'a>,
}

fn type_error(param: &str, expected: &str) -> OpenAiError {
    OpenAiError::invalid(
        format!("Invalid type for '{param}': expected {expected}."),
        Some(param),
    )
    .with_code("invalid_type")
}

fn opt_bool(body: &Map<String, Value>, key: &str) -> Result<Option<bool>, OpenAiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(type_error(key, "a boolean")),
    }
}

fn opt_uint(body: &Map<String, Value>, key: &str) -> Result<Option<u64>, OpenAiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                Ok(Some(u))
            } else if n.as_i64().is_some() {
                // Negative: reported as below the minimum by the caller's range check.
                Ok(Some(0))
            } else {
                Err(type_error(key, "an integer"))
            }
        }
        Some(_) => Err(type_error(key, "an integer")),
    }
}

fn below_min(param: &str, min: u64, got: u64) -> OpenAiError {
    OpenAiError::invalid(
        format!(
            "Invalid '{param}': integer below minimum value. Expected a value >= {min}, but got {got} instead."
        ),
        Some(param),
    )
    .with_code("integer_below_min_value")
}

fn above_max(param: &str, max: u64, got: u64) -> OpenAiError {
    OpenAiError::invalid(
        format!(
            "Invalid '{param}': integer above maximum value. Expected a value <= {max}, but got {got} instead."
        ),
        Some(param),
    )
    .with_code("integer_above_max_value")
}

/// The model: the Azure deployment when the path names one, else the body's `model`.
fn model_of<'a>(
    body: &'a Map<String, Value>,
    dialect: &Dialect,
) -> Result<Cow<'a, str>, OpenAiError> {
    if let Dialect::Azure { deployment } = dialect {
        return Ok(Cow::Owned(deployment.clone()));
    }
    match body.get("model") {
        None | Some(Value::Null) => Err(OpenAiError::invalid(
            "you must provide a model parameter",
            Some("model"),
        )),
        Some(Value::String(s)) if s.is_empty() => Err(OpenAiError::invalid(
            "you must provide a model parameter",
            Some("model"),
        )),
        Some(Value::String(s)) => Ok(Cow::Borrowed(s.as_str())),
        Some(_) => Err(type_error("model", "a string")),
    }
}

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

pub(crate) fn parse_chat<'a>(
    body: &'a Value,
    dialect: &Dialect,
) -> Result<ChatRequest<'a>, OpenAiError> {
    let Some(obj) = body.as_object() else {
        return Err(OpenAiError::invalid(
            "The request body must be a JSON object.",
            None,
        ));
    };
    let model = model_of(obj, dialect)?;

    let messages = match obj.get("messages") {
        None | Some(Value::Null) => return Err(OpenAiError::missing("messages")),
        Some(Value::Array(m)) => m.as_slice(),
        Some(_) => return Err(type_error("messages", "an array")),
    };
    if messages.is_empty() {
        return Err(OpenAiError::invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            Some("messages"),
        )
        .with_code("empty_array"));
    }
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str);
        match role {
            Some(r) if ROLES.contains(&r) => {}
            Some(r) => {
                return Err(OpenAiError::invalid(
                    format!(
                        "Invalid value: '{r}'. Supported values are: 'system', 'developer', 'user', 'assistant', 'tool', and 'function'."
                    ),
                    Some(&format!("messages[{i}].role")),
                )
                .with_code("invalid_value"));
            }
            None => {
                return Err(OpenAiError::missing(&format!("messages[{i}].role")));
            }
        }
    }

    let stream = opt_bool(obj, "stream")?.unwrap_or(false);
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(opts) => {
            if !stream {
                return Err(OpenAiError::invalid(
                    "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                    Some("stream_options"),
                )
                .with_code("invalid_value"));
            }
            let Some(opts) = opts.as_object() else {
                return Err(type_error("stream_options", "an object"));
            };
            opt_bool(opts, "include_usage")
                .map_err(|_| type_error("stream_options.include_usage", "a boolean"))?
                .unwrap_or(false)
        }
    };

    let n = opt_uint(obj, "n")?.unwrap_or(1);
    if n < 1 {
        return Err(below_min("n", 1, n));
    }
    if n > MAX_N {
        return Err(above_max("n", MAX_N, n));
    }

    let mut max_tokens = None;
    for key in ["max_tokens", "max_completion_tokens"] {
        if let Some(v) = opt_uint(obj, key)? {
            if v < 1 {
                return Err(below_min(key, 1, v));
            }
            // The newer field wins when both are sent (it is checked second).
            max_tokens = Some(v);
        }
    }

    let logprobs = opt_bool(obj, "logprobs")?.unwrap_or(false);
    let top_logprobs = opt_uint(obj, "top_logprobs")?;
    if let Some(t) = top_logprobs {
        if t > MAX_TOP_LOGPROBS {
            return Err(above_max("top_logprobs", MAX_TOP_LOGPROBS, t));
        }
        if !logprobs {
            return Err(OpenAiError::invalid(
                "Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.",
                Some("top_logprobs"),
            )
            .with_code("invalid_value"));
        }
    }

    let tools = parse_tools(obj)?;
    let tool_choice = parse_tool_choice(obj, &tools)?;
    let parallel_tool_calls = opt_bool(obj, "parallel_tool_calls")?.unwrap_or(true);
    let response_format = parse_response_format(obj)?;

    let stop = parse_stop(obj)?;

    let seed = {
        let mut h = Fnv1a::default();
        for m in messages {
            h.write_json(m);
        }
        h.finish()
    };
    let user_turn = messages
        .last()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| content_text(m.get("content")));
    let ask = Ask {
        enc: encoding_for(&model),
        seed,
        n: n as u32,
        max_tokens,
        tools,
        tool_choice,
        parallel_tool_calls,
        format: response_format,
        stop,
        user_turn,
    };
    Ok(ChatRequest {
        model,
        stream,
        include_usage,
        logprobs,
        top_logprobs: top_logprobs.unwrap_or(0) as u32,
        ask,
    })
}

/// OpenAI's cap on stop sequences.
const MAX_STOP: usize = 4;

/// `stop`: a string or up to four strings.
fn parse_stop(obj: &Map<String, Value>) -> Result<Vec<&str>, OpenAiError> {
    match obj.get("stop") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.as_str()]),
        Some(Value::Array(items)) => {
            if items.len() > MAX_STOP {
                return Err(OpenAiError::invalid(
                    format!(
                        "Invalid 'stop': array too long. Expected an array with maximum length {MAX_STOP}, but got an array with length {} instead.",
                        items.len()
                    ),
                    Some("stop"),
                )
                .with_code("array_above_max_length"));
            }
            items
                .iter()
                .map(|i| {
                    i.as_str()
                        .ok_or_else(|| type_error("stop", "a string or an array of strings"))
                })
                .collect()
        }
        Some(_) => Err(type_error("stop", "a string or an array of strings")),
    }
}

fn parse_tools(obj: &Map<String, Value>) -> Result<Vec<ToolDef<'_>>, OpenAiError> {
    let list = match obj.get("tools") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(t)) => t,
        Some(_) => return Err(type_error("tools", "an array")),
    };
    let mut tools = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        match t.get("type").and_then(Value::as_str) {
            Some("function") => {
                let f = t.get("function");
                let Some(name) = f.and_then(|f| f.get("name")).and_then(Value::as_str) else {
                    return Err(OpenAiError::missing(&format!("tools[{i}].function.name")));
                };
                let parameters = f.and_then(|f| f.get("parameters")).filter(|p| !p.is_null());
                tools.push(ToolDef { name, parameters });
            }
            // Custom tools are accepted; the sim never calls them.
            Some("custom") => {}
            _ => return Err(OpenAiError::missing(&format!("tools[{i}].type"))),
        }
    }
    Ok(tools)
}

fn named_function(v: &Value) -> Option<&str> {
    v.get("function")
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str)
}

fn parse_tool_choice<'a>(
    obj: &'a Map<String, Value>,
    tools: &[ToolDef<'a>],
) -> Result<ToolChoice<'a>, OpenAiError> {
    let Some(tc) = obj.get("tool_choice").filter(|v| !v.is_null()) else {
        return Ok(ToolChoice::Auto);
    };
    let has_tools = obj
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    if !has_tools {
        return Err(OpenAiError::invalid(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
            Some("tool_choice"),
        ));
    }
    let bad = || {
        OpenAiError::invalid("Invalid value for 'tool_choice'.", Some("tool_choice"))
            .with_code("invalid_value")
    };
    match tc {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            _ => Err(bad()),
        },
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = named_function(tc).ok_or_else(bad)?;
                if !tools.iter().any(|t| t.name == name) {
                    return Err(OpenAiError::invalid(
                        format!(
                            "Invalid value for 'tool_choice': function '{name}' not found in 'tools'."
                        ),
                        Some("tool_choice"),
                    ));
                }
                Ok(ToolChoice::Named(name))
            }
            Some("allowed_tools") => {
                let names = o
                    .get("allowed_tools")
                    .and_then(|a| a.get("tools"))
                    .and_then(Value::as_array)
                    .ok_or_else(bad)?
                    .iter()
                    .filter_map(named_function)
                    .collect();
                Ok(ToolChoice::Allowed(names))
            }
            // Custom tool choices: the sim does not call custom tools; treat as auto.
            Some("custom") => Ok(ToolChoice::Auto),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

fn parse_response_format(obj: &Map<String, Value>) -> Result<ResponseFormat<'_>, OpenAiError> {
    let Some(rf) = obj.get("response_format").filter(|v| !v.is_null()) else {
        return Ok(ResponseFormat::Text);
    };
    match rf.get("type").and_then(Value::as_str) {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let Some(js) = rf.get("json_schema").filter(|v| v.is_object()) else {
                return Err(OpenAiError::missing("response_format.json_schema"));
            };
            Ok(ResponseFormat::JsonSchema(
                js.get("schema").filter(|s| !s.is_null()),
            ))
        }
        _ => Err(OpenAiError::invalid(
            "Invalid value for 'response_format.type'. Supported values are: 'text', 'json_object', and 'json_schema'.",
            Some("response_format.type"),
        )
        .with_code("invalid_value")),
    }
}

// ---------------------------------------------------------------------------------------------
// Planning helpers (the planning itself is `crate::plan`)
// ---------------------------------------------------------------------------------------------

/// OpenAI's `finish_reason` for a plan's end (a matched stop sequence is a plain `stop`).
fn finish_reason(f: &Finish) -> &'static str {
    match f {
        Finish::Stop | Finish::StopSequence(_) => "stop",
        Finish::Length => "length",
        Finish::ToolCalls => "tool_calls",
    }
}

// ---------------------------------------------------------------------------------------------
// Output shapes
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Serialize)]
struct PromptDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct CompletionDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
    completion_tokens_details: CompletionDetails,
}

impl UsageOut {
    /// `prompt_tokens` includes the cached tokens; `cached_tokens` says how many they are.
    fn new(prompt: PromptUsage, completion: u64) -> Self {
        UsageOut {
            prompt_tokens: prompt.total,
            completion_tokens: completion,
            total_tokens: prompt.total.saturating_add(completion),
            prompt_tokens_details: PromptDetails {
                cached_tokens: prompt.cached,
                audio_tokens: 0,
            },
            completion_tokens_details: CompletionDetails {
                reasoning_tokens: 0,
                audio_tokens: 0,
                accepted_prediction_tokens: 0,
                rejected_prediction_tokens: 0,
            },
        }
    }
}

#[derive(Debug, Serialize)]
struct TopLogprob {
    token: String,
    logprob: f64,
    bytes: Vec<u8>,
}

#[derive(Debug, Serialize)]
struct TokenLogprob {
    token: String,
    logprob: f64,
    bytes: Vec<u8>,
    top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Serialize)]
struct LogprobsOut {
    content: Option<Vec<TokenLogprob>>,
    refusal: Option<()>,
}

/// Deterministic logprob entries for pieces `offset..offset+pieces.len()` of a choice.
fn logprob_entries(
    pieces: &[Cow<'static, str>],
    offset: usize,
    seed: u64,
    top: u32,
) -> Vec<TokenLogprob> {
    pieces
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let h = mix64(seed ^ ((offset + i) as u64));
            // In (-0.5, -0.01]: confident but not certain.
            let logprob = -0.01 - (h % 490) as f64 / 1000.0;
            let mut top_logprobs = Vec::with_capacity(top as usize);
            if top > 0 {
                top_logprobs.push(TopLogprob {
                    token: p.to_string(),
                    logprob,
                    bytes: p.as_bytes().to_vec(),
                });
            }
            let lead = if offset + i == 0 { "" } else { " " };
            let mut j = 0u64;
            while top_logprobs.len() < top as usize && j < 2 * VOCAB.len() as u64 {
                let w = VOCAB[((h >> 8).wrapping_add(j * 37) % VOCAB.len() as u64) as usize];
                let alt = format!("{lead}{w}");
                j += 1;
                if alt == **p || top_logprobs.iter().any(|t| t.token == alt) {
                    continue;
                }
                let lp = logprob - 1.0 - top_logprobs.len() as f64 * 0.75;
                top_logprobs.push(TopLogprob {
                    bytes: alt.as_bytes().to_vec(),
                    token: alt,
                    logprob: lp,
                });
            }
            TokenLogprob {
                token: p.to_string(),
                logprob,
                bytes: p.as_bytes().to_vec(),
                top_logprobs,
            }
        })
        .collect()
}

#[derive(Debug, Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: String,
}

#[derive(Debug, Serialize)]
struct ToolCallOut<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Debug, Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: Option<String>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
    annotations: [(); 0],
}

#[derive(Debug, Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    message: MessageOut<'a>,
    logprobs: Option<LogprobsOut>,
    finish_reason: &'a str,
}

#[derive(Debug, Serialize)]
struct CompletionOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChoiceOut<'a>>,
    usage: UsageOut,
    service_tier: &'static str,
    system_fingerprint: &'static str,
}

#[derive(Debug, Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Debug, Serialize)]
struct ToolCallDelta<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Debug, Default, Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    /// `Some(None)` renders `"content": null` (first chunk of a tool-call answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

#[derive(Debug, Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<LogprobsOut>,
    finish_reason: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct ChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: Vec<ChunkChoice<'a>>,
    /// `None`: no `usage` key; `Some(None)`: `"usage": null`; `Some(Some(u))`: the usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<UsageOut>>,
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

fn render_completion(
    id: &str,
    created: u64,
    model: &str,
    plans: &[ChoicePlan],
    usage: UsageOut,
    req: &ChatRequest<'_>,
) -> Vec<u8> {
    let choices = plans
        .iter()
        .map(|p| {
            let (content, tool_calls, logprobs) = match &p.body {
                ChoiceBody::Text(pieces) => {
                    let lp = req.logprobs.then(|| LogprobsOut {
                        content: Some(logprob_entries(pieces, 0, p.seed, req.top_logprobs)),
                        refusal: None,
                    });
                    (Some(pieces.concat()), Vec::new(), lp)
                }
                ChoiceBody::ToolCalls(calls) => {
                    let tc = calls
                        .iter()
                        .map(|c| ToolCallOut {
                            id: c.id(CALL_ID_PREFIX),
                            kind: "function",
                            function: FunctionOut {
                                name: &c.name,
                                arguments: c.pieces.concat(),
                            },
                        })
                        .collect();
                    let lp = req.logprobs.then_some(LogprobsOut {
                        content: None,
                        refusal: None,
                    });
                    (None, tc, lp)
                }
            };
            ChoiceOut {
                index: p.index,
                message: MessageOut {
                    role: "assistant",
                    content,
                    refusal: None,
                    tool_calls,
                    annotations: [],
                },
                logprobs,
                finish_reason: finish_reason(&p.finish),
            }
        })
        .collect();
    let out = CompletionOut {
        id,
        object: "chat.completion",
        created,
        model,
        choices,
        usage,
        service_tier: "default",
        system_fingerprint: FINGERPRINT,
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

/// SSE frames for a streamed answer, plus the index of the first frame carrying a
/// `finish_reason` (a cut must happen before it).
struct StreamFrames {
    frames: Vec<Bytes>,
    first_finish: usize,
}

fn sse_frame(chunk: &ChunkOut<'_>) -> Bytes {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut buf, chunk).is_err() {
        buf.truncate(6);
        buf.extend_from_slice(b"{}");
    }
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

fn render_stream(
    id: &str,
    created: u64,
    model: &str,
    plans: &[ChoicePlan],
    usage: Option<UsageOut>,
    req: &ChatRequest<'_>,
    chunks: u32,
) -> StreamFrames {
    let usage_null = usage.map(|_| None);
    let frame = |choice: ChunkChoice<'_>| {
        sse_frame(&ChunkOut {
            id,
            object: "chat.completion.chunk",
            created,
            model,
            system_fingerprint: FINGERPRINT,
            choices: vec![choice],
            usage: usage_null,
        })
    };
    let mut frames = Vec::new();
    let mut first_finish = usize::MAX;
    for p in plans {
        match &p.body {
            ChoiceBody::Text(pieces) => {
                frames.push(frame(ChunkChoice {
                    index: p.index,
                    delta: Delta {
                        role: Some("assistant"),
                        content: Some(Some("")),
                        tool_calls: None,
                    },
                    logprobs: None,
                    finish_reason: None,
                }));
                for r in group_ranges(pieces.len(), chunks) {
                    let text = pieces[r.clone()].concat();
                    let logprobs = req.logprobs.then(|| LogprobsOut {
                        content: Some(logprob_entries(
                            &pieces[r.clone()],
                            r.start,
                            p.seed,
                            req.top_logprobs,
                        )),
                        refusal: None,
                    });
                    frames.push(frame(ChunkChoice {
                        index: p.index,
                        delta: Delta {
                            content: Some(Some(&text)),
                            ..Delta::default()
                        },
                        logprobs,
                        finish_reason: None,
                    }));
                }
            }
            ChoiceBody::ToolCalls(calls) => {
                for (k, c) in calls.iter().enumerate() {
                    // The first fragment of each call carries id, type, name and empty
                    // arguments; the first one of the answer also carries the role.
                    let call_id = c.id(CALL_ID_PREFIX);
                    let header = ToolCallDelta {
                        index: k,
                        id: Some(&call_id),
                        kind: Some("function"),
                        function: FunctionDelta {
                            name: Some(&c.name),
                            arguments: "",
                        },
                    };
                    let delta = if k == 0 {
                        Delta {
                            role: Some("assistant"),
                            content: Some(None),
                            tool_calls: Some([header]),
                        }
                    } else {
                        Delta {
                            tool_calls: Some([header]),
                            ..Delta::default()
                        }
                    };
                    frames.push(frame(ChunkChoice {
                        index: p.index,
                        delta,
                        logprobs: None,
                        finish_reason: None,
                    }));
                    for r in group_ranges(c.pieces.len(), chunks) {
                        let args = c.pieces[r].concat();
                        frames.push(frame(ChunkChoice {
                            index: p.index,
                            delta: Delta {
                                tool_calls: Some([ToolCallDelta {
                                    index: k,
                                    id: None,
                                    kind: None,
                                    function: FunctionDelta {
                                        name: None,
                                        arguments: &args,
                                    },
                                }]),
                                ..Delta::default()
                            },
                            logprobs: None,
                            finish_reason: None,
                        }));
                    }
                }
                if calls.is_empty() {
                    frames.push(frame(ChunkChoice {
                        index: p.index,
                        delta: Delta {
                            role: Some("assistant"),
                            content: Some(None),
                            tool_calls: None,
                        },
                        logprobs: None,
                        finish_reason: None,
                    }));
                }
            }
        }
        first_finish = first_finish.min(frames.len());
        frames.push(frame(ChunkChoice {
            index: p.index,
            delta: Delta::default(),
            logprobs: None,
            finish_reason: Some(finish_reason(&p.finish)),
        }));
    }
    if let Some(u) = usage {
        frames.push(sse_frame(&ChunkOut {
            id,
            object: "chat.completion.chunk",
            created,
            model,
            system_fingerprint: FINGERPRINT,
            choices: Vec::new(),
            usage: Some(Some(u)),
        }));
    }
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    StreamFrames {
        frames,
        first_finish,
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

fn parse_json(body: &[u8]) -> Result<Value, OpenAiError> {
    serde_json::from_slice(body).map_err(|_| OpenAiError::invalid_json())
}

fn injected(f: InjectedFailure) -> Response<SimBody> {
    OpenAiError::injected(f.status, f.retry_after_secs).into_response()
}

/// `POST /v1/chat/completions` (and the Azure equivalents).
pub(crate) async fn chat(
    ctx: Ctx,
    dialect: &Dialect,
    body: Bytes,
) -> Result<Response<SimBody>, Failure> {
    let value = parse_json(&body)?;
    let req = parse_chat(&value, dialect)?;
    let prompt_tokens = count_chat_prompt(req.ask.enc, &value);
    if let Some(r) = ctx.generation_fault(prompt_tokens).await? {
        return Ok(match r {
            Refusal::Fail(f) => injected(f),
            Refusal::ContextWindow { prompt, window } => {
                OpenAiError::context_window(prompt, window).into_response()
            }
            Refusal::ContentFilter => match dialect {
                Dialect::OpenAi => OpenAiError::content_policy().into_response(),
                Dialect::Azure { .. } | Dialect::AzureV1 => crate::error::azure_content_filter(),
            },
        });
    }

    let prompt = ctx.prompt_usage(prompt_tokens, || {
        let enc = req.ask.enc;
        PromptPrefixes::new(
            &req.model,
            &[value.get("tools")],
            messages_of(&value, "messages"),
            |m| count_chat_message(enc, m),
            REPLY_PRIMING,
            prompt_tokens,
        )
    });
    let plans = plan_answers(&req.ask, &ctx.cfg);
    let completion_tokens: u64 = plans.iter().map(|p| p.tokens).sum();
    let usage = UsageOut::new(prompt, completion_tokens);
    let id = format!("chatcmpl-{:016x}{:016x}", next_id(), next_id());
    let created = unix_now();

    if !req.stream {
        let body = render_completion(&id, created, &req.model, &plans, usage, &req);
        return Ok(ctx.answer_json(body, prompt, completion_tokens).await);
    }

    let send_usage = req.include_usage && ctx.cfg.stream_usage;
    let StreamFrames {
        frames,
        first_finish,
    } = render_stream(
        &id,
        created,
        &req.model,
        &plans,
        send_usage.then_some(usage),
        &req,
        ctx.cfg.chunks,
    );
    Ok(ctx
        .answer_stream(
            frames,
            first_finish,
            // Frame 0 is the role chunk.
            1,
            |_| crate::error::openai_stream_error_frame(),
            SSE,
            prompt,
            completion_tokens,
        )
        .await)
}

/// One embeddings input, for hashing into a vector.
enum EmbeddingItem<'a> {
    Text(&'a str),
    Tokens(&'a Value),
}

fn embedding_items(input: &Value) -> Result<Vec<EmbeddingItem<'_>>, OpenAiError> {
    let invalid = || {
        OpenAiError::invalid(
            "'input' must be a non-empty string, an array of non-empty strings, an array of integers, or an array of arrays of integers.",
            Some("input"),
        )
        .with_code("invalid_value")
    };
    let items = match input {
        Value::String(s) if !s.is_empty() => vec![EmbeddingItem::Text(s)],
        Value::Array(a) if a.is_empty() => return Err(invalid()),
        Value::Array(a) if a.iter().all(Value::is_u64) => vec![EmbeddingItem::Tokens(input)],
        Value::Array(a) => a
            .iter()
            .map(|i| match i {
                Value::String(s) if !s.is_empty() => Ok(EmbeddingItem::Text(s)),
                Value::Array(ids) if !ids.is_empty() && ids.iter().all(Value::is_u64) => {
                    Ok(EmbeddingItem::Tokens(i))
                }
                _ => Err(invalid()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(invalid()),
    };
    if items.len() > MAX_EMBEDDING_INPUTS {
        return Err(OpenAiError::invalid(
            format!("'input' must have at most {MAX_EMBEDDING_INPUTS} items."),
            Some("input"),
        ));
    }
    Ok(items)
}

/// A deterministic unit vector for one input: the same text always embeds the same way,
/// whatever else is in the batch (and whichever format asked).
fn embed(item: &EmbeddingItem<'_>, dims: usize) -> Vec<f32> {
    let seed = match item {
        EmbeddingItem::Text(s) => hash_str(s),
        EmbeddingItem::Tokens(v) => hash_json(v),
    };
    unit_vector(seed, dims)
}

#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingValue {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingOut {
    object: &'static str,
    index: usize,
    embedding: EmbeddingValue,
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct EmbeddingsOut<'a> {
    object: &'static str,
    data: Vec<EmbeddingOut>,
    model: &'a str,
    usage: EmbeddingUsage,
}

/// `POST /v1/embeddings` (and the Azure equivalents).
pub(crate) async fn embeddings(
    ctx: Ctx,
    dialect: &Dialect,
    body: Bytes,
) -> Result<Response<SimBody>, Failure> {
    let value = parse_json(&body)?;
    let Some(obj) = value.as_object() else {
        return Err(OpenAiError::invalid("The request body must be a JSON object.", None).into());
    };
    let model = model_of(obj, dialect)?;
    let input = match obj.get("input") {
        None | Some(Value::Null) => return Err(OpenAiError::missing("input").into()),
        Some(i) => i,
    };
    let items = embedding_items(input)?;
    let dims = match opt_uint(obj, "dimensions")? {
        None => DEFAULT_EMBEDDING_DIMS,
        Some(0) => return Err(below_min("dimensions", 1, 0).into()),
        Some(d) if d > MAX_EMBEDDING_DIMS => {
            return Err(above_max("dimensions", MAX_EMBEDDING_DIMS, d).into());
        }
        Some(d) => d,
    } as usize;
    if items.len().saturating_mul(dims) > MAX_EMBEDDING_VALUES {
        return Err(OpenAiError::invalid(
            format!("'input' × 'dimensions' exceeds {MAX_EMBEDDING_VALUES} values."),
            Some("dimensions"),
        )
        .into());
    }
    let base64 = match obj.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "float" => false,
        Some(Value::String(s)) if s == "base64" => true,
        Some(_) => {
            return Err(OpenAiError::invalid(
                "Invalid value for 'encoding_format': expected 'float' or 'base64'.",
                Some("encoding_format"),
            )
            .with_code("invalid_value")
            .into());
        }
    };
    if let Some(f) = ctx.pre_answer_fault().await? {
        return Ok(injected(f));
    }

    let prompt_tokens = count_embedding_input(Encoding::for_model(&model), input);
    let data = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let v = embed(item, dims);
            let embedding = if base64 {
                // The OpenAI Python SDK asks for base64 by default and decodes packed
                // little-endian f32.
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                EmbeddingValue::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                EmbeddingValue::Float(v)
            };
            EmbeddingOut {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    let out = EmbeddingsOut {
        object: "list",
        data,
        model: &model,
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    };
    let body = serde_json::to_vec(&out).unwrap_or_default();
    Ok(ctx
        .answer_json(body, PromptUsage::new(prompt_tokens, 0), 0)
        .await)
}

/// `GET /v1/models`.
pub(crate) fn models() -> Response<SimBody> {
    let data: Vec<Value> = MODELS
        .iter()
        .map(|(id, created)| {
            json!({"id": id, "object": "model", "created": created, "owned_by": "tollgate-sim"})
        })
        .collect();
    let body = serde_json::to_vec(&json!({"object": "list", "data": data})).unwrap_or_default();
    json_response(StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::plan_choices;

    fn plan(body: Value, default_len: u32) -> Vec<ChoicePlan> {
        let req = parse_chat(&body, &Dialect::OpenAi).unwrap();
        plan_choices(&req.ask, default_len)
    }

    #[test]
    fn text_plan_is_deterministic_and_sized() {
        let body = json!({"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"n":2});
        let a = plan(body.clone(), 10);
        let b = plan(body, 10);
        assert_eq!(a.len(), 2);
        for (x, y) in a.iter().zip(&b) {
            let (ChoiceBody::Text(px), ChoiceBody::Text(py)) = (&x.body, &y.body) else {
                panic!("text expected")
            };
            assert_eq!(px, py);
            assert_eq!(px.len(), 10);
            assert_eq!(x.tokens, 10);
            assert_eq!(finish_reason(&x.finish), "stop");
        }
        let body =
            json!({"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":3});
        let p = plan(body, 10);
        assert_eq!(p[0].tokens, 3);
        assert_eq!(finish_reason(&p[0].finish), "length");
    }

    #[test]
    fn tool_plan_respects_budget() {
        let body = json!({"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],
            "max_tokens": 2,
            "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object",
                "properties":{"city":{"type":"string"}},"required":["city"]}}}]});
        let p = plan(body, 10);
        assert_eq!(finish_reason(&p[0].finish), "length");
        assert!(p[0].tokens <= 2);
    }

    #[test]
    fn stop_is_validated_and_applied() {
        let ok = |stop: Value| {
            let body = json!({"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],
                "stop": stop});
            parse_chat(&body, &Dialect::OpenAi).map(|r| r.ask.stop.len())
        };
        assert_eq!(ok(json!("x")).unwrap(), 1);
        assert_eq!(ok(json!(["a", "b"])).unwrap(), 2);
        assert_eq!(ok(Value::Null).unwrap(), 0);
        assert!(ok(json!(["a", "b", "c", "d", "e"])).is_err());
        assert!(ok(json!([1])).is_err());
        assert!(ok(json!(1)).is_err());
    }
}
