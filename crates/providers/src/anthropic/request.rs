//! Canonical (OpenAI Chat Completions) request → Anthropic Messages request body.
//!
//! Wire format: Anthropic Messages API, `anthropic-version: 2023-06-01` (field names as in the
//! official SDK's `message_create_params.py` and `*_block_param.py`).
//!
//! Anthropic rejects fields it does not know, so the body is *built*, not patched: only fields
//! with an Anthropic meaning are sent. Each mapping and the reason for it is documented at the
//! function that does it; the short version:
//!
//! | OpenAI | Anthropic |
//! |---|---|
//! | `system` / `developer` messages (anywhere) | top-level `system` (string, or text blocks when several) |
//! | `user` content parts `text`, `image_url` (data URL / http URL), `file` (base64 PDF) | `text`, `image` (base64 / url source), `document` blocks |
//! | `assistant` content + `tool_calls` | `text` + `tool_use` blocks (`arguments` parsed into `input`) |
//! | `tool` messages | `tool_result` blocks in one `user` turn (consecutive results merged) |
//! | `tools[].function` | `tools[]` with `input_schema` |
//! | `tool_choice` auto / required / named / none | `auto` / `any` / `tool` / `none` |
//! | `parallel_tool_calls: false` | `tool_choice.disable_parallel_tool_use: true` |
//! | `response_format` json_schema | `output_config.format` (json_schema) |
//! | `response_format` json_object | an instruction appended to `system` |
//! | `stop` | `stop_sequences` |
//! | `temperature` (0–2) | `temperature` clamped to 0–1 |
//! | `top_p` (and a non-standard `top_k`) | same |
//! | `max_completion_tokens` / `max_tokens` | `max_tokens` (required: defaulted from the model's cap) |
//! | `reasoning_effort` | `thinking: {type: enabled, budget_tokens}` |
//! | `user` (else `safety_identifier`) | `metadata.user_id` |
//!
//! What cannot be translated (audio parts, `file_id` references, custom tools, unknown part or
//! tool types) is forwarded **verbatim** rather than dropped: Anthropic then rejects it with a
//! 400 that names the field, which the client receives as `upstream_bad_request`. Dropping it
//! silently would answer a different question than the one asked. A side effect is useful:
//! Anthropic-native blocks (e.g. a server tool such as `web_search_20250305`) can be sent through
//! the OpenAI endpoint. Fields with no Anthropic equivalent and no effect on the answer's meaning
//! (`n`, penalties, `seed`, `logprobs`, `logit_bias`, `store`, OpenAI `metadata`,
//! `service_tier`, `stream_options`) are not sent.

use serde_json::{Map, Value, json};

use crate::OutputLimits;

/// `max_tokens` when the client set none and the model's ceiling is unknown: every
/// Claude model since Claude 3 accepts 4096 output tokens.
pub const FALLBACK_MAX_TOKENS: u64 = 4096;

/// Upper bound on a *defaulted* `max_tokens` for non-streaming calls. The official SDKs refuse
/// non-streaming calls whose `max_tokens` implies more than 10 minutes of generation
/// (`3600 s × max_tokens / 128 000 > 600 s`, i.e. above 21 333 tokens), and Tollgate's default
/// total timeout is the same 10 minutes: asking for more could only end in a timeout.
pub const NON_STREAMING_MAX_TOKENS: u64 = 21_333;

/// Anthropic's minimum `thinking.budget_tokens`.
pub const MIN_THINKING_BUDGET: u64 = 1024;

/// Appended to `system` for `response_format: {type: "json_object"}`. Anthropic has no
/// JSON-object mode; `output_config.format` needs a schema, and prefilling `{` is rejected when
/// thinking is on and on recent models. OpenAI's own contract for json_object is that the
/// prompt asks for JSON, so reinforcing that instruction is the faithful translation.
pub const JSON_OBJECT_INSTRUCTION: &str =
    "Respond with a single valid JSON object only, with no text before or after it.";

/// The Messages request for a canonical chat request. Never fails: anything that cannot be
/// translated is forwarded as-is for the upstream to judge (see the module docs).
pub fn to_messages_request(
    body: &Map<String, Value>,
    stream: bool,
    limits: &OutputLimits,
) -> Map<String, Value> {
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);

    let mut system: Vec<Value> = Vec::new();
    let mut turns: Vec<Entry> = Vec::new();
    for m in messages {
        translate_message(m, &mut system, &mut turns);
    }
    let json_object = body
        .get("response_format")
        .and_then(|r| r.get("type"))
        .and_then(Value::as_str)
        == Some("json_object");
    if json_object {
        system.push(text_block(JSON_OBJECT_INSTRUCTION));
    }

    let max_tokens = client_max_tokens(body)
        .unwrap_or_else(|| default_max_tokens(limits.max_output_tokens(model), stream));
    let tools = translate_tools(body.get("tools"));
    let tool_choice = tools.as_ref().and_then(|_| {
        translate_tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    });

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_string()));
    out.insert("max_tokens".into(), max_tokens.into());
    if let Some(s) = system_value(system) {
        out.insert("system".into(), s);
    }
    out.insert(
        "messages".into(),
        Value::Array(turns.into_iter().map(Entry::into_value).collect()),
    );
    if let Some(t) = tools {
        out.insert("tools".into(), Value::Array(t));
    }
    let forced_tool = tool_choice
        .as_ref()
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str)
        .is_some_and(|t| t == "any" || t == "tool");
    if let Some(c) = tool_choice {
        out.insert("tool_choice".into(), c);
    }
    if let Some(s) = stop_sequences(body.get("stop")) {
        out.insert("stop_sequences".into(), s);
    }
    if let Some(t) = body.get("temperature").and_then(Value::as_f64) {
        // OpenAI's range is 0–2, Anthropic's 0–1: clamping keeps "as random as allowed"
        // instead of failing a request that was valid where the client wrote it.
        out.insert("temperature".into(), t.clamp(0.0, 1.0).into());
    }
    if let Some(p) = body.get("top_p").filter(|v| v.is_number()) {
        out.insert("top_p".into(), p.clone());
    }
    // Not an OpenAI field, but OpenAI-compatible servers (vLLM, Together) accept it and
    // clients send it; Anthropic has the same parameter.
    if let Some(k) = body.get("top_k").filter(|v| v.is_u64()) {
        out.insert("top_k".into(), k.clone());
    }
    let user = ["user", "safety_identifier"].iter().find_map(|k| {
        body.get(*k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    });
    if let Some(u) = user {
        out.insert("metadata".into(), json!({ "user_id": u }));
    }
    let mid_tool_loop = last_assistant_has_tool_calls(messages);
    if let Some(t) = thinking(
        body.get("reasoning_effort"),
        max_tokens,
        forced_tool,
        mid_tool_loop,
    ) {
        out.insert("thinking".into(), t);
    }
    if let Some(f) = output_format(body.get("response_format")) {
        out.insert("output_config".into(), json!({ "format": f }));
    }
    if stream {
        out.insert("stream".into(), Value::Bool(true));
    }
    out
}

/// `max_completion_tokens` (preferred by OpenAI), else the deprecated `max_tokens`.
fn client_max_tokens(body: &Map<String, Value>) -> Option<u64> {
    ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64))
}

/// `max_tokens` for a request that set none (Anthropic requires it): the model's output
/// ceiling (`ceiling`, from the adapter's [`OutputLimits`] — the same limit admission reserves
/// budget for, so the reservation and the upstream's ceiling agree), capped at
/// [`NON_STREAMING_MAX_TOKENS`] for non-streaming calls; [`FALLBACK_MAX_TOKENS`] when unknown.
pub fn default_max_tokens(ceiling: Option<u64>, stream: bool) -> u64 {
    let cap = ceiling.unwrap_or(FALLBACK_MAX_TOKENS);
    if stream {
        cap
    } else {
        cap.min(NON_STREAMING_MAX_TOKENS)
    }
}

/// One element of `messages`: a translated turn, or a message with a role Anthropic does not
/// have (legacy `function`, anything newer), forwarded verbatim.
enum Entry {
    Turn {
        role: &'static str,
        blocks: Vec<Value>,
    },
    Raw(Value),
}

impl Entry {
    fn into_value(self) -> Value {
        match self {
            Entry::Raw(v) => v,
            Entry::Turn { role, mut blocks } => {
                // A lone plain text block is sent in the string shorthand, as clients write it.
                let content = if blocks.len() == 1 && is_plain_text(&blocks[0]) {
                    blocks
                        .swap_remove(0)
                        .get("text")
                        .cloned()
                        .unwrap_or_default()
                } else {
                    Value::Array(blocks)
                };
                json!({ "role": role, "content": content })
            }
        }
    }
}

fn is_plain_text(block: &Value) -> bool {
    block.as_object().is_some_and(|o| {
        o.len() == 2
            && o.get("type").and_then(Value::as_str) == Some("text")
            && o.contains_key("text")
    })
}

/// Appends blocks to the conversation. Anthropic merges consecutive same-role turns anyway;
/// merging here keeps parallel tool results in the one user turn the API documents, with the
/// `tool_result` blocks first (a user message following tool messages lands after them).
fn push_turn(turns: &mut Vec<Entry>, role: &'static str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(Entry::Turn { role: r, blocks: b }) = turns.last_mut()
        && *r == role
    {
        b.extend(blocks);
        return;
    }
    turns.push(Entry::Turn { role, blocks });
}

fn translate_message(m: &Value, system: &mut Vec<Value>, turns: &mut Vec<Entry>) {
    let role = m.get("role").and_then(Value::as_str).unwrap_or("");
    let content = m.get("content").unwrap_or(&Value::Null);
    match role {
        // Anthropic has one system prompt; every system/developer message goes there in order.
        // Their position in the conversation is lost, which is how Anthropic models are
        // instructed anyway.
        "system" | "developer" => system.extend(content_blocks(content)),
        "user" => push_turn(turns, "user", content_blocks(content)),
        "assistant" => {
            let mut blocks = content_blocks(content);
            if let Some(r) = m
                .get("refusal")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                blocks.push(text_block(r));
            }
            for call in m
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                blocks.push(tool_use_block(call));
            }
            push_turn(turns, "assistant", blocks);
        }
        "tool" => {
            let id = sanitize_tool_id(m.get("tool_call_id").and_then(Value::as_str).unwrap_or(""));
            let mut block = Map::new();
            block.insert("type".into(), "tool_result".into());
            block.insert("tool_use_id".into(), Value::String(id));
            match content {
                Value::String(s) if !s.is_empty() => {
                    block.insert("content".into(), Value::String(s.clone()));
                }
                Value::Array(_) => {
                    let inner = content_blocks(content);
                    if !inner.is_empty() {
                        block.insert("content".into(), Value::Array(inner));
                    }
                }
                // Empty or missing: `content` is optional on tool_result, and an empty text
                // block would be rejected.
                _ => {}
            }
            push_turn(turns, "user", vec![Value::Object(block)]);
        }
        _ => turns.push(Entry::Raw(m.clone())),
    }
}

fn text_block(text: &str) -> Value {
    json!({ "type": "text", "text": text })
}

/// Content (string or parts) as Anthropic blocks. Empty text is skipped: Anthropic rejects
/// empty text blocks, and OpenAI histories routinely carry `content: ""` next to tool calls.
fn content_blocks(content: &Value) -> Vec<Value> {
    match content {
        Value::String(s) if s.is_empty() => Vec::new(),
        Value::String(s) => vec![text_block(s)],
        Value::Array(parts) => parts.iter().filter_map(part_block).collect(),
        _ => Vec::new(),
    }
}

/// One OpenAI content part as an Anthropic block. `cache_control` on a part is carried over:
/// clients that target Anthropic through OpenAI-format gateways mark cache breakpoints this way.
fn part_block(part: &Value) -> Option<Value> {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
    let mut block = match kind {
        "text" | "refusal" => {
            let text = part.get(kind).and_then(Value::as_str).unwrap_or("");
            if text.is_empty() {
                return None;
            }
            text_block(text)
        }
        "image_url" => image_block(part)?,
        "file" => document_block(part)?,
        _ => return Some(part.clone()),
    };
    if let (Some(cc), Some(obj)) = (part.get("cache_control"), block.as_object_mut()) {
        obj.insert("cache_control".into(), cc.clone());
    }
    Some(block)
}

/// `data:<media type>[;param…];base64,<data>` → (media type, data).
fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (header, data) = rest.split_once(',')?;
    let header = header.strip_suffix(";base64")?;
    let media_type = header.split(';').next().unwrap_or("");
    Some((media_type, data))
}

/// `image_url` → `image`: a base64 data URL becomes a base64 source, anything else a URL
/// source (Anthropic fetches http(s) images itself). OpenAI's `detail` has no equivalent.
fn image_block(part: &Value) -> Option<Value> {
    let image = part.get("image_url")?;
    let Some(url) = image.get("url").or(Some(image)).and_then(Value::as_str) else {
        return Some(part.clone());
    };
    let source = match parse_data_url(url) {
        Some((media_type, data)) => {
            json!({ "type": "base64", "media_type": media_type, "data": data })
        }
        None => json!({ "type": "url", "url": url }),
    };
    Some(json!({ "type": "image", "source": source }))
}

/// `file` with inline `file_data` → `document` with a base64 source (Anthropic accepts PDF
/// this way); `filename` becomes the document `title`. `file_id` references point into
/// OpenAI's file store and cannot be resolved here: forwarded verbatim.
fn document_block(part: &Value) -> Option<Value> {
    let file = part.get("file")?;
    let Some(data) = file.get("file_data").and_then(Value::as_str) else {
        return Some(part.clone());
    };
    let (media_type, data) = parse_data_url(data).unwrap_or(("application/pdf", data));
    let mut block = json!({
        "type": "document",
        "source": { "type": "base64", "media_type": media_type, "data": data },
    });
    if let (Some(name), Some(obj)) = (
        file.get("filename").and_then(Value::as_str),
        block.as_object_mut(),
    ) {
        obj.insert("title".into(), Value::String(name.to_string()));
    }
    Some(block)
}

/// Anthropic tool ids must match `^[a-zA-Z0-9_-]+$`; OpenAI-family ids usually do, ids minted
/// by other providers may not. The mapping is deterministic, so a `tool_use` and its
/// `tool_result` still pair up.
fn sanitize_tool_id(id: &str) -> String {
    if id.is_empty() {
        return "call".to_string();
    }
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// An assistant `tool_calls[]` entry → `tool_use`. Non-function calls are forwarded verbatim.
fn tool_use_block(call: &Value) -> Value {
    let Some(function) = call.get("function") else {
        return call.clone();
    };
    let id = sanitize_tool_id(call.get("id").and_then(Value::as_str).unwrap_or(""));
    let name = function.get("name").and_then(Value::as_str).unwrap_or("");
    json!({
        "type": "tool_use",
        "id": id,
        "name": name,
        "input": tool_input(function.get("arguments")),
    })
}

/// OpenAI `arguments` (a JSON *string*) → Anthropic `input` (a JSON *object*).
///
/// Empty arguments mean "no parameters" (`{}`). Arguments that are not a JSON object — the
/// model emitted invalid JSON, often because it hit `max_tokens` mid-call — are wrapped as
/// `{"_raw": "<the string>"}`. Rejecting them is not an option: they are part of a *past* turn
/// the model itself produced, OpenAI accepts any string there, and a refusal would make the
/// conversation impossible to continue; errors from this trait are also reserved for upstream
/// failures, so a client-input error would be misattributed. Wrapping keeps the exact text in
/// front of the model, which can see its earlier call was malformed.
pub fn tool_input(arguments: Option<&Value>) -> Value {
    match arguments {
        None | Some(Value::Null) => json!({}),
        Some(Value::Object(o)) => Value::Object(o.clone()),
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(o)) => Value::Object(o),
            _ => json!({ "_raw": s }),
        },
        Some(other) => json!({ "_raw": other.to_string() }),
    }
}

/// `tools` → Anthropic tool definitions. Function tools map field by field (`parameters` →
/// `input_schema`, `{}` object schema when absent); OpenAI's `strict` is not sent because
/// Anthropic accepts it only on models with structured outputs and would fail the whole request
/// on the others — the call itself works without it. Other tool types are forwarded verbatim.
fn translate_tools(tools: Option<&Value>) -> Option<Vec<Value>> {
    let tools = tools?.as_array().filter(|t| !t.is_empty())?;
    Some(
        tools
            .iter()
            .map(|t| {
                let is_function =
                    t.get("type").and_then(Value::as_str).unwrap_or("function") == "function";
                let Some(f) = t.get("function").filter(|_| is_function) else {
                    return t.clone();
                };
                let Some(name) = f.get("name").and_then(Value::as_str) else {
                    return t.clone();
                };
                let mut out = Map::new();
                out.insert("name".into(), Value::String(name.to_string()));
                if let Some(d) = f.get("description").filter(|d| d.is_string()) {
                    out.insert("description".into(), d.clone());
                }
                let schema = f
                    .get("parameters")
                    .filter(|p| p.is_object())
                    .cloned()
                    .unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
                out.insert("input_schema".into(), schema);
                if let Some(cc) = t.get("cache_control") {
                    out.insert("cache_control".into(), cc.clone());
                }
                Value::Object(out)
            })
            .collect(),
    )
}

/// `tool_choice` + `parallel_tool_calls` → Anthropic `tool_choice` (only sent with tools).
///
/// `allowed_tools` keeps its mode (auto → auto, required → any) but not its subset: Anthropic
/// cannot restrict choice to some tools. `parallel_tool_calls: false` becomes
/// `disable_parallel_tool_use: true` (on an implicit `auto` when no choice was given); it is
/// meaningless with `none`.
fn translate_tool_choice(choice: Option<&Value>, parallel: Option<&Value>) -> Option<Value> {
    let mut out = match choice {
        None | Some(Value::Null) => json!({ "type": "auto" }),
        Some(Value::String(s)) => match s.as_str() {
            "required" => json!({ "type": "any" }),
            "none" => json!({ "type": "none" }),
            _ => json!({ "type": "auto" }),
        },
        Some(obj) => {
            let kind = obj.get("type").and_then(Value::as_str).unwrap_or("");
            let named = obj
                .get(kind)
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str);
            match (kind, named) {
                ("function" | "custom", Some(name)) => json!({ "type": "tool", "name": name }),
                ("allowed_tools", _) => {
                    let mode = obj
                        .get("allowed_tools")
                        .and_then(|a| a.get("mode"))
                        .and_then(Value::as_str);
                    if mode == Some("required") {
                        json!({ "type": "any" })
                    } else {
                        json!({ "type": "auto" })
                    }
                }
                _ => json!({ "type": "auto" }),
            }
        }
    };
    let disable_parallel = parallel.and_then(Value::as_bool) == Some(false);
    let is_none = out.get("type").and_then(Value::as_str) == Some("none");
    if disable_parallel && !is_none {
        if let Some(o) = out.as_object_mut() {
            o.insert("disable_parallel_tool_use".into(), Value::Bool(true));
        }
    } else if choice.is_none_or(Value::is_null) {
        // No choice given and nothing to say: Anthropic's default is auto too.
        return None;
    }
    Some(out)
}

/// `stop` (string or array) → `stop_sequences`.
fn stop_sequences(stop: Option<&Value>) -> Option<Value> {
    let seqs: Vec<Value> = match stop? {
        Value::String(s) => vec![Value::String(s.clone())],
        Value::Array(a) => a.iter().filter(|v| v.is_string()).cloned().collect(),
        _ => Vec::new(),
    };
    (!seqs.is_empty()).then_some(Value::Array(seqs))
}

/// The collected system blocks: one plain block in the string shorthand, several (or any with
/// `cache_control`) as a block array.
fn system_value(mut blocks: Vec<Value>) -> Option<Value> {
    match blocks.len() {
        0 => None,
        1 if is_plain_text(&blocks[0]) => blocks.swap_remove(0).get("text").cloned(),
        _ => Some(Value::Array(blocks)),
    }
}

fn last_assistant_has_tool_calls(messages: &[Value]) -> bool {
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty())
}

/// Thinking budget for an OpenAI `reasoning_effort`. OpenAI's levels are relative; these are
/// budgets that grow roughly ×2–4 per level from Anthropic's 1024 minimum.
fn effort_budget(effort: &str) -> Option<u64> {
    match effort {
        "minimal" => Some(1024),
        "low" => Some(2048),
        "medium" => Some(8192),
        "high" => Some(16_384),
        "xhigh" => Some(24_576),
        "max" => Some(32_000),
        // "none" and unknown levels: no thinking.
        _ => None,
    }
}

/// `reasoning_effort` → `thinking: {type: "enabled", budget_tokens}`.
///
/// The budget-based form is used because every Claude model with extended thinking accepts
/// it. Thinking counts against `max_tokens` exactly as OpenAI reasoning counts against
/// `max_completion_tokens`, so the budget is clamped below `max_tokens`; when that leaves less
/// than Anthropic's minimum, thinking is not requested. It is also not requested when the
/// request could not be served with it: a forced tool choice (`any`/`tool`) is incompatible
/// with thinking, and continuing a tool-use turn with thinking on requires the previous turn's
/// signed thinking blocks, which the OpenAI format cannot carry. Thinking comes back as
/// `reasoning_content` (see [`super::response`]).
fn thinking(
    effort: Option<&Value>,
    max_tokens: u64,
    forced_tool: bool,
    mid_tool_loop: bool,
) -> Option<Value> {
    let budget = effort_budget(effort?.as_str()?)?;
    if forced_tool || mid_tool_loop {
        return None;
    }
    let budget = budget.min(max_tokens.saturating_sub(1));
    (budget >= MIN_THINKING_BUDGET).then(|| json!({ "type": "enabled", "budget_tokens": budget }))
}

/// `response_format: {type: "json_schema"}` → `output_config.format`, Anthropic's native
/// structured output (§7.5 of the wire-format notes). The alternative, a single forced tool whose
/// input is returned as text, would collide with the client's own tools and `tool_choice` and
/// with thinking; the native form answers in a text block, which maps straight to `content`.
/// OpenAI's `name`, `description` and `strict` have no counterpart (Anthropic's structured
/// output is always strict).
fn output_format(format: Option<&Value>) -> Option<Value> {
    let format = format?;
    if format.get("type").and_then(Value::as_str) != Some("json_schema") {
        return None;
    }
    let schema = format
        .get("json_schema")
        .and_then(|j| j.get("schema"))
        .filter(|s| s.is_object())
        .cloned()
        .unwrap_or_else(|| json!({ "type": "object" }));
    Some(json!({ "type": "json_schema", "schema": schema }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn translate(body: &str, stream: bool) -> Value {
        let m: Map<String, Value> = serde_json::from_str(body).unwrap();
        Value::Object(to_messages_request(&m, stream, &sonnet_limits()))
    }

    fn sonnet_limits() -> OutputLimits {
        OutputLimits::new(|m| m.starts_with("claude-sonnet-4-5").then_some(64_000))
    }

    #[test]
    fn tool_input_table() {
        assert_eq!(tool_input(None), json!({}));
        assert_eq!(tool_input(Some(&json!(""))), json!({}));
        assert_eq!(tool_input(Some(&json!("{\"a\":1}"))), json!({"a": 1}));
        assert_eq!(
            tool_input(Some(&json!("{\"a\":"))),
            json!({"_raw": "{\"a\":"})
        );
        assert_eq!(tool_input(Some(&json!("[1]"))), json!({"_raw": "[1]"}));
        assert_eq!(tool_input(Some(&json!({"b": 2}))), json!({"b": 2}));
    }

    #[test]
    fn ids_are_sanitised_consistently() {
        assert_eq!(sanitize_tool_id("call_AbC-1"), "call_AbC-1");
        assert_eq!(sanitize_tool_id("fc.1/é"), "fc_1__");
        assert_eq!(sanitize_tool_id(""), "call");
    }

    #[test]
    fn data_urls() {
        assert_eq!(
            parse_data_url("data:image/png;base64,AAAA"),
            Some(("image/png", "AAAA"))
        );
        assert_eq!(
            parse_data_url("data:image/jpeg;name=x.jpg;base64,QQ=="),
            Some(("image/jpeg", "QQ=="))
        );
        assert_eq!(parse_data_url("data:text/plain,hello"), None);
        assert_eq!(parse_data_url("https://x/y.png"), None);
    }

    #[test]
    fn tool_choice_table() {
        let c = |choice: Value, parallel: Option<bool>| {
            translate_tool_choice(Some(&choice), parallel.map(Value::Bool).as_ref())
        };
        assert_eq!(c(json!("auto"), None), Some(json!({"type": "auto"})));
        assert_eq!(c(json!("required"), None), Some(json!({"type": "any"})));
        assert_eq!(c(json!("none"), Some(false)), Some(json!({"type": "none"})));
        assert_eq!(
            c(
                json!({"type": "function", "function": {"name": "f"}}),
                Some(false)
            ),
            Some(json!({"type": "tool", "name": "f", "disable_parallel_tool_use": true}))
        );
        assert_eq!(
            c(
                json!({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": []}}),
                None
            ),
            Some(json!({"type": "any"}))
        );
        assert_eq!(translate_tool_choice(None, None), None);
        assert_eq!(
            translate_tool_choice(None, Some(&json!(false))),
            Some(json!({"type": "auto", "disable_parallel_tool_use": true}))
        );
        assert_eq!(translate_tool_choice(None, Some(&json!(true))), None);
    }

    #[test]
    fn thinking_rules() {
        let e = json!("high");
        assert_eq!(
            thinking(Some(&e), 32_000, false, false),
            Some(json!({"type": "enabled", "budget_tokens": 16_384}))
        );
        assert_eq!(
            thinking(Some(&e), 4096, false, false),
            Some(json!({"type": "enabled", "budget_tokens": 4095}))
        );
        assert_eq!(thinking(Some(&e), 1024, false, false), None);
        assert_eq!(thinking(Some(&e), 32_000, true, false), None);
        assert_eq!(thinking(Some(&e), 32_000, false, true), None);
        assert_eq!(thinking(Some(&json!("none")), 32_000, false, false), None);
        assert_eq!(thinking(Some(&json!(3)), 32_000, false, false), None);
    }

    #[test]
    fn default_max_tokens_follows_model_caps() {
        assert_eq!(default_max_tokens(Some(64_000), true), 64_000);
        assert_eq!(
            default_max_tokens(Some(64_000), false),
            NON_STREAMING_MAX_TOKENS
        );
        assert_eq!(default_max_tokens(Some(8_192), false), 8_192);
        assert_eq!(default_max_tokens(None, true), FALLBACK_MAX_TOKENS);
        assert_eq!(
            translate(r#"{"model":"claude-sonnet-4-5","messages":[]}"#, true)["max_tokens"],
            64_000
        );
        assert_eq!(
            translate(r#"{"model":"claude-unknown","messages":[]}"#, true)["max_tokens"],
            FALLBACK_MAX_TOKENS
        );
        assert_eq!(
            translate(r#"{"model":"x","messages":[],"max_tokens":7}"#, false)["max_tokens"],
            7
        );
        assert_eq!(
            translate(
                r#"{"model":"x","messages":[],"max_tokens":7,"max_completion_tokens":9}"#,
                false
            )["max_tokens"],
            9
        );
    }

    #[test]
    fn json_object_instructs_through_system() {
        let v = translate(
            r#"{"model":"x","messages":[{"role":"system","content":"Be terse."},{"role":"user","content":"JSON please"}],"response_format":{"type":"json_object"}}"#,
            false,
        );
        assert_eq!(
            v["system"],
            json!([{"type":"text","text":"Be terse."},{"type":"text","text":JSON_OBJECT_INSTRUCTION}])
        );
        assert!(v.get("output_config").is_none());
    }

    #[test]
    fn unknown_roles_and_parts_are_forwarded_verbatim() {
        let v = translate(
            r#"{"model":"x","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"AA","format":"wav"}}]},{"role":"function","name":"f","content":"1"}]}"#,
            false,
        );
        assert_eq!(
            v["messages"],
            json!([
                {"role":"user","content":[{"type":"input_audio","input_audio":{"data":"AA","format":"wav"}}]},
                {"role":"function","name":"f","content":"1"}
            ])
        );
    }

    proptest! {
        /// No input shape makes the translation panic, and the required fields are always set.
        #[test]
        fn never_panics(body in arb_json(3)) {
            let Value::Object(m) = body else { return Ok(()); };
            let out = to_messages_request(&m, true, &sonnet_limits());
            prop_assert!(out.contains_key("max_tokens"));
            prop_assert!(out.get("messages").is_some_and(Value::is_array));
        }
    }

    fn arb_json(depth: u32) -> impl Strategy<Value = Value> {
        let keys = prop::sample::select(vec![
            "model",
            "messages",
            "role",
            "content",
            "tool_calls",
            "function",
            "arguments",
            "tools",
            "tool_choice",
            "type",
            "text",
            "image_url",
            "url",
            "stop",
            "temperature",
            "response_format",
            "json_schema",
            "reasoning_effort",
            "max_tokens",
            "user",
            "parallel_tool_calls",
            "file",
            "file_data",
            "tool_call_id",
            "name",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            prop::sample::select(vec![
                "user",
                "assistant",
                "tool",
                "system",
                "developer",
                "function",
                "text",
                "image_url",
                "data:image/png;base64,AA",
                "data:,",
                "{\"a\":",
                "",
                "required",
                "none",
                "auto",
                "json_schema",
                "json_object",
                "high",
                "file",
            ])
            .prop_map(|s| Value::String(s.to_string())),
        ];
        leaf.prop_recursive(depth, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|kv| {
                    Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                }),
            ]
        })
    }
}
