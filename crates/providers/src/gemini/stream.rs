//! Gemini `streamGenerateContent?alt=sse` (`v1beta`) → canonical `chat.completion.chunk`s.
//!
//! Framing: data-only server-sent events, each `data:` one complete `GenerateContentResponse`
//! carrying only the new parts; there is no terminator — the stream ends when the connection
//! closes. `finishReason` arrives on a candidate's last event; `usageMetadata` may ride on every
//! event and is cumulative, so the last one seen holds the totals.
//!
//! Per event and candidate, [`Translator`] emits:
//! - one chunk with the new text (`delta.content`) and complete function calls
//!   (`delta.tool_calls[]` with `index`, synthesized `id`, `type`, `function.name` and the whole
//!   `function.arguments` — Gemini never splits a call); the first chunk of a candidate also
//!   carries `delta.role: "assistant"`;
//! - when the event carries `finishReason`, a separate chunk with `delta: {}` and the mapped
//!   `finish_reason` (`tool_calls` when the candidate called functions, see
//!   [`super::response::finish_reason`]).
//!
//! A blocked prompt (an event with `promptFeedback.blockReason` and no candidates) becomes a
//! role chunk plus a `content_filter` finish. After the connection closes cleanly and every
//! candidate has finished, one usage-only chunk `{"choices":[],"usage":{…}}` is emitted from the
//! last `usageMetadata` (the gateway strips it when the client did not ask for
//! `include_usage`). A close before a candidate finished is a cut stream
//! ([`UpstreamErrorKind::Broken`]); an `{"error":…}` event is [`UpstreamErrorKind::InStream`].
//! Every chunk of a stream shares `id`, `created` and `model`.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use serde_json::{Map, Value, json};

use super::response::{
    CallIds, GenerateContentResponse, UsageMetadata, candidate_output, error_message,
    finish_reason, usage, usage_json,
};
use super::{random_hex, unix_now};
use crate::error::{UpstreamError, UpstreamErrorKind};
use crate::http::TimedBody;
use crate::sse;

#[derive(Debug, Default)]
struct CandidateState {
    role_sent: bool,
    calls: u32,
    finished: bool,
}

/// The stateful event → chunks translation, independent of the transport.
pub struct Translator {
    model: String,
    created: u64,
    /// Set from the first event.
    id: Option<String>,
    ids: Option<CallIds>,
    candidates: BTreeMap<u32, CandidateState>,
    usage: Option<UsageMetadata>,
}

impl Translator {
    /// `model` is the requested model, used until an event names its `modelVersion`.
    pub fn new(model: &str, created: u64) -> Self {
        Translator {
            model: model.to_string(),
            created,
            id: None,
            ids: None,
            candidates: BTreeMap::new(),
            usage: None,
        }
    }

    /// Translates one event's `data`, appending chunk payloads to `out`.
    pub fn event(&mut self, data: &[u8], out: &mut Vec<Bytes>) -> Result<(), UpstreamErrorKind> {
        // alt=sse sends objects; an array (the non-SSE framing, or Google's array-wrapped error
        // form) is unwrapped rather than refused.
        let events: Vec<GenerateContentResponse> = if data.first() == Some(&b'[') {
            serde_json::from_slice(data)
        } else {
            serde_json::from_slice(data).map(|e| vec![e])
        }
        .map_err(|e| UpstreamErrorKind::Protocol(format!("unreadable stream event: {e}")))?;
        for ev in events {
            self.one(ev, out)?;
        }
        Ok(())
    }

    fn one(
        &mut self,
        ev: GenerateContentResponse,
        out: &mut Vec<Bytes>,
    ) -> Result<(), UpstreamErrorKind> {
        if let Some(err) = ev.error.as_ref().filter(|e| !e.is_null()) {
            return Err(UpstreamErrorKind::InStream {
                message: error_message(err),
                body: serde_json::to_vec(&serde_json::json!({ "error": err }))
                    .unwrap_or_default()
                    .into(),
            });
        }
        if self.id.is_none() {
            self.id = Some(format!(
                "chatcmpl-{}",
                ev.response_id.clone().unwrap_or_else(random_hex)
            ));
            self.ids = Some(CallIds::new(ev.response_id.as_deref()));
            if let Some(m) = &ev.model_version {
                self.model = m.clone();
            }
        }
        if let Some(u) = ev.usage_metadata {
            self.usage = Some(u);
        }
        let ids = self.ids.clone().unwrap_or_else(|| CallIds::new(None));
        let candidates = ev.candidates.unwrap_or_default();
        if candidates.is_empty() {
            if let Some(reason) = ev.prompt_feedback.and_then(|f| f.block_reason) {
                tracing::debug!(block_reason = %reason, "gemini blocked the prompt");
                let state = self.candidates.entry(0).or_default();
                state.finished = true;
                state.role_sent = true;
                let chunk = self.chunk(0, json!({ "role": "assistant" }), Some("content_filter"));
                out.push(chunk);
            }
            return Ok(());
        }
        // (candidate, delta, finish_reason) in emission order; chunks are built once the
        // per-candidate state is no longer borrowed.
        let mut emit: Vec<(u32, Value, Option<&'static str>)> = Vec::new();
        for (pos, c) in candidates.iter().enumerate() {
            let index = c.index.unwrap_or(pos as u32);
            let parts = c
                .content
                .as_ref()
                .and_then(|c| c.parts.as_deref())
                .unwrap_or(&[]);
            let state = self.candidates.entry(index).or_default();
            let output = candidate_output(parts, &ids, index, &mut state.calls, true);
            let has_output = output.text.is_some() || !output.tool_calls.is_empty();
            if has_output {
                let mut delta = Map::new();
                if !state.role_sent {
                    delta.insert("role".into(), "assistant".into());
                    state.role_sent = true;
                }
                if let Some(t) = output.text {
                    delta.insert("content".into(), t.into());
                }
                if !output.tool_calls.is_empty() {
                    delta.insert("tool_calls".into(), Value::Array(output.tool_calls));
                }
                emit.push((index, Value::Object(delta), None));
            }
            if let Some(raw) = c.finish_reason.as_deref() {
                state.finished = true;
                let delta = if state.role_sent {
                    json!({})
                } else {
                    state.role_sent = true;
                    json!({ "role": "assistant" })
                };
                emit.push((
                    index,
                    delta,
                    Some(finish_reason(Some(raw), state.calls > 0)),
                ));
            }
        }
        for (index, delta, finish) in emit {
            out.push(self.chunk(index, delta, finish));
        }
        Ok(())
    }

    /// Ends the stream after a clean close: the usage chunk, or `Broken` when it was cut.
    pub fn finish(&mut self, out: &mut Vec<Bytes>) -> Result<(), UpstreamErrorKind> {
        if self.candidates.is_empty() {
            return Err(UpstreamErrorKind::Broken(
                "stream closed before any finishReason".into(),
            ));
        }
        if let Some((i, _)) = self.candidates.iter().find(|(_, s)| !s.finished) {
            return Err(UpstreamErrorKind::Broken(format!(
                "stream closed before candidate {i} finished"
            )));
        }
        if let Some(u) = &self.usage {
            let mut chunk = self.head();
            chunk.insert("choices".into(), json!([]));
            chunk.insert("usage".into(), usage_json(&usage(u)));
            out.push(encode(chunk));
        }
        Ok(())
    }

    fn head(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(
            "id".into(),
            self.id.clone().unwrap_or_else(|| "chatcmpl-".into()).into(),
        );
        m.insert("object".into(), "chat.completion.chunk".into());
        m.insert("created".into(), self.created.into());
        m.insert("model".into(), self.model.clone().into());
        m
    }

    fn chunk(&self, index: u32, delta: Value, finish: Option<&str>) -> Bytes {
        let mut m = self.head();
        m.insert(
            "choices".into(),
            json!([{ "index": index, "delta": delta, "finish_reason": finish }]),
        );
        encode(m)
    }
}

fn encode(m: Map<String, Value>) -> Bytes {
    // Serialising a Value built from strings and numbers cannot fail.
    Bytes::from(Value::Object(m).to_string())
}

/// The canonical chunk stream of one Gemini SSE response.
pub struct GeminiChunks {
    provider: Arc<str>,
    pump: sse::EventPump,
    events: VecDeque<sse::Event>,
    ready: VecDeque<Bytes>,
    translator: Translator,
    finished: bool,
}

impl GeminiChunks {
    pub fn new(provider: Arc<str>, body: TimedBody, model: &str) -> Self {
        GeminiChunks {
            pump: sse::EventPump::new(provider.clone(), body),
            provider,
            events: VecDeque::new(),
            ready: VecDeque::new(),
            translator: Translator::new(model, unix_now()),
            finished: false,
        }
    }

    fn fail(&mut self, kind: UpstreamErrorKind) -> Poll<Option<Result<Bytes, UpstreamError>>> {
        self.finished = true;
        self.events.clear();
        Poll::Ready(Some(Err(UpstreamError::new(&self.provider, kind))))
    }
}

impl Stream for GeminiChunks {
    type Item = Result<Bytes, UpstreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            // Chunks already translated go out first, also after the end was reached.
            if let Some(chunk) = self.ready.pop_front() {
                return Poll::Ready(Some(Ok(chunk)));
            }
            if self.finished {
                return Poll::Ready(None);
            }
            if let Some(ev) = self.events.pop_front() {
                if ev.data.is_empty() {
                    continue;
                }
                let mut out = Vec::new();
                match self.translator.event(&ev.data, &mut out) {
                    Ok(()) => self.ready.extend(out),
                    Err(kind) => {
                        // Unparseable JSON as the very last thing before the close is a
                        // connection cut mid-event, not a provider speaking garbage.
                        let kind = match kind {
                            UpstreamErrorKind::Protocol(_)
                                if self.pump.ended() && self.events.is_empty() =>
                            {
                                UpstreamErrorKind::Broken(
                                    "stream cut in the middle of an event".into(),
                                )
                            }
                            other => other,
                        };
                        return self.fail(kind);
                    }
                }
                continue;
            }
            if self.pump.ended() {
                self.finished = true;
                let mut out = Vec::new();
                match self.translator.finish(&mut out) {
                    Ok(()) => self.ready.extend(out),
                    Err(kind) => return self.fail(kind),
                }
                continue;
            }
            let this = &mut *self;
            match this.pump.poll_fill(cx, &mut this.events) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    self.finished = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(events: &[&str]) -> (Vec<Value>, Result<(), UpstreamErrorKind>) {
        let mut t = Translator::new("gemini-x", 7);
        let mut out = Vec::new();
        for e in events {
            if let Err(k) = t.event(e.as_bytes(), &mut out) {
                return (parse(out), Err(k));
            }
        }
        let end = t.finish(&mut out);
        (parse(out), end)
    }

    fn parse(out: Vec<Bytes>) -> Vec<Value> {
        out.iter()
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect()
    }

    #[test]
    fn text_then_finish_and_usage() {
        let (chunks, end) = run(&[
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]},"index":0}],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":1},"responseId":"r1","modelVersion":"gemini-2.5-flash"}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"lo!"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":3},"responseId":"r1"}"#,
        ]);
        end.unwrap();
        assert_eq!(chunks.len(), 4);
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role":"assistant","content":"Hel"})
        );
        assert_eq!(chunks[1]["choices"][0]["delta"], json!({"content":"lo!"}));
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[3]["choices"], json!([]));
        assert_eq!(chunks[3]["usage"]["completion_tokens"], 3);
        assert!(
            chunks
                .iter()
                .all(|c| c["id"] == "chatcmpl-r1" && c["model"] == "gemini-2.5-flash")
        );
    }

    #[test]
    fn signature_only_text_part_adds_no_delta() {
        let (chunks, end) = run(&[
            r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}]},"index":0}],"responseId":"r"}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":"","thoughtSignature":"c2ln"}]},"finishReason":"STOP","index":0}],"responseId":"r"}"#,
        ]);
        end.unwrap();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1]["choices"][0]["delta"], json!({}));
        assert_eq!(chunks[1]["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn two_candidates_each_need_a_finish() {
        let (chunks, end) = run(&[
            r#"{"candidates":[{"content":{"parts":[{"text":"a"}]},"index":0},{"content":{"parts":[{"text":"b"}]},"index":1}]}"#,
            r#"{"candidates":[{"content":{"parts":[]},"finishReason":"STOP","index":0}]}"#,
        ]);
        assert!(matches!(end, Err(UpstreamErrorKind::Broken(ref m)) if m.contains("candidate 1")));
        assert_eq!(chunks[1]["choices"][0]["index"], 1);
        assert_eq!(
            chunks[1]["choices"][0]["delta"],
            json!({"role":"assistant","content":"b"})
        );
    }

    #[test]
    fn close_before_finish_is_broken() {
        let (_, end) =
            run(&[r#"{"candidates":[{"content":{"parts":[{"text":"Hel"}]}}],"responseId":"r1"}"#]);
        assert!(matches!(end, Err(UpstreamErrorKind::Broken(_))));
        let (_, end) = run(&[]);
        assert!(matches!(end, Err(UpstreamErrorKind::Broken(_))));
    }

    #[test]
    fn error_event_is_in_stream() {
        let (_, end) = run(&[
            r#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#,
        ]);
        match end {
            Err(UpstreamErrorKind::InStream { message, .. }) => {
                assert_eq!(message, "The model is overloaded. (status: UNAVAILABLE)")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_is_protocol_not_panic() {
        let (_, end) = run(&["{not json"]);
        assert!(matches!(end, Err(UpstreamErrorKind::Protocol(_))));
    }

    #[test]
    fn blocked_prompt_finishes_with_content_filter() {
        let (chunks, end) = run(&[
            r#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":5,"totalTokenCount":5}}"#,
        ]);
        end.unwrap();
        assert_eq!(chunks.len(), 2);
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role":"assistant"})
        );
        assert_eq!(chunks[0]["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(chunks[1]["usage"]["prompt_tokens"], 5);
    }
}
