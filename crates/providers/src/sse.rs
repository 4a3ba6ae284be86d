//! Server-sent events decoding (upstream side).
//!
//! A small incremental decoder rather than a dependency: it is on the hot path of every streamed
//! token, and it only needs the parts of the SSE spec providers use — `data:` (possibly several
//! lines per event), `event:`, comments, and `\n`, `\r\n` or `\r` line ends. Bytes are buffered
//! only until an event is complete; each complete event is handed out as soon as its blank line
//! arrives, so chunks are never held back.

use bytes::{Buf, Bytes, BytesMut};

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, when present (Anthropic and Responses use it; OpenAI chat does not).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: Bytes,
}

/// Largest event accepted. A provider that sends more without a blank line is broken.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
    event: Option<String>,
    data: BytesMut,
    has_data: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("server-sent event larger than {MAX_EVENT_BYTES} bytes")]
pub struct EventTooLarge;

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; appends every event they complete to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Event>) -> Result<(), EventTooLarge> {
        self.buf.extend_from_slice(bytes);
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n' || b == b'\r') {
            // A lone '\r' at the end of the buffer may be the first half of "\r\n".
            if self.buf[pos] == b'\r' && pos + 1 == self.buf.len() {
                break;
            }
            let line = self.buf.split_to(pos);
            let skip = if self.buf[0] == b'\r' && self.buf.get(1) == Some(&b'\n') {
                2
            } else {
                1
            };
            self.buf.advance(skip);
            self.line(&line, out);
        }
        if self.buf.len() + self.data.len() > MAX_EVENT_BYTES {
            return Err(EventTooLarge);
        }
        Ok(())
    }

    /// Ends the input: a final event not followed by a blank line is still delivered (some
    /// servers close right after the last `data:` line).
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        if !self.buf.is_empty() {
            let mut line = std::mem::take(&mut self.buf);
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            self.line(&line, out);
        }
        self.dispatch(out);
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<Event>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.extend_from_slice(b"\n");
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Event>) {
        if self.has_data {
            out.push(Event {
                event: self.event.take(),
                data: self.data.split().freeze(),
            });
        } else {
            self.event = None;
        }
        self.has_data = false;
    }
}

/// Reads a timed upstream body into server-sent events as they complete. The one place the
/// SSE-speaking adapters (OpenAI, Anthropic, Gemini) turn bytes into events; each adapter then
/// decides what an event means and whether the body ended too early.
pub struct EventPump {
    provider: std::sync::Arc<str>,
    body: crate::http::TimedBody,
    decoder: Decoder,
    ended: bool,
}

impl EventPump {
    pub fn new(provider: std::sync::Arc<str>, body: crate::http::TimedBody) -> Self {
        EventPump {
            provider,
            body,
            decoder: Decoder::new(),
            ended: false,
        }
    }

    /// True once the body has ended and every event it held was handed out.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Reads more of the body: appends the events it completes to `out` (possibly none), or
    /// marks the body ended. An error is a broken or timed-out body, or an oversized event.
    pub fn poll_fill(
        &mut self,
        cx: &mut std::task::Context<'_>,
        out: &mut std::collections::VecDeque<Event>,
    ) -> std::task::Poll<Result<(), crate::UpstreamError>> {
        use futures_util::Stream;
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.body).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(bytes))) => {
                let mut events = Vec::new();
                if self.decoder.push(&bytes, &mut events).is_err() {
                    return Poll::Ready(Err(crate::UpstreamError::new(
                        &self.provider,
                        crate::UpstreamErrorKind::Protocol("server-sent event too large".into()),
                    )));
                }
                out.extend(events);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Err(e)),
            Poll::Ready(None) => {
                let mut events = Vec::new();
                self.decoder.finish(&mut events);
                out.extend(events);
                self.ended = true;
                Poll::Ready(Ok(()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(parts: &[&[u8]]) -> Vec<Event> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for p in parts {
            d.push(p, &mut out).unwrap();
        }
        d.finish(&mut out);
        out
    }

    #[test]
    fn basic_events() {
        let ev = decode_all(&[b"data: {\"a\":1}\n\ndata: [DONE]\n\n"]);
        assert_eq!(ev.len(), 2);
        assert_eq!(&ev[0].data[..], b"{\"a\":1}");
        assert_eq!(&ev[1].data[..], b"[DONE]");
    }

    #[test]
    fn crlf_comments_event_names_multiline() {
        let ev = decode_all(&[b": ping\r\nevent: message_start\r\ndata: a\r\ndata: b\r\n\r\n"]);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].event.as_deref(), Some("message_start"));
        assert_eq!(&ev[0].data[..], b"a\nb");
    }

    #[test]
    fn unterminated_last_event_is_delivered() {
        let ev = decode_all(&[b"data: x"]);
        assert_eq!(ev.len(), 1);
        assert_eq!(&ev[0].data[..], b"x");
    }

    proptest! {
        /// However the byte stream is split, the decoded events are the same.
        #[test]
        fn split_invariant(splits in proptest::collection::vec(0usize..120, 0..8)) {
            let input: &[u8] = b"data: {\"x\":\"one\"}\r\n\r\nevent: e\ndata: two\ndata: lines\n\n: c\ndata: [DONE]\n\n";
            let whole = decode_all(&[input]);
            let mut cuts: Vec<usize> = splits.into_iter().map(|s| s % (input.len() + 1)).collect();
            cuts.sort_unstable();
            let mut parts = Vec::new();
            let mut last = 0;
            for c in cuts { parts.push(&input[last..c]); last = c; }
            parts.push(&input[last..]);
            prop_assert_eq!(decode_all(&parts), whole);
        }
    }
}
