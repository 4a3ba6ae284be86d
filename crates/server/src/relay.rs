//! Relaying a response stream to the client: SSE headers, and the cut at the end of the
//! shutdown grace period.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tollgate_types::{ApiError, ErrorCode};

use crate::Gateway;
use crate::pipeline::Format;

type Frames = Result<Bytes, std::convert::Infallible>;

/// A `text/event-stream` response relaying `stream` chunk by chunk.
pub fn sse_response<S>(gw: &Gateway, stream: S, headers: HeaderMap, format: Format) -> Response
where
    S: Stream<Item = Frames> + Send + Unpin + 'static,
{
    let body = CutOnShutdown {
        inner: Some(stream),
        cut: Box::pin(gw.0.cut.clone().cancelled_owned()),
        format,
    };
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.extend(headers);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tell nginx-style intermediaries not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// Ends a relayed stream when the shutdown grace period is over (`serve` cancels the gateway's
/// `cut` token): the metered stream is dropped at once — closing the upstream call and
/// settling the row as cancelled, billed for what was relayed — and the client gets a
/// `shutting_down` error event in its own format instead of the normal end of stream.
struct CutOnShutdown<S> {
    inner: Option<S>,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
    format: Format,
}

impl<S: Stream<Item = Frames> + Unpin> Stream for CutOnShutdown<S> {
    type Item = Frames;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if this.cut.as_mut().poll(cx).is_ready() {
            this.inner = None;
            let e = ApiError::new(
                ErrorCode::ShuttingDown,
                "the gateway shut down before the stream finished",
            );
            let mut out = BytesMut::new();
            match this.format {
                Format::OpenAi => tollgate_metering::meter::put_sse_frame(
                    &mut out,
                    e.openai_body().to_string().as_bytes(),
                ),
                Format::Anthropic => tollgate_metering::anthropic::put_event(
                    &mut out,
                    "error",
                    tollgate_ingress::anthropic::error_body(&e)
                        .to_string()
                        .as_bytes(),
                ),
            }
            return Poll::Ready(Some(Ok(out.freeze())));
        }
        let next = Pin::new(inner).poll_next(cx);
        if let Poll::Ready(None) = next {
            this.inner = None;
        }
        next
    }
}
