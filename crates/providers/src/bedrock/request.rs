//! Canonical (OpenAI Chat Completions) request → Bedrock `ConverseRequest` JSON
//! (API version 2023-09-30).
//!
//! | canonical | Converse |
//! |---|---|
//! | `system` / `developer` messages (anywhere) | top-level `system: [{text}]`, in order |
//! | `user` text / `image_url` (data: URL) parts | `{text}` / `{image:{format, source:{bytes}}}` |
//! | `assistant` content + `tool_calls` | `{text}` + `{toolUse:{toolUseId, name, input}}` |
//! | `tool` messages | `{toolResult:{toolUseId, content:[{text}]}}` in a user turn |
//! | part `prompt_cache_breakpoint` | a `{cachePoint:{type:"default"}}` block after the part |
//! | `tools` (function) | `toolConfig.tools[{toolSpec:{name, description, inputSchema:{json}}}]` |
//! | `tool_choice` `auto` / `required` / named / `allowed_tools` | `{auto:{}}` / `{any:{}}` / `{tool:{name}}` / filtered tools |
//! | `max_completion_tokens` (or `max_tokens`), `temperature`, `top_p`, `stop` | `inferenceConfig{maxTokens, temperature, topP, stopSequences}` |
//! | `response_format` json_object / json_schema | a forced tool (see below) |
//!
//! Choices worth knowing:
//! - Converse requires alternating turns, so consecutive messages of the same Bedrock role are
//!   merged (several `tool` results become one user turn; a user message right after tool
//!   results joins that turn, after the results).
//! - Blank text is dropped: Bedrock rejects blank text blocks with a ValidationException.
//! - `temperature` is clamped to Converse's 0–1 range rather than rejected.
//! - `tool_choice: "none"` has no Converse equivalent: the tools are left out, unless the
//!   history already contains tool calls or results — Bedrock then insists on `toolConfig`, so
//!   the tools are sent without a `toolChoice` and the model may still call one.
//! - **JSON output** uses a forced tool, the approach AWS documents for structured output with
//!   Converse: a tool [`JSON_TOOL`] whose input schema is the requested schema (`{"type":
//!   "object"}` for `json_object`) and `toolChoice: {tool: {name: JSON_TOOL}}`; the response
//!   side turns that tool's input back into the message text with `finish_reason: "stop"`. The
//!   schema is then enforced by the model's tool-use decoding, which a prompt cannot promise.
//!   When the client also sends its own tools (forcing ours would stop the model from calling
//!   them) or the schema's top level is not an object (tool inputs must be objects), the
//!   adapter falls back to a system instruction carrying the schema.
//! - Not translatable, so refused with a clear error instead of silently dropped: `n > 1`,
//!   remote image URLs (Bedrock needs the bytes; the gateway does not fetch URLs on a client's
//!   behalf), image types other than png/jpeg/gif/webp, audio and file parts, custom tools.
//! - Ignored, as Converse has no equivalent: `seed`, `presence_penalty`, `frequency_penalty`,
//!   `logit_bias`, `logprobs`, `parallel_tool_calls`, `user`, `metadata`, `reasoning_effort`,
//!   `stream_options` (Converse always reports usage).

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Map, Value};

/// Name of the forced tool that carries JSON output.
pub const JSON_TOOL: &str = "json_response";

/// A translated request.
#[derive(Debug)]
pub struct Translated {
    /// The Converse JSON body, exactly the bytes to sign and send.
    pub body: Vec<u8>,
    /// JSON output is carried by [`JSON_TOOL`]: its input becomes the message text.
    pub json_tool: bool,
}

/// Translates a canonical chat body. `Err` explains what cannot be expressed in Converse.
pub fn translate(body: &Map<String, Value>) -> Result<Translated, String> {
    if body.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err("n > 1 is not supported by Bedrock Converse".into());
    }
    let mut system = Vec::new();
    let mut messages: Vec<Message<'_>> = Vec::new();
    let mut tool_history = false;
    for (i, m) in body
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let content = m.get("content").unwrap_or(&Value::Null);
        let mut blocks = Vec::new();
        let bedrock_role = match role {
            "system" | "developer" => {
                parts(content, Allow::Text, &mut system).map_err(|e| at(i, e))?;
                continue;
            }
            "user" => {
                parts(content, Allow::UserParts, &mut blocks).map_err(|e| at(i, e))?;
                "user"
            }
            "assistant" => {
                parts(content, Allow::AssistantParts, &mut blocks).map_err(|e| at(i, e))?;
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    blocks.push(tool_use(call).map_err(|e| at(i, e))?);
                    tool_history = true;
                }
                "assistant"
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| at(i, "a tool message needs tool_call_id".into()))?;
                let mut content_blocks = Vec::new();
                parts(content, Allow::ToolResult, &mut content_blocks).map_err(|e| at(i, e))?;
                let content = content_blocks
                    .into_iter()
                    .filter_map(|b| match b {
                        Block::Text(t) => Some(ResultContent::Text(t)),
                        _ => None,
                    })
                    .collect();
                blocks.push(Block::ToolResult(ToolResult {
                    tool_use_id: id,
                    content,
                }));
                tool_history = true;
                "user"
            }
            other => return Err(at(i, format!("message role '{other}' is not supported"))),
        };
        if blocks.is_empty() {
            continue;
        }
        match messages.last_mut() {
            Some(last) if last.role == bedrock_role => last.content.extend(blocks),
            _ => messages.push(Message {
                role: bedrock_role,
                content: blocks,
            }),
        }
    }

    let json = json_request(body)?;
    let mut tool_config = tool_config(body, tool_history)?;
    let mut json_tool = false;
    if let Some(schema) = json {
        let client_tools = tool_config.as_ref().is_some_and(|t| !t.tools.is_empty());
        let object_schema = schema
            .schema
            .get("type")
            .is_none_or(|t| t.as_str() == Some("object"));
        if !client_tools && object_schema {
            json_tool = true;
            tool_config = Some(ToolConfig {
                tools: vec![Tool::ToolSpec(ToolSpec {
                    name: JSON_TOOL,
                    description: Some(schema.description.unwrap_or(
                        "Respond by calling this tool: its input is the response, a JSON value \
                         matching the schema.",
                    )),
                    input_schema: InputSchema {
                        json: schema.schema,
                    },
                })],
                tool_choice: Some(ToolChoice::Tool(Named { name: JSON_TOOL })),
            });
        } else {
            system.push(Block::Text(Cow::Owned(json_instruction(&schema))));
        }
    }

    let request = Converse {
        messages,
        system,
        inference_config: inference_config(body)?,
        tool_config,
    };
    let body = serde_json::to_vec(&request).map_err(|e| format!("encode request: {e}"))?;
    Ok(Translated { body, json_tool })
}

fn at(i: usize, e: String) -> String {
    format!("messages[{i}]: {e}")
}

#[derive(Serialize)]
struct Converse<'a> {
    messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<Block<'a>>,
    #[serde(
        rename = "inferenceConfig",
        skip_serializing_if = "InferenceConfig::is_empty"
    )]
    inference_config: InferenceConfig<'a>,
    #[serde(rename = "toolConfig", skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'a>>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

/// A Converse `ContentBlock` / `SystemContentBlock`: a union serialised as a one-key object.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum Block<'a> {
    Text(Cow<'a, str>),
    Image(Image<'a>),
    ToolUse(ToolUse<'a>),
    ToolResult(ToolResult<'a>),
    CachePoint(CachePoint),
}

#[derive(Serialize)]
struct Image<'a> {
    format: &'static str,
    source: ImageSource<'a>,
}

/// The base64 text of a data URL is exactly Converse's JSON encoding of a blob, so it is
/// borrowed as is, never decoded.
#[derive(Serialize)]
struct ImageSource<'a> {
    bytes: &'a str,
}

#[derive(Serialize)]
struct ToolUse<'a> {
    #[serde(rename = "toolUseId")]
    tool_use_id: &'a str,
    name: &'a str,
    input: Value,
}

#[derive(Serialize)]
struct ToolResult<'a> {
    #[serde(rename = "toolUseId")]
    tool_use_id: &'a str,
    content: Vec<ResultContent<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum ResultContent<'a> {
    Text(Cow<'a, str>),
}

#[derive(Serialize)]
struct CachePoint {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize, Default)]
struct InferenceConfig<'a> {
    #[serde(rename = "maxTokens", skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(rename = "topP", skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(rename = "stopSequences", skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
}

impl InferenceConfig<'_> {
    fn is_empty(&self) -> bool {
        self.max_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.stop_sequences.is_empty()
    }
}

#[derive(Serialize)]
struct ToolConfig<'a> {
    tools: Vec<Tool<'a>>,
    #[serde(rename = "toolChoice", skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoice<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum Tool<'a> {
    ToolSpec(ToolSpec<'a>),
}

#[derive(Serialize)]
struct ToolSpec<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(rename = "inputSchema")]
    input_schema: InputSchema<'a>,
}

#[derive(Serialize)]
struct InputSchema<'a> {
    json: Cow<'a, Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum ToolChoice<'a> {
    Auto(Empty),
    Any(Empty),
    Tool(Named<'a>),
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct Named<'a> {
    name: &'a str,
}

/// Which content parts a role may carry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Allow {
    Text,
    UserParts,
    AssistantParts,
    ToolResult,
}

/// Appends the blocks of one message's `content` (a string, an array of parts, or null).
fn parts<'a>(content: &'a Value, allow: Allow, out: &mut Vec<Block<'a>>) -> Result<(), String> {
    match content {
        Value::Null => Ok(()),
        Value::String(s) => {
            push_text(s, allow, out);
            Ok(())
        }
        Value::Array(items) => {
            for part in items {
                let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
                match (kind, allow) {
                    ("text", _) => {
                        let text = part.get("text").and_then(Value::as_str).unwrap_or("");
                        push_text(text, allow, out);
                    }
                    ("refusal", Allow::AssistantParts) => {
                        let text = part.get("refusal").and_then(Value::as_str).unwrap_or("");
                        push_text(text, allow, out);
                    }
                    ("image_url", Allow::UserParts) => out.push(image(part)?),
                    (kind, _) => {
                        return Err(format!(
                            "content part type '{kind}' is not supported by Bedrock Converse \
                             in this message"
                        ));
                    }
                }
                // An explicit cache breakpoint after this part (newer OpenAI SDKs' per-part
                // `prompt_cache_breakpoint`) maps to a Converse cache point.
                if part
                    .get("prompt_cache_breakpoint")
                    .is_some_and(|v| !v.is_null())
                    && allow != Allow::ToolResult
                {
                    out.push(Block::CachePoint(CachePoint { kind: "default" }));
                }
            }
            Ok(())
        }
        _ => Err("content must be a string, an array of parts or null".into()),
    }
}

fn push_text<'a>(text: &'a str, allow: Allow, out: &mut Vec<Block<'a>>) {
    // Tool results keep empty text: an empty result is still an answer to the call.
    if allow == Allow::ToolResult || !text.trim().is_empty() {
        out.push(Block::Text(Cow::Borrowed(text)));
    }
}

/// `image_url` with a base64 data URL → an image block.
fn image(part: &Value) -> Result<Block<'_>, String> {
    let url = part
        .get("image_url")
        .and_then(|u| u.get("url").or(Some(u)))
        .and_then(Value::as_str)
        .ok_or("image_url needs a url")?;
    let Some(rest) = url.strip_prefix("data:") else {
        return Err(
            "image URLs must be base64 data: URLs for Bedrock (it needs the image bytes; the \
             gateway does not fetch remote images)"
                .into(),
        );
    };
    let (meta, data) = rest.split_once(',').ok_or("malformed data: URL")?;
    let mut meta = meta.split(';');
    let mime = meta.next().unwrap_or("").to_ascii_lowercase();
    if !meta.any(|p| p.eq_ignore_ascii_case("base64")) {
        return Err("image data: URLs must be base64-encoded".into());
    }
    let format = match mime.as_str() {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        other => {
            return Err(format!(
                "image type '{other}' is not supported by Bedrock (png, jpeg, gif, webp)"
            ));
        }
    };
    Ok(Block::Image(Image {
        format,
        source: ImageSource { bytes: data },
    }))
}

/// An assistant `tool_calls[]` entry → a `toolUse` block. `arguments` is a JSON string that
/// Converse wants as a JSON value; a call whose arguments do not parse is refused rather than
/// replayed with invented input.
fn tool_use(call: &Value) -> Result<Block<'_>, String> {
    let kind = call
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("function");
    if kind != "function" {
        return Err(format!(
            "tool call type '{kind}' is not supported by Bedrock"
        ));
    }
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .ok_or("a tool call needs an id")?;
    let function = call.get("function").ok_or("a tool call needs a function")?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or("a tool call needs a function name")?;
    let args = function
        .get("arguments")
        .and_then(Value::as_str)
        .unwrap_or("");
    let input = if args.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str(args)
            .map_err(|e| format!("tool call '{id}' has arguments that are not JSON: {e}"))?
    };
    Ok(Block::ToolUse(ToolUse {
        tool_use_id: id,
        name,
        input,
    }))
}

fn tool_config(
    body: &Map<String, Value>,
    tool_history: bool,
) -> Result<Option<ToolConfig<'_>>, String> {
    let Some(tools) = body.get("tools").and_then(Value::as_array) else {
        return Ok(None);
    };
    let mut allowed: Option<Vec<&str>> = None;
    let choice = match body.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(ToolChoice::Auto(Empty {})),
            "required" => Some(ToolChoice::Any(Empty {})),
            "none" if !tool_history => return Ok(None),
            "none" => None,
            other => return Err(format!("tool_choice '{other}' is not supported")),
        },
        Some(obj) => match obj.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = obj
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .ok_or("tool_choice.function.name is required")?;
                Some(ToolChoice::Tool(Named { name }))
            }
            Some("allowed_tools") => {
                let a = obj
                    .get("allowed_tools")
                    .ok_or("allowed_tools is required")?;
                allowed = Some(
                    a.get("tools")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|t| t.get("function")?.get("name")?.as_str())
                        .collect(),
                );
                match a.get("mode").and_then(Value::as_str) {
                    Some("required") => Some(ToolChoice::Any(Empty {})),
                    _ => Some(ToolChoice::Auto(Empty {})),
                }
            }
            _ => return Err("tool_choice of this type is not supported by Bedrock".into()),
        },
    };
    let mut specs = Vec::with_capacity(tools.len());
    for t in tools {
        let kind = t.get("type").and_then(Value::as_str).unwrap_or("function");
        if kind != "function" {
            return Err(format!(
                "tool type '{kind}' is not supported by Bedrock (function tools only)"
            ));
        }
        let f = t.get("function").ok_or("a tool needs a function")?;
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .ok_or("a tool needs a function name")?;
        if allowed.as_ref().is_some_and(|a| !a.contains(&name)) {
            continue;
        }
        // Converse requires an input schema; OpenAI's omitted `parameters` means "no arguments".
        let schema = match f.get("parameters") {
            Some(p) if !p.is_null() => Cow::Borrowed(p),
            _ => Cow::Owned(serde_json::json!({"type": "object", "properties": {}})),
        };
        specs.push(Tool::ToolSpec(ToolSpec {
            name,
            description: f.get("description").and_then(Value::as_str),
            input_schema: InputSchema { json: schema },
        }));
    }
    if specs.is_empty() {
        return Ok(None);
    }
    Ok(Some(ToolConfig {
        tools: specs,
        tool_choice: choice,
    }))
}

/// A JSON output request from `response_format`.
struct JsonRequest<'a> {
    schema: Cow<'a, Value>,
    description: Option<&'a str>,
    /// `json_schema` (a schema was named) rather than `json_object`.
    has_schema: bool,
}

fn json_request(body: &Map<String, Value>) -> Result<Option<JsonRequest<'_>>, String> {
    let Some(rf) = body.get("response_format").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let any_object = || Cow::Owned(serde_json::json!({"type": "object"}));
    match rf.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(JsonRequest {
            schema: any_object(),
            description: None,
            has_schema: false,
        })),
        Some("json_schema") => {
            let js = rf.get("json_schema");
            let schema = js.and_then(|j| j.get("schema")).filter(|s| !s.is_null());
            Ok(Some(JsonRequest {
                has_schema: schema.is_some(),
                schema: schema.map(Cow::Borrowed).unwrap_or_else(any_object),
                description: js
                    .and_then(|j| j.get("description"))
                    .and_then(Value::as_str),
            }))
        }
        _ => Err("response_format type is not supported by Bedrock".into()),
    }
}

fn json_instruction(j: &JsonRequest<'_>) -> String {
    if j.has_schema {
        format!(
            "Respond only with JSON that conforms to this JSON Schema, with no other text: {}",
            j.schema
        )
    } else {
        "Respond only with a valid JSON object, with no other text.".to_string()
    }
}

fn inference_config(body: &Map<String, Value>) -> Result<InferenceConfig<'_>, String> {
    let max_tokens = body
        .get("max_completion_tokens")
        .filter(|v| !v.is_null())
        .or_else(|| body.get("max_tokens").filter(|v| !v.is_null()))
        .map(|v| {
            v.as_u64()
                .ok_or("max tokens must be a non-negative integer")
        })
        .transpose()?;
    let number = |k: &str| body.get(k).and_then(Value::as_f64);
    let stop_sequences = match body.get("stop") {
        Some(Value::String(s)) if !s.is_empty() => vec![s.as_str()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .collect(),
        _ => Vec::new(),
    };
    Ok(InferenceConfig {
        max_tokens,
        temperature: number("temperature").map(|t| t.clamp(0.0, 1.0)),
        top_p: number("top_p").map(|p| p.clamp(0.0, 1.0)),
        stop_sequences,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tr(body: &str) -> Result<(Value, bool), String> {
        let m: Map<String, Value> = serde_json::from_str(body).unwrap();
        translate(&m).map(|t| (serde_json::from_slice(&t.body).unwrap(), t.json_tool))
    }

    #[test]
    fn merges_tool_results_and_following_user_text() {
        let (v, _) = tr(r#"{"model":"m","messages":[
            {"role":"user","content":"hi"},
            {"role":"assistant","content":null,"tool_calls":[
              {"id":"a","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}},
              {"id":"b","type":"function","function":{"name":"f","arguments":""}}]},
            {"role":"tool","tool_call_id":"a","content":"1"},
            {"role":"tool","tool_call_id":"b","content":[{"type":"text","text":"2"}]},
            {"role":"user","content":"and?"}],
            "tools":[{"type":"function","function":{"name":"f"}}]}"#)
        .unwrap();
        let msgs = v["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3);
        assert_eq!(
            msgs[1]["content"][1]["toolUse"],
            serde_json::json!({"toolUseId":"b","name":"f","input":{}})
        );
        assert_eq!(msgs[2]["role"], "user");
        assert_eq!(
            msgs[2]["content"],
            serde_json::json!([
                {"toolResult":{"toolUseId":"a","content":[{"text":"1"}]}},
                {"toolResult":{"toolUseId":"b","content":[{"text":"2"}]}},
                {"text":"and?"}])
        );
        assert_eq!(
            v["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"],
            serde_json::json!({"type":"object","properties":{}})
        );
    }

    #[test]
    fn refuses_what_cannot_be_translated() {
        for (body, needle) in [
            (
                r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/a.png"}}]}]}"#,
                "data: URLs",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/bmp;base64,AA=="}}]}]}"#,
                "image/bmp",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]}"#,
                "input_audio",
            ),
            (r#"{"n":2,"messages":[]}"#, "n > 1"),
            (
                r#"{"messages":[{"role":"assistant","tool_calls":[{"id":"c1","function":{"name":"f","arguments":"{oops"}}]}]}"#,
                "c1",
            ),
            (
                r#"{"messages":[{"role":"function","content":"x"}]}"#,
                "role",
            ),
            (
                r#"{"messages":[],"tools":[{"type":"custom","custom":{"name":"g"}}]}"#,
                "custom",
            ),
        ] {
            let e = tr(body).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn tool_choice_forms() {
        let base = r#"{"messages":[{"role":"user","content":"q"}],"tools":[
            {"type":"function","function":{"name":"a","parameters":{"type":"object"}}},
            {"type":"function","function":{"name":"b","parameters":{"type":"object"}}}]"#;
        let choice = |c: &str| tr(&format!("{base},\"tool_choice\":{c}}}")).unwrap().0;
        assert_eq!(
            choice(r#""auto""#)["toolConfig"]["toolChoice"],
            serde_json::json!({"auto":{}})
        );
        assert_eq!(
            choice(r#""required""#)["toolConfig"]["toolChoice"],
            serde_json::json!({"any":{}})
        );
        assert_eq!(
            choice(r#"{"type":"function","function":{"name":"b"}}"#)["toolConfig"]["toolChoice"],
            serde_json::json!({"tool":{"name":"b"}})
        );
        assert!(choice(r#""none""#).get("toolConfig").is_none());
        let allowed = choice(
            r#"{"type":"allowed_tools","allowed_tools":{"mode":"required","tools":[{"type":"function","function":{"name":"b"}}]}}"#,
        );
        assert_eq!(allowed["toolConfig"]["tools"].as_array().unwrap().len(), 1);
        assert_eq!(
            allowed["toolConfig"]["toolChoice"],
            serde_json::json!({"any":{}})
        );
    }

    #[test]
    fn none_with_tool_history_keeps_tools_without_choice() {
        let (v, _) = tr(r#"{"messages":[
            {"role":"user","content":"q"},
            {"role":"assistant","tool_calls":[{"id":"a","function":{"name":"f","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"a","content":"r"}],
            "tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"none"}"#)
        .unwrap();
        assert!(v["toolConfig"]["tools"].is_array());
        assert!(v["toolConfig"].get("toolChoice").is_none());
    }

    #[test]
    fn json_modes() {
        let (v, forced) = tr(r#"{"messages":[{"role":"user","content":"q"}],
            "response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{"type":"object","properties":{"a":{"type":"integer"}}}}}}"#)
        .unwrap();
        assert!(forced);
        assert_eq!(
            v["toolConfig"]["toolChoice"],
            serde_json::json!({"tool":{"name":JSON_TOOL}})
        );
        assert_eq!(
            v["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["properties"]["a"]["type"],
            "integer"
        );
        // With client tools: an instruction instead.
        let (v, forced) = tr(r#"{"messages":[{"role":"user","content":"q"}],
            "tools":[{"type":"function","function":{"name":"f"}}],
            "response_format":{"type":"json_object"}}"#)
        .unwrap();
        assert!(!forced);
        assert!(
            v["system"][0]["text"]
                .as_str()
                .unwrap()
                .contains("JSON object")
        );
        // A non-object schema cannot be a tool input: an instruction carrying the schema.
        let (v, forced) = tr(r#"{"messages":[{"role":"user","content":"q"}],
            "response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{"type":"array"}}}}"#)
        .unwrap();
        assert!(!forced);
        assert!(
            v["system"][0]["text"]
                .as_str()
                .unwrap()
                .contains(r#"{"type":"array"}"#)
        );
    }

    #[test]
    fn inference_config_and_system() {
        let (v, _) = tr(r#"{"messages":[
            {"role":"system","content":"a"},
            {"role":"user","content":"  "},
            {"role":"developer","content":[{"type":"text","text":"b","prompt_cache_breakpoint":{"mode":"explicit"}}]},
            {"role":"user","content":"q"}],
            "max_tokens":10,"max_completion_tokens":20,"temperature":1.7,"top_p":0.5,"stop":"END"}"#)
        .unwrap();
        assert_eq!(
            v["system"],
            serde_json::json!([{"text":"a"},{"text":"b"},{"cachePoint":{"type":"default"}}])
        );
        assert_eq!(
            v["messages"],
            serde_json::json!([{"role":"user","content":[{"text":"q"}]}])
        );
        assert_eq!(
            v["inferenceConfig"],
            serde_json::json!({"maxTokens":20,"temperature":1.0,"topP":0.5,"stopSequences":["END"]})
        );
    }
}
