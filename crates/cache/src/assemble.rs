//! Between the two shapes of one answer: a streamed answer's canonical chunks are assembled
//! into the `chat.completion` body a non-streaming call would have returned (so most
//! production traffic, which streams, can fill the cache), and a stored body is rendered back
//! into OpenAI SSE chunks for a streaming client.
//!
//! Only answers this module can reproduce faithfully are cacheable: a delta or message field it
//! does not know (audio, legacy `function_call`, …) makes the answer uncacheable rather than
//! silently lost on replay.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Map, Value, json};

/// Finish reasons of a complete answer. `length` is included: the output cap is part of the
/// key (`max_tokens` in the body, a policy cap), so the same request stops at the same place;
/// answers cut by a budget's fit-to-room clamp are never offered for storage by the server.
pub const CACHEABLE_FINISH: &[&str] = &["stop", "tool_calls", "length"];

/// Message fields a replay reproduces. Others may appear only as `null` or empty.
const KNOWN_MESSAGE_FIELDS: &[&str] = &["role", "content", "refusal", "tool_calls"];

/// Whether a value is absent-equivalent (`null`, `[]`, `{}`, `""`).
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

#[derive(Default)]
struct ToolAcc {
    id: Option<String>,
    kind: Option<String>,
    name: String,
    arguments: String,
}

#[derive(Default)]
struct ChoiceAcc {
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    tools: BTreeMap<u64, ToolAcc>,
    logprobs_content: Option<Vec<Value>>,
    logprobs_refusal: Option<Vec<Value>>,
    finish_reason: Option<String>,
}

/// Assembles a `chat.completion` from relayed canonical chunks. Bounded: past `limit` bytes
/// of accumulated text it gives up (the answer would not fit in the cache anyway).
pub struct StreamAssembler {
    id: Option<String>,
    created: Option<Value>,
    model: Option<String>,
    system_fingerprint: Option<Value>,
    service_tier: Option<Value>,
    choices: BTreeMap<u64, ChoiceAcc>,
    usage: Option<Value>,
    bytes: usize,
    limit: usize,
    poisoned: bool,
}

impl StreamAssembler {
    pub fn new(limit: usize) -> Self {
        StreamAssembler {
            id: None,
            created: None,
            model: None,
            system_fingerprint: None,
            service_tier: None,
            choices: BTreeMap::new(),
            usage: None,
            bytes: 0,
            limit,
            poisoned: false,
        }
    }

    /// Whether the answer is still assemblable.
    pub fn is_ok(&self) -> bool {
        !self.poisoned
    }

    /// Gives up: the stream will not be stored.
    pub fn poison(&mut self) {
        self.poisoned = true;
        self.choices.clear();
    }

    /// Takes one canonical chunk (the JSON payload of one `data:` event).
    pub fn push(&mut self, raw: &[u8]) {
        if self.poisoned {
            return;
        }
        self.bytes += raw.len();
        if self.bytes > self.limit || self.take(raw).is_none() {
            self.poison();
        }
    }

    fn take(&mut self, raw: &[u8]) -> Option<()> {
        let Value::Object(chunk) = serde_json::from_slice::<Value>(raw).ok()? else {
            return None;
        };
        if chunk.get("error").is_some_and(|e| !e.is_null()) {
            return None;
        }
        if let Some(id) = chunk.get("id").and_then(Value::as_str) {
            self.id.get_or_insert_with(|| id.to_string());
        }
        if let Some(c) = chunk.get("created").filter(|c| c.is_number()) {
            self.created.get_or_insert_with(|| c.clone());
        }
        if let Some(m) = chunk.get("model").and_then(Value::as_str) {
            self.model.get_or_insert_with(|| m.to_string());
        }
        if let Some(f) = chunk.get("system_fingerprint").filter(|v| !v.is_null()) {
            self.system_fingerprint = Some(f.clone());
        }
        if let Some(t) = chunk.get("service_tier").filter(|v| !v.is_null()) {
            self.service_tier = Some(t.clone());
        }
        if let Some(u) = chunk.get("usage").filter(|v| !v.is_null()) {
            self.usage = Some(u.clone());
        }
        let choices = match chunk.get("choices") {
            None | Some(Value::Null) => return Some(()),
            Some(Value::Array(c)) => c,
            Some(_) => return None,
        };
        for c in choices {
            let index = c.get("index").and_then(Value::as_u64)?;
            let acc = self.choices.entry(index).or_default();
            if let Some(delta) = c.get("delta") {
                let delta = delta.as_object()?;
                for (k, v) in delta {
                    match (k.as_str(), v) {
                        (_, Value::Null) => {}
                        ("role", Value::String(r)) => acc.role = Some(r.clone()),
                        ("content", Value::String(s)) => {
                            acc.content.get_or_insert_with(String::new).push_str(s)
                        }
                        ("refusal", Value::String(s)) => {
                            acc.refusal.get_or_insert_with(String::new).push_str(s)
                        }
                        ("tool_calls", Value::Array(calls)) => {
                            for call in calls {
                                let i = call.get("index").and_then(Value::as_u64)?;
                                let t = acc.tools.entry(i).or_default();
                                if let Some(id) = call.get("id").and_then(Value::as_str) {
                                    t.id = Some(id.to_string());
                                }
                                if let Some(k) = call.get("type").and_then(Value::as_str) {
                                    t.kind = Some(k.to_string());
                                }
                                if let Some(f) = call.get("function") {
                                    if let Some(n) = f.get("name").and_then(Value::as_str) {
                                        t.name.push_str(n);
                                    }
                                    if let Some(a) = f.get("arguments").and_then(Value::as_str) {
                                        t.arguments.push_str(a);
                                    }
                                }
                            }
                        }
                        (_, v) if is_empty(v) => {}
                        _ => return None,
                    }
                }
            }
            if let Some(lp) = c.get("logprobs").filter(|v| !v.is_null()) {
                for (field, slot) in [
                    ("content", &mut acc.logprobs_content),
                    ("refusal", &mut acc.logprobs_refusal),
                ] {
                    if let Some(Value::Array(items)) = lp.get(field) {
                        slot.get_or_insert_with(Vec::new)
                            .extend(items.iter().cloned());
                    }
                }
            }
            if let Some(fr) = c.get("finish_reason").and_then(Value::as_str) {
                acc.finish_reason = Some(fr.to_string());
            }
        }
        Some(())
    }

    /// The assembled `chat.completion` body, if the stream was complete and cacheable.
    pub fn finish(self) -> Option<Bytes> {
        if self.poisoned || self.choices.is_empty() {
            return None;
        }
        let mut choices = Vec::with_capacity(self.choices.len());
        for (index, c) in self.choices {
            let finish = c.finish_reason?;
            if !CACHEABLE_FINISH.contains(&finish.as_str()) {
                return None;
            }
            let mut msg = Map::new();
            msg.insert(
                "role".into(),
                c.role.unwrap_or_else(|| "assistant".into()).into(),
            );
            msg.insert("content".into(), c.content.map_or(Value::Null, Value::from));
            msg.insert("refusal".into(), c.refusal.map_or(Value::Null, Value::from));
            if !c.tools.is_empty() {
                let calls: Vec<Value> = c
                    .tools
                    .into_values()
                    .map(|t| {
                        json!({
                            "id": t.id,
                            "type": t.kind.unwrap_or_else(|| "function".into()),
                            "function": {"name": t.name, "arguments": t.arguments},
                        })
                    })
                    .collect();
                msg.insert("tool_calls".into(), Value::Array(calls));
            }
            let logprobs = if c.logprobs_content.is_some() || c.logprobs_refusal.is_some() {
                json!({"content": c.logprobs_content, "refusal": c.logprobs_refusal})
            } else {
                Value::Null
            };
            choices.push(json!({
                "index": index,
                "message": msg,
                "logprobs": logprobs,
                "finish_reason": finish,
            }));
        }
        let mut body = Map::new();
        body.insert("id".into(), self.id.unwrap_or_default().into());
        body.insert("object".into(), "chat.completion".into());
        body.insert("created".into(), self.created.unwrap_or(json!(0)));
        body.insert("model".into(), self.model.unwrap_or_default().into());
        body.insert("choices".into(), Value::Array(choices));
        if let Some(u) = self.usage {
            body.insert("usage".into(), u);
        }
        if let Some(f) = self.system_fingerprint {
            body.insert("system_fingerprint".into(), f);
        }
        if let Some(t) = self.service_tier {
            body.insert("service_tier".into(), t);
        }
        serde_json::to_vec(&Value::Object(body))
            .ok()
            .map(Bytes::from)
    }
}

/// A stored answer rendered as OpenAI SSE: the chunks every streaming client gets, and the
/// usage chunk only clients that set `stream_options.include_usage` get. `[DONE]` is not
/// included.
#[derive(Debug, Clone)]
pub struct SseReplay {
    pub chunks: Bytes,
    pub usage: Option<Bytes>,
}

fn frame(out: &mut BytesMut, v: &Value) {
    out.put_slice(b"data: ");
    // Writing JSON into a BytesMut cannot fail.
    let _ = serde_json::to_writer((&mut *out).writer(), v);
    out.put_slice(b"\n\n");
}

/// Whether a complete answer can be stored: every choice finished for a cacheable reason.
/// Returns its replay as SSE when the message holds only fields a replay reproduces (`None`
/// inside: store it, but only non-streaming clients can be served from it).
pub fn check_complete(body: &[u8]) -> Option<Option<SseReplay>> {
    let Value::Object(b) = serde_json::from_slice::<Value>(body).ok()? else {
        return None;
    };
    let choices = b.get("choices")?.as_array().filter(|c| !c.is_empty())?;
    for c in choices {
        let fr = c.get("finish_reason").and_then(Value::as_str)?;
        if !CACHEABLE_FINISH.contains(&fr) {
            return None;
        }
        c.get("message")?.as_object()?;
    }
    Some(replay(&b))
}

fn replay(b: &Map<String, Value>) -> Option<SseReplay> {
    let mut head = Map::new();
    for k in [
        "id",
        "created",
        "model",
        "system_fingerprint",
        "service_tier",
    ] {
        if let Some(v) = b.get(k).filter(|v| !v.is_null()) {
            head.insert(k.into(), v.clone());
        }
    }
    head.insert("object".into(), "chat.completion.chunk".into());
    let chunk = |choice: Value| {
        let mut c = head.clone();
        c.insert("choices".into(), Value::Array(vec![choice]));
        Value::Object(c)
    };
    let mut out = BytesMut::new();
    for c in b.get("choices")?.as_array()? {
        let index = c.get("index").cloned().unwrap_or(json!(0));
        let msg = c.get("message")?.as_object()?;
        if msg
            .iter()
            .any(|(k, v)| !KNOWN_MESSAGE_FIELDS.contains(&k.as_str()) && !is_empty(v))
        {
            return None;
        }
        let role = msg.get("role").cloned().unwrap_or(json!("assistant"));
        let logprobs = c.get("logprobs").cloned().unwrap_or(Value::Null);
        let content = msg.get("content").and_then(Value::as_str).unwrap_or("");
        let refusal = msg.get("refusal").and_then(Value::as_str);
        // OpenAI's first chunk: the role with empty content.
        frame(
            &mut out,
            &chunk(
                json!({"index": index, "delta": {"role": role, "content": ""}, "logprobs": null, "finish_reason": null}),
            ),
        );
        if !content.is_empty() || !logprobs.is_null() {
            frame(
                &mut out,
                &chunk(
                    json!({"index": index, "delta": {"content": content}, "logprobs": logprobs, "finish_reason": null}),
                ),
            );
        }
        if let Some(r) = refusal {
            frame(
                &mut out,
                &chunk(
                    json!({"index": index, "delta": {"refusal": r}, "logprobs": null, "finish_reason": null}),
                ),
            );
        }
        if let Some(calls) = msg.get("tool_calls").and_then(Value::as_array) {
            for (i, call) in calls.iter().enumerate() {
                let f = call.get("function");
                frame(
                    &mut out,
                    &chunk(json!({"index": index, "delta": {"tool_calls": [{
                        "index": i,
                        "id": call.get("id"),
                        "type": call.get("type").cloned().unwrap_or(json!("function")),
                        "function": {
                            "name": f.and_then(|f| f.get("name")),
                            "arguments": f.and_then(|f| f.get("arguments")).cloned().unwrap_or(json!("")),
                        },
                    }]}, "logprobs": null, "finish_reason": null})),
                );
            }
        }
        frame(
            &mut out,
            &chunk(
                json!({"index": index, "delta": {}, "logprobs": null, "finish_reason": c.get("finish_reason")}),
            ),
        );
    }
    let usage = b.get("usage").filter(|u| !u.is_null()).map(|u| {
        let mut c = head.clone();
        c.insert("choices".into(), json!([]));
        c.insert("usage".into(), u.clone());
        let mut out = BytesMut::new();
        frame(&mut out, &Value::Object(c));
        out.freeze()
    });
    Some(SseReplay {
        chunks: out.freeze(),
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(b: &[u8]) -> Vec<Value> {
        std::str::from_utf8(b)
            .unwrap()
            .split("\n\n")
            .filter(|s| !s.is_empty())
            .map(|s| serde_json::from_str(s.strip_prefix("data: ").unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn assembles_content_tools_and_usage_then_replays_the_same_answer() {
        let mut a = StreamAssembler::new(1 << 20);
        let chunks = [
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 5, "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}),
            json!({"id": "c1", "created": 5, "model": "m", "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": null}]}),
            json!({"id": "c1", "created": 5, "model": "m", "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": null}]}),
            json!({"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{\"a\""}}]}}]}),
            json!({"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}}]}),
            json!({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}),
        ];
        for c in &chunks {
            a.push(c.to_string().as_bytes());
        }
        let body = a.finish().unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["content"], "Hello");
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["usage"]["total_tokens"], 7);

        let replay = check_complete(&body).unwrap().unwrap();
        let f = frames(&replay.chunks);
        // Re-assembling the replay gives back the same body.
        let mut again = StreamAssembler::new(1 << 20);
        for x in &f {
            assert_eq!(x["object"], "chat.completion.chunk");
            again.push(x.to_string().as_bytes());
        }
        again.push(&replay.usage.clone().unwrap()[6..]);
        let v2: Value = serde_json::from_slice(&again.finish().unwrap()).unwrap();
        assert_eq!(v, v2);
    }

    #[test]
    fn incomplete_or_unknown_streams_are_not_stored() {
        let mut a = StreamAssembler::new(1 << 20);
        a.push(
            json!({"choices": [{"index": 0, "delta": {"content": "x"}}]})
                .to_string()
                .as_bytes(),
        );
        assert!(a.finish().is_none(), "no finish_reason");

        let mut a = StreamAssembler::new(1 << 20);
        a.push(json!({"choices": [{"index": 0, "delta": {"audio": {"id": "a"}}, "finish_reason": "stop"}]}).to_string().as_bytes());
        assert!(a.finish().is_none(), "unknown delta field");

        let mut a = StreamAssembler::new(1 << 20);
        a.push(json!({"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "content_filter"}]}).to_string().as_bytes());
        assert!(a.finish().is_none(), "content_filter");

        let mut a = StreamAssembler::new(10);
        a.push(json!({"choices": [{"index": 0, "delta": {"content": "a long answer"}, "finish_reason": "stop"}]}).to_string().as_bytes());
        assert!(a.finish().is_none(), "over the limit");

        let mut a = StreamAssembler::new(1 << 20);
        a.push(b"not json");
        assert!(a.finish().is_none());
    }

    #[test]
    fn complete_bodies_are_checked() {
        let ok = json!({"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi", "annotations": []}, "finish_reason": "length"}]});
        let r = check_complete(ok.to_string().as_bytes()).unwrap().unwrap();
        assert!(r.usage.is_none());
        let f = frames(&r.chunks);
        assert_eq!(f.len(), 3);
        assert_eq!(f[2]["choices"][0]["finish_reason"], "length");

        let filtered = json!({"choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "content_filter"}]});
        assert!(check_complete(filtered.to_string().as_bytes()).is_none());
        let audio = json!({"choices": [{"index": 0, "message": {"content": null, "audio": {"id": "a"}}, "finish_reason": "stop"}]});
        assert!(
            check_complete(audio.to_string().as_bytes())
                .unwrap()
                .is_none()
        );
        assert!(check_complete(b"[]").is_none());
    }
}
