//! The Gemini (Generative Language API) wire format: `models/{model}:generateContent`,
//! `:streamGenerateContent` (SSE with `?alt=sse`, else one streamed JSON array),
//! `:embedContent`, `:batchEmbedContents`, `:countTokens` and `GET models`, under `/v1beta/`
//! (and `/v1/`), with Google's errors and usage metadata (§4 of the wire-format reference).
//!
//! - **Auth**: with the `api_key` knob set, the key must come in `x-goog-api-key` or the
//!   `key` query parameter. No key at all is a 403 `PERMISSION_DENIED`; a wrong key is a 400
//!   `INVALID_ARGUMENT` with reason `API_KEY_INVALID`, as Google answers.
//! - **Validation** (400 `INVALID_ARGUMENT`, Google's messages): unknown fields at the top
//!   level, in `generationConfig` and in parts (field names are accepted in lowerCamelCase and
//!   snake_case, as proto JSON does); `contents` missing or empty; a role other than
//!   `user`/`model` ("Please use a valid role: user, model."); a content without parts; a
//!   part with no data field or with two; function declarations without a name or with both
//!   `parameters` and `parametersJsonSchema`; `temperature` outside 0–2, `topP` outside 0–1,
//!   `candidateCount` outside 1–8, `maxOutputTokens` < 1, more than 5 `stopSequences`, an
//!   unsupported `responseMimeType`, a `responseSchema` without `application/json`.
//! - **Answers** come from [`crate::plan`]: `candidateCount` candidates of text; with
//!   `tools[].functionDeclarations`, a mode other than `NONE` and a last turn from the user
//!   (not carrying `functionResponse` parts), `functionCall` parts with `args` objects and no
//!   `id` (Gemini usually sends none), finish reason `STOP`. `ANY` with
//!   `allowedFunctionNames` restricts the calls. `responseMimeType: application/json` gives
//!   JSON text (`responseSchema`/`responseJsonSchema` filled in, else `{"answer": …}`).
//!   `maxOutputTokens` cuts the answer (`MAX_TOKENS`); `stopSequences` end it (`STOP`).
//! - **Usage** (`usageMetadata`): `promptTokenCount` is, with the model's encoding
//!   (`o200k_base` for Gemini models), 3 per content + its `role` + its parts (text parts as
//!   their text, other parts as their JSON) + 3, plus the `systemInstruction` parts and each
//!   tool's JSON. It **includes** cached tokens: with the `cached_prompt_tokens` knob (or what
//!   the `prompt_cache` knob finds cached: tools, then `systemInstruction`, then contents), that
//!   many are reported as `cachedContentTokenCount` (absent when 0).
//!   `candidatesTokenCount` is the token count of all candidates' text or function-call
//!   arguments JSON; `totalTokenCount` is their sum. No thoughts are simulated.
//! - **Streams** (`alt=sse`): data-only SSE events separated by CRLF blank lines, no
//!   `[DONE]`, ended by closing the body. Each chunk carries the new parts of one candidate
//!   and a cumulative `usageMetadata`; the last chunk of a candidate has its
//!   `finishReason`, and the last chunk of the stream holds the exact totals. Function calls
//!   arrive whole in one chunk. A cut stream ends before the first `finishReason`.
//! - **Embeddings**: one deterministic unit vector per input (the same text embeds the same
//!   way as on the OpenAI path), `outputDimensionality` values (default 8); no usage in the
//!   response (Google sends none), the tokens are counted in the stats.
//! - **Errors**: `{"error":{"code","message","status"}}`; injected failures use the status
//!   name of their code (`RESOURCE_EXHAUSTED` with a `RetryInfo` detail for 429,
//!   `UNAVAILABLE` for 503, `INTERNAL` for 500).

use std::borrow::Cow;
use std::sync::LazyLock;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, Uri};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tollgate_tokens::{Encoding, count_content};

use crate::config::SimConfig;
use crate::content::{Fnv1a, hash_str, unit_vector};
use crate::error::GoogleError;
use crate::http::{SSE, SimBody, json_response};
use crate::plan::{
    Ask, ChoiceBody, ChoicePlan, Finish, PromptUsage, REPLY_PRIMING, ResponseFormat,
    TOKENS_PER_TURN, ToolChoice, ToolDef, count_parts, encoding_for, group_ranges, plan_answers,
};
use crate::prompt_cache::{PromptPrefixes, messages_of};
use crate::router::{Ctx, Failure, GeminiMethod, Refusal, next_id, query_param};

const MAX_CANDIDATES: u64 = 8;
const MAX_STOP_SEQUENCES: usize = 5;
const DEFAULT_EMBEDDING_DIMS: u64 = 8;
const MAX_EMBEDDING_DIMS: u64 = 3072;
const MAX_BATCH_EMBEDDINGS: usize = 100;

/// Top-level fields of `GenerateContentRequest` (camelCase, snake_case).
const REQUEST_FIELDS: &[(&str, &str)] = &[
    ("model", "model"),
    ("contents", "contents"),
    ("systemInstruction", "system_instruction"),
    ("tools", "tools"),
    ("toolConfig", "tool_config"),
    ("safetySettings", "safety_settings"),
    ("cachedContent", "cached_content"),
    ("generationConfig", "generation_config"),
    ("labels", "labels"),
    ("serviceTier", "service_tier"),
    ("store", "store"),
];

/// Fields of `GenerationConfig`.
const GENERATION_FIELDS: &[(&str, &str)] = &[
    ("stopSequences", "stop_sequences"),
    ("responseMimeType", "response_mime_type"),
    ("responseSchema", "response_schema"),
    ("responseJsonSchema", "response_json_schema"),
    ("responseModalities", "response_modalities"),
    ("candidateCount", "candidate_count"),
    ("maxOutputTokens", "max_output_tokens"),
    ("temperature", "temperature"),
    ("topP", "top_p"),
    ("topK", "top_k"),
    ("seed", "seed"),
    ("presencePenalty", "presence_penalty"),
    ("frequencyPenalty", "frequency_penalty"),
    ("responseLogprobs", "response_logprobs"),
    ("logprobs", "logprobs"),
    (
        "enableEnhancedCivicAnswers",
        "enable_enhanced_civic_answers",
    ),
    ("speechConfig", "speech_config"),
    ("thinkingConfig", "thinking_config"),
    ("imageConfig", "image_config"),
    ("mediaResolution", "media_resolution"),
];

/// The data fields of a `Part` (exactly one must be set).
const PART_DATA: &[(&str, &str)] = &[
    ("text", "text"),
    ("inlineData", "inline_data"),
    ("fileData", "file_data"),
    ("functionCall", "function_call"),
    ("functionResponse", "function_response"),
    ("executableCode", "executable_code"),
    ("codeExecutionResult", "code_execution_result"),
];

/// The other fields a `Part` may carry.
const PART_EXTRA: &[(&str, &str)] = &[
    ("thought", "thought"),
    ("thoughtSignature", "thought_signature"),
    ("videoMetadata", "video_metadata"),
    ("mediaResolution", "media_resolution"),
    ("partMetadata", "part_metadata"),
];

const MIME_TYPES: &[&str] = &[
    "text/plain",
    "application/json",
    "application/xml",
    "application/yaml",
    "text/x.enum",
];

/// Models listed by `GET /v1beta/models`: (name, input limit, output limit, methods).
const MODELS: &[(&str, u64, u64, &[&str])] = &[
    (
        "gemini-2.5-flash",
        1_048_576,
        65_536,
        &["generateContent", "countTokens"],
    ),
    (
        "gemini-2.5-pro",
        1_048_576,
        65_536,
        &["generateContent", "countTokens"],
    ),
    (
        "gemini-2.0-flash",
        1_048_576,
        8_192,
        &["generateContent", "countTokens"],
    ),
    (
        "gemini-embedding-001",
        2_048,
        1,
        &["embedContent", "countTokens"],
    ),
];

// ---------------------------------------------------------------------------------------------
// Auth
// ---------------------------------------------------------------------------------------------

/// With a key configured: `x-goog-api-key` or `?key=` must carry it.
pub(crate) fn check_auth(
    cfg: &SimConfig,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<(), GoogleError> {
    let Some(key) = cfg.api_key.as_deref() else {
        return Ok(());
    };
    let sent = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| query_param(uri, "key"));
    match sent {
        None | Some("") => Err(GoogleError::missing_key()),
        // A plain comparison: a test double holding a throwaway key.
        Some(k) if k == key => Ok(()),
        Some(_) => Err(GoogleError::invalid_key()),
    }
}

// ---------------------------------------------------------------------------------------------
// Request parsing and validation
// ---------------------------------------------------------------------------------------------

fn invalid(msg: impl Into<String>) -> GoogleError {
    GoogleError::invalid(msg)
}

/// A field by its proto JSON names (lowerCamelCase or the original snake_case).
fn get<'a>(obj: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    obj.get(camel)
        .or_else(|| obj.get(snake))
        .filter(|v| !v.is_null())
}

fn check_fields(
    obj: &Map<String, Value>,
    known: &[&[(&str, &str)]],
    at: Option<&str>,
) -> Result<(), GoogleError> {
    for k in obj.keys() {
        let found = known
            .iter()
            .flat_map(|l| l.iter())
            .any(|(camel, snake)| k == camel || k == snake);
        if !found {
            let at = at.map(|a| format!(" at '{a}'")).unwrap_or_default();
            return Err(invalid(format!(
                "Invalid JSON payload received. Unknown name \"{k}\"{at}: Cannot find field."
            )));
        }
    }
    Ok(())
}

/// A validated generateContent request.
#[derive(Debug)]
struct GenerateRequest<'a> {
    ask: Ask<'a>,
}

/// Validates a `Content` (`contents[i]` or the system instruction) and returns its parts.
fn validate_content<'a>(
    c: &'a Value,
    path: &str,
    check_role: bool,
) -> Result<&'a [Value], GoogleError> {
    let Some(obj) = c.as_object() else {
        return Err(invalid(format!(
            "Invalid value at '{path}' (type.googleapis.com/google.ai.generativelanguage.v1beta.Content), {c}"
        )));
    };
    check_fields(obj, &[&[("role", "role"), ("parts", "parts")]], Some(path))?;
    if check_role {
        match obj.get("role") {
            None | Some(Value::Null) => {}
            Some(Value::String(r)) if r.is_empty() || r == "user" || r == "model" => {}
            Some(_) => return Err(invalid("Please use a valid role: user, model.")),
        }
    }
    let parts = match obj.get("parts") {
        Some(Value::Array(p)) if !p.is_empty() => p.as_slice(),
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err(invalid(format!(
                "* GenerateContentRequest.{path}.parts: contents.parts must not be empty.\n"
            )));
        }
        Some(other) => {
            return Err(invalid(format!(
                "Invalid value at '{path}.parts' (type.googleapis.com/google.ai.generativelanguage.v1beta.Part), {other}"
            )));
        }
    };
    for (j, p) in parts.iter().enumerate() {
        let ppath = format!("{path}.parts[{j}]");
        let Some(po) = p.as_object() else {
            return Err(invalid(format!(
                "Invalid value at '{ppath}' (type.googleapis.com/google.ai.generativelanguage.v1beta.Part), {p}"
            )));
        };
        check_fields(po, &[PART_DATA, PART_EXTRA], Some(&ppath))?;
        let set: Vec<&str> = PART_DATA
            .iter()
            .filter(|(camel, snake)| po.contains_key(*camel) || po.contains_key(*snake))
            .map(|(camel, _)| *camel)
            .collect();
        match set.as_slice() {
            [] => {
                return Err(invalid(format!(
                    "* GenerateContentRequest.{ppath}.data: required oneof field 'data' must have one initialized field\n"
                )));
            }
            [one] => {
                let v = get(po, one, one).unwrap_or(&Value::Null);
                match *one {
                    "text" if !v.is_string() => {
                        return Err(invalid(format!(
                            "Invalid value at '{ppath}.text' (TYPE_STRING), {v}"
                        )));
                    }
                    "functionCall" | "functionResponse" => {
                        if v.get("name")
                            .and_then(Value::as_str)
                            .is_none_or(str::is_empty)
                        {
                            return Err(invalid(format!(
                                "* GenerateContentRequest.{ppath}.{one}.name: Name cannot be empty.\n"
                            )));
                        }
                        if *one == "functionResponse"
                            && !v.get("response").is_some_and(Value::is_object)
                        {
                            return Err(invalid(format!(
                                "* GenerateContentRequest.{ppath}.function_response.response: \
                                 response must be a JSON object.\n"
                            )));
                        }
                    }
                    _ => {}
                }
            }
            [_, second, ..] => {
                return Err(invalid(format!(
                    "Invalid value at '{ppath}' (oneof), oneof field 'data' is already set. \
                     Cannot set '{second}'"
                )));
            }
        }
    }
    Ok(parts)
}

/// An optional number within `[lo, hi]`.
fn ranged(
    gen_cfg: &Map<String, Value>,
    camel: &str,
    snake: &str,
    lo: f64,
    hi: f64,
) -> Result<Option<f64>, GoogleError> {
    match get(gen_cfg, camel, snake) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            let v = n.as_f64().unwrap_or(f64::NAN);
            if (lo..=hi).contains(&v) {
                Ok(Some(v))
            } else {
                Err(invalid(format!(
                    "* GenerateContentRequest.generation_config.{snake}: must be in the range \
                     [{lo}, {hi}], got {v}.\n"
                )))
            }
        }
        Some(v) => Err(invalid(format!(
            "Invalid value at 'generation_config.{snake}' (TYPE_FLOAT), {v}"
        ))),
    }
}

/// An optional integer (JSON number or, as proto JSON allows for int64, a string).
fn int(
    obj: &Map<String, Value>,
    camel: &str,
    snake: &str,
    at: &str,
) -> Result<Option<i64>, GoogleError> {
    match get(obj, camel, snake) {
        None => Ok(None),
        Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64()),
        Some(Value::String(s)) if s.parse::<i64>().is_ok() => Ok(s.parse().ok()),
        Some(v) => Err(invalid(format!(
            "Invalid value at '{at}.{snake}' (TYPE_INT32), {v}"
        ))),
    }
}

fn parse_generate<'a>(body: &'a Value, model: &str) -> Result<GenerateRequest<'a>, GoogleError> {
    let Some(obj) = body.as_object() else {
        return Err(invalid(format!(
            "Invalid JSON payload received. Expected an object, got {body}."
        )));
    };
    check_fields(obj, &[REQUEST_FIELDS], None)?;
    let contents = match obj.get("contents") {
        Some(Value::Array(c)) if !c.is_empty() => c.as_slice(),
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err(invalid(
                "* GenerateContentRequest.contents: contents is not specified\n",
            ));
        }
        Some(other) => {
            return Err(invalid(format!(
                "Invalid value at 'contents' (type.googleapis.com/google.ai.generativelanguage.v1beta.Content), {other}"
            )));
        }
    };
    for (i, c) in contents.iter().enumerate() {
        validate_content(c, &format!("contents[{i}]"), true)?;
    }
    let system = get(obj, "systemInstruction", "system_instruction");
    if let Some(s) = system {
        validate_content(s, "system_instruction", false)?;
    }

    // An absent generationConfig reads as an empty one (a static so the request's borrows
    // can outlive this function).
    static EMPTY: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);
    let gen_cfg = match get(obj, "generationConfig", "generation_config") {
        None => &*EMPTY,
        Some(Value::Object(g)) => g,
        Some(v) => {
            return Err(invalid(format!(
                "Invalid value at 'generation_config' (type.googleapis.com/google.ai.generativelanguage.v1beta.GenerationConfig), {v}"
            )));
        }
    };
    check_fields(gen_cfg, &[GENERATION_FIELDS], Some("generation_config"))?;
    ranged(gen_cfg, "temperature", "temperature", 0.0, 2.0)?;
    ranged(gen_cfg, "topP", "top_p", 0.0, 1.0)?;
    let n = int(
        gen_cfg,
        "candidateCount",
        "candidate_count",
        "generation_config",
    )?
    .unwrap_or(1);
    if n < 1 || n as u64 > MAX_CANDIDATES {
        return Err(invalid(format!(
            "* GenerateContentRequest.generation_config.candidate_count: must be between 1 \
             and {MAX_CANDIDATES}, got {n}.\n"
        )));
    }
    let max_tokens = match int(
        gen_cfg,
        "maxOutputTokens",
        "max_output_tokens",
        "generation_config",
    )? {
        None => None,
        Some(m) if m < 1 => {
            return Err(invalid(format!(
                "* GenerateContentRequest.generation_config.max_output_tokens: must be \
                     positive, got {m}.\n"
            )));
        }
        Some(m) => Some(m as u64),
    };
    let stop = match get(gen_cfg, "stopSequences", "stop_sequences") {
        None => Vec::new(),
        Some(Value::Array(items)) => {
            if items.len() > MAX_STOP_SEQUENCES {
                return Err(invalid(format!(
                    "* GenerateContentRequest.generation_config.stop_sequences: at most \
                     {MAX_STOP_SEQUENCES} stop sequences are allowed.\n"
                )));
            }
            items
                .iter()
                .map(|s| {
                    s.as_str().ok_or_else(|| {
                        invalid(format!(
                            "Invalid value at 'generation_config.stop_sequences' (TYPE_STRING), {s}"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?
        }
        Some(v) => {
            return Err(invalid(format!(
                "Invalid value at 'generation_config.stop_sequences' (TYPE_STRING), {v}"
            )));
        }
    };
    let format = parse_format(gen_cfg)?;
    let tools = parse_tools(obj)?;
    let tool_choice = parse_tool_config(obj)?;

    let seed = {
        let mut h = Fnv1a::default();
        if let Some(s) = system {
            h.write_json(s);
        }
        for c in contents {
            h.write_json(c);
        }
        h.finish()
    };
    // A function response gets a text answer; tools are called in reply to the user.
    let user_turn = contents
        .last()
        .filter(|c| {
            matches!(
                c.get("role").and_then(Value::as_str),
                None | Some("user" | "")
            )
        })
        .and_then(|c| c.get("parts").and_then(Value::as_array))
        .filter(|parts| {
            !parts.iter().any(|p| {
                p.get("functionResponse")
                    .or_else(|| p.get("function_response"))
                    .is_some()
            })
        })
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" ")
        });
    let ask = Ask {
        enc: encoding_for(model),
        seed,
        n: n as u32,
        max_tokens,
        tools,
        tool_choice,
        parallel_tool_calls: true,
        format,
        stop,
        user_turn,
    };
    Ok(GenerateRequest { ask })
}

fn parse_format(gen_cfg: &Map<String, Value>) -> Result<ResponseFormat<'_>, GoogleError> {
    let mime = match get(gen_cfg, "responseMimeType", "response_mime_type") {
        None => "text/plain",
        Some(Value::String(m)) if MIME_TYPES.contains(&m.as_str()) => m.as_str(),
        Some(_) => {
            return Err(invalid(
                "* GenerateContentRequest.generation_config.response_mime_type: allowed \
                 mimetypes are `text/plain`, `application/json`, `application/xml`, \
                 `application/yaml` and `text/x.enum`.\n",
            ));
        }
    };
    let schema = get(gen_cfg, "responseSchema", "response_schema");
    let json_schema = get(gen_cfg, "responseJsonSchema", "response_json_schema");
    if schema.is_some() && json_schema.is_some() {
        return Err(invalid(
            "* GenerateContentRequest.generation_config: response_schema and \
             response_json_schema cannot both be set.\n",
        ));
    }
    let schema = schema.or(json_schema);
    if schema.is_some() && mime == "text/plain" {
        return Err(invalid(
            "* GenerateContentRequest.generation_config.response_mime_type: It should be \
             set to application/json or text/x.enum when response_schema is set.\n",
        ));
    }
    Ok(match mime {
        "application/json" => match schema {
            Some(s) => ResponseFormat::JsonSchema(Some(s)),
            None => ResponseFormat::JsonObject,
        },
        _ => ResponseFormat::Text,
    })
}

fn parse_tools(obj: &Map<String, Value>) -> Result<Vec<ToolDef<'_>>, GoogleError> {
    let list = match obj.get("tools") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(t)) => t,
        Some(v) => {
            return Err(invalid(format!(
                "Invalid value at 'tools' (type.googleapis.com/google.ai.generativelanguage.v1beta.Tool), {v}"
            )));
        }
    };
    let mut tools = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let Some(decls) = t
            .as_object()
            .and_then(|o| get(o, "functionDeclarations", "function_declarations"))
        else {
            // Built-in tools (googleSearch, codeExecution, urlContext, …): accepted, never
            // called.
            continue;
        };
        let Some(decls) = decls.as_array() else {
            return Err(invalid(format!(
                "Invalid value at 'tools[{i}].function_declarations', {decls}"
            )));
        };
        for (j, d) in decls.iter().enumerate() {
            let path = || format!("tools[{i}].function_declarations[{j}]");
            let Some(d) = d.as_object() else {
                return Err(invalid(format!(
                    "Invalid value at '{}' (type.googleapis.com/google.ai.generativelanguage.v1beta.FunctionDeclaration), {d}",
                    path()
                )));
            };
            let name = d.get("name").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() {
                return Err(invalid(format!(
                    "* GenerateContentRequest.{}.name: Name cannot be empty.\n",
                    path()
                )));
            }
            let params = get(d, "parameters", "parameters");
            let json_params = get(d, "parametersJsonSchema", "parameters_json_schema");
            if params.is_some() && json_params.is_some() {
                return Err(invalid(format!(
                    "* GenerateContentRequest.{}: parameters and parameters_json_schema \
                     cannot both be set.\n",
                    path()
                )));
            }
            tools.push(ToolDef {
                name,
                parameters: params.or(json_params),
            });
        }
    }
    Ok(tools)
}

fn parse_tool_config(obj: &Map<String, Value>) -> Result<ToolChoice<'_>, GoogleError> {
    let Some(fcc) = get(obj, "toolConfig", "tool_config")
        .and_then(Value::as_object)
        .and_then(|tc| get(tc, "functionCallingConfig", "function_calling_config"))
        .and_then(Value::as_object)
    else {
        return Ok(ToolChoice::Auto);
    };
    let allowed: Vec<&str> = get(fcc, "allowedFunctionNames", "allowed_function_names")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mode = get(fcc, "mode", "mode")
        .and_then(Value::as_str)
        .unwrap_or("AUTO");
    match mode.to_ascii_uppercase().as_str() {
        "AUTO" | "MODE_UNSPECIFIED" | "VALIDATED" if allowed.is_empty() => Ok(ToolChoice::Auto),
        "ANY" if allowed.is_empty() => Ok(ToolChoice::Required),
        "ANY" | "VALIDATED" => Ok(ToolChoice::Allowed(allowed)),
        "NONE" if allowed.is_empty() => Ok(ToolChoice::None),
        "AUTO" | "MODE_UNSPECIFIED" | "NONE" => Err(invalid(
            "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: \
             allowed_function_names should be set only when the mode is ANY or VALIDATED.\n",
        )),
        _ => Err(invalid(format!(
            "Invalid value at 'tool_config.function_calling_config.mode' \
             (type.googleapis.com/google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), \"{mode}\""
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Usage
// ---------------------------------------------------------------------------------------------

/// Tokens of a `Content`'s parts.
fn content_parts_tokens(enc: Encoding, c: &Value) -> u64 {
    c.get("parts")
        .and_then(Value::as_array)
        .map_or(0, |p| count_parts(enc, p))
}

/// Tokens of one `contents` turn, its framing included.
fn turn_tokens(enc: Encoding, c: &Value) -> u64 {
    let role = c.get("role").and_then(Value::as_str).unwrap_or("");
    TOKENS_PER_TURN + enc.count(role) + content_parts_tokens(enc, c)
}

/// Prompt tokens of a generateContent / countTokens body (see the module doc).
fn prompt_tokens(enc: Encoding, body: &Value) -> u64 {
    let Some(obj) = body.as_object() else {
        return 0;
    };
    let mut total = 0;
    if let Some(contents) = obj.get("contents").and_then(Value::as_array) {
        for c in contents {
            total += turn_tokens(enc, c);
        }
        total += REPLY_PRIMING;
    }
    if let Some(s) = get(obj, "systemInstruction", "system_instruction") {
        total += content_parts_tokens(enc, s);
    }
    if let Some(tools) = obj.get("tools").filter(|t| !t.is_null()) {
        total += count_content(enc, tools);
    }
    total
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ModalityCount {
    modality: &'static str,
    token_count: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageOut {
    prompt_token_count: u64,
    candidates_token_count: u64,
    total_token_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cached_content_token_count: Option<u64>,
    prompt_tokens_details: [ModalityCount; 1],
}

impl UsageOut {
    /// `promptTokenCount` includes the cached tokens (Gemini's semantics).
    fn new(prompt: PromptUsage, candidates: u64) -> Self {
        UsageOut {
            prompt_token_count: prompt.total,
            candidates_token_count: candidates,
            total_token_count: prompt.total.saturating_add(candidates),
            cached_content_token_count: (prompt.cached > 0).then_some(prompt.cached),
            prompt_tokens_details: [ModalityCount {
                modality: "TEXT",
                token_count: prompt.total,
            }],
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Output shapes
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallOut<'a> {
    name: &'a str,
    args: Value,
}

/// A part: serde's external tagging gives exactly Gemini's one-key objects,
/// `{"text": …}` or `{"functionCall": …}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum Part<'a> {
    Text(Cow<'a, str>),
    FunctionCall(FunctionCallOut<'a>),
}

#[derive(Debug, Serialize)]
struct ContentOut<'a> {
    parts: Vec<Part<'a>>,
    role: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CandidateOut<'a> {
    content: ContentOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'static str>,
    index: u32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    candidates: Vec<CandidateOut<'a>>,
    usage_metadata: UsageOut,
    model_version: &'a str,
    response_id: &'a str,
}

fn finish_reason(f: &Finish) -> &'static str {
    match f {
        Finish::Length => "MAX_TOKENS",
        // Natural end, a stop sequence and function calls are all `STOP` on Gemini.
        Finish::Stop | Finish::StopSequence(_) | Finish::ToolCalls => "STOP",
    }
}

fn function_calls(plan: &ChoicePlan) -> Vec<Part<'_>> {
    match &plan.body {
        ChoiceBody::ToolCalls(calls) => calls
            .iter()
            .map(|c| {
                Part::FunctionCall(FunctionCallOut {
                    name: &c.name,
                    args: c.input(),
                })
            })
            .collect(),
        ChoiceBody::Text(_) => Vec::new(),
    }
}

fn render_response(
    id: &str,
    model: &str,
    plans: &[ChoicePlan],
    prompt: PromptUsage,
    candidates_tokens: u64,
) -> Vec<u8> {
    let candidates = plans
        .iter()
        .map(|p| CandidateOut {
            content: ContentOut {
                parts: match &p.body {
                    ChoiceBody::Text(pieces) => {
                        vec![Part::Text(Cow::Owned(pieces.concat()))]
                    }
                    ChoiceBody::ToolCalls(_) => function_calls(p),
                },
                role: "model",
            },
            finish_reason: Some(finish_reason(&p.finish)),
            index: p.index,
        })
        .collect();
    let out = ResponseOut {
        candidates,
        usage_metadata: UsageOut::new(prompt, candidates_tokens),
        model_version: model,
        response_id: id,
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

/// How a stream is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `?alt=sse`: `data: <json>` events separated by CRLF blank lines.
    Sse,
    /// No `alt`: the chunks as one JSON array, streamed element by element.
    JsonArray,
}

/// The stream's chunks and the index of the first chunk carrying a `finishReason`.
fn render_stream(
    id: &str,
    model: &str,
    plans: &[ChoicePlan],
    prompt: PromptUsage,
    chunks: u32,
    framing: Framing,
) -> (Vec<Bytes>, usize) {
    let total: u64 = plans.iter().map(|p| p.tokens).sum();
    let mut frames: Vec<Bytes> = Vec::new();
    let mut first_final = usize::MAX;
    // Completion tokens of the candidates already streamed (exact) …
    let mut done = 0u64;
    let emit = |frames: &mut Vec<Bytes>, cand: CandidateOut<'_>, so_far: u64, last: bool| {
        // … so each chunk's usage is cumulative, and the very last one holds the totals.
        let candidates_tokens = if last { total } else { so_far.min(total) };
        let out = ResponseOut {
            candidates: vec![cand],
            usage_metadata: UsageOut::new(prompt, candidates_tokens),
            model_version: model,
            response_id: id,
        };
        let mut buf = Vec::with_capacity(256);
        match framing {
            Framing::Sse => buf.extend_from_slice(b"data: "),
            Framing::JsonArray => {
                buf.extend_from_slice(if frames.is_empty() { b"[" } else { b",\r\n" })
            }
        }
        if serde_json::to_writer(&mut buf, &out).is_err() {
            buf.extend_from_slice(b"{}");
        }
        if framing == Framing::Sse {
            buf.extend_from_slice(b"\r\n\r\n");
        }
        frames.push(Bytes::from(buf));
    };
    for (k, p) in plans.iter().enumerate() {
        let last_plan = k + 1 == plans.len();
        let finish = Some(finish_reason(&p.finish));
        match &p.body {
            ChoiceBody::Text(pieces) => {
                let ranges = group_ranges(pieces.len(), chunks);
                if ranges.is_empty() {
                    first_final = first_final.min(frames.len());
                    emit(
                        &mut frames,
                        CandidateOut {
                            content: ContentOut {
                                parts: vec![Part::Text(Cow::Borrowed(""))],
                                role: "model",
                            },
                            finish_reason: finish,
                            index: p.index,
                        },
                        done,
                        last_plan,
                    );
                }
                let n = ranges.len();
                for (g, r) in ranges.into_iter().enumerate() {
                    let end = g + 1 == n;
                    if end {
                        first_final = first_final.min(frames.len());
                    }
                    let so_far = done + r.end as u64;
                    emit(
                        &mut frames,
                        CandidateOut {
                            content: ContentOut {
                                parts: vec![Part::Text(Cow::Owned(pieces[r].concat()))],
                                role: "model",
                            },
                            finish_reason: end.then_some(finish).flatten(),
                            index: p.index,
                        },
                        so_far,
                        end && last_plan,
                    );
                }
            }
            ChoiceBody::ToolCalls(_) => {
                first_final = first_final.min(frames.len());
                emit(
                    &mut frames,
                    CandidateOut {
                        content: ContentOut {
                            parts: function_calls(p),
                            role: "model",
                        },
                        finish_reason: finish,
                        index: p.index,
                    },
                    done + p.tokens,
                    last_plan,
                );
            }
        }
        done += p.tokens;
    }
    if framing == Framing::JsonArray {
        frames.push(Bytes::from_static(b"]"));
    }
    (frames, first_final)
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

fn parse_json(body: &[u8]) -> Result<Value, GoogleError> {
    serde_json::from_slice(body).map_err(|e| invalid(format!("Invalid JSON payload received. {e}")))
}

/// Dispatches a model method.
pub(crate) async fn handle(
    ctx: Ctx,
    method: GeminiMethod,
    model: &str,
    sse: bool,
    body: Bytes,
) -> Result<Response<SimBody>, Failure> {
    let value = parse_json(&body)?;
    match method {
        GeminiMethod::GenerateContent => generate(ctx, model, None, &value).await,
        GeminiMethod::StreamGenerateContent => {
            let framing = if sse {
                Framing::Sse
            } else {
                Framing::JsonArray
            };
            generate(ctx, model, Some(framing), &value).await
        }
        GeminiMethod::EmbedContent => embed_content(ctx, model, &value).await,
        GeminiMethod::BatchEmbedContents => batch_embed_contents(ctx, model, &value).await,
        GeminiMethod::CountTokens => count_tokens(model, &value),
    }
}

async fn generate(
    ctx: Ctx,
    model: &str,
    stream: Option<Framing>,
    value: &Value,
) -> Result<Response<SimBody>, Failure> {
    let req = parse_generate(value, model)?;
    let prompt_total = prompt_tokens(req.ask.enc, value);
    if let Some(r) = ctx.generation_fault(prompt_total).await? {
        return Ok(match r {
            Refusal::Fail(f) => GoogleError::injected(f.status, f.retry_after_secs).into_response(),
            Refusal::ContextWindow { prompt, window } => {
                GoogleError::context_window(prompt, window).into_response()
            }
            Refusal::ContentFilter => blocked(model, prompt_total, stream),
        });
    }
    let prompt = ctx.prompt_usage(prompt_total, || {
        let enc = req.ask.enc;
        let obj = value.as_object();
        let system = obj.and_then(|o| get(o, "systemInstruction", "system_instruction"));
        PromptPrefixes::new(
            model,
            &[value.get("tools"), system],
            messages_of(value, "contents"),
            |c| turn_tokens(enc, c),
            REPLY_PRIMING,
            prompt_total,
        )
    });
    let plans = plan_answers(&req.ask, &ctx.cfg);
    let completion: u64 = plans.iter().map(|p| p.tokens).sum();
    let id = format!("sim{:016x}", next_id());
    match stream {
        None => {
            let body = render_response(&id, model, &plans, prompt, completion);
            Ok(ctx.answer_json(body, prompt, completion).await)
        }
        Some(framing) => {
            let (frames, first_final) =
                render_stream(&id, model, &plans, prompt, ctx.cfg.chunks, framing);
            let content_type = match framing {
                Framing::Sse => SSE,
                Framing::JsonArray => "application/json",
            };
            let sse = framing == Framing::Sse;
            Ok(ctx
                .answer_stream(
                    frames,
                    first_final,
                    // Every element carries content.
                    0,
                    |first| GoogleError::stream_error_frame(sse, first),
                    content_type,
                    prompt,
                    completion,
                )
                .await)
        }
    }
}

/// Gemini's answer to a prompt its safety filters block: HTTP 200, no candidates,
/// `promptFeedback.blockReason`, usage for the prompt only — as one JSON body, one SSE event,
/// or a one-element streamed array.
fn blocked(model: &str, prompt_tokens: u64, stream: Option<Framing>) -> Response<SimBody> {
    let v = serde_json::json!({
        "promptFeedback": {
            "blockReason": "SAFETY",
            "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}
            ]
        },
        "usageMetadata": {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens},
        "modelVersion": model,
        "responseId": format!("sim{:016x}", next_id()),
    });
    let json = serde_json::to_vec(&v).unwrap_or_default();
    let (body, content_type) = match stream {
        None => (json, "application/json"),
        Some(Framing::JsonArray) => ([b"[".as_slice(), &json, b"]"].concat(), "application/json"),
        Some(Framing::Sse) => ([b"data: ".as_slice(), &json, b"\r\n\r\n"].concat(), SSE),
    };
    let mut resp = json_response(StatusCode::OK, body);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

/// The text of an embedding request's `content` (its text parts joined), validated.
fn embed_text<'a>(
    content: Option<&'a Value>,
    path: &str,
) -> Result<(String, &'a [Value]), GoogleError> {
    let Some(content) = content.filter(|c| !c.is_null()) else {
        return Err(invalid(format!(
            "* {path}.content: content is not specified\n"
        )));
    };
    let parts = validate_content(content, "content", false)?;
    let text = parts
        .iter()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    Ok((text, parts))
}

fn embed_dims(obj: &Map<String, Value>, at: &str) -> Result<usize, GoogleError> {
    match int(obj, "outputDimensionality", "output_dimensionality", at)? {
        None => Ok(DEFAULT_EMBEDDING_DIMS as usize),
        Some(d) if d < 1 || d as u64 > MAX_EMBEDDING_DIMS => Err(invalid(format!(
            "* {at}.output_dimensionality: must be between 1 and {MAX_EMBEDDING_DIMS}, got {d}.\n"
        ))),
        Some(d) => Ok(d as usize),
    }
}

/// Serialised directly (not through `serde_json::Value`, which would widen the floats to
/// f64 and print 17 digits each).
#[derive(Serialize)]
struct EmbeddingOut {
    values: Vec<f32>,
}

#[derive(Serialize)]
struct EmbedContentOut {
    embedding: EmbeddingOut,
}

#[derive(Serialize)]
struct BatchEmbedOut {
    embeddings: Vec<EmbeddingOut>,
}

async fn embed_content(ctx: Ctx, model: &str, value: &Value) -> Result<Response<SimBody>, Failure> {
    let Some(obj) = value.as_object() else {
        return Err(invalid("Invalid JSON payload received. Expected an object.").into());
    };
    let (text, parts) = embed_text(obj.get("content"), "EmbedContentRequest")?;
    let dims = embed_dims(obj, "EmbedContentRequest")?;
    if let Some(f) = ctx.pre_answer_fault().await? {
        return Ok(GoogleError::injected(f.status, f.retry_after_secs).into_response());
    }
    let tokens = count_parts(encoding_for(model), parts);
    let out = EmbedContentOut {
        embedding: EmbeddingOut {
            values: unit_vector(hash_str(&text), dims),
        },
    };
    let body = serde_json::to_vec(&out).unwrap_or_default();
    Ok(ctx.answer_json(body, PromptUsage::new(tokens, 0), 0).await)
}

async fn batch_embed_contents(
    ctx: Ctx,
    model: &str,
    value: &Value,
) -> Result<Response<SimBody>, Failure> {
    let requests = match value.get("requests") {
        Some(Value::Array(r)) if !r.is_empty() => r,
        _ => {
            return Err(invalid(
                "* BatchEmbedContentsRequest.requests: requests is not specified\n",
            )
            .into());
        }
    };
    if requests.len() > MAX_BATCH_EMBEDDINGS {
        return Err(invalid(format!(
            "* BatchEmbedContentsRequest.requests: at most {MAX_BATCH_EMBEDDINGS} requests can \
             be in one batch.\n"
        ))
        .into());
    }
    let expected = format!("models/{model}");
    let enc = encoding_for(model);
    let mut items = Vec::with_capacity(requests.len());
    let mut tokens = 0;
    for (i, r) in requests.iter().enumerate() {
        let path = format!("BatchEmbedContentsRequest.requests[{i}]");
        let Some(obj) = r.as_object() else {
            return Err(invalid(format!("* {path}: must be an object\n")).into());
        };
        if let Some(m) = obj.get("model").and_then(Value::as_str)
            && m != expected
        {
            return Err(invalid(format!(
                "* {path}.model: model in the request ({m}) must match the model in the URL \
                 ({expected}).\n"
            ))
            .into());
        }
        let (text, parts) = embed_text(obj.get("content"), &path)?;
        tokens += count_parts(enc, parts);
        items.push((text, embed_dims(obj, &path)?));
    }
    if let Some(f) = ctx.pre_answer_fault().await? {
        return Ok(GoogleError::injected(f.status, f.retry_after_secs).into_response());
    }
    let embeddings: Vec<EmbeddingOut> = items
        .iter()
        .map(|(text, dims)| EmbeddingOut {
            values: unit_vector(hash_str(text), *dims),
        })
        .collect();
    let body = serde_json::to_vec(&BatchEmbedOut { embeddings }).unwrap_or_default();
    Ok(ctx.answer_json(body, PromptUsage::new(tokens, 0), 0).await)
}

/// `:countTokens`: `{"contents": …}` or `{"generateContentRequest": {…}}` → `totalTokens`,
/// the `promptTokenCount` generateContent would report. Not subject to faults or latency.
fn count_tokens(model: &str, value: &Value) -> Result<Response<SimBody>, Failure> {
    let enc = encoding_for(model);
    let target = value
        .get("generateContentRequest")
        .or_else(|| value.get("generate_content_request"))
        .unwrap_or(value);
    let contents = target.get("contents").and_then(Value::as_array);
    if let Some(contents) = contents {
        for (i, c) in contents.iter().enumerate() {
            validate_content(c, &format!("contents[{i}]"), true)?;
        }
    }
    let n = prompt_tokens(enc, target);
    let body = serde_json::to_vec(&json!({ "totalTokens": n })).unwrap_or_default();
    Ok(json_response(StatusCode::OK, body))
}

/// `GET /v1beta/models`.
pub(crate) fn models() -> Response<SimBody> {
    let models: Vec<Value> = MODELS
        .iter()
        .map(|(name, input, output, methods)| {
            json!({
                "name": format!("models/{name}"),
                "version": "001",
                "displayName": name,
                "inputTokenLimit": input,
                "outputTokenLimit": output,
                "supportedGenerationMethods": methods,
            })
        })
        .collect();
    let body = serde_json::to_vec(&json!({ "models": models })).unwrap_or_default();
    json_response(StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        json!({"contents":[{"role":"user","parts":[{"text":"hi"}]}]})
    }

    fn err(body: Value) -> String {
        match parse_generate(&body, "gemini-2.5-flash") {
            Ok(_) => panic!("accepted: {body}"),
            Err(e) => {
                assert_eq!(e.status, StatusCode::BAD_REQUEST);
                assert_eq!(e.status_name, "INVALID_ARGUMENT");
                e.message
            }
        }
    }

    #[test]
    fn validation() {
        assert!(parse_generate(&base(), "m").is_ok());
        assert!(parse_generate(&json!({"contents":[{"parts":[{"text":"hi"}]}]}), "m").is_ok());
        assert!(err(json!({})).contains("contents is not specified"));
        assert!(err(json!({"contents":[]})).contains("contents is not specified"));
        assert_eq!(
            err(json!({"contents":[{"role":"assistant","parts":[{"text":"x"}]}]})),
            "Please use a valid role: user, model."
        );
        assert!(
            err(json!({"contents":[{"role":"user","parts":[]}]})).contains("must not be empty")
        );
        assert!(err(json!({"contents":[{"role":"user","parts":[{}]}]})).contains("oneof"));
        assert!(
            err(json!({"contents":[{"role":"user","parts":[{"text":"a","inlineData":{}}]}]}))
                .contains("already set")
        );
        let mut b = base();
        b["generation_config"] = json!({"maxOutputTokens": 5});
        assert_eq!(parse_generate(&b, "m").unwrap().ask.max_tokens, Some(5));
        b["generationConfig"] = json!({"max_tokens": 5});
        b.as_object_mut().unwrap().remove("generation_config");
        assert!(err(b).contains("Unknown name \"max_tokens\""));
        let mut b = base();
        b["temperature"] = json!(1);
        assert!(err(b).contains("Unknown name \"temperature\""));
        let mut b = base();
        b["generationConfig"] = json!({"temperature": 2.5});
        assert!(err(b).contains("temperature"));
        let mut b = base();
        b["generationConfig"] = json!({"candidateCount": 9});
        assert!(err(b).contains("candidate_count"));
        let mut b = base();
        b["generationConfig"] = json!({"responseMimeType": "text/csv"});
        assert!(err(b).contains("response_mime_type"));
        let mut b = base();
        b["generationConfig"] = json!({"responseSchema": {"type": "OBJECT"}});
        assert!(err(b).contains("response_schema"));
        let mut b = base();
        b["tools"] = json!([{"functionDeclarations":[{"description":"x"}]}]);
        assert!(err(b).contains("Name cannot be empty"));
        let mut b = base();
        b["toolConfig"] = json!({"functionCallingConfig":{"mode":"SOMETIMES"}});
        assert!(err(b).contains("mode"));
    }

    #[test]
    fn function_response_turn_answers_in_text() {
        let body = json!({
            "contents":[
                {"role":"user","parts":[{"text":"Weather?"}]},
                {"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{}}}]},
                {"role":"user","parts":[{"functionResponse":{"name":"get_weather","response":{"output":"18C"}}}]}],
            "tools":[{"functionDeclarations":[{"name":"get_weather"}]}]});
        let req = parse_generate(&body, "m").unwrap();
        assert!(req.ask.user_turn.is_none());
        assert_eq!(req.ask.tools.len(), 1);
        let mut bad = body.clone();
        bad["contents"][2]["parts"][0]["functionResponse"]["response"] = json!("18C");
        assert!(err(bad).contains("JSON object"));
    }

    #[test]
    fn auth() {
        let cfg = SimConfig {
            api_key: Some("k".into()),
            ..SimConfig::default()
        };
        let uri: Uri = "/v1beta/models/m:generateContent".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(
            check_auth(&cfg, &h, &uri).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        let with_key: Uri = "/v1beta/models/m:generateContent?alt=sse&key=k"
            .parse()
            .unwrap();
        assert!(check_auth(&cfg, &h, &with_key).is_ok());
        h.insert("x-goog-api-key", "nope".parse().unwrap());
        let e = check_auth(&cfg, &h, &uri).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.reason, Some("API_KEY_INVALID"));
        h.insert("x-goog-api-key", "k".parse().unwrap());
        assert!(check_auth(&cfg, &h, &uri).is_ok());
    }

    #[test]
    fn parts_serialize_as_one_key_objects() {
        let v = serde_json::to_value(Part::Text(Cow::Borrowed("x"))).unwrap();
        assert_eq!(v, json!({"text": "x"}));
        let v = serde_json::to_value(Part::FunctionCall(FunctionCallOut {
            name: "f",
            args: json!({"a": 1}),
        }))
        .unwrap();
        assert_eq!(v, json!({"functionCall": {"name": "f", "args": {"a": 1}}}));
    }
}
