//! Canonical (OpenAI Chat Completions) request → Gemini `GenerateContentRequest` (`v1beta`).
//!
//! | OpenAI | Gemini |
//! |---|---|
//! | `system` / `developer` messages (anywhere) | `systemInstruction.parts[]` (one text part per text) |
//! | `user` message | `contents[]` turn with `role: "user"` |
//! | `assistant` message | turn with `role: "model"` |
//! | text / refusal part | `{"text"}` |
//! | `image_url` `data:` URL | `{"inlineData": {mimeType, data}}` |
//! | `image_url` `http(s)://` / `gs://` URL | `{"fileData": {mimeType?, fileUri}}` (best effort, see below) |
//! | `input_audio` | `{"inlineData": {"mimeType": "audio/{format}"}}` |
//! | `file.file_data` | `{"inlineData"}` (MIME from the data URL or the file name) |
//! | assistant `tool_calls[]` (and legacy `function_call`) | `{"functionCall": {name, args}}` parts; `args` parsed from the JSON string |
//! | `tool` message (and legacy `function`) | `{"functionResponse": {name, response: {"output": text}}}` in a `user` turn |
//! | `tools[].function` (and legacy `functions`) | `tools[0].functionDeclarations[]` with `parametersJsonSchema` |
//! | `tool_choice` `auto` / `none` / `required` | `toolConfig.functionCallingConfig.mode` `AUTO` / `NONE` / `ANY` |
//! | `tool_choice` naming a function | `ANY` + `allowedFunctionNames: [name]` |
//! | `tool_choice` `allowed_tools` | `AUTO` (mode `auto`) or `ANY` (mode `required`), declarations filtered to the allowed names |
//! | `response_format` `json_object` | `generationConfig.responseMimeType: "application/json"` |
//! | `response_format` `json_schema` | `responseMimeType` + `responseJsonSchema` |
//! | `temperature`, `top_p`, `top_k` (extension) | `temperature`, `topP`, `topK` |
//! | `max_completion_tokens`, else `max_tokens` | `maxOutputTokens` |
//! | `stop` (string or array) | `stopSequences` |
//! | `n` | `candidateCount` |
//! | `seed`, `presence_penalty`, `frequency_penalty` | `seed`, `presencePenalty`, `frequencyPenalty` |
//! | `reasoning_effort` | `thinkingConfig` (see [`thinking_config`]) |
//!
//! Design choices:
//! - Consecutive turns of the same role are merged (so parallel tool results form one `user`
//!   turn, and a user message right after tool results joins it): Gemini wants turns to
//!   alternate.
//! - Tool schemas go to `parametersJsonSchema` / `responseJsonSchema`, which take standard JSON
//!   Schema, instead of the older `parameters` / `responseSchema` (an OpenAPI subset whose proto
//!   rejects every unknown keyword — `additionalProperties`, `const`, `exclusiveMinimum`, … — with
//!   a 400). Only [`STRIPPED_SCHEMA_KEYWORDS`] are removed, at every schema position (never inside
//!   `properties` names, `enum`, `const` or `default` values): `$schema` is rejected by the
//!   endpoint, `$comment` carries no meaning for the model.
//! - Tool-call ids are the gateway's own (`call_<hex>`, see [`super::response`]); they are not
//!   sent back. A `functionResponse` gets its `name` from the assistant tool call with the same
//!   id earlier in the conversation (Gemini matches responses to calls by name and position).
//! - Thought signatures: a tool call may carry
//!   `extra_content.google.thought_signature` (the convention of Google's own OpenAI-compatible
//!   endpoint, which the response side emits); it is replayed as the part's `thoughtSignature`.
//!   Gemini 3+ rejects replayed function calls without one, so for those models a model turn
//!   whose calls carry none gets Google's documented `skip_thought_signature_validator`
//!   sentinel on its first call (history from clients that drop unknown fields keeps working).
//! - Remote image URLs become `fileData.fileUri` as given. The Gemini API reliably resolves only
//!   its own Files API URIs, `gs://` objects and YouTube links; other URLs may be refused by
//!   Gemini with a 400, which is relayed. Downloading and inlining is deliberately not done here
//!   (it would make the adapter an open fetcher of client-chosen URLs).
//! - `image_url.detail`, `parallel_tool_calls`, `logprobs`/`top_logprobs`, `logit_bias`, `user`,
//!   `metadata`, `store`, `service_tier`, `stream_options` and every other field are ignored.
//! - What cannot be expressed (a tool result with no matching call, OpenAI file ids, custom
//!   tools, unknown content-part types) is refused with a message naming it, rather than
//!   silently dropped.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

/// JSON Schema keywords removed from tool parameters and response schemas.
pub const STRIPPED_SCHEMA_KEYWORDS: &[&str] = &["$schema", "$comment"];

/// Google's documented placeholder for a function call whose real signature is unavailable.
pub const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// How a model family takes its reasoning control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Gemini 1.x / 2.x: `thinkingConfig.thinkingBudget` (tokens).
    Budget,
    /// Gemini 3 and later (and unknown names): `thinkingConfig.thinkingLevel`; function calls
    /// must replay their thought signatures.
    Level,
}

impl Family {
    pub fn of(model: &str) -> Family {
        let id = model.rsplit('/').next().unwrap_or(model);
        if id.starts_with("gemini-1") || id.starts_with("gemini-2") {
            Family::Budget
        } else {
            Family::Level
        }
    }
}

type Result<T> = std::result::Result<T, String>;

/// Translates a canonical chat body for upstream model `model`.
pub fn chat_request(body: &Map<String, Value>, model: &str) -> Result<Value> {
    let family = Family::of(model);
    let (contents, system) = messages(body.get("messages"), family)?;
    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    let choice = tool_choice(body)?;
    if let Some(tools) = tools(body, choice.as_ref())? {
        out.insert("tools".into(), tools);
        if let Some(c) = &choice {
            out.insert(
                "toolConfig".into(),
                json!({ "functionCallingConfig": c.config() }),
            );
        }
    }
    let config = generation_config(body, family)?;
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------------------------------------
// Messages

/// `contents` turns, merging consecutive turns of the same role.
#[derive(Default)]
struct Turns(Vec<(&'static str, Vec<Value>)>);

impl Turns {
    fn push(&mut self, role: &'static str, parts: Vec<Value>) {
        if parts.is_empty() {
            // An empty turn is a 400 on Gemini and carries nothing.
            return;
        }
        match self.0.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(parts),
            _ => self.0.push((role, parts)),
        }
    }

    fn into_contents(self) -> Vec<Value> {
        self.0
            .into_iter()
            .map(|(role, parts)| json!({ "role": role, "parts": parts }))
            .collect()
    }
}

fn messages(messages: Option<&Value>, family: Family) -> Result<(Vec<Value>, Vec<Value>)> {
    let list = match messages {
        Some(Value::Array(list)) => list.as_slice(),
        None | Some(Value::Null) => &[],
        Some(_) => return Err("'messages' must be an array".into()),
    };
    let mut turns = Turns::default();
    let mut system = Vec::new();
    // tool_call_id → function name, from the assistant messages seen so far.
    let mut call_names: HashMap<String, String> = HashMap::new();
    for (i, m) in list.iter().enumerate() {
        let Some(obj) = m.as_object() else {
            return Err(format!("messages[{i}] must be an object"));
        };
        let role = obj.get("role").and_then(Value::as_str).unwrap_or("");
        match role {
            "system" | "developer" => {
                for t in texts(obj.get("content"), i)? {
                    if !t.is_empty() {
                        system.push(json!({ "text": t }));
                    }
                }
            }
            "user" => turns.push("user", user_parts(obj.get("content"), i)?),
            "assistant" => turns.push("model", assistant_parts(obj, i, &mut call_names, family)?),
            "tool" => {
                let id = obj
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let name = call_names
                    .get(id)
                    .cloned()
                    .or_else(|| obj.get("name").and_then(Value::as_str).map(str::to_string))
                    .ok_or_else(|| {
                        format!(
                            "messages[{i}]: tool_call_id '{id}' does not match a tool call of an \
                             earlier assistant message (Gemini needs the function name)"
                        )
                    })?;
                turns.push("user", vec![function_response(&name, obj, i)?]);
            }
            "function" => {
                let name = obj
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("messages[{i}]: a function message needs 'name'"))?;
                turns.push("user", vec![function_response(name, obj, i)?]);
            }
            other => {
                return Err(format!(
                    "messages[{i}]: role '{other}' is not supported by Gemini"
                ));
            }
        }
    }
    Ok((turns.into_contents(), system))
}

/// The text of a string-or-parts content (system, developer, tool messages).
fn texts(content: Option<&Value>, i: usize) -> Result<Vec<String>> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
                let field = match ty {
                    "text" => "text",
                    "refusal" => "refusal",
                    _ => {
                        return Err(format!(
                            "messages[{i}].content[{j}]: part type '{ty}' is not allowed here"
                        ));
                    }
                };
                Ok(p.get(field)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string())
            })
            .collect(),
        Some(_) => Err(format!(
            "messages[{i}].content must be a string or an array"
        )),
    }
}

fn text_part(t: &str) -> Option<Value> {
    (!t.is_empty()).then(|| json!({ "text": t }))
}

fn user_parts(content: Option<&Value>, i: usize) -> Result<Vec<Value>> {
    let parts = match content {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(text_part(s).into_iter().collect()),
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(format!(
                "messages[{i}].content must be a string or an array"
            ));
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let at = || format!("messages[{i}].content[{j}]");
        let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
        match ty {
            "text" => out.extend(text_part(
                p.get("text").and_then(Value::as_str).unwrap_or(""),
            )),
            "image_url" => {
                let url = p
                    .get("image_url")
                    .and_then(|u| u.get("url").or(Some(u)))
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{}: image_url needs a 'url'", at()))?;
                out.push(media_part(url).map_err(|why| format!("{}: {why}", at()))?);
            }
            "input_audio" => {
                let audio = p.get("input_audio");
                let data = audio
                    .and_then(|a| a.get("data"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{}: input_audio needs 'data'", at()))?;
                let format = audio
                    .and_then(|a| a.get("format"))
                    .and_then(Value::as_str)
                    .unwrap_or("wav");
                out.push(inline(&format!("audio/{format}"), data));
            }
            "file" => out.push(file_part(p.get("file")).map_err(|why| format!("{}: {why}", at()))?),
            other => {
                return Err(format!(
                    "{}: content part type '{other}' is not supported by Gemini",
                    at()
                ));
            }
        }
    }
    Ok(out)
}

fn inline(mime: &str, data: &str) -> Value {
    json!({ "inlineData": { "mimeType": mime, "data": data } })
}

/// An image (or other media) URL: `data:` URLs are inlined, remote URLs become `fileData`.
fn media_part(url: &str) -> Result<Value> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (mime, data) = parse_data_url(rest)?;
        return Ok(inline(mime, data));
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("gs://") {
        let mut file = Map::new();
        if let Some(mime) = mime_from_name(url) {
            file.insert("mimeType".into(), mime.into());
        }
        file.insert("fileUri".into(), url.into());
        return Ok(json!({ "fileData": file }));
    }
    Err("only data:, http(s):// and gs:// URLs are supported".into())
}

/// `<mime>[;param]*;base64,<data>` (the part after `data:`).
fn parse_data_url(rest: &str) -> Result<(&str, &str)> {
    let (header, data) = rest.split_once(',').ok_or("malformed data URL (no ',')")?;
    let mut fields = header.split(';');
    let mime = fields.next().unwrap_or("").trim();
    if !fields.any(|f| f.trim().eq_ignore_ascii_case("base64")) {
        return Err("data URLs must be base64-encoded".into());
    }
    if mime.is_empty() {
        return Err("data URL has no MIME type".into());
    }
    Ok((mime, data))
}

/// MIME type from a file name or URL path extension, for the types Gemini documents.
fn mime_from_name(name: &str) -> Option<&'static str> {
    let path = name.split(['?', '#']).next().unwrap_or(name);
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "gif" => "image/gif",
        "pdf" => "application/pdf",
        "wav" => "audio/wav",
        "mp3" => "audio/mp3",
        "txt" => "text/plain",
        _ => return None,
    })
}

fn file_part(file: Option<&Value>) -> Result<Value> {
    let file = file.ok_or("file part needs a 'file' object")?;
    if let Some(data) = file.get("file_data").and_then(Value::as_str) {
        if let Some(rest) = data.strip_prefix("data:") {
            let (mime, data) = parse_data_url(rest)?;
            return Ok(inline(mime, data));
        }
        let name = file.get("filename").and_then(Value::as_str).unwrap_or("");
        let mime = mime_from_name(name)
            .ok_or("file_data without a data: URL needs a filename with a known extension")?;
        return Ok(inline(mime, data));
    }
    if file.get("file_id").is_some() {
        return Err("OpenAI file ids cannot be resolved on Gemini; send file_data".into());
    }
    Err("file part needs 'file_data'".into())
}

fn assistant_parts(
    obj: &Map<String, Value>,
    i: usize,
    call_names: &mut HashMap<String, String>,
    family: Family,
) -> Result<Vec<Value>> {
    let mut parts: Vec<Value> = texts(obj.get("content"), i)?
        .iter()
        .filter_map(|t| text_part(t))
        .collect();
    let first_call = parts.len();
    let mut signed = false;
    if let Some(calls) = obj.get("tool_calls").filter(|v| !v.is_null()) {
        let calls = calls
            .as_array()
            .ok_or_else(|| format!("messages[{i}].tool_calls must be an array"))?;
        for (j, call) in calls.iter().enumerate() {
            let ty = call
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("function");
            if ty != "function" {
                return Err(format!(
                    "messages[{i}].tool_calls[{j}]: tool call type '{ty}' is not supported by Gemini"
                ));
            }
            let f = call.get("function");
            let name = f
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| format!("messages[{i}].tool_calls[{j}] needs function.name"))?;
            if let Some(id) = call.get("id").and_then(Value::as_str) {
                call_names.insert(id.to_string(), name.to_string());
            }
            let signature = call
                .get("extra_content")
                .and_then(|e| e.get("google"))
                .and_then(|g| g.get("thought_signature"))
                .and_then(Value::as_str);
            signed |= signature.is_some();
            parts.push(function_call(
                name,
                f.and_then(|f| f.get("arguments")),
                signature,
            ));
        }
    }
    if let Some(fc) = obj.get("function_call").filter(|v| v.is_object()) {
        let name = fc
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("messages[{i}].function_call needs 'name'"))?;
        parts.push(function_call(name, fc.get("arguments"), None));
    }
    if family == Family::Level
        && !signed
        && let Some(Value::Object(p)) = parts.get_mut(first_call)
    {
        p.insert("thoughtSignature".into(), SKIP_SIGNATURE.into());
    }
    Ok(parts)
}

fn function_call(name: &str, arguments: Option<&Value>, signature: Option<&str>) -> Value {
    let mut part = Map::new();
    part.insert(
        "functionCall".into(),
        json!({ "name": name, "args": parse_args(arguments) }),
    );
    if let Some(sig) = signature {
        part.insert("thoughtSignature".into(), sig.into());
    }
    Value::Object(part)
}

/// OpenAI `arguments` (a JSON-encoded string) → Gemini `args` (an object). Empty → `{}`; a string
/// that is not a JSON object (models do produce broken JSON, and clients replay it) is kept
/// verbatim as `{"arguments": "<raw>"}` rather than failing the whole conversation.
fn parse_args(arguments: Option<&Value>) -> Value {
    match arguments {
        Some(Value::String(s)) => {
            let trimmed = s.trim();
            if trimmed.is_empty() {
                return json!({});
            }
            match serde_json::from_str::<Value>(trimmed) {
                Ok(Value::Object(m)) => Value::Object(m),
                _ => json!({ "arguments": s }),
            }
        }
        Some(Value::Object(m)) => Value::Object(m.clone()),
        _ => json!({}),
    }
}

/// A tool result. Gemini wants `response` to be an object; `output` is the key its docs name
/// for a function's output.
fn function_response(name: &str, obj: &Map<String, Value>, i: usize) -> Result<Value> {
    let output = texts(obj.get("content"), i)?.concat();
    Ok(json!({ "functionResponse": { "name": name, "response": { "output": output } } }))
}

// ---------------------------------------------------------------------------------------------
// Tools

enum Choice {
    Auto,
    None,
    Required,
    Named(String),
    Allowed { required: bool, names: Vec<String> },
}

impl Choice {
    fn config(&self) -> Value {
        match self {
            Choice::Auto
            | Choice::Allowed {
                required: false, ..
            } => json!({ "mode": "AUTO" }),
            Choice::None => json!({ "mode": "NONE" }),
            Choice::Required | Choice::Allowed { required: true, .. } => json!({ "mode": "ANY" }),
            Choice::Named(name) => json!({ "mode": "ANY", "allowedFunctionNames": [name] }),
        }
    }
}

fn tool_choice(body: &Map<String, Value>) -> Result<Option<Choice>> {
    let Some(v) = body
        .get("tool_choice")
        .or_else(|| body.get("function_call"))
        .filter(|v| !v.is_null())
    else {
        return Ok(None);
    };
    let named = |v: &Value| {
        v.get("function")
            .and_then(|f| f.get("name"))
            .or_else(|| v.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Ok(Some(match v {
        Value::String(s) => match s.as_str() {
            "auto" => Choice::Auto,
            "none" => Choice::None,
            "required" => Choice::Required,
            other => return Err(format!("tool_choice '{other}' is not supported by Gemini")),
        },
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("function") | None => {
                Choice::Named(named(v).ok_or("tool_choice names no function (function.name)")?)
            }
            Some("allowed_tools") => {
                let at = o.get("allowed_tools");
                let required = at
                    .and_then(|a| a.get("mode"))
                    .and_then(Value::as_str)
                    .is_some_and(|m| m == "required");
                let names = at
                    .and_then(|a| a.get("tools"))
                    .and_then(Value::as_array)
                    .map(|ts| ts.iter().filter_map(named).collect())
                    .unwrap_or_default();
                Choice::Allowed { required, names }
            }
            Some(other) => {
                return Err(format!(
                    "tool_choice type '{other}' is not supported by Gemini"
                ));
            }
        },
        _ => return Err("tool_choice must be a string or an object".into()),
    }))
}

fn tools(body: &Map<String, Value>, choice: Option<&Choice>) -> Result<Option<Value>> {
    let mut decls = Vec::new();
    if let Some(list) = body.get("tools").filter(|v| !v.is_null()) {
        let list = list.as_array().ok_or("'tools' must be an array")?;
        for (i, t) in list.iter().enumerate() {
            let ty = t.get("type").and_then(Value::as_str).unwrap_or("");
            if ty != "function" {
                return Err(format!(
                    "tools[{i}]: tool type '{ty}' is not supported by Gemini"
                ));
            }
            let f = t
                .get("function")
                .ok_or_else(|| format!("tools[{i}] needs 'function'"))?;
            decls.push(declaration(f).map_err(|why| format!("tools[{i}]: {why}"))?);
        }
    }
    if let Some(list) = body.get("functions").and_then(Value::as_array) {
        for (i, f) in list.iter().enumerate() {
            decls.push(declaration(f).map_err(|why| format!("functions[{i}]: {why}"))?);
        }
    }
    if let Some(Choice::Allowed { names, .. }) = choice {
        decls.retain(|d| {
            d.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| names.iter().any(|a| a == n))
        });
    }
    if decls.is_empty() {
        return Ok(None);
    }
    Ok(Some(json!([{ "functionDeclarations": decls }])))
}

fn declaration(f: &Value) -> Result<Value> {
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .ok_or("function needs a 'name'")?;
    let mut d = Map::new();
    d.insert("name".into(), name.into());
    if let Some(desc) = f.get("description").and_then(Value::as_str) {
        d.insert("description".into(), desc.into());
    }
    // Omitted `parameters` means "no arguments" in OpenAI; Gemini reads absence the same way.
    if let Some(p) = f.get("parameters").filter(|p| !p.is_null()) {
        d.insert("parametersJsonSchema".into(), sanitize_schema(p));
    }
    Ok(Value::Object(d))
}

// ---------------------------------------------------------------------------------------------
// JSON Schema

/// Keywords whose value is a map of name → schema.
const SCHEMA_MAPS: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];
/// Keywords whose value is one schema (or, for `items` in old drafts, an array of schemas).
const SCHEMA_ONE: &[&str] = &[
    "items",
    "additionalProperties",
    "additionalItems",
    "unevaluatedProperties",
    "unevaluatedItems",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "contentSchema",
];
/// Keywords whose value is an array of schemas.
const SCHEMA_LISTS: &[&str] = &["anyOf", "oneOf", "allOf", "prefixItems"];

/// Deeper than this, schemas are copied unchanged (request bodies are already depth-limited by
/// the JSON parser; this only bounds the recursion here).
const MAX_SCHEMA_DEPTH: usize = 64;

/// Copies a JSON Schema without [`STRIPPED_SCHEMA_KEYWORDS`], walking only schema positions so a
/// property *named* `$schema`, or an `enum`/`const`/`default` value, is never touched.
pub fn sanitize_schema(schema: &Value) -> Value {
    sanitize_at(schema, 0)
}

fn sanitize_at(schema: &Value, depth: usize) -> Value {
    let Value::Object(obj) = schema else {
        return schema.clone();
    };
    if depth >= MAX_SCHEMA_DEPTH {
        return schema.clone();
    }
    let mut out = Map::new();
    for (k, v) in obj {
        let key = k.as_str();
        if STRIPPED_SCHEMA_KEYWORDS.contains(&key) {
            continue;
        }
        let value = if SCHEMA_MAPS.contains(&key) {
            match v {
                Value::Object(m) => Value::Object(
                    m.iter()
                        .map(|(name, s)| (name.clone(), sanitize_at(s, depth + 1)))
                        .collect(),
                ),
                other => other.clone(),
            }
        } else if SCHEMA_ONE.contains(&key) || SCHEMA_LISTS.contains(&key) {
            match v {
                Value::Array(items) => {
                    Value::Array(items.iter().map(|s| sanitize_at(s, depth + 1)).collect())
                }
                other => sanitize_at(other, depth + 1),
            }
        } else {
            v.clone()
        };
        out.insert(k.clone(), value);
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------------------------
// generationConfig

fn number(body: &Map<String, Value>, key: &str) -> Result<Option<Value>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(_)) => Ok(Some(v.clone())),
        Some(_) => Err(format!("'{key}' must be a number")),
    }
}

fn integer(body: &Map<String, Value>, key: &str) -> Result<Option<Value>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) if v.is_i64() || v.is_u64() => Ok(Some(v.clone())),
        Some(_) => Err(format!("'{key}' must be an integer")),
    }
}

fn generation_config(body: &Map<String, Value>, family: Family) -> Result<Map<String, Value>> {
    let mut c = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            c.insert(k.to_string(), v);
        }
    };
    put("temperature", number(body, "temperature")?);
    put("topP", number(body, "top_p")?);
    put("topK", integer(body, "top_k")?);
    put("candidateCount", integer(body, "n")?);
    let max = match integer(body, "max_completion_tokens")? {
        Some(v) => Some(v),
        None => integer(body, "max_tokens")?,
    };
    put("maxOutputTokens", max);
    put("stopSequences", stop_sequences(body.get("stop"))?);
    put("presencePenalty", number(body, "presence_penalty")?);
    put("frequencyPenalty", number(body, "frequency_penalty")?);
    put("seed", integer(body, "seed")?);
    if let Some(rf) = body.get("response_format").filter(|v| !v.is_null()) {
        match rf.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => {}
            "json_object" => put("responseMimeType", Some("application/json".into())),
            "json_schema" => {
                put("responseMimeType", Some("application/json".into()));
                let schema = rf
                    .get("json_schema")
                    .and_then(|j| j.get("schema"))
                    .filter(|s| !s.is_null())
                    .map(sanitize_schema);
                put("responseJsonSchema", schema);
            }
            other => {
                return Err(format!(
                    "response_format type '{other}' is not supported by Gemini"
                ));
            }
        }
    }
    if let Some(effort) = body.get("reasoning_effort").and_then(Value::as_str) {
        put("thinkingConfig", thinking_config(effort, family));
    }
    Ok(c)
}

fn stop_sequences(stop: Option<&Value>) -> Result<Option<Value>> {
    match stop {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(json!([s]))),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            Ok((!items.is_empty()).then(|| Value::Array(items.clone())))
        }
        Some(_) => Err("'stop' must be a string or an array of strings".into()),
    }
}

/// `reasoning_effort` → `thinkingConfig`. Thoughts themselves are never requested
/// (`includeThoughts` stays unset): the canonical format has no place for them; their tokens
/// are billed through `thoughtsTokenCount`.
///
/// | effort | Gemini 1.x/2.x `thinkingBudget` | Gemini 3+ `thinkingLevel` |
/// |---|---|---|
/// | `none` | `0` (off; 2.5 Pro rejects it) | `MINIMAL` (thinking cannot be turned off) |
/// | `minimal`, `low` | `1024` | `MINIMAL`, `LOW` |
/// | `medium` | `8192` | `MEDIUM` |
/// | `high`, `xhigh`, `max` | `24576` | `HIGH` |
///
/// The budgets are the ones Google's own OpenAI-compatible endpoint uses for `low`/`medium`/
/// `high`. Models that do not support a level (3.x Pro rejects `MINIMAL`) answer 400, which
/// is relayed. Unknown values send nothing (the model's default).
pub fn thinking_config(effort: &str, family: Family) -> Option<Value> {
    match family {
        Family::Budget => {
            let budget = match effort {
                "none" => 0,
                "minimal" | "low" => 1024,
                "medium" => 8192,
                "high" | "xhigh" | "max" => 24576,
                _ => return None,
            };
            Some(json!({ "thinkingBudget": budget }))
        }
        Family::Level => {
            let level = match effort {
                "none" | "minimal" => "MINIMAL",
                "low" => "LOW",
                "medium" => "MEDIUM",
                "high" | "xhigh" | "max" => "HIGH",
                _ => return None,
            };
            Some(json!({ "thinkingLevel": level }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value, model: &str) -> Result<Value> {
        chat_request(v.as_object().unwrap(), model)
    }

    #[test]
    fn families() {
        assert_eq!(Family::of("gemini-2.5-flash"), Family::Budget);
        assert_eq!(Family::of("models/gemini-1.5-pro"), Family::Budget);
        assert_eq!(Family::of("gemini-3-pro-preview"), Family::Level);
        assert_eq!(Family::of("gemini-flash-latest"), Family::Level);
    }

    #[test]
    fn sanitizer_walks_schema_positions_only() {
        let s = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "$schema": {"type": "string", "$comment": "a property named $schema"},
                "tags": {"type": "array", "items": {"type": "string", "$comment": "x"}},
                "u": {"anyOf": [{"type": "null"}, {"type": "integer", "$schema": "x"}]}
            },
            "default": {"$schema": "kept: a value, not a schema"},
            "additionalProperties": false
        });
        let out = sanitize_schema(&s);
        assert_eq!(
            out,
            json!({
                "type": "object",
                "properties": {
                    "$schema": {"type": "string"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "u": {"anyOf": [{"type": "null"}, {"type": "integer"}]}
                },
                "default": {"$schema": "kept: a value, not a schema"},
                "additionalProperties": false
            })
        );
    }

    #[test]
    fn deep_schemas_do_not_overflow() {
        let mut s = json!({"type": "string"});
        for _ in 0..500 {
            s = json!({ "items": s });
        }
        let _ = sanitize_schema(&s);
    }

    #[test]
    fn tool_result_without_call_is_refused() {
        let e = req(
            json!({"messages":[{"role":"tool","tool_call_id":"call_x","content":"1"}]}),
            "gemini-2.5-flash",
        )
        .unwrap_err();
        assert!(e.contains("call_x"), "{e}");
    }

    #[test]
    fn tool_result_may_name_itself() {
        let out = req(
            json!({"messages":[{"role":"tool","tool_call_id":"x","name":"f","content":"1"}]}),
            "gemini-2.5-flash",
        )
        .unwrap();
        assert_eq!(
            out["contents"][0]["parts"][0]["functionResponse"]["name"],
            "f"
        );
    }

    #[test]
    fn refuses_what_it_cannot_express() {
        for body in [
            json!({"messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"file-1"}}]}]}),
            json!({"messages":[{"role":"user","content":[{"type":"video","video":{}}]}]}),
            json!({"messages":[],"tools":[{"type":"custom","custom":{"name":"x"}}]}),
            json!({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"ftp://x/a.png"}}]}]}),
            json!({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png,abc"}}]}]}),
            json!({"messages":[{"role":"wizard","content":"x"}]}),
            json!({"messages":[], "temperature": "hot"}),
        ] {
            assert!(req(body.clone(), "gemini-2.5-flash").is_err(), "{body}");
        }
    }

    #[test]
    fn arguments_that_are_not_an_object_are_kept_verbatim() {
        assert_eq!(parse_args(Some(&json!(""))), json!({}));
        assert_eq!(parse_args(Some(&json!("{\"a\":1}"))), json!({"a":1}));
        assert_eq!(
            parse_args(Some(&json!("{broken"))),
            json!({"arguments":"{broken"})
        );
        assert_eq!(parse_args(Some(&json!("[1]"))), json!({"arguments":"[1]"}));
        assert_eq!(parse_args(None), json!({}));
    }

    #[test]
    fn level_models_get_the_signature_sentinel_only_when_unsigned() {
        let body = |extra: Value| {
            json!({"messages":[
                {"role":"user","content":"hi"},
                {"role":"assistant","tool_calls":[
                    {"id":"a","type":"function","function":{"name":"f","arguments":"{}"},"extra_content":extra},
                    {"id":"b","type":"function","function":{"name":"g","arguments":"{}"}}
                ]}
            ]})
        };
        let unsigned = req(body(Value::Null), "gemini-3-flash-preview").unwrap();
        let parts = &unsigned["contents"][1]["parts"];
        assert_eq!(parts[0]["thoughtSignature"], SKIP_SIGNATURE);
        assert!(parts[1].get("thoughtSignature").is_none());
        let signed = req(
            body(json!({"google":{"thought_signature":"c2ln"}})),
            "gemini-3-flash-preview",
        )
        .unwrap();
        assert_eq!(
            signed["contents"][1]["parts"][0]["thoughtSignature"],
            "c2ln"
        );
        let old = req(body(Value::Null), "gemini-2.5-flash").unwrap();
        assert!(
            old["contents"][1]["parts"][0]
                .get("thoughtSignature")
                .is_none()
        );
    }

    #[test]
    fn allowed_tools_filters_declarations() {
        let out = req(
            json!({"messages":[],"tools":[
                {"type":"function","function":{"name":"a"}},
                {"type":"function","function":{"name":"b"}}],
              "tool_choice":{"type":"allowed_tools","allowed_tools":{"mode":"required","tools":[{"type":"function","function":{"name":"b"}}]}}}),
            "gemini-2.5-flash",
        )
        .unwrap();
        assert_eq!(
            out["tools"],
            json!([{"functionDeclarations":[{"name":"b"}]}])
        );
        assert_eq!(
            out["toolConfig"],
            json!({"functionCallingConfig":{"mode":"ANY"}})
        );
    }

    #[test]
    fn thinking() {
        assert_eq!(
            thinking_config("none", Family::Budget),
            Some(json!({"thinkingBudget":0}))
        );
        assert_eq!(
            thinking_config("high", Family::Level),
            Some(json!({"thinkingLevel":"HIGH"}))
        );
        assert_eq!(thinking_config("turbo", Family::Level), None);
    }
}
