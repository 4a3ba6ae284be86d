//! Metering of native Anthropic Messages streams (`/v1/messages` served by an Anthropic
//! deployment, passed through without translation).
//!
//! Events are relayed exactly as the provider sent them. Usage comes from the events
//! themselves: `message_start` carries input and cache tokens, `message_delta` the
//! **cumulative** output tokens (and, on newer API versions, final input counts); the
//! Anthropic adapter's `UsageTracker` reads them and converts Anthropic's exclusive cache
//! semantics to canonical ones. The settle-once invariant is the same as
//! [`crate::MeteredStream`]'s.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use serde_json::Value;
use tollgate_providers::anthropic::UsageTracker;
use tollgate_providers::{EventStream, UpstreamError};
use tollgate_types::{ApiError, Outcome, UsageSource};

use crate::meter::{MeterOptions, Settlement};
use tollgate_tokens as tokens;

type SettleFn = Box<dyn FnOnce(Settlement) + Send>;

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
    done: bool,
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
            done: false,
        }
    }

    fn settle(&mut self, outcome: Outcome, error: Option<ApiError>) {
        let Some(f) = self.on_settle.take() else {
            return;
        };
        let reported = self.tracker.usage().unwrap_or_default();
        let (usage, source) = if self.saw_start && self.saw_delta_usage {
            (reported, UsageSource::Provider)
        } else {
            // Cut before the final counts: keep what the provider said, count the rest.
            let mut u = reported;
            if !self.saw_start {
                u.input_tokens =
                    tokens::count_chat_prompt_map(self.opts.encoding, &self.opts.request);
            }
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
            cut_at_cap: false,
        });
    }

    fn observe(&mut self, ev: &tollgate_providers::sse::Event) {
        self.tracker.observe(ev);
        let Ok(v) = serde_json::from_slice::<Value>(&ev.data) else {
            return;
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
            Some("content_block_delta") => {
                if let Some(d) = v.get("delta") {
                    for k in ["text", "partial_json", "thinking"] {
                        if let Some(t) = d.get(k).and_then(Value::as_str) {
                            self.output_text.push_str(t);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn emit(&mut self, out: BytesMut) -> Poll<Option<Result<Bytes, std::convert::Infallible>>> {
        if self.first_byte_at.is_none() {
            self.first_byte_at = Some(Instant::now());
        }
        Poll::Ready(Some(Ok(out.freeze())))
    }
}

/// `event: <name>\ndata: <json>\n\n`.
pub fn put_event(out: &mut BytesMut, event: &str, data: &[u8]) {
    out.reserve(event.len() + data.len() + 16);
    out.put_slice(b"event: ");
    out.put_slice(event.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(data);
    out.put_slice(b"\n\n");
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
                this.observe(&ev);
                let name = ev.event.clone().unwrap_or_else(|| "message".into());
                let mut out = BytesMut::new();
                put_event(&mut out, &name, &ev.data);
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
}
