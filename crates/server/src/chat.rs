//! `POST /v1/chat/completions`, streaming and not.

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Map, Value};
use tollgate_ingress::openai::ChatRequest;
use tollgate_metering::tokens::{self, Encoding};
use tollgate_metering::{MeterOptions, MeteredStream, Settlement};
use tollgate_providers::{ChatCall, ChatResponse};
use tollgate_types::canonical::ResponsePeek;
use tollgate_types::{ApiError, ErrorCode, Outcome, Usage, UsageSource};

use crate::Gateway;
use crate::budget::Shape;
use crate::cache;
use crate::dispatch::{self, Attempts, Dispatch};
use crate::metrics::Endpoint;
use crate::pipeline::{self, Format, Routed, reject};
use crate::ratelimit;
use crate::record::PendingRow;
use crate::relay;

pub async fn chat(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    let mut rec = PendingRow::open(&gw, Endpoint::Chat);
    let request_id = rec.request_id().to_string();
    let (req, dispatch) = match admit(&gw, &mut rec, &headers, body).await {
        Ok(v) => v,
        Err(e) => return reject(rec, e, request_id, Outcome::Rejected, Format::OpenAi),
    };
    let first = dispatch.preview(&gw);
    let limits = match ratelimit::admit_first(&gw, &mut rec, first.as_ref(), &req.body, Shape::Chat)
    {
        Ok(l) => l,
        Err(l) => return l.reject(rec, request_id, Format::OpenAi),
    };
    let fill = match &first {
        Some(first) => {
            let row = rec.row();
            match cache::lookup(&gw, row, &headers, "chat", &req.body, req.stream, first) {
                cache::Lookup::Hit(e) => {
                    let (s, u) = (req.stream, req.include_usage);
                    let resp = cache::serve_hit(&gw, rec, &e, first, s, u, &request_id);
                    return limits.apply(resp);
                }
                cache::Lookup::Miss(fill) => Some(fill),
                cache::Lookup::Off | cache::Lookup::Bypass => None,
            }
        }
        None => None,
    };
    let attempts = Attempts::new(dispatch, req.body);
    let resp = if req.stream {
        let renderer = cache::stream_renderer(req.include_usage, fill);
        stream(gw, rec, attempts, renderer, request_id).await
    } else {
        complete(gw, rec, attempts, request_id, fill).await
    };
    limits.apply(resp)
}

/// Every check before the provider call. Fills the row as facts become known, so a rejected
/// request's row says how far it got.
async fn admit(
    gw: &Gateway,
    rec: &mut PendingRow,
    headers: &HeaderMap,
    body: Body,
) -> Result<(ChatRequest, Dispatch), ApiError> {
    let key = pipeline::authenticate(gw, headers)?;
    pipeline::note_key(rec.row(), &key);
    let bytes = pipeline::read_body(body, gw.settings().max_body_bytes).await?;
    let req = ChatRequest::parse(tollgate_ingress::parse_object(&bytes)?)?;
    rec.row().requested_model = Some(req.model.clone());
    rec.row().stream = req.stream;
    rec.row().attribution = tollgate_attribution::resolve(&key, headers, Some(&req.body))?;
    let dispatch = pipeline::route(
        gw,
        &key,
        rec.row(),
        &req.model,
        pipeline::RouteHints {
            headers,
            body: Some(&req.body),
            stream: req.stream,
        },
    )?;
    Ok((req, dispatch))
}

/// Non-streaming: the exchange runs detached (see [`pipeline::detached`]).
async fn complete(
    gw: Gateway,
    mut rec: PendingRow,
    mut attempts: Attempts,
    request_id: String,
    mut fill: Option<cache::Fill>,
) -> Response {
    let g = gw.clone();
    let rid = request_id.clone();
    pipeline::detached(&gw, request_id, Format::OpenAi, move |gone| async move {
        loop {
            let (routed, attempt, p) = match attempts.next(&g, &mut rec, Shape::Chat).await {
                Ok(v) => v,
                Err(e) => return dispatch::give_up(rec, e, rid, Format::OpenAi),
            };
            if p.fitted || !cache::fill_matches(fill.as_ref(), &routed) {
                // Shortened to fit a budget, or served by a fallback model: not the answer the
                // cache key stands for.
                fill = None;
            }
            let request = p.body;
            let call = ChatCall {
                body: request.clone(),
                stream: false,
            };
            let t0 = Instant::now();
            match routed.deployment.provider.chat(call).await {
                Ok(ChatResponse::Complete(c)) => {
                    let took = t0.elapsed();
                    attempt.success(Some(took), took, Instant::now());
                    attempts.succeeded(&routed);
                    let (usage, source) = match c.usage {
                        Some(u) => (u, UsageSource::Provider),
                        None => (
                            estimate_complete(&routed, &request, &c.body),
                            UsageSource::Estimated,
                        ),
                    };
                    pipeline::settle_complete(&mut rec, usage, source, &routed, &gone);
                    if let Some(f) = fill {
                        f.complete(&c.body, rec.row());
                    }
                    let mut resp = pipeline::json_response(c.body, &rid, &routed, rec.row());
                    cache::tag(resp.headers_mut(), rec.row());
                    rec.finish();
                    return resp;
                }
                Ok(ChatResponse::Stream { .. }) => {
                    let e = ApiError::new(
                        ErrorCode::UpstreamError,
                        format!(
                            "provider '{}' answered a non-streaming request with a stream",
                            routed.deployment.provider_name
                        ),
                    );
                    return reject(rec, e, rid, Outcome::Failed, Format::OpenAi);
                }
                Err(e) => {
                    if let Err(api) = attempts.failed(&g, &routed, attempt, &e) {
                        return reject(rec, api, rid, Outcome::Failed, Format::OpenAi);
                    }
                }
            }
        }
    })
    .await
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

/// Streaming: each attempt is held until its first chunk, so an upstream that fails before
/// producing anything fails over without the client noticing; then headers go out and chunks
/// are relayed one by one through the meter, which records the row when the stream ends,
/// fails or is dropped.
async fn stream(
    gw: Gateway,
    mut rec: PendingRow,
    mut attempts: Attempts,
    (renderer, mut fill): (cache::CachingRenderer, Option<cache::StreamFill>),
    request_id: String,
) -> Response {
    loop {
        let (routed, attempt, p) = match attempts.next(&gw, &mut rec, Shape::Chat).await {
            Ok(v) => v,
            Err(e) => return dispatch::give_up(rec, e, request_id, Format::OpenAi),
        };
        if p.fitted || !cache::stream_fill_matches(fill.as_ref(), &routed) {
            fill = None;
        }
        let (request, output_cap) = (p.body, p.output_cap);
        let call = ChatCall {
            body: request.clone(),
            stream: true,
        };
        let t0 = Instant::now();
        let chunks = match routed.deployment.provider.chat(call).await {
            Ok(ChatResponse::Stream { chunks, .. }) => {
                dispatch::start_stream(chunks, dispatch::chunk_is_preamble).await
            }
            Ok(ChatResponse::Complete(_)) => {
                let e = ApiError::new(
                    ErrorCode::UpstreamError,
                    format!(
                        "provider '{}' answered a streaming request without a stream",
                        routed.deployment.provider_name
                    ),
                );
                return reject(rec, e, request_id, Outcome::Failed, Format::OpenAi);
            }
            Err(e) => Err(e),
        };
        let chunks = match chunks {
            Ok(c) => c,
            Err(e) => {
                if let Err(api) = attempts.failed(&gw, &routed, attempt, &e) {
                    return reject(rec, api, request_id, Outcome::Failed, Format::OpenAi);
                }
                continue;
            }
        };
        attempts.succeeded(&routed);
        rec.row().status = 200;
        let started = rec.started();
        let mut headers = HeaderMap::new();
        pipeline::routed_headers(&mut headers, &request_id, &routed, rec.row());
        cache::tag(&mut headers, rec.row());
        let opts = MeterOptions {
            encoding: Encoding::for_model(&routed.deployment.model),
            request,
            secrets: gw.0.secrets.clone(),
            output_cap,
        };
        let cut = gw.0.cut.clone();
        let metered = MeteredStream::new(chunks, opts, renderer, move |s: Settlement| {
            pipeline::report_stream(attempt, &s, t0);
            if let Some(f) = fill {
                f.settled(&s, &routed);
            }
            pipeline::settle_stream(rec, &s, &routed, started, &cut);
        });
        return relay::sse_response(&gw, metered, headers, Format::OpenAi);
    }
}
