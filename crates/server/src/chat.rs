//! `POST /v1/chat/completions`, streaming and not.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::Stream;
use serde_json::{Map, Value};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tollgate_ingress::openai::ChatRequest;
use tollgate_metering::tokens::{self, Encoding};
use tollgate_metering::{MeterOptions, MeteredStream, OpenAiRenderer, Settlement};
use tollgate_providers::{ChatCall, ChatResponse};
use tollgate_types::canonical::ResponsePeek;
use tollgate_types::{ApiError, ErrorCode, Outcome, Usage, UsageSource};

use crate::Gateway;
use crate::error::ErrorResponse;
use crate::metrics::Endpoint;
use crate::pipeline::{self, Routed};
use crate::record::{CLIENT_CLOSED, PendingRow};

pub async fn chat(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    let mut rec = PendingRow::open(&gw, Endpoint::Chat);
    let request_id = rec.request_id().to_string();
    let (req, routed) = match admit(&gw, &mut rec, &headers, body).await {
        Ok(v) => v,
        Err(e) => return reject(rec, e, request_id, Outcome::Rejected),
    };
    let request = Arc::new(pipeline::upstream_body(req.body, &routed));
    let call = ChatCall {
        body: request.clone(),
        stream: req.stream,
    };
    if req.stream {
        stream(gw, rec, call, routed, req.include_usage, request_id).await
    } else {
        complete(gw, rec, call, routed, request_id).await
    }
}

/// Every check before the provider call. Fills the row as facts become known, so a rejected
/// request's row says how far it got.
async fn admit(
    gw: &Gateway,
    rec: &mut PendingRow,
    headers: &HeaderMap,
    body: Body,
) -> Result<(ChatRequest, Routed), ApiError> {
    let key = pipeline::authenticate(gw, headers)?;
    pipeline::note_key(rec.row(), &key);
    let bytes = pipeline::read_body(body, gw.settings().max_body_bytes).await?;
    let req = ChatRequest::parse(tollgate_ingress::parse_object(&bytes)?)?;
    rec.row().requested_model = Some(req.model.clone());
    rec.row().stream = req.stream;
    rec.row().attribution = tollgate_attribution::resolve(&key, headers, Some(&req.body))?;
    let routed = pipeline::route(gw, &key, &req.model)?;
    pipeline::note_route(rec.row(), &routed);
    Ok((req, routed))
}

pub(crate) fn reject(
    rec: PendingRow,
    e: ApiError,
    request_id: String,
    outcome: Outcome,
) -> Response {
    rec.fail(&e, outcome);
    ErrorResponse {
        error: e,
        request_id: Some(request_id),
    }
    .into_response()
}

/// Sets a flag when dropped unless disarmed: tells a detached task that the client is gone.
struct ClientWatch(Arc<AtomicBool>, bool);

impl Drop for ClientWatch {
    fn drop(&mut self) {
        if !self.1 {
            self.0.store(true, Ordering::Release);
        }
    }
}

/// Non-streaming: the provider call runs on a tracked task, so the usage is captured and the
/// row recorded even if the client disconnects while the model is generating (the provider
/// bills the whole answer either way). Shutdown waits for these tasks.
async fn complete(
    gw: Gateway,
    mut rec: PendingRow,
    call: ChatCall,
    routed: Routed,
    request_id: String,
) -> Response {
    let gone = Arc::new(AtomicBool::new(false));
    let mut watch = ClientWatch(gone.clone(), false);
    let secrets = gw.0.secrets.clone();
    let task = gw.tasks().spawn(async move {
        let provider = routed.deployment.provider.clone();
        let request = call.body.clone();
        let result = provider.chat(call).await;
        let started = rec.started();
        match result {
            Ok(ChatResponse::Complete(c)) => {
                let (usage, source) = match c.usage {
                    Some(u) => (u, UsageSource::Provider),
                    None => (
                        estimate_complete(&routed, &request, &c.body),
                        UsageSource::Estimated,
                    ),
                };
                let row = rec.row();
                pipeline::settle_usage(row, usage, source, &routed);
                row.ttft_us = Some(started.elapsed().as_micros() as u64);
                if gone.load(Ordering::Acquire) {
                    row.status = CLIENT_CLOSED;
                    row.outcome = Outcome::Cancelled;
                    row.error_code = Some("client_closed_request".into());
                    row.error_origin = Some("client".into());
                } else {
                    row.status = 200;
                    row.outcome = Outcome::Ok;
                }
                let resp = pipeline::json_response(c.body, &request_id, &routed, rec.row());
                rec.finish();
                Ok(resp)
            }
            Ok(ChatResponse::Stream { .. }) => {
                let e = ApiError::new(
                    ErrorCode::UpstreamError,
                    format!(
                        "provider '{}' answered a non-streaming request with a stream",
                        routed.deployment.provider_name
                    ),
                );
                rec.fail(&e, Outcome::Failed);
                Err((e, request_id))
            }
            Err(e) => {
                let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
                let api = e.to_api_error(&secrets);
                tracing::debug!(provider = %e.provider, error = %api, "upstream call failed");
                rec.fail(&api, Outcome::Failed);
                Err((api, request_id))
            }
        }
    });
    let out = task.await;
    watch.1 = true;
    match out {
        Ok(Ok(resp)) => resp,
        Ok(Err((e, request_id))) => ErrorResponse {
            error: e,
            request_id: Some(request_id),
        }
        .into_response(),
        Err(join) => {
            tracing::error!(error = %join, "chat task failed");
            ErrorResponse::new(ApiError::new(ErrorCode::InternalError, "internal error"))
                .into_response()
        }
    }
}

/// Tokens of a complete answer that came without usage: prompt and output counted locally.
fn estimate_complete(routed: &Routed, request: &Map<String, Value>, body: &[u8]) -> Usage {
    let enc = Encoding::for_model(&routed.deployment.model);
    let output = serde_json::from_slice::<ResponsePeek>(body)
        .map(|p| enc.count(&p.output_text()))
        .unwrap_or(0);
    Usage {
        input_tokens: tokens::count_chat_prompt_map(enc, request),
        output_tokens: output,
        ..Usage::default()
    }
}

/// Streaming: headers go out once the provider has answered; chunks are relayed one by one
/// through the meter, which records the row when the stream ends, fails or is dropped.
async fn stream(
    gw: Gateway,
    mut rec: PendingRow,
    call: ChatCall,
    routed: Routed,
    include_usage: bool,
    request_id: String,
) -> Response {
    let request = call.body.clone();
    let provider = routed.deployment.provider.clone();
    let (chunks, _upstream_id) = match provider.chat(call).await {
        Ok(ChatResponse::Stream {
            chunks,
            upstream_request_id,
        }) => (chunks, upstream_request_id),
        Ok(ChatResponse::Complete(_)) => {
            let e = ApiError::new(
                ErrorCode::UpstreamError,
                format!(
                    "provider '{}' answered a streaming request without a stream",
                    routed.deployment.provider_name
                ),
            );
            return reject(rec, e, request_id, Outcome::Failed);
        }
        Err(e) => {
            let secrets: Vec<&str> = gw.0.secrets.iter().map(String::as_str).collect();
            let api = e.to_api_error(&secrets);
            return reject(rec, api, request_id, Outcome::Failed);
        }
    };
    rec.row().status = 200;
    let started = rec.started();
    let mut headers = HeaderMap::new();
    pipeline::routed_headers(&mut headers, &request_id, &routed);
    let opts = MeterOptions {
        encoding: Encoding::for_model(&routed.deployment.model),
        request,
        secrets: gw.0.secrets.clone(),
    };
    let cut = gw.0.cut.clone();
    let renderer = OpenAiRenderer {
        client_wants_usage: include_usage,
    };
    let metered = MeteredStream::new(chunks, opts, renderer, move |s: Settlement| {
        let row = rec.row();
        pipeline::settle_usage(row, s.usage, s.usage_source, &routed);
        row.outcome = s.outcome;
        row.ttft_us = s
            .first_byte_at
            .map(|t| t.saturating_duration_since(started).as_micros() as u64);
        match (&s.error, s.outcome) {
            (Some(e), _) => {
                row.error_code = Some(e.code.as_str().into());
                row.error_origin = Some(e.code.origin().as_str().into());
            }
            (None, Outcome::Cancelled) if cut.is_cancelled() => {
                let code = ErrorCode::ShuttingDown;
                row.error_code = Some(code.as_str().into());
                row.error_origin = Some(code.origin().as_str().into());
            }
            (None, Outcome::Cancelled) => {
                row.error_code = Some("client_closed_request".into());
                row.error_origin = Some("client".into());
            }
            _ => {}
        }
        rec.finish();
    });
    let body = CutOnShutdown {
        inner: Some(metered),
        cut: Box::pin(gw.0.cut.clone().cancelled_owned()),
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
/// settling the row as cancelled, billed for what was relayed — and the client gets an
/// OpenAI-shaped `shutting_down` error event instead of `[DONE]`.
struct CutOnShutdown {
    inner: Option<MeteredStream>,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Stream for CutOnShutdown {
    type Item = Result<Bytes, std::convert::Infallible>;

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
            let frame = tollgate_metering::meter::sse_frame(e.openai_body().to_string().as_bytes());
            return Poll::Ready(Some(Ok(frame)));
        }
        let next = Pin::new(inner).poll_next(cx);
        if let Poll::Ready(None) = next {
            this.inner = None;
        }
        next
    }
}
