//! Anthropic streaming events → canonical OpenAI `chat.completion.chunk` payloads.
//!
//! Wire format: Anthropic Messages streaming, `anthropic-version: 2023-06-01` (event types as in
//! the official SDK's `raw_*_event.py`). The translation is a pure state machine
//! ([`Translator`]) fed one decoded event at a time, so it is tested without a network; the
//! transport in [`super`] feeds it.
//!
//! | Anthropic event | canonical chunk(s) |
//! |---|---|
//! | `message_start` | first chunk: `delta: {role: "assistant", content: ""}`; id, model, input + cache usage remembered |
//! | `content_block_start` text | (its initial text, if any) |
//! | `content_block_delta` `text_delta` | `delta: {content}` |
//! | `content_block_start` tool_use | `delta: {tool_calls: [{index, id, type: "function", function: {name, arguments: ""}}]}` |
//! | `content_block_delta` `input_json_delta` | `delta: {tool_calls: [{index, function: {arguments: <fragment>}}]}` |
//! | `content_block_delta` `thinking_delta` | `delta: {reasoning_content}` |
//! | `signature_delta`, `citations_delta`, `content_block_stop`, `ping`, other blocks | nothing |
//! | `message_delta` | `delta: {}` + `finish_reason` (first one with a stop reason); usage updated (cumulative) |
//! | `message_stop` | one usage-only chunk `{choices: [], usage}` — always; the gateway strips it when the client did not ask |
//! | `error` | handled by the transport: an `InStream` error |
//!
//! Tool-call `index` is a counter of tool calls, *not* Anthropic's block index: text and
//! thinking blocks occupy block indices too, and OpenAI clients index into `tool_calls`.

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tollgate_types::Usage;

use super::response::{WireUsage, arguments_of, finish_reason, openai_usage};
use crate::sse;

/// Why an event could not be translated (the stream is then ended with a protocol error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("unreadable '{event}' event: {reason}")]
    BadEvent { event: String, reason: String },
    #[error("'{0}' event before message_start")]
    BeforeStart(String),
}

/// The event type: the SSE `event:` name, which Anthropic always sets equal to the JSON `type`;
/// the JSON `type` when a (non-conforming) server leaves the name out.
pub fn event_type(ev: &sse::Event) -> Cow<'_, str> {
    if let Some(name) = &ev.event {
        return Cow::Borrowed(name);
    }
    #[derive(Deserialize)]
    struct TypeOnly {
        #[serde(default, rename = "type")]
        kind: String,
    }
    Cow::Owned(
        serde_json::from_slice::<TypeOnly>(&ev.data)
            .map(|t| t.kind)
            .unwrap_or_default(),
    )
}

/// The message of an `error` event: `"<message> (type: <error type>)"`.
pub fn error_event_message(data: &[u8]) -> String {
    let v: Value = serde_json::from_slice(data).unwrap_or(Value::Null);
    let err = v.get("error").unwrap_or(&v);
    let msg = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("error event");
    match err.get("type").and_then(Value::as_str) {
        Some(t) => format!("{msg} (type: {t})"),
        None => msg.to_string(),
    }
}

/// Usage of a native stream, accumulated from `message_start` and the cumulative
/// `message_delta` counts. The gateway's `/v1/messages` path uses it to meter raw events.
#[derive(Debug, Clone, Default)]
pub struct UsageTracker {
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct StartPeek {
    message: MessagePeek,
}

#[derive(Deserialize)]
struct MessagePeek {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct DeltaPeek {
    #[serde(default)]
    delta: Option<MessageDelta>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct MessageDelta {
    #[serde(default)]
    stop_reason: Option<String>,
}

impl UsageTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the usage an event carries, if any. Events that are not `message_start` or
    /// `message_delta`, or that do not parse, leave it unchanged.
    pub fn observe(&mut self, ev: &sse::Event) {
        match event_type(ev).as_ref() {
            "message_start" => {
                if let Ok(s) = serde_json::from_slice::<StartPeek>(&ev.data) {
                    self.add(s.message.usage.as_ref());
                }
            }
            "message_delta" => {
                if let Ok(d) = serde_json::from_slice::<DeltaPeek>(&ev.data) {
                    self.add(d.usage.as_ref());
                }
            }
            _ => {}
        }
    }

    fn add(&mut self, u: Option<&WireUsage>) {
        if let Some(u) = u {
            self.usage.get_or_insert_with(WireUsage::default).merge(u);
        }
    }

    /// Canonical usage so far; `None` until an event carried usage.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.as_ref().map(WireUsage::to_usage)
    }
}

/// One content block event, only what is translated.
#[derive(Deserialize)]
struct BlockStart {
    #[serde(default)]
    index: u64,
    content_block: StartBlock,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    ToolUse {
        #[serde(default)]
        id: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct BlockDelta {
    #[serde(default)]
    index: u64,
    delta: DeltaBody,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum DeltaBody {
    TextDelta {
        #[serde(default)]
        text: String,
    },
    InputJsonDelta {
        #[serde(default)]
        partial_json: String,
    },
    ThinkingDelta {
        #[serde(default)]
        thinking: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Serialize)]
struct ChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChoiceOut<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Value>,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    delta: DeltaOut<'a>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize, Default)]
struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

/// The translation state of one stream.
#[derive(Debug)]
pub struct Translator {
    created: u64,
    /// Set by `message_start`; `None` before it.
    id: Option<String>,
    model: String,
    usage: UsageTracker,
    /// Anthropic block index → OpenAI tool-call index.
    tool_index: HashMap<u64, u32>,
    next_tool: u32,
    finished: bool,
    stopped: bool,
}

impl Translator {
    /// `created` is the `created` timestamp every chunk carries (OpenAI repeats it on each).
    pub fn new(created: u64) -> Self {
        Translator {
            created,
            id: None,
            model: String::new(),
            usage: UsageTracker::new(),
            tool_index: HashMap::new(),
            next_tool: 0,
            finished: false,
            stopped: false,
        }
    }

    /// True once `message_stop` was translated.
    pub fn is_done(&self) -> bool {
        self.stopped
    }

    /// Canonical usage so far.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.usage()
    }

    /// Translates one event, appending the chunks it produces to `out`. `error` events are not
    /// handled here (the transport turns them into errors); unknown events produce nothing.
    pub fn on_event(&mut self, ev: &sse::Event, out: &mut Vec<Bytes>) -> Result<(), StreamError> {
        let kind = event_type(ev);
        let bad = |e: serde_json::Error| StreamError::BadEvent {
            event: kind.to_string(),
            reason: e.to_string(),
        };
        match kind.as_ref() {
            "message_start" => {
                let s: StartPeek = serde_json::from_slice(&ev.data).map_err(bad)?;
                self.id = Some(s.message.id);
                self.model = s.message.model;
                self.usage.add(s.message.usage.as_ref());
                self.emit(
                    out,
                    DeltaOut {
                        role: Some("assistant"),
                        content: Some(""),
                        ..DeltaOut::default()
                    },
                    None,
                );
            }
            "content_block_start" => {
                self.require_start(&kind)?;
                let b: BlockStart = serde_json::from_slice(&ev.data).map_err(bad)?;
                match b.content_block {
                    StartBlock::Text { text } if !text.is_empty() => self.text(out, &text),
                    StartBlock::Thinking { thinking } if !thinking.is_empty() => {
                        self.reasoning(out, &thinking)
                    }
                    StartBlock::ToolUse { id, name, input } => {
                        let index = self.next_tool;
                        self.next_tool = self.next_tool.saturating_add(1);
                        self.tool_index.insert(b.index, index);
                        // Anthropic starts tool_use blocks with `input: {}` and streams the
                        // input as JSON fragments; a non-empty start input is sent whole.
                        let initial = match &input {
                            Value::Object(o) if !o.is_empty() => arguments_of(&input),
                            _ => String::new(),
                        };
                        self.emit(
                            out,
                            DeltaOut {
                                tool_calls: Some([ToolCallDelta {
                                    index,
                                    id: Some(&id),
                                    kind: Some("function"),
                                    function: FunctionDelta {
                                        name: Some(&name),
                                        arguments: &initial,
                                    },
                                }]),
                                ..DeltaOut::default()
                            },
                            None,
                        );
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                self.require_start(&kind)?;
                let d: BlockDelta = serde_json::from_slice(&ev.data).map_err(bad)?;
                match d.delta {
                    DeltaBody::TextDelta { text } if !text.is_empty() => self.text(out, &text),
                    DeltaBody::ThinkingDelta { thinking } if !thinking.is_empty() => {
                        self.reasoning(out, &thinking)
                    }
                    DeltaBody::InputJsonDelta { partial_json } if !partial_json.is_empty() => {
                        // Fragments of a block that never started as tool_use (server tools)
                        // have no OpenAI call to extend.
                        if let Some(&index) = self.tool_index.get(&d.index) {
                            self.emit(
                                out,
                                DeltaOut {
                                    tool_calls: Some([ToolCallDelta {
                                        index,
                                        id: None,
                                        kind: None,
                                        function: FunctionDelta {
                                            name: None,
                                            arguments: &partial_json,
                                        },
                                    }]),
                                    ..DeltaOut::default()
                                },
                                None,
                            );
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                self.require_start(&kind)?;
                let d: DeltaPeek = serde_json::from_slice(&ev.data).map_err(bad)?;
                self.usage.add(d.usage.as_ref());
                if let Some(reason) = d.delta.and_then(|d| d.stop_reason) {
                    self.finish(out, finish_reason(Some(&reason)));
                }
            }
            "message_stop" => {
                self.require_start(&kind)?;
                // A stream that stopped without a stop reason still gets its finish chunk:
                // clients wait for one.
                self.finish(out, "stop");
                let usage = self.usage.usage().unwrap_or_default();
                let chunk = ChunkOut {
                    id: self.id.as_deref().unwrap_or(""),
                    object: "chat.completion.chunk",
                    created: self.created,
                    model: &self.model,
                    choices: &[],
                    usage: Some(openai_usage(&usage)),
                };
                push_json(out, &chunk);
                self.stopped = true;
            }
            // ping, content_block_stop, and event types added after this was written.
            _ => {}
        }
        Ok(())
    }

    fn require_start(&self, kind: &str) -> Result<(), StreamError> {
        if self.id.is_none() {
            return Err(StreamError::BeforeStart(kind.to_string()));
        }
        Ok(())
    }

    fn text(&self, out: &mut Vec<Bytes>, text: &str) {
        self.emit(
            out,
            DeltaOut {
                content: Some(text),
                ..DeltaOut::default()
            },
            None,
        );
    }

    fn reasoning(&self, out: &mut Vec<Bytes>, text: &str) {
        self.emit(
            out,
            DeltaOut {
                reasoning_content: Some(text),
                ..DeltaOut::default()
            },
            None,
        );
    }

    /// The finish chunk, once: a later `message_delta` only updates usage.
    fn finish(&mut self, out: &mut Vec<Bytes>, reason: &str) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.emit(out, DeltaOut::default(), Some(reason));
    }

    fn emit(&self, out: &mut Vec<Bytes>, delta: DeltaOut<'_>, finish: Option<&str>) {
        let choices = [ChoiceOut {
            index: 0,
            delta,
            finish_reason: finish,
        }];
        let chunk = ChunkOut {
            id: self.id.as_deref().unwrap_or(""),
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: &choices,
            usage: None,
        };
        push_json(out, &chunk);
    }
}

fn push_json(out: &mut Vec<Bytes>, chunk: &ChunkOut<'_>) {
    // Serialising these plain structs cannot fail (no maps with non-string keys, no custom
    // serialisers); were it ever to, dropping one chunk beats panicking mid-stream.
    if let Ok(v) = serde_json::to_vec(chunk) {
        out.push(Bytes::from(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(name: &str, data: &str) -> sse::Event {
        sse::Event {
            event: Some(name.to_string()),
            data: Bytes::from(data.to_string()),
        }
    }

    fn run(events: &[sse::Event]) -> (Vec<Value>, Translator) {
        let mut t = Translator::new(1);
        let mut out = Vec::new();
        for e in events {
            t.on_event(e, &mut out).unwrap();
        }
        let chunks = out
            .iter()
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect();
        (chunks, t)
    }

    const START: &str = r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[],"stop_reason":null,"usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":1}}}"#;

    #[test]
    fn tool_indices_are_a_separate_counter() {
        let (chunks, _) = run(&[
            ev("message_start", START),
            ev(
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
            ),
            ev(
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t1","name":"a","input":{}}}"#,
            ),
            ev(
                "content_block_start",
                r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"t2","name":"b","input":{}}}"#,
            ),
            ev(
                "content_block_delta",
                r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{}"}}"#,
            ),
        ]);
        assert_eq!(
            chunks[1]["choices"][0]["delta"]["tool_calls"][0]["index"],
            0
        );
        assert_eq!(
            chunks[2]["choices"][0]["delta"]["tool_calls"][0]["index"],
            1
        );
        assert_eq!(
            chunks[3]["choices"][0]["delta"]["tool_calls"][0]["index"],
            1
        );
    }

    #[test]
    fn stop_without_delta_still_finishes_and_reports_usage() {
        let (chunks, t) = run(&[
            ev("message_start", START),
            ev("message_stop", r#"{"type":"message_stop"}"#),
        ]);
        assert!(t.is_done());
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[2]["choices"], serde_json::json!([]));
        assert_eq!(chunks[2]["usage"]["prompt_tokens"], 15);
        assert_eq!(
            chunks[2]["usage"]["prompt_tokens_details"]["cached_tokens"],
            5
        );
    }

    #[test]
    fn second_message_delta_updates_usage_only() {
        let (chunks, t) = run(&[
            ev("message_start", START),
            ev(
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":3}}"#,
            ),
            ev(
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}"#,
            ),
        ]);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1]["choices"][0]["finish_reason"], "length");
        assert_eq!(t.usage().unwrap().output_tokens, 9);
    }

    #[test]
    fn content_before_start_and_garbage_are_errors() {
        let mut t = Translator::new(0);
        let mut out = Vec::new();
        assert!(matches!(
            t.on_event(
                &ev("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}"#),
                &mut out
            ),
            Err(StreamError::BeforeStart(_))
        ));
        assert!(matches!(
            t.on_event(&ev("message_start", "{not json"), &mut out),
            Err(StreamError::BadEvent { .. })
        ));
        // Unknown events and pings are ignored, even before the start.
        t.on_event(&ev("ping", r#"{"type":"ping"}"#), &mut out)
            .unwrap();
        t.on_event(&ev("brand_new", "{}"), &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn event_type_falls_back_to_json_type() {
        let e = sse::Event {
            event: None,
            data: Bytes::from_static(br#"{"type":"message_stop"}"#),
        };
        assert_eq!(event_type(&e), "message_stop");
        assert_eq!(
            error_event_message(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            "Overloaded (type: overloaded_error)"
        );
    }

    fn pieces(s: &str, n: usize) -> Vec<String> {
        let chars: Vec<char> = s.chars().collect();
        chars.chunks(n.max(1)).map(|c| c.iter().collect()).collect()
    }

    /// Builds the event stream Anthropic would send for a complete message, splitting every
    /// text and every tool input into fragments of `split` characters.
    fn events_for(message: &Value, split: usize) -> Vec<sse::Event> {
        let mut start = message.clone();
        start["content"] = json!([]);
        start["stop_reason"] = Value::Null;
        let usage = &message["usage"];
        start["usage"] = json!({
            "input_tokens": usage["input_tokens"],
            "cache_read_input_tokens": usage["cache_read_input_tokens"],
            "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
            "output_tokens": 1,
        });
        let mut out = vec![ev(
            "message_start",
            &json!({"type": "message_start", "message": start}).to_string(),
        )];
        for (i, block) in message["content"].as_array().unwrap().iter().enumerate() {
            let (empty, deltas): (Value, Vec<Value>) = match block["type"].as_str().unwrap() {
                "text" => (
                    json!({"type": "text", "text": ""}),
                    pieces(block["text"].as_str().unwrap(), split)
                        .into_iter()
                        .map(|t| json!({"type": "text_delta", "text": t}))
                        .collect(),
                ),
                "thinking" => (
                    json!({"type": "thinking", "thinking": ""}),
                    pieces(block["thinking"].as_str().unwrap(), split)
                        .into_iter()
                        .map(|t| json!({"type": "thinking_delta", "thinking": t}))
                        .chain([json!({"type": "signature_delta", "signature": "sig"})])
                        .collect(),
                ),
                _ => (
                    json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}),
                    pieces(&block["input"].to_string(), split)
                        .into_iter()
                        .map(|t| json!({"type": "input_json_delta", "partial_json": t}))
                        .collect(),
                ),
            };
            out.push(ev(
                "content_block_start",
                &json!({"type": "content_block_start", "index": i, "content_block": empty})
                    .to_string(),
            ));
            for d in deltas {
                out.push(ev(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": i, "delta": d}).to_string(),
                ));
            }
            out.push(ev("ping", r#"{"type":"ping"}"#));
            out.push(ev(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": i}).to_string(),
            ));
        }
        out.push(ev(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": message["stop_reason"], "stop_sequence": null},
                    "usage": {"output_tokens": usage["output_tokens"]}})
            .to_string(),
        ));
        out.push(ev("message_stop", r#"{"type":"message_stop"}"#));
        out
    }

    /// What an OpenAI client reassembles from the chunks, in the shape of a non-streaming
    /// `choices[0].message` + `finish_reason` + `usage`.
    fn reassemble(chunks: &[Value]) -> Value {
        let mut content = String::new();
        let mut reasoning = String::new();
        let mut calls: Vec<Value> = Vec::new();
        let mut finish = Value::Null;
        let mut usage = Value::Null;
        for c in chunks {
            if let Some(u) = c.get("usage") {
                usage = u.clone();
            }
            let Some(choice) = c["choices"].get(0) else {
                continue;
            };
            let d = &choice["delta"];
            content.push_str(d["content"].as_str().unwrap_or(""));
            reasoning.push_str(d["reasoning_content"].as_str().unwrap_or(""));
            for tc in d["tool_calls"].as_array().into_iter().flatten() {
                let i = tc["index"].as_u64().unwrap() as usize;
                if i == calls.len() {
                    calls.push(
                        json!({"id": tc["id"], "name": tc["function"]["name"], "arguments": ""}),
                    );
                }
                let args = format!(
                    "{}{}",
                    calls[i]["arguments"].as_str().unwrap(),
                    tc["function"]["arguments"].as_str().unwrap()
                );
                calls[i]["arguments"] = Value::String(args);
            }
            if !choice["finish_reason"].is_null() {
                finish = choice["finish_reason"].clone();
            }
        }
        for c in &mut calls {
            c["arguments"] = serde_json::from_str(c["arguments"].as_str().unwrap()).unwrap();
        }
        json!({"content": content, "reasoning": reasoning, "calls": calls, "finish": finish, "usage": usage})
    }

    fn from_complete(body: &[u8]) -> Value {
        let v: Value = serde_json::from_slice(body).unwrap();
        let m = &v["choices"][0]["message"];
        let calls: Vec<Value> = m["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|tc| {
                json!({
                    "id": tc["id"],
                    "name": tc["function"]["name"],
                    "arguments": serde_json::from_str::<Value>(tc["function"]["arguments"].as_str().unwrap()).unwrap(),
                })
            })
            .collect();
        json!({
            "content": m["content"].as_str().unwrap_or(""),
            "reasoning": m["reasoning_content"].as_str().unwrap_or(""),
            "calls": calls,
            "finish": v["choices"][0]["finish_reason"],
            "usage": v["usage"],
        })
    }

    proptest::proptest! {
        /// Streaming and non-streaming translations of the same message agree on everything an
        /// OpenAI client sees — text, reasoning, tool calls, finish reason, usage — however the
        /// stream is fragmented.
        #[test]
        fn stream_and_complete_agree(
            thinking in proptest::option::of("[a-z .]{0,24}"),
            text in proptest::option::of("[ -~é✓]{0,40}"),
            tools in proptest::collection::vec(("[a-z_]{1,8}", "[ -~]{0,16}"), 0..3),
            split in 1usize..6,
            stop in proptest::sample::select(vec!["end_turn", "max_tokens", "tool_use", "refusal", "pause_turn", "stop_sequence"]),
            usage in (0u64..100_000, 0u64..100_000, 0u64..100_000, 1u64..100_000),
        ) {
            let mut content = Vec::new();
            if let Some(t) = thinking {
                content.push(json!({"type": "thinking", "thinking": t, "signature": "sig"}));
            }
            if let Some(t) = text {
                content.push(json!({"type": "text", "text": t}));
            }
            for (i, (name, arg)) in tools.iter().enumerate() {
                content.push(json!({"type": "tool_use", "id": format!("toolu_{i}"), "name": name, "input": {"q": arg, "n": i}}));
            }
            let message = json!({
                "id": "msg_p", "type": "message", "role": "assistant", "model": "claude-p",
                "content": content, "stop_reason": stop, "stop_sequence": null,
                "usage": {"input_tokens": usage.0, "cache_read_input_tokens": usage.1,
                          "cache_creation_input_tokens": usage.2, "output_tokens": usage.3},
            });
            let (body, _) = super::super::response::to_chat_completion(message.to_string().as_bytes(), 1).unwrap();
            let (chunks, t) = run(&events_for(&message, split));
            proptest::prop_assert!(t.is_done());
            proptest::prop_assert_eq!(reassemble(&chunks), from_complete(&body));
        }
    }

    #[test]
    fn usage_tracker_reads_native_events() {
        let mut u = UsageTracker::new();
        u.observe(&ev("message_start", START));
        u.observe(&ev("ping", r#"{"type":"ping"}"#));
        u.observe(&ev(
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":42}}"#,
        ));
        let got = u.usage().unwrap();
        assert_eq!(
            (got.input_tokens, got.cached_input_tokens, got.output_tokens),
            (15, 5, 42)
        );
    }
}
