//! `ConverseStream` events → canonical `chat.completion.chunk` payloads.
//!
//! | event | chunk(s) |
//! |---|---|
//! | `messageStart` | `delta: {role: "assistant", content: ""}` (once; also synthesised before the first content if Bedrock skips it) |
//! | `contentBlockStart` with `toolUse{toolUseId, name}` | `delta.tool_calls[{index: k, id, type: "function", function: {name, arguments: ""}}]`, `k` counting tool blocks only |
//! | `contentBlockDelta` `text` | `delta.content` |
//! | `contentBlockDelta` `toolUse.input` | `delta.tool_calls[{index: k, function: {arguments}}]` |
//! | forced JSON tool start / input | nothing / `delta.content` |
//! | `contentBlockStop` | nothing |
//! | `messageStop{stopReason}` | `delta: {}` + `finish_reason` |
//! | `metadata{usage}` | one usage-only chunk `{"choices": [], "usage": {…}}` (inclusive prompt tokens) |
//! | `:message-type: exception` | error: before any event, a status error the router can retry (throttling → 429); after, [`UpstreamErrorKind::InStream`] |
//!
//! The finish chunk goes out as soon as `messageStop` arrives; the stream is complete once
//! `metadata` arrived too (Bedrock sends it last; if it came first, its usage chunk is held until
//! after the finish chunk). A body that ends earlier was cut: [`UpstreamErrorKind::Broken`].
//! After completion, whatever of the body is already there (normally just the end of the chunked
//! body) is read so the connection can go back to the pool — but never waited for: an upstream
//! that holds the connection open must not delay the end of the client's stream.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use super::eventstream::{Decoder, Frame};
use super::request::JSON_TOOL;
use super::response::{Identity, TokenUsage, convert_usage, finish_reason};
use crate::error::{UpstreamError, UpstreamErrorKind};

/// Chunks from a ConverseStream body `B` (a byte stream with the transport's timeouts applied).
pub struct ConverseStream<B> {
    provider: Arc<str>,
    body: B,
    decoder: Decoder,
    /// Decoded frames not yet translated (the first one is read ahead by [`Self::prime`]).
    frames: VecDeque<Frame>,
    ready: VecDeque<Bytes>,
    tr: Translator,
    state: State,
    body_ended: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Complete; reading what is already buffered of the body before reporting the end.
    Draining,
    Done,
}

impl<B> ConverseStream<B>
where
    B: Stream<Item = Result<Bytes, UpstreamError>> + Unpin,
{
    pub fn new(provider: &str, body: B, identity: Identity, json_tool: bool) -> Self {
        ConverseStream {
            provider: Arc::from(provider),
            body,
            decoder: Decoder::new(),
            frames: VecDeque::new(),
            ready: VecDeque::new(),
            tr: Translator::new(&identity, json_tool),
            state: State::Open,
            body_ended: false,
        }
    }

    /// Reads until the first frame. An exception there (throttling, overload) is returned as
    /// a status error, before the gateway commits to a streaming response, so the client gets
    /// a proper 429/503 and the router may try again; any other first frame is kept for
    /// [`Stream::poll_next`].
    pub async fn prime(&mut self) -> Result<(), UpstreamError> {
        loop {
            match self.decoder.next_frame() {
                Err(e) => return Err(self.err(UpstreamErrorKind::Protocol(e.to_string()))),
                Ok(Some(frame)) => {
                    if !frame.is_event() {
                        return Err(self.err(super::exception_status(&frame)));
                    }
                    self.frames.push_back(frame);
                    return Ok(());
                }
                Ok(None) => {}
            }
            match self.body.next().await {
                Some(Ok(bytes)) => self.decoder.push(&bytes),
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(self.err(UpstreamErrorKind::Broken(
                        "event stream ended before its first event".into(),
                    )));
                }
            }
        }
    }

    fn err(&self, kind: UpstreamErrorKind) -> UpstreamError {
        UpstreamError::new(&self.provider, kind)
    }

    fn fail(&mut self, kind: UpstreamErrorKind) -> Poll<Option<Result<Bytes, UpstreamError>>> {
        self.state = State::Done;
        self.ready.clear();
        Poll::Ready(Some(Err(self.err(kind))))
    }
}

impl<B> Stream for ConverseStream<B>
where
    B: Stream<Item = Result<Bytes, UpstreamError>> + Unpin,
{
    type Item = Result<Bytes, UpstreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(chunk) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(chunk)));
            }
            match this.state {
                State::Done => return Poll::Ready(None),
                State::Draining => match Pin::new(&mut this.body).poll_next(cx) {
                    Poll::Ready(Some(Ok(_))) => continue,
                    Poll::Pending | Poll::Ready(Some(Err(_)) | None) => {
                        this.state = State::Done;
                        return Poll::Ready(None);
                    }
                },
                State::Open => {}
            }
            if let Some(frame) = this.frames.pop_front() {
                match this.tr.on_frame(&frame, &mut this.ready) {
                    Ok(Step::Continue) => {}
                    Ok(Step::Complete) => {
                        this.state = if this.body_ended {
                            State::Done
                        } else {
                            State::Draining
                        }
                    }
                    Err(kind) => return this.fail(kind),
                }
                continue;
            }
            match this.decoder.next_frame() {
                Ok(Some(frame)) => {
                    this.frames.push_back(frame);
                    continue;
                }
                Ok(None) => {}
                Err(e) => return this.fail(UpstreamErrorKind::Protocol(e.to_string())),
            }
            if this.body_ended {
                let why = if this.decoder.buffered() > 0 {
                    "event stream ended inside a message"
                } else if this.tr.stop_reason.is_some() {
                    "event stream ended before its metadata event"
                } else {
                    "event stream ended before messageStop"
                };
                return this.fail(UpstreamErrorKind::Broken(why.into()));
            }
            match Pin::new(&mut this.body).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => this.decoder.push(&bytes),
                Poll::Ready(Some(Err(e))) => {
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => this.body_ended = true,
            }
        }
    }
}

enum Step {
    Continue,
    Complete,
}

/// Event → chunk translation state.
struct Translator {
    /// `{"id":…,"object":"chat.completion.chunk","created":…,"model":…,` — the same on every
    /// chunk, so escaped once.
    prefix: Vec<u8>,
    json_tool: bool,
    role_sent: bool,
    /// Bedrock `contentBlockIndex` → OpenAI tool-call index (`None`: the forced JSON tool,
    /// whose input is relayed as content).
    tool_blocks: Vec<(u64, Option<u32>)>,
    next_tool: u32,
    stop_reason: Option<String>,
    usage: Option<TokenUsage>,
}

#[derive(Deserialize)]
struct BlockStart {
    #[serde(rename = "contentBlockIndex", default)]
    index: u64,
    #[serde(default)]
    start: Option<StartUnion>,
}

#[derive(Deserialize)]
struct StartUnion {
    #[serde(rename = "toolUse", default)]
    tool_use: Option<ToolStart>,
}

#[derive(Deserialize)]
struct ToolStart {
    #[serde(rename = "toolUseId")]
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct BlockDelta<'a> {
    #[serde(rename = "contentBlockIndex", default)]
    index: u64,
    #[serde(borrow, default)]
    delta: Option<DeltaUnion<'a>>,
}

#[derive(Deserialize)]
struct DeltaUnion<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(rename = "toolUse", borrow, default)]
    tool_use: Option<ToolDelta<'a>>,
}

#[derive(Deserialize)]
struct ToolDelta<'a> {
    #[serde(borrow, default)]
    input: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct MessageStop {
    #[serde(rename = "stopReason", default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    usage: Option<TokenUsage>,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    delta: DeltaOut<'a>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
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

fn parse<'a, T: Deserialize<'a>>(event: &str, payload: &'a [u8]) -> Result<T, UpstreamErrorKind> {
    serde_json::from_slice(payload)
        .map_err(|e| UpstreamErrorKind::Protocol(format!("unreadable {event} event: {e}")))
}

impl Translator {
    fn new(identity: &Identity, json_tool: bool) -> Self {
        let mut prefix = Vec::with_capacity(128);
        prefix.extend_from_slice(b"{\"id\":");
        // Serialising a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut prefix, &identity.id);
        prefix.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        prefix.extend_from_slice(identity.created.to_string().as_bytes());
        prefix.extend_from_slice(b",\"model\":");
        let _ = serde_json::to_writer(&mut prefix, &identity.model);
        prefix.push(b',');
        Translator {
            prefix,
            json_tool,
            role_sent: false,
            tool_blocks: Vec::new(),
            next_tool: 0,
            stop_reason: None,
            usage: None,
        }
    }

    fn choice(&self, delta: DeltaOut<'_>, finish: Option<&'static str>) -> Bytes {
        let mut b = Vec::with_capacity(self.prefix.len() + 96);
        b.extend_from_slice(&self.prefix);
        b.extend_from_slice(b"\"choices\":[");
        let _ = serde_json::to_writer(
            &mut b,
            &ChoiceOut {
                index: 0,
                delta,
                finish_reason: finish,
            },
        );
        b.extend_from_slice(b"]}");
        Bytes::from(b)
    }

    fn ensure_role(&mut self, out: &mut VecDeque<Bytes>) {
        if !self.role_sent {
            self.role_sent = true;
            out.push_back(self.choice(
                DeltaOut {
                    role: Some("assistant"),
                    content: Some(""),
                    ..DeltaOut::default()
                },
                None,
            ));
        }
    }

    fn content(&mut self, text: &str, out: &mut VecDeque<Bytes>) {
        self.ensure_role(out);
        if !text.is_empty() {
            out.push_back(self.choice(
                DeltaOut {
                    content: Some(text),
                    ..DeltaOut::default()
                },
                None,
            ));
        }
    }

    /// The finish chunk, as soon as `messageStop` arrives.
    fn finish(&mut self, stop_reason: &str, out: &mut VecDeque<Bytes>) {
        let finish = finish_reason(stop_reason, self.json_tool);
        self.ensure_role(out);
        out.push_back(self.choice(DeltaOut::default(), Some(finish)));
    }

    /// The usage chunk once both `messageStop` and `metadata` arrived, so it always follows the
    /// finish chunk, whichever order Bedrock sent them in.
    fn try_complete(&mut self, out: &mut VecDeque<Bytes>) -> Step {
        let (Some(_), Some(usage)) = (&self.stop_reason, &self.usage) else {
            return Step::Continue;
        };
        let (_, wire) = convert_usage(usage);
        let mut b = Vec::with_capacity(self.prefix.len() + 160);
        b.extend_from_slice(&self.prefix);
        b.extend_from_slice(b"\"choices\":[],\"usage\":");
        let _ = serde_json::to_writer(&mut b, &wire);
        b.push(b'}');
        out.push_back(Bytes::from(b));
        Step::Complete
    }

    fn on_frame(
        &mut self,
        frame: &Frame,
        out: &mut VecDeque<Bytes>,
    ) -> Result<Step, UpstreamErrorKind> {
        if !frame.is_event() {
            // The same exception as a response would have carried, for classification.
            let body = match super::exception_status(frame) {
                UpstreamErrorKind::Status { body, .. } => body,
                _ => bytes::Bytes::new(),
            };
            return Err(UpstreamErrorKind::InStream {
                message: super::exception_message(frame),
                body,
            });
        }
        let event = frame.event_type.as_deref().unwrap_or("");
        let payload = &frame.payload[..];
        match event {
            "messageStart" => self.ensure_role(out),
            "contentBlockStart" => {
                let start: BlockStart = parse(event, payload)?;
                if let Some(tool) = start.start.and_then(|s| s.tool_use) {
                    if self.json_tool && tool.name == JSON_TOOL {
                        self.tool_blocks.push((start.index, None));
                        self.ensure_role(out);
                    } else {
                        let k = self.next_tool;
                        self.next_tool += 1;
                        self.tool_blocks.push((start.index, Some(k)));
                        self.ensure_role(out);
                        out.push_back(self.choice(
                            DeltaOut {
                                tool_calls: Some([ToolCallDelta {
                                    index: k,
                                    id: Some(&tool.id),
                                    kind: Some("function"),
                                    function: FunctionDelta {
                                        name: Some(&tool.name),
                                        arguments: "",
                                    },
                                }]),
                                ..DeltaOut::default()
                            },
                            None,
                        ));
                    }
                }
            }
            "contentBlockDelta" => {
                let d: BlockDelta<'_> = parse(event, payload)?;
                let Some(delta) = d.delta else {
                    return Ok(Step::Continue);
                };
                if let Some(text) = &delta.text {
                    self.content(text, out);
                }
                if let Some(input) = delta.tool_use.and_then(|t| t.input) {
                    let slot = self
                        .tool_blocks
                        .iter()
                        .find(|(i, _)| *i == d.index)
                        .map(|(_, k)| *k);
                    match slot {
                        Some(Some(k)) if !input.is_empty() => out.push_back(self.choice(
                            DeltaOut {
                                tool_calls: Some([ToolCallDelta {
                                    index: k,
                                    id: None,
                                    kind: None,
                                    function: FunctionDelta {
                                        name: None,
                                        arguments: &input,
                                    },
                                }]),
                                ..DeltaOut::default()
                            },
                            None,
                        )),
                        Some(None) => self.content(&input, out),
                        // Input for a block that never started (no id or name to give the
                        // client) or an empty fragment: nothing to relay.
                        _ => {}
                    }
                }
                // Reasoning, citation and other deltas have no OpenAI Chat representation.
            }
            "messageStop" => {
                if self.stop_reason.is_some() {
                    return Err(UpstreamErrorKind::Protocol(
                        "a second messageStop event".into(),
                    ));
                }
                let stop: MessageStop = parse(event, payload)?;
                let reason = stop.stop_reason.unwrap_or_default();
                self.finish(&reason, out);
                self.stop_reason = Some(reason);
                return Ok(self.try_complete(out));
            }
            "metadata" => {
                let meta: Metadata = parse(event, payload)?;
                self.usage = Some(meta.usage.ok_or_else(|| {
                    UpstreamErrorKind::Protocol("metadata event without usage".into())
                })?);
                return Ok(self.try_complete(out));
            }
            // contentBlockStop, and events added after API version 2023-09-30.
            _ => {}
        }
        Ok(Step::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::super::eventstream::encode;
    use super::*;
    use proptest::prelude::*;

    fn ev(kind: &str, payload: &str) -> Vec<u8> {
        encode(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.as_bytes(),
        )
    }

    fn identity() -> Identity {
        Identity {
            id: "chatcmpl-r1".into(),
            created: 1,
            model: "m".into(),
        }
    }

    fn tool_events() -> Vec<Vec<u8>> {
        vec![
            ev("messageStart", r#"{"p":"abc","role":"assistant"}"#),
            ev(
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":"Let me"}}"#,
            ),
            ev(
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":" check."}}"#,
            ),
            ev("contentBlockStop", r#"{"contentBlockIndex":0}"#),
            ev(
                "contentBlockStart",
                r#"{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"tooluse_1","name":"get_weather"}}}"#,
            ),
            ev(
                "contentBlockDelta",
                r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"city\":"}}}"#,
            ),
            ev(
                "contentBlockDelta",
                r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"\"Paris\"}"}}}"#,
            ),
            ev("contentBlockStop", r#"{"contentBlockIndex":1}"#),
            ev("messageStop", r#"{"stopReason":"tool_use"}"#),
            ev(
                "metadata",
                r#"{"usage":{"inputTokens":10,"outputTokens":5,"totalTokens":15,"cacheReadInputTokens":100},"metrics":{"latencyMs":9}}"#,
            ),
        ]
    }

    fn tool_stream() -> Vec<u8> {
        tool_events().concat()
    }

    fn run(parts: Vec<Vec<u8>>, json_tool: bool) -> Vec<Result<String, String>> {
        let body = futures_util::stream::iter(
            parts
                .into_iter()
                .map(|p| Ok::<_, UpstreamError>(Bytes::from(p))),
        );
        let s = ConverseStream::new("b", body, identity(), json_tool);
        // The body is an in-memory stream that is always ready: no runtime needed.
        futures_util::FutureExt::now_or_never(s.collect::<Vec<_>>())
            .unwrap()
            .into_iter()
            .map(|r| {
                r.map(|b| String::from_utf8(b.to_vec()).unwrap())
                    .map_err(|e| format!("{:?}", e.kind))
            })
            .collect()
    }

    #[test]
    fn translates_text_and_tool_calls() {
        let got = run(vec![tool_stream()], false);
        let p = r#"{"id":"chatcmpl-r1","object":"chat.completion.chunk","created":1,"model":"m","choices":["#;
        let want: Vec<Result<String, String>> = vec![
            format!(r#"{p}{{"index":0,"delta":{{"role":"assistant","content":""}},"finish_reason":null}}]}}"#),
            format!(r#"{p}{{"index":0,"delta":{{"content":"Let me"}},"finish_reason":null}}]}}"#),
            format!(r#"{p}{{"index":0,"delta":{{"content":" check."}},"finish_reason":null}}]}}"#),
            format!(r#"{p}{{"index":0,"delta":{{"tool_calls":[{{"index":0,"id":"tooluse_1","type":"function","function":{{"name":"get_weather","arguments":""}}}}]}},"finish_reason":null}}]}}"#),
            format!(r#"{p}{{"index":0,"delta":{{"tool_calls":[{{"index":0,"function":{{"arguments":"{{\"city\":"}}}}]}},"finish_reason":null}}]}}"#),
            format!(r#"{p}{{"index":0,"delta":{{"tool_calls":[{{"index":0,"function":{{"arguments":"\"Paris\"}}"}}}}]}},"finish_reason":null}}]}}"#),
            format!(r#"{p}{{"index":0,"delta":{{}},"finish_reason":"tool_calls"}}]}}"#),
            r#"{"id":"chatcmpl-r1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":110,"completion_tokens":5,"total_tokens":115,"prompt_tokens_details":{"cached_tokens":100,"cache_write_tokens":0}}}"#.to_string(),
        ]
        .into_iter()
        .map(Ok)
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn json_tool_is_relayed_as_content() {
        let body = [
            ev("messageStart", r#"{"role":"assistant"}"#),
            ev(
                "contentBlockStart",
                r#"{"contentBlockIndex":0,"start":{"toolUse":{"toolUseId":"t","name":"json_response"}}}"#,
            ),
            ev("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"toolUse":{"input":"{\"a\":1}"}}}"#),
            ev("messageStop", r#"{"stopReason":"tool_use"}"#),
            ev("metadata", r#"{"usage":{"inputTokens":1,"outputTokens":1,"totalTokens":2}}"#),
        ]
        .concat();
        let got = run(vec![body], true);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(
            got[1]
                .as_ref()
                .unwrap()
                .contains(r#""delta":{"content":"{\"a\":1}"}"#)
        );
        assert!(
            got[2]
                .as_ref()
                .unwrap()
                .contains(r#""finish_reason":"stop""#)
        );
    }

    #[test]
    fn ends_after_metadata_without_waiting_for_the_body_to_close() {
        let body = futures_util::stream::iter([Ok::<_, UpstreamError>(Bytes::from(tool_stream()))])
            .chain(futures_util::stream::pending());
        let s = ConverseStream::new("b", body, identity(), false);
        let got = futures_util::FutureExt::now_or_never(s.collect::<Vec<_>>())
            .expect("the stream ends although the body never does");
        assert_eq!(got.len(), 8);
        assert!(got.iter().all(Result::is_ok));
    }

    #[test]
    fn metadata_before_message_stop_still_completes_in_order() {
        let body = [
            ev(
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":"x"}}"#,
            ),
            ev(
                "metadata",
                r#"{"usage":{"inputTokens":1,"outputTokens":1,"totalTokens":2}}"#,
            ),
            ev("messageStop", r#"{"stopReason":"max_tokens"}"#),
        ]
        .concat();
        let got = run(vec![body], false);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got[0].as_ref().unwrap().contains(r#""role":"assistant""#));
        assert!(
            got[2]
                .as_ref()
                .unwrap()
                .contains(r#""finish_reason":"length""#)
        );
        assert!(got[3].as_ref().unwrap().contains(r#""choices":[],"usage""#));
    }

    #[test]
    fn cut_streams_and_exceptions_are_errors() {
        let full = tool_stream();
        // Ends after messageStop: no metadata.
        let events = tool_events();
        let upto_stop = events[..events.len() - 1].concat();
        let got = run(vec![upto_stop], false);
        assert!(
            got.last().unwrap().as_ref().unwrap_err().contains("Broken"),
            "{got:?}"
        );
        // Ends in the middle of a frame.
        let got = run(vec![full[..full.len() - 3].to_vec()], false);
        assert!(
            got.last()
                .unwrap()
                .as_ref()
                .unwrap_err()
                .contains("inside a message"),
            "{got:?}"
        );
        // An exception frame mid-stream.
        let body = [
            ev("messageStart", r#"{"role":"assistant"}"#),
            encode(
                &[
                    (":exception-type", "modelStreamErrorException"),
                    (":content-type", "application/json"),
                    (":message-type", "exception"),
                ],
                br#"{"message":"boom"}"#,
            ),
        ]
        .concat();
        let got = run(vec![body], false);
        assert_eq!(got.len(), 2);
        let e = got[1].as_ref().unwrap_err();
        assert!(
            e.contains("InStream") && e.contains("modelStreamErrorException: boom"),
            "{e}"
        );
    }

    proptest! {
        /// The chunks do not depend on how the body was split across reads.
        #[test]
        fn split_invariant(cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..16)) {
            let input = tool_stream();
            let whole = run(vec![input.clone()], false);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            cuts.sort_unstable();
            let mut parts = Vec::new();
            let mut last = 0;
            for c in cuts {
                parts.push(input[last..c].to_vec());
                last = c;
            }
            parts.push(input[last..].to_vec());
            prop_assert_eq!(run(parts, false), whole);
        }
    }
}
