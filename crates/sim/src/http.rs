//! HTTP plumbing shared by every wire format: the response body type, the paced streaming
//! body that injects cuts, JSON/SSE response builders, and the errors that make hyper drop a
//! connection.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;
use http_body_util::Full;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::stats::InFlight;

/// Errors surfaced to hyper. Returning one from the service, or from a body mid-stream, makes
/// hyper abort the connection (HTTP/1) or reset the stream (HTTP/2) without a complete
/// response — exactly the failure the fault knobs simulate.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SimError {
    #[error("connection reset by fault injection")]
    Reset,
    #[error("stream cut by fault injection")]
    Cut,
    #[error("simulator shutting down")]
    ShuttingDown,
    #[error("reading the request body failed: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
}

/// How long a cut stream pauses after its last frame so it reaches the client before the
/// connection (or HTTP/2 stream) is torn down.
const CUT_FLUSH_PAUSE: Duration = Duration::from_millis(10);

/// Every response body the simulator sends.
pub(crate) type SimBody = UnsyncBoxBody<Bytes, SimError>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> SimBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A response with a JSON body.
pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response<SimBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `Content-Type` of SSE streams.
pub(crate) const SSE: &str = "text/event-stream";

/// A streamed response whose frames are paced and possibly cut (see [`PacedBody`]):
/// `text/event-stream` for SSE, `application/vnd.amazon.eventstream` for Bedrock, JSON for
/// Gemini's array stream.
pub(crate) fn stream_response(body: PacedBody, content_type: &'static str) -> Response<SimBody> {
    let mut resp = Response::new(body.boxed_unsync());
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// A body that yields pre-rendered frames one at a time, sleeping `delay` between them, and —
/// when `cut_after` is set — fails after that many frames so the client sees a truncated
/// stream.
///
/// Frames are rendered up front (cheap, bounded by the answer length) and each is returned
/// from its own `poll_frame`; when the delay is non-zero the body returns `Pending` between
/// frames, which makes hyper flush each chunk to the socket separately instead of batching
/// the stream.
pub(crate) struct PacedBody {
    frames: std::vec::IntoIter<Bytes>,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// A sleep is pending before the next frame.
    waiting: bool,
    sent: usize,
    cut_after: Option<usize>,
    cut_armed: bool,
    /// After this many frames, nothing more is sent and the body never ends.
    stall_after: Option<usize>,
    done: bool,
    _in_flight: InFlight,
}

impl PacedBody {
    pub(crate) fn new(
        frames: Vec<Bytes>,
        delay: Duration,
        cut_after: Option<usize>,
        stall_after: Option<usize>,
        in_flight: InFlight,
    ) -> Self {
        PacedBody {
            frames: frames.into_iter(),
            delay,
            sleep: None,
            waiting: false,
            sent: 0,
            cut_after,
            cut_armed: false,
            stall_after,
            done: false,
            _in_flight: in_flight,
        }
    }
}

impl Body for PacedBody {
    type Data = Bytes;
    type Error = SimError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, SimError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.stall_after.is_some_and(|n| this.sent >= n) {
            // Stalled for good: no waker is registered, the client's timeout ends it.
            return Poll::Pending;
        }
        if this.cut_after.is_some_and(|n| this.sent >= n) {
            // Pause briefly before failing: failing at once would make hyper drop the
            // connection with the headers and first half still in its write buffer (HTTP/1),
            // or reset the stream with DATA frames still queued (HTTP/2, where the connection
            // is driven by another task), and the client would see no response at all
            // instead of a stream cut mid-way.
            if !this.cut_armed {
                this.cut_armed = true;
                this.waiting = false;
                let deadline = Instant::now() + CUT_FLUSH_PAUSE;
                match this.sleep.as_mut() {
                    Some(s) => s.as_mut().reset(deadline),
                    None => this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                }
            }
            if let Some(s) = this.sleep.as_mut()
                && s.as_mut().poll(cx).is_pending()
            {
                return Poll::Pending;
            }
            this.done = true;
            return Poll::Ready(Some(Err(SimError::Cut)));
        }
        if this.sent > 0 && !this.delay.is_zero() {
            if !this.waiting {
                let deadline = Instant::now() + this.delay;
                match this.sleep.as_mut() {
                    // Re-arm the same timer rather than allocating one per chunk.
                    Some(s) => s.as_mut().reset(deadline),
                    None => this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                }
                this.waiting = true;
            }
            if let Some(s) = this.sleep.as_mut()
                && s.as_mut().poll(cx).is_pending()
            {
                return Poll::Pending;
            }
            this.waiting = false;
        }
        match this.frames.next() {
            Some(b) => {
                this.sent += 1;
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            None => {
                this.done = true;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
