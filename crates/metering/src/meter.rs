//! The metered stream: relays canonical chunks to the client one by one, and settles exactly
//! once.
//!
//! Per chunk it peeks at the JSON (never re-serialises it), keeps provider usage when a chunk
//! carries it, and remembers the generated text (for an estimate if usage never comes). What the
//! client receives is decided by a [`Renderer`]: [`OpenAiRenderer`] frames each chunk as an SSE
//! `data:` event and drops the usage-only chunk when the client did not ask for
//! `include_usage` (the OpenAI adapter always asks upstream); the Anthropic ingress renders the
//! same chunks as Messages events. Metering stays in one place whatever the client's format.
//!
//! **Invariant:** the settle callback runs exactly once — at the upstream's end of stream
//! (`Outcome::Ok`), at an upstream error (`Outcome::Failed`, after an error event in the
//! client's format), or in `Drop` when the client went away first (`Outcome::Cancelled`);
//! dropping the stream drops the upstream body, which closes the upstream connection and so
//! cancels generation. A stream that ended without provider usage is settled with locally
//! counted tokens, flagged [`UsageSource::Estimated`] — never as zero.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use serde_json::{Map, Value};
use tollgate_providers::{ChunkStream, UpstreamError};
use tollgate_types::canonical::ChunkPeek;
use tollgate_types::{ApiError, Outcome, Usage, UsageSource};

use tollgate_tokens::{self as tokens, Encoding};

/// Turns canonical chunks into the bytes the client's wire format expects.
pub trait Renderer: Send + 'static {
    /// One canonical chunk (`peek` is `None` if it was not readable JSON).
    fn chunk(&mut self, raw: &[u8], peek: Option<&ChunkPeek<'_>>, out: &mut BytesMut);
    /// The upstream failed after the response started.
    fn error(&mut self, error: &ApiError, out: &mut BytesMut);
    /// The upstream finished; `usage` is what the provider reported, if anything.
    fn done(&mut self, usage: Option<&Usage>, out: &mut BytesMut);
    /// The stream reached the budget's output cap: end it as if the model had stopped at
    /// its token limit, with `usage` counted locally.
    fn cut(&mut self, usage: &Usage, out: &mut BytesMut);
}

/// OpenAI Chat Completions SSE.
pub struct OpenAiRenderer {
    /// The client set `stream_options.include_usage`; otherwise the usage chunk is stripped.
    pub client_wants_usage: bool,
}

impl Renderer for OpenAiRenderer {
    fn chunk(&mut self, raw: &[u8], peek: Option<&ChunkPeek<'_>>, out: &mut BytesMut) {
        if peek.is_some_and(|p| p.is_usage_only()) && !self.client_wants_usage {
            return;
        }
        put_sse_frame(out, raw);
    }

    fn error(&mut self, error: &ApiError, out: &mut BytesMut) {
        put_sse_frame(out, error.openai_body().to_string().as_bytes());
    }

    fn done(&mut self, _usage: Option<&Usage>, out: &mut BytesMut) {
        out.put_slice(DONE_FRAME);
    }

    fn cut(&mut self, usage: &Usage, out: &mut BytesMut) {
        let finish = serde_json::json!({
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
        });
        put_sse_frame(out, finish.to_string().as_bytes());
        if self.client_wants_usage {
            let u = serde_json::json!({
                "object": "chat.completion.chunk",
                "choices": [],
                "usage": {
                    "prompt_tokens": usage.input_tokens,
                    "completion_tokens": usage.output_tokens,
                    "total_tokens": usage.total_tokens(),
                },
            });
            put_sse_frame(out, u.to_string().as_bytes());
        }
        out.put_slice(DONE_FRAME);
    }
}

/// How one stream is metered.
pub struct MeterOptions {
    /// Tokenizer for estimates.
    pub encoding: Encoding,
    /// The canonical request, for counting prompt tokens if the provider reports none.
    pub request: Arc<Map<String, Value>>,
    /// Secrets to scrub from provider error text relayed to the client.
    pub secrets: Arc<[String]>,
    /// The output tokens a hard budget reserved for this stream. Output is counted as it is
    /// relayed; a stream about to go past the cap is ended cleanly (`finish_reason: "length"`;
    /// a native Anthropic stream in [`crate::anthropic::MeteredEvents`]: `stop_reason:
    /// "max_tokens"`) and billed for what was relayed — a second line of defence behind the
    /// `max_tokens` clamp, for upstreams that overrun it.
    pub output_cap: Option<u64>,
}

/// The end of a metered stream.
#[derive(Debug, Clone)]
pub struct Settlement {
    pub outcome: Outcome,
    pub usage: Usage,
    pub usage_source: UsageSource,
    /// The error the client saw (in-stream), when `outcome` is `Failed`.
    pub error: Option<ApiError>,
    /// When the first byte went to the client.
    pub first_byte_at: Option<Instant>,
    /// The last `finish_reason` relayed.
    pub finish_reason: Option<String>,
    /// Canonical chunks received from the upstream.
    pub chunks_relayed: u64,
    /// The stream was ended at the budget's output cap.
    pub cut_at_cap: bool,
}

type SettleFn = Box<dyn FnOnce(Settlement) + Send>;

pub struct MeteredStream {
    inner: ChunkStream,
    opts: MeterOptions,
    renderer: Box<dyn Renderer>,
    on_settle: Option<SettleFn>,
    provider_usage: Option<Usage>,
    output_text: String,
    finish_reason: Option<String>,
    first_byte_at: Option<Instant>,
    chunks_relayed: u64,
    /// Output tokens relayed so far, counted chunk by chunk (only when there is a cap).
    live_output_tokens: u64,
    cut_at_cap: bool,
    done: bool,
}

impl MeteredStream {
    pub fn new(
        inner: ChunkStream,
        opts: MeterOptions,
        renderer: impl Renderer,
        on_settle: impl FnOnce(Settlement) + Send + 'static,
    ) -> Self {
        MeteredStream {
            inner,
            opts,
            renderer: Box::new(renderer),
            on_settle: Some(Box::new(on_settle)),
            provider_usage: None,
            output_text: String::new(),
            finish_reason: None,
            first_byte_at: None,
            chunks_relayed: 0,
            live_output_tokens: 0,
            cut_at_cap: false,
            done: false,
        }
    }

    fn settle(&mut self, outcome: Outcome, error: Option<ApiError>) {
        let Some(f) = self.on_settle.take() else {
            return;
        };
        let (usage, usage_source) = match self.provider_usage {
            Some(u) => (u, UsageSource::Provider),
            None => (self.estimate(), UsageSource::Estimated),
        };
        f(Settlement {
            outcome,
            usage,
            usage_source,
            error,
            first_byte_at: self.first_byte_at,
            finish_reason: self.finish_reason.take(),
            chunks_relayed: self.chunks_relayed,
            cut_at_cap: self.cut_at_cap,
        });
    }

    /// Tokens sent and relayed so far, counted locally.
    fn estimate(&self) -> Usage {
        Usage {
            input_tokens: tokens::count_chat_prompt_map(self.opts.encoding, &self.opts.request),
            output_tokens: self.opts.encoding.count(&self.output_text),
            ..Usage::default()
        }
    }

    fn emit(
        &mut self,
        out: BytesMut,
    ) -> Option<Poll<Option<Result<Bytes, std::convert::Infallible>>>> {
        if out.is_empty() {
            return None;
        }
        if self.first_byte_at.is_none() {
            self.first_byte_at = Some(Instant::now());
        }
        Some(Poll::Ready(Some(Ok(out.freeze()))))
    }

    fn upstream_failed(&mut self, e: &UpstreamError) -> BytesMut {
        let secrets: Vec<&str> = self.opts.secrets.iter().map(String::as_str).collect();
        let api = e.to_api_error(&secrets);
        let mut out = BytesMut::new();
        self.renderer.error(&api, &mut out);
        self.done = true;
        self.settle(Outcome::Failed, Some(api));
        out
    }
}

/// Appends `data: <payload>\n\n`.
pub fn put_sse_frame(out: &mut BytesMut, payload: &[u8]) {
    out.reserve(payload.len() + 8);
    put_data(out, payload);
    out.put_slice(b"\n");
}

/// Appends the `data:` line(s) of one event. An upstream event of several `data:` lines reaches
/// us joined with `\n` (the SSE rule); written as one line, the client would read only its first
/// line, so each line gets its own `data:` and the client decodes exactly the payload sent (found
/// by the `anthropic` fuzz target). The SSE decoder never leaves a `\r` in a payload.
pub(crate) fn put_data(out: &mut BytesMut, payload: &[u8]) {
    if !payload.contains(&b'\n') {
        out.put_slice(b"data: ");
        out.put_slice(payload);
        out.put_slice(b"\n");
        return;
    }
    for line in payload.split(|&b| b == b'\n') {
        out.put_slice(b"data: ");
        out.put_slice(line);
        out.put_slice(b"\n");
    }
}

/// `data: <payload>\n\n` as its own buffer.
pub fn sse_frame(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    put_sse_frame(&mut b, payload);
    b.freeze()
}

pub const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

impl Stream for MeteredStream {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    this.chunks_relayed += 1;
                    let mut out = BytesMut::new();
                    let peek = serde_json::from_slice::<ChunkPeek<'_>>(&chunk).ok();
                    if let Some(peek) = &peek {
                        if let Some(err) = peek.error {
                            // The adapter normally turns these into errors; if one slips
                            // through it gets the same treatment: Tollgate's code, provider
                            // text scrubbed.
                            let e = UpstreamError::new(
                                "upstream",
                                tollgate_providers::UpstreamErrorKind::InStream {
                                    message: err.get().to_string(),
                                    body: chunk.clone(),
                                },
                            );
                            let out = this.upstream_failed(&e);
                            if let Some(p) = this.emit(out) {
                                return p;
                            }
                            continue;
                        }
                        if let Some(u) = &peek.usage {
                            this.provider_usage = Some(u.to_usage());
                        }
                        let before = this.output_text.len();
                        peek.append_output_text(&mut this.output_text);
                        if let Some(cap) = this.opts.output_cap {
                            let added = this.opts.encoding.count(&this.output_text[before..]);
                            if this.live_output_tokens + added > cap {
                                // Relaying this chunk would go past what the budget reserved:
                                // drop it and end the stream cleanly at the cap.
                                this.output_text.truncate(before);
                                this.done = true;
                                this.cut_at_cap = true;
                                this.finish_reason = Some("length".into());
                                let usage = this.estimate();
                                let mut out = BytesMut::new();
                                this.renderer.cut(&usage, &mut out);
                                this.settle(Outcome::Ok, None);
                                if let Some(p) = this.emit(out) {
                                    return p;
                                }
                                return Poll::Ready(None);
                            }
                            this.live_output_tokens += added;
                        }
                        if let Some(fr) = peek
                            .choices
                            .iter()
                            .flatten()
                            .find_map(|c| c.finish_reason.clone())
                        {
                            this.finish_reason = Some(fr);
                        }
                    }
                    this.renderer.chunk(&chunk, peek.as_ref(), &mut out);
                    if let Some(p) = this.emit(out) {
                        return p;
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    let out = this.upstream_failed(&e);
                    if let Some(p) = this.emit(out) {
                        return p;
                    }
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let mut out = BytesMut::new();
                    let usage = this.provider_usage;
                    this.renderer.done(usage.as_ref(), &mut out);
                    this.settle(Outcome::Ok, None);
                    if let Some(p) = this.emit(out) {
                        return p;
                    }
                }
            }
        }
    }
}

impl Drop for MeteredStream {
    fn drop(&mut self) {
        // Only reached with a pending settlement when the client left before the end.
        self.settle(Outcome::Cancelled, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tollgate_providers::UpstreamErrorKind;

    fn opts() -> MeterOptions {
        let req: Map<String, Value> = serde_json::from_str(
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello world"}]}"#,
        )
        .unwrap();
        MeterOptions {
            encoding: Encoding::O200k,
            request: Arc::new(req),
            secrets: Arc::from(vec!["sk-secret-123456".to_string()]),
            output_cap: None,
        }
    }

    fn chunks(items: Vec<Result<&'static str, UpstreamError>>) -> ChunkStream {
        Box::pin(futures_util::stream::iter(
            items
                .into_iter()
                .map(|r| r.map(|s| Bytes::from_static(s.as_bytes()))),
        ))
    }

    const TEXT: &str = r#"{"choices":[{"index":0,"delta":{"content":" hello"},"finish_reason":null}],"usage":null}"#;
    const FIN: &str = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#;
    const USAGE: &str = r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1}}"#;

    async fn run(s: MeteredStream) -> String {
        let parts: Vec<Bytes> = s.map(|r| r.unwrap()).collect().await;
        parts
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    use crate::test_support::capture;

    /// A payload of several lines (the fuzz target's minimal input was `data\ndata`, an event
    /// whose data is "\n") was written as one `data:` line and reached the client truncated.
    #[test]
    fn multi_line_payloads_keep_every_line() {
        assert_eq!(&sse_frame(b"\n")[..], b"data: \ndata: \n\n");
        assert_eq!(
            &sse_frame(b"{\n\"a\":1}")[..],
            b"data: {\ndata: \"a\":1}\n\n"
        );
        assert_eq!(&sse_frame(b"{}")[..], b"data: {}\n\n");
    }

    #[tokio::test]
    async fn strips_usage_chunk_when_not_asked_and_settles_from_provider() {
        let (settled, f) = capture();
        let s = MeteredStream::new(
            chunks(vec![Ok(TEXT), Ok(FIN), Ok(USAGE)]),
            opts(),
            OpenAiRenderer {
                client_wants_usage: false,
            },
            f,
        );
        let out = run(s).await;
        assert!(!out.contains("prompt_tokens"));
        assert!(out.ends_with("data: [DONE]\n\n"));
        let s = settled.lock().unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].outcome, Outcome::Ok);
        assert_eq!(s[0].usage_source, UsageSource::Provider);
        assert_eq!(s[0].usage.output_tokens, 1);
        assert_eq!(s[0].finish_reason.as_deref(), Some("stop"));
    }

    #[tokio::test]
    async fn keeps_usage_chunk_when_asked() {
        let (_s, f) = capture();
        let out = run(MeteredStream::new(
            chunks(vec![Ok(TEXT), Ok(FIN), Ok(USAGE)]),
            opts(),
            OpenAiRenderer {
                client_wants_usage: true,
            },
            f,
        ))
        .await;
        assert!(out.contains("prompt_tokens"));
    }

    #[tokio::test]
    async fn missing_usage_is_estimated_not_zero() {
        let (settled, f) = capture();
        run(MeteredStream::new(
            chunks(vec![Ok(TEXT), Ok(FIN)]),
            opts(),
            OpenAiRenderer {
                client_wants_usage: false,
            },
            f,
        ))
        .await;
        let s = settled.lock().unwrap();
        assert_eq!(s[0].usage_source, UsageSource::Estimated);
        assert_eq!(s[0].usage.output_tokens, 1);
        assert_eq!(s[0].usage.input_tokens, 9);
    }

    #[tokio::test]
    async fn cut_stream_sends_error_event_and_bills_relayed() {
        let (settled, f) = capture();
        let err = UpstreamError::new(
            "sim",
            UpstreamErrorKind::Broken("reset by sk-secret-123456".into()),
        );
        let out = run(MeteredStream::new(
            chunks(vec![Ok(TEXT), Err(err)]),
            opts(),
            OpenAiRenderer {
                client_wants_usage: false,
            },
            f,
        ))
        .await;
        assert!(out.contains(r#""error""#));
        assert!(!out.contains("sk-secret"));
        assert!(!out.contains("[DONE]"));
        let s = settled.lock().unwrap();
        assert_eq!(s[0].outcome, Outcome::Failed);
        assert_eq!(s[0].usage.output_tokens, 1);
        assert_eq!(s[0].usage_source, UsageSource::Estimated);
    }

    #[tokio::test]
    async fn stream_past_the_budget_cap_is_ended_cleanly() {
        let (settled, f) = capture();
        let mut o = opts();
        o.output_cap = Some(2);
        let s = MeteredStream::new(
            chunks(vec![Ok(TEXT), Ok(TEXT), Ok(TEXT), Ok(FIN), Ok(USAGE)]),
            o,
            OpenAiRenderer {
                client_wants_usage: true,
            },
            f,
        );
        let out = run(s).await;
        assert_eq!(out.matches("\" hello\"").count(), 2, "{out}");
        assert!(out.contains(r#""finish_reason":"length""#), "{out}");
        assert!(out.contains(r#""completion_tokens":2"#), "{out}");
        assert!(out.ends_with("data: [DONE]\n\n"));
        let s = settled.lock().unwrap();
        assert_eq!(s.len(), 1);
        assert!(s[0].cut_at_cap);
        assert_eq!(s[0].outcome, Outcome::Ok);
        assert_eq!(s[0].usage.output_tokens, 2);
        assert_eq!(s[0].usage_source, UsageSource::Estimated);
    }

    #[tokio::test]
    async fn dropped_mid_stream_settles_cancelled_once() {
        let (settled, f) = capture();
        let mut s = MeteredStream::new(
            chunks(vec![Ok(TEXT), Ok(TEXT), Ok(FIN)]),
            opts(),
            OpenAiRenderer {
                client_wants_usage: false,
            },
            f,
        );
        let _first = s.next().await;
        drop(s);
        let s = settled.lock().unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].outcome, Outcome::Cancelled);
        assert_eq!(s[0].usage.output_tokens, 1);
    }
}
