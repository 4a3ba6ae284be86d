//! The metered stream: relays canonical chunks to the client as SSE, one by one, and settles
//! exactly once.
//!
//! Per chunk it peeks at the JSON (never re-serialises it), keeps provider usage when a chunk
//! carries it, remembers the generated text (for an estimate if usage never comes), and drops
//! the usage-only chunk when the client did not ask for `include_usage` (the OpenAI adapter
//! always asks upstream).
//!
//! **Invariant:** the settle callback runs exactly once — at the upstream's end of stream
//! (`Outcome::Ok`), at an upstream error (`Outcome::Failed`, after an OpenAI-shaped error event
//! is sent to the client), or in `Drop` when the client went away first
//! (`Outcome::Cancelled`); dropping the stream drops the upstream body, which closes the
//! upstream connection and so cancels generation. A stream that ended without provider usage
//! is settled with locally counted tokens, flagged [`UsageSource::Estimated`] — never as zero.

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

use crate::tokens::{self, Encoding};

/// How one stream is metered.
pub struct MeterOptions {
    /// The client set `stream_options.include_usage`; otherwise the usage chunk is stripped.
    pub client_wants_usage: bool,
    /// Tokenizer for estimates.
    pub encoding: Encoding,
    /// The canonical request, for counting prompt tokens if the provider reports none.
    pub request: Arc<Map<String, Value>>,
    /// Secrets to scrub from provider error text relayed to the client.
    pub secrets: Arc<[String]>,
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
    /// Chunks relayed to the client (the `[DONE]` marker excluded).
    pub chunks_relayed: u64,
}

type SettleFn = Box<dyn FnOnce(Settlement) + Send>;

pub struct MeteredStream {
    inner: ChunkStream,
    opts: MeterOptions,
    on_settle: Option<SettleFn>,
    provider_usage: Option<Usage>,
    output_text: String,
    finish_reason: Option<String>,
    first_byte_at: Option<Instant>,
    chunks_relayed: u64,
    done: bool,
}

impl MeteredStream {
    pub fn new(
        inner: ChunkStream,
        opts: MeterOptions,
        on_settle: impl FnOnce(Settlement) + Send + 'static,
    ) -> Self {
        MeteredStream {
            inner,
            opts,
            on_settle: Some(Box::new(on_settle)),
            provider_usage: None,
            output_text: String::new(),
            finish_reason: None,
            first_byte_at: None,
            chunks_relayed: 0,
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
        });
    }

    /// Tokens sent and relayed so far, counted locally.
    fn estimate(&self) -> Usage {
        Usage {
            input_tokens: tokens::count_chat_prompt(
                self.opts.encoding,
                &Value::Object((*self.opts.request).clone()),
            ),
            output_tokens: self.opts.encoding.count(&self.output_text),
            ..Usage::default()
        }
    }

    fn relay(&mut self, frame: Bytes) -> Poll<Option<Result<Bytes, std::convert::Infallible>>> {
        if self.first_byte_at.is_none() {
            self.first_byte_at = Some(Instant::now());
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn upstream_failed(
        &mut self,
        e: &UpstreamError,
    ) -> Poll<Option<Result<Bytes, std::convert::Infallible>>> {
        let secrets: Vec<&str> = self.opts.secrets.iter().map(String::as_str).collect();
        let api = e.to_api_error(&secrets);
        let frame = sse_frame(api.openai_body().to_string().as_bytes());
        self.done = true;
        self.settle(Outcome::Failed, Some(api));
        self.relay(frame)
    }
}

/// `data: <payload>\n\n`.
pub fn sse_frame(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 8);
    b.put_slice(b"data: ");
    b.put_slice(payload);
    b.put_slice(b"\n\n");
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
                    let mut skip = false;
                    let mut in_stream_error = None;
                    if let Ok(peek) = serde_json::from_slice::<ChunkPeek<'_>>(&chunk) {
                        if let Some(err) = peek.error {
                            in_stream_error = Some(err.get().to_string());
                        }
                        if let Some(u) = &peek.usage {
                            this.provider_usage = Some(u.to_usage());
                        }
                        peek.append_output_text(&mut this.output_text);
                        if let Some(fr) = peek
                            .choices
                            .iter()
                            .flatten()
                            .find_map(|c| c.finish_reason.clone())
                        {
                            this.finish_reason = Some(fr);
                        }
                        skip = peek.is_usage_only() && !this.opts.client_wants_usage;
                    }
                    if let Some(raw) = in_stream_error {
                        // The adapter normally turns these into errors; if one slips through,
                        // it gets the same treatment: Tollgate's code, provider text scrubbed.
                        let e = UpstreamError::new(
                            "upstream",
                            tollgate_providers::UpstreamErrorKind::InStream { message: raw },
                        );
                        return this.upstream_failed(&e);
                    }
                    if skip {
                        continue;
                    }
                    this.chunks_relayed += 1;
                    return this.relay(sse_frame(&chunk));
                }
                Poll::Ready(Some(Err(e))) => return this.upstream_failed(&e),
                Poll::Ready(None) => {
                    this.done = true;
                    this.settle(Outcome::Ok, None);
                    return this.relay(Bytes::from_static(DONE_FRAME));
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
    use std::sync::Mutex;
    use tollgate_providers::UpstreamErrorKind;

    fn opts(wants_usage: bool) -> MeterOptions {
        let req: Map<String, Value> = serde_json::from_str(
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello world"}]}"#,
        )
        .unwrap();
        MeterOptions {
            client_wants_usage: wants_usage,
            encoding: Encoding::O200k,
            request: Arc::new(req),
            secrets: Arc::from(vec!["sk-secret-123456".to_string()]),
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

    fn capture() -> (
        Arc<Mutex<Vec<Settlement>>>,
        impl FnOnce(Settlement) + Send + 'static,
    ) {
        let store = Arc::new(Mutex::new(Vec::new()));
        let s2 = store.clone();
        (store, move |s| s2.lock().unwrap().push(s))
    }

    #[tokio::test]
    async fn strips_usage_chunk_when_not_asked_and_settles_from_provider() {
        let (settled, f) = capture();
        let s = MeteredStream::new(chunks(vec![Ok(TEXT), Ok(FIN), Ok(USAGE)]), opts(false), f);
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
            opts(true),
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
            opts(false),
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
            opts(false),
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
    async fn dropped_mid_stream_settles_cancelled_once() {
        let (settled, f) = capture();
        let mut s = MeteredStream::new(chunks(vec![Ok(TEXT), Ok(TEXT), Ok(FIN)]), opts(false), f);
        let _first = s.next().await;
        drop(s);
        let s = settled.lock().unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].outcome, Outcome::Cancelled);
        assert_eq!(s[0].usage.output_tokens, 1);
    }
}
