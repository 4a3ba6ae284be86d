//! Relaying a response stream to the client: SSE headers, and the cut at the end of the
//! shutdown grace period.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tollgate_types::{ApiError, ErrorCode};

use crate::http::WireFormat;
use crate::http::headers;

pub(crate) type Frame = Result<Bytes, std::convert::Infallible>;

/// A `text/event-stream` response relaying `stream` chunk by chunk ([`body`]); the caller adds
/// its own headers to it before returning it.
pub(crate) fn response<S>(stream: S, format: WireFormat, cut: &CancellationToken) -> Response
where
    S: Stream<Item = Frame> + Send + Unpin + 'static,
{
    let mut resp = Response::new(body(stream, format, cut));
    headers::event_stream(resp.headers_mut());
    resp
}

/// A body relaying `stream` chunk by chunk, ended early with a `shutting_down` event in the
/// client's format when `cut` is cancelled.
pub(crate) fn body<S>(stream: S, format: WireFormat, cut: &CancellationToken) -> Body
where
    S: Stream<Item = Frame> + Send + Unpin + 'static,
{
    Body::from_stream(CutOnShutdown {
        inner: Some(stream),
        cut: Box::pin(cut.clone().cancelled_owned()),
        format,
    })
}

/// Ends a relayed stream when the shutdown grace period is over (`serve` cancels the gateway's
/// `cut` token): the metered stream is dropped at once — closing the upstream call and
/// settling the row as cancelled, billed for what was relayed — and the client gets a
/// `shutting_down` error event in its own format instead of the normal end of stream.
struct CutOnShutdown<S> {
    inner: Option<S>,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
    format: WireFormat,
}

impl<S: Stream<Item = Frame> + Unpin> Stream for CutOnShutdown<S> {
    type Item = Frame;

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
            let body = this.format.error_body(&e).to_string();
            let mut out = BytesMut::new();
            match this.format {
                WireFormat::OpenAi => {
                    tollgate_metering::meter::put_sse_frame(&mut out, body.as_bytes())
                }
                WireFormat::Anthropic => {
                    tollgate_metering::anthropic::put_event(&mut out, "error", body.as_bytes())
                }
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
