//! Gemini `GenerateContentResponse` (`v1beta`) → canonical `chat.completion` body and [`Usage`].
//!
//! | Gemini | OpenAI |
//! |---|---|
//! | `responseId` | `id: "chatcmpl-{responseId}"` (random hex when absent) |
//! | `modelVersion` | `model` (the requested model when absent) |
//! | `candidates[i]` | `choices[i]` (`index` from the candidate, else its position) |
//! | non-thought `text` parts | `message.content`, joined; `null` when there is no text |
//! | `functionCall` parts | `message.tool_calls[]` with synthesized ids (see [`CallIds`]) and `arguments` = `args` serialised |
//! | `thoughtSignature` on a `functionCall` part | `tool_calls[].extra_content.google.thought_signature` |
//! | `finishReason` | `finish_reason` (see [`finish_reason`]) |
//! | no candidates + `promptFeedback.blockReason` (HTTP 200) | one choice, `content: null`, `finish_reason: "content_filter"` |
//! | `usageMetadata` | `usage` and the returned [`Usage`] (see [`usage`]) |
//!
//! Design choices:
//! - Tool-call ids: Gemini's `functionCall.id` is optional and usually absent, so ids are always
//!   synthesized as `call_<16 hex>`: a hash of the `responseId`, the candidate index and the
//!   call's position, so the same call gets the same id wherever it appears in one response
//!   (and in every chunk of a stream). Without a `responseId`, a random seed is used.
//! - Thought signatures on function calls are handed to the client in the `extra_content`
//!   convention of Google's own OpenAI-compatible endpoint; [`super::request`] replays them.
//!   Signatures on text parts are dropped: Gemini only requires the function-call ones back.
//! - Thought parts (`thought: true`, only present when thoughts are requested, which this
//!   adapter never does) are not relayed; their cost is in `thoughtsTokenCount`.
//! - Other part kinds (inline images, executable code) are only produced for features this
//!   adapter never enables, and are ignored.
//! - A blocked prompt is an answer, not an error: Gemini answers HTTP 200, and OpenAI clients
//!   expect `content_filter` for filtered content. The block reason is logged (debug).

use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};
use tollgate_types::Usage;

use super::{random_hex, unix_now};

/// The parts of a `GenerateContentResponse` the adapter reads (unknown fields ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GenerateContentResponse {
    pub candidates: Option<Vec<Candidate>>,
    pub prompt_feedback: Option<PromptFeedback>,
    pub usage_metadata: Option<UsageMetadata>,
    pub model_version: Option<String>,
    pub response_id: Option<String>,
    /// An error object where a response was expected (in-stream failures).
    pub error: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Candidate {
    pub content: Option<Content>,
    pub finish_reason: Option<String>,
    pub index: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Content {
    pub parts: Option<Vec<Part>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Part {
    pub text: Option<String>,
    pub thought: Option<bool>,
    pub thought_signature: Option<String>,
    pub function_call: Option<FunctionCall>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FunctionCall {
    pub name: Option<String>,
    pub args: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PromptFeedback {
    pub block_reason: Option<String>,
}

/// Token counts. Each is read leniently (anything but a non-negative integer counts as 0) so one
/// odd field cannot make a whole answer unreadable.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UsageMetadata {
    #[serde(deserialize_with = "lenient_u64")]
    pub prompt_token_count: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub cached_content_token_count: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub candidates_token_count: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub thoughts_token_count: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub tool_use_prompt_token_count: u64,
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(Value::deserialize(d)?.as_u64().unwrap_or(0))
}

/// Gemini usage → canonical (inclusive) usage:
/// `input = promptTokenCount + toolUsePromptTokenCount` (the prompt count already includes cached
/// tokens), `cached = cachedContentTokenCount`, `output = candidatesTokenCount +
/// thoughtsTokenCount` (the candidates count excludes thoughts), `reasoning = thoughtsTokenCount`.
/// Gemini has no cache-write count (explicit caches are billed separately).
pub fn usage(m: &UsageMetadata) -> Usage {
    Usage {
        input_tokens: m
            .prompt_token_count
            .saturating_add(m.tool_use_prompt_token_count),
        cached_input_tokens: m.cached_content_token_count,
        cache_write_input_tokens: 0,
        output_tokens: m
            .candidates_token_count
            .saturating_add(m.thoughts_token_count),
        reasoning_tokens: m.thoughts_token_count,
    }
}

/// The OpenAI `usage` object for a canonical usage.
pub fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens(),
        "prompt_tokens_details": { "cached_tokens": u.cached_input_tokens },
        "completion_tokens_details": { "reasoning_tokens": u.reasoning_tokens },
    })
}

/// Gemini `finishReason` → OpenAI `finish_reason`.
///
/// `STOP` is also Gemini's reason when the model called functions (there is no tool-specific
/// reason), so `STOP` — and any reason not listed here — becomes `tool_calls` when the
/// candidate carried function calls, else `stop`. `MAX_TOKENS` → `length`. The safety family
/// (`SAFETY`, `RECITATION`, `BLOCKLIST`, `PROHIBITED_CONTENT`, `SPII`, and the image variants
/// `IMAGE_SAFETY`, `IMAGE_PROHIBITED_CONTENT`, `IMAGE_RECITATION`) → `content_filter`.
/// Everything else (`OTHER`, `LANGUAGE`, `MALFORMED_FUNCTION_CALL`, …, or none) → `stop`.
pub fn finish_reason(raw: Option<&str>, has_tool_calls: bool) -> &'static str {
    match raw.unwrap_or("") {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => "content_filter",
        _ if has_tool_calls => "tool_calls",
        _ => "stop",
    }
}

/// Synthesizes tool-call ids that are stable within one response.
#[derive(Debug, Clone)]
pub struct CallIds {
    seed: String,
}

impl CallIds {
    pub fn new(response_id: Option<&str>) -> Self {
        CallIds {
            seed: match response_id.filter(|s| !s.is_empty()) {
                Some(id) => id.to_string(),
                None => random_hex(),
            },
        }
    }

    /// The id of the `k`-th call of candidate `candidate`.
    pub fn id(&self, candidate: u32, k: u32) -> String {
        // FNV-1a: tiny, deterministic across processes (unlike std's SipHash keys), and the ids
        // are not secrets.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let feed = |h: &mut u64, bytes: &[u8]| {
            for b in bytes {
                *h ^= u64::from(*b);
                *h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        feed(&mut h, self.seed.as_bytes());
        feed(&mut h, &candidate.to_le_bytes());
        feed(&mut h, &k.to_le_bytes());
        format!("call_{h:016x}")
    }
}

/// What one candidate (or one streamed piece of it) produced.
#[derive(Debug)]
pub struct Output {
    /// Joined non-thought, non-empty text; `None` when there was none.
    pub text: Option<String>,
    /// OpenAI tool-call objects.
    pub tool_calls: Vec<Value>,
}

/// Reads a candidate's parts. `next_call` numbers the candidate's calls across a stream;
/// `with_index` adds the `index` field tool-call deltas need.
pub fn candidate_output(
    parts: &[Part],
    ids: &CallIds,
    candidate: u32,
    next_call: &mut u32,
    with_index: bool,
) -> Output {
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for p in parts {
        if p.thought == Some(true) {
            continue;
        }
        // Gemini 3 ends turns with an empty text part that only carries a thoughtSignature;
        // it is not content (and must not become an empty delta in a stream).
        if let Some(t) = p.text.as_deref().filter(|t| !t.is_empty()) {
            text.get_or_insert_with(String::new).push_str(t);
        }
        if let Some(fc) = &p.function_call {
            let k = *next_call;
            *next_call = next_call.saturating_add(1);
            let arguments = match &fc.args {
                Some(args @ Value::Object(_)) => args.to_string(),
                _ => "{}".to_string(),
            };
            let mut call = Map::new();
            if with_index {
                call.insert("index".into(), k.into());
            }
            call.insert("id".into(), ids.id(candidate, k).into());
            call.insert("type".into(), "function".into());
            call.insert(
                "function".into(),
                json!({ "name": fc.name.as_deref().unwrap_or(""), "arguments": arguments }),
            );
            if let Some(sig) = &p.thought_signature {
                call.insert(
                    "extra_content".into(),
                    json!({ "google": { "thought_signature": sig } }),
                );
            }
            tool_calls.push(Value::Object(call));
        }
    }
    Output { text, tool_calls }
}

/// The message of an in-band error object (`{"code","message","status"}`).
pub fn error_message(err: &Value) -> String {
    let msg = err
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| err.as_str())
        .unwrap_or("error event");
    match err.get("status").and_then(Value::as_str) {
        Some(status) => format!("{msg} (status: {status})"),
        None => msg.to_string(),
    }
}

/// A translated non-streaming answer.
#[derive(Debug)]
pub struct Canonical {
    pub body: Bytes,
    pub usage: Option<Usage>,
    pub response_id: Option<String>,
}

/// Translates a `generateContent` response body; `Err` says why it is unreadable.
pub fn to_canonical(raw: &[u8], requested_model: &str) -> Result<Canonical, String> {
    let resp: GenerateContentResponse =
        serde_json::from_slice(raw).map_err(|e| format!("response is not Gemini JSON: {e}"))?;
    if let Some(err) = resp.error.as_ref().filter(|e| !e.is_null()) {
        return Err(format!(
            "error object in a 200 response: {}",
            error_message(err)
        ));
    }
    let ids = CallIds::new(resp.response_id.as_deref());
    let candidates = resp.candidates.as_deref().unwrap_or(&[]);
    let mut choices = Vec::with_capacity(candidates.len().max(1));
    for (pos, c) in candidates.iter().enumerate() {
        let index = c.index.unwrap_or(pos as u32);
        let parts = c
            .content
            .as_ref()
            .and_then(|c| c.parts.as_deref())
            .unwrap_or(&[]);
        let mut n = 0;
        let out = candidate_output(parts, &ids, index, &mut n, false);
        let mut message = Map::new();
        message.insert("role".into(), "assistant".into());
        message.insert(
            "content".into(),
            out.text.map_or(Value::Null, Value::String),
        );
        message.insert("refusal".into(), Value::Null);
        let has_calls = !out.tool_calls.is_empty();
        if has_calls {
            message.insert("tool_calls".into(), Value::Array(out.tool_calls));
        }
        choices.push(json!({
            "index": index,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(c.finish_reason.as_deref(), has_calls),
        }));
    }
    if choices.is_empty() {
        let Some(reason) = resp
            .prompt_feedback
            .as_ref()
            .and_then(|f| f.block_reason.as_deref())
        else {
            return Err("response has no candidates and no promptFeedback.blockReason".into());
        };
        tracing::debug!(block_reason = reason, "gemini blocked the prompt");
        choices.push(json!({
            "index": 0,
            "message": { "role": "assistant", "content": null, "refusal": null },
            "logprobs": null,
            "finish_reason": "content_filter",
        }));
    }
    let usage = resp.usage_metadata.as_ref().map(usage);
    let mut body = Map::new();
    body.insert(
        "id".into(),
        format!(
            "chatcmpl-{}",
            resp.response_id.clone().unwrap_or_else(random_hex)
        )
        .into(),
    );
    body.insert("object".into(), "chat.completion".into());
    body.insert("created".into(), unix_now().into());
    body.insert(
        "model".into(),
        resp.model_version
            .clone()
            .unwrap_or_else(|| requested_model.to_string())
            .into(),
    );
    body.insert("choices".into(), Value::Array(choices));
    if let Some(u) = &usage {
        body.insert("usage".into(), usage_json(u));
    }
    let body = serde_json::to_vec(&Value::Object(body))
        .map_err(|e| format!("encode canonical response: {e}"))?;
    Ok(Canonical {
        body: Bytes::from(body),
        usage,
        response_id: resp.response_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_reasons() {
        assert_eq!(finish_reason(Some("STOP"), false), "stop");
        assert_eq!(finish_reason(Some("STOP"), true), "tool_calls");
        assert_eq!(finish_reason(Some("MAX_TOKENS"), true), "length");
        for r in [
            "SAFETY",
            "RECITATION",
            "BLOCKLIST",
            "PROHIBITED_CONTENT",
            "SPII",
        ] {
            assert_eq!(finish_reason(Some(r), false), "content_filter");
        }
        assert_eq!(finish_reason(Some("OTHER"), false), "stop");
        assert_eq!(
            finish_reason(Some("MALFORMED_FUNCTION_CALL"), false),
            "stop"
        );
        assert_eq!(finish_reason(None, false), "stop");
    }

    #[test]
    fn usage_is_inclusive() {
        let m: UsageMetadata = serde_json::from_str(
            r#"{"promptTokenCount":100,"cachedContentTokenCount":60,"candidatesTokenCount":10,
                "thoughtsTokenCount":30,"toolUsePromptTokenCount":5,"totalTokenCount":145}"#,
        )
        .unwrap();
        let u = usage(&m);
        assert_eq!(
            (
                u.input_tokens,
                u.cached_input_tokens,
                u.output_tokens,
                u.reasoning_tokens
            ),
            (105, 60, 40, 30)
        );
        assert_eq!(u.total_tokens(), 145);
    }

    #[test]
    fn odd_counts_do_not_fail_the_answer() {
        let m: UsageMetadata =
            serde_json::from_str(r#"{"promptTokenCount":-1,"candidatesTokenCount":"7"}"#).unwrap();
        assert_eq!(usage(&m), Usage::default());
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = CallIds::new(Some("r1"));
        assert_eq!(a.id(0, 0), CallIds::new(Some("r1")).id(0, 0));
        assert_ne!(a.id(0, 0), a.id(0, 1));
        assert_ne!(a.id(0, 0), a.id(1, 0));
        assert_ne!(a.id(0, 0), CallIds::new(Some("r2")).id(0, 0));
        assert!(a.id(0, 0).starts_with("call_"));
        assert_eq!(a.id(0, 0).len(), 21);
    }

    /// Every prefix of real answers (a body cut anywhere) is handled without a panic.
    #[test]
    fn truncated_fixtures_never_panic() {
        for raw in [
            include_str!("../../tests/fixtures/gemini/chat_tools.response.json"),
            include_str!("../../tests/fixtures/gemini/blocked.response.json"),
            include_str!("../../tests/fixtures/gemini/chat_stream.response.sse"),
        ] {
            for cut in 0..=raw.len() {
                let part = &raw.as_bytes()[..cut];
                let _ = to_canonical(part, "m");
                let mut t = super::super::stream::Translator::new("m", 0);
                let mut out = Vec::new();
                let _ = t.event(part, &mut out);
                let _ = t.finish(&mut out);
            }
        }
    }

    #[test]
    fn unreadable_bodies_are_errors_not_panics() {
        for raw in [
            &b""[..],
            b"[]",
            b"{}",
            b"{\"candidates\":7}",
            b"{\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"args\":[1]}}]}}]}",
            b"{\"error\":{\"message\":\"boom\"}}",
        ] {
            let _ = to_canonical(raw, "m");
        }
        assert!(to_canonical(b"{}", "m").is_err());
        assert!(
            to_canonical(br#"{"error":{"message":"boom","status":"INTERNAL"}}"#, "m")
                .unwrap_err()
                .contains("boom (status: INTERNAL)")
        );
    }
}
