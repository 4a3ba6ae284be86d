//! Metering of native Anthropic Messages streams (`/v1/messages` served by an Anthropic
//! deployment, passed through without translation).
//!
//! Events are relayed exactly as the provider sent them (`event: <name>\ndata: <json>\n\n`).
//! Usage comes from the events themselves: `message_start` carries input and cache tokens,
//! `message_delta` the **cumulative** output tokens (and, on newer API versions, final input
//! counts); the Anthropic adapter's `UsageTracker` reads them and converts Anthropic's
//! exclusive cache semantics to canonical ones.
//!
//! **Output cap.** With [`MeterOptions::output_cap`] set (the output tokens a hard budget
//! reserved), the text of every `content_block_delta` (`text`, `partial_json` and `thinking`
//! deltas) is counted with [`MeterOptions::encoding`] as it arrives. An event whose relay would
//! take the count past the cap is not relayed; the stream is ended cleanly in Anthropic's own
//! shape instead — `content_block_stop` for the block that is open (if any),
//! `message_delta` with `stop_reason: "max_tokens"` and the output tokens relayed, then
//! `message_stop` — and the upstream body is dropped at once (cancelling generation). The
//! settlement is [`Outcome::Ok`] with `cut_at_cap`, `finish_reason: "max_tokens"`, the input
//! and cache counts `message_start` reported plus the locally counted output, flagged
//! [`UsageSource::Estimated`].
//!
//! **Invariant:** the settle callback runs exactly once, as for [`crate::MeteredStream`]: at
//! the upstream's end (`Ok`), at an upstream error (`Failed`, after an `error` event), at the
//! cap (`Ok`, `cut_at_cap`), or in `Drop` when the client went away first (`Cancelled`).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use serde_json::Value;
use tollgate_providers::anthropic::UsageTracker;
use tollgate_providers::{EventStream, UpstreamError};
use tollgate_tokens as tokens;
use tollgate_types::{ApiError, Outcome, Usage, UsageSource};

use crate::meter::{MeterOptions, Settlement};

type SettleFn = Box<dyn FnOnce(Settlement) + Send>;

/// The `stop_reason` (and settled `finish_reason`) of a stream ended at the output cap.
pub const CUT_STOP_REASON: &str = "max_tokens";

/// A native Anthropic Messages event stream, relayed untouched, metered, cut at the budget's
/// output cap, and settled exactly once (see the module docs).
pub struct MeteredEvents {
    inner: EventStream,
    opts: MeterOptions,
    on_settle: Option<SettleFn>,
    tracker: UsageTracker,
    saw_start: bool,
    saw_delta_usage: bool,
    output_text: String,
    stop_reason: Option<String>,
    first_byte_at: Option<Instant>,
    events: u64,
    /// Output tokens relayed so far, counted delta by delta (only when there is a cap).
    live_output_tokens: u64,
    /// The part of `live_output_tokens` that came from `thinking` deltas.
    live_thinking_tokens: u64,
    /// The index of the content block started and not yet stopped.
    open_block: Option<u64>,
    cut_at_cap: bool,
    done: bool,
}

/// What one upstream event means for the relay.
enum Step {
    Relay,
    /// Relaying it would pass the output cap.
    Cut,
}

impl MeteredEvents {
    pub fn new(
        inner: EventStream,
        opts: MeterOptions,
        on_settle: impl FnOnce(Settlement) + Send + 'static,
    ) -> Self {
        MeteredEvents {
            inner,
            opts,
            on_settle: Some(Box::new(on_settle)),
            tracker: UsageTracker::new(),
            saw_start: false,
            saw_delta_usage: false,
            output_text: String::new(),
            stop_reason: None,
            first_byte_at: None,
            events: 0,
            live_output_tokens: 0,
            live_thinking_tokens: 0,
            open_block: None,
            cut_at_cap: false,
            done: false,
        }
    }

    fn settle(&mut self, outcome: Outcome, error: Option<ApiError>) {
        let Some(f) = self.on_settle.take() else {
            return;
        };
        let (usage, source) = if self.cut_at_cap {
            (self.cut_usage(), UsageSource::Estimated)
        } else if self.saw_start && self.saw_delta_usage {
            (
                self.tracker.usage().unwrap_or_default(),
                UsageSource::Provider,
            )
        } else {
            // Cut before the final counts: keep what the provider said, count the rest.
            let mut u = self.reported_input();
            u.output_tokens = u
                .output_tokens
                .max(self.opts.encoding.count(&self.output_text));
            (u, UsageSource::Estimated)
        };
        f(Settlement {
            outcome,
            usage,
            usage_source: source,
            error,
            first_byte_at: self.first_byte_at,
            finish_reason: self.stop_reason.take(),
            chunks_relayed: self.events,
            cut_at_cap: self.cut_at_cap,
        });
    }

    /// What the provider reported so far, with the prompt counted locally when
    /// `message_start` never said.
    fn reported_input(&self) -> Usage {
        let mut u = self.tracker.usage().unwrap_or_default();
        if !self.saw_start {
            u.input_tokens = tokens::count_chat_prompt_map(self.opts.encoding, &self.opts.request);
        }
        u
    }

    /// Usage of a stream ended at the cap: the input side as reported, the output relayed.
    fn cut_usage(&self) -> Usage {
        Usage {
            output_tokens: self.live_output_tokens,
            reasoning_tokens: self.live_thinking_tokens,
            ..self.reported_input()
        }
    }

    fn observe(&mut self, ev: &tollgate_providers::sse::Event) -> Step {
        self.tracker.observe(ev);
        let Ok(v) = serde_json::from_slice::<Value>(&ev.data) else {
            return Step::Relay;
        };
        let kind = ev
            .event
            .as_deref()
            .or_else(|| v.get("type").and_then(Value::as_str));
        match kind {
            Some("message_start") => {
                self.saw_start |= v.get("message").and_then(|m| m.get("usage")).is_some();
            }
            Some("message_delta") => {
                self.saw_delta_usage |= v.get("usage").is_some();
                if let Some(r) = v
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.stop_reason = Some(r.to_string());
                }
            }
            Some("content_block_start") => {
                self.open_block = Some(v.get("index").and_then(Value::as_u64).unwrap_or(0));
            }
            Some("content_block_stop") => {
                self.open_block = None;
            }
            Some("content_block_delta") => {
                let Some(d) = v.get("delta") else {
                    return Step::Relay;
                };
                let before = self.output_text.len();
                let mut thinking = 0;
                for k in ["text", "partial_json", "thinking"] {
                    if let Some(t) = d.get(k).and_then(Value::as_str) {
                        self.output_text.push_str(t);
                        if k == "thinking" && self.opts.output_cap.is_some() {
                            thinking += self.opts.encoding.count(t);
                        }
                    }
                }
                if let Some(cap) = self.opts.output_cap {
                    let added = self.opts.encoding.count(&self.output_text[before..]);
                    if self.live_output_tokens.saturating_add(added) > cap {
                        self.output_text.truncate(before);
                        return Step::Cut;
                    }
                    self.live_output_tokens += added;
                    self.live_thinking_tokens += thinking.min(added);
                }
            }
            _ => {}
        }
        Step::Relay
    }

    /// Ends the stream at the cap: closes the open block, reports `max_tokens` with the output
    /// relayed, stops, settles, and lets go of the upstream.
    fn cut(&mut self) -> BytesMut {
        self.done = true;
        self.cut_at_cap = true;
        self.stop_reason = Some(CUT_STOP_REASON.to_string());
        // Dropping the upstream body closes its connection: generation stops now, not when
        // the client's response is dropped.
        self.inner = Box::pin(futures_util::stream::empty());
        let mut out = BytesMut::new();
        if let Some(index) = self.open_block.take() {
            let stop = serde_json::json!({"type": "content_block_stop", "index": index});
            put_event(&mut out, "content_block_stop", stop.to_string().as_bytes());
        }
        let delta = serde_json::json!({
            "type": "message_delta",
            "delta": {"stop_reason": CUT_STOP_REASON, "stop_sequence": null},
            "usage": {"output_tokens": self.live_output_tokens},
        });
        put_event(&mut out, "message_delta", delta.to_string().as_bytes());
        put_event(&mut out, "message_stop", br#"{"type":"message_stop"}"#);
        self.settle(Outcome::Ok, None);
        out
    }

    fn emit(&mut self, out: BytesMut) -> Poll<Option<Result<Bytes, std::convert::Infallible>>> {
        if self.first_byte_at.is_none() {
            self.first_byte_at = Some(Instant::now());
        }
        Poll::Ready(Some(Ok(out.freeze())))
    }
}

/// `event: <name>\ndata: <json>\n\n` (a multi-line `data` one `data:` line per line, see
/// [`crate::meter::put_sse_frame`]).
pub fn put_event(out: &mut BytesMut, event: &str, data: &[u8]) {
    out.reserve(event.len() + data.len() + 16);
    out.put_slice(b"event: ");
    out.put_slice(event.as_bytes());
    out.put_slice(b"\n");
    crate::meter::put_data(out, data);
    out.put_slice(b"\n");
}

impl Stream for MeteredEvents {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(ev))) => {
                this.events += 1;
                let out = match this.observe(&ev) {
                    Step::Relay => {
                        let name = ev.event.as_deref().unwrap_or("message");
                        let mut out = BytesMut::new();
                        put_event(&mut out, name, &ev.data);
                        out
                    }
                    Step::Cut => this.cut(),
                };
                this.emit(out)
            }
            Poll::Ready(Some(Err(e))) => {
                let secrets: Vec<&str> = this.opts.secrets.iter().map(String::as_str).collect();
                let api = upstream_api_error(&e, &secrets);
                let body = serde_json::json!({
                    "type": "error",
                    "error": {"type": "api_error", "message": format!("{} [{}]", api.message, api.code.as_str())},
                });
                let mut out = BytesMut::new();
                put_event(&mut out, "error", body.to_string().as_bytes());
                this.done = true;
                this.settle(Outcome::Failed, Some(api));
                this.emit(out)
            }
            Poll::Ready(None) => {
                this.done = true;
                this.settle(Outcome::Ok, None);
                Poll::Ready(None)
            }
        }
    }
}

fn upstream_api_error(e: &UpstreamError, secrets: &[&str]) -> ApiError {
    e.to_api_error(secrets)
}

impl Drop for MeteredEvents {
    fn drop(&mut self) {
        // Only reached with a pending settlement when the client left before the end.
        self.settle(Outcome::Cancelled, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::sync::{Arc, Mutex};
    use tollgate_providers::sse::Event;

    fn ev(name: &str, data: &str) -> Result<Event, UpstreamError> {
        Ok(Event {
            event: Some(name.into()),
            data: Bytes::from(data.to_string()),
        })
    }

    fn opts() -> MeterOptions {
        MeterOptions {
            encoding: tokens::Encoding::Approximate,
            request: Arc::new(
                serde_json::from_str(r#"{"messages":[{"role":"user","content":"hi"}]}"#).unwrap(),
            ),
            secrets: Arc::from(Vec::<String>::new()),
            output_cap: None,
        }
    }

    #[tokio::test]
    async fn relays_events_and_reads_exclusive_usage() {
        let events = vec![
            ev(
                "message_start",
                r#"{"type":"message_start","message":{"usage":{"input_tokens":10,"cache_read_input_tokens":50,"cache_creation_input_tokens":5,"output_tokens":1}}}"#,
            ),
            ev(
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
            ),
            ev(
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":12}}"#,
            ),
            ev("message_stop", r#"{"type":"message_stop"}"#),
        ];
        let got = Arc::new(Mutex::new(None));
        let g2 = got.clone();
        let s = MeteredEvents::new(
            Box::pin(futures_util::stream::iter(events)),
            opts(),
            move |s| {
                *g2.lock().unwrap() = Some(s);
            },
        );
        let out: Vec<Bytes> = s.map(|r| r.unwrap()).collect().await;
        let text: String = out
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        assert!(text.starts_with("event: message_start\ndata: "));
        assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
        let s = got.lock().unwrap().clone().unwrap();
        assert_eq!(s.usage_source, UsageSource::Provider);
        assert_eq!(s.usage.input_tokens, 65);
        assert_eq!(s.usage.cached_input_tokens, 50);
        assert_eq!(s.usage.cache_write_input_tokens, 5);
        assert_eq!(s.usage.output_tokens, 12);
        assert_eq!(s.finish_reason.as_deref(), Some("end_turn"));
    }

    #[tokio::test]
    async fn cut_stream_is_estimated_and_failed() {
        let events = vec![
            ev(
                "message_start",
                r#"{"type":"message_start","message":{"usage":{"input_tokens":10,"output_tokens":1}}}"#,
            ),
            ev(
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello there friend"}}"#,
            ),
            Err(UpstreamError::new(
                "a",
                tollgate_providers::UpstreamErrorKind::Broken("cut".into()),
            )),
        ];
        let got = Arc::new(Mutex::new(None));
        let g2 = got.clone();
        let s = MeteredEvents::new(
            Box::pin(futures_util::stream::iter(events)),
            opts(),
            move |s| {
                *g2.lock().unwrap() = Some(s);
            },
        );
        let out: Vec<Bytes> = s.map(|r| r.unwrap()).collect().await;
        assert!(String::from_utf8_lossy(out.last().unwrap()).starts_with("event: error"));
        let s = got.lock().unwrap().clone().unwrap();
        assert_eq!(s.outcome, Outcome::Failed);
        assert_eq!(s.usage_source, UsageSource::Estimated);
        assert_eq!(s.usage.input_tokens, 10);
        assert!(s.usage.output_tokens >= 3);
    }

    // ---- the output cap ----

    use std::sync::atomic::{AtomicBool, Ordering};

    const START: &str = r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"cache_read_input_tokens":50,"cache_creation_input_tokens":5,"output_tokens":1}}}"#;
    const TEXT_START: &str =
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#;
    const PING: &str = r#"{"type": "ping"}"#;
    /// One token in `o200k_base`.
    const HELLO: &str =
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" hello"}}"#;
    const EMPTY: &str =
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}"#;
    const TEXT_STOP: &str = r#"{"type":"content_block_stop","index":0}"#;
    const END: &str = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":5}}"#;
    const STOP: &str = r#"{"type":"message_stop"}"#;

    fn capped(cap: u64) -> MeterOptions {
        MeterOptions {
            encoding: tokens::Encoding::O200k,
            output_cap: Some(cap),
            ..opts()
        }
    }

    fn wire(events: &[(&str, &str)]) -> String {
        events
            .iter()
            .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
            .collect()
    }

    fn upstream(events: &[(&'static str, &'static str)]) -> Vec<Result<Event, UpstreamError>> {
        events.iter().map(|(n, d)| ev(n, d)).collect()
    }

    /// The text answer: five one-token deltas.
    fn text_answer() -> Vec<(&'static str, &'static str)> {
        let mut e = vec![
            ("message_start", START),
            ("content_block_start", TEXT_START),
            ("ping", PING),
        ];
        e.extend([("content_block_delta", HELLO); 5]);
        e.extend([
            ("content_block_stop", TEXT_STOP),
            ("message_delta", END),
            ("message_stop", STOP),
        ]);
        e
    }

    use crate::test_support::capture;

    async fn relay(
        events: Vec<Result<Event, UpstreamError>>,
        o: MeterOptions,
    ) -> (String, Settlement) {
        let (settled, f) = capture();
        let s = MeteredEvents::new(Box::pin(futures_util::stream::iter(events)), o, f);
        let out: Vec<Bytes> = s.map(|r| r.unwrap()).collect().await;
        let text = out
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        let s = settled.lock().unwrap();
        assert_eq!(s.len(), 1, "settled exactly once");
        (text, s[0].clone())
    }

    /// The `anthropic` fuzz target's minimal input `data\ndata` is an unnamed event whose data
    /// is "\n"; relayed as one `data:` line, the client read "". Each line is now its own.
    #[tokio::test]
    async fn multi_line_event_data_is_relayed_whole() {
        let events = vec![Ok(Event {
            event: None,
            data: Bytes::from_static(b"\n"),
        })];
        let (text, _) = relay(events, opts()).await;
        assert_eq!(text, "event: message\ndata: \ndata: \n\n");
        let mut out = BytesMut::new();
        put_event(&mut out, "e", b"{\n\"a\": 1\n}");
        assert_eq!(&out[..], b"event: e\ndata: {\ndata: \"a\": 1\ndata: }\n\n");
    }

    fn cut_tail(index: Option<u64>, output_tokens: u64) -> String {
        let mut t = String::new();
        if let Some(i) = index {
            t += &format!(
                "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":{i}}}\n\n"
            );
        }
        t += &format!(
            "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"max_tokens\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{output_tokens}}}}}\n\n"
        );
        t += "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        t
    }

    fn assert_cut(s: &Settlement, output_tokens: u64) {
        assert_eq!(s.outcome, Outcome::Ok);
        assert!(s.cut_at_cap);
        assert_eq!(s.finish_reason.as_deref(), Some("max_tokens"));
        assert_eq!(s.usage_source, UsageSource::Estimated);
        assert!(s.error.is_none());
        // Input side as message_start reported it (exclusive → canonical), output counted.
        assert_eq!(s.usage.input_tokens, 65);
        assert_eq!(s.usage.cached_input_tokens, 50);
        assert_eq!(s.usage.cache_write_input_tokens, 5);
        assert_eq!(s.usage.output_tokens, output_tokens);
    }

    #[tokio::test]
    async fn cap_cuts_in_the_middle_of_a_text_block() {
        let all = text_answer();
        let (out, s) = relay(upstream(&all), capped(3)).await;
        // Everything up to the third delta, byte for byte, then the cut in Anthropic's shape.
        let expected = wire(&all[..6]) + &cut_tail(Some(0), 3);
        assert_eq!(out, expected);
        assert!(!out.contains("end_turn"));
        assert_cut(&s, 3);
        assert_eq!(s.usage.reasoning_tokens, 0);
    }

    #[tokio::test]
    async fn cap_cuts_inside_a_tool_use_block() {
        const TOOL_START: &str = r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{}}}"#;
        const J1: &str = r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": "}}"#;
        const J2: &str = r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"Paris, France"}}"#;
        const J3: &str = r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\", \"unit\": \"celsius\"}"}}"#;
        const TOOL_STOP: &str = r#"{"type":"content_block_stop","index":1}"#;
        let enc = tokens::Encoding::O200k;
        let (j1, j2) = (enc.count(r#"{"city": "#), enc.count(r#""Paris, France"#));
        assert!(enc.count(r#"", "unit": "celsius"}"#) > 0);
        let all = vec![
            ("message_start", START),
            ("content_block_start", TEXT_START),
            ("ping", PING),
            ("content_block_delta", HELLO),
            ("content_block_stop", TEXT_STOP),
            ("content_block_start", TOOL_START),
            ("content_block_delta", J1),
            ("content_block_delta", J2),
            ("content_block_delta", J3),
            ("content_block_stop", TOOL_STOP),
            ("message_delta", END),
            ("message_stop", STOP),
        ];
        let cap = 1 + j1 + j2;
        let (out, s) = relay(upstream(&all), capped(cap)).await;
        assert_eq!(out, wire(&all[..8]) + &cut_tail(Some(1), cap));
        assert_cut(&s, cap);
    }

    #[tokio::test]
    async fn a_cap_never_reached_changes_nothing() {
        let all = text_answer();
        // Exactly the answer's length: reached, never passed.
        for cap in [5, 6, 1_000] {
            let (out, s) = relay(upstream(&all), capped(cap)).await;
            assert_eq!(out, wire(&all), "cap {cap}");
            assert_eq!(s.outcome, Outcome::Ok);
            assert!(!s.cut_at_cap);
            assert_eq!(s.usage_source, UsageSource::Provider);
            assert_eq!(s.finish_reason.as_deref(), Some("end_turn"));
            assert_eq!(s.usage.input_tokens, 65);
            assert_eq!(s.usage.output_tokens, 5, "the provider's count is kept");
        }
    }

    #[tokio::test]
    async fn a_cap_of_zero_ends_at_the_first_token() {
        let mut all = text_answer();
        // An empty delta costs nothing and is relayed.
        all.insert(3, ("content_block_delta", EMPTY));
        let (out, s) = relay(upstream(&all), capped(0)).await;
        assert_eq!(out, wire(&all[..4]) + &cut_tail(Some(0), 0));
        assert_cut(&s, 0);

        // Cap zero, and the first content comes before any block was started (a malformed
        // upstream): no block to close.
        let odd = vec![("message_start", START), ("content_block_delta", HELLO)];
        let (out, s) = relay(upstream(&odd), capped(0)).await;
        assert_eq!(out, wire(&odd[..1]) + &cut_tail(None, 0));
        assert_cut(&s, 0);
    }

    #[tokio::test]
    async fn thinking_counts_towards_the_cap_and_as_reasoning() {
        const THINK_START: &str = r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#;
        const THINK: &str = r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":" hello"}}"#;
        let all = vec![
            ("message_start", START),
            ("content_block_start", THINK_START),
            ("content_block_delta", THINK),
            ("content_block_delta", THINK),
            ("content_block_delta", THINK),
        ];
        let (out, s) = relay(upstream(&all), capped(2)).await;
        assert_eq!(out, wire(&all[..4]) + &cut_tail(Some(0), 2));
        assert_cut(&s, 2);
        assert_eq!(s.usage.reasoning_tokens, 2);
    }

    #[tokio::test]
    async fn without_message_start_the_prompt_is_counted_locally() {
        let all = vec![
            ("content_block_start", TEXT_START),
            ("content_block_delta", HELLO),
            ("content_block_delta", HELLO),
        ];
        let (out, s) = relay(upstream(&all), capped(1)).await;
        assert_eq!(out, wire(&all[..2]) + &cut_tail(Some(0), 1));
        assert!(s.cut_at_cap);
        assert_eq!(s.usage.output_tokens, 1);
        assert_eq!(
            s.usage.input_tokens,
            tokens::count_chat_prompt_map(tokens::Encoding::O200k, &opts().request)
        );
    }

    /// An upstream that records when it is dropped, and would fail if polled past its events.
    struct Upstream {
        events: std::vec::IntoIter<Result<Event, UpstreamError>>,
        dropped: Arc<AtomicBool>,
    }

    impl Stream for Upstream {
        type Item = Result<Event, UpstreamError>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(self.events.next())
        }
    }

    impl Drop for Upstream {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_cut_settles_exactly_once_and_lets_go_of_the_upstream() {
        let mut events = upstream(&text_answer());
        // Were the stream polled past the cut, this error would settle it a second time.
        events.insert(
            5,
            Err(UpstreamError::new(
                "a",
                tollgate_providers::UpstreamErrorKind::Broken("after the cut".into()),
            )),
        );
        let dropped = Arc::new(AtomicBool::new(false));
        let (settled, f) = capture();
        let mut s = MeteredEvents::new(
            Box::pin(Upstream {
                events: events.into_iter(),
                dropped: dropped.clone(),
            }),
            capped(1),
            f,
        );
        let mut out = String::new();
        while let Some(Ok(b)) = s.next().await {
            out.push_str(&String::from_utf8_lossy(&b));
        }
        assert!(out.ends_with(&cut_tail(Some(0), 1)), "{out}");
        assert!(
            dropped.load(Ordering::SeqCst),
            "upstream dropped at the cut"
        );
        assert_eq!(settled.lock().unwrap().len(), 1);
        // Polling again after the end, then dropping, settles nothing more.
        assert!(s.next().await.is_none());
        assert!(s.next().await.is_none());
        drop(s);
        let settled = settled.lock().unwrap();
        assert_eq!(settled.len(), 1);
        assert_cut(&settled[0], 1);
    }

    #[tokio::test]
    async fn dropped_before_the_cap_settles_cancelled_once() {
        let (settled, f) = capture();
        let mut s = MeteredEvents::new(
            Box::pin(futures_util::stream::iter(upstream(&text_answer()))),
            capped(3),
            f,
        );
        for _ in 0..5 {
            s.next().await;
        }
        drop(s);
        let settled = settled.lock().unwrap();
        assert_eq!(settled.len(), 1);
        assert_eq!(settled[0].outcome, Outcome::Cancelled);
        assert!(!settled[0].cut_at_cap);
        assert_eq!(settled[0].usage.output_tokens, 2);
        assert_eq!(settled[0].usage_source, UsageSource::Estimated);
    }
}
