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
use crate::dispatch::{self, Attempts, Dispatch, outcome_of};
use crate::metrics::Endpoint;
use crate::pipeline::{self, Format, Routed, reject};
use crate::ratelimit::{self, Limits};
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
    let limits = match &first {
        Some(first) => match ratelimit::admit(&gw, &mut rec, first, &req.body, Shape::Chat) {
            Ok(l) => l,
            Err(l) => return l.reject(rec, request_id, Format::OpenAi),
        },
        None => Limits::default(),
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
    let attempts = Attempts::new(req.body);
    let resp = if req.stream {
        let renderer = cache::stream_renderer(req.include_usage, fill);
        stream(gw, rec, attempts, dispatch, renderer, request_id).await
    } else {
        complete(gw, rec, attempts, dispatch, request_id, fill).await
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
    mut d: Dispatch,
    request_id: String,
    mut fill: Option<cache::Fill>,
) -> Response {
    let g = gw.clone();
    let rid = request_id.clone();
    pipeline::detached(&gw, request_id, Format::OpenAi, move |gone| async move {
        loop {
            let (routed, attempt) = match d.next(&g, rec.row()).await {
                Ok(v) => v,
                Err(e) => {
                    let o = outcome_of(&mut rec);
                    return reject(rec, e, rid, o, Format::OpenAi);
                }
            };
            let request = match attempts.prepare(&g, &mut rec, &routed, Shape::Chat) {
                Ok(p) => {
                    if p.fitted || !cache::fill_matches(fill.as_ref(), &routed) {
                        // Shortened to fit a budget, or served by a fallback model: not the
                        // answer the cache key stands for.
                        fill = None;
                    }
                    p.body
                }
                Err(e) => {
                    let o = outcome_of(&mut rec);
                    return reject(rec, e, rid, o, Format::OpenAi);
                }
            };
            let call = ChatCall {
                body: request.clone(),
                stream: false,
            };
            let t0 = Instant::now();
            match routed.deployment.provider.chat(call).await {
                Ok(ChatResponse::Complete(c)) => {
                    let took = t0.elapsed();
                    attempt.success(Some(took), took, Instant::now());
                    d.succeeded(&routed);
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
                    if let Err(api) = d.failed(&g, &routed, attempt, &e) {
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
    mut d: Dispatch,
    (renderer, mut fill): (cache::CachingRenderer, Option<cache::StreamFill>),
    request_id: String,
) -> Response {
    loop {
        let (routed, attempt) = match d.next(&gw, rec.row()).await {
            Ok(v) => v,
            Err(e) => {
                let o = outcome_of(&mut rec);
                return reject(rec, e, request_id, o, Format::OpenAi);
            }
        };
        let (request, output_cap) = match attempts.prepare(&gw, &mut rec, &routed, Shape::Chat) {
            Ok(p) => {
                if p.fitted || !cache::stream_fill_matches(fill.as_ref(), &routed) {
                    fill = None;
                }
                (p.body, p.output_cap)
            }
            Err(e) => {
                let o = outcome_of(&mut rec);
                return reject(rec, e, request_id, o, Format::OpenAi);
            }
        };
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
                if let Err(api) = d.failed(&gw, &routed, attempt, &e) {
                    return reject(rec, api, request_id, Outcome::Failed, Format::OpenAi);
                }
                continue;
            }
        };
        d.succeeded(&routed);
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
